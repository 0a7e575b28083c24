"""A rerun's destination side, listed in a process of its own while the supervisor lists the
source.

A rerun lists the destination and asks the journal about every file there. Neither needs
the source, and both are per-file Python work that would otherwise follow the source's
listing on the same core: here they run beside it, on another. This process walks the
destination as the local sink's listings do (`iter_dir_names`: no link followed; names and
a flat array of versions, no key or Version per file), asks the journal about each large
directory as one range of its keys and about the rest a batch of keys at a time, through a
read-only connection, and writes what the match needs into an unlinked temporary file,
batch by batch: per directory its temporary files, links and whether it could be examined;
per batch the names, the destination's versions, the journal's records and digests, and
the size list's lines. The supervisor reads it once its own listing is done and decides
everything itself (engine/target.py); nothing here writes to either tree or to the journal.
If this process fails in any way, the supervisor lists the destination itself, as without it.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import select as io_select
import sqlite3
import subprocess
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO

from ..sources.scan import DirNames, iter_dir_names
from ..sources.select import Selection
from ..state.journal import copied_at, copied_in, open_reader
from ..verify.sizes import format_entries
from ..zarr.layout import METADATA_NAMES

log = logging.getLogger(__name__)

# Destination files per batch: one journal query round and one message each. The supervisor
# holds one batch's names and arrays at a time (about 100 B per file while it lives).
BATCH = 4096
_NONE = (-1, -1, -1, -1)  # no journal record: a version no file has
# A directory of this many files or more is looked up in the journal as a range of keys: below,
# a query of its own costs more than its keys in a batch's.
_RANGE_FROM = 64
_METADATA = tuple(METADATA_NAMES)  # as verify.compare.is_metadata


@dataclass
class Directory:
    """What one destination directory showed beyond its files (sent only when not empty)."""

    temporary: list[str]
    links: list[str]
    doubt: bool  # something the match cannot vouch for: a walk verifies instead


@dataclass
class Batch:
    """Files of whole directories, in listing order: `dirs` is (directory, names) and the
    arrays hold one row per name, in that order."""

    dirs: list[tuple[str, list[str]]]
    there: bytes  # int64 (n, 4): the destination's (size, mtime_ns, ino, ctime_ns)
    records: bytes  # int64 (n, 4): the source version the journal says was copied, or -1s
    digests: dict[int, str]  # row -> BLAKE3 the journal holds, where it holds one
    lines: bytes  # the size list's line of every file, in order (verify/sizes.py)
    metadata: list[int]  # rows of files that may be zarr metadata (matched.py reads them)


@dataclass
class End:
    markers: list[str]  # at the destination's root


# ---- the process ------------------------------------------------------------------------


def serve(
    root: str, journal: Path, target: int, select: Selection, out: BinaryIO, batch: int = BATCH
) -> None:
    """Walk `root` and write its Directory, Batch and End records to `out`."""
    db = open_reader(journal)
    wanted = select.wanted
    every = not (select.sentinels or select.include or select.exclude)  # as Selection.wanted
    pending = _Pending()
    markers: list[str] = []
    first = True

    def send(record: object) -> None:
        pickle.dump(record, out, protocol=pickle.HIGHEST_PROTOCOL)

    for rel, listing in iter_dir_names(root):
        if isinstance(listing, OSError):
            listing = DirNames(errors=[(rel, listing)])
        if first:  # the root, where names are keys: where markers are
            markers = [k for k in (*listing.names, *listing.links) if select.is_marker(k)]
            first = False
        if listing.temporary or listing.links or listing.errors:
            doubt = bool(listing.errors or listing.temporary)
            send(Directory(listing.temporary, listing.links, doubt))
        names, versions = listing.names, listing.versions
        if not (rel and every):  # at the root (markers), or with patterns: some may not be
            prefix = f"{rel}/" if rel else ""
            kept = [i for i, n in enumerate(names) if wanted(prefix + n)]
            if len(kept) < len(names):
                names = [names[i] for i in kept]
                versions = array(
                    "q", chain.from_iterable(versions[4 * i : 4 * i + 4] for i in kept)
                )
        if names:
            pending.add(db, target, rel, names, versions, not listing.dirs)
        if pending.count >= batch:
            send(pending.batch(db, target))
            pending = _Pending()
    if pending.count:
        send(pending.batch(db, target))
    send(End(markers))
    out.flush()


class _Pending:
    """One batch as it is gathered, directory by directory. A directory of many files and
    no subdirectory is looked up in the journal as one range of keys when it is listed;
    the rest, key by key, when the batch is sent."""

    def __init__(self) -> None:
        self.dirs: list[tuple[str, list[str]]] = []
        self.there = array("q")
        self.rows: list[tuple | None] = []  # the journal's, per file; None: not asked yet
        self.later: list[str] = []  # keys of the rows not asked yet, in order
        self.lines: list[str] = []
        self.metadata: list[int] = []
        self.count = 0

    def add(
        self,
        db: sqlite3.Connection,
        target: int,
        rel: str,
        names: list[str],
        versions: array,
        leaf: bool,
    ) -> None:
        prefix = f"{rel}/" if rel else ""
        self.dirs.append((rel, names))
        self.there.extend(versions)
        rows = copied_in(db, target, rel, names) if leaf and len(names) >= _RANGE_FROM else None
        if rows is None:
            self.rows += [None] * len(names)
            self.later += [prefix + n for n in names]
        else:
            self.rows += rows
        self.lines.append(format_entries(prefix, names, versions[0::4], versions[1::4]))
        # Whether any name is a metadata file's, at C speed: one search per metadata name.
        joined = "\n".join(names) + "\n"
        if any(m + "\n" in joined for m in _METADATA):
            self.metadata += [self.count + i for i, n in enumerate(names) if n.endswith(_METADATA)]
        self.count += len(names)

    def batch(self, db: sqlite3.Connection, target: int) -> Batch:
        rows = self.rows
        if self.later:
            asked = iter(copied_at(db, target, self.later))
            rows = [next(asked) if r is None else r for r in rows]
        records = array("q", chain.from_iterable([_NONE if r[0] is None else r[:4] for r in rows]))
        return Batch(
            self.dirs,
            self.there.tobytes(),
            records.tobytes(),
            {i: r[4] for i, r in enumerate(rows) if r[4]},
            "".join(self.lines).encode("utf-8", "surrogateescape"),
            self.metadata,
        )


def main() -> None:
    # Nothing here makes a cycle, and the collector's passes over every version made were
    # a sixth of a listing's time.
    gc.disable()
    root, journal, target, select, batch, nice = pickle.load(sys.stdin.buffer)
    if nice:
        os.nice(nice)  # started before the supervisor lowered its own (early_match.py)
    with os.fdopen(int(sys.argv[1]), "wb", buffering=1 << 20) as out:
        serve(root, journal, target, select, out, batch)


# ---- the supervisor's side ----------------------------------------------------------------


@dataclass
class DestinationSide:
    process: subprocess.Popen
    out: BinaryIO
    errors: BinaryIO

    def records(self, stopped: Callable[[], bool]) -> Iterator[Directory | Batch | End] | None:
        """The records, once the process has written all of them; None when it failed (or
        `stopped` said to give up on it): then the caller lists the destination itself."""
        # Its stdout ends when it does: woken at once by that, not at a poll's next tick
        # (a rerun's wall waits on this process more often than not).
        assert self.process.stdout is not None
        ends = self.process.stdout.fileno()
        while True:
            ready, _, _ = io_select.select([ends], [], [], 0.05)
            if ready and not os.read(ends, 1 << 16):
                break
            if not ready and stopped():
                self.close()
                return None
        code = self.process.wait()
        if code != 0:
            self.errors.seek(0)
            why = self.errors.read()[-2000:].decode("utf-8", "replace")
            log.debug("the destination's listing process failed (%s): %s", code, why)
            return None
        self.out.seek(0)
        return self._read()

    def _read(self) -> Iterator[Directory | Batch | End]:
        with self.out as f:
            while True:
                record = pickle.load(f)
                yield record
                if isinstance(record, End):
                    return

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.out.close()
        self.errors.close()


def start(
    root: str, journal: Path, target: int, select: Selection, batch: int = BATCH, nice: int = 0
) -> DestinationSide | None:
    """The destination's listing and journal lookups, begun in another process at `nice`
    more than this thread's; None when it cannot be started (the caller does both itself)."""
    # Both live as long as the DestinationSide, which closes them.
    out = tempfile.TemporaryFile()  # noqa: SIM115
    errors = tempfile.TemporaryFile()  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "softcopy.engine.prematch", str(out.fileno())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            pass_fds=[out.fileno()],
        )
    except OSError as exc:
        log.debug("cannot start the destination's listing process: %s", exc)
        out.close()
        errors.close()
        return None
    assert process.stdin is not None
    try:
        process.stdin.write(pickle.dumps((root, journal, target, select, batch, nice)))
        process.stdin.close()
    except OSError:
        pass  # it died already: records() says so
    return DestinationSide(process, out, errors)  # type: ignore[arg-type]


if __name__ == "__main__":
    # Through the module's own name, so what it pickles names classes the supervisor has.
    from softcopy.engine.prematch import main as serve_main

    serve_main()
