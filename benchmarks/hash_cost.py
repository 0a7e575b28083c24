"""What integrity costs: `copy` vs `copy --hash`, and `verify --hash` throughput.

Builds one archive with the simulator (default ~1 GB, uncompressed so bytes are
real bytes), then alternates plain and hashing copies into fresh destinations,
each followed by `sync`, and prints medians and their ratio. Timings on a
shared machine are noisy: compare ratios from one run, never absolute numbers
across runs.

    python benchmarks/hash_cost.py [--gigabytes 1] [--rounds 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "softcopy", *args], check=True, capture_output=True)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nprocs", type=int, default=2)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="softcopy-hash-cost-"))
    try:
        frame = 8 * 512 * 512 * 2  # bytes per timepoint: (8, 512, 512) uint16
        timepoints = max(1, round(args.gigabytes * 1e9 / frame))
        src = base / "src.zarr"
        subprocess.run(
            [sys.executable, "-m", "softcopy", "simulate", str(src), "--timepoints",
             str(timepoints), "--interval", "0", "--shape", "8,512,512", "--chunks",
             "1,256,256", "--no-compress"],
            check=True, capture_output=True,
        )  # fmt: skip
        size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        files = sum(1 for p in src.rglob("*") if p.is_file())
        print(f"archive: {files} files, {size / 1e9:.2f} GB")
        plain, hashed, verify = [], [], []
        for i in range(args.rounds):
            for label, extra, times in (("plain", [], plain), ("hash", ["--hash"], hashed)):
                dst = base / f"{label}{i}.zarr"
                times.append(run("copy", str(src), str(dst), "--nprocs", str(args.nprocs), *extra))
            verify.append(run("verify", str(src), str(base / f"hash{i}.zarr"), "--hash"))
            for p in base.glob(f"*{i}.zarr*"):
                shutil.rmtree(p)
        p, h, v = (statistics.median(t) for t in (plain, hashed, verify))
        print(f"copy (plain):       median {p:.2f} s  ({size / p / 1e6:.0f} MB/s)  runs {plain}")
        print(f"copy --hash:        median {h:.2f} s  ({size / h / 1e6:.0f} MB/s)  runs {hashed}")
        print(f"ratio hash / plain: {h / p:.2f}")
        rate = 2 * size / v / 1e6
        print(f"verify --hash:      median {v:.2f} s  ({rate:.0f} MB/s read, both sides)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
