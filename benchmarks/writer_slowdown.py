"""How much softcopy slows a writer at full speed, and how far behind the copy stays.

A tensorstore writer writes timepoints of 2,048 chunk files of 64 KiB (128 MiB,
uncompressed uint16), one timepoint a second, as a fast camera would. Each round
runs it alone, then again while `softcopy copy` (default settings) copies it live.
The writer times each timepoint's write (the data is made before the clock
starts); the result is its median time per timepoint with softcopy over without.
Copy lag, per chunk file: the destination's rename time (its ctime) minus the
source's last write (its mtime); p50 and p95 over every chunk of the run.

    python benchmarks/writer_slowdown.py [--timepoints 5] [--rounds 1] [--formats v3,v2]
                                         [--dir DIR] [--copy-dir DIR] [--baseline TREE]
                                         [-- extra softcopy copy options]

`--copy-dir` puts the copies on another filesystem than the writer's (an acquisition
machine copies to a network or another disk; `--copy-dir /dev/shm` here, where there
is one disk): the writer then competes with softcopy for the CPUs and the source disk's
reads only, not for the same disk's writes. `--baseline TREE` measures another softcopy
tree (on PYTHONPATH) in the same run, alternating with this one; run it from outside
the checkout, whose folder would otherwise shadow PYTHONPATH.

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (/proc/PID/stat, clock ticks)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


class Tree:
    """One softcopy to measure: this checkout, or a baseline tree (--baseline)."""

    def __init__(self, name: str, env: dict) -> None:
        self.name, self.env = name, env
        self.times: list[float] = []
        self.lags: list[float] = []
        self.cpu = 0.0  # all of softcopy's, copiers and verification included
        self.live_supervisor = 0.0  # while the writer wrote: the supervisor's own
        self.live_copiers = 0.0  # and its copiers'
        self.pauses = 0  # back-offs (the disk or the CPUs busy): the usual cause of long lags


def with_softcopy(tree: Tree, src: Path, dst: Path, fmt: str, args: argparse.Namespace) -> None:
    log = src.parent / "softcopy.log"
    with log.open("w") as err:
        copier = subprocess.Popen(
            [*SOFTCOPY, "copy", str(src), str(dst), "--wait-for-source", *args.extra],
            stdout=subprocess.DEVNULL, stderr=err, env=tree.env,
        )  # fmt: skip
    time.sleep(1.0)  # started and waiting, as it would be before an acquisition
    tree.times += write(src, fmt, args.timepoints, 1.0)
    # The CPU softcopy took while the writer wrote is what competed with it.
    kids = children_of(copier.pid)
    tree.live_supervisor += cpu_seconds(copier.pid)
    tree.live_copiers += sum(cpu_seconds(k) for k in kids)
    # wait4: softcopy's CPU time, its copiers' included (they are its waited-for children)
    _, status, usage = os.wait4(copier.pid, 0)
    copier.returncode = os.waitstatus_to_exitcode(status)
    assert copier.returncode == 0, log.read_text()
    tree.cpu += usage.ru_utime + usage.ru_stime
    tree.pauses += log.read_text().count("pausing copiers")
    tree.lags += lags(src, dst)
    shutil.rmtree(src)
    shutil.rmtree(dst)


def one_format(base: Path, copies: Path, fmt: str, args: argparse.Namespace, env: dict) -> None:
    alone: list[float] = []
    trees = [Tree("this tree", env)]
    if args.baseline:
        path = os.pathsep.join([str(Path(args.baseline).resolve()), env.get("PYTHONPATH", "")])
        trees.append(Tree("baseline", {**env, "PYTHONPATH": path.rstrip(os.pathsep)}))
    for i in range(args.rounds):
        src = base / f"alone-{fmt}-{i}.zarr"
        alone += write(src, fmt, args.timepoints, 1.0)
        shutil.rmtree(src)
        # Alternating which goes first: the machine's state drifts over a run.
        for tree in trees if i % 2 == 0 else trees[::-1]:
            src, dst = base / f"src-{fmt}-{i}.zarr", copies / f"dst-{fmt}-{i}.zarr"
            with_softcopy(tree, src, dst, fmt, args)
    a, ma = statistics.median(alone), statistics.mean(alone)
    print(f"{fmt}: writer alone, per timepoint {[round(x * 1e3) for x in alone]}")
    mb = args.rounds * args.timepoints * 128 * 2**20 / 1e6
    for tree in trees:
        c, mc = statistics.median(tree.times), statistics.mean(tree.times)
        p = f"{fmt} {tree.name}:"
        print(
            f"{p} writer time per timepoint (median of {len(alone)}): alone {a * 1e3:.0f} ms, "
            f"with softcopy {c * 1e3:.0f} ms (x{c / a:.2f}); means {ma * 1e3:.0f} / "
            f"{mc * 1e3:.0f} ms (x{mc / ma:.2f})"
        )
        found = tree.lags
        print(
            f"{p} copy lag over {len(found)} chunk files: p50 {percentile(found, 0.5):.3f} s,"
            f" p95 {percentile(found, 0.95):.3f} s, max {max(found):.3f} s; {tree.pauses} pauses"
        )
        print(
            f"{p} softcopy CPU {tree.cpu:.1f} s for {mb:.0f} MB (user + system, copiers and "
            f"verification included); while the writer wrote: supervisor "
            f"{tree.live_supervisor:.2f} s, copiers {tree.live_copiers:.2f} s"
        )
        print(f"{p} per timepoint with {[round(x * 1e3) for x in tree.times]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timepoints", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--formats", default="v3,v2")
    parser.add_argument("--dir", help="where to write (default: the system's temporary folder)")
    parser.add_argument("--copy-dir", help="where the copies go (default: beside the source)")
    parser.add_argument(
        "--baseline",
        help="another softcopy tree (e.g. `git archive HEAD` unpacked): measured in the same "
        "run, alternating with this one; run from outside the checkout",
    )
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
