"""A rerun's destination side, listed in a process of its own while the supervisor lists the
source.

A rerun lists the destination and asks the journal about every file there. Neither needs
the source, and both are per-file Python work that would otherwise follow the source's
listing on the same core: here they run beside it, on another. This process walks the
destination as the local sink's listings do (`iter_dirs`: no link followed), asks the
journal a batch of files at a time through a read-only connection, and writes what the
match needs into an unlinked temporary file, batch by batch: per directory its temporary
files, links and whether it could be examined; per batch the names, the destination's
versions, the journal's records and digests, and the size list's lines. The supervisor
reads it once its own listing is done and decides everything itself (engine/target.py);
nothing here writes to either tree or to the journal. If this process fails in any way,
the supervisor lists the destination itself, as without it.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
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

from ..sources.scan import DirListing, iter_dirs
from ..sources.select import Selection
from ..state.journal import copied_at, open_reader
from ..verify.sizes import format_entry
from ..zarr.layout import METADATA_NAMES

log = logging.getLogger(__name__)

# Destination files per batch: one journal query round and one message each. The supervisor
# holds one batch's names and arrays at a time (about 100 B per file while it lives).
BATCH = 4096
_NONE = (-1, -1, -1, -1)  # no journal record: a version no file has
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
    dirs: list[tuple[str, list[str]]] = []
    keys: list[str] = []
    versions: list[tuple[int, ...]] = []
    markers: list[str] = []
    first = True

    def send(record: object) -> None:
        pickle.dump(record, out, protocol=pickle.HIGHEST_PROTOCOL)

    for rel, listing in iter_dirs(root):
        if isinstance(listing, OSError):
            listing = DirListing(errors=[(rel, listing)])
        if first:  # the root: where markers are
            markers = [k for k in (*listing.files, *listing.links) if select.is_marker(k)]
            first = False
        if listing.temporary or listing.links or listing.errors:
            doubt = bool(listing.errors or listing.temporary)
            send(Directory(listing.temporary, listing.links, doubt))
        files = [k for k in listing.files if wanted(k)]
        if files:
            cut = len(rel) + 1 if rel else 0
            dirs.append((rel, [k[cut:] for k in files]))
            keys += files
            get = listing.files.__getitem__
            versions += map(get, files)
        if len(keys) >= batch:
            send(_batch(db, target, dirs, keys, versions))
            dirs, keys, versions = [], [], []
    if keys:
        send(_batch(db, target, dirs, keys, versions))
    send(End(markers))
    out.flush()


def _batch(
    db: sqlite3.Connection, target: int, dirs: list, keys: list[str], versions: list
) -> Batch:
    rows = copied_at(db, target, keys)
    records = array("q", chain.from_iterable([_NONE if r[0] is None else r[:4] for r in rows]))
    lines = "".join([format_entry(k, v[0], v[1]) for k, v in zip(keys, versions, strict=True)])
    return Batch(
        dirs,
        array("q", chain.from_iterable(versions)).tobytes(),
        records.tobytes(),
        {i: r[4] for i, r in enumerate(rows) if r[4]},
        lines.encode("utf-8", "surrogateescape"),
        [i for i, k in enumerate(keys) if k.endswith(_METADATA)],
    )


def main() -> None:
    # Nothing here makes a cycle, and the collector's passes over every version made were
    # a sixth of a listing's time.
    gc.disable()
    root, journal, target, select, batch = pickle.load(sys.stdin.buffer)
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
        while True:
            try:
                code = self.process.wait(0.05)
                break
            except subprocess.TimeoutExpired:
                if stopped():
                    self.close()
                    return None
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
        self.out.close()
        self.errors.close()


def start(
    root: str, journal: Path, target: int, select: Selection, batch: int = BATCH
) -> DestinationSide | None:
    """The destination's listing and journal lookups, begun in another process; None when
    it cannot be started (the caller does both itself)."""
    # Both live as long as the DestinationSide, which closes them.
    out = tempfile.TemporaryFile()  # noqa: SIM115
    errors = tempfile.TemporaryFile()  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "softcopy.engine.prematch", str(out.fileno())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
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
        process.stdin.write(pickle.dumps((root, journal, target, select, batch)))
        process.stdin.close()
    except OSError:
        pass  # it died already: records() says so
    return DestinationSide(process, out, errors)  # type: ignore[arg-type]


if __name__ == "__main__":
    # Through the module's own name, so what it pickles names classes the supervisor has.
    from softcopy.engine.prematch import main as serve_main

    serve_main()
