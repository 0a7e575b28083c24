"""The size list (`files.tsv`): every file of a finished copy with its size and mtime, so a
copy made without --hash can be checked later without its source (`verify DESTINATION`).

One line per file, `KEY<TAB>SIZE<TAB>MTIME_NS`, sorted by key, after a header line. The key
is escaped as in the manifest (a line that starts with a backslash has `\\\\`, `\\n` and
`\\xNN` in its key), so any name is one line; it may hold tabs, since the two numbers are
split off from the right.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from blake3 import blake3

from ..inputs import open_input
from ..state.records import RecordFile, write_file
from .manifest import MAX_LINE, _escape_raw_bytes, _is_utf8, _unescape

SIZE_LIST = "files.tsv"
HEADER = "# softcopy size list: key\tsize\tmtime_ns\n"


def format_entry(key: str, size: int, mtime_ns: int) -> str:
    """One line; the key escaped exactly as manifest.format_line escapes it."""
    tail = f"\t{size}\t{mtime_ns}\n"
    if not key.isascii() and not _is_utf8(key):
        escaped = key.replace("\\", "\\\\").replace("\n", "\\n")
        return "\\" + _escape_raw_bytes(escaped) + tail
    if "\\" in key or "\n" in key:
        return "\\" + key.replace("\\", "\\\\").replace("\n", "\\n") + tail
    return key + tail


def format_entries(
    prefix: str, names: list[str], sizes: Iterable[int], mtimes: Iterable[int]
) -> str:
    """format_entry of every key prefix + name, joined: one test for the whole list when
    no key needs escaping (chunk names never do), not one per key."""
    joined = prefix + "".join(names)
    rows = zip(names, sizes, mtimes, strict=True)
    if joined.isascii() and "\\" not in joined and "\n" not in joined:
        return "".join([f"{prefix}{n}\t{s}\t{m}\n" for n, s, m in rows])
    return "".join([format_entry(prefix + n, s, m) for n, s, m in rows])


def parse_entry(line: str) -> tuple[str, int, int]:
    """(key, size, mtime_ns) from one line; ValueError for a malformed one."""
    escaped = line.startswith("\\")
    body = (line[1:] if escaped else line).rstrip("\n")
    parts = body.rsplit("\t", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].lstrip("-").isdigit():
        raise ValueError("not a size list line (KEY<TAB>SIZE<TAB>MTIME_NS)")
    key = _unescape(parts[0]) if escaped else parts[0]
    return key, int(parts[1]), int(parts[2])


def write_size_list(path: Path | RecordFile, body: BinaryIO) -> str:
    """Write the list atomically, its lines (each from format_entry) read from `body` as
    they are written; returns its own BLAKE3 (the certificate vouches for it)."""
    digest = blake3()

    def blocks() -> Iterator[bytes]:
        body.seek(0)
        for block in itertools.chain([HEADER.encode()], iter(lambda: body.read(1 << 20), b"")):
            digest.update(block)
            yield block

    write_file(path, blocks())
    return digest.hexdigest()


def size_list_body() -> BinaryIO:
    """Where a size list's lines go while verification finds them: memory up to a MiB,
    then a temporary file, so a copy of ten million files does not hold them all."""
    return tempfile.SpooledTemporaryFile(max_size=1 << 20)  # type: ignore[return-value]


def read_size_list(
    path: Path | RecordFile, missing: str | None = None
) -> tuple[dict[str, tuple[int, int]], str]:
    """(key -> (size, mtime_ns), the file's BLAKE3); a regular file only, never a link of
    the records folder. ValueError names the line that is wrong."""
    if not isinstance(path, Path):  # a record (of a local or an object-store folder)
        opened = path.open_input("read size list", missing)
    else:
        opened = open_input(path, "read size list", missing)
    with opened as f:
        return parse_lines(iter(lambda: f.readline(MAX_LINE + 64), b""), path)


def parse_lines(lines: Iterable[bytes], where: object) -> tuple[dict[str, tuple[int, int]], str]:
    entries: dict[str, tuple[int, int]] = {}
    digest = blake3()
    for number, raw in enumerate(lines, 1):
        digest.update(raw)
        if len(raw) > MAX_LINE + 63:
            raise ValueError(f"{where}:{number}: line too long: not a size list")
        line = raw.decode("utf-8", "surrogateescape")
        if number == 1 and line == HEADER:
            continue
        if not line.strip():
            continue
        try:
            key, size, mtime_ns = parse_entry(line)
        except ValueError as exc:
            raise ValueError(f"{where}:{number}: {exc}") from None
        entries[key] = (size, mtime_ns)
    return entries, digest.hexdigest()
