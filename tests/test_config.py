"""Targets files and target definitions: softcopy.config.load_targets and make_target."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from softcopy.config import TargetConfig, load_targets, make_target, with_options
from softcopy.errors import EXIT_USAGE, ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A directory holding a targets file's trees; the shell's cwd is somewhere else."""
    (tmp_path / "elsewhere").mkdir()
    return tmp_path / "conf"


# ---- paths and merging -----------------------------------------------------------------


def test_relative_paths_are_resolved_against_the_targets_file(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = write(
        base / "targets.yaml",
        "targets:\n"
        "  - {source: acq/a.zarr, destination: ../copies/a.zarr}\n"
        f"  - {{source: {tmp_path}/abs/b.zarr, destination: copies/b.zarr}}\n",
    )
    monkeypatch.chdir(tmp_path / "elsewhere")
    a, b = load_targets(Path(os.path.relpath(targets)))
    assert a.source == base / "acq" / "a.zarr"
    assert a.destination == tmp_path / "copies" / "a.zarr"  # normalised, no ".."
    assert b.source == tmp_path / "abs" / "b.zarr"  # absolute paths are kept
    assert b.destination == base / "copies" / "b.zarr"
    assert a.name == str(a.source)


def test_home_relative_paths_in_a_targets_file(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    targets = write(base / "t.yaml", "targets:\n  - {source: ~/acq.zarr, destination: out}\n")
    (target,) = load_targets(targets)
    assert target.source == home / "acq.zarr"
    assert target.destination == base / "out"


def test_defaults_then_target_options_then_overrides(base: Path) -> None:
    targets = write(
        base / "t.yaml",
        "defaults: {nprocs: 4, settle: 1.5, fsync: true, complete_marker: done}\n"
        "targets:\n"
        "  - {source: a, destination: A, nprocs: 8, idle_timeout: 10}\n"
        "  - {source: b, destination: B, settle: 0, sleep_time: 0.25}\n"
        "  - {source: c, destination: C}\n",
    )
    a, b, c = load_targets(targets)
    assert (a.nprocs, a.settle, a.fsync, a.idle_timeout) == (8, 1.5, True, 10)
    assert (b.nprocs, b.settle, b.sleep_time, b.idle_timeout) == (4, 0, 0.25, None)
    assert (c.nprocs, c.settle, c.complete_marker) == (4, 1.5, "done")
    # Options set nowhere keep the dataclass defaults.
    plain = TargetConfig(Path("/s"), Path("/d"))
    for t in (a, b, c):
        assert (t.scan_interval, t.max_attempts, t.batch_size, t.wait_for_source) == (
            plain.scan_interval,
            plain.max_attempts,
            plain.batch_size,
            plain.wait_for_source,
        )

    # Command-line overrides beat both the defaults and every target's own options.
    a, b, c = load_targets(targets, {"nprocs": 1, "settle": 7.0})
    assert [(t.nprocs, t.settle) for t in (a, b, c)] == [(1, 7.0)] * 3
    assert (a.fsync, a.idle_timeout, b.sleep_time) == (True, 10, 0.25)


def test_make_target_expands_home_and_makes_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    t = make_target("acq.zarr", "~/copy.zarr", {"nprocs": 3}, "command line")
    assert t.source == tmp_path / "acq.zarr"
    assert t.destination == tmp_path / "home" / "copy.zarr"
    assert t.nprocs == 3
    assert with_options(t, settle=0.5).settle == 0.5
    with pytest.raises(ConfigError, match=r"option\.nprocs"):
        with_options(t, nprocs=0)


# ---- validation errors name the place ---------------------------------------------------

BAD_FILES = [
    # (targets file text, what the message must name, what it must say)
    ("[1, 2]\n", "t.yaml", "non-empty 'targets' list"),
    ("targets: []\n", "t.yaml", "non-empty 'targets' list"),
    ("targets: {source: a}\n", "t.yaml", "non-empty 'targets' list"),
    ("target: [{source: a, destination: b}]\n", "t.yaml:1: target", "did you mean 'targets'?"),
    (
        "targets: [{source: a, destination: b}]\nextra: 1\n",
        "t.yaml:2: extra",
        "unknown top-level key (known: targets, watch, defaults)",
    ),
    # An option at the top, meant for every target: where it goes.
    (
        "nproc: 4\ntargets: [{source: a, destination: b}]\n",
        "t.yaml:1: nproc",
        "did you mean the option 'nprocs'? Options go under 'defaults:'",
    ),
    (
        "targets: [{source: a, destination: b}]\nsettle: 5\n",
        "t.yaml:2: settle",
        "'settle' is an option, which goes under 'defaults:' (for every target) or in a target",
    ),
    ("defaults: [1]\ntargets: [{source: a, destination: b}]\n", "t.yaml:1: defaults", "mapping"),
    (
        "defaults: {nprocs: 0}\ntargets: [{source: a, destination: b}]\n",
        "t.yaml:1: defaults.nprocs",
        "0 is not a whole number >= 1",
    ),
    (
        "defaults: {speed: 3}\ntargets: [{source: a, destination: b}]\n",
        "t.yaml:1: defaults.speed",
        "unknown option",
    ),
    ("targets: [{source: a, destination: b}, x]\n", "t.yaml:1: targets[1]", "expected a mapping"),
    ("targets: [{destination: b}]\n", "t.yaml:1: targets[0].source", "a path is required"),
    ("targets: [{source: a}]\n", "t.yaml:1: targets[0].destination", "a path is required"),
    ("targets: [{source: '', destination: b}]\n", "targets[0].source", "a path is required"),
    ("targets: [{source: 7, destination: b}]\n", "targets[0].source", "a path is required"),
    (
        "targets: [{source: a, destination: b}, {source: c, destination: d, nprocs: 0}]\n",
        "t.yaml:1: targets[1].nprocs",
        "0 is not a whole number >= 1",
    ),
    ("targets: [{source: a, destination: b, nprocs: 2.5}]\n", "targets[0].nprocs", "whole number"),
    ("targets: [{source: a, destination: b, nprocs: true}]\n", "targets[0].nprocs", "whole"),
    ("targets: [{source: a, destination: b, max_attempts: 0}]\n", "].max_attempts", "whole"),
    ("targets: [{source: a, destination: b, batch_size: -1}]\n", "].batch_size", "whole"),
    ("targets: [{source: a, destination: b, settle: -1}]\n", "].settle", "less than 0"),
    ("targets: [{source: a, destination: b, settle: fast}]\n", "].settle", "not a number"),
    ("targets: [{source: a, destination: b, settle: .nan}]\n", "].settle", "not a number"),
    ("targets: [{source: a, destination: b, sleep_time: .nan}]\n", "].sleep_time", "number"),
    ("targets: [{source: a, destination: b, scan_interval: true}]\n", "].scan_interval", "number"),
    ("targets: [{source: a, destination: b, idle_timeout: -2}]\n", "].idle_timeout", "less than"),
    ("targets: [{source: a, destination: b, fsync: 1}]\n", "].fsync", "not true or false"),
    ("targets: [{source: a, destination: b, wait_for_source: yes please}]\n", "].wait_", "true"),
    ("targets: [{source: a, destination: b, complete_marker: a/b}]\n", "].complete_", "plain"),
    ("targets: [{source: a, destination: b, complete_marker: ''}]\n", "].complete_", "plain"),
    ("targets: [{source: a, destination: b, colour: red}]\n", "targets[0].colour", "unknown"),
]


@pytest.mark.parametrize(("text", "place", "problem"), BAD_FILES)
def test_every_error_names_the_place(base: Path, text: str, place: str, problem: str) -> None:
    targets = write(base / "t.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_targets(targets)
    message = str(info.value)
    assert place in message
    assert problem in message
    assert info.value.exit_code == EXIT_USAGE


def test_unknown_option_lists_the_known_ones(base: Path) -> None:
    targets = write(base / "t.yaml", "targets: [{source: a, destination: b, colour: 2}]\n")
    with pytest.raises(ConfigError, match=r"targets\[0\]\.colour: unknown option") as info:
        load_targets(targets)
    assert "nprocs" in info.value.problem and "settle" in info.value.problem


def test_a_misspelt_option_gets_the_nearest_name_alone(base: Path) -> None:
    targets = write(base / "t.yaml", "targets: [{source: a, destination: b, nproc: 2}]\n")
    with pytest.raises(ConfigError, match=r"targets\[0\]\.nproc: unknown option") as info:
        load_targets(targets)
    assert "did you mean 'nprocs'?" in info.value.problem
    assert "settle" not in info.value.problem  # the whole list would bury it


def test_missing_and_malformed_files(base: Path) -> None:
    with pytest.raises(ConfigError, match="No such file") as info:
        load_targets(base / "missing.yaml")
    assert info.value.path == str(base / "missing.yaml")
    bad = write(base / "bad.yaml", "targets:\n  - {source: a, destination: b\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_targets(bad)
    # Where the parser gave up, and where the unclosed bracket began, on one line.
    assert info.value.path == f"{bad}:3:1"
    assert "began on line 2" in str(info.value) and "\n" not in str(info.value)
    assert "<unicode string>" not in str(info.value)
    tab = write(base / "tab.yaml", "targets:\n\t- source: a\n")
    with pytest.raises(ConfigError, match="never tabs") as info:
        load_targets(tab)
    assert info.value.path == f"{tab}:2:1"


def test_an_invalid_override_is_rejected(base: Path) -> None:
    targets = write(base / "t.yaml", "targets: [{source: a, destination: b}]\n")
    with pytest.raises(ConfigError, match="nprocs"):
        load_targets(targets, {"nprocs": 0})


# ---- overlapping trees ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "problem"),
    [
        ("{source: s2, destination: out/a}", "targets[0] writes to the same destination"),
        ("{source: s2, destination: out/a/inner}", "overlaps targets[0].destination"),
        ("{source: s2, destination: out}", "overlaps targets[0].destination"),
        ("{source: s2, destination: out/./a/}", "targets[0] writes to the same destination"),
    ],
)
def test_overlapping_destinations_are_rejected(base: Path, second: str, problem: str) -> None:
    targets = write(
        base / "t.yaml", f"targets:\n  - {{source: s1, destination: out/a}}\n  - {second}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_targets(targets)
    assert info.value.path == f"{targets}: targets[1].destination"
    assert problem in info.value.problem


def test_a_destination_reached_through_a_symlink_is_the_same_destination(base: Path) -> None:
    (base / "real").mkdir(parents=True)
    (base / "alias").symlink_to(base / "real")
    targets = write(
        base / "t.yaml",
        "targets:\n  - {source: s1, destination: real/a}\n  - {source: s2, destination: alias/a}\n",
    )
    with pytest.raises(ConfigError, match=r"targets\[1\]\.destination: .*overlaps targets\[0\]"):
        load_targets(targets)


def test_distinct_destinations_are_accepted(base: Path) -> None:
    targets = write(
        base / "t.yaml",
        "targets:\n"
        "  - {source: s1, destination: out/a}\n"
        "  - {source: s2, destination: out/ab}\n"  # a common string prefix is not nesting
        "  - {source: s1, destination: out/b}\n",  # one source to two places is allowed
    )
    assert [t.destination.name for t in load_targets(targets)] == ["a", "ab", "b"]


@pytest.mark.parametrize(
    ("source", "destination", "named", "problem"),
    [
        ("acq", "acq", "acq", "it is the source itself"),
        ("acq", "acq/copy", "acq/copy", "it is inside the source"),
        ("acq/inner", "acq", "acq/inner", "it is inside the destination"),
        ("acq", "alias/copy", "alias/copy", "it is inside the source"),
        ("acq", "alias", "alias", "it is the source itself"),
    ],
)
def test_a_target_must_not_overlap_itself(
    tmp_path: Path, source: str, destination: str, named: str, problem: str
) -> None:
    (tmp_path / "acq").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "acq")
    with pytest.raises(ConfigError) as info:
        make_target(tmp_path / source, tmp_path / destination, {}, "command line")
    assert info.value.path == str(tmp_path / named)
    assert problem in info.value.problem
    assert info.value.exit_code == EXIT_USAGE


def test_a_target_inside_a_targets_file_must_not_overlap_itself(base: Path) -> None:
    targets = write(base / "t.yaml", "targets:\n  - {source: a, destination: a/copy}\n")
    with pytest.raises(ConfigError, match="inside the source") as info:
        load_targets(targets)
    assert info.value.path == str(base / "a" / "copy")
