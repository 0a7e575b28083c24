"""What `release` checks a copy against, by kind: a plain copy, a packed one, a compressed one.

Each kind names the record that lists every file's BLAKE3 under its source name (and
the certificate field that vouches for that record), the links the copy holds, and how
the destination is re-read to prove it still is what was verified:

- a copy (`copy --hash`): `manifest.b3`; links as they are at the destination; every
  file re-read against the manifest (release.py does it, with `check_manifest`).
- a packed copy (`--pack`): `manifest.b3` of member paths under the run's name; links
  from `members.jsonl`; the archive re-read from its device, its size and BLAKE3 against
  the certificate's. Those are the bytes whose every member was verified when it was
  written (only a certificate with `verified: members` is taken: one verified without
  the key to decrypt proves nothing of the plaintext).
- a compressed copy (`--compress`): `originals.b3`; links from `entries.jsonl`; every
  file re-read and decompressed against `entries.jsonl` (engine/stored.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from blake3 import blake3

from ..names import shown
from ..state.records import Records
from ..verify.manifest import MANIFEST

COPY, PACKED, COMPRESSED = "copy", "packed", "compressed"
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def kind_of(cert: dict[str, Any]) -> str:
    if isinstance(cert.get("packed"), dict):
        return PACKED
    if isinstance(cert.get("compressed"), dict):
        return COMPRESSED
    return COPY


def manifest_of(kind: str) -> tuple[str, str]:
    """The record of source names and digests, and the certificate field of its BLAKE3."""
    if kind == COMPRESSED:
        return "originals.b3", "originals_blake3"
    return MANIFEST, "manifest_blake3"


def source_keys(kind: str, digests: dict[str, str], source: str) -> dict[str, str]:
    """The manifest's digests by the file's path under the source."""
    if kind != PACKED:
        return digests
    run = os.path.basename(source.rstrip("/")) + "/"
    return {key[len(run) :]: d for key, d in digests.items() if key.startswith(run)}


def not_verified_where_stored(kind: str, cert: dict[str, Any]) -> str:
    """Why the certificate does not prove the stored contents ("" when it does)."""
    if kind == PACKED and cert.get("verified") != "members":
        return (
            "its archive's contents were verified while packing only (there was no key to "
            "decrypt it where it is stored): pack it again with the key at hand (--identity "
            "for age, the secret key in the keyring for gpg) for its members to be verified"
        )
    return ""


def links_of(kind: str, records: Records, source: str) -> dict[str, str] | None:
    """The links the copy holds, by source path, from its records (None: a plain copy,
    whose links are read from the destination itself)."""
    if kind == PACKED:
        from ..archives.check import parse_members
        from ..engine.pack import MEMBERS

        run = os.path.basename(source.rstrip("/")) + "/"
        members = parse_members(records.read(MEMBERS))
        return {m.path[len(run) :]: m.target for m in members if m.kind == "link"}
    if kind == COMPRESSED:
        from ..engine.stored import ENTRIES, parse_stored

        entries = parse_stored(records.read(ENTRIES), records / ENTRIES)
        return {e.original: e.target for e in entries if e.kind == "link"}
    return None


def destination_problems(
    kind: str, dest: Path, records: Records, cert: dict[str, Any]
) -> list[str]:
    """Why a packed or compressed copy, re-read now, is not what was verified."""
    if kind == PACKED:
        return _archive_problems(dest, cert)
    from ..engine.stored import ENTRIES, check_destination, parse_stored

    entries = parse_stored(records.read(ENTRIES), records / ENTRIES)
    return [str(f) for f in check_destination(dest, entries).findings]


def _archive_problems(archive: Path, cert: dict[str, Any]) -> list[str]:
    packed = cert["packed"]
    try:
        fd = os.open(archive, _READ)
    except OSError as exc:
        return [f"the archive {shown(str(archive))} cannot be read: {exc.strerror}"]
    # Dropped from the cache first: the bytes come from the device, not from memory.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    hasher, size = blake3(), 0
    with os.fdopen(fd, "rb", buffering=0) as inp:
        while block := inp.read(1 << 20):
            hasher.update(block)
            size += len(block)
    held = (size, hasher.hexdigest())
    certified = (packed.get("archive_bytes"), packed.get("archive_blake3"))
    if held != certified:
        return [
            f"the archive is {held[0]} bytes with BLAKE3 {held[1][:16]}, but its certificate "
            f"says {certified[0]} bytes with BLAKE3 {str(certified[1])[:16]}: it changed since "
            "it was verified"
        ]
    return []
