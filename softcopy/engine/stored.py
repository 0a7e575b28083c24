"""What a compressed copy holds (engine/compress.py), and checking it against that.

The entries record (DEST.softcopy/entries.jsonl) is JSON lines, one per thing at the
destination, sorted by destination path:

    {"path": "Data/s_1.fastq.gz", "original": "Data/s_1.fastq", "kind": "file",
     "size": 80000, "mode": 420, "mtime_ns": 1700000000123456789, "target": "",
     "blake3": "<of the original bytes>", "stored_size": 1234,
     "stored_blake3": "<of the bytes as stored>", "compression": "gzip"}

`kind` is file, dir or link; `compression` "" for a file copied as it is; names that
are not UTF-8 go through `names_hex` (softcopy.names.json_record). Checking reads every
stored file back (its cached pages dropped first, so the bytes come from the device),
decompresses it, and compares both digests; a folder or link by kind, mode and target.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

from ..archives.formats import Packing
from ..archives.members import (
    READ_BLOCK,
    DamagedArchive,
    Entry,
    TreeDirs,
    select_entries,
    walk_tree,
)
from ..archives.pipeline import Counted, unpacker
from ..errors import SoftcopyError
from ..names import json_record, name_from_json
from ..verify.compare import MANIFEST, Finding, Verification

ENTRIES = "entries.jsonl"
SUFFIX = {"gzip": ".gz", "zstd": ".zst"}
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class Stored:
    path: str  # at the destination, relative to it
    original: str  # at the source
    kind: str  # "file" | "dir" | "link"
    size: int  # of the original bytes
    mode: int  # permission bits
    mtime_ns: int
    target: str = ""  # a link's
    blake3: str = ""  # of the original bytes
    stored_size: int = 0
    stored_blake3: str = ""
    compression: str = ""  # "" | "gzip" | "zstd"


def format_stored(entries: Iterable[Stored]) -> bytes:
    return b"".join(
        json.dumps(json_record(asdict(e)), ensure_ascii=False, separators=(",", ":")).encode()
        + b"\n"
        for e in entries
    )


def parse_stored(data: bytes, where: object) -> list[Stored]:
    """The entries of a record written by format_stored; SoftcopyError for a bad line."""
    out = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            names = ("path", "original", "target")
            fields = {k: record[k] for k in Stored.__dataclass_fields__}
            fields |= {k: name_from_json(record, record[k]) for k in names}
            entry = Stored(**fields)
        except (ValueError, KeyError, TypeError) as exc:
            raise SoftcopyError(where, "read the entries", f"line {number}: {exc}") from None
        if entry.kind not in ("file", "dir", "link") or entry.compression not in ("", *SUFFIX):
            raise SoftcopyError(where, "read the entries", f"line {number}: not an entry")
        out.append(entry)
    return out


def read_stored(
    fd: int, compression: str, pace: Callable[[int], None] | None = None
) -> tuple[Counted, int, str]:
    """A stored file read to its end from `fd` (closed here), from the device: see
    read_stream."""
    # What was written or cached is dropped, so the bytes come from the device.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    with os.fdopen(fd, "rb", buffering=0) as inp:
        return read_stream(inp, compression, pace)


def read_stream(
    inp: BinaryIO, compression: str, pace: Callable[[int], None] | None = None
) -> tuple[Counted, int, str]:
    """A stored file's bytes read to their end: their size and BLAKE3 as stored, and the
    size and BLAKE3 of the original bytes. DamagedArchive when they do not decompress."""
    hasher, size = blake3(), 0
    with unpacker(inp, Packing(compression), None) as (stream, counted):
        while block := stream.read(READ_BLOCK):
            hasher.update(block)
            size += len(block)
            if pace is not None:
                pace(len(block))
    return counted, size, hasher.hexdigest()


def _listing(root: Path) -> tuple[dict[str, tuple[os.stat_result, bytes]], list[str], TreeDirs]:
    dirs = TreeDirs(root)
    try:
        entries, skipped = walk_tree(dirs, b".")
    except BaseException:
        dirs.close()
        raise
    found = {os.fsdecode(e.relative): (e.st, e.relative) for e in entries if e.relative}
    return found, [s[2:] for s in skipped], dirs


def _entries_of(found: dict[str, tuple[os.stat_result, bytes]]) -> list[Entry]:
    root = Entry(b".", b"", os.stat_result((0,) * 10))
    return [root] + [Entry(b"", relative, st) for st, relative in found.values()]


def _kind(mode: int) -> str:
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "link"


def check_destination(
    destination: Path,
    expected: list[Stored],
    against: str = MANIFEST,
    pace: Callable[[int], None] | None = None,
    extras: bool = True,
    besides: frozenset[str] = frozenset(),
) -> Verification:
    """Every stored entry read back and compared with `expected`; nothing missing, and
    (`extras`) nothing extra but `besides`. Findings name destination paths; `against`
    says what `expected` is."""
    found, skipped, dirs = _listing(destination)
    for name in besides:
        found.pop(name, None)
    findings = [Finding("extra", name, against=against) for name in skipped if extras]
    result = Verification(findings)
    try:
        for exp in expected:
            here = found.pop(exp.path, None)
            if here is None:
                findings.append(Finding("missing", exp.path, against=against))
                continue
            st, relative = here
            kind = _kind(st.st_mode)
            if kind != exp.kind:
                findings.append(Finding("type", exp.path, "", exp.kind, kind, against))
                continue
            parent, _, name = relative.rpartition(b"/")
            if kind == "link":
                target = os.fsdecode(os.readlink(name, dir_fd=dirs.fd(parent)))
                if target != exp.target:
                    findings.append(Finding("link", exp.path, "", exp.target, target, against))
                result.links += 1
                continue
            if stat.S_IMODE(st.st_mode) != exp.mode:
                mode = f"{stat.S_IMODE(st.st_mode):04o}"
                findings.append(Finding("mode", exp.path, "", f"{exp.mode:04o}", mode, against))
            if kind == "dir":
                continue
            result.files += 1
            result.bytes += exp.size
            findings.extend(_check_file(dirs.fd(parent), name, exp, against, pace))
    finally:
        dirs.close()
    if extras:
        findings.extend(Finding("extra", name, against=against) for name in sorted(found))
    return result


def _check_file(
    dir_fd: int, name: bytes, exp: Stored, against: str, pace: Callable[[int], None] | None
) -> list[Finding]:
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
        read = read_stored(fd, exp.compression, pace)
    except DamagedArchive as exc:
        return [Finding("unreadable", exp.path, exc.problem.replace("the archive", "the file"))]
    except OSError as exc:
        return [Finding("unreadable", exp.path, exc.strerror or str(exc))]
    return _compare_read(exp, *read, against)


def _compare_read(
    exp: Stored, counted: Counted, size: int, digest: str, against: str
) -> list[Finding]:
    if (counted.size, counted.blake3) != (exp.stored_size, exp.stored_blake3):
        stored = f"{counted.size} bytes BLAKE3 {counted.blake3}"
        recorded = f"{exp.stored_size} bytes BLAKE3 {exp.stored_blake3}"
        return [Finding("content", exp.path, "", recorded, stored, against)]
    if (size, digest) != (exp.size, exp.blake3):
        # The stored bytes are those written, yet they decompress to something else.
        what = f"decompressed: {size} bytes BLAKE3 {digest}"
        return [Finding("content", exp.path, "", f"{exp.size} bytes {exp.blake3}", what, against)]
    return []


def check_bucket(
    store: Any,
    expected: list[Stored],
    against: str = MANIFEST,
    pace: Callable[[int], None] | None = None,
    extras: bool = True,
    besides: frozenset[str] = frozenset(),
) -> Verification:
    """check_destination for a compressed copy in a bucket (`store`: sinks.s3.ObjectStore):
    every object downloaded again and decompressed. A bucket holds files only."""
    held = store.objects()
    for name in besides:
        held.pop(name, None)
    findings: list[Finding] = []
    result = Verification(findings)
    for exp in expected:
        if held.pop(exp.path, None) is None:
            findings.append(Finding("missing", exp.path, against=against))
            continue
        result.files += 1
        result.bytes += exp.size
        try:
            with store.open(exp.path) as inp:
                read = read_stream(inp, exp.compression, pace)
        except FileNotFoundError:
            findings.append(Finding("missing", exp.path, against=against))
            continue
        except DamagedArchive as exc:
            problem = exc.problem.replace("the archive", "the object")
            findings.append(Finding("unreadable", exp.path, problem))
            continue
        findings.extend(_compare_read(exp, *read, against))
    if extras:
        findings.extend(Finding("extra", name, against=against) for name in sorted(held))
    return result


def check_source(
    source: Path,
    expected: list[Stored],
    besides: frozenset[str] = frozenset(),
    folders: bool = True,
    keep: Callable[[str], bool] | None = None,
) -> list[Finding]:
    """The source now against what was copied: a file changed, added or gone since, by
    the source's names ("missing": in the source, not in the copy); `besides`: names
    the copy left out (a bucket's links), its folders unless `folders`, and what `keep`
    (the copy's --include/--exclude) does not take."""
    found, skipped, dirs = _listing(source)
    for name in besides:
        found.pop(name, None)
    if keep is not None:
        wanted = {os.fsdecode(e.relative) for e in select_entries(_entries_of(found), keep)}
        found = {k: v for k, v in found.items() if k in wanted}
    if not folders:
        found = {k: v for k, v in found.items() if not stat.S_ISDIR(v[0].st_mode)}
    findings: list[Finding] = []
    try:
        for exp in sorted(expected, key=lambda e: os.fsencode(e.original)):
            here = found.pop(exp.original, None)
            if here is None:
                findings.append(Finding("extra", exp.original))
                continue
            st, relative = here
            kind = _kind(st.st_mode)
            if kind != exp.kind:
                findings.append(Finding("type", exp.original, "", kind, exp.kind))
                continue
            parent, _, name = relative.rpartition(b"/")
            if kind == "link":
                target = os.fsdecode(os.readlink(name, dir_fd=dirs.fd(parent)))
                if target != exp.target:
                    findings.append(Finding("link", exp.original, "", target, exp.target))
            elif kind == "file":
                try:
                    fd = os.open(name, _READ, dir_fd=dirs.fd(parent))
                    _, size, digest = read_stored(fd, "")
                except OSError as exc:
                    findings.append(Finding("unreadable", exp.original, exc.strerror or ""))
                    continue
                if (size, digest) != (exp.size, exp.blake3):
                    findings.append(
                        Finding("content", exp.original, "", f"{size} bytes {digest}",
                                f"{exp.size} bytes {exp.blake3}")
                    )  # fmt: skip
    finally:
        dirs.close()
    findings.extend(Finding("missing", name) for name in sorted(found) if name not in skipped)
    return findings
