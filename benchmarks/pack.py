"""Packing a run folder: `softcopy copy --pack` against `tar | zstd -T0` and `tar | pigz`.

With --compress, also `softcopy copy --compress zstd` (each file compressed on its own)
into a folder against a shell loop of `zstd -1 -T1` per file, and with --s3 into a bucket
of a loopback moto server (started here, as benchmarks/s3_libraries.py does), verification
included in both.

softcopy packs at its default level (1) on one thread; `zstd -T0` (level 3, every core)
and `pigz` (level 6, every core) are what people type, `zstd -1 -T1` and `pigz -1` the
same level as softcopy's. A FASTQ-like run folder (reads of random bases and
qualities, in files of --file-mb each) is packed by each tool into a fresh folder on
the same disk, then `sync`. For each: wall time, MB/s of source read, CPU-seconds per GB
of source (the tool and its children, user + system), and the archive's size. softcopy's
time includes its verification (the archive read back, decompressed, every member's
BLAKE3 compared); `softcopy verify ARCHIVE` is then timed alone: the time verification
adds. Tools run in turn, round by round, so they share the machine's load; the ratios
are what to compare.

    python benchmarks/pack.py [--mb 512] [--file-mb 64] [--rounds 2] [--compress [--s3]]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SOFTCOPY = [sys.executable, "-m", "softcopy"]
RUN_OPTIONS = ["--kind", "directory", "--sentinel", "CopyComplete.txt", "--sentinel-min-age", "0"]


def make_run(root: Path, total_mb: int, file_mb: int) -> Path:
    import numpy as np

    run = root / "run0001"
    (run / "fastq").mkdir(parents=True)
    rng = np.random.default_rng(42)
    bases, quals = np.frombuffer(b"ACGT", np.uint8), np.frombuffer(b"FFFF:,F", np.uint8)
    header = b"@A01234:42:HXYZ:1:1101:1:1 1:N:0:ACGTACGT\n"
    for n in range(max(1, total_mb // file_mb)):
        with open(run / "fastq" / f"S{n}_R1_001.fastq", "wb") as f:
            written = 0
            while written < file_mb << 20:
                # 4,096 reads of 150 random bases and qualities from Illumina's binned set:
                # about as compressible as real reads (qualities carry most of the entropy).
                reads = 4096
                record = np.empty((reads, len(header) + 150 + 3 + 150 + 1), np.uint8)
                record[:, : len(header)] = np.frombuffer(header, np.uint8)
                at = len(header)
                record[:, at : at + 150] = bases[rng.integers(0, 4, (reads, 150))]
                record[:, at + 150 : at + 153] = np.frombuffer(b"\n+\n", np.uint8)
                record[:, at + 153 : at + 303] = quals[rng.integers(0, 7, (reads, 150))]
                record[:, -1] = ord("\n")
                f.write(record.tobytes())
                written += record.size
    (run / "RunInfo.xml").write_text("<RunInfo/>\n")
    (run / "CopyComplete.txt").write_text("")
    return run


def source_bytes(run: Path) -> int:
    return sum(p.stat().st_size for p in run.rglob("*") if p.is_file())


def timed(cmd: list[str] | str, shell: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the children) of one command, and `sync` after it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, shell=shell, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync"], check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=512, help="source size in MB [512]")
    parser.add_argument("--file-mb", type=int, default=64, help="MB per file [64]")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compress", action="store_true", help="add the --compress rows")
    parser.add_argument("--s3", action="store_true", help="and --compress into a bucket")
    parser.add_argument("--only-compress", action="store_true", help="no --pack rows")
    args = parser.parse_args()
    args.compress = args.compress or args.s3 or args.only_compress
    for tool in ("zstd", "pigz", "tar"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install {tool})")
    base = Path(tempfile.mkdtemp(prefix="softcopy-pack-bench-"))
    try:
        run = make_run(base / "src", args.mb, args.file_mb)
        size = source_bytes(run)
        gb = size / 1e9
        runs: dict[str, list[tuple[float, float, int]]] = {}
        out = base / "out"

        def one(
            name: str, archive: Path | Callable[[], int], cmd: list[str] | str, shell: bool = False
        ) -> None:
            if out.exists():
                shutil.rmtree(out)
            out.mkdir()
            wall, cpu = timed(cmd, shell)
            held = archive() if callable(archive) else archive.stat().st_size
            runs.setdefault(name, []).append((wall, cpu, held))

        server, endpoint = None, ""
        if args.s3:
            server, endpoint = _server(base)
        try:
            for n in range(args.rounds):
                if args.compress:
                    _compress_rows(one, run, out, endpoint, n)
                if not args.only_compress:
                    _pack_rows(one, run, out, runs)
        finally:
            if server is not None:
                server.stdin.close()
                server.wait()
        print(f"source: {size / 1e6:.0f} MB in {args.mb // args.file_mb} files; "
              f"{os.cpu_count()} CPUs; median of {args.rounds} rounds")  # fmt: skip
        print(f"{'tool':34} {'wall s':>7} {'MB/s':>7} {'CPU s/GB':>9} {'ratio':>6}")
        for name, results in runs.items():
            wall = statistics.median(r[0] for r in results)
            cpu = statistics.median(r[1] for r in results)
            ratio = statistics.median(r[2] for r in results) / size
            print(f"{name:34} {wall:7.2f} {size / 1e6 / wall:7.1f} {cpu / gb:9.2f} {ratio:6.3f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _server(base: Path) -> tuple[subprocess.Popen, str]:
    from s3_libraries import BUCKET, CREDENTIALS, start_server

    os.environ.update(CREDENTIALS)
    os.environ.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    server, endpoint = start_server(dict(os.environ))
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    return server, endpoint


def _bucket_bytes(endpoint: str, prefix: str) -> int:
    import boto3
    from s3_libraries import BUCKET

    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2")
    return sum(o["Size"] for p in pages.paginate(Bucket=BUCKET, Prefix=prefix + "/")
               for o in p.get("Contents", ()))  # fmt: skip


def _compress_rows(one: Callable, run: Path, out: Path, endpoint: str, n: int) -> None:
    src = str(run)
    one(
        "softcopy --compress zstd (folder)",
        lambda: tree_bytes(out / "run"),
        [*SOFTCOPY, "-q", "copy", "--compress", "zstd", *RUN_OPTIONS, src, str(out / "run")],
    )
    one(
        "zstd -1 -T1 per file",
        lambda: tree_bytes(out / "run"),
        f"cd {run} && find . -type f | while read -r f; do "
        f'mkdir -p "{out}/run/$(dirname "$f")"; zstd -q -1 -T1 -c "$f" > "{out}/run/$f.zst"; done',
        shell=True,
    )
    if endpoint:
        from s3_libraries import BUCKET

        prefix = f"run{n}"
        one(
            "softcopy --compress zstd (bucket)",
            lambda: _bucket_bytes(endpoint, prefix),
            [*SOFTCOPY, "-q", "copy", "--compress", "zstd", *RUN_OPTIONS, "--s3-endpoint",
             endpoint, "--state-dir", str(out.parent / "state"), src, f"s3://{BUCKET}/{prefix}"],
        )  # fmt: skip


# The tools people type, and the same at softcopy's level: (row, archive, shell command).
_TAR = "tar -C {parent} -cf - {name}"
_TOOLS = [
    ("tar | zstd -T0", "run.tar.zst", _TAR + " | zstd -q -T0 -3 -o {out}/run.tar.zst"),
    ("tar | zstd -1 -T1", "run.tar.zst", _TAR + " | zstd -q -T1 -1 -o {out}/run.tar.zst"),
    ("tar | pigz -1", "run.tar.gz", _TAR + " | pigz -1 > {out}/run.tar.gz"),
    ("tar | pigz", "run.tar.gz", _TAR + " | pigz > {out}/run.tar.gz"),
]


def _pack_rows(one: Callable, run: Path, out: Path, runs: dict) -> None:
    for fmt in ("tar.zst", "tar.gz"):
        archive = out / f"run.{fmt}"
        cmd = [*SOFTCOPY, "-q", "copy", "--pack", fmt, *RUN_OPTIONS, str(run), str(archive)]
        one(f"softcopy --pack {fmt}", archive, cmd)
        if fmt == "tar.zst":
            wall, cpu = timed([*SOFTCOPY, "-q", "verify", str(archive)])
            runs.setdefault("softcopy verify (tar.zst)", []).append(
                (wall, cpu, archive.stat().st_size)
            )
    for name, archive, command in _TOOLS:
        shell = command.format(parent=run.parent, name=run.name, out=out)
        one(name, out / archive, shell, shell=True)


if __name__ == "__main__":
    main()
