"""The original softcopy's two forms (royerlab/softcopy 0.0.x), kept working unchanged.

    softcopy TARGETS_FILE [--nprocs N] [--sleep-time S] [--wait-for-source BOOL] [--verbose]
    softcopy SOURCE DEST  [--nprocs N] [--sleep-time S] [--wait-for-source BOOL] [--verbose]

are `softcopy run TARGETS_FILE ...` and `softcopy copy SOURCE DEST ...`: the same flags,
meaning what they meant there (--sleep-time: seconds each copier sleeps after each file;
--wait-for-source takes a value). Only the arguments are rewritten, before click parses
them; the commands themselves know nothing of the old forms.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import click

from ..names import safe_text
from .common import Refused

# The options the original took a value for; the modern ones that do are added by the
# caller (the group's own: --log-file, --log-level).
_VALUED = frozenset({"--nprocs", "--sleep-time", "--wait-for-source"})
_WAIT = "--wait-for-source"
_ARITY = {"copy": 2, "run": 1}  # the paths each command takes


def translate(
    args: list[str], commands: Collection[str], valued: Collection[str] = ()
) -> list[str] | None:
    """`args` (everything after the program name) in the modern form, or None when they
    are not one of the original's forms (a command, a typo, --help)."""
    valued = _VALUED | set(valued)
    positionals = _positionals(args, valued)
    if not positionals or args[positionals[0]] in commands:
        return None
    if any(a in ("--help", "--version") for a in args[: positionals[0]]):
        return None  # the group's own help or version, asked for first
    first = args[positionals[0]]
    rest = _modern_flags(args)
    if os.path.isfile(first):
        command = "run"
    elif os.path.isdir(first) or (len(positionals) >= 2 and _waits(args)):
        command = "copy"
    else:
        return None
    _check_wait_value(args, positionals, _ARITY[command])
    return [command, *rest]


def wait_values(args: list[str], valued: Collection[str] = ()) -> list[str]:
    """`softcopy copy|run ... --wait-for-source true|false`, as the original's users type
    it in the modern forms too: the value becomes the switch."""
    positionals = _positionals(args, _VALUED | set(valued))
    if not positionals or args[positionals[0]] not in ("copy", "run"):
        return args
    _check_wait_value(args, positionals[1:], _ARITY[args[positionals[0]]])
    at = positionals[0] + 1
    return [*args[:at], *_modern_flags(args[at:])]


# Where the group leaves the hint for the command: said only once its line parsed, so a
# line that is wrong anyway gets its error alone.
HINT = "softcopy.legacy_hint"


def say_hint(ctx: click.Context) -> None:
    text = ctx.meta.pop(HINT, None)
    if text:
        click.echo(text, err=True)


def hint(modern: list[str]) -> str:
    """The one line printed first: what to type from now on."""
    import shlex

    command = safe_text(shlex.join(["softcopy", *modern]))
    return f"softcopy: this is the original softcopy's form; the modern command is: {command}"


def looks_like_path(token: str) -> bool:
    """A first argument meant as a file or folder, not as a command name."""
    return os.sep in token or token.lower().endswith((".yaml", ".yml", ".zarr"))


def check_relative_paths(targets_file: str) -> None:
    """The original read a targets file's relative paths from the current directory; this
    softcopy reads them from the file's folder. Where the two differ, a copy could go
    somewhere the user did not mean: refused, naming the path, before anything starts."""
    import yaml

    try:
        with open(targets_file, "rb") as f:
            doc = yaml.safe_load(f.read(1 << 20))
        entries = list(doc["targets"])
    except Exception:
        return  # `run` reads the file again and says what is wrong with it
    here = Path.cwd().resolve()
    there = Path(targets_file).resolve().parent
    if here == there:
        return
    for i, entry in enumerate(entries):
        for key in ("source", "destination"):
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
                raise Refused(
                    f"cannot read targets file {targets_file}: targets[{i}].{key} {value!r} is "
                    f"relative; the original softcopy read it from the current directory "
                    f"({here}), this softcopy reads it from the file's folder ({there}); "
                    "write it as an absolute path, or run softcopy in the file's folder"
                )


def _positionals(args: list[str], valued: Collection[str]) -> list[int]:
    """Indices of the arguments that are not options or option values."""
    found: list[int] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == "--":
            found.extend(range(i + 1, len(args)))
            break
        elif arg.startswith("-") and arg != "-":
            skip = arg in valued and not (arg == _WAIT and not _is_bool(_at(args, i + 1)))
        else:
            found.append(i)
    return found


def _check_wait_value(args: list[str], positionals: list[int], arity: int) -> None:
    """`--wait-for-source maybe`: one path too many, right after the option and not a path
    that exists or looks like one, is the original's value mistyped; said as a bad
    `--wait-for-source=maybe` is."""
    if len(positionals) <= arity:
        return
    for i in positionals:
        if i > 0 and args[i - 1] == _WAIT and not _path_like(args[i]):
            raise click.BadParameter(
                f"{args[i]!r} is not true or false", param_hint="'--wait-for-source'"
            )


def _path_like(token: str) -> bool:
    """A token meant as one of the paths (the switch before them), not as a value."""
    return os.sep in token or os.path.lexists(token)


def _at(args: list[str], i: int) -> str | None:
    return args[i] if i < len(args) else None


def _is_bool(text: str | None) -> bool:
    if text is None:
        return False
    try:
        click.BOOL.convert(text, None, None)
    except click.BadParameter:
        return False
    return True


def _waits(args: list[str]) -> bool:
    """--wait-for-source with a true value (or alone, the modern switch)."""
    return any(a == "--wait-for-source" for a in _modern_flags(args))


def _modern_flags(args: list[str]) -> list[str]:
    """`--wait-for-source true|false` (and `=true`) as the modern switch; all else as is."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        value = None
        if arg.startswith(_WAIT + "="):
            value = arg.split("=", 1)[1]
            if not _is_bool(value):
                raise click.BadParameter(
                    f"{value!r} is not true or false", param_hint="'--wait-for-source'"
                )
        elif arg == _WAIT and _is_bool(_at(args, i + 1)):
            value = args[i + 1]
            i += 1
        if value is None:
            out.append(arg)
        else:
            waits = click.BOOL.convert(value, None, None)
            out.append(_WAIT if waits else "--no-wait-for-source")
        i += 1
    return out
