"""A 400-run soak of `softcopy watch`: every tiny run done, memory flat.

The service keeps nothing per finished run (the journal is the list), so the
watcher's resident memory once most runs are done must be what it was after the
first quarter, give or take the allocator's noise. The measuring code is the
benchmark's own (benchmarks/watch_soak.py), which also prints runs per minute.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import pytest
from conftest import run_softcopy

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("watch_soak", ROOT / "benchmarks" / "watch_soak.py")
assert _spec is not None and _spec.loader is not None
watch_soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(watch_soak)

RUNS = 400
# A leak of 5 KiB per finished run would be 1.5 MiB over the last 300 runs; without one,
# the allocator's noise was 0.4-0.9 MiB here (`benchmarks/watch_soak.py --runs 400`).
ALLOWED_GROWTH_MIB = 1.5


@pytest.mark.slow
@pytest.mark.alone  # CPU-bound: beside another worker it takes three times as long
@pytest.mark.timeout(900)
def test_four_hundred_tiny_runs_are_all_done_with_flat_memory(tmp_path: Path) -> None:
    result = watch_soak.soak(RUNS, max_runs=4, nprocs=1, workdir=tmp_path)
    assert result["exit_code"] == 0, result
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite")
    states = dict(db.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
    db.close()
    assert states == {"done": RUNS}
    marks = result["rss_by_progress"]
    growth = marks["100%"]["rss_mib"] - marks["25%"]["rss_mib"]
    assert growth < ALLOWED_GROWTH_MIB, result
    for i in (0, RUNS // 2, RUNS - 1):  # spot checks: the copies are the sources
        name = f"run{i:05d}"
        verified = run_softcopy(
            "verify", "--hash", tmp_path / "root" / name, tmp_path / "dest" / name
        )
        assert verified.returncode == 0, verified.stderr
