"""What the source holds, what the destination holds, and what is in flight, per key.

Chunk files of a known array are kept as rows of numpy arrays indexed by chunk
index (about 50 bytes per expected chunk), so a ten-million-chunk layout costs
no Python object per chunk. Every other file (metadata, attributes, logs,
chunks beyond the current shape) lives in a small dict.

A version is (size, mtime_ns, ino) of the source file; -1 in every field means
absent. The destination column holds the *source* version that was copied
there, so "needs work" is simply `source != destination`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .layout import ArrayLayout
from .scan import Version

ABSENT = (-1, -1, -1)


def _as_row(version: Version | None) -> tuple[int, int, int]:
    return ABSENT if version is None else (version.size, version.mtime_ns, version.ino)


def _as_version(row: np.ndarray | tuple) -> Version | None:
    if row[0] < 0:
        return None
    return Version(int(row[0]), int(row[1]), int(row[2]))


@dataclass
class _ArrayState:
    layout: ArrayLayout
    prefix: str  # "" for the root array, else "path/"
    src: np.ndarray  # (n, 3) int64
    dst: np.ndarray  # (n, 3) int64
    inflight: np.ndarray  # (n,) bool
    seen: np.ndarray | None = None  # (n,) bool during a sweep
    # BLAKE3 of the copied version, (n, 32) uint8; allocated only when hashing
    digest: np.ndarray | None = None

    def set_digest(self, i: int, hexdigest: str) -> None:
        if self.digest is None:
            if not hexdigest:
                return
            self.digest = np.zeros((len(self.src), 32), dtype=np.uint8)
        self.digest[i] = np.frombuffer(bytes.fromhex(hexdigest), dtype=np.uint8) if hexdigest else 0

    def get_digest(self, i: int) -> str:
        if self.digest is None or not self.digest[i].any():
            return ""
        return self.digest[i].tobytes().hex()

    @classmethod
    def empty(cls, layout: ArrayLayout) -> _ArrayState:
        n = layout.n_files
        return cls(
            layout,
            f"{layout.path}/" if layout.path else "",
            np.full((n, 3), -1, dtype=np.int64),
            np.full((n, 3), -1, dtype=np.int64),
            np.zeros(n, dtype=bool),
        )


@dataclass
class _Other:
    src: tuple[int, int, int] = ABSENT
    dst: tuple[int, int, int] = ABSENT
    inflight: bool = False
    digest: str = ""


@dataclass
class Ledger:
    arrays: dict[str, _ArrayState] = field(default_factory=dict)
    other: dict[str, _Other] = field(default_factory=dict)
    # dirname -> (array, key prefix inside the array) or None; speeds up locate()
    _dir_cache: dict[str, tuple[_ArrayState, str, int | None] | None] = field(default_factory=dict)
    # keys waiting for a copier; filled lazily from the arrays when it runs dry
    _queue: list[str] = field(default_factory=list)
    # True when array rows may need work that the queue does not hold yet
    _stale: bool = False
    _seen_other: set[str] | None = None

    # ---- arrays -------------------------------------------------------------

    def set_layout(self, layout: ArrayLayout) -> bool:
        """Register or update one array; returns True when its file grid changed."""
        old = self.arrays.get(layout.path)
        if old is not None and old.layout.grid == layout.grid and old.layout == layout:
            return False
        new = _ArrayState.empty(layout)
        if old is not None:
            self._carry_over(old, new)
        self.arrays[layout.path] = new
        self._stale = True
        self._dir_cache.clear()
        self._adopt_others(new)
        return True

    def drop_array(self, path: str) -> None:
        """The array's metadata vanished: its files become plain files."""
        state = self.arrays.pop(path, None)
        if state is not None:
            self._move_out(state)
            self._dir_cache.clear()

    def _carry_over(self, old: _ArrayState, new: _ArrayState) -> None:
        """Move rows from an old grid to a new one rows that no longer fit go to the dict.

        A growing time axis is the common case, so this is vectorised: one
        unravel/ravel pass, no Python loop over chunks.
        """
        a, b = old.layout, new.layout
        same_keys = (a.prefix, a.separator, a.file_shape) == (b.prefix, b.separator, b.file_shape)
        touched = _touched(old)
        if not same_keys or len(a.grid) != len(b.grid):
            self._move_out(old, touched)
            return
        coords = np.unravel_index(touched, a.grid)
        fits = np.ones(len(touched), dtype=bool)
        for axis, extent in enumerate(b.grid):
            fits &= coords[axis] < extent
        target = np.ravel_multi_index(tuple(c[fits] for c in coords), b.grid)
        source = touched[fits]
        new.src[target] = old.src[source]
        new.dst[target] = old.dst[source]
        new.inflight[target] = old.inflight[source]
        if old.digest is not None:
            new.digest = np.zeros((len(new.src), 32), dtype=np.uint8)
            new.digest[target] = old.digest[source]
        self._move_out(old, touched[~fits])

    def _move_out(self, state: _ArrayState, touched: np.ndarray | None = None) -> None:
        """Carry known rows of an array into the dict (its grid no longer covers them)."""
        if touched is None:
            touched = _touched(state)
        for i, key in zip(touched, state.layout.keys(touched), strict=True):
            self.other[state.prefix + key] = _Other(
                tuple(int(x) for x in state.src[i]),
                tuple(int(x) for x in state.dst[i]),
                bool(state.inflight[i]),
                state.get_digest(i),
            )

    def _adopt_others(self, state: _ArrayState) -> None:
        """Files seen before their array's metadata move into the array's rows."""
        prefix = state.prefix
        for key in [k for k in self.other if k.startswith(prefix)]:
            index = state.layout.index(key[len(prefix) :])
            if index is None:
                continue
            entry = self.other.pop(key)
            state.src[index] = entry.src
            state.dst[index] = entry.dst
            state.inflight[index] = entry.inflight
            state.set_digest(index, entry.digest)

    def locate(self, key: str) -> tuple[_ArrayState, int] | None:
        slash = key.rfind("/")
        dirname = key[:slash] if slash >= 0 else ""
        try:
            hit = self._dir_cache[dirname]
        except KeyError:
            hit = self._find_array(dirname)
            self._dir_cache[dirname] = hit
        if hit is None:
            return None
        state, inner, base = hit
        name = key[slash + 1 :]
        if base is not None:  # "/" keys: only the last coordinate is new in this directory
            last = state.layout.last_coordinate(name)
            return None if last is None else (state, base + last)
        index = state.layout.index(inner + name)
        return None if index is None else (state, index)

    def _find_array(self, dirname: str) -> tuple[_ArrayState, str, int | None] | None:
        parts = dirname.split("/") if dirname else []
        # The deepest array wins: an array never contains another node.
        for depth in range(len(parts), -1, -1):
            path = "/".join(parts[:depth])
            state = self.arrays.get(path)
            if state is not None:
                rest = "/".join(parts[depth:])
                inner = f"{rest}/" if rest else ""
                return state, inner, state.layout.directory_base(inner)
        return None

    # ---- observations ---------------------------------------------------------

    def observe(self, key: str, version: Version | None) -> bool:
        """Record the source's current version of key; True when it changed."""
        row = _as_row(version)
        hit = self.locate(key)
        if hit is not None:
            state, i = hit
            if state.seen is not None:
                state.seen[i] = True
            if tuple(state.src[i]) == row:
                return False
            state.src[i] = row
            self._stale = True
            return True
        if self._seen_other is not None:
            self._seen_other.add(key)
        entry = self.other.get(key)
        if entry is None:
            if version is None:
                return False
            entry = self.other[key] = _Other()
        if entry.src == row:
            return False
        entry.src = row
        if not entry.inflight:
            self._queue.append(key)
        return True

    def observe_many(self, items: Iterable[tuple[str, Version]]) -> list[str]:
        """observe() for a whole listing at once; returns the keys that changed.

        A scan of a million files must not pay numpy's per-element overhead a
        million times: keys are located one by one (string work), then compared
        and stored per array in one vectorised step.
        """
        groups: dict[int, tuple[_ArrayState, list[int], list[Version], list[str]]] = {}
        changed: list[str] = []
        for key, version in items:
            hit = self.locate(key)
            if hit is None:
                if self.observe(key, version):
                    changed.append(key)
                continue
            state, index = hit
            group = groups.get(id(state))
            if group is None:
                group = groups[id(state)] = (state, [], [], [])
            group[1].append(index)
            group[2].append(version)
            group[3].append(key)
        for state, indices, versions, keys in groups.values():
            idx = np.fromiter(indices, dtype=np.int64, count=len(indices))
            flat = itertools.chain.from_iterable(versions)  # far cheaper than np.array(tuples)
            rows = np.fromiter(flat, dtype=np.int64, count=3 * len(versions)).reshape(-1, 3)
            if state.seen is not None:
                state.seen[idx] = True
            differs = (state.src[idx] != rows).any(axis=1)
            if differs.any():
                state.src[idx[differs]] = rows[differs]
                self._stale = True
                changed.extend(k for k, d in zip(keys, differs.tolist(), strict=True) if d)
        return changed

    def set_copied(self, key: str, version: Version | None, digest: str = "") -> None:
        """The destination now holds `version` of key (None: deleted there), with its BLAKE3."""
        row = _as_row(version)
        hit = self.locate(key)
        if hit is not None:
            state, i = hit
            state.dst[i] = row
            state.inflight[i] = False
            state.set_digest(i, digest)
            self._stale = True
            return
        entry = self.other.get(key)
        if entry is None:
            if version is None:
                return
            entry = self.other[key] = _Other()
        entry.dst = row
        entry.inflight = False
        entry.digest = digest
        if entry.src == ABSENT and entry.dst == ABSENT:
            del self.other[key]

    def begin_sweep(self) -> None:
        """Start a full scan: every key observed from now on counts as seen."""
        for state in self.arrays.values():
            state.seen = np.zeros(len(state.src), dtype=bool)
        self._seen_other = set()

    def end_sweep(self) -> list[str]:
        """Keys the source held before the scan that the scan did not see (maybe deleted)."""
        gone: list[str] = []
        for state in self.arrays.values():
            if state.seen is None:  # registered during the scan: every row was observed in it
                continue
            missing = np.flatnonzero((state.src[:, 0] >= 0) & ~state.seen)
            gone.extend(state.prefix + k for k in state.layout.keys(missing))
            state.seen = None
        seen = self._seen_other or set()
        gone.extend(k for k, e in self.other.items() if e.src != ABSENT and k not in seen)
        self._seen_other = None
        return gone

    def requeue(self, key: str) -> None:
        """Offer a key again (after a retry delay, a lost batch or a changed source)."""
        self._queue.append(key)
        self._stale = True

    def set_inflight(self, key: str, inflight: bool) -> None:
        hit = self.locate(key)
        if hit is not None:
            state, i = hit
            state.inflight[i] = inflight
        elif key in self.other:
            self.other[key].inflight = inflight

    def source(self, key: str) -> Version | None:
        hit = self.locate(key)
        if hit is not None:
            return _as_version(hit[0].src[hit[1]])
        entry = self.other.get(key)
        return None if entry is None else _as_version(entry.src)

    def copied(self, key: str) -> Version | None:
        hit = self.locate(key)
        if hit is not None:
            return _as_version(hit[0].dst[hit[1]])
        entry = self.other.get(key)
        return None if entry is None else _as_version(entry.dst)

    def digests(self) -> dict[str, tuple[Version, str]]:
        """BLAKE3 taken while copying, by the source version it belongs to."""
        known: dict[str, tuple[Version, str]] = {}
        for key, e in self.other.items():
            version = _as_version(e.dst)
            if e.digest and version is not None:
                known[key] = (version, e.digest)
        for state in self.arrays.values():
            if state.digest is None:
                continue
            rows = np.flatnonzero(state.digest.any(axis=1) & (state.dst[:, 0] >= 0))
            for i, key in zip(rows, state.layout.keys(rows), strict=True):
                version = _as_version(state.dst[i])
                assert version is not None
                known[state.prefix + key] = (version, state.get_digest(i))
        return known

    def needs_work(self, key: str) -> bool:
        hit = self.locate(key)
        if hit is not None:
            state, i = hit
            return not state.inflight[i] and bool((state.src[i] != state.dst[i]).any())
        entry = self.other.get(key)
        return entry is not None and not entry.inflight and entry.src != entry.dst

    def take(self, limit: int, skip: set[str] | None = None) -> list[str]:
        """Up to `limit` keys that need work and are not in flight; marks them in flight.

        Files outside any chunk grid (metadata, attributes) come first, so the
        destination is readable while chunks follow.
        """
        taken: list[str] = []
        refilled = False
        while len(taken) < limit:
            if not self._queue:
                if refilled or not self._stale:
                    break
                self._refill()
                refilled = True
                continue
            key = self._queue.pop()
            if (skip is None or key not in skip) and self.needs_work(key):
                self.set_inflight(key, True)
                taken.append(key)
        return taken

    def _refill(self, most: int = 20_000) -> None:
        # Bounded, so a million pending chunks never become a million strings at once.
        seen = set(self._queue)
        chunks: list[str] = []
        for state in self.arrays.values():
            need = (state.src != state.dst).any(axis=1) & ~state.inflight
            indices = np.flatnonzero(need)[: most - len(chunks)]
            chunks.extend(state.prefix + k for k in state.layout.keys(indices))
            if len(chunks) >= most:
                break
        # A full refill may have left rows behind; an empty queue must look again.
        self._stale = len(chunks) >= most
        # list.pop() takes from the end: put chunks first so the dict's files go out first,
        # and chunks in ascending order of index (the order writers fill the grid).
        chunks.reverse()
        others = [
            k for k, e in self.other.items() if e.src != e.dst and not e.inflight and k not in seen
        ]
        self._queue = [k for k in chunks if k not in seen] + self._queue + others

    def pending_count(self) -> int:
        n = sum(1 for e in self.other.values() if e.src != e.dst)
        for state in self.arrays.values():
            n += int((state.src != state.dst).any(axis=1).sum())
        return n

    def pending_totals(self, block: int = 1) -> tuple[int, int]:
        """(files, bytes at their current source size) that still need work.

        With `block`, each file's size is rounded up to whole blocks: what it
        will take on a filesystem that allocates in blocks of that size.
        """
        files = nbytes = 0
        for e in self.other.values():
            if e.src != e.dst:
                files += 1
                nbytes += -(-max(e.src[0], 0) // block) * block
        for state in self.arrays.values():
            need = (state.src != state.dst).any(axis=1)
            files += int(need.sum())
            sizes = np.clip(state.src[need, 0], 0, None)
            nbytes += int((-(-sizes // block) * block).sum())
        return files, nbytes

    # ---- completeness --------------------------------------------------------------

    def expected_counts(self) -> tuple[int, int]:
        """(chunk files present at the source, chunk files the layouts allow)."""
        present = sum(int((s.src[:, 0] >= 0).sum()) for s in self.arrays.values())
        expected = sum(s.layout.n_files for s in self.arrays.values())
        return present, expected

    def all_expected_present(self) -> bool:
        if not self.arrays:
            return False
        return all(bool((s.src[:, 0] >= 0).all()) for s in self.arrays.values())

    def memory_bytes(self) -> int:
        return sum(
            s.src.nbytes
            + s.dst.nbytes
            + s.inflight.nbytes
            + (0 if s.digest is None else s.digest.nbytes)
            for s in self.arrays.values()
        )


def _touched(state: _ArrayState) -> np.ndarray:
    return np.flatnonzero((state.src[:, 0] >= 0) | (state.dst[:, 0] >= 0) | state.inflight)
