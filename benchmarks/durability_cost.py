"""What durability costs, and what a crash costs.

1. Per-file cost of durability: the same archive of small chunk files copied
   (a) with softcopy's default (a syncfs checkpoint every 2 s, journal after it),
   (b) with --fsync (every file fsync'd before its rename), and
   (c) `cp -r` followed by one `sync` (no per-file durability at all),
   alternating, medians printed with ratios.
2. Re-copy fraction after SIGKILL: softcopy is killed at a random moment of a
   copy, then run again; bytes written again by the second run beyond what was
   missing, as a fraction of the archive.

    python benchmarks/durability_cost.py [--files 4000] [--rounds 3] [--kills 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOFTCOPY = [sys.executable, "-m", "softcopy"]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def tree_bytes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and ".softcopy-tmp." not in p.name
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4000, help="chunk files (64 KiB each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="softcopy-durability-"))
    env = {**os.environ, "XDG_STATE_HOME": str(base / "state")}
    try:
        # chunks of (128, 256) uint16: 64 KiB each, uncompressed
        per_t = 4
        timepoints = max(1, args.files // per_t)
        src = base / "src.zarr"
        subprocess.run(
            [*SOFTCOPY, "simulate", str(src), "--timepoints", str(timepoints), "--interval",
             "0", "--shape", "4,128,256", "--chunks", "1,128,256", "--no-compress"],
            check=True, capture_output=True,
        )  # fmt: skip
        size = sum(tree_bytes(src).values())
        files = len(tree_bytes(src))
        print(f"archive: {files} files, {size / 1e6:.0f} MB")

        results: dict[str, list[float]] = {"default": [], "fsync": [], "cp": []}
        for i in range(args.rounds):
            for label in results:
                dst = base / f"{label}{i}.zarr"
                if label == "cp":
                    cmd = ["cp", "-r", str(src), str(dst)]
                else:
                    extra = ["--fsync"] if label == "fsync" else []
                    cmd = [*SOFTCOPY, "copy", str(src), str(dst), *extra]
                results[label].append(timed(cmd, env))
                shutil.rmtree(dst)
                shutil.rmtree(base / f"{label}{i}.zarr.softcopy", ignore_errors=True)
        med = {k: statistics.median(v) for k, v in results.items()}
        for label, seconds in med.items():
            print(
                f"{label:8s} median {seconds:6.2f} s  {files / seconds:8.0f} files/s  "
                f"runs {[round(x, 2) for x in results[label]]}"
            )
        print(f"per-file fsync / default checkpoints: {med['fsync'] / med['default']:.2f}x")
        print(f"default / cp -r + sync:               {med['default'] / med['cp']:.2f}x")

        duration = med["default"]
        fractions = []
        rng = random.Random(0)
        for k in range(args.kills):
            dst = base / f"kill{k}.zarr"
            proc = subprocess.Popen(
                [*SOFTCOPY, "copy", str(src), str(dst)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            time.sleep(rng.uniform(0.3, 0.9) * duration)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            present = sum(tree_bytes(dst).values()) if dst.exists() else 0
            subprocess.run([*SOFTCOPY, "copy", str(src), str(dst)], check=True, env=env,
                           capture_output=True)  # fmt: skip
            summary = json.loads((base / f"kill{k}.zarr.softcopy" / "summary.json").read_text())
            recopied = max(0, summary["bytes_copied"] - (size - present))
            fractions.append(recopied / size)
            print(
                f"kill {k}: {present / size:5.1%} present at the kill, second run wrote "
                f"{summary['bytes_copied'] / size:5.1%}, re-copied {recopied / size:6.2%}"
            )
            shutil.rmtree(dst)
        print(f"re-copy fraction after SIGKILL: mean {statistics.mean(fractions):.2%}, "
              f"max {max(fractions):.2%}")  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
