"""The runner: targets added while others copy, one stop signal for all, a result for each,
the run-wide rate state removed at the end. Real trees, real copier processes."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import pytest
from conftest import assert_same_tree, wait_for

from softcopy.config import TargetConfig, make_target
from softcopy.engine.runner import Finished, Runner, StopSignal
from softcopy.engine.target import Summary
from softcopy.errors import ConfigError

SENTINEL = "CopyComplete.txt"


def run_folder(root: Path, files: int = 3, finished: bool = False) -> Path:
    """A plain directory like a sequencer's run folder; `finished`: its sentinel is there."""
    (root / "data").mkdir(parents=True)
    for i in range(files):
        (root / "data" / f"part{i}.bin").write_bytes(bytes([i]) * (1000 + i))
    if finished:
        (root / SENTINEL).write_text("")
    return root


def target(src: Path, dst: Path, **options: object) -> TargetConfig:
    given = {
        "kind": "directory",
        "sentinels": (SENTINEL,),
        "sentinel_min_age": 0,
        "ready_age": 0,
        "settle": 600,  # only the sentinel ends these runs
        "nprocs": 1,
        "backoff": False,
    }
    return make_target(src, dst, given | options, "test")


class Events:
    """Every event the targets emit, from their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[dict] = []

    def __call__(self, event: dict) -> None:
        with self.lock:
            self.seen.append(event)

    def states(self, destination: Path) -> list[str]:
        with self.lock:
            return [
                e["state"]
                for e in self.seen
                if e["event"] == "state" and e["destination"] == str(destination)
            ]

    def summaries(self) -> set[str]:
        with self.lock:
            return {e["destination"] for e in self.seen if e["event"] == "summary"}


def test_a_target_added_while_another_runs_is_copied_and_waited_for(tmp_path: Path) -> None:
    slow_src = run_folder(tmp_path / "slow")
    fast_src = run_folder(tmp_path / "fast", files=2, finished=True)
    slow_dst, fast_dst = tmp_path / "slow-copy", tmp_path / "fast-copy"
    events = Events()
    with Runner(events=events) as runner:
        assert runner.add(target(slow_src, slow_dst)) == 0
        wait_for(lambda: (slow_dst / "data" / "part2.bin").exists(), what="the first copy")
        waited: list[list[Finished]] = []
        waiter = threading.Thread(target=lambda: waited.append(runner.wait()))
        waiter.start()
        # Added while `wait` runs: the service's case, a run that appears later.
        assert runner.add(target(fast_src, fast_dst)) == 1
        wait_for(lambda: str(fast_dst) in events.summaries(), what="the added target to end")
        assert str(slow_dst) not in events.summaries()
        assert waiter.is_alive()
        (slow_src / SENTINEL).write_text("")
        waiter.join(90)
        assert not waiter.is_alive()
    [results] = waited
    assert [r.cfg.destination for r in results] == [slow_dst, fast_dst]
    for r in results:
        assert isinstance(r.result, Summary) and r.result.state == "done", r.result
        assert_same_tree(r.cfg.source, r.cfg.destination)


@pytest.mark.parametrize("level", [1, 2])
def test_the_stop_signal_reaches_every_target(tmp_path: Path, level: int) -> None:
    stop = StopSignal()
    events = Events()
    pairs = [(run_folder(tmp_path / f"src{i}"), tmp_path / f"dst{i}") for i in range(2)]
    with Runner(stop, events) as runner:
        for src, dst in pairs:
            runner.add(target(src, dst))
        for _, dst in pairs:
            wait_for(lambda dst=dst: "copying" in events.states(dst), what=f"{dst} copying")
        for _ in range(level):
            stop.request()
        results = runner.wait()
    assert stop.level == level
    assert [r.cfg.destination for r in results] == [dst for _, dst in pairs]
    for r in results:
        assert isinstance(r.result, Summary), r.result
        assert r.result.state == "interrupted" and "run the same command again" in r.result.error


def test_each_target_has_its_result_and_one_failing_stops_no_other(tmp_path: Path) -> None:
    good_src = run_folder(tmp_path / "good", finished=True)
    missing = tmp_path / "missing"
    missing.mkdir()
    bad = target(missing, tmp_path / "bad-copy")
    missing.rmdir()  # gone by the time the target starts: its thread raises
    with Runner() as runner:
        runner.add(bad)
        runner.add(target(good_src, tmp_path / "good-copy"))
        bad_end, good_end = runner.wait()
    assert isinstance(bad_end.result, ConfigError)
    assert "it does not exist" in str(bad_end.result)
    assert isinstance(good_end.result, Summary) and good_end.result.state == "done"
    assert_same_tree(good_src, tmp_path / "good-copy")


def test_the_run_wide_rate_state_is_removed_and_the_runner_then_takes_no_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shared state lives in the temporary directory: this test's own.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    src = run_folder(tmp_path / "src", finished=True)
    with Runner(run_rate=50e6) as runner:
        [bucket] = tmp_path.glob("softcopy-rate-*")
        runner.add(target(src, tmp_path / "dst"))
        [end] = runner.wait()
    assert isinstance(end.result, Summary) and end.result.state == "done", end.result
    assert not bucket.exists()
    with pytest.raises(RuntimeError, match="closed"):
        runner.add(target(src, tmp_path / "again"))


def test_wait_with_no_target_returns_at_once() -> None:
    with Runner() as runner:
        assert runner.wait() == []
