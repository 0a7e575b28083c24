"""`copy --json` and `run --json`: events on stdout; --dry-run; --no-progress; completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import met_before, run_softcopy
from test_acquisition import SMALL, simulate

from softcopy.cli.render import PLAN_FIELDS

PROGRESS_FIELDS = {
    "state", "files_copied", "bytes_copied", "files_deleted", "files_pending", "bytes_pending",
    "chunks_present", "chunks_expected", "rate", "lag_p50", "lag_max", "failures",
}  # fmt: skip


def events_of(stdout: str) -> list[dict]:
    """Every line of stdout is one JSON object of schema 1 with the common fields."""
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events, "no events on stdout"
    for event in events:
        assert event["schema"] == 1, event
        assert {"event", "time", "source", "destination"} <= event.keys(), event
    return events


@pytest.fixture
def unfinished(tmp_path: Path) -> Path:
    """A finished acquisition without a marker: --idle-timeout ends the copy after >1 s,
    time for progress events (one a second)."""
    src = tmp_path / "src.zarr"
    simulate(src, replace(SMALL, complete=False))
    return src


def test_copy_json_is_pure_json_lines_from_start_to_summary(unfinished: Path, tmp_path) -> None:
    dst = tmp_path / "dst.zarr"
    result = run_softcopy("copy", "--json", "--idle-timeout", "1.5", unfinished, dst)
    assert result.returncode == 0, result.stderr
    events = events_of(result.stdout)
    kinds = [e["event"] for e in events]
    states = [e["state"] for e in events if e["event"] == "state"]
    assert states[:2] == ["waiting", "copying"] and states[-1] == "done", states
    progress = [e for e in events if e["event"] == "progress"]
    assert progress, kinds
    assert progress[-1].keys() >= PROGRESS_FIELDS
    assert progress[-1]["files_copied"] == 49 and progress[-1]["files_pending"] == 0
    assert kinds[-1] == "summary" and events[-1]["state"] == "done", events[-1]
    assert events[-1]["files_copied"] == 49 and events[-1]["findings"] == []
    assert all(e["source"] == str(unfinished) and e["destination"] == str(dst) for e in events)
    # the human summary moved to stderr
    assert "done: " in result.stderr and "done: " not in result.stdout


def test_a_failing_target_reports_findings_and_fails(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    dst.mkdir()
    (dst / "notes.txt").write_text("not from the source")  # a destination softcopy did not make
    met_before(dst)  # and has copied into before: the file is a finding, not a refusal
    # ... holding a file of this source too: a copy made by other means, not a folder to
    # copy into (which is refused before anything: tests/test_input_habits.py).
    meta = next(p for p in sorted(src.iterdir()) if p.is_file() and p.name != "complete")
    (dst / meta.name).write_bytes(meta.read_bytes())
    result = run_softcopy("copy", "--json", src, dst)
    assert result.returncode == 1, result.stderr
    events = events_of(result.stdout)
    findings = [e for e in events if e["event"] == "finding"]
    assert findings == [
        {**findings[0], "kind": "extra", "key": "notes.txt"}
    ], findings  # fmt: skip
    summary = events[-1]
    assert summary["event"] == "summary" and summary["state"] == "failed", summary
    assert summary["findings"] == [{"kind": "extra", "key": "notes.txt"}]
    assert "failed: " in result.stderr and "extra: notes.txt" in result.stderr


def test_an_error_before_any_copy_is_an_error_event(tmp_path: Path) -> None:
    result = run_softcopy("copy", "--json", tmp_path / "missing.zarr", tmp_path / "dst.zarr")
    assert result.returncode == 2, result.stderr
    events = events_of(result.stdout)
    assert events[-1]["event"] == "error" and events[-1]["exit_code"] == 2, events
    assert "missing.zarr" in events[-1]["error"]
    assert events[-1]["source"] == str(tmp_path / "missing.zarr")
    result = run_softcopy("run", "--json", tmp_path / "no-such-targets.yaml")
    assert result.returncode == 2, result.stderr
    (event,) = events_of(result.stdout)
    assert event["event"] == "error" and event["source"] is None, event
    assert "softcopy: error:" in result.stderr


def test_run_json_reports_every_target_and_no_progress_keeps_stderr_quiet(tmp_path) -> None:
    for name in ("a", "b"):
        simulate(tmp_path / f"{name}.zarr", SMALL)
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        yaml.safe_dump(
            {"targets": [{"source": f"{n}.zarr", "destination": f"{n}.copy"} for n in "ab"]}
        )
    )
    result = run_softcopy("run", "--json", "--no-progress", targets)
    assert result.returncode == 0, result.stderr
    summaries = [e for e in events_of(result.stdout) if e["event"] == "summary"]
    assert sorted((Path(e["source"]).name, e["state"]) for e in summaries) == [
        ("a.zarr", "done"),
        ("b.zarr", "done"),
    ]
    assert result.stderr.count("done: ") == 2


def test_without_json_the_summary_line_stays_on_stdout(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    result = run_softcopy("copy", "--no-progress", src, dst)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("done: ") and "{" not in result.stdout


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_softcopy("copy", "--dry-run", src, dst)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"plan: {src} -> {dst} (dry run: nothing was written)" in out, out
    for label in ("to copy:     49 files (", "to re-copy:  0 files", "to delete:   0 files",
                  "free space:  ", "fits:        yes"):  # fmt: skip
        assert label in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing created"

    result = run_softcopy("copy", "--dry-run", "--json", src, dst)
    assert result.returncode == 0, result.stderr
    (plan,) = [e for e in events_of(result.stdout) if e["event"] == "plan"]
    assert set(PLAN_FIELDS) <= plan.keys(), plan
    assert (plan["files_to_copy"], plan["files_to_recopy"], plan["files_to_delete"]) == (49, 0, 0)
    assert plan["bytes_to_copy"] > 0 and plan["free_bytes"] > 0 and plan["fits"] is True
    assert isinstance(plan["destination_mount"], str) and plan["destination_mount"]
    assert "plan: " in result.stderr and "plan: " not in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---- shell completion -------------------------------------------------------------------


def softcopy_script() -> str:
    script = Path(sys.executable).parent / "softcopy"
    if not script.exists():
        pytest.skip("the softcopy console script is not installed beside this python")
    return str(script)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_click_writes_a_completion_script(shell: str) -> None:
    env = os.environ | {"_SOFTCOPY_COMPLETE": f"{shell}_source"}
    result = subprocess.run(
        [softcopy_script()], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "_SOFTCOPY_COMPLETE" in result.stdout and "softcopy" in result.stdout


def test_bash_completion_completes_commands_and_options() -> None:
    def complete(*words: str) -> list[str]:
        env = os.environ | {
            "_SOFTCOPY_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(("softcopy", *words)),
            "COMP_CWORD": str(len(words)),
        }
        result = subprocess.run(
            [softcopy_script()], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return [line.split(",", 1)[1] for line in result.stdout.splitlines()]

    assert complete("co") == ["copy"]
    assert {"--json", "--dry-run", "--progress", "--no-progress"} <= set(complete("copy", "--"))
