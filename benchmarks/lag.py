"""Copy lag during acquisition, and how much softcopy slows the writer.

1. Lag: the simulator writes at about 100 MB/s (4 MB timepoints of 128 KiB chunks
   every 40 ms) while `softcopy copy` runs with default settings. For every chunk
   file, lag = the destination's rename time (its ctime) minus the source's write
   time (its mtime, set just before tensorstore renames it into place). p50, p95
   and max over all files.
2. Writer slowdown: the same acquisition at full speed (no interval), alone and
   with softcopy copying it, alternating; the writer's median time per timepoint
   with softcopy over without.

    python benchmarks/lag.py [--timepoints 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOFTCOPY = [sys.executable, "-m", "softcopy"]
SHAPE, CHUNKS = "8,512,512", "1,256,256"  # 4 MiB per timepoint, 128 KiB chunks


def simulate(dst: Path, timepoints: int, interval: float) -> subprocess.Popen:
    return subprocess.Popen(
        [*SOFTCOPY, "simulate", str(dst), "--timepoints", str(timepoints), "--interval",
         str(interval), "--shape", SHAPE, "--chunks", CHUNKS, "--no-compress"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def seconds_of(writer: subprocess.Popen) -> float:
    out, _ = writer.communicate()
    assert writer.returncode == 0
    # "simulated N files (B bytes) in S s at PATH"
    return float(out.split(" in ")[1].split(" s")[0])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timepoints", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="softcopy-lag-"))
    env = {**os.environ, "XDG_STATE_HOME": str(base / "state")}
    try:
        lags: list[float] = []
        for i in range(args.rounds):
            src, dst = base / f"src{i}.zarr", base / f"dst{i}.zarr"
            copier = subprocess.Popen(
                [*SOFTCOPY, "copy", str(src), str(dst), "--wait-for-source"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            time.sleep(1.0)  # let it start and wait, as it would before an acquisition
            writer = simulate(src, args.timepoints, 0.04)
            seconds_of(writer)
            assert copier.wait(300) == 0
            for path in (src / "c").rglob("*"):
                if path.is_file():
                    copy = dst / path.relative_to(src)
                    lags.append((copy.stat().st_ctime_ns - path.stat().st_mtime_ns) / 1e9)
            shutil.rmtree(src)
            shutil.rmtree(dst)
        mb = args.timepoints * 4 * 2**20 / 1e6
        print(f"lag over {len(lags)} chunk files ({args.rounds} acquisitions of {mb:.0f} MB "
              f"at ~100 MB/s): p50 {percentile(lags, 0.5):.3f} s, "
              f"p95 {percentile(lags, 0.95):.3f} s, max {max(lags):.3f} s")  # fmt: skip

        alone, copied = [], []
        for i in range(args.rounds):
            src = base / f"w{i}.zarr"
            alone.append(seconds_of(simulate(src, args.timepoints, 0)) / args.timepoints)
            shutil.rmtree(src)
            copier = subprocess.Popen(
                [*SOFTCOPY, "copy", str(src), str(base / f"wd{i}.zarr"), "--wait-for-source"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            time.sleep(1.0)
            copied.append(seconds_of(simulate(src, args.timepoints, 0)) / args.timepoints)
            assert copier.wait(300) == 0
            shutil.rmtree(src)
            shutil.rmtree(base / f"wd{i}.zarr")
        a, c = statistics.median(alone), statistics.median(copied)
        print(f"writer time per timepoint: alone {a * 1e3:.1f} ms, with softcopy {c * 1e3:.1f} ms "
              f"(x{c / a:.2f}); runs alone {[round(x * 1e3, 1) for x in alone]}, "
              f"with {[round(x * 1e3, 1) for x in copied]}")  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
