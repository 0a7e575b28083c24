"""-q as rsync -q: nothing printed on success (no summary line, no hint of the original's
forms); errors and failures still on stderr with the same exit codes; --json unaffected."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import met_before, run_softcopy

# The fixtures, shared: a test that takes `src` shadows the import by design.
# ruff: noqa: F811
from test_cli_habits import archive, src  # noqa: F401


def _silent(result) -> None:
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_quiet_copy_prints_nothing(src: Path, tmp_path: Path, where: str) -> None:
    loud = run_softcopy("copy", src, tmp_path / "loud")
    assert loud.returncode == 0 and loud.stdout.startswith("done: "), loud.stderr
    args = ["copy", src, tmp_path / "d"]
    _silent(run_softcopy(*(["-q", *args] if where == "before" else [*args, "-q"])))
    assert run_softcopy("verify", src, tmp_path / "d").returncode == 0


def test_a_quiet_run_of_a_targets_file_prints_nothing(src: Path, tmp_path: Path) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  - source: {src}\n    destination: out/acq.zarr\n")
    _silent(run_softcopy("run", targets, "-q"))
    assert run_softcopy("verify", src, tmp_path / "out" / "acq.zarr").returncode == 0


def test_the_original_forms_with_q_print_nothing(src: Path, tmp_path: Path) -> None:
    loud = run_softcopy(src, tmp_path / "loud")
    assert loud.returncode == 0 and "the modern command is" in loud.stderr, loud.stderr
    _silent(run_softcopy(src, tmp_path / "d", "-q", "--nprocs", "2"))
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  - source: {src}\n    destination: {tmp_path / 'e'}\n")
    _silent(run_softcopy("-q", targets))
    for dst in ("d", "e"):
        assert run_softcopy("verify", src, tmp_path / dst).returncode == 0


def test_a_quiet_verify_prints_nothing_when_identical(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "d"
    _silent(run_softcopy("copy", src, dst, "-q"))
    loud = run_softcopy("verify", src, dst)
    assert loud.returncode == 0 and loud.stdout.startswith("identical: "), loud.stderr
    _silent(run_softcopy("verify", src, dst, "-q"))
    (dst / "zarr.json").write_text("{}")
    differs = run_softcopy("verify", "-q", src, dst)
    assert differs.returncode == 1 and differs.stdout == ""
    assert "zarr.json" in differs.stderr and "found" in differs.stderr


def test_a_failing_quiet_copy_still_says_why(src: Path, tmp_path: Path) -> None:
    missing = run_softcopy("copy", tmp_path / "missing.zarr", tmp_path / "e", "-q")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("softcopy: error: cannot ") and str(tmp_path) in missing.stderr
    # A destination softcopy did not make, holding a file the source lacks: the copy fails.
    dst = tmp_path / "d"
    shutil.copytree(src, dst, symlinks=True)
    (dst / "foreign.txt").write_text("not the source's\n")
    met_before(dst)  # copied into before: a finding of the copy, not a refusal up front
    failed = run_softcopy("copy", src, dst, "-q")
    assert failed.returncode == 1 and failed.stdout == ""
    assert "failed: " in failed.stderr and "foreign.txt" in failed.stderr


def test_json_is_the_same_with_q(src: Path, tmp_path: Path) -> None:
    def kinds(*args: object) -> list[str]:
        result = run_softcopy("copy", "--json", *args)
        assert result.returncode == 0, result.stderr
        events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
        return [e for e in events if e != "progress"]  # how many: a matter of timing

    loud = kinds(src, tmp_path / "d")
    assert "summary" in loud
    assert kinds(src, tmp_path / "e", "-q") == loud


def test_a_quiet_simulation_prints_nothing(tmp_path: Path) -> None:
    loud = run_softcopy("simulate", tmp_path / "a.zarr", "--timepoints", "1", "--interval", "0")
    assert loud.returncode == 0 and loud.stdout.startswith("simulated "), loud.stderr
    _silent(run_softcopy("-q", "simulate", tmp_path / "b.zarr", "--timepoints", "1",
                         "--interval", "0"))  # fmt: skip
    assert (tmp_path / "b.zarr" / "zarr.json").is_file()
