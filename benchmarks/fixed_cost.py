"""The fixed cost of softcopy: what a tiny copy, `--version` and `--help` cost as whole processes.

A 4-chunk zarr v3 archive with a `complete` marker (written by `softcopy simulate`) is copied
into a fresh destination each run; `softcopy --version`, `softcopy --help` and `python -c pass`
(the interpreter's floor) are timed beside it, in turn within each round so that machine noise
spreads evenly. Wall seconds and CPU seconds (user + system of the process and every process it
started, copiers included) are printed as medians of the rounds.

    python benchmarks/fixed_cost.py [--rounds 10]

`--baseline DIR` adds a column for the softcopy in DIR (a checkout of another commit, e.g. from
`git worktree add /tmp/base HEAD`), run with the same interpreter through PYTHONPATH, with the
ratio of this tree's median to it, so a change is measured against its parent in the same run.

Bytecode is cached (in a temporary PYTHONPYCACHEPREFIX, even when PYTHONDONTWRITEBYTECODE is
set), as it is for an installed package, and one warm-up run of each command is not counted:
otherwise every run would measure Python compiling softcopy's sources.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU counts every descendant the command waited for."""
    cpu = child_cpu()
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr}")
    return time.perf_counter() - started, child_cpu() - cpu


def environment(work: Path, tree: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env["XDG_STATE_HOME"] = str(work / "state")  # a journal of its own, not the user's
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def build(path: Path, env: dict[str, str], cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "softcopy", "simulate", str(path), "--timepoints", "4",
         "--interval", "0", "--shape", "1,64,64", "--chunks", "1,64,64", "--no-compress"],
        check=True, capture_output=True, env=env, cwd=cwd,
    )  # fmt: skip
    assert (path / "complete").exists(), f"{path}: the simulator wrote no 'complete' marker"


def commands(source: Path, work: Path) -> dict[str, Callable[[], list[str]]]:
    """Each case makes its command line anew: a copy goes to a destination of its own."""
    python = [sys.executable]
    runs = iter(range(1_000_000))
    return {
        "python -c pass": lambda: [*python, "-c", "pass"],
        "softcopy --version": lambda: [*python, "-m", "softcopy", "--version"],
        "softcopy --help": lambda: [*python, "-m", "softcopy", "--help"],
        "softcopy copy (4 chunks, marker)": lambda: [
            *python, "-m", "softcopy", "copy", str(source), str(work / f"dst{next(runs)}.zarr"),
        ],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--baseline", type=Path, help="another softcopy checkout to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="softcopy-fixed-") as tmp:
        work = Path(tmp)
        # Not from a checkout: `python -m` would import the softcopy in the working directory.
        trees: dict[str, dict[str, str]] = {"this tree": environment(work, None)}
        if args.baseline is not None:
            trees["baseline"] = environment(work / "baseline", args.baseline.resolve())
        build(work / "src.zarr", trees["this tree"], work)
        cases = {}
        for name in trees:
            (work / name.replace(" ", "-")).mkdir()
            cases[name] = commands(work / "src.zarr", work / name.replace(" ", "-"))
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for round_ in range(args.rounds + 1):  # round 0 is the warm-up
            for case in cases["this tree"]:
                for name, env in trees.items():
                    cmd = cases[name][case]()
                    sample = timed(cmd, env, work)
                    if round_:
                        results.setdefault((case, name), []).append(sample)
        print(f"medians of {args.rounds} rounds, after one warm-up; CPU = user + system, "
              "copiers included", flush=True)  # fmt: skip
        header = f"{'command':34} " + " ".join(f"{n + ' wall':>16} {'CPU':>6}" for n in trees)
        print(header + ("   wall ratio  CPU ratio" if len(trees) > 1 else ""))
        for case in cases["this tree"]:
            medians = {
                name: tuple(statistics.median(s[i] for s in results[(case, name)]) for i in (0, 1))
                for name in trees
            }
            row = f"{case:34} " + " ".join(f"{w:16.3f} {c:6.3f}" for w, c in medians.values())
            if len(trees) > 1:
                (w, c), (bw, bc) = medians["this tree"], medians["baseline"]
                row += f"   {w / bw:10.2f}x {c / bc:9.2f}x"
            print(row)


if __name__ == "__main__":
    main()
