"""A drop-in for the original softcopy (royerlab/softcopy 0.0.x): its two forms,
`softcopy TARGETS_FILE` and `softcopy SOURCE DEST`, with its flags and its targets format,
through the real program; the lazy group; a version above the original's."""

# ruff: noqa: F811 (the fixtures imported from test_cli_habits are parameters by those names)

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import DEADLINE, finish, run_softcopy, start_softcopy, tree_files

# A finished zarr archive written once for the module, and a fresh copy of it per test.
from test_cli_habits import archive, src  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
HINT = "softcopy: this is the original softcopy's form; the modern command is: "

# The original's README, word for word in its structure: comments, `targets:`, a list of
# source/destination pairs and nothing else.
ORIGINAL_TARGETS = """\
# The toplevel key for everything is called `targets`.
targets:
  # The first dict here corresponds to the first copy operation
  - source: {source}
    destination: {destination}
"""


def same_tree(a: Path, b: Path) -> bool:
    files = tree_files(a)
    return files == tree_files(b) and all(
        filecmp.cmp(a / key, b / key, shallow=False) for key in files
    )


def copied_and_verified(result: subprocess.CompletedProcess, src: Path, dst: Path) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("done: ") and " verified; " in result.stdout, result.stdout
    assert same_tree(src, dst)


def test_the_targets_file_form_runs_the_file_with_the_original_flags(src: Path, tmp_path):
    dst = tmp_path / "server" / "acq.zarr"
    targets = tmp_path / "targets.yaml"
    targets.write_text(ORIGINAL_TARGETS.format(source=src, destination=dst))
    result = run_softcopy(
        "targets.yaml", "--nprocs", "3", "--sleep-time", "0", "--wait-for-source", "false",
        "--verbose", cwd=tmp_path,
    )  # fmt: skip
    copied_and_verified(result, src, dst)
    first = result.stderr.splitlines()[0]
    assert first == HINT + (
        "softcopy run targets.yaml --nprocs 3 --sleep-time 0 --no-wait-for-source --verbose"
    )
    assert result.stderr.count(HINT) == 1
    assert "with 3 copiers" in result.stderr  # --nprocs means what it meant
    assert " DEBUG " in result.stderr  # --verbose too, after the file as the original took it


def test_options_before_the_targets_file_as_the_original_took_them(src: Path, tmp_path):
    dst = tmp_path / "out.zarr"
    (tmp_path / "t.yaml").write_text(ORIGINAL_TARGETS.format(source=src, destination=dst))
    result = run_softcopy("--nprocs", "1", "--wait-for-source", "no", "t.yaml", cwd=tmp_path)
    copied_and_verified(result, src, dst)
    assert result.stderr.startswith(
        HINT + "softcopy run --nprocs 1 --no-wait-for-source t.yaml\n"
    ), result.stderr


def test_relative_paths_mean_the_same_when_run_beside_the_file(src: Path, tmp_path) -> None:
    (tmp_path / "targets.yaml").write_text(
        ORIGINAL_TARGETS.format(source="acq.zarr", destination="copies/acq.zarr")
    )
    result = run_softcopy("targets.yaml", cwd=tmp_path)
    copied_and_verified(result, src, tmp_path / "copies" / "acq.zarr")


def test_relative_paths_that_would_change_meaning_are_refused(src: Path, tmp_path) -> None:
    """The original read them from the current directory, this softcopy from the file's
    folder: run from elsewhere, a copy could land somewhere else. Refused, before anything."""
    folder = tmp_path / "config"
    folder.mkdir()
    targets = folder / "targets.yaml"
    targets.write_text(ORIGINAL_TARGETS.format(source="acq.zarr", destination="dst.zarr"))
    before = sorted(os.listdir(tmp_path))
    result = run_softcopy(targets, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(HINT) and len(lines) == 2, result.stderr
    assert lines[1].startswith(f"softcopy: error: cannot read targets file {targets}: ")
    assert "targets[0].source 'acq.zarr' is relative" in lines[1]
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(folder) == ["targets.yaml"]


def test_the_two_path_form_copies_with_the_original_flags(src: Path, tmp_path) -> None:
    dst = tmp_path / "dst.zarr"
    result = run_softcopy(src, dst, "--nprocs", "2", "--sleep-time", "0.01", "--verbose")
    copied_and_verified(result, src, dst)
    assert result.stderr.splitlines()[0] == HINT + (
        f"softcopy copy {src} {dst} --nprocs 2 --sleep-time 0.01 --verbose"
    )


def test_wait_for_source_true_waits_for_a_source_not_there_yet(archive: Path, tmp_path):
    src, dst = tmp_path / "later" / "acq.zarr", tmp_path / "dst.zarr"
    src.parent.mkdir()
    proc = start_softcopy(src, dst, "--wait-for-source", "true", "--nprocs", "1")
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # ends at EOF if it exits instead of waiting
        seen.append(line)
        if "waiting for the source" in line:
            break
    assert seen[0] == HINT + f"softcopy copy {src} {dst} --wait-for-source --nprocs 1\n"
    assert "waiting for the source" in seen[-1], seen
    staged = tmp_path / "staged.zarr"
    shutil.copytree(archive, staged)
    staged.rename(src)  # the acquisition appears, whole
    rc, out, err = finish(proc, DEADLINE)
    assert rc == 0, err
    assert out.startswith("done: ") and same_tree(src, dst)


def test_a_bad_wait_for_source_value_is_a_usage_error(src: Path, tmp_path) -> None:
    result = run_softcopy(src, tmp_path / "d", "--wait-for-source=maybe")
    assert result.returncode == 2
    assert "'maybe' is not true or false" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


def test_an_old_form_that_does_not_parse_gets_its_error_alone(src: Path) -> None:
    """The hint says what to type from now on: not for a line that is wrong anyway."""
    result = run_softcopy(src)  # one path: neither of the original's forms parses
    assert result.returncode == 2
    assert "Missing argument 'DESTINATION'" in result.stderr
    assert HINT not in result.stderr, result.stderr


def test_the_modern_commands_take_the_original_s_wait_for_source_value(src: Path, tmp_path):
    """Out of habit, `--wait-for-source true` after `copy`: the value becomes the switch."""
    for value, dst in (("true", "a"), ("false", "b")):
        result = run_softcopy("copy", src, tmp_path / dst, "--wait-for-source", value)
        copied_and_verified(result, src, tmp_path / dst)
        assert HINT not in result.stderr  # the modern form: nothing to say
    result = run_softcopy("-v", "copy", src, tmp_path / "c", "--wait-for-source=no")
    copied_and_verified(result, src, tmp_path / "c")


@pytest.mark.parametrize(
    ("typo", "suggestion"), [("cpoy", "copy"), ("stauts", "status"), ("verfy", "verify")]
)
def test_a_typo_is_still_no_such_command_with_a_suggestion(typo: str, suggestion: str):
    result = run_softcopy(typo, "a", "b")
    assert result.returncode == 2
    assert f"No such command '{typo}'. Did you mean '{suggestion}'?" in result.stderr
    assert HINT not in result.stderr


def test_a_missing_path_is_no_such_command_saying_it_does_not_exist(tmp_path: Path) -> None:
    result = run_softcopy(tmp_path / "targets.yaml")
    assert result.returncode == 2
    assert f"No such command '{tmp_path / 'targets.yaml'}', nor an existing file" in result.stderr
    assert HINT not in result.stderr


def test_the_version_compares_above_the_original_s() -> None:
    from packaging.version import Version

    import softcopy

    result = run_softcopy("--version")
    assert result.returncode == 0
    shown = result.stdout.split()[-1]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert shown == declared == softcopy.__version__
    assert Version(shown) > Version("0.0.13")  # the original's last release
    assert Version(shown) >= Version("0.1")


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_do_not_import_the_engine(args: list[str]) -> None:
    """Commands are imported when they run (lazy group): --help and --version stay fast."""
    code = (
        "import sys\nfrom softcopy.cli import main\n"
        f"try:\n    main({args!r}, prog_name='softcopy')\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'zarr', 'tensorstore', 'softcopy.engine.runner', "
        "'softcopy.cli.copy', 'rich') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout


def test_the_group_lists_each_command_with_its_own_short_help() -> None:
    from softcopy.cli import COMMANDS, main

    for name, (_, _, text) in COMMANDS.items():
        assert main.commands[name].get_short_help_str(10**6) == text, name
    result = run_softcopy("--help")
    for name in COMMANDS:
        assert f"\n  {name} " in result.stdout, result.stdout
