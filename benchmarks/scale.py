"""Per-file cost at scale: many tiny chunk files, softcopy against `cp -r` and `rsync -a`.

One zarr v3 array of N chunk files of 1 KiB each (uncompressed uint16, keys `c/i/j`, 1,000
files per directory) with the `complete` marker, written directly (no tensorstore, so
building it is quick). Each tool copies it into a fresh destination followed by `sync`;
softcopy is then run again on its finished copy (a no-op rerun: everything copied and
journaled). First the start-up listing's rate (`scan_tree` alone, with the ledger's
`observe_many`, and the supervisor's own first `full_scan`); then for each tool: wall time, user and
system CPU of the tool and its children, and for softcopy the supervisor's peak RSS (VmHWM
from /proc, read as it exits) per file beyond an empty run's peak. With
several sizes (`--files 200000,400000`) it also prints the slope of each run's peak between
the smallest and the largest: what one more file costs, without the fixed part (allocator,
SQLite's cache, the size list's first MiB) that dominates a per-file figure at small sizes.

    python benchmarks/scale.py [--files 20000] [--rounds 1] [--nprocs 2]
    python benchmarks/scale.py --files 200000      # the issue's workload (minutes)
    python benchmarks/scale.py --files 200000 --baseline DIR --only-softcopy
    python benchmarks/scale.py --files 200000,400000 --only-softcopy   # memory per added file
    python benchmarks/scale.py --files 200000 --only-softcopy --baseline DIR --reruns 5

`--baseline DIR` runs the softcopy of another checkout (e.g. `git worktree add DIR HEAD`)
the same way in the same run, round by round beside this tree's (its listing step too), so
a before/after comparison shares the machine's load; `--only-softcopy` leaves out `cp -r`
and `rsync -a`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOFTCOPY = [sys.executable, "-m", "softcopy"]
PER_DIR = 1000
CHUNK = 512  # uint16 elements: 1 KiB per file

# Run softcopy in this interpreter and report the supervisor's own peak RSS (VmHWM) on exit:
# the copiers are other processes and are not counted in it.
_PEAK = """
import atexit, sys
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("SCALE-PEAK-KB " + line.split()[1] + "\\n")
atexit.register(_peak)
from softcopy.cli import entry
sys.argv = ["softcopy", *sys.argv[1:]]
entry()
"""


# The start-up listing in this checkout's softcopy: `scan_tree` alone, the old measure of a
# listing with the ledger (`scan_tree` whole, then `Ledger.observe_many` of all its files),
# and the supervisor's own first full scan (`SourceView.full_scan`: directory by directory
# into the ledger, metadata read, markers and times noted, no inotify), best of three, in
# files per second.
_LISTING = """
import json, sys, time
from softcopy.engine.ledger import Ledger
from softcopy.engine.observe import SourceView
from softcopy.sources.kinds import source_kind
from softcopy.sources.scan import scan_tree
from softcopy.sources.select import Selection
from softcopy.zarr.layout import parse_array_metadata
root = sys.argv[1]
meta = json.load(open(root + "/zarr.json"))
scan = total = full = 1e9
for _ in range(3):
    ledger = Ledger()
    ledger.set_layout(parse_array_metadata(meta, "", "zarr.json"))
    t0 = time.perf_counter()
    result = scan_tree(root)
    t1 = time.perf_counter()
    ledger.observe_many(result.files.items())
    t2 = time.perf_counter()
    del result, ledger
    view = SourceView(root, source_kind("zarr", 0), Selection("complete"), Ledger(),
                      lambda keys, live: None, 3600.0)
    t3 = time.perf_counter()
    view.full_scan(initial=True)
    t4 = time.perf_counter()
    scan, total, full = min(scan, t1 - t0), min(total, t2 - t0), min(full, t4 - t3)
n = view.files_at_source
print(f"  listing   scan_tree {n / scan:8.0f} files/s  with observe_many {n / total:8.0f} files/s"
      f"  full_scan {n / full:8.0f} files/s")
"""


def build(path: Path, files: int) -> None:
    rows = -(-files // PER_DIR)
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [rows, PER_DIR * CHUNK],
        "data_type": "uint16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, CHUNK]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    }
    path.mkdir(parents=True)
    (path / "zarr.json").write_text(json.dumps(meta))
    block = bytes(range(256)) * (2 * CHUNK // 256)
    made = 0
    for i in range(rows):
        d = path / "c" / str(i)
        d.mkdir(parents=True)
        for j in range(min(PER_DIR, files - made)):
            with open(d / str(j), "wb") as f:
                f.write(block)
        made += min(PER_DIR, files - made)
    (path / "complete").write_text("")


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # Not from a checkout: `python -m` would import the softcopy in the working directory.
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd=tempfile.gettempdir(), text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    subprocess.run(["sync"], check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {
        "wall": wall,
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
    }
    for line in proc.stderr.splitlines():
        if line.startswith("SCALE-PEAK-KB "):
            out["peak_mb"] = int(line.split()[1]) / 1024
    return out


def sizes(text: str) -> list[int]:
    """`--files 200000,400000`: ascending distinct sizes."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of file counts: {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"not a list of file counts: {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--files",
        type=sizes,
        default=[20000],
        help="chunk files; several (200000,400000) also report peak RSS per added file",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--reruns",
        type=int,
        default=0,
        help="no-op reruns per copy, the trees' in turn after both copies (median shown); "
        "0: one, right after its own copy",
    )
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--extra", default="", help="more softcopy options, e.g. '--hash'")
    parser.add_argument("--baseline", type=Path, help="another softcopy checkout to compare")
    parser.add_argument("--only-softcopy", action="store_true", help="no cp -r, no rsync -a")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="softcopy-scale-"))
    trees = {"": Path(__file__).resolve().parent.parent}
    if args.baseline is not None:
        trees["before: "] = args.baseline.resolve()
    envs = {
        label: {**os.environ, "XDG_STATE_HOME": str(base / f"state{i}"), "PYTHONPATH": str(tree)}
        for i, (label, tree) in enumerate(trees.items())
    }
    try:
        empty = base / "empty.zarr"
        build(empty, 1)
        peaks: dict[str, dict[int, float]] = {}  # name -> files -> median peak RSS, MB
        for count in args.files:
            for name, peak in run_size(args, base, envs, empty, count).items():
                peaks.setdefault(name, {})[count + 2] = peak
        if len(args.files) > 1:
            # The fixed part of a peak (allocator, SQLite's cache, the size list's first MiB)
            # cancels out between sizes: what is left is what each file costs.
            print("peak RSS per added file (slope between sizes):")
            for name, by_size in peaks.items():
                (n0, p0), (n1, p1) = min(by_size.items()), max(by_size.items())
                slope = (p1 - p0) * 1024 * 1024 / (n1 - n0)
                print(f"  {name:17s} {slope:5.1f} B/file ({n0} -> {n1} files)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_size(
    args: argparse.Namespace, base: Path, envs: dict[str, dict[str, str]], empty: Path, count: int
) -> dict[str, float]:
    """One archive of `count` chunk files through every tool; returns softcopy's median peak
    RSS (MB) per run name."""
    softcopy = [sys.executable, "-c", _PEAK]
    src = base / f"tiny-{count}.zarr"
    build(src, count)
    files = count + 2
    print(f"{files} files of 1 KiB (+ zarr.json, complete) in {src}")
    sc = [*softcopy, "copy", "--nprocs", str(args.nprocs), *args.extra.split()]
    others = {
        "cp -r": lambda d: ["cp", "-r", str(src), str(d)],
        "rsync -a": lambda d: ["rsync", "-a", f"{src}/", str(d)],
    }
    if args.only_softcopy:
        others = {}
    elif shutil.which("rsync") is None:
        print("  (rsync: not installed, left out)")
        del others["rsync -a"]
    # With a baseline, twice in turn: the first listings of a new tree run colder.
    for label, env in [*envs.items()] * (2 if len(envs) > 1 else 1):
        print(f"  {label or 'this tree: '}", end="", flush=True)
        listing = [sys.executable, "-c", _LISTING, str(src)]
        subprocess.run(listing, check=True, env=env, cwd=tempfile.gettempdir())
    names = [n for label in envs for n in (f"{label}softcopy", f"{label}rerun")]
    results: dict[str, list[dict[str, float]]] = {n: [] for n in [*names, *others]}
    empty_peak: dict[str, list[float]] = {label: [] for label in envs}
    for i in range(args.rounds):
        copies = {}
        for n, (label, env) in enumerate(envs.items()):
            out = base / f"empty-{i}"
            empty_peak[label].append(timed([*sc, str(empty), str(out)], env).get("peak_mb", 0))
            shutil.rmtree(out)
            shutil.rmtree(f"{out}.softcopy", ignore_errors=True)
            dst = copies[label] = base / f"out-{i}-{n}-softcopy"
            results[f"{label}softcopy"].append(timed([*sc, str(src), str(dst)], env))
            if not args.reruns:
                results[f"{label}rerun"].append(timed([*sc, str(src), str(dst)], env))
        # With --reruns, each tree's no-op reruns in turn, once both copies are made: a rerun
        # right after its own copy runs beside that copy's writeback, which the other lacks.
        for _ in range(args.reruns):
            for label, env in envs.items():
                results[f"{label}rerun"].append(timed([*sc, str(src), str(copies[label])], env))
        for dst in copies.values():
            shutil.rmtree(dst)
            shutil.rmtree(f"{dst}.softcopy", ignore_errors=True)
        for name, cmd in others.items():
            dst = base / f"out-{i}-{name.split()[0]}"
            results[name].append(timed(cmd(dst), envs[""]))
            shutil.rmtree(dst)
    shutil.rmtree(src)
    cp = statistics.median(r["wall"] for r in results["cp -r"]) if others else None
    peaks: dict[str, float] = {}
    for name, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        user = statistics.median(r["user"] for r in runs)
        system = statistics.median(r["sys"] for r in runs)
        line = (
            f"  {name:17s} wall {wall:6.2f} s  user {user:6.2f} s  sys {system:6.2f} s  "
            f"{files / wall:8.0f} files/s"
        )
        if len(runs) > 1:
            walls = sorted(r["wall"] for r in runs)
            line += f"  (walls {walls[0]:.2f}-{walls[-1]:.2f} s, {len(runs)} runs)"
        if cp is not None:
            line += f"  x{wall / cp:4.2f} of cp -r"
        if "peak_mb" in runs[0]:
            label = "before: " if name.startswith("before: ") else ""
            start_mb = statistics.median(empty_peak[label])
            peak = peaks[name] = statistics.median(r["peak_mb"] for r in runs)
            per_file = (peak - start_mb) * 1024 * 1024 / files
            line += f"  peak RSS {peak:6.1f} MB ({per_file:5.0f} B/file over {start_mb:.0f})"
        print(line)
    return peaks


if __name__ == "__main__":
    main()
