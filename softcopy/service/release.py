"""Free the source of a finished copy, only when that is provably safe (`softcopy release`).

Every check is made and every failed one is a reason; the source is freed only when
there is none. Freeing is race-safe: the source directory is first renamed (atomically,
never onto anything) to a hidden sibling or into `--to DIR`, its versions are checked
once more there, so a writer that slipped a file in between is caught and the tree is
put back, and only then is the release recorded and the tree deleted. A release killed
at any moment is finished by the next one, which finds the renamed tree by its
(device, inode).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import socket
import sqlite3
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blake3 import blake3

from ..errors import ConfigError, SoftcopyError, from_os_error
from ..names import json_record, name_from_json, safe_text, shown
from ..sources.scan import Version, scan_tree, version_of, walk
from ..state import journal
from ..state.records import LINK_PROBLEM, LOCK, Records, lock_fd, open_directory, records_dir
from ..verify.compare import check_manifest
from ..verify.hashing import hash_files
from ..verify.manifest import CERTIFICATE, parse_lines
from .release_kinds import (
    COPY,
    destination_problems,
    kind_of,
    links_of,
    manifest_of,
    not_verified_where_stored,
    source_keys,
)

RELEASED = "released.json"
HIDDEN_SUFFIX = ".softcopy-release-"
EXAMPLES = 5  # names shown per reason; the count says how many there are


@dataclass
class Release:
    """What `release` found and did; `reasons` is empty exactly when it released (or would)."""

    destination: str
    source: str
    released: bool
    dry_run: bool
    reasons: list[str] = field(default_factory=list)
    moved_to: str | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    versions_checked_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return json_record(
            {
                "destination": self.destination,
                "source": self.source,
                "released": self.released,
                "dry_run": self.dry_run,
                "reasons": self.reasons,
                "moved_to": self.moved_to,
                "checks": self.checks,
                "versions_checked_by": self.versions_checked_by or None,
            }
        )


@dataclass
class Tree:
    """A source tree as it is now: regular files by version, links by target, and what
    was never copied (writer temporaries, fifos, sockets, devices, unreadable entries)."""

    files: dict[str, Version] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    temporary: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def release(
    destination: Path,
    source: Path | None = None,
    *,
    to: Path | None = None,
    rehash: bool = False,
    dry_run: bool = False,
    state_dir: Path | None = None,
) -> Release:
    """Check everything; free the source (delete it, or move it into `to`) only if all holds.

    Raises ConfigError for bad input (DEST not a copy, damaged records, a bad --to) and
    SoftcopyError when freeing fails midway; a refusal is a Release with reasons.
    """
    dest = _destination(destination)
    if to is not None:
        _check_to_dir(to)
    records = Records.open(records_dir(dest), create=False, check_owner=not dry_run)
    if records is None:
        raise ConfigError(
            records_dir(dest),
            "read records in",
            f"it does not exist: {dest} is not a copy softcopy made, or its records were removed",
        )
    try:
        job = _Job(dest, records, source, to, rehash, dry_run, state_dir)
        return job.run()
    finally:
        records.close()


def _destination(destination: Path) -> Path:
    archive = destination.is_file() and records_dir(destination).is_dir()
    if not (destination.is_dir() or archive):
        raise ConfigError(
            destination, "release the source of", "it is not a directory, nor an archive "
            "softcopy packed (ARCHIVE.softcopy beside it)",
        )  # fmt: skip
    # The copy's own name, as the certificate has it (a link to the copy names it too).
    return Path(os.path.realpath(destination))


def _check_to_dir(to: Path) -> None:
    try:
        st = os.lstat(to)
    except OSError as exc:
        raise ConfigError(to, "move the source into", os.strerror(exc.errno or 0)) from exc
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(to, "move the source into", LINK_PROBLEM)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(to, "move the source into", "it is not a directory")


class _Job:
    """One release: the checks, each adding its reasons, then the act."""

    def __init__(
        self,
        dest: Path,
        records: Records,
        source: Path | None,
        to: Path | None,
        rehash: bool,
        dry_run: bool,
        state_dir: Path | None,
    ) -> None:
        self.dest = dest
        self.records = records
        self.given_source = source
        self.to = Path(os.path.realpath(to)) if to is not None else None
        self.rehash = rehash
        self.dry_run = dry_run
        self.state_dir = state_dir if state_dir is not None else journal.default_state_dir()
        self.reasons: list[str] = []
        self.checks: dict[str, bool] = {}
        self.source = str(source) if source is not None else ""
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) the copy was made of
        self.digests: dict[str, str] | None = None  # the manifest, once proven intact
        self.tree: Tree | None = None  # the source as checked
        self.at: str | None = None  # where the source is now, if not at self.source (resume)
        self.by = ""
        self.finishing = False  # a recorded release killed while deleting: finish it
        self.kind = COPY  # or PACKED, COMPRESSED: what the certificate says the copy is
        self.cert: dict[str, Any] = {}

    # ---- the checks ---------------------------------------------------------------------

    def run(self) -> Release:
        self.checks["not_copying"] = self._not_copying()
        cert = self._certificate()
        target = _read_json(self.records, "target.json")
        self.checks["certificate"] = cert is not None
        if cert is None:
            for name in ("proven_end", "hashed_copy", "destination", "source"):
                self.checks[name] = False
            return self._result(False)
        self.kind, self.cert = kind_of(cert), cert
        self.checks["proven_end"] = self._proven_end(cert)
        self.checks["hashed_copy"] = self._hashed_copy(cert)
        self.checks["destination"] = self._destination_matches()
        self.checks["source"] = self._source_matches(cert, target or {})
        if self.to is not None:
            self.checks["to_same_filesystem"] = self._to_fits()
        if self.reasons and self.at and not self.finishing and not self.dry_run:
            # A killed release's hidden tree that no longer passes: the user's again.
            self._put_back(self.at)
        if self.reasons or self.dry_run:
            return self._result(False)
        return self._free()

    def _refuse(self, reason: str) -> bool:
        self.reasons.append(reason)
        return False

    def _not_copying(self) -> bool:
        """Holds the destination's locks for the whole release: no copy starts meanwhile."""
        ok = True
        if not self._lock():
            ok = self._refuse(
                f"a softcopy process is copying to {shown(str(self.dest))} right now (it holds "
                "the destination's lock); release it after that copy is done"
            )
        for t in journal.read_status(self.state_dir):
            if t["destination"] == str(self.dest) and t["running"]:
                ok = self._refuse(
                    f"the journal says softcopy process {t['pid']} is copying it right now "
                    f"(state {t['state']})"
                )
        return ok

    def _lock(self) -> bool:
        """The two locks a copy takes (records/lock and the directory itself); False if held."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        if not self.dry_run:
            flags |= os.O_CREAT
        try:
            fd = os.open(LOCK, flags, 0o644, dir_fd=self.records.fd)
        except FileNotFoundError:
            fd = -1  # a dry run creates nothing; no lock file, no copy has ever held it
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(self.records / LOCK, "lock", LINK_PROBLEM) from exc
            raise from_os_error(exc, "lock", self.records / LOCK) from exc
        free = True
        if fd >= 0:
            self.records.hold(fd)
            free = lock_fd(fd)
        if not self.dest.is_dir():
            return free  # an archive: its records' lock is the one a pack takes
        directory = open_directory(self.dest, "lock destination")
        self.records.hold(directory)
        return lock_fd(directory) and free

    def _certificate(self) -> dict[str, Any] | None:
        cert = _read_json(self.records, CERTIFICATE)
        where = self.records / CERTIFICATE
        if cert is None:
            self._refuse(
                f"{shown(str(self.dest))} has no certificate ({shown(str(where))}): the copy is "
                "not finished and verified"
            )
            return None
        names = {k: name_from_json(cert, v) for k, v in cert.items() if isinstance(v, str)}
        if not isinstance(names.get("source"), str) or not isinstance(
            names.get("destination"), str
        ):
            raise ConfigError(where, "read certificate", "it names no source or destination")
        cert.update(names)
        if cert["destination"] != str(self.dest):
            self._refuse(
                f"the certificate is for another destination, {shown(cert['destination'])}"
            )
            return None
        if not self.source:
            self.source = cert["source"]
        return cert

    def _proven_end(self, cert: dict[str, Any]) -> bool:
        end = cert.get("end") if isinstance(cert.get("end"), dict) else {}
        if end.get("proven") is True:
            return True
        rule = shown(str(end.get("rule") or cert.get("finished_because") or "unknown"))
        if end.get("trusted_by_user"):
            return self._refuse(
                f"its end was guessed ({rule}) and only trusted with --trust-guessed-end; "
                "release needs a proven end (the complete marker or a sentinel)"
            )
        return self._refuse(
            f"its end was guessed ({rule}), not proven by the complete marker or a sentinel; "
            "release needs a proven end"
        )

    def _hashed_copy(self, cert: dict[str, Any]) -> bool:
        manifest, field_ = manifest_of(self.kind)
        if cert.get("verification") != "blake3" or not isinstance(cert.get(field_), str):
            return self._refuse(
                "the copy was verified by sizes only, not by content: only copies made with "
                "--hash can be released (copy it again with --hash)"
            )
        why = not_verified_where_stored(self.kind, cert)
        if why:
            return self._refuse(why)
        where = self.records / manifest
        try:
            data = self.records.read(manifest)
        except FileNotFoundError:
            return self._refuse(f"its manifest {shown(str(where))} is missing")
        except OSError as exc:
            problem = LINK_PROBLEM if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            raise ConfigError(where, "read manifest", problem) from exc
        digest = blake3(data).hexdigest()
        if digest != cert[field_]:
            return self._refuse(
                f"its manifest {shown(str(where))} is not the certified one "
                f"(BLAKE3 {digest[:16]}, certified {cert[field_][:16]}): the "
                "records were changed since the copy"
            )
        try:
            digests = parse_lines(data.split(b"\n"), "line")
        except ValueError as exc:
            raise ConfigError(where, "read manifest", str(exc)) from exc
        self.digests = source_keys(self.kind, digests, cert["source"])
        return True

    def _destination_matches(self) -> bool:
        if self.digests is None:
            return False  # the reason is the manifest's (see _hashed_copy)
        if self.kind == COPY:
            problems = [str(f) for f in check_manifest(str(self.dest), self.digests).findings]
        else:
            try:
                problems = destination_problems(self.kind, self.dest, self.records, self.cert)
            except (OSError, SoftcopyError) as exc:
                problems = [f"its records cannot be read: {exc}"]
        if problems:
            against = "manifest" if self.kind == COPY else "records"
            return self._refuse(
                f"the destination, re-read from its device, does not match its {against}: "
                f"{_examples(problems, names=False)}"
            )
        return True

    def _source_matches(self, cert: dict[str, Any], target: dict[str, Any]) -> bool:
        copied = cert["source"]
        ok = self._same_source(copied, target)
        self.source = copied
        where = self._locate(copied)
        if where is None:
            return False
        self.tree = scan_source(where)
        if not self.finishing:
            ok = self._tree_is_copy(self.tree) and ok
        if self.finishing:
            return ok  # recorded as released: what is left is being deleted, not checked
        if self.digests is None:
            return False  # the reason is the manifest's (see _hashed_copy)
        return self._same_files(where, self.tree, self.digests) and ok

    def _same_source(self, copied: str, target: dict[str, Any]) -> bool:
        ok = True
        recorded = target.get("source")
        if isinstance(recorded, str) and name_from_json(target, recorded) != copied:
            ok = self._refuse(
                f"the records disagree on the source: certificate {shown(copied)}, "
                f"target.json {shown(name_from_json(target, recorded))}"
            )
        identity = target.get("source_identity", self.cert.get("source_identity"))
        if isinstance(identity, list) and len(identity) == 2:
            self.identity = (int(identity[0]), int(identity[1]))
        if self.given_source is not None:
            given = os.path.realpath(self.given_source)
            if given != copied:
                ok = self._refuse(
                    f"--source {shown(str(self.given_source))} is not the copied source "
                    f"{shown(copied)}"
                )
        return ok

    def _locate(self, copied: str) -> str | None:
        """Where the copied source is: its path, or (a release killed midway) the tree it
        was renamed to. None, with the reason, when it is not there to free."""
        try:
            st = os.lstat(copied)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            self._refuse(f"cannot examine the source: {os.strerror(exc.errno or 0)}")
            return None
        if st is None:
            return self._resume_or_gone(copied)
        if stat.S_ISLNK(st.st_mode):
            self._refuse(f"the source {shown(copied)} is now a symbolic link")
            return None
        if not stat.S_ISDIR(st.st_mode):
            self._refuse(f"the source {shown(copied)} is no longer a directory")
            return None
        if os.path.realpath(copied) != copied:
            self._refuse(f"a parent of {shown(copied)} is now a symbolic link")
            return None
        if self.identity is not None and (st.st_dev, st.st_ino) != self.identity:
            dev, ino = self.identity
            self._refuse(
                f"{shown(copied)} is not the directory that was copied (device:inode "
                f"{st.st_dev}:{st.st_ino}, copied {dev}:{ino}): it was made again since"
            )
            return None
        if self.identity is None:
            self.identity = (st.st_dev, st.st_ino)
        return copied

    def _resume_or_gone(self, copied: str) -> str | None:
        previous = _read_json(self.records, RELEASED)
        left = self._leftover(copied)
        if left is not None and previous is not None and previous.get("how") == "deleted":
            self.at = left
            self.finishing = True
            return left
        if left is not None and previous is None:
            self.at = left  # renamed, killed before the re-check: check it all again
            return left
        if previous is not None:
            when = shown(str(previous.get("when", "?")))
            self._refuse(f"the source was already released on {when} ({RELEASED} says so)")
        else:
            self._refuse(f"the source {shown(copied)} does not exist any more")
        return None

    def _leftover(self, copied: str) -> str | None:
        """A tree a killed release renamed the source to, known by its (device, inode)."""
        if self.identity is None:
            return None
        parent, name = os.path.split(copied)
        places = [(parent, re.compile(re.escape(f".{name}{HIDDEN_SUFFIX}") + r"\d+$"))]
        if self.to is not None:
            places.append((str(self.to), re.compile(re.escape(name) + r"(-\d+)?$")))
        for folder, pattern in places:
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for entry in names:
                path = os.path.join(folder, entry)
                if pattern.match(entry) and _identity(path) == self.identity:
                    return path
        return None

    def _tree_is_copy(self, tree: Tree) -> bool:
        ok = True
        if tree.errors:
            ok = self._refuse(
                f"parts of the source cannot be read: {_examples(tree.errors, names=False)}"
            )
        if tree.temporary:
            ok = self._refuse(
                "the source holds writer temporary files, never copied (a writer may still be "
                f"at work; remove them if none is): {_examples(tree.temporary)}"
            )
        if tree.special:
            ok = self._refuse(
                f"the source holds fifos, sockets or devices, never copied: "
                f"{_examples(tree.special)}"
            )
        return ok

    def _same_files(self, where: str, tree: Tree, digests: dict[str, str]) -> bool:
        ok = True
        extra = sorted(tree.files.keys() - digests.keys())
        lacking = sorted(digests.keys() - tree.files.keys())
        if extra:
            ok = self._refuse(f"the source has files the copy lacks: {_examples(extra)}")
        if lacking:
            ok = self._refuse(f"the source lacks files the copy has: {_examples(lacking)}")
        ok = self._same_links(tree) and ok
        # A packed or compressed copy's journal has what was written, not each source
        # file's version: its source is compared by content, always.
        copied: dict[str, tuple[Version, str]] = {}
        if self.kind == COPY:
            copied = _copied_versions(self.state_dir, str(self.dest), self.source)
        keys = sorted(tree.files.keys() & digests.keys())
        if copied:
            self.by = "journal"
            changed = [k for k in keys if k in copied and copied[k][0] != tree.files[k]]
            if changed:
                ok = self._refuse(
                    "source files changed since they were copied, by size, mtime, inode or "
                    f"ctime: {_examples(changed)}"
                )
            # Not journaled: the markers, copied after verification. Small; read them.
            to_hash = keys if self.rehash else [k for k in keys if k not in copied]
        elif self.rehash or self.kind != COPY:
            self.by = "content"
            to_hash = keys
        else:
            to_hash = []
            ok = self._refuse(
                f"the journal in {shown(str(self.state_dir))} has no record of this copy, so "
                "the source's versions cannot be checked against it: give --state-dir of the "
                "copy, or --rehash to compare the source's content with the manifest"
            )
        return self._same_content(where, to_hash, digests) and ok

    def _same_links(self, tree: Tree) -> bool:
        try:
            theirs = links_of(self.kind, self.records, self.source)
        except (OSError, SoftcopyError) as exc:
            return self._refuse(f"its records of links cannot be read: {exc}")
        if theirs is None:
            dst = scan_tree(str(self.dest))
            theirs = {k: os.readlink(os.path.join(self.dest, k)) for k in dst.links}
        differ = sorted(
            k for k in tree.links.keys() | theirs.keys() if tree.links.get(k) != theirs.get(k)
        )
        if differ:
            return self._refuse(
                f"the source's symbolic links differ from the copy's: {_examples(differ)}"
            )
        return True

    def _same_content(self, where: str, keys: list[str], digests: dict[str, str]) -> bool:
        differ = []
        for key, digest, exc in hash_files(where, keys):
            if digest is None:
                differ.append(f"{shown(key)} ({exc})")
            elif digest != digests[key]:
                differ.append(shown(key))
        if differ:
            return self._refuse(
                "source files differ in content from the manifest: "
                f"{_examples(differ, names=False)}"
            )
        return True

    def _to_fits(self) -> bool:
        assert self.to is not None
        to = str(self.to)
        inside = [p for p in (self.source, str(self.dest), str(self.records.path)) if p]
        for tree in inside:
            if to == tree or to.startswith(tree.rstrip("/") + "/"):
                raise ConfigError(self.to, "move the source into", f"it is inside {shown(tree)}")
        source_dev = _identity(self.at or self.source)
        if source_dev is not None and os.stat(to).st_dev != source_dev[0]:
            return self._refuse(
                f"--to {shown(to)} is on another filesystem than the source: moving there "
                "would be a copy, and release only renames"
            )
        return True

    # ---- the act ------------------------------------------------------------------------

    def _free(self) -> Release:
        assert self.tree is not None and self.identity is not None
        if self.finishing and self.at is not None:
            # Its checks passed and it was recorded before it was killed while deleting.
            _delete(self.at, self.dest)
            return self._result(True, None)
        where = self.at or self.source
        hidden = self.at is not None and HIDDEN_SUFFIX in os.path.basename(self.at)
        # A killed release's tree is where it belongs, unless it is hidden and --to is given.
        in_place = self.at is not None and (hidden == (self.to is None))
        moved = where if in_place else self._rename_away(where)
        if moved is None:
            return self._result(False)
        again = scan_source(moved)
        changes = _changes(self.tree, again)
        if _identity(moved) != self.identity:
            changes.insert(0, "the directory renamed is not the one checked")
        if changes:
            back = self._put_back(moved)
            self._refuse(
                "the source changed while it was being released "
                f"({_examples(changes, names=False)}); "
                f"{back}"
            )
            return self._result(False)
        how = "moved" if self.to is not None else "deleted"
        self._record(how, moved if how == "moved" else None)
        if how == "deleted":
            _delete(moved, self.dest)
            return self._result(True, None)
        return self._result(True, moved)

    def _rename_away(self, where: str) -> str | None:
        parent, name = os.path.split(self.source)
        if self.to is None:
            hidden = os.path.join(parent, f".{name}{HIDDEN_SUFFIX}{os.getpid()}")
            candidates = [hidden]
        else:
            base = os.path.join(self.to, name)
            candidates = [base] + [f"{base}-{n}" for n in range(1, 1000)]
        for candidate in candidates:
            try:
                rename_noreplace(where, candidate)
                return candidate
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    self._refuse(
                        f"--to {shown(str(self.to))} is on another mount than the source: "
                        "release only renames"
                    )
                    return None
                raise from_os_error(exc, f"rename the source to {candidate}", where) from exc
        self._refuse(f"no free name for the source in {shown(str(self.to))}")
        return None

    def _put_back(self, moved: str) -> str:
        try:
            rename_noreplace(moved, self.source)
        except OSError as exc:
            raise SoftcopyError(
                moved,
                f"put the source back at {self.source}",
                f"{os.strerror(exc.errno or 0)}; the source is whole at {moved}: move it back "
                "by hand",
            ) from exc
        return "it was put back and nothing was freed"

    def _record(self, how: str, to: str | None) -> None:
        record = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "source": self.source,
            "source_identity": list(self.identity or ()),
            "destination": str(self.dest),
            "how": how,
            "to": to,
            "checks": self.checks,
            "versions_checked_by": self.by,
        }
        data = json.dumps(json_record(record), indent=2) + "\n"
        self.records.write(RELEASED, data.encode())
        from ..state.runs import record_release

        record_release(self.state_dir, str(self.dest), record)

    def _result(self, released: bool, moved_to: str | None = None) -> Release:
        return Release(
            destination=str(self.dest),
            source=self.source,
            released=released,
            dry_run=self.dry_run,
            reasons=list(self.reasons),
            moved_to=moved_to,
            checks=dict(self.checks),
            versions_checked_by=self.by,
        )


# ---- pieces -----------------------------------------------------------------------------


def scan_source(root: str) -> Tree:
    """Every entry below root, links never followed; nothing unknown is passed over."""
    tree = Tree()

    def unreadable(key: str, exc: OSError) -> None:
        tree.errors.append(f"{shown(key or '.')}: {os.strerror(exc.errno or 0)}")

    try:
        for key, st, temporary in walk(root, on_error=unreadable):
            if temporary:
                tree.temporary.append(key)
            elif stat.S_ISREG(st.st_mode):  # type: ignore[union-attr]
                tree.files[key] = version_of(st)  # type: ignore[arg-type]
            elif stat.S_ISLNK(st.st_mode):  # type: ignore[union-attr]
                tree.links[key] = os.readlink(os.path.join(root, key))
            else:
                tree.special.append(key)
    except OSError as exc:
        unreadable("", exc)
    return tree


def _changes(before: Tree, after: Tree) -> list[str]:
    """What differs between two listings of the same tree, for a reason."""
    changes = [
        k
        for k in before.files.keys() | after.files.keys()
        if before.files.get(k) != after.files.get(k)
    ]
    changes += [
        k
        for k in before.links.keys() | after.links.keys()
        if before.links.get(k) != after.links.get(k)
    ]
    changes += after.temporary + after.special
    return [shown(k) for k in sorted(set(changes))] + after.errors


def _delete(path: str, dest: Path) -> None:
    # rmtree works from descriptors (avoids_symlink_attacks): links are removed, not followed.
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise ConfigError(
            exc.filename or path,
            "delete the released source",
            f"{os.strerror(exc.errno or 0)}; the copy at {dest} is verified: remove what is "
            f"left of {path} by hand, or run release again",
        ) from exc


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return st.st_dev, st.st_ino


def _read_json(records: Records, name: str) -> dict[str, Any] | None:
    """A JSON record; None when absent; ConfigError when it cannot be read or parsed."""
    where = records / name
    try:
        data = records.read(name)
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem = LINK_PROBLEM if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise ConfigError(where, "read records", problem) from exc
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise ConfigError(where, "read records", f"it is not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise ConfigError(where, "read records", "it is not a JSON object")
    return record


def _copied_versions(
    state_dir: Path, destination: str, source: str
) -> dict[str, tuple[Version, str]]:
    """The journal's record of this copy, WAL included: a service that keeps the journal
    open leaves its newest rows there, which an immutable read would not see."""
    path = state_dir / journal.JOURNAL
    if not path.exists() or path.stat().st_size == 0:
        return {}
    db, version = journal._inspect(path)
    try:
        if version is None:
            return {}
        row = db.execute(
            "SELECT id FROM targets WHERE destination = ? AND source = ?",
            (journal.to_db(destination), journal.to_db(source)),
        ).fetchone()
        return {} if row is None else journal._copied(db, row[0])
    except sqlite3.Error as exc:
        raise journal._translate(path, "read journal", exc) from exc
    finally:
        db.close()


def _examples(items: list[str], names: bool = True) -> str:
    """How many, and the first few; `names`: the items are names, else messages."""
    shown_items = [shown(i) if names else safe_text(i) for i in items[:EXAMPLES]]
    more = (
        f" and {len(items) - EXAMPLES} more ({len(items)} in all)" if len(items) > EXAMPLES else ""
    )
    return ", ".join(shown_items) + more


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)


def rename_noreplace(old: str, new: str) -> None:
    """rename that never replaces what is at `new` (a directory there, even empty, stays):
    FileExistsError instead."""
    call = getattr(_libc, "renameat2", None)
    if call is not None:
        if call(_AT_FDCWD, os.fsencode(old), _AT_FDCWD, os.fsencode(new), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), old, None, new)
    # No renameat2 here (old libc, or a filesystem without it): check, then rename. A
    # directory made in between is replaced only if empty (rename refuses a full one).
    if os.path.lexists(new):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), new)
    os.rename(old, new)
