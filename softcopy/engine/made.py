"""What a run made at a local destination before it copied anything, and taking it back.

A copy refused before its first file (no room: space.py) should leave the destination
as it was. Noted before the destination is locked: the folders missing then (the
destination, its records folder, parents the two needed). Taken back only as far as
they are still the folders this run made, and empty but for the records this run wrote:
every step relative to a directory opened without following links, every removal an
`unlink` of a named record or an `rmdir`, which never removes a folder that holds anything.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..state.records import LOCK, Records, records_dir
from ..state.runlog import LOG, OLDER

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# What a refused run writes in a records folder it made (and its own temporaries).
_OWN_RECORDS = (LOCK, "target.json", LOG, OLDER)


@dataclass
class Made:
    base: Path  # the nearest folder that existed: never removed
    parents: list[str] = field(default_factory=list)  # names below base, made by this run
    destination: bool = False  # the destination folder itself (the last of the chain)
    records: bool = False  # its records folder, beside it


def missing_before(dst: str) -> Made:
    """What does not exist yet of a destination's path and its records folder."""
    path = Path(dst)
    chain: list[str] = []
    base = path.parent
    while not os.path.lexists(base) and base != base.parent:
        chain.insert(0, base.name)
        base = base.parent
    return Made(
        base,
        chain,
        destination=not os.path.lexists(path),
        records=not os.path.lexists(records_dir(path)),
    )


def take_back(made: Made, dst: str, records: Records | None) -> list[str]:
    """Remove what `made` says this run made; returns the paths removed, deepest first.
    Anything else found there (another writer's file, a link) stays, and so does every
    folder above it."""
    removed: list[str] = []
    path = Path(dst)
    if made.records and records is not None and records.fd >= 0:
        for name in _OWN_RECORDS:
            records.unlink(name)
    try:
        parent = os.open(made.base, _DIR_FLAGS)
    except OSError:
        return removed
    opened = [parent]
    try:
        for name in made.parents:  # down the chain, never through a link put in its place
            try:
                opened.append(os.open(name, _DIR_FLAGS, dir_fd=opened[-1]))
            except OSError:
                return removed
        folder = opened[-1]
        if made.records and _rmdir(records_dir(path).name, folder):
            removed.append(str(records_dir(path)))
        if made.destination and _rmdir(path.name, folder):
            removed.append(str(path))
        for depth in range(len(made.parents), 0, -1):
            if not _rmdir(made.parents[depth - 1], opened[depth - 1]):
                break
            removed.append(str(made.base.joinpath(*made.parents[:depth])))
    finally:
        for fd in opened:
            os.close(fd)
    return removed


def _rmdir(name: str, dir_fd: int) -> bool:
    """An empty folder removed; False when it holds something, is gone or is not a folder
    (rmdir never follows a link at the name: ENOTDIR)."""
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
            raise
        return False
    return True
