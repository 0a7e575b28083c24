"""What integrity costs: `copy` vs `copy --hash`, and `verify --hash` throughput.

Builds one archive with the simulator (default ~1 GB, uncompressed so bytes are
real bytes), then alternates plain and hashing copies into fresh destinations,
each followed by `sync`, and prints medians and their ratio. Timings on a
shared machine are noisy: compare ratios from one run, never absolute numbers
across runs. `--baseline DIR` (a tree with another version's `softcopy` package,
e.g. from `git archive`) runs that version in the same rounds, interleaved, so both
ratios see the same load.

    python benchmarks/hash_cost.py [--gigabytes 1] [--rounds 3] [--baseline DIR] [--dest-dir DIR]

`--dest-dir` puts the copies on another filesystem (e.g. a loop device): with the
source and the copy on one disk, the read-back of `--hash` shares that disk's time
with the copy's reads and writes.
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
from pathlib import Path

# The tree this benchmark belongs to: its `softcopy` is the one measured.
HERE = Path(__file__).resolve().parents[1]


def run(code: Path, *args: str) -> tuple[float, float]:
    """(wall seconds including the `sync` after, CPU seconds of softcopy and its copiers)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "softcopy", *args], check=True, capture_output=True, env=env
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["sync"], check=True)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.perf_counter() - started, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument(
        "--baseline", type=Path, help="also measure the softcopy package in this directory"
    )
    parser.add_argument(
        "--dest-dir", type=Path, help="make the copies here (default: beside the source)"
    )
    args = parser.parse_args()
    codes = {"this tree": HERE}
    if args.baseline is not None:
        codes["baseline"] = args.baseline.resolve()

    base = Path(tempfile.mkdtemp(prefix="softcopy-hash-cost-"))
    dests = Path(tempfile.mkdtemp(prefix="copies-", dir=args.dest_dir)) if args.dest_dir else base
    try:
        frame = 8 * 512 * 512 * 2  # bytes per timepoint: (8, 512, 512) uint16
        timepoints = max(1, round(args.gigabytes * 1e9 / frame))
        src = base / "src.zarr"
        subprocess.run(
            [sys.executable, "-m", "softcopy", "simulate", str(src), "--timepoints",
             str(timepoints), "--interval", "0", "--shape", "8,512,512", "--chunks",
             "1,256,256", "--no-compress"],
            check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(HERE)},
        )  # fmt: skip
        size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        files = sum(1 for p in src.rglob("*") if p.is_file())
        print(f"archive: {files} files, {size / 1e9:.2f} GB")
        times: dict[tuple[str, str], list[float]] = {}
        cpus: dict[tuple[str, str], list[float]] = {}
        for i in range(args.rounds):
            # Each round starts with the other version, so neither always runs first.
            order = list(codes.items()) if i % 2 == 0 else list(codes.items())[::-1]
            for name, code in order:
                for label, extra in (("plain", []), ("hash", ["--hash"])):
                    dst = dests / f"{label}{i}.zarr"
                    t, cpu = run(
                        code, "copy", str(src), str(dst), "--nprocs", str(args.nprocs), *extra
                    )
                    times.setdefault((name, label), []).append(t)
                    cpus.setdefault((name, label), []).append(cpu)
                verify, _ = run(code, "verify", str(src), str(dests / f"hash{i}.zarr"), "--hash")
                times.setdefault((name, "verify"), []).append(verify)
                for p in dests.glob(f"*{i}.zarr*"):
                    shutil.rmtree(p)
        for name in codes:
            plain, hashed, verify = (times[name, x] for x in ("plain", "hash", "verify"))
            p, h, v = (statistics.median(t) for t in (plain, hashed, verify))
            rounds = [round(b / a, 2) for a, b in zip(plain, hashed, strict=True)]
            print(f"{name}:")
            print(f"  copy (plain):       median {p:.2f} s  ({size / p / 1e6:.0f} MB/s)")
            print(f"  copy --hash:        median {h:.2f} s  ({size / h / 1e6:.0f} MB/s)")
            print(f"  ratio hash / plain: {h / p:.2f} (of medians); per round {rounds}")
            # One run slowed by another job's burst moves the medians less than this.
            print(f"  median per round:   {statistics.median(rounds):.2f}")
            rate = 2 * size / v / 1e6
            print(f"  verify --hash:      median {v:.2f} s  ({rate:.0f} MB/s read, both sides)")
            print(
                f"  runs plain {[round(t, 2) for t in plain]} hash {[round(t, 2) for t in hashed]}"
            )
            # CPU time varies less with other people's load than wall time does.
            cp, ch = (statistics.median(cpus[name, x]) for x in ("plain", "hash"))
            print(f"  CPU-s (median):     plain {cp:.2f}  hash {ch:.2f}  ratio {ch / cp:.2f}")
        print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(dests, ignore_errors=True)


if __name__ == "__main__":
    main()
