"""Restore a packed copy: extract a tar stream into an existing folder, safely, verifying
every member against the manifest's as it goes.

Safety does not depend on the archive being ours: every path is checked before anything
is written (no absolute path, no `..`, no member under a link, no link out of the folder,
no hard link or device), every folder is opened from its parent's descriptor with
O_NOFOLLOW (nothing is written through a link even if the tree changes under us), a file
is written under a temporary name and renamed only once its BLAKE3 matches, and nothing
that exists is overwritten.

A link target may climb with leading `..` only as far as the folder, and may not hold a
`..` after a name: `a/../b` depends on whether `a` is a link, which only following it
would tell. With that rule every link points inside the folder whatever the others are.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from blake3 import blake3

from ..errors import SoftcopyError, from_os_error
from ..names import shown
from .check import compare, differences
from .members import READ_BLOCK, Member, tar_entries

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_DIRS = 256
_SHOWN_PROBLEMS = 10


def _refuse(member: Member, problem: str) -> SoftcopyError:
    return SoftcopyError(shown(member.path), "unpack", problem)


def _parts(member: Member) -> list[bytes]:
    raw = os.fsencode(member.path)
    if raw.startswith(b"/"):
        raise _refuse(member, "its path is absolute")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise _refuse(member, "its path holds `..`")
    if not parts:
        raise _refuse(member, "its path is empty")
    return parts


def _check_target(member: Member, parts: list[bytes]) -> None:
    target = os.fsencode(member.target)
    if not target:
        raise _refuse(member, "it is a link with an empty target")
    if target.startswith(b"/"):
        raise _refuse(member, f"it links to an absolute path ({shown(member.target)})")
    comps = [c for c in target.split(b"/") if c not in (b"", b".")]
    climb = 0
    while climb < len(comps) and comps[climb] == b"..":
        climb += 1
    if b".." in comps[climb:]:
        raise _refuse(member, f"its link target {shown(member.target)} holds `..` after a name")
    if climb > len(parts) - 1:
        raise _refuse(member, f"it links out of the folder ({shown(member.target)})")


class _Tree:
    """Folder descriptors under `into`, by their component tuple, each opened from its
    parent's with O_NOFOLLOW; missing folders are made (as tar does)."""

    def __init__(self, into: Path) -> None:
        self.into = into
        try:
            self.root = os.open(into, _DIR_FLAGS)
        except OSError as exc:
            raise from_os_error(exc, "unpack into", into) from None
        self.fds: dict[tuple[bytes, ...], int] = {}
        self.made: set[tuple[bytes, ...]] = set()

    def fd(self, parts: tuple[bytes, ...], member: Member) -> int:
        if not parts:
            return self.root
        found = self.fds.get(parts)
        if found is not None:
            return found
        parent = self.fd(parts[:-1], member)
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise from_os_error(exc, "unpack", self.shown(parts)) from None
            self.made.add(parts)
        except OSError as exc:
            if os.path.islink(os.path.join(os.fsencode(self.into), *parts)):
                raise _refuse(member, f"its folder {self.shown(parts)} is a link") from None
            raise _refuse(
                member, f"its folder {self.shown(parts)} cannot be opened ({exc.strerror})"
            ) from None
        if len(self.fds) >= _OPEN_DIRS:
            self.close_cached()
        self.fds[parts] = fd
        return fd

    def shown(self, parts: tuple[bytes, ...] | list[bytes]) -> str:
        return shown(os.fsdecode(os.path.join(os.fsencode(self.into), *parts)))

    def close_cached(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def close(self) -> None:
        self.close_cached()
        os.close(self.root)


def _exists(parent: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _write_file(
    tree: _Tree, parent: int, parts: list[bytes], member: Member, reader: BinaryIO
) -> str:
    tmp = b".softcopy-unpack-" + secrets.token_hex(8).encode()
    where = tree.shown(parts)
    try:
        fd = os.open(tmp, _NEW_FILE, 0o600, dir_fd=parent)
    except OSError as exc:
        raise from_os_error(exc, "unpack", where) from None
    hasher = blake3()
    renamed = False
    try:
        with os.fdopen(fd, "wb", buffering=0, closefd=False) as f:
            for block in iter(lambda: reader.read(READ_BLOCK), b""):
                hasher.update(block)
                f.write(block)
        os.fchmod(fd, member.mode)
        os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
        os.fsync(fd)
        digest = hasher.hexdigest()
        if member.blake3 and digest != member.blake3:
            raise _refuse(member, f"its BLAKE3 {digest} is not the manifest's {member.blake3}")
        if _exists(parent, parts[-1]):
            raise _refuse(member, f"{where} exists; unpack never overwrites")
        os.rename(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        renamed = True
        return digest
    except OSError as exc:
        raise from_os_error(exc, "unpack", where) from None
    finally:
        os.close(fd)
        if not renamed:
            try:
                os.unlink(tmp, dir_fd=parent)
            except OSError:
                pass


def unpack_stream(stream: BinaryIO, into: Path, expected: list[Member] | None) -> list[Member]:
    """Extract the tar read from `stream` into the existing folder `into`, verifying each
    member against `expected` (the manifest's) before and after writing it, and the whole
    list at the end. The members extracted are returned; a refusal or a mismatch is a
    SoftcopyError naming the member (what was extracted before it stays)."""
    want = {m.path: m for m in expected} if expected is not None else None
    tree = _Tree(into)
    found: list[Member] = []
    folders: list[tuple[tuple[bytes, ...], Member]] = []
    try:
        for member, reader in tar_entries(stream):
            parts = _parts(member)
            if want is not None:
                exp = want.get(member.path)
                if exp is None:
                    raise _refuse(member, "it is not in the manifest")
                problems = differences(exp, member)
                if problems:
                    raise _refuse(member, "; ".join(problems))
                member = replace(member, blake3=exp.blake3)
            if member.kind == "link":
                _check_target(member, parts)
            parent = tree.fd(tuple(parts[:-1]), member)
            name = parts[-1]
            if member.kind == "dir" and tuple(parts) in tree.made:
                folders.append((tuple(parts), member))
                found.append(member)
                continue
            if _exists(parent, name):
                raise _refuse(member, f"{tree.shown(parts)} exists; unpack never overwrites")
            try:
                if member.kind == "file":
                    assert reader is not None
                    digest = _write_file(tree, parent, parts, member, reader)
                    member = replace(member, blake3=digest)
                elif member.kind == "link":
                    os.symlink(os.fsencode(member.target), name, dir_fd=parent)
                    os.utime(name, ns=(member.mtime_ns,) * 2, dir_fd=parent, follow_symlinks=False)
                else:
                    # Writable by us until its contents are in; its own mode comes last.
                    os.mkdir(name, 0o700, dir_fd=parent)
                    tree.made.add(tuple(parts))
                    folders.append((tuple(parts), member))
            except OSError as exc:
                raise from_os_error(exc, "unpack", tree.shown(parts)) from None
            found.append(member)
    finally:
        try:
            _finish_folders(tree, folders)
        finally:
            tree.close()
    if expected is not None:
        problems = compare(expected, found)
        if problems:
            more = len(problems) - _SHOWN_PROBLEMS
            listed = "; ".join(problems[:_SHOWN_PROBLEMS]) + (
                f"; and {more} more" if more > 0 else ""
            )
            raise SoftcopyError(
                into, "unpack", f"the archive does not match its manifest: {listed}"
            )
    return found


def _finish_folders(tree: _Tree, folders: list[tuple[tuple[bytes, ...], Member]]) -> None:
    """Modes and mtimes of the folders made, deepest first: writing their contents is
    over, so neither is disturbed again."""
    tree.close_cached()
    for parts, member in sorted(folders, key=lambda f: len(f[0]), reverse=True):
        try:
            fd = tree.fd(parts, member)
            os.fchmod(fd, member.mode)
            os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
        except (OSError, SoftcopyError):
            continue  # a folder that could not be finished keeps what it has; reported above
