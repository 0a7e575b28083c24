"""Per-target options: one table, from which the command line, the targets file's checks and
`TargetConfig` are all made. Adding an option is one row here (and its use)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

import click

from .errors import ConfigError
from .units import parse_duration, parse_rate, parse_size


@dataclass(frozen=True)
class Kind:
    """What values an option takes, in a targets file and on the command line.

    `check` turns a targets-file value (or a command-line one, already typed by click) into
    the option's value, or raises ValueError saying what is wrong with it. `cli` gives the
    click.option keywords, whose types keep click's own messages for a bad flag.
    """

    tag: str
    annotation: str  # the TargetConfig field's type
    check: Callable[[Any], Any]
    cli: Callable[[], dict[str, Any]] = dict
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Option:
    """One per-target setting. `help` None: not a target option on the command line."""

    name: str  # the TargetConfig field and the targets-file key
    kind: Kind
    default: Any
    help: str | None = None
    flag: str | None = None  # e.g. "--sentinel"; default: --name, or --name/--no-name
    dest: str | None = None  # click's parameter name, where the name would not do

    @property
    def declarations(self) -> list[str]:
        long = self.name.replace("_", "-")
        flag = self.flag or (f"--{long}/--no-{long}" if self.kind.tag == "switch" else f"--{long}")
        return [flag, self.dest] if self.dest else [flag]


# ---- kinds ---------------------------------------------------------------------------------


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not a whole number >= 1")
    return value


WHOLE = Kind("whole", "int", _whole, lambda: {"type": click.IntRange(min=1)})


def _checked_number(value: Any, minimum: float) -> Any:
    # NaN (YAML `.nan`) compares false with everything: a NaN settle time would skip the
    # settle wait, and time.sleep(nan) raises in every copier.
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{value!r} is not a number")
    if value < minimum:
        raise ValueError(f"{value!r} is less than {minimum}")
    return value


def number(minimum: float, optional: bool = False) -> Kind:
    """Seconds and the like: a number >= minimum (None too, if optional: "off")."""

    def check(value: Any) -> Any:
        return None if value is None and optional else _checked_number(value, minimum)

    return Kind(
        "number",
        "float | None" if optional else "float",
        check,
        lambda: {"type": click.FloatRange(min=minimum)},
    )


def fraction(minimum: float) -> Kind:
    """A share of the whole, from minimum to 1."""

    def check(value: Any) -> Any:
        if _checked_number(value, minimum) > 1:
            raise ValueError(f"{value!r} is more than 1 (100 %)")
        return value

    return Kind("fraction", "float", check, lambda: {"type": click.FloatRange(minimum, 1.0)})


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


# --name/--no-name; None when not given, so a targets file's value stands.
SWITCH = Kind("switch", "bool", _bool, lambda: {"default": None})
# --name alone: something to ask for once, never a standing setting to turn off.
FLAG = Kind("flag", "bool", _bool, lambda: {"is_flag": True, "default": None})


def _rate(value: Any) -> float | None:
    return None if value is None else parse_rate(value)


# Text on the command line: `run` parses it itself, as one limit for the whole run.
RATE = Kind("rate", "float | None", _rate)


def choice(*choices: str, says: str, optional: bool = False) -> Kind:
    """One of `choices`; `says` lists them in the error message. `optional`: None too (off)."""

    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if value not in choices:
            raise ValueError(f"{value!r} is not {says}")
        return value

    annotation = "str | None" if optional else "str"
    return Kind("choice", annotation, check, lambda: {"type": click.Choice(choices)}, choices)


def _globs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{value!r} is not a list of glob patterns")
    return tuple(value)


GLOBS = Kind("globs", "tuple[str, ...]", _globs, lambda: {"multiple": True})


def _directory(value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError(f"{value!r} is not a directory path")
    return Path(os.path.abspath(os.path.expanduser(value)))


DIRECTORY = Kind(
    "directory",
    "Path | None",
    _directory,
    lambda: {"type": click.Path(path_type=Path, file_okay=False)},
)


def _file_name(value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"{value!r} is not a plain file name")
    return value


FILE_NAME = Kind("file name", "str", _file_name)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a non-empty text")
    return value


TEXT = Kind("text", "str | None", _text)


def _duration(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    return parse_duration(value)


# "7d", "12h", "90": on the command line as text, parsed here so both forms say the same.
DURATION = Kind("duration", "float | None", _duration)


def _part_size(value: Any) -> int:
    size = parse_size(value)
    if size < 5 << 20:
        raise ValueError(f"{value!r} is less than 5Mi, the smallest part S3 allows")
    return size


# "64Mi", "100M": bytes; at least S3's smallest part.
PART_SIZE = Kind("size", "int", _part_size)


def _texts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{value!r} is not a list of non-empty texts")
    return tuple(value)


TEXTS = Kind("texts", "tuple[str, ...]", _texts, lambda: {"multiple": True})


def _file(value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError(f"{value!r} is not a file path")
    return Path(os.path.abspath(os.path.expanduser(value)))


FILE = Kind(
    "file", "Path | None", _file, lambda: {"type": click.Path(path_type=Path, dir_okay=False)}
)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a whole number >= 0")
    return value


COUNT = Kind("count", "int", _count, lambda: {"type": click.IntRange(min=0)})


def _level(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    return value


LEVEL = Kind("level", "int | None", _level, lambda: {"type": int})


# ---- the table -----------------------------------------------------------------------------
# In the order `copy --help` lists them; the targets file's keys are the names.

OPTIONS: tuple[Option, ...] = (
    Option("nprocs", WHOLE, 2, "Copier processes [2]."),
    Option("sleep_time", number(0), 0.0, "Seconds each copier sleeps after each file [0]."),
    Option(
        "wait_for_source",
        SWITCH,
        False,
        "Wait for the source to appear instead of failing [no].",
    ),
    Option(
        "idle_timeout",
        number(0, optional=True),
        None,
        "Finish when nothing changed for this many seconds [off].",
    ),
    Option(
        "settle",
        number(0),
        5.0,
        "Finish once every expected chunk exists and nothing changed for this long [5].",
    ),
    # A finished archive with fill-value holes and no marker never settles: old enough
    # when softcopy starts, it counts as finished (a guessed end, never safe to free).
    Option(
        "finished_after",
        number(0),
        3600.0,
        "A source unchanged for this many seconds when the copy starts counts as finished "
        "(a guessed end); 0 turns it off [3600].",
    ),
    Option(
        "scan_interval",
        number(0.1),
        30.0,
        "Seconds between full reconciliation scans of the source [30].",
    ),
    Option(
        "complete_marker",
        FILE_NAME,
        "complete",
        "Name of the source's end-of-acquisition file [complete].",
    ),
    Option("fsync", SWITCH, False, "fsync every file before its rename [no]."),
    Option(
        "state_dir",
        DIRECTORY,
        None,
        "Where the journal lives [$XDG_STATE_HOME/softcopy].",
    ),
    # A damaged journal (or not a softcopy journal) is moved aside and a new one started:
    # nothing it claimed is trusted, files at the destination are compared.
    Option(
        "reset_journal",
        FLAG,
        False,
        "If the journal is damaged (or not softcopy's), move it aside and start a new one; "
        "files already copied are compared with the source, not trusted [no].",
    ),
    # A destination softcopy made from another source (or from a source directory since
    # deleted and made again) becomes a copy of this one: what this source lacks is deleted.
    Option(
        "replace",
        FLAG,
        False,
        "Let DESTINATION, softcopy's copy of another source (or of a source deleted and made "
        "again), become a copy of SOURCE, deleting what SOURCE lacks [no].",
    ),
    Option(
        "hash",
        SWITCH,
        False,
        "BLAKE3 while copying, verify content, write a b3sum manifest [no].",
        dest="hash_",  # `hash` would hide the builtin in the command's function
    ),
    Option(
        "max_rate",
        RATE,
        None,
        "Bytes/s for all copiers together, e.g. 200M, 1.5G, 100Mi [no limit]. "
        "With `run`: one limit shared by every target.",
    ),
    Option(
        "backoff",
        SWITCH,
        True,
        "Pause copiers while the source disk is busy being written [yes].",
    ),
    # The source device counts as busy at this utilisation while being written (a
    # saturating O_DIRECT writer measured 80-84 % on a loop device here).
    Option(
        "busy_utilisation",
        fraction(0.05),
        0.75,
        "Source disk utilisation that counts as busy [0.75].",
    ),
    # Presets fill in the end rules instruments really use (presets.py); explicit
    # options override them.
    Option(
        "preset",
        choice("none", "illumina", "ont", "zarr", says="none, illumina, ont or zarr"),
        "none",
        "End rules of an instrument: illumina (CopyComplete.txt, else RTAComplete.txt, "
        "15 min old), ont (final_summary*.txt), zarr (the complete marker) [none].",
    ),
    Option(
        "kind",
        choice("zarr", "directory", says="'zarr' or 'directory'"),
        "zarr",
        "zarr (metadata required) or directory (any tree, e.g. a run folder) [zarr].",
    ),
    # Files at the source root that say the run is finished, e.g. CopyComplete.txt,
    # final_summary_*.txt; copied last, after verification, like the complete marker.
    Option(
        "sentinels",
        GLOBS,
        (),
        "Root file (glob) saying the run is finished, e.g. CopyComplete.txt; repeatable.",
        flag="--sentinel",
        dest="sentinels",
    ),
    # Illumina's RTAComplete.txt on instruments that never write CopyComplete.txt: a file
    # that may come well before the run's last file, so the whole run must be quiet too.
    Option(
        "sentinel_fallbacks",
        GLOBS,
        (),
        "Root file (glob) that ends the run only once it and the whole run have been "
        "unchanged for --sentinel-min-age (for instruments that may never write the "
        "--sentinel); repeatable.",
        flag="--sentinel-fallback",
        dest="sentinel_fallbacks",
    ),
    Option(
        "sentinel_min_age",
        number(0),
        10.0,
        "Seconds a sentinel must be unchanged before it counts [10].",
    ),
    Option(
        "ready_age",
        number(0),
        2.0,
        "Directory targets: copy a file once unchanged this long [2].",
    ),
    Option("include", GLOBS, (), "Copy only paths matching this glob."),  # on keys; () = all
    Option("exclude", GLOBS, (), "Never copy paths matching this glob."),
    Option(
        "watch",
        choice("auto", "inotify", "poll", says="auto, inotify or poll"),
        "auto",
        "Change notifications; auto polls on network and FUSE filesystems [auto].",
    ),
    Option("poll_interval", number(0.1), 5.0, "Seconds between scans when polling [5]."),
    # A guessed end (settle, idle timeout) may still say "safe to free" in the certificate.
    Option(
        "trust_guessed_end",
        SWITCH,
        False,
        "Let a guessed end (settle, --idle-timeout, --finished-after) count as proven in the "
        "certificate's "
        "safe_to_free [no: only a marker or sentinel proves it].",
    ),
    # One event per file copied, re-copied, deleted (and, with --dry-run, planned) in the
    # --json stream; the run log in DEST.softcopy/log.jsonl has them either way.
    Option(
        "file_events",
        SWITCH,
        False,
        "With --json: an event per file copied, re-copied or deleted (with --dry-run: per "
        "file planned) [no].",
    ),
    # Object-store destinations (s3://BUCKET/PREFIX); credentials never come from here, only
    # from the standard AWS chain in each process.
    Option(
        "s3_endpoint",
        TEXT,
        None,
        "S3-compatible endpoint URL (Ceph, MinIO, Cloud Storage) [AWS_ENDPOINT_URL, else AWS].",
    ),
    Option(
        "multipart_threshold",
        PART_SIZE,
        64 << 20,
        "Object store: files this big or bigger go up in resumable parts [64Mi].",
    ),
    Option(
        "s3_concurrency",
        WHOLE,
        8,
        "Object store: requests in flight per copier for small objects [8].",
    ),
    # sha256: sent with every put and part, checked by the store; md5 for older stores;
    # none for stores that refuse checksum headers (boto3's own are then sent only when
    # an operation requires them).
    Option(
        "s3_checksum",
        choice("sha256", "md5", "none", says="sha256, md5 or none"),
        "sha256",
        "Object store: checksum sent with every upload, checked by the store [sha256].",
    ),
    Option(
        "s3_addressing",
        choice("auto", "path", "virtual", says="auto, path or virtual"),
        "auto",
        "Object store: bucket in the host name (virtual) or the path (path: Ceph, MinIO) [auto].",
    ),
    Option(
        "s3_timeout",
        number(1),
        60.0,
        "Object store: seconds to wait for an answer before a request is tried again [60].",
    ),
    Option(
        "follow_links_inside",
        SWITCH,
        False,
        "Object store: upload the file a link inside the source points to, under the link's "
        "name, instead of skipping the link with a warning [no].",
    ),
    # Packed copies (docs/archives.md): DESTINATION is one archive of the run, written once
    # the run is finished, verified member by member.
    Option(
        "pack",
        choice("tar", "tar.gz", "tar.zst", says="tar, tar.gz or tar.zst", optional=True),
        None,
        "Write DESTINATION as one archive of SOURCE, once it is finished: tar, tar.gz or "
        "tar.zst [off].",
    ),
    Option(
        "encrypt",
        TEXTS,
        (),
        "With --pack: encrypt for age:RECIPIENT, age:@RECIPIENTS_FILE or gpg:KEYID "
        "(repeatable); adds .age or .gpg to the name.",
        flag="--encrypt",
        dest="encrypt",
    ),
    Option(
        "identity",
        FILE,
        None,
        "With --pack --encrypt age:...: an age identity file, so verification decrypts the "
        "archive [without: the stored bytes are checked, the contents were checked while "
        "packing].",
    ),
    # Per-file compression of a plain run folder (docs/archives.md): FILE.gz or FILE.zst
    # at the destination, verified by decompressing it.
    Option(
        "compress",
        choice("gzip", "zstd", says="gzip or zstd", optional=True),
        None,
        "Write each file (or those --compress-include picks) compressed, as FILE.gz or "
        "FILE.zst, once the run is finished [off].",
    ),
    Option(
        "compress_include",
        GLOBS,
        (),
        "With --compress: compress only files matching this glob, e.g. '*.fastq'; "
        "repeatable [every file].",
        flag="--compress-include",
        dest="compress_include",
    ),
    Option(
        "level",
        LEVEL,
        None,
        "With --pack or --compress: compression level (gzip 1-9, zstd 1-22) [1].",
    ),
    Option("threads", COUNT, 0, "With --pack or --compress: compression threads; 0 chooses [0]."),
    # Targets-file only:
    Option("max_attempts", WHOLE, 5),
    Option("batch_size", WHOLE, 32),
    # --dry-run is an output option of `copy` and `run` (it also changes what they show).
    Option("dry_run", SWITCH, False),
)


# ---- what the table makes ------------------------------------------------------------------


def target_class(table: Sequence[Option] = OPTIONS, module: str = __name__) -> type:
    """A frozen dataclass: source, destination, then one field per row with its default."""
    rows = [(o.name, o.kind.annotation, field(default=o.default)) for o in table]
    return make_dataclass(
        "TargetConfig",
        [("source", "Path"), ("destination", "Path"), *rows],
        frozen=True,
        namespace={
            "__module__": module,
            "__doc__": "One target: where from, where to, and its options (options.OPTIONS).",
            "name": property(lambda self: str(self.source)),
        },
    )


def click_options(table: Sequence[Option] = OPTIONS) -> Callable[[Callable], Callable]:
    """The decorator giving `copy` and `run` every command-line row, in the table's order."""
    options = [click.option(*o.declarations, help=o.help, **o.kind.cli()) for o in table if o.help]

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def cli_values(values: dict[str, Any], table: Sequence[Option] = OPTIONS) -> dict[str, Any]:
    """Options given on the command line, by option name (None or an empty repeatable: not
    given, so the targets file's value or the default stands)."""
    names = {o.dest: o.name for o in table if o.dest}
    return {names.get(k, k): v for k, v in values.items() if v is not None and v != ()}


def check_value(name: str, value: Any, table: Iterable[Option] = OPTIONS) -> Any:
    """One option's value, parsed; ValueError says what is wrong with it."""
    return {o.name: o for o in table}[name].kind.check(value)


# Where an option error comes from when the user typed it as a flag: named by the flag.
COMMAND_LINE = "command line"


def parse_options(
    options: dict[str, Any],
    where: str,
    table: Sequence[Option] = OPTIONS,
    *,
    place: Callable[[str], str] | None = None,
    also: Iterable[str] = (),
    errors: list[ConfigError] | None = None,
) -> dict[str, Any]:
    """Validate per-target options; `where` names the place for error messages.

    `place` names one option's place instead (a targets file's line); `also` are other keys
    valid beside the options (source, destination), offered for a misspelt key. With
    `errors`, every bad option is appended there and the good ones are returned; without,
    the first raises.
    """
    rows = {o.name: o for o in table}
    parsed: dict[str, Any] = {}
    action = option_action(where if place is None else "")
    for name, value in options.items():
        here = place(name) if place else option_place(where, name, rows)
        row = rows.get(name)
        try:
            if row is None:
                raise ConfigError(here, action, unknown_key(name, [*rows, *also]))
            try:
                parsed[name] = row.kind.check(value)
            except ValueError as exc:
                raise ConfigError(here, action, str(exc)) from None
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(exc)
    return parsed


def option_action(where: str) -> str:
    """ "cannot read option --nprocs: ...", "cannot read targets file t.yaml:3: targets[0].src:
    ...": what the user typed, or the file they wrote."""
    return "read option" if where == COMMAND_LINE else "read targets file"


def option_place(where: str, name: str, rows: dict[str, Option]) -> str:
    """`--max-rate` for the command line (what was typed), `where.max_rate` elsewhere."""
    if where != COMMAND_LINE:
        return f"{where}.{name}"
    row = rows.get(name)
    flag = row.declarations[0] if row else f"--{name.replace('_', '-')}"
    return flag.split("/")[0]


def unknown_key(name: object, known: Iterable[str]) -> str:
    """The problem with a key nothing knows, with the nearest known one when it is close."""
    import difflib

    known = sorted(set(known))
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    if not close:  # `src` for `source_root`: people shorten a key's first word
        firsts = [k.partition("_")[0] for k in known]
        heads = {h: k for h, k in zip(firsts, known, strict=True) if firsts.count(h) == 1}
        # Stricter than for whole keys: short words are close to too many others.
        near = difflib.get_close_matches(str(name), list(heads), n=1, cutoff=0.65)
        close = [heads[h] for h in near]
    if close:  # the whole list would bury the one name that matters
        return f"unknown option {str(name)!r}; did you mean {close[0]!r}?"
    return f"unknown option {str(name)!r} (known: {', '.join(known)})"
