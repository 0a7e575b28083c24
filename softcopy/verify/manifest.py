"""The b3sum manifest and the certificate a cleanup script checks before freeing the source."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from pathlib import Path

from blake3 import blake3

from .. import __version__
from ..inputs import open_input
from ..names import json_record, utf8_text
from ..state.records import RecordFile, write_file

MANIFEST = "manifest.b3"
CERTIFICATE = "certificate.json"


def format_line(digest: str, key: str) -> str:
    """One line as `b3sum` 1.x prints it, byte for byte, for every name b3sum can print.

    b3sum escapes a backslash as `\\\\` and a newline as `\\n` in the name, and
    then starts the line with a backslash; nothing else is escaped. A name that is
    not UTF-8 b3sum prints with U+FFFD in place of its bytes, and `b3sum --check`
    refuses such a line ("Unicode replacement character in path"): no line can make
    b3sum check that file. Its line here is escaped the same way with each raw byte as
    `\\xNN` (b3sum never writes `\\x`: it doubles every backslash), so the manifest
    stays UTF-8 text that `b3sum --check` reads, checking every other file and
    reporting that one line, while softcopy's own check keeps the exact name.
    """
    if not key.isascii() and not _is_utf8(key):
        escaped = key.replace("\\", "\\\\").replace("\n", "\\n")
        return "\\" + digest + "  " + _escape_raw_bytes(escaped) + "\n"
    if "\\" in key or "\n" in key:
        return "\\" + digest + "  " + key.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{digest}  {key}\n"


def _is_utf8(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escape_raw_bytes(text: str) -> str:
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def parse_line(line: str) -> tuple[str, str]:
    """(digest, key) from one manifest line; raises ValueError for a malformed one."""
    escaped = line.startswith("\\")
    body = line[1:] if escaped else line
    body = body.rstrip("\n")
    digest, sep, key = body.partition("  ")
    if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a b3sum line: {utf8_text(line)!r}")
    if escaped:
        key = _unescape(key)
    return digest, key


_HEX = "0123456789abcdef"


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            raw = text[i + 2 : i + 4]
            if nxt == "x" and len(raw) == 2 and raw[0] in "89abcdef" and raw[1] in _HEX:
                # A byte of a name that is not UTF-8 (format_line): the key os.scandir gives.
                out.append(chr(0xDC00 + int(raw, 16)))
                i += 4
                continue
            # `\\r`: newer b3sum releases escape a carriage return too; older ones never
            # write it (they double every backslash), so reading it is unambiguous.
            out.append({"\\": "\\", "n": "\n", "r": "\r"}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def write_manifest(path: Path | RecordFile, digests: dict[str, str]) -> str:
    """Write the manifest atomically (sorted by key); returns the manifest's own BLAKE3."""
    text = "".join(format_line(digests[key], key) for key in sorted(digests))
    data = text.encode("utf-8", "surrogateescape")
    write_atomic(path, data)
    return blake3(data).hexdigest()


# The longest line a key can need: PATH_MAX bytes, each escaped as \\xNN at worst.
MAX_LINE = 1 + 64 + 2 + 4 * 4096 + 1


def read_manifest(path: Path | RecordFile, missing: str | None = None) -> dict[str, str]:
    """Digests by key from a b3sum manifest (a regular file: not a FIFO, not a device).

    Lines are UTF-8; raw bytes (manifests written before names were escaped) are read
    as the names they are. A line longer than any key can make is an error, not memory.
    ConfigError when it is missing (`missing` says what to do) or not a regular file.
    """
    if not isinstance(path, Path):  # softcopy's own record: never through a link
        opened = path.open_input("read manifest", missing)
    else:
        opened = open_input(path, "read manifest", missing)
    with opened as f:
        return parse_lines(iter(lambda: f.readline(MAX_LINE + 1), b""), path)


def parse_lines(lines: Iterable[bytes], where: object) -> dict[str, str]:
    """Digests by key from a manifest's lines (with or without their newlines); a bad
    line is a ValueError naming `where` and its line number."""
    digests: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        if len(raw) > MAX_LINE:
            raise ValueError(
                f"{where}:{number}: line longer than {MAX_LINE} bytes: not a b3sum manifest"
            )
        line = raw.decode("utf-8", "surrogateescape")
        if not line.strip():
            continue
        try:
            digest, key = parse_line(line)
        except ValueError as exc:
            raise ValueError(f"{where}:{number}: {exc}") from None
        digests[key] = digest
    return digests


def write_certificate(path: Path | RecordFile, record: dict) -> None:
    """Written last, and only after verification passed: its presence is the promise."""
    body = {"softcopy_version": __version__, "host": socket.gethostname(), **record}
    body = json_record(body)  # strict JSON: a name's raw bytes go to names_hex
    write_atomic(path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


def write_atomic(path: Path | RecordFile, data: bytes) -> None:
    """Temporary, fsync, rename, fsync the folder; never through a link (see records.py)."""
    write_file(path, data)
