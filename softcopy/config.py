"""Targets: paths checked, options parsed once (options.py) into frozen dataclasses."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .inputs import read_input
from .options import OPTIONS, parse_options, target_class
from .presets import apply_preset
from .state.records import records_dir

# One field per row of options.OPTIONS, with its default: the table is the only place an
# option is declared.
TargetConfig = target_class(OPTIONS, __name__)


def make_target(source: Any, destination: Any, options: dict[str, Any], where: str) -> TargetConfig:
    for field_name, value in (("source", source), ("destination", destination)):
        if not isinstance(value, str | os.PathLike) or not str(value):
            raise ConfigError(f"{where}.{field_name}", "read target", "a path is required")
    src = Path(os.path.abspath(os.path.expanduser(source)))
    dst = Path(os.path.abspath(os.path.expanduser(destination)))
    check_paths(src, dst)  # errors name the paths as the user wrote them
    # Links in the paths the user gave are resolved once, here: everything below is
    # then opened without following a link, and one directory has one name.
    return TargetConfig(
        Path(os.path.realpath(src)),
        Path(os.path.realpath(dst)),
        **parse_options(apply_preset(options, where), where),
    )


Identity = tuple  # (st_dev, st_ino) of a directory, or (that, the names below it not made yet)


def _identities(path: Path) -> list[Identity]:
    """The path and each of its ancestors, innermost first, as directory identities.

    Two names of one directory (a link, a bind mount) have the same identity. Where
    the path does not exist yet, its nearest existing ancestor's identity and the
    names still to be made stand in for it.
    """
    real = Path(os.path.realpath(path))
    missing: list[str] = []
    here = real
    while True:
        try:
            st = os.stat(here)
            break
        except OSError:
            if here.parent == here:
                return [("unknown", str(real))]
            missing.insert(0, here.name)
            here = here.parent
    anchor = (st.st_dev, st.st_ino)
    found: list[Identity] = [(anchor, tuple(missing[:n])) for n in range(len(missing), 0, -1)]
    while True:
        found.append((st.st_dev, st.st_ino))
        if here.parent == here:
            return found
        here = here.parent
        st = os.stat(here)


def _within(inner: Path, outer: Path) -> bool:
    """inner is outer, or somewhere below it, by directory identity."""
    return _identities(outer)[0] in _identities(inner)


def check_paths(src: Path, dst: Path) -> None:
    """Refuse overlapping trees: a copy inside its own source would copy itself forever.

    By identity, not by name: a bind mount or a link is a second name for the same
    directory. softcopy's records folder (beside the destination) counts as written too.
    """
    records = records_dir(dst)
    if _within(dst, src) and _within(src, dst):
        raise ConfigError(dst, "use destination", "it is the source itself")
    if _within(dst, src):
        raise ConfigError(dst, "use destination", f"it is inside the source {src}")
    if _within(src, dst):
        raise ConfigError(src, "use source", f"it is inside the destination {dst}")
    if _within(src, records):
        raise ConfigError(
            src, "use source", f"it is softcopy's records folder {records} of the destination "
            f"{dst}, or inside it",
        )  # fmt: skip
    if _within(records, src):
        raise ConfigError(
            dst, "use destination", f"its records folder {records} would be inside the source "
            f"{src}",
        )  # fmt: skip


# A targets file is a few KiB; anything this large is a mistake, not a file to parse.
MAX_TARGETS_FILE = 4 << 20


def read_targets_file(path: Path) -> dict[str, Any]:
    """A targets file's document: `targets:` and/or `watch:` lists, optional `defaults:`."""
    data = read_input(path, "read targets file", MAX_TARGETS_FILE, "targets file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path,
            "read targets file",
            f"it is not UTF-8 text (byte {exc.start} is {data[exc.start : exc.start + 1]!r}); "
            "save it as UTF-8",
        ) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, "parse targets file", f"not valid YAML: {exc}") from exc
    lists = [k for k in ("targets", "watch") if isinstance(doc, dict) and k in doc]
    if (
        not isinstance(doc, dict)
        or not lists
        or not all(isinstance(doc[k], list) for k in lists)
        or not any(doc[k] for k in lists)
    ):
        raise ConfigError(
            path,
            "read targets file",
            "expected a mapping with a non-empty 'targets' list (or a 'watch' list of roots)",
        )
    unknown = set(doc) - {"targets", "watch", "defaults"}
    if unknown:
        raise ConfigError(path, "read targets file", f"unknown top-level keys: {sorted(unknown)}")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: defaults", "read targets file", "expected a mapping")
    return doc


def file_path(path: Path, value: Any) -> Any:
    """A path in a targets file: relative to the file, not to the shell; `~` is expanded
    first, so `~/data` is not read as `<file's dir>/~/data`."""
    if isinstance(value, str) and value:
        return Path(path).resolve().parent / os.path.expanduser(value)
    return value


def load_targets(path: Path, overrides: dict[str, Any] | None = None) -> list[TargetConfig]:
    """Read a targets file's `targets: [{source, destination, ...}]`, with its `defaults:`."""
    doc = read_targets_file(path)
    base = parse_options(doc.get("defaults") or {}, f"{path}: defaults")
    targets: list[TargetConfig] = []
    for i, entry in enumerate(doc.get("targets") or []):
        where = f"{path}: targets[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(
                where, "read target", "expected a mapping with source and destination"
            )
        entry = dict(entry)
        source = file_path(path, entry.pop("source", None))
        destination = file_path(path, entry.pop("destination", None))
        options = {**base, **parse_options(entry, where), **(overrides or {})}
        targets.append(make_target(source, destination, options, where))
    _check_distinct(path, targets)
    return targets


def _check_distinct(path: Path, targets: list[TargetConfig]) -> None:
    """No target writes where another writes, or where another reads."""
    for i, a in enumerate(targets):
        for j, b in enumerate(targets[:i]):
            here = f"{path}: targets[{i}].destination"
            if _identities(a.destination)[0] == _identities(b.destination)[0]:
                raise ConfigError(
                    here, "read target", f"it overlaps targets[{j}].destination: targets[{j}] "
                    f"writes to the same destination {a.destination}",
                )  # fmt: skip
            try:
                check_paths(a.destination, b.destination)
            except ConfigError as exc:
                raise ConfigError(
                    here, "read target", f"overlaps targets[{j}].destination: {exc.problem}"
                ) from exc
            for writer, w, reader, r in ((a, i, b, j), (b, j, a, i)):
                for written in (writer.destination, records_dir(writer.destination)):
                    if _within(written, reader.source) or _within(reader.source, written):
                        raise ConfigError(
                            f"{path}: targets[{w}].destination", "read target",
                            f"{written} overlaps the source of targets[{r}], {reader.source}: "
                            "one target would copy what another writes",
                        )  # fmt: skip


def with_options(target: TargetConfig, **options: Any) -> TargetConfig:
    return replace(target, **parse_options(options, "option"))
