"""A packed copy (`--pack`): one archive of a finished run, verified member by member.

The source is read once, after the usual end rules say the writer is done (marker,
sentinel, settle, old source: the same `SourceView.end_rule` as a copy), at idle CPU and
I/O priority. The tar stream is compressed and encrypted on its way to the destination
and never staged on a disk (archives/). The archive takes its final name only complete
(sinks/archive_file.py), and only if the source did not change while it was read.

Then the archive is read back from where it was written, decrypted when the key is at
hand, decompressed as a stream, and every member's name, type, size, mode, link target
and BLAKE3 compared with what was packed; the archive's own size and BLAKE3 with what
was written. The records (ARCHIVE.softcopy/) are written in this order: the members,
the manifest (b3sum lines of the member files), the archive's own b3sum line, and last
the certificate. A certificate says "safe to free" only for a proven end and an archive
whose contents were verified where they are stored: without the key to decrypt it,
only its stored bytes are, and a wrong recipient would have made it unreadable to all.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

from ..archives.check import compare, format_members, manifest_text, parse_members
from ..archives.formats import Packing, gpg_base_args, parse_encrypt, parse_pack, tool_path
from ..archives.members import Keep, Member, list_source, read_tar, write_tar
from ..archives.pipeline import DEFAULT_LEVEL, Counted, packer, unpacker
from ..config import TargetConfig
from ..errors import ConfigError, SoftcopyError
from ..locations import is_object_store
from ..names import shown
from ..sinks.archive_file import archive_output
from ..sinks.base import SinkSpec, spec_of
from ..sources.scan import Version
from ..states import State
from ..verify.manifest import CERTIFICATE, MANIFEST, format_line
from .claim import source_identity
from .end import _iso, write_certificate_to, write_summary
from .events import Summary
from .finish import end_record
from .finished import FinishedJob, run_job
from .observe import SourceView
from .stop import StopSignal

log = logging.getLogger("softcopy")

MEMBERS = "members.jsonl"
ARCHIVE_DIGEST = "archive.b3"
_STALE = (CERTIFICATE, MANIFEST, MEMBERS, ARCHIVE_DIGEST, "summary.json")


def packing_of_target(cfg: TargetConfig) -> Packing:
    """The target's --pack, --encrypt, --level and --threads (combinations: config.py)."""
    return Packing(parse_pack(cfg.pack), cfg.level, cfg.threads, parse_encrypt(cfg.encrypt) or None)


def archive_location(cfg: TargetConfig, packing: Packing) -> str:
    """DESTINATION, with .age or .gpg added when the archive is encrypted."""
    location = str(cfg.destination)
    tail = f".{packing.encryption.tool}" if packing.encryption else ""
    return location if location.endswith(tail) else location + tail


def pack_target(
    cfg: TargetConfig,
    stop: StopSignal | None = None,
    events: Callable[[dict], None] | None = None,
    run_rate: tuple[str, float] | None = None,
) -> Summary:
    return run_job(_Pack(cfg, stop or StopSignal(), events, run_rate))


class _Pack(FinishedJob):
    verb = "pack"

    def __init__(
        self,
        cfg: TargetConfig,
        stop: StopSignal,
        events: Callable[[dict], None] | None,
        run_rate: tuple[str, float] | None,
    ) -> None:
        self.packing = packing_of_target(cfg)
        super().__init__(cfg, stop, events, run_rate, archive_location(cfg, self.packing))
        self.run_name = os.path.basename(self.src.rstrip("/"))

    def _run(self) -> None:
        kind = self._begin()
        if self.cfg.dry_run:
            return self._dry_run()
        output = archive_output(self.location, spec_of(self.cfg))
        self.output = output
        try:
            records = output.open_records()
            self._open_journal()
            if self._already_done(records):
                return
            if output.exists():
                raise ConfigError(
                    self.location, "pack to destination", "it exists, and its records do not "
                    f"certify it as the archive of {self.src}: softcopy never replaces an "
                    "archive; remove it or choose another name",
                )  # fmt: skip
            view = self._finished_source(kind, records, _STALE, "the archive")
            if view is None:
                return
            self._state(State.COPYING)
            members, counted = self._pack(view)
            self._state(State.VERIFYING)
            verified = self._verify(members, counted)
            self._write_records(records, members, counted, verified)
            # One file at the destination: the archive (its members are in its records).
            archive = (os.path.basename(self.location), Version(counted.size, 0, 0, 0), "")
            self.journal.checkpoint([archive], [], {}, {"files_copied": 1})
            self._state(State.DONE)
        finally:
            output.close()

    # ---- before ------------------------------------------------------------------------

    def _dry_run(self) -> None:
        """What packing now would take, from a listing; the refusals of a real run."""
        from ..sinks.archive_file import ArchiveAt

        entries, _ = list_source(Path(self.src), self.run_name, self.keep)
        action = "pack"
        spec = spec_of(self.cfg) if is_object_store(self.location) else None
        if _archive_exists(self.location, spec):
            archive = ArchiveAt(self.location, spec)
            try:
                cert = json.loads(archive.records.read(CERTIFICATE))
            except (OSError, SoftcopyError, ValueError):
                cert = None
            finally:
                archive.close()
            if not isinstance(cert, dict) or cert.get("source") != self.src:
                raise ConfigError(
                    self.location, "pack to destination", "it exists, and its records do "
                    f"not certify it as the archive of {self.src}: softcopy never replaces "
                    "an archive; remove it or choose another name",
                )  # fmt: skip
            action = "trust"
        files = [e for e in entries if e.relative and stat.S_ISREG(e.st.st_mode)]
        self._plan([(os.fsdecode(e.relative), action, e.st.st_size) for e in files])

    def _already_done(self, records: Any) -> bool:
        """A rerun of an archive certified before: done, nothing read or written."""
        try:
            cert = json.loads(records.read(CERTIFICATE))
        except (SoftcopyError, OSError, ValueError):
            return False
        if not isinstance(cert, dict) or cert.get("source") != self.src:
            return False
        if not self.output.exists():
            return False
        held, recorded = self.output.size(), (cert.get("packed") or {}).get("archive_bytes")
        if held != recorded:
            raise SoftcopyError(
                self.location, "pack", f"it is {held} bytes, but its certificate says "
                f"{recorded}: it changed since it was verified; check it with `softcopy "
                "verify`, and remove it with its records to pack the run again",
            )  # fmt: skip
        changed = self._changed_since(records)
        if changed:
            raise SoftcopyError(
                self.src, "pack", f"the run changed since it was packed into {self.location} "
                f"({changed}), and an archive is never replaced: pack it under a new name",
            )  # fmt: skip
        self.summary.files_at_source = int(cert.get("files", 0))
        self.summary.bytes_at_source = int(cert.get("bytes", 0))
        self.summary.files_already_there = self.summary.files_at_source
        self.summary.reason = str(cert.get("finished_because", ""))
        self.summary.end_rule = str((cert.get("end") or {}).get("rule", ""))
        log.info("%s: already packed and verified (%s)", self.src, self.location)
        self._state(State.DONE)
        return True

    def _changed_since(self, records: Any) -> str:
        """What differs between the source now and the members packed ("" when nothing):
        by a listing, sizes and mtimes, not by reading the files again."""
        try:
            recorded = {m.path: m for m in parse_members(records.read(MEMBERS))}
        except (SoftcopyError, OSError, ValueError):
            return "its members record cannot be read"
        entries, _ = list_source(Path(self.src), self.run_name, self.keep)
        for entry in entries:
            path = os.fsdecode(entry.archive)
            member = recorded.pop(path, None)
            if member is None:
                return f"{shown(path)} is new"
            st = entry.st
            if member.kind == "file" and (member.size, member.mtime_ns) != (
                st.st_size,
                st.st_mtime_ns,
            ):
                return f"{shown(path)} changed"
        return f"{shown(next(iter(recorded)))} is gone" if recorded else ""

    # ---- packing -----------------------------------------------------------------------

    def _pack(self, view: SourceView) -> tuple[list[Member], Counted]:
        self._start_pacing(view)
        output = self.output
        out = output.writer()
        try:
            with packer(out, self.packing) as (stream, counted):
                members, skipped = write_tar(
                    stream, Path(self.src), self.run_name, self._pace, self.keep
                )
            for name in skipped:
                log.warning("%s: %s: not packed (not a file, directory or link)", self.src, name)
            if hasattr(out, "flush"):
                out.flush()
            self._check_unchanged(view)
            output.commit()
        except BaseException:
            output.abort()
            raise
        files = [m for m in members if m.kind == "file"]
        self.summary.files_at_source = self.summary.files_copied = len(files)
        self.summary.bytes_at_source = sum(m.size for m in files)
        self.summary.bytes_copied = counted.size
        self.summary.links_skipped = []
        log.info(
            "%s: packed %d members into %s (%d bytes)",
            self.src,
            len(members),
            shown(self.location),
            counted.size,
        )
        return members, counted

    # ---- verification ------------------------------------------------------------------

    def _verify(self, members: list[Member], written: Counted) -> str:
        """How the stored archive was verified (see `check_archive`); raises if it differs."""
        inp = self.output.reader()
        try:
            problems, how = check_archive(
                inp,
                self.packing,
                self.cfg.identity,
                members,
                (written.size, written.blake3),
                self.location,
            )
        finally:
            inp.close()
        if problems:
            raise SoftcopyError(self.location, "verify the archive", problems_text(problems))
        return how

    # ---- records -----------------------------------------------------------------------

    def _write_records(
        self, records: Any, members: list[Member], counted: Counted, verified: str
    ) -> None:
        write = records.write
        write(MEMBERS, format_members(members))
        manifest = manifest_text(members).encode("utf-8", "surrogateescape")
        write(MANIFEST, manifest)
        name = os.path.basename(self.location)
        write(ARCHIVE_DIGEST, format_line(counted.blake3, name).encode("utf-8", "surrogateescape"))
        files = [m for m in members if m.kind == "file"]
        ending = end_record(self.summary.end_rule, self.summary.reason, self.cfg.trust_guessed_end)
        encryption = self.packing.encryption
        record = {
            "source": self.src,
            "source_identity": source_identity(self.src),
            "destination": self.location,
            "started": _iso(self._wall_started),
            "finished": _iso(time.time()),
            "finished_because": self.summary.reason,
            **ending,
            "verification": "blake3",
            "verified": verified,
            "plaintext_verified": "at the destination"
            if verified == "members"
            else "while packing only (no key to decrypt the archive here)",
            "packed": {
                "format": {"": "tar", "gzip": "tar.gz", "zstd": "tar.zst"}[
                    self.packing.compression
                ],
                "level": None
                if not self.packing.compression
                else self.packing.level or DEFAULT_LEVEL[self.packing.compression],
                "encryption": None
                if encryption is None
                else {"tool": encryption.tool, "recipients": list(encryption.recipients)},
                "archive": name,
                "archive_bytes": counted.size,
                "archive_blake3": counted.blake3,
                "members": len(members),
                "members_record": MEMBERS,
                "archive_digest": ARCHIVE_DIGEST,
            },
            "files": len(files),
            "bytes": sum(m.size for m in files),
            "links": sum(1 for m in members if m.kind == "link"),
            "directories": sum(1 for m in members if m.kind == "dir"),
            "manifest": MANIFEST,
            "manifest_blake3": blake3(manifest).hexdigest(),
            **self._filters(),
        }
        if verified != "members":
            # Contents never read back from the store: a wrong recipient, or a fault of the
            # encryption, would have lost the run.
            record["safe_to_free"] = False
        write_summary(records, self.summary)
        write_certificate_to(records, record)


def check_archive(
    inp: BinaryIO,
    packing: Packing,
    identity: Path | None,
    expected: list[Member],
    digest: tuple[int, str] | None,
    where: str,
) -> tuple[list[str], str]:
    """Read an archive to its end and compare it: (problems, how it was verified).

    How: "members" when it was decrypted (or is not encrypted), decompressed and every
    member compared with `expected`; "ciphertext" when there is no key here, so only the
    stored bytes' size and BLAKE3 were compared with `digest` (what was written).
    """
    if can_decrypt(packing, identity):
        how = "members"
        try:
            with unpacker(inp, packing, identity) as (stream, counted):
                problems = compare(expected, read_tar(stream))
        except SoftcopyError as exc:
            if "wrong key" in exc.problem or "identity" in exc.problem:
                raise SoftcopyError(where, "decrypt the archive", exc.problem) from exc
            # Damage, truncation, tampering: a difference found, not a failure to look.
            return [f"it cannot be read to its end: {exc}"], how
    else:
        counted = Counted()
        while block := inp.read(1 << 20):
            counted.add(block)
        problems, how = [], "ciphertext"
    if digest is not None and (counted.size, counted.blake3) != digest:
        problems.insert(
            0,
            f"the stored archive is {counted.size} bytes with BLAKE3 {counted.blake3}, but "
            f"{digest[0]} bytes with BLAKE3 {digest[1]} were written",
        )
    return problems, how


def problems_text(problems: list[str]) -> str:
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return "; ".join(problems[:5]) + more


class _Discard:
    """A stream that keeps nothing: tar of the source only for its members' digests."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def members_of_source(source: Path, run_name: str, keep: Keep | None = None) -> list[Member]:
    """What packing `source` now would record (its members, each file's BLAKE3)."""
    members, _ = write_tar(_Discard(), source, run_name, keep=keep)  # type: ignore[arg-type]
    return members


def _archive_exists(location: str, spec: SinkSpec | None) -> bool:
    if spec is None:
        return os.path.lexists(location)
    from ..sinks.archive_file import ObjectArchive

    archive = ObjectArchive(spec)
    try:
        return archive.exists()
    finally:
        archive.close()


def can_decrypt(packing: Packing, identity: Path | None) -> bool:
    """Whether this host can decrypt the archive: always when it is not encrypted; with
    --identity for age; with a secret key of a recipient in the keyring for gpg."""
    encryption = packing.encryption
    if encryption is None:
        return True
    if encryption.tool == "age":
        return identity is not None
    for key in encryption.recipients:
        done = subprocess.run(
            [*gpg_base_args(tool_path("gpg")), "--list-secret-keys", "--", key],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            return True
    return False
