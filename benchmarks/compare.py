"""softcopy against `cp -r`, `rsync -a` (and `rclone`, the original softcopy) in one run.

Two archives written by the simulator (tensorstore, zarr v3, uncompressed):
"small": ~20,000 chunk files of 64 KiB; "large": 100 shards... files of 16 MiB.
Each tool copies each archive into a fresh destination, followed by `sync`,
alternating tools within a round so that machine noise spreads evenly; medians
of the rounds and ratios to `cp -r` are printed. On a machine whose disk is
backed by the host's cache this measures per-file CPU and syscall cost, which
is what dominates small chunks.

    python benchmarks/compare.py [--rounds 3] [--nprocs 2] [--small-files 20000]

`--baseline DIR` adds a column for the softcopy in DIR (a checkout of another
commit, e.g. from `git worktree add /tmp/base HEAD~1`), run with the same
interpreter, so a change is measured against its parent in the same run.

`--original PROGRAM` adds the original softcopy (0.0.x on the package index, also
named `softcopy`, so installed in a venv of its own, never the project's):

    python -m venv /tmp/original && /tmp/original/bin/pip install softcopy==0.0.13
    python benchmarks/compare.py --original /tmp/original/bin/softcopy

run as `softcopy SRC DST --nprocs 8 --sleep-time 0`. `rclone copy` is a column when
rclone is installed (`apt-get install rclone`).
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


def build(path: Path, kind: str, small_files: int) -> None:
    if kind == "small":
        # (t, 16, 128, 256) uint16 with one (128, 256) chunk per z: 64 KiB per file
        timepoints, shape, chunks = max(1, small_files // 16), "16,128,256", "1,128,256"
    else:
        # (t, 1, 2048, 4096) uint16, one chunk per timepoint: 16 MiB per file
        timepoints, shape, chunks = 100, "1,2048,4096", "1,2048,4096"
    subprocess.run(
        [
            *SOFTCOPY,
            "simulate",
            str(path),
            "--timepoints",
            str(timepoints),
            "--interval",
            "0",
            "--shape",
            shape,
            "--chunks",
            chunks,
            "--no-compress",
        ],
        check=True,
        capture_output=True,
    )


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    # Not from a checkout: `python -m` would import the softcopy in the working directory.
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=tempfile.gettempdir())
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--small-files", type=int, default=20000)
    parser.add_argument("--only", choices=["small", "large"])
    parser.add_argument("--extra", default="", help="more softcopy options, e.g. '--hash'")
    parser.add_argument("--baseline", type=Path, help="a checkout of softcopy to compare with")
    parser.add_argument(
        "--original", type=Path, help="the original softcopy's program (in its own venv)"
    )
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="softcopy-compare-"))
    env = {**os.environ, "XDG_STATE_HOME": str(base / "state")}
    # `python -m` puts the working directory first on sys.path: run each softcopy from
    # its own checkout.
    here = str(Path(__file__).resolve().parent.parent)
    envs = {"softcopy": {**env, "PYTHONPATH": here}}
    if args.baseline:
        envs["baseline"] = {**env, "PYTHONPATH": str(args.baseline.resolve())}
    try:
        for kind in [args.only] if args.only else ["small", "large"]:
            src = base / f"{kind}.zarr"
            build(src, kind, args.small_files)
            files = [p for p in src.rglob("*") if p.is_file()]
            size = sum(p.stat().st_size for p in files)
            print(f"\n{kind}: {len(files)} files, {size / 1e6:.0f} MB")
            tools = {
                name: lambda d, s=src: [
                    *SOFTCOPY,
                    "copy",
                    str(s),
                    str(d),
                    "--nprocs",
                    str(args.nprocs),
                    *args.extra.split(),
                ]
                for name in envs
            } | {
                "cp -r": lambda d, s=src: ["cp", "-r", str(s), str(d)],
                "rsync -a": lambda d, s=src: ["rsync", "-a", f"{s}/", str(d)],
                "rclone copy": lambda d, s=src: [
                    "rclone",
                    "copy",
                    "--transfers",
                    str(args.nprocs),
                    str(s),
                    str(d),
                ],
            }
            if args.original:
                tools["original"] = lambda d, s=src: [
                    str(args.original),
                    str(s),
                    str(d),
                    "--nprocs",
                    "8",
                    "--sleep-time",
                    "0",
                ]
            # A tool this machine lacks is left out, and said so, rather than fail the run.
            for name in [n for n in tools if n != "cp -r" and " " in n]:
                if shutil.which(name.split()[0]) is None:
                    print(f"  ({name}: not installed, left out)")
                    del tools[name]
            times: dict[str, list[float]] = {name: [] for name in tools}
            for i in range(args.rounds):
                for name, cmd in tools.items():
                    dst = base / f"out-{i}-{name.split()[0]}"
                    times[name].append(timed(cmd(dst), envs.get(name, env)))
                    shutil.rmtree(dst)
                    shutil.rmtree(f"{dst}.softcopy", ignore_errors=True)
            cp = statistics.median(times["cp -r"])
            for name, runs in times.items():
                med = statistics.median(runs)
                print(
                    f"  {name:9s} median {med:6.2f} s  {size / med / 1e6:7.0f} MB/s  "
                    f"{len(files) / med:8.0f} files/s  x{med / cp:4.2f} of cp -r  "
                    f"runs {[round(r, 2) for r in runs]}"
                )
            shutil.rmtree(src)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
