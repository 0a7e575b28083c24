"""Soak of `softcopy watch`: many tiny runs, runs per minute and the watcher's memory.

    python benchmarks/watch_soak.py --runs 1000 [--max-runs 4] [--nprocs 1]

Makes RUNS run folders (two small files and a sentinel each) under a fresh root, runs
`softcopy watch --once` on it, samples the watcher's resident memory (VmRSS) once a
second with the number of runs done, and prints runs per minute and memory at each
tenth of the runs. Memory that grows with the runs finished is a leak: the service
keeps nothing per finished run.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_runs(root: Path, n: int) -> None:
    for i in range(n):
        run = root / f"run{i:05d}"
        (run / "data").mkdir(parents=True)
        (run / "data" / "a.bin").write_bytes(os.urandom(512))
        (run / "b.txt").write_text(f"run {i}\n")
        (run / "DONE.txt").write_text("done\n")


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def done_runs(state: Path) -> int:
    db = state / "journal.sqlite"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM runs WHERE state = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def soak(runs: int, max_runs: int, nprocs: int, workdir: Path) -> dict:
    root, dest, state = workdir / "root", workdir / "dest", workdir / "state"
    root.mkdir()
    make_runs(root, runs)
    cmd = [
        sys.executable,
        "-m",
        "softcopy",
        "watch",
        str(root),
        str(dest),
        "--once",
        "--max-runs",
        str(max_runs),
        "--nprocs",
        str(nprocs),
        "--sentinel",
        "DONE.txt",
        "--sentinel-min-age",
        "0",
        "--ready-age",
        "0",
        "--state-dir",
        str(state),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, int, int]] = []
    try:
        while proc.poll() is None:
            rss = rss_kib(proc.pid)
            if rss is not None:
                samples.append((time.monotonic() - started, done_runs(state), rss))
            time.sleep(1.0)
    finally:
        if proc.poll() is None:  # interrupted: leave no watcher behind
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - started
    marks = {}
    for frac in (0.1, 0.25, 0.5, 0.75, 1.0):
        want = int(runs * frac)
        hit = next((s for s in samples if s[1] >= want), samples[-1] if samples else None)
        if hit:
            marks[f"{int(frac * 100)}%"] = {"runs_done": hit[1], "rss_mib": round(hit[2] / 1024, 1)}
    return {
        "runs": runs,
        "exit_code": proc.returncode,
        "seconds": round(seconds, 1),
        "runs_per_minute": round(runs / seconds * 60, 1),
        "rss_by_progress": marks,
        "rss_max_mib": round(max((s[2] for s in samples), default=0) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--max-runs", type=int, default=4)
    parser.add_argument("--nprocs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="softcopy-soak-") as tmp:
        print(json.dumps(soak(args.runs, args.max_runs, args.nprocs, Path(tmp)), indent=2))


if __name__ == "__main__":
    main()
