"""Copiers started before their target is known (copiers/spares.py): real processes.

`copy` starts its copiers before it imports the engine; the pool takes them, tells them
their options, and they copy as any copier does. A spare at another priority is never
taken, a dead one is replaced, and the ones nobody took are killed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DEADLINE
from test_imports import four_chunk_archive, run_in_process

from softcopy.copiers import spares
from softcopy.copiers.pool import CopierPool
from softcopy.copiers.protocol import CopierOptions


@pytest.fixture(autouse=True)
def no_spares_left():
    yield
    spares.discard()


def copy_one(pool: CopierPool, key: str) -> list[str]:
    copier = pool.idle()[0]
    pool.send(copier, [(key, False)])
    while True:
        assert copier.conn.poll(DEADLINE), "the copier never answered"
        outcomes, lost = pool.receive(copier.conn)
        if outcomes or lost:
            return [o.status for o in outcomes] + [f"lost {k}" for k in lost]


def tree(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "a").write_bytes(b"a" * 1000)
    (src / "b").write_bytes(b"b" * 2000)
    return src, dst


def test_the_pool_takes_the_spares_and_they_copy_with_the_options_sent_later(
    tmp_path: Path,
) -> None:
    src, dst = tree(tmp_path)
    spares.start(2)
    started = [p.pid for p, _ in spares._spares]
    pool = CopierPool(2, CopierOptions(str(src), str(dst), 0.0, False, False))
    try:
        assert sorted(pool.pids()) == sorted(started)
        assert spares._spares == []
        assert copy_one(pool, "a") == ["copied"]
        assert (dst / "a").read_bytes() == b"a" * 1000
    finally:
        pool.stop(graceful=True)


def test_a_pool_at_another_priority_starts_its_own_and_leaves_the_spares(
    tmp_path: Path,
) -> None:
    src, dst = tree(tmp_path)
    spares.start(1)
    waiting = spares._spares[0][0]
    pool = CopierPool(1, CopierOptions(str(src), str(dst), 0.0, False, False, nice=0))
    try:
        assert pool.pids() != [waiting.pid]
        assert copy_one(pool, "b") == ["copied"]
    finally:
        pool.stop(graceful=True)
    assert waiting.poll() is None  # still a spare, for a pool at its priority
    spares.discard()
    assert waiting.poll() is not None  # killed, and reaped
    assert spares._spares == []


def test_a_spare_that_died_is_replaced_by_a_fresh_copier(tmp_path: Path) -> None:
    src, dst = tree(tmp_path)
    spares.start(1)
    dead = spares._spares[0][0]
    dead.kill()
    dead.wait()
    pool = CopierPool(1, CopierOptions(str(src), str(dst), 0.0, False, False))
    try:
        assert pool.pids() != [dead.pid]
        assert copy_one(pool, "a") == ["copied"]
    finally:
        pool.stop(graceful=True)


def test_a_copier_killed_after_it_was_taken_loses_its_batch_and_is_replaced(
    tmp_path: Path,
) -> None:
    src, dst = tree(tmp_path)
    spares.start(1)
    pool = CopierPool(1, CopierOptions(str(src), str(dst), 0.0, False, False))
    try:
        first = pool.copiers[0].process
        first.kill()
        first.wait()
        assert copy_one(pool, "a") == ["lost a"]  # queued again by the supervisor
        assert pool.pids() != [first.pid]
        assert copy_one(pool, "a") == ["copied"]
    finally:
        pool.stop(graceful=True)


@pytest.mark.parametrize(
    ("extra", "early"),
    [
        (("--dry-run",), []),  # a plan copies nothing: no copier
        (("--pack", "tar"), [{"copiers": 0, "numpy": False}]),  # packed in the supervisor
    ],
)
def test_a_copy_that_needs_no_copier_starts_none(
    tmp_path: Path, extra: tuple[str, ...], early: list
) -> None:
    src = four_chunk_archive(tmp_path / "src.zarr")
    dst = tmp_path / ("dst.tar" if "--pack" in extra else "dst.zarr")
    result = run_in_process(tmp_path, "copy", src, dst, *extra)
    assert result["code"] == 0, result["stderr"]
    assert result["early"] == early


def test_a_rerun_of_a_finished_copy_starts_none_and_copies_what_changed(tmp_path: Path) -> None:
    src = four_chunk_archive(tmp_path / "src.zarr")
    dst = tmp_path / "dst.zarr"
    first = run_in_process(tmp_path, "copy", src, dst)
    assert first["code"] == 0, first["stderr"]
    assert first["early"] == [{"copiers": 2, "numpy": False}]
    # Its certificate says it is finished: most likely nothing to copy, no copier started
    # early. A changed file is still copied, by copiers started when the work appears.
    (src / "c" / "0" / "0").write_bytes(b"changed!")
    again = run_in_process(tmp_path, "copy", src, dst)
    assert again["code"] == 0, again["stderr"]
    assert again["early"] == [{"copiers": 0, "numpy": False}]
    assert (dst / "c" / "0" / "0").read_bytes() == b"changed!"
