"""The b3sum manifest and the certificate a cleanup script checks before freeing the source."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from blake3 import blake3

from . import __version__

MANIFEST = "manifest.b3"
CERTIFICATE = "certificate.json"


def format_line(digest: str, key: str) -> str:
    """One line exactly as `b3sum` 1.x prints it, so `b3sum --check` accepts the file.

    b3sum escapes a backslash as `\\\\` and a newline as `\\n` in the name, and
    then starts the line with a backslash; nothing else is escaped.
    """
    if "\\" in key or "\n" in key:
        return "\\" + digest + "  " + key.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{digest}  {key}\n"


def parse_line(line: str) -> tuple[str, str]:
    """(digest, key) from one manifest line; raises ValueError for a malformed one."""
    escaped = line.startswith("\\")
    body = line[1:] if escaped else line
    body = body.rstrip("\n")
    digest, sep, key = body.partition("  ")
    if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a b3sum line: {line!r}")
    if escaped:
        key = _unescape(key)
    return digest, key


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            # `\r`: newer b3sum releases escape a carriage return too; older ones never
            # write it (they double every backslash), so reading it is unambiguous.
            out.append({"\\": "\\", "n": "\n", "r": "\r"}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def write_manifest(path: Path, digests: dict[str, str]) -> str:
    """Write the manifest atomically (sorted by key); returns the manifest's own BLAKE3."""
    text = "".join(format_line(digests[key], key) for key in sorted(digests))
    data = text.encode("utf-8", "surrogateescape")
    write_atomic(path, data)
    return blake3(data).hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    digests: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                digest, key = parse_line(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
            digests[key] = digest
    return digests


def write_certificate(path: Path, record: dict) -> None:
    """Written last, and only after verification passed: its presence is the promise."""
    body = {"softcopy_version": __version__, "host": socket.gethostname(), **record}
    write_atomic(path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
