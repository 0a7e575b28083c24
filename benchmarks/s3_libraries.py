"""S3 uploads on loopback: boto3 against obstore, softcopy itself, `rclone copy` as the reference.

Measures what issue 13 asks before an object-store destination is built on one of them: how
fast each uploads a folder of many small files and one of fewer large ones to an S3 server on
127.0.0.1, and how much CPU the uploading process spends doing it. The server is moto's
(`ThreadedMotoServer`, in-memory) in a child process of its own, so that its CPU does not
compete with the client's inside one interpreter; its CPU time is reported beside each run
because on a small machine it is usually the server, not the client, that sets the rate.

Two source folders are written first (page-cached, 1,000 files a directory): `--small` files
of `--small-kib` (default 20,000 x 64 KiB) and `--large` files of `--large-mib` (default
100 x 16 MiB). Each tool uploads each folder under a fresh prefix, every object in a single
PUT (16 MiB is below the multipart threshold the issue sets), 8 requests in flight:

- `boto3`: `put_object` from a pool of 8 threads sharing one client
  (`max_pool_connections` 16), each body read whole and sent with the `ChecksumSHA256` we
  computed while reading it.
- `obstore-async`: `obstore.put_async` of each path under `asyncio.gather` and a semaphore of
  8, the store configured with `checksum_algorithm` SHA256 (obstore computes and sends
  `x-amz-checksum-sha256`), `use_multipart=False`.
- `obstore-threads`: the same store, `obstore.put` from a pool of 8 threads.
- `rclone`: `rclone copy --transfers 8 --checkers 8` to an S3 remote configured only by
  `RCLONE_CONFIG_BENCH_*` environment variables (provider `Other`, the same endpoint); rclone
  sends `Content-MD5` and an `md5chksum` metadata entry of its own, and HEADs every object
  after its PUT (its own check; `--s3-no-head` turns it off), so it makes two requests per
  object.
- `softcopy`: the whole tool, `softcopy copy --kind directory` of the folder to
  `s3://bench/PREFIX` (boto3 through sinks/s3.py: SHA-256 with every PUT, 2 copiers x
  `--s3-concurrency 4`), finished by a `complete` marker put in the folder for its run only,
  with a journal of its own. Its time includes what the libraries' rows leave out: planning,
  the journal, the verification that lists the prefix (sizes come with the listing), and
  the records under `PREFIX.softcopy/`. Its copiers run at idle CPU and I/O priority, as
  always, so on a busy machine they yield to everything else: read its row with the load
  average printed.

After each upload the bucket is listed: the object count and total bytes must match the
source (the run stops otherwise), then it is emptied. Per tool and folder: wall time,
objects/s, MB/s (10^6 bytes), CPU seconds (user + system) of the uploader (this process's
`getrusage` for the Python libraries, the children's for rclone and softcopy, copiers
included) and of the server. The fake credentials are set in this process's environment and
in the server's; nothing leaves 127.0.0.1. rclone is left out with a note when it is not
installed. The load average is printed before and after: on a shared machine it says how far
to trust the rates.

    python benchmarks/s3_libraries.py                            # 20,000 x 64 KiB, 100 x 16 MiB
    python benchmarks/s3_libraries.py --small 2000 --large 20    # a quicker run
    python benchmarks/s3_libraries.py --tools boto3,obstore-async --rounds 3
    python benchmarks/s3_libraries.py --tools softcopy,rclone
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# Imported here, not inside the timed uploads, so that no run pays for the import.
import boto3
import obstore
from botocore.config import Config
from obstore.store import S3Store

BUCKET = "bench"
REGION = "us-east-1"
IN_FLIGHT = 8
PER_DIR = 1000
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}

# The server in its own interpreter: prints the port it bound and serves until stdin closes.
_SERVER = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a log line per request costs CPU
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""

Files = list[tuple[str, Path]]


def write_folder(root: Path, count: int, size: int) -> Files:
    """`count` files of `size` distinct-ish bytes; returns (object key suffix, path) pairs."""
    block = os.urandom(size)
    files = []
    for i in range(count):
        d = root / f"d{i // PER_DIR:03d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True)
        path = d / f"f{i:06d}"
        # A different first 8 bytes per file, so that no store could deduplicate bodies.
        with open(path, "wb") as f:
            f.write(i.to_bytes(8, "little"))
            f.write(block[8:])
        files.append((f"{d.name}/{path.name}", path))
    return files


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server is bound, or EOF if it died
    if not line.strip().isdigit():
        proc.kill()
        sys.exit(f"the moto server did not start (exit {proc.wait()}); is moto[server] installed?")
    return proc, f"http://127.0.0.1:{line.strip()}"


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def boto3_client(endpoint: str) -> Any:
    config = Config(max_pool_connections=16, retries={"mode": "standard", "max_attempts": 5})
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, config=config)


def obstore_store(endpoint: str) -> S3Store:
    return S3Store(
        BUCKET,
        config={
            "endpoint": endpoint,
            "region": REGION,
            "access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "checksum_algorithm": "SHA256",
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True},
    )


def upload_boto3(endpoint: str, prefix: str, files: Files) -> None:
    client = boto3_client(endpoint)

    def one(item: tuple[str, Path]) -> None:
        key, path = item
        data = path.read_bytes()
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=data, ChecksumSHA256=digest)

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        for _ in pool.map(one, files):
            pass


def upload_obstore_async(endpoint: str, prefix: str, files: Files) -> None:
    store = obstore_store(endpoint)

    async def run() -> None:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(key: str, path: Path) -> None:
            async with gate:
                await obstore.put_async(store, f"{prefix}/{key}", path, use_multipart=False)

        await asyncio.gather(*(one(key, path) for key, path in files))

    asyncio.run(run())


def upload_obstore_threads(endpoint: str, prefix: str, files: Files) -> None:
    store = obstore_store(endpoint)

    def one(item: tuple[str, Path]) -> None:
        key, path = item
        obstore.put(store, f"{prefix}/{key}", path, use_multipart=False)

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        for _ in pool.map(one, files):
            pass


def rclone_env(endpoint: str, base: Path) -> dict[str, str]:
    # rclone's AWS SDK refuses any AWS_CA_BUNDLE with its own HTTP transport
    # (LoadCustomCABundleError), and the endpoint is plain http anyway.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return {
        **env,
        # A config file that does not exist: only the environment's remote is seen.
        "RCLONE_CONFIG": str(base / "rclone.conf"),
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
        "RCLONE_CONFIG_BENCH_REGION": REGION,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    }


def upload_rclone(env: dict[str, str], folder: Path, prefix: str) -> None:
    cmd = ["rclone", "copy", "--transfers", str(IN_FLIGHT), "--checkers", str(IN_FLIGHT)]
    cmd += ["--s3-no-check-bucket", str(folder), f"bench:{BUCKET}/{prefix}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def upload_softcopy(endpoint: str, folder: Path, prefix: str, state: Path) -> None:
    # The marker ends the copy as soon as everything is there; it is never in the other
    # tools' folder. Ready age 0: the files were written before the clock started.
    marker = folder / "complete"
    marker.touch()
    cmd = [sys.executable, "-m", "softcopy", "copy", str(folder), f"s3://{BUCKET}/{prefix}"]
    cmd += ["--kind", "directory", "--ready-age", "0", "--s3-endpoint", endpoint]
    cmd += ["--nprocs", "2", "--s3-concurrency", str(IN_FLIGHT // 2)]
    cmd += ["--state-dir", str(state), "--quiet", "--no-progress"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        marker.unlink()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def listing(client: Any, prefix: str) -> tuple[list[str], int]:
    keys, total = [], 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            keys.append(obj["Key"])
            total += obj["Size"]
    return keys, total


def check_and_empty(client: Any, prefix: str, count: int, size: int, tool: str) -> None:
    keys, total = listing(client, prefix + "/")
    marker = tool == "softcopy"  # and its empty `complete` marker
    if len(keys) != count + marker or total != count * size:
        sys.exit(
            f"{tool}: the bucket holds {len(keys)} objects of {total} bytes under {prefix}/, "
            f"expected {count + marker} of {count * size}"
        )
    keys += listing(client, prefix + ".softcopy/")[0]  # softcopy's records
    for i in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[i : i + 1000]]
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": batch, "Quiet": True})
    if listing(client, prefix)[0]:
        sys.exit(f"{tool}: could not empty {prefix}/ in the bucket")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20000, help="number of small files")
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--large", type=int, default=100, help="number of large files")
    parser.add_argument("--large-mib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--tools",
        default="boto3,obstore-async,obstore-threads,rclone,softcopy",
        help="comma-separated",
    )
    args = parser.parse_args()
    tools = args.tools.split(",")
    if "rclone" in tools and shutil.which("rclone") is None:
        print("  (rclone: not installed, left out; Debian: apt-get install rclone)")
        tools.remove("rclone")
    os.environ.update(CREDENTIALS)
    base = Path(tempfile.mkdtemp(prefix="softcopy-s3bench-"))
    server, endpoint = start_server({**os.environ})
    try:
        client = boto3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        workloads = []
        for name, count, size in [
            ("small", args.small, args.small_kib * 1024),
            ("large", args.large, args.large_mib * 1024 * 1024),
        ]:
            if count > 0:
                folder = base / name
                workloads.append((name, folder, write_folder(folder, count, size), size))
                print(f"{count} files of {size // 1024} KiB in {folder}")
        print(f"moto server (pid {server.pid}) at {endpoint}, {IN_FLIGHT} requests in flight")
        print(f"{os.cpu_count()} CPUs, {load()}")
        renv = rclone_env(endpoint, base)
        uploaders: dict[str, Callable[[str, Path, Files], None]] = {
            "boto3": lambda p, _f, files: upload_boto3(endpoint, p, files),
            "obstore-async": lambda p, _f, files: upload_obstore_async(endpoint, p, files),
            "obstore-threads": lambda p, _f, files: upload_obstore_threads(endpoint, p, files),
            "rclone": lambda p, folder, _files: upload_rclone(renv, folder, p),
            "softcopy": lambda p, folder, _f: upload_softcopy(endpoint, folder, p, base / "state"),
        }
        for name, folder, files, size in workloads:
            count = len(files)
            print(f"{name}: {count} x {size // 1024} KiB")
            for tool in tools:
                runs = []
                for i in range(args.rounds):
                    prefix = f"{tool}-{name}-{i}"
                    own, kids, srv = own_cpu(), children_cpu(), cpu_of(server.pid)
                    started = time.perf_counter()
                    uploaders[tool](prefix, folder, files)
                    wall = time.perf_counter() - started
                    cpu = own_cpu() - own + children_cpu() - kids
                    runs.append((wall, cpu, cpu_of(server.pid) - srv))
                    check_and_empty(client, prefix, count, size, tool)
                wall = statistics.median(r[0] for r in runs)
                cpu = statistics.median(r[1] for r in runs)
                srv = statistics.median(r[2] for r in runs)
                print(
                    f"  {tool:15s} wall {wall:7.2f} s  {count / wall:7.0f} objects/s  "
                    f"{count * size / wall / 1e6:7.1f} MB/s  client CPU {cpu:6.2f} s "
                    f"({cpu / count * 1e3:6.3f} ms/object)  server CPU {srv:6.2f} s"
                )
        print(load())
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
