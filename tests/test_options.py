"""The option table (softcopy.options): the command line, the targets file's checks,
TargetConfig and the copiers' settings all come from it, and agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from softcopy.cli import main
from softcopy.config import TargetConfig
from softcopy.copiers.pool import copier_options
from softcopy.copiers.protocol import CopierOptions
from softcopy.errors import ConfigError
from softcopy.options import (
    OPTIONS,
    Option,
    check_value,
    choice,
    cli_values,
    click_options,
    parse_options,
    target_class,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "targets.example.yaml"
ON_CLI = [o for o in OPTIONS if o.help]


def command_line(args: list[str], table: tuple[Option, ...] = OPTIONS) -> dict[str, Any]:
    """What `copy` would hand make_target: the generated options, parsed by click, given."""
    seen: dict[str, Any] = {}

    @click.command()
    @click_options(table)
    def command(**values: Any) -> None:
        seen.update(cli_values(values, table))

    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return seen


def targets_file(text: str, table: tuple[Option, ...] = OPTIONS) -> dict[str, Any]:
    return parse_options(yaml.safe_load(text), "t.yaml: defaults", table)


# One value of each kind, as typed after the flag and as written in a targets file.
SAMPLES: dict[str, tuple[list[str], str]] = {
    "whole": (["3"], "3"),
    "number": (["2.5"], "2.5"),
    "fraction": (["0.5"], "0.5"),
    "switch": ([], "true"),
    "flag": ([], "true"),
    "rate": (["1.5Gi"], "1.5Gi"),
    "globs": (["a*", "b/*"], "['a*', 'b/*']"),
    "directory": (["~/state"], "~/state"),
    "file name": (["done.txt"], "done.txt"),
    "text": (["http://127.0.0.1:9000"], "http://127.0.0.1:9000"),
    "size": (["8Mi"], "8Mi"),
    "texts": (["age:age1a", "gpg:ABCD"], "['age:age1a', 'gpg:ABCD']"),
    "file": (["~/key.txt"], "~/key.txt"),
    "count": (["4"], "4"),
    "level": (["19"], "19"),
}


def sample(option: Option) -> tuple[list[str], str]:
    """Command-line words for a value other than the default, and the same in YAML."""
    flag = option.declarations[0].split("/")[0]
    if option.kind.tag == "choice":
        return [flag, option.kind.choices[-1]], option.kind.choices[-1]
    words, text = SAMPLES[option.kind.tag]
    if option.kind.tag == "switch" and option.default:
        return [option.declarations[0].split("/")[1]], "false"
    if not words:
        return [flag], text
    return [w for word in words for w in (flag, word)], text


@pytest.mark.parametrize("option", ON_CLI, ids=[o.name for o in ON_CLI])
def test_every_flag_parses_to_its_targets_file_value(option: Option) -> None:
    args, text = sample(option)
    given = command_line(args)
    assert given.keys() == {option.name}
    assert parse_options(given, "command line") == targets_file(f"{option.name}: {text}")
    assert given[option.name] != option.default  # the sample says something


@pytest.mark.parametrize("option", [o for o in ON_CLI if o.kind.tag == "switch"])
def test_a_switch_turns_off_too(option: Option) -> None:
    long = option.name.replace("_", "-")
    assert command_line([f"--no-{long}"]) == targets_file(f"{option.name}: false")


def test_nothing_given_leaves_the_targets_file_alone() -> None:
    assert command_line([]) == {}


def test_copy_and_run_carry_every_command_line_row() -> None:
    for name in ("copy", "run"):
        params = {p.name: p for p in main.commands[name].params}
        for option in ON_CLI:
            param = params[option.dest or option.name]
            assert param.opts == [option.declarations[0].split("/")[0]]
            assert param.help == option.help


def test_target_config_is_the_table() -> None:
    fields = dataclasses.fields(TargetConfig)
    assert [f.name for f in fields] == ["source", "destination", *(o.name for o in OPTIONS)]
    plain = TargetConfig(Path("/s"), Path("/d"))
    assert {o.name: getattr(plain, o.name) for o in OPTIONS} == {o.name: o.default for o in OPTIONS}
    assert plain.name == "/s"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.nprocs = 3  # type: ignore[misc]


def test_defaults_pass_their_own_checks() -> None:
    for option in OPTIONS:
        assert option.kind.check(option.default) == option.default, option.name


def test_help_notes_state_the_defaults() -> None:
    """A `[default]` note in a help text is a second statement of the default: they agree."""
    for option in ON_CLI:
        default = option.default
        if isinstance(default, bool):
            note = "[yes" if default else "[no"
        elif option.kind.tag == "size":
            note = f"[{default >> 20}Mi]"
        elif isinstance(default, int | float):
            note = f"[{default:g}]"
        elif isinstance(default, str):
            note = f"[{default}]"
        else:
            continue  # None and (): "off", "no limit", a path, or all
        assert note in option.help, option.name


def test_one_row_adds_an_option() -> None:
    table = (*OPTIONS, Option("colour", choice("red", "blue", says="red or blue"), "red", "Hue."))
    assert command_line(["--colour", "blue"], table) == {"colour": "blue"}
    assert targets_file("colour: blue", table) == {"colour": "blue"}
    with pytest.raises(ConfigError, match=r"defaults\.colour: 'green' is not red or blue"):
        targets_file("colour: green", table)
    with pytest.raises(ConfigError, match="unknown option"):
        targets_file("colour: blue")  # the real table has no such row
    config = target_class(table)
    assert config(Path("/s"), Path("/d")).colour == "red"
    assert config(Path("/s"), Path("/d"), colour="blue").colour == "blue"


# ---- bad values: today's messages ------------------------------------------------------------

BAD_VALUES = [
    ("nprocs: 0", "defaults.nprocs: 0 is not a whole number >= 1"),
    ("batch_size: 2.5", "defaults.batch_size: 2.5 is not a whole number >= 1"),
    ("max_attempts: true", "defaults.max_attempts: True is not a whole number >= 1"),
    ("settle: -1", "defaults.settle: -1 is less than 0"),
    ("scan_interval: 0.05", "defaults.scan_interval: 0.05 is less than 0.1"),
    ("poll_interval: .nan", "defaults.poll_interval: nan is not a number"),
    ("sleep_time: fast", "defaults.sleep_time: 'fast' is not a number"),
    ("idle_timeout: -2", "defaults.idle_timeout: -2 is less than 0"),
    ("busy_utilisation: 1.5", "defaults.busy_utilisation: 1.5 is more than 1 (100 %)"),
    ("busy_utilisation: 0.01", "defaults.busy_utilisation: 0.01 is less than 0.05"),
    ("fsync: 1", "defaults.fsync: 1 is not true or false"),
    ("replace: yes please", "defaults.replace: 'yes please' is not true or false"),
    ("max_rate: fast", "defaults.max_rate: 'fast' is not a rate (e.g. 200M, 1.5G, 100Mi bytes/s)"),
    ("max_rate: 0", "defaults.max_rate: 0 is not a positive rate"),
    ("kind: tape", "defaults.kind: 'tape' is not 'zarr' or 'directory'"),
    ("watch: fanotify", "defaults.watch: 'fanotify' is not auto, inotify or poll"),
    ("include: ['']", "defaults.include: [''] is not a list of glob patterns"),
    ("sentinels: 7", "defaults.sentinels: 7 is not a list of glob patterns"),
    ("state_dir: 7", "defaults.state_dir: 7 is not a directory path"),
    ("complete_marker: a/b", "defaults.complete_marker: 'a/b' is not a plain file name"),
    ("speed: 3", "defaults.speed: unknown option 'speed' (known: backoff, batch_size, busy_"),
]


@pytest.mark.parametrize(("text", "message"), BAD_VALUES)
def test_a_bad_targets_file_value_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        targets_file(text)
    assert f"cannot read targets file t.yaml: {message}" in str(info.value)


BAD_FLAGS = [
    (["--nprocs", "0"], "Invalid value for '--nprocs': 0 is not in the range x>=1."),
    (["--settle", "x"], "Invalid value for '--settle': 'x' is not a valid float range."),
    (
        ["--scan-interval", "0"],
        "Invalid value for '--scan-interval': 0.0 is not in the range x>=0.1.",
    ),
    (
        ["--busy-utilisation", "2"],
        "Invalid value for '--busy-utilisation': 2.0 is not in the range 0.05<=x<=1.0.",
    ),
    (["--kind", "tape"], "Invalid value for '--kind': 'tape' is not one of 'zarr', 'directory'."),
    (["--max-rate", "fast"], "cannot read option --max-rate: 'fast' is not a rate"),  # as copy
]


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS)
def test_a_bad_flag_is_a_usage_error(tmp_path: Path, args: list[str], message: str) -> None:
    # `run` parses --max-rate itself (one budget for the run) before it reads the file.
    result = CliRunner().invoke(main, ["run", str(tmp_path / "missing.yaml"), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_a_bad_max_rate_for_copy_names_the_command_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["copy", str(tmp_path / "a"), str(tmp_path / "b"), "--max-rate", "fast"]
    )
    assert result.exit_code == 2
    assert "cannot read option --max-rate: 'fast' is not a rate" in result.output
    assert list(tmp_path.iterdir()) == []


def test_one_parser_for_a_rate() -> None:
    assert check_value("max_rate", "200M") == 200e6
    assert targets_file("max_rate: 200M") == {"max_rate": 200e6}
    assert parse_options({"max_rate": "200M"}, "command line") == {"max_rate": 200e6}


# ---- targets.example.yaml, and the copiers ---------------------------------------------------


def test_the_example_targets_file_shows_every_option_at_its_default() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    assert set(doc["defaults"]) == {o.name for o in OPTIONS}
    parsed = parse_options(doc["defaults"], "targets.example.yaml: defaults")
    assert parsed == {o.name: o.default for o in OPTIONS}
    for i, target in enumerate(doc["targets"]):
        options = {k: v for k, v in target.items() if k not in ("source", "destination")}
        parse_options(options, f"targets[{i}]")


def test_copiers_get_their_settings_from_the_target() -> None:
    plain = TargetConfig(Path("/s"), Path("/d"))
    assert copier_options(plain) == CopierOptions("/s", "/d", 0.0, False, False)
    cfg = dataclasses.replace(plain, sleep_time=0.5, fsync=True, hash=True)
    options = copier_options(cfg, (("/run/bucket", 1e6),))
    assert (options.sleep_time, options.fsync, options.digest) == (0.5, True, True)
    assert options.rate_limits == (("/run/bucket", 1e6),)
    # No second set of defaults to drift from the table's.
    required = {
        f.name for f in dataclasses.fields(CopierOptions) if f.default is dataclasses.MISSING
    }
    assert {"sleep_time", "fsync", "digest"} <= required
