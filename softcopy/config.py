"""Targets: paths checked, options parsed once (options.py) into frozen dataclasses."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, SoftcopyError
from .inputs import read_input
from .locations import RECORDS_SUFFIX, is_object_store, object_url
from .names import safe_text
from .options import (
    COMMAND_LINE,
    OPTIONS,
    Option,
    option_action,
    option_place,
    parse_options,
    target_class,
)
from .presets import apply_preset
from .sources.scan import TEMP_PREFIX
from .state.records import records_dir
from .units import counted

if TYPE_CHECKING:  # yaml is imported only to read a targets file
    import yaml

# One field per row of options.OPTIONS, with its default: the table is the only place an
# option is declared.
TargetConfig = target_class(OPTIONS, __name__)


def make_target(source: Any, destination: Any, options: dict[str, Any], where: str) -> TargetConfig:
    for field_name, value in (("source", source), ("destination", destination)):
        if not isinstance(value, str | os.PathLike) or not str(value):
            raise ConfigError(_field_place(where, field_name), "read target", "a path is required")
        check_local(str(value), field_name)
    src = Path(os.path.abspath(os.path.expanduser(source)))
    preset_where = "on the command line" if where == COMMAND_LINE else where
    if is_object_store(destination):
        # A bucket cannot overlap a folder; whether the prefix holds something else is
        # asked of the store when the run starts (sinks/s3.py `foreign`).
        return _packing_checked(
            TargetConfig(
                Path(os.path.realpath(src)),
                object_url(destination),
                **parse_options(apply_preset(options, preset_where), where),
            ),
            where,
        )
    dst = Path(os.path.abspath(os.path.expanduser(destination)))
    check_paths(src, dst)  # errors name the paths as the user wrote them
    problem = unrelated_destination(src, dst)
    if problem is not None:
        raise ConfigError(dst, "copy to destination", problem)
    # Links in the paths the user gave are resolved once, here: everything below is
    # then opened without following a link, and one directory has one name.
    cfg = _packing_checked(
        TargetConfig(
            Path(os.path.realpath(src)),
            Path(os.path.realpath(dst)),
            **parse_options(apply_preset(options, preset_where), where),
        ),
        where,
    )
    if not cfg.replace and not (cfg.pack or cfg.compress):
        problem = not_this_copy(src, dst)
        if problem is not None:
            raise ConfigError(dst, "copy to destination", problem)
    return cfg


# Options that only mean something for a packed copy (engine/pack.py).
_PACK_ONLY = ("encrypt", "identity", "level", "threads")


def _packing_checked(cfg: TargetConfig, where: str) -> TargetConfig:
    """A packing option without --pack, or --pack with what an archive cannot do: refused."""
    rows = {o.name: o for o in OPTIONS}
    if cfg.compress_include and not cfg.compress:
        place = option_place(where, "compress_include", rows)
        raise ConfigError(place, option_action(where), "it applies to --compress: add --compress")
    if cfg.compress and cfg.pack:
        place = option_place(where, "compress", rows)
        raise ConfigError(
            place, option_action(where), "an archive is compressed whole: --pack tar.gz or tar.zst "
            "instead of --compress",
        )  # fmt: skip
    if not cfg.pack:
        for name in _PACK_ONLY:
            if getattr(cfg, name) in (None, (), 0):
                continue
            if cfg.compress and name in ("level", "threads"):
                continue
            place = option_place(where, name, rows)
            raise ConfigError(
                place, option_action(where), "it applies to packed copies: add --pack"
            )
    return cfg


def _field_place(where: str, field_name: str) -> str:
    return field_name.upper() if where == COMMAND_LINE else f"{where}.{field_name}"


# ---- remote-looking paths ------------------------------------------------------------------

# URL schemes people copy to; s3:// is a destination (sinks/s3.py), never a source. A path
# object has folded "s3://b" into "s3:/b", so the scheme is told by name.
UNSUPPORTED_SCHEMES = frozenset(
    {"s3", "gs", "gcs", "az", "azure", "abfs", "http", "https", "ftp", "ftps", "sftp", "ssh",
     "scp", "rsync", "smb", "cifs", "nfs", "hdfs", "webdav", "dav", "file", "b2", "swift"}
)  # fmt: skip


def remote_problem(text: str, field_name: str = "destination") -> str | None:
    """What is wrong with a path that looks remote, as rsync and rclone read it: a colon
    before the first slash (host:/path, user@host:path, remote:path, s3://bucket)."""
    head, colon, rest = text.partition(":")
    if not colon or (not head and not rest) or "/" in head:
        return None
    scheme = head.lower()
    if scheme == "s3" and rest.startswith("//"):
        if field_name == "destination":
            return None
        return (
            f"it is an object store ({text}): softcopy copies from a local or mounted folder "
            "to object storage, not back; to restore a copy, use the store's own tools"
        )
    if scheme == "file" and rest.startswith("///"):
        kind = f"a file URL: give the path itself, {rest[2:]}"
    elif scheme in UNSUPPORTED_SCHEMES and rest.startswith("/"):
        kind = (
            f"a URL: {scheme}:// {field_name}s are not supported yet; give a local or "
            "mounted folder"
        )
    else:
        kind = (
            "a remote location (HOST:PATH, as rsync and scp write it, or an rclone remote): "
            "softcopy copies between local or mounted folders only; mount it and give its "
            "local path"
        )
    return (
        f"it looks like {kind}. For a local folder whose name has a colon, put a slash "
        f"before the colon: ./{text}, or an absolute path"
    )


def check_local(text: str, field_name: str) -> None:
    """Refuse a path that looks remote; the error names it as typed."""
    problem = remote_problem(text, field_name)
    if problem is not None:
        action = "copy to destination" if field_name == "destination" else "copy source"
        raise ConfigError(text, action, problem)


# ---- a destination that is not a copy of the source -----------------------------------------

# Names no copy is judged by: what mkfs puts at a fresh filesystem's root.
_NOT_EVIDENCE = frozenset({"lost+found"})


def _names(path: Path) -> set[str] | None:
    try:
        with os.scandir(path) as entries:
            return {e.name for e in entries}
    except OSError:
        return None  # missing, not a directory, unreadable: the checks that follow say so


def unrelated_destination(src: Path, dst: Path) -> str | None:
    """The problem with a destination that cannot be a copy of src, or None.

    `softcopy copy SRC DEST/` out of `cp -r` habit names the folder to copy *into*: it
    exists, holds other things, and softcopy never made it (no target.json beside it).
    Unrelated means none of its top-level names is in the source: a partial copy of this
    source (by cp, rsync, an older softcopy) shares names with it, and is resumed.
    """
    there = _names(dst)
    if not there or not there - _NOT_EVIDENCE:
        return None
    records = records_dir(dst)
    if os.path.islink(records) or os.path.lexists(records / "target.json"):
        return None  # softcopy's (or a planted link): claim and the records decide
    here = _names(src)
    if here is None or there & here:
        return None
    shown = ", ".join(sorted(there - _NOT_EVIDENCE)[:3])
    more = len(there - _NOT_EVIDENCE) - 3
    if more > 0:
        shown += f" and {more} more"
    return (
        f"it is an existing folder holding other things ({shown}), none of them in the "
        f"source {src}, and softcopy did not make it (no {records.name}/target.json beside "
        "it); DESTINATION is the copy itself, not the folder to copy into (as with "
        f"`cp -r SRC DEST/`): to copy into it, give {dst / src.name}"
    )


# Examples named in the refusal of a folder that is not this source's copy.
_SHOWN = 3
# Files of the source's name and size whose bytes not_this_copy compares, and how much of
# each (the head, and the tail of a larger one).
_SAMPLED = 8
_SAMPLE_BYTES = 1 << 20


def not_this_copy(src: Path, dst: Path) -> str | None:
    """The problem with a folder softcopy meets for the first time (no records beside
    it) that holds files that cannot be this source's copy, or None.

    A partial copy by cp or rsync holds some of the source's files, each of its size (or
    being written). A file the source lacks would fail the copy's verification, and one
    of another size would be overwritten: someone else's data, in a folder softcopy did
    not make (another acquisition's copy, with the same chunk names). Refused before
    anything is written; looked at once, the first time, while the records do not exist.
    """
    records = records_dir(dst)
    if not (os.path.isdir(dst) and os.path.isdir(src)) or os.path.lexists(records):
        return None  # a source not there yet (--wait-for-source): claim() judges it then
    extra: list[str] = []
    other: list[str] = []
    sampled = 0
    for key, st in _files_below(dst):
        try:
            there = os.lstat(src / key)
        except OSError:
            there = None
        if there is None:
            extra.append(safe_text(key))
        elif stat.S_IFMT(there.st_mode) != stat.S_IFMT(st.st_mode):
            other.append(f"{safe_text(key)} (a {_kind(st)} where the source has a {_kind(there)})")
        elif stat.S_ISREG(st.st_mode) and there.st_size != st.st_size:
            other.append(
                f"{safe_text(key)} ({counted(st.st_size, 'byte')}; the source's: "
                f"{counted(there.st_size, 'byte')})"
            )
        elif sampled < _SAMPLED:
            # Uncompressed chunks of another acquisition have this one's names and sizes:
            # a few files' bytes tell its copy from someone else's data.
            sampled += 1
            if not _same_bytes(src / key, dst / key, st):
                other.append(f"{safe_text(key)} (of the source's size, other bytes)")
        if len(extra) >= _SHOWN or len(other) >= _SHOWN:
            break
    if not extra and not other:
        return None
    said = []
    if extra:
        said.append(f"{', '.join(extra)} (not in the source: the copy's verification would fail)")
    if other:
        said.append(f"{', '.join(other)} (they would be overwritten)")
    return (
        f"it is an existing folder softcopy did not make (no {records.name} beside it), "
        f"holding files that are not this source's: {'; '.join(said)}. DESTINATION is the "
        f"copy itself: to copy into the folder, give {dst / src.name}; to make it a copy of "
        f"{src} anyway (files the source lacks deleted, the others overwritten), add --replace"
    )


def _same_bytes(a: Path, b: Path, st: os.stat_result) -> bool:
    """Whether two files (or links) of one kind and size hold the same bytes: the whole of
    a small file, the head and the tail of a large one. Unreadable counts as the same (the
    copy's own checks say so)."""
    try:
        if stat.S_ISLNK(st.st_mode):
            return os.readlink(a) == os.readlink(b)
        if not stat.S_ISREG(st.st_mode):
            return True
    except OSError:
        return True
    fds: list[int] = []
    try:
        for path in (a, b):
            fds.append(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC))
        ends = {0, max(0, st.st_size - _SAMPLE_BYTES)}
        return all(
            os.pread(fds[0], _SAMPLE_BYTES, at) == os.pread(fds[1], _SAMPLE_BYTES, at)
            for at in ends
        )
    except OSError:
        return True
    finally:
        for fd in fds:
            os.close(fd)


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "link"
    return (
        "directory"
        if stat.S_ISDIR(st.st_mode)
        else "file"
        if stat.S_ISREG(st.st_mode)
        else "special file"
    )


def _files_below(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of every file and link below root, links not followed;
    softcopy's temporaries and a filesystem's lost+found left out."""
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(root / rel if rel else root) as entries:
                found = list(entries)
        except OSError:
            continue  # unreadable: the copy's own checks say so
        for entry in sorted(found, key=lambda e: e.name):
            key = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name.startswith(TEMP_PREFIX) or (not rel and entry.name in _NOT_EVIDENCE):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(key)
            else:
                yield key, entry.stat(follow_symlinks=False)


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

_TOP_LEVEL = ("targets", "watch", "defaults")
_SHAPE = "expected a mapping with a non-empty 'targets' list (or a 'watch' list of roots)"

Lines = dict[tuple, int]  # a key's or an item's path in the document -> its line (1-based)


class ConfigErrors(ConfigError):
    """Every error of one input at once: the command prints `errors` one paragraph each;
    as text (a --json error event), they are blank-line separated."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.path, first.action, first.problem)
        self.errors = errors

    def __str__(self) -> str:
        return "\n\n".join(SoftcopyError.__str__(e) for e in self.errors)


def raise_all(errors: list[ConfigError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


def _line_map(root: yaml.Node | None) -> Lines:
    """Where each mapping key and list item starts, by its path (yaml's node marks)."""
    import yaml

    lines: Lines = {}
    seen: set[int] = set()  # an alias is the node it names: each node once (no bombs)
    stack: list[tuple[yaml.Node, tuple]] = [(root, ())] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    lines.setdefault((*path, key.value), key.start_mark.line + 1)
                    stack.append((value, (*path, key.value)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault((*path, i), item.start_mark.line + 1)
                stack.append((item, (*path, i)))
    return lines


def _parse_yaml(path: Path, text: str) -> tuple[Any, Lines]:
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        doc = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(*_yaml_problem(path, exc)) from None
    finally:
        loader.dispose()
    return doc, _line_map(root)


def _yaml_problem(path: Path, exc: Exception) -> tuple[str, str, str]:
    """(place, action, problem) of a YAML syntax error: the file's line and column, and
    what the parser found, on one line (its own text spans several, and names no file)."""
    mark = getattr(exc, "problem_mark", None)
    place = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = getattr(exc, "context_mark", None)
    if context and where is not None and mark is not None and where.line != mark.line:
        context += f" that began on line {where.line + 1}"  # an unclosed bracket or quote
    hint = " (YAML indents with spaces, never tabs)" if "'\\t'" in problem else ""
    text = f"not valid YAML: {problem}" + (f", {context}" if context else "") + hint
    return place, "parse targets file", text


def _at(path: Path, lines: Lines, *keys: Any) -> str:
    """`file:line` of the innermost of keys the file places (the file alone if none)."""
    for n in range(len(keys), 0, -1):
        line = lines.get(tuple(keys[:n]))
        if line is not None:
            return f"{path}:{line}"
    return str(path)


def read_targets_document(path: Path) -> tuple[dict[str, Any], Lines]:
    """A targets file's document and the line of each of its keys; its shape checked, every
    problem of the shape reported at once."""
    doc, lines, errors = _read_document(path)
    raise_all(errors)
    return doc, lines


def _option_named(key: str) -> str | None:
    """What to say of a top-level key that is an option's name, or close to one."""
    from .options import OPTIONS, unknown_key

    names = {o.name for o in OPTIONS}
    where = "under 'defaults:' (for every target) or in a target"
    if key in names:
        return f"'{key}' is an option, which goes {where}"
    close = unknown_key(key, names).partition("; did you mean ")[2].removesuffix("?")
    return f"did you mean the option {close}? Options go {where}" if close else None


def _read_document(path: Path) -> tuple[dict[str, Any], Lines, list[ConfigError]]:
    """The document, its lines, and what is wrong with its shape that does not stop the
    rest from being read (an unknown key, bad defaults); what does stop it raises."""
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
    doc, lines = _parse_yaml(path, text)
    if not isinstance(doc, dict):
        raise ConfigError(
            path,
            "read targets file",
            "expected a mapping with a non-empty 'targets' list (or a 'watch' list of roots)",
        )
    errors: list[ConfigError] = []
    unknown: list[ConfigError] = []
    for key in doc:
        if key not in _TOP_LEVEL:
            import difflib

            close = difflib.get_close_matches(str(key), _TOP_LEVEL, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            option = _option_named(str(key))
            if not close and option:  # `nprocs: 4` at the top, meant for every target
                hint = f"; {option}"
            unknown.append(ConfigError(
                f"{_at(path, lines, str(key))}: {key}", "read targets file",
                f"unknown top-level key{hint} (known: {', '.join(_TOP_LEVEL)})",
            ))  # fmt: skip
    lists = [k for k in ("targets", "watch") if k in doc]
    for key in lists:
        if not isinstance(doc[key], list):
            errors.append(ConfigError(
                f"{_at(path, lines, key)}: {key}", "read targets file",
                f"it is not a list: {_SHAPE}",
            ))  # fmt: skip
    if not errors and not any(doc[k] for k in lists) and not unknown:
        errors.append(ConfigError(path, "read targets file", _SHAPE))
    if errors:  # without the lists' shape, nothing below can be read
        raise_all(unknown + errors)
    if not isinstance(doc.get("defaults") or {}, dict):
        errors.append(ConfigError(
            f"{_at(path, lines, 'defaults')}: defaults", "read targets file", "expected a mapping"
        ))  # fmt: skip
        doc = {**doc, "defaults": {}}
    return doc, lines, unknown + errors


def read_targets_file(path: Path) -> dict[str, Any]:
    """A targets file's document: `targets:` and/or `watch:` lists, optional `defaults:`."""
    return read_targets_document(path)[0]


def file_path(path: Path, value: Any) -> Any:
    """A path in a targets file: relative to the file, not to the shell; `~` is expanded
    first, so `~/data` is not read as `<file's dir>/~/data`. An object store's URL stays
    as written."""
    if isinstance(value, str) and value and not is_object_store(value):
        return Path(path).resolve().parent / os.path.expanduser(value)
    return value


def read_entries_file(path: Path) -> tuple[dict[str, Any], Lines, dict[str, Any], list]:
    """A targets file's document, its lines, its parsed `defaults:` and every error found so
    far (shape, defaults): what `load_targets` and a `watch:` loader start from."""
    doc, lines, errors = _read_document(path)
    base = parse_options(
        doc.get("defaults") or {},
        f"{path}: defaults",
        place=_key_place(path, lines, ("defaults",), "defaults"),
        errors=errors,
    )
    return doc, lines, base, errors


def load_entries(
    path: Path,
    doc: dict[str, Any],
    lines: Lines,
    key: str,
    required: tuple[str, str],
    table: Sequence[Option],
    build: Callable[[list[Any], dict[str, Any], str], Any],
    errors: list[ConfigError],
) -> list[Any]:
    """The entries of the list `key` (`targets`, `watch`): each one's `required` paths and
    options (of `table`) checked, every problem appended to `errors` with its line;
    `build(paths, options, where)` makes each entry that has none."""
    action = f"read {key.rstrip('s')}"
    made: list[Any] = []
    for i, entry in enumerate(doc.get(key) or []):
        where = f"{_at(path, lines, key, i)}: {key}[{i}]"
        if not isinstance(entry, dict):
            errors.append(ConfigError(
                where, action, f"expected a mapping with {required[0]} and {required[1]}"
            ))  # fmt: skip
            continue
        entry = dict(entry)
        raw = {k: entry.pop(k, None) for k in required}
        count = len(errors)
        for k, value in raw.items():
            field_name = k.partition("_")[0]  # destination_root is a destination too
            problem = remote_problem(value, field_name) if isinstance(value, str) else None
            if problem:
                remote = "copy to destination" if field_name == "destination" else "copy source"
                here = f"{_at(path, lines, key, i, k)}: {key}[{i}].{k} {value}"
                errors.append(ConfigError(here, remote, problem))
        own = parse_options(
            entry,
            where,
            table,
            place=_key_place(path, lines, (key, i), f"{key}[{i}]"),
            also=raw,
            errors=errors,
        )
        if len(errors) > count:
            continue
        try:
            made.append(build([file_path(path, raw[k]) for k in required], own, where))
        except ConfigError as exc:
            errors.append(exc if where in exc.path else _placed(exc, where))
    return made


def raise_in_order(path: Path, errors: list[ConfigError]) -> None:
    """Every error of a file at once, in the file's order."""
    raise_all(sorted(errors, key=lambda e: _line_of(path, e)))


def load_targets(
    path: Path, overrides: dict[str, Any] | None = None, check_sources: bool = False
) -> list[TargetConfig]:
    """Read a targets file's `targets: [{source, destination, ...}]`, with its `defaults:`.

    Every error in it is reported at once, each with its line, before anything starts;
    with `check_sources` (a run about to start), a source that is not there and is not
    waited for is one of them.
    """
    doc, lines, base, errors = read_entries_file(path)

    built: dict[str, TargetConfig] = {}

    def build(paths: list[Any], own: dict[str, Any], where: str) -> TargetConfig:
        built[where] = make_target(*paths, {**base, **own, **(overrides or {})}, where)
        return built[where]

    targets = load_entries(
        path, doc, lines, "targets", ("source", "destination"), OPTIONS, build, errors
    )
    wanted = {**base, **(overrides or {})}
    missing = _missing_sources(path, doc, lines, built, wanted) if check_sources else []
    if errors:
        raise_in_order(path, errors + missing)
    # Before a missing source: one that is another target's copy or records says so.
    _check_distinct(path, targets)
    raise_in_order(path, missing)
    return targets


def _missing_sources(
    path: Path,
    doc: dict[str, Any],
    lines: Lines,
    built: dict[str, TargetConfig],
    options: dict[str, Any],
) -> list[ConfigError]:
    """A source that is not there (and is not waited for), named by its line in the file
    as every other error of the file is; the engine would say the same without the line.
    A target with another error is looked at too (its options as written): all at once."""
    errors = []
    for i, entry in enumerate(doc.get("targets") or []):
        if not isinstance(entry, dict):
            continue
        written = entry.get("source")
        cfg = built.get(f"{_at(path, lines, 'targets', i)}: targets[{i}]")
        if cfg is not None:
            waits, source = cfg.wait_for_source, cfg.source
        elif isinstance(written, str) and written:
            # Not built (another error of this target): as make_target would resolve it.
            waits = {**options, **entry}.get("wait_for_source") not in (None, False)
            source = Path(os.path.abspath(file_path(path, written)))
        else:
            continue
        if waits:
            continue
        shown = written if str(source) == written else f"{written} ({source})"
        if not os.path.lexists(source):
            problem = "it does not exist"
        elif not os.path.isdir(source):
            problem = "it is not a directory"
        else:
            continue
        place = f"{_at(path, lines, 'targets', i, 'source')}: targets[{i}].source {shown}"
        errors.append(ConfigError(place, "read targets file", problem))
    return errors


def _line_of(path: Path, error: ConfigError) -> float:
    """The line an error names (`file:7: ...`), for reading them in the file's order."""
    head = f"{path}:"
    number = error.path[len(head) :].partition(":")[0] if error.path.startswith(head) else ""
    return int(number) if number.isdigit() else math.inf


def _key_place(path: Path, lines: Lines, keys: tuple, label: str) -> Callable[[str], str]:
    """Names an option of the mapping at `keys` by the line of its key: file:7: targets[1].x"""
    return lambda name: f"{_at(path, lines, *keys, name)}: {label}.{name}"


def _placed(exc: ConfigError, where: str) -> ConfigError:
    """An error about a target's paths, told which entry of the file gave them."""
    return ConfigError(exc.path, exc.action, f"{exc.problem} (from {where})")


def _check_distinct(path: Path, targets: list[TargetConfig]) -> None:
    """No target writes where another writes, or where another reads."""
    for i, a in enumerate(targets):
        for j, b in enumerate(targets[:i]):
            here = f"{path}: targets[{i}].destination"
            if is_object_store(a.destination) or is_object_store(b.destination):
                if _prefixes_overlap(str(a.destination), str(b.destination)):
                    raise ConfigError(
                        here, "read target", f"it overlaps targets[{j}].destination "
                        f"{b.destination}: one would delete what the other copies",
                    )  # fmt: skip
                continue
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


def _prefixes_overlap(a: str, b: str) -> bool:
    """One object-store copy (or its records) inside the other's: s3://b/x and s3://b/x/y."""
    a_all = (a + "/", a + RECORDS_SUFFIX + "/")
    b_all = (b + "/", b + RECORDS_SUFFIX + "/")
    return any(x.startswith(y) or y.startswith(x) for x in a_all for y in b_all)


def with_options(target: TargetConfig, **options: Any) -> TargetConfig:
    return replace(target, **parse_options(options, "option"))
