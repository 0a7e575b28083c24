"""Member-by-member comparison of an archive with what was packed, and its records.

The members record is JSON lines, one member per line, in archive order:

    {"path": "run0042/a/b", "kind": "file", "size": 12, "mode": 420,
     "mtime_ns": 1700000000123456789, "target": "", "blake3": "<64 hex>"}

`kind` is file, dir or link; `mode` the permission bits (decimal); `target` a link's
target; `blake3` a file's digest (empty otherwise). A path or target that is not UTF-8 is
written as its text with `\\xNN` for each raw byte, and the line's `names_hex` maps that
text to the exact bytes in hex (softcopy.names.json_record), so any name round-trips.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ..errors import SoftcopyError
from ..names import json_record, name_from_json, shown
from ..verify.manifest import format_line
from .formats import Packing
from .members import Member, read_tar
from .pipeline import Counted, unpacker

_FIELDS = ("path", "kind", "size", "mode", "mtime_ns", "target", "blake3")


def compare(expected: Iterable[Member], found: Iterable[Member]) -> list[str]:
    """The differences, in words naming each member: missing, extra, kind, size, link
    target, BLAKE3, mode. `found` is consumed as a stream; `expected` is held by path."""
    want = {m.path: m for m in expected}
    seen: set[str] = set()
    problems: list[str] = []
    for got in found:
        name = shown(got.path)
        if got.path in seen:
            problems.append(f"{name}: in the archive twice")
            continue
        seen.add(got.path)
        exp = want.get(got.path)
        if exp is None:
            problems.append(f"{name}: in the archive but not in the manifest (extra)")
            continue
        problems.extend(f"{name}: {p}" for p in differences(exp, got))
    problems.extend(
        f"{shown(path)}: in the manifest but not in the archive (missing)"
        for path in want
        if path not in seen
    )
    return problems


def differences(exp: Member, got: Member) -> list[str]:
    """How one member differs from what was packed (BLAKE3 only when both have one)."""
    if exp.kind != got.kind:
        return [f"a {got.kind} where a {exp.kind} was packed"]
    out = []
    if exp.kind == "file" and exp.size != got.size:
        out.append(f"{got.size} bytes where {exp.size} were packed")
    if exp.kind == "link" and exp.target != got.target:
        out.append(f"links to {shown(got.target)} where {shown(exp.target)} was packed")
    if exp.kind == "file" and exp.blake3 and got.blake3 and exp.blake3 != got.blake3:
        out.append(f"BLAKE3 {got.blake3} where {exp.blake3} was packed (contents differ)")
    if exp.kind != "link" and exp.mode != got.mode:
        out.append(f"mode {got.mode:04o} where {exp.mode:04o} was packed")
    return out


def verify_archive(
    inp: BinaryIO, packing: Packing, identity: Path | None, expected: Iterable[Member]
) -> tuple[list[str], Counted]:
    """Read a whole archive as stored (decrypting with `identity` for age, the keyring for
    gpg; decompressing) and compare every member with `expected`: the problems, and the
    archive's size and BLAKE3. A damaged archive or a wrong key raises SoftcopyError."""
    with unpacker(inp, packing, identity) as (stream, counted):
        problems = compare(expected, read_tar(stream))
    return problems, counted


def format_members(members: Iterable[Member]) -> bytes:
    """The members record (see the module docstring)."""
    lines = []
    for m in members:
        record = json_record({f: getattr(m, f) for f in _FIELDS})
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    return "".join(lines).encode("utf-8")


def parse_members(data: bytes) -> list[Member]:
    """The members of a record written by format_members; SoftcopyError for a bad line."""
    members = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            members.append(
                Member(
                    path=name_from_json(record, record["path"]),
                    kind=str(record["kind"]),
                    size=int(record["size"]),
                    mode=int(record["mode"]),
                    mtime_ns=int(record["mtime_ns"]),
                    target=name_from_json(record, record.get("target", "")),
                    blake3=str(record.get("blake3", "")),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SoftcopyError(
                f"line {number}", "read the members record", f"it is not a member ({exc})"
            ) from None
        if members[-1].kind not in ("file", "dir", "link"):
            raise SoftcopyError(
                f"line {number}", "read the members record", f"unknown kind {members[-1].kind!r}"
            )
    return members


def manifest_text(members: Iterable[Member]) -> str:
    """The b3sum manifest of the file members, paths as in the archive: `b3sum --check`
    passes in the folder the archive was unpacked into."""
    return "".join(format_line(m.blake3, m.path) for m in members if m.kind == "file")
