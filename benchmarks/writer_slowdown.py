"""How much softcopy slows a writer at full speed, and how far behind the copy stays.

A tensorstore writer writes timepoints of 2,048 chunk files of 64 KiB (128 MiB,
uncompressed uint16), one timepoint a second, as a fast camera would. Each round
runs it alone, then again while `softcopy copy` (default settings) copies it live.
The writer times each timepoint's write (the data is made before the clock
starts); the result is its median time per timepoint with softcopy over without.
Copy lag, per chunk file: the destination's rename time (its ctime) minus the
source's last write (its mtime); p50 and p95 over every chunk of the run.

    python benchmarks/writer_slowdown.py [--timepoints 5] [--rounds 1] [--formats v3,v2]
                                         [--dir DIR] [--copy-dir DIR]
                                         [-- extra softcopy copy options]

`--copy-dir` puts the copies on another filesystem than the writer's (an acquisition
machine copies to a network or another disk; `--copy-dir /dev/shm` here, where there
is one disk): the writer then competes with softcopy for the CPUs and the source disk's
reads only, not for the same disk's writes.

The default run (both formats, one round of 5 timepoints) takes under two minutes on
a disk; use `--rounds 5 --timepoints 20` for numbers worth quoting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOFTCOPY = [sys.executable, "-m", "softcopy"]
FRAME = (32, 1024, 2048)  # one timepoint: 32 x 8 x 8 = 2,048 chunks of 128 x 256 uint16
CHUNK = (1, 1, 128, 256)  # 64 KiB

WRITER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import tensorstore as ts

root, fmt = Path(sys.argv[1]), sys.argv[2]
timepoints, interval = int(sys.argv[3]), float(sys.argv[4])
frame, chunk = json.loads(sys.argv[5]), json.loads(sys.argv[6])
shape = [timepoints, *frame]
kv = {"driver": "file", "path": str(root)}
if fmt == "v3":
    spec = {"driver": "zarr3", "kvstore": kv, "metadata": {
        "shape": shape, "data_type": "uint16", "fill_value": 0,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
        "chunk_key_encoding": {"name": "default"},
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]}}
else:
    spec = {"driver": "zarr", "kvstore": kv, "metadata": {
        "shape": shape, "chunks": chunk, "dtype": "<u2", "compressor": None,
        "fill_value": 0, "order": "C", "filters": None, "dimension_separator": "/"}}
store = ts.open(spec, create=True).result()
base = np.random.default_rng(0).integers(1, 4000, size=frame, dtype=np.uint16)
times = []
began = time.monotonic()
for t in range(timepoints):
    delay = began + t * interval - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    data = base + np.uint16(t)
    start = time.monotonic()
    store[t].write(data).result()
    times.append(time.monotonic() - start)
(root / "complete").touch()
print(json.dumps(times))
"""


def write(root: Path, fmt: str, timepoints: int, interval: float) -> list[float]:
    """Run the writer to the end; its time per timepoint."""
    out = subprocess.run(
        [sys.executable, "-c", WRITER, str(root), fmt, str(timepoints), str(interval),
         json.dumps(FRAME), json.dumps(CHUNK)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lags(src: Path, dst: Path) -> list[float]:
    found = []
    for dirpath, _dirs, names in os.walk(src):
        for name in names:
            path = Path(dirpath, name)
            if name == "complete" or name.startswith("zarr.json") or name.startswith(".z"):
                continue
            copy = dst / path.relative_to(src)
            found.append((copy.stat().st_ctime_ns - path.stat().st_mtime_ns) / 1e9)
    return found


def one_format(base: Path, copies: Path, fmt: str, args: argparse.Namespace, env: dict) -> None:
    alone: list[float] = []
    copied: list[float] = []
    all_lags: list[float] = []
    cpu = 0.0
    for i in range(args.rounds):
        src = base / f"alone-{fmt}-{i}.zarr"
        alone += write(src, fmt, args.timepoints, 1.0)
        shutil.rmtree(src)
        src, dst = base / f"src-{fmt}-{i}.zarr", copies / f"dst-{fmt}-{i}.zarr"
        log = base / "softcopy.log"
        with log.open("w") as err:
            copier = subprocess.Popen(
                [*SOFTCOPY, "copy", str(src), str(dst), "--wait-for-source", *args.extra],
                stdout=subprocess.DEVNULL, stderr=err, env=env,
            )  # fmt: skip
        time.sleep(1.0)  # started and waiting, as it would be before an acquisition
        copied += write(src, fmt, args.timepoints, 1.0)
        # wait4: softcopy's CPU time, its copiers' included (they are its waited-for children)
        _, status, usage = os.wait4(copier.pid, 0)
        copier.returncode = os.waitstatus_to_exitcode(status)
        assert copier.returncode == 0, log.read_text()
        cpu += usage.ru_utime + usage.ru_stime
        all_lags += lags(src, dst)
        shutil.rmtree(src)
        shutil.rmtree(dst)
    a, c = statistics.median(alone), statistics.median(copied)
    ma, mc = statistics.mean(alone), statistics.mean(copied)
    print(
        f"{fmt}: writer time per timepoint (median of {len(alone)}): alone {a * 1e3:.0f} ms, "
        f"with softcopy {c * 1e3:.0f} ms (x{c / a:.2f}); means {ma * 1e3:.0f} / {mc * 1e3:.0f} ms"
        f" (x{mc / ma:.2f})"
    )
    print(
        f"{fmt}: copy lag over {len(all_lags)} chunk files: p50 {percentile(all_lags, 0.5):.3f} s,"
        f" p95 {percentile(all_lags, 0.95):.3f} s, max {max(all_lags):.3f} s"
    )
    mb = args.rounds * args.timepoints * 128 * 2**20 / 1e6
    print(f"{fmt}: softcopy CPU {cpu:.1f} s (user + system, copiers included) for {mb:.0f} MB")
    print(f"{fmt}: per timepoint alone {[round(x * 1e3) for x in alone]}")
    print(f"{fmt}: per timepoint with  {[round(x * 1e3) for x in copied]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timepoints", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--formats", default="v3,v2")
    parser.add_argument("--dir", help="where to write (default: the system's temporary folder)")
    parser.add_argument("--copy-dir", help="where the copies go (default: beside the source)")
    parser.add_argument("extra", nargs="*", help="options for `softcopy copy` (after --)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="softcopy-writer-", dir=args.dir))
    copies = Path(tempfile.mkdtemp(prefix="softcopy-copies-", dir=args.copy_dir or base))
    env = {**os.environ, "XDG_STATE_HOME": str(base / "state")}
    try:
        for fmt in args.formats.split(","):
            one_format(base, copies, fmt, args, env)
    finally:
        shutil.rmtree(copies, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
