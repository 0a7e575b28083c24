"""What the source holds, what the destination holds, and what is in flight, per key.

Chunk files of a known array are numpy rows, so a million files cost no Python object each.
A row holds the source's version (4 x int64) and one byte of flags: whether the destination
holds that same version, another one (kept in a small per-array dict until it is replaced:
only keys the source moved on from since their copy), or none; in flight; seen by the
current sweep. While most of an array's grid exists, rows are indexed by chunk index
(dense, 33 bytes per grid cell); otherwise only the files that exist have rows, sorted by
chunk index (sparse, 41 bytes per file), so a 10^12-cell mosaic canvas with a thousand
tiles costs a thousand rows. Every other file (metadata, attributes, logs, chunks beyond the
current shape) lives in a small dict.

A version is (size, mtime_ns, ino, ctime_ns) of the source file; -1 in every field means
absent. What the destination holds is always the *source* version that was copied there, so
"needs work" is "the destination does not hold the source's current version".
"""

from __future__ import annotations

import itertools
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..sources.scan import Version
from ..zarr.layout import ArrayLayout

ABSENT = (-1, -1, -1, -1)
_FIELDS = len(ABSENT)

# Row flags. Neither _SAME nor _OTHER: the destination holds nothing.
_SAME = np.uint8(1)  # the destination holds the source's current version (never ABSENT)
_OTHER = np.uint8(2)  # the destination holds `_ArrayState.other_dst[index]`
_INFLIGHT = np.uint8(4)
_SEEN = np.uint8(8)  # observed since begin_sweep()
# Copied by this run at least once: `files_copied` counts files, and a chunk the writer
# rewrote mid-copy is copied again. A bit of the byte every row has, not a set of keys.
_RUN_COPIED = np.uint8(16)
_COPIED = _SAME | _OTHER
_LIVE = _SAME | _OTHER | _INFLIGHT

# Grids this small are always dense: a few kB, and no search per key.
_DENSE_CELLS = 64
# Sparse rows are appended unsorted (found through a dict) and merged into the sorted rows
# when there are more than this many, or more than 1/64 of the rows: a merge moves every row,
# so this bounds its cost to 64 row moves per new file, and the dict to 2 bytes per row.
_TAIL_ROWS = 64
# A lookup of more keys than this merges the tail first: one merge beats a dict lookup per key.
_LOOKUP_MERGE = 1000
# Names whose last coordinate one listing remembers (the names of one directory of chunks).
_COORDINATE_MEMO = 65536
# Names the ledger remembers the coordinate of: about 100 B each, kept for the whole run.
_NAMES = 4096
# Keys a rerun's bulk trust gathers per array before one vectorised step.
_TRUST_BATCH = 8192
# Rows one step of an in-place merge or densify copies aside (32 B each for the versions).
_BLOCK = 4096
# Rows one step of a pass over every row looks at: its temporaries are a span's, not the
# array's (a mask's indices and sizes alone were 24 B per row of ten million at once).
_SPAN = 16384


def _as_row(version: Version | None) -> tuple[int, ...]:
    return ABSENT if version is None else tuple(version)


def _as_version(row: np.ndarray | tuple) -> Version | None:
    if row[0] < 0:
        return None
    return Version(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def _dense_pays(cells: int, files: int) -> bool:
    # 33 bytes per cell against 41 per file: dense once about 4/5 of the grid exists.
    return cells <= _DENSE_CELLS or 4 * cells <= 5 * files


@dataclass
class _ArrayState:
    """The rows of one array's chunk files: dense (row = chunk index) or sparse (`ids`)."""

    layout: ArrayLayout
    prefix: str  # "" for the root array, else "path/"
    src: np.ndarray  # (capacity, 4) int64; rows [0, size) are in use
    flags: np.ndarray  # (capacity,) uint8
    ids: np.ndarray | None  # sparse: chunk index of each row; None when dense
    size: int
    ordered: int  # sparse: rows [0, ordered) are sorted by id; the rest are in `tail`
    tail: dict[int, int] = field(default_factory=dict)  # id -> row, for rows >= ordered
    other_dst: dict[int, tuple[int, ...]] = field(default_factory=dict)  # index -> version
    # BLAKE3 of the copied version, (capacity, 32) uint8; allocated only when hashing
    digest: np.ndarray | None = None
    sweeping: bool = False

    @classmethod
    def build(
        cls,
        layout: ArrayLayout,
        ids: np.ndarray,
        src: np.ndarray,
        flags: np.ndarray,
        digest: np.ndarray | None,
        other_dst: dict[int, tuple[int, ...]],
    ) -> _ArrayState:
        """A state holding rows `ids` (distinct chunk indices of `layout`), dense when the
        grid is small or mostly present, sparse otherwise."""
        n = layout.n_files
        prefix = f"{layout.path}/" if layout.path else ""
        if _dense_pays(n, len(ids)):
            dense_src = np.full((n, _FIELDS), -1, dtype=np.int64)
            dense_flags = np.zeros(n, dtype=np.uint8)
            dense_src[ids] = src
            dense_flags[ids] = flags
            dense_digest = None
            if digest is not None:
                dense_digest = np.zeros((n, 32), dtype=np.uint8)
                dense_digest[ids] = digest
            return cls(
                layout, prefix, dense_src, dense_flags, None, n, n, {}, other_dst, dense_digest
            )
        order = np.argsort(ids, kind="stable")
        return cls(
            layout,
            prefix,
            np.ascontiguousarray(src[order]),
            np.ascontiguousarray(flags[order]),
            np.ascontiguousarray(ids[order], dtype=np.int64),
            len(ids),
            len(ids),
            {},
            other_dst,
            None if digest is None else np.ascontiguousarray(digest[order]),
        )

    # ---- finding rows -------------------------------------------------------------------

    def find(self, index: int) -> int | None:
        """The row of chunk `index`, or None when it has none (sparse only)."""
        if self.ids is None:
            return index
        # The array's own method: numpy's function adds 1-2 µs of dispatch to each of the
        # five or six finds a live chunk's outcome makes.
        p = int(self.ids[: self.ordered].searchsorted(index))
        if p < self.ordered and self.ids[p] == index:
            return p
        return self.tail.get(index)

    def find_many(self, indices: np.ndarray) -> np.ndarray:
        """The rows of chunk `indices`, -1 for those that have none; nothing is created."""
        return indices if self.ids is None else self._lookup(indices)

    def row(self, index: int) -> int:
        """The row of chunk `index`, created (absent, nothing copied) when missing."""
        r = self.find(index)
        if r is None:
            self._add(np.array([index], dtype=np.int64))
            r = self.find(index)
            assert r is not None
        return r

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The rows of distinct chunk `indices`, created where missing."""
        if self.ids is None:
            return indices
        found = self._lookup(indices)
        missing = found < 0
        if missing.any():
            self._add(indices[missing])
            if self.ids is None:  # became dense
                return indices
            found = self._lookup(indices)
        return found

    def _lookup(self, indices: np.ndarray) -> np.ndarray:
        assert self.ids is not None
        if self.tail and len(indices) > _LOOKUP_MERGE:
            self._flush()
        head = self.ids[: self.ordered]
        p = np.searchsorted(head, indices)
        hit = p < self.ordered
        hit[hit] = head[p[hit]] == indices[hit]
        out = np.where(hit, p, -1)
        if self.tail:
            for k in np.flatnonzero(~hit).tolist():
                out[k] = self.tail.get(int(indices[k]), -1)
        return out

    def _add(self, new: np.ndarray) -> None:
        """Rows for chunk indices that have none yet (absent, nothing copied)."""
        assert self.ids is not None
        new = np.unique(new)
        start, k = self.size, len(new)
        self._reserve(k)
        self.ids[start : start + k] = new
        self.src[start : start + k] = -1
        self.flags[start : start + k] = 0
        if self.digest is not None:
            self.digest[start : start + k] = 0
        self.size += k
        if _dense_pays(self.layout.n_files, self.size):
            self._densify()
        elif self.size - self.ordered > max(_TAIL_ROWS, self.ordered // 64):
            self._flush()
        else:
            self.tail.update(zip(new.tolist(), range(start, start + k), strict=True))

    def _reserve(self, k: int) -> None:
        assert self.ids is not None
        capacity = len(self.ids)
        if self.size + k <= capacity:
            return
        # Grow by a quarter: amortised appends, and at most 25% of the rows allocated unused;
        # never past the rows at which the array turns dense (and grows to its grid anyway).
        most = -(-4 * self.layout.n_files // 5)
        self._fit(max(self.size + k, min(capacity + capacity // 4 + 16, most)))

    def _fit(self, capacity: int) -> None:
        """Give every row array `capacity` rows, keeping rows [0, size).

        In place where numpy can (a realloc: the kernel moves a large block's pages, so the
        old and the new rows never live side by side), else by a copy.
        """
        for name in ("src", "flags", "ids", "digest"):
            a = getattr(self, name)
            if a is None or len(a) == capacity:
                continue
            setattr(self, name, None)  # our own reference would make numpy refuse
            try:
                a.resize((capacity, *a.shape[1:]), refcheck=True)
            except ValueError:  # a view of it, or a view itself: copy
                a = _resized(a, min(self.size, capacity), capacity)
            setattr(self, name, a)

    def _flush(self, compact: bool = False) -> None:
        """Merge the tail into the sorted rows; with `compact`, drop rows that hold nothing.

        Never compact while a caller holds rows it found or made: an empty row may be the one
        it is about to fill.
        """
        assert self.ids is not None
        if not compact:
            self._merge()
            return
        n = self.size
        # Stable argsort is a timsort here: a sorted run and a short tail merge in linear time.
        order = np.argsort(self.ids[:n], kind="stable")
        keep = (self.src[:n, 0] >= 0) | ((self.flags[:n] & _LIVE) != 0)
        order = order[keep[order]]
        self.ids = self.ids[order]
        self.src = self.src[order]
        self.flags = self.flags[order]
        if self.digest is not None:
            self.digest = self.digest[order]
        self.size = self.ordered = len(order)
        self.tail = {}

    def _arrays(self) -> list[np.ndarray]:
        return [a for a in (self.ids, self.src, self.flags, self.digest) if a is not None]

    def _merge(self) -> None:
        """Merge the tail into the sorted rows in place.

        Only the tail and one block of rows are ever copied aside: a merge that permuted
        whole arrays into new ones would hold every row twice for a moment, and that moment
        was most of a large listing's peak memory. Sorted rows only move up (by the number
        of tail rows below them), so the blocks go from the top down and never overwrite a
        row still to be moved.
        """
        assert self.ids is not None
        o, n = self.ordered, self.size
        if n > o:
            arrays = self._arrays()
            ids = self.ids
            order = np.argsort(ids[o:n], kind="stable")
            saved = [a[o:n][order] for a in arrays]
            tail = saved[0]
            into = np.searchsorted(ids[:o], tail) + np.arange(len(tail))
            for top in range(o, 0, -_BLOCK):
                low = max(0, top - _BLOCK)
                shift = np.searchsorted(tail, ids[low:top])
                if not shift[-1]:
                    break  # no tail row sorts below these rows: they and all below stay
                moved = np.arange(low, top) + shift
                for a in arrays:
                    a[moved] = a[low:top].copy()
            for a, rows in zip(arrays, saved, strict=True):
                a[into] = rows
        self.ordered = n
        self.tail = {}

    def compact(self) -> None:
        """Drop the rows of files deleted at both ends, once they are an eighth of the rows."""
        if self.ids is None:
            return
        dead = self.size - len(self.live())
        if dead and 8 * dead >= self.size:
            self._flush(compact=True)

    def _densify(self) -> None:
        """Index the rows by chunk index instead of holding the indices, in place.

        The arrays grow to one row per grid cell (a realloc, see `_fit`), and each row moves
        up to its chunk index: sorted distinct indices are never below their row, so from
        the top down, a block at a time, no row is overwritten before it moved. Building new
        dense arrays beside the sparse ones would hold both, about 74 B per grid cell.
        """
        self._merge()
        ids = self.ids
        assert ids is not None
        n, cells = self.size, self.layout.n_files
        self.ids = None
        self._fit(cells)
        arrays = self._arrays()
        for top in range(n, 0, -_BLOCK):
            low = max(0, top - _BLOCK)
            moved = ids[low:top]
            if moved[-1] == top - 1:
                break  # indices [0, top) all present: every row below is in its place
            for a in arrays:
                a[moved] = a[low:top].copy()
        hole = np.ones(cells, dtype=bool)
        hole[ids[:n]] = False
        del ids
        self.src[hole] = -1
        self.flags[hole] = 0
        if self.digest is not None:
            self.digest[hole] = 0
        self.size = self.ordered = cells
        self.tail = {}

    # ---- rows -------------------------------------------------------------------------------

    def index_of(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.ids is None else self.ids[rows]

    def live(self) -> np.ndarray:
        """Rows that hold anything: a source version, a copied version or a job."""
        n = self.size
        return np.flatnonzero((self.src[:n, 0] >= 0) | ((self.flags[:n] & _LIVE) != 0))

    def spans(self) -> Iterator[slice]:
        """The rows in spans of `_SPAN`, for passes over every row."""
        for start in range(0, self.size, _SPAN):
            yield slice(start, min(start + _SPAN, self.size))

    def pending(self, rows: slice, with_inflight: bool = True) -> np.ndarray:
        """Mask of `rows` whose destination does not hold the source's current version."""
        flags = self.flags[rows]
        need = ((flags & _SAME) == 0) & ((self.src[rows, 0] >= 0) | ((flags & _OTHER) != 0))
        if not with_inflight:
            need &= (flags & _INFLIGHT) == 0
        return need

    def set_source(self, r: int, index: int, row: tuple[int, ...]) -> None:
        flags = self.flags[r]
        if flags & _SAME:
            # The destination keeps the version the source just moved away from.
            self.other_dst[index] = tuple(self.src[r].tolist())
            flags = (flags & ~_SAME) | _OTHER
        elif flags & _OTHER and self.other_dst.get(index) == row:
            del self.other_dst[index]
            flags = (flags & ~_OTHER) | _SAME
        self.src[r] = row
        self.flags[r] = flags

    def set_sources(self, rows: np.ndarray, indices: np.ndarray, new: np.ndarray) -> None:
        """set_source() for many rows whose versions differ from `new`, vectorised except for
        keys copied before (each of which needs a new copy anyway)."""
        flags = self.flags[rows]
        copied = np.flatnonzero((flags & _COPIED) != 0)
        if copied.size:
            old = self.src[rows[copied]].tolist()
            fresh = new[copied].tolist()
            for k, i, before, after in zip(
                copied.tolist(), indices[copied].tolist(), old, fresh, strict=True
            ):
                if flags[k] & _SAME:
                    self.other_dst[i] = tuple(before)
                    flags[k] = (flags[k] & ~_SAME) | _OTHER
                elif self.other_dst.get(i) == tuple(after):
                    del self.other_dst[i]
                    flags[k] = (flags[k] & ~_OTHER) | _SAME
        self.src[rows] = new
        self.flags[rows] = flags

    def set_copied(self, r: int, index: int, row: tuple[int, ...]) -> None:
        flags = self.flags[r] & ~(_COPIED | _INFLIGHT)
        self.other_dst.pop(index, None)
        if row == ABSENT:
            pass
        elif row == tuple(self.src[r].tolist()):
            flags |= _SAME
        else:
            flags |= _OTHER
            self.other_dst[index] = row
        self.flags[r] = flags

    def copied_row(self, r: int, index: int) -> tuple[int, ...]:
        flags = self.flags[r]
        if flags & _SAME:
            return tuple(self.src[r].tolist())
        if flags & _OTHER:
            return self.other_dst[index]
        return ABSENT

    def set_digest(self, r: int, hexdigest: str) -> None:
        if self.digest is None:
            if not hexdigest:
                return
            self.digest = np.zeros((len(self.src), 32), dtype=np.uint8)
        self.digest[r] = np.frombuffer(bytes.fromhex(hexdigest), dtype=np.uint8) if hexdigest else 0

    def get_digest(self, r: int) -> str:
        if self.digest is None or not self.digest[r].any():
            return ""
        return self.digest[r].tobytes().hex()

    def memory_bytes(self) -> int:
        arrays = (self.src, self.flags, self.ids, self.digest)
        total = sum(a.nbytes for a in arrays if a is not None)
        # The dicts' own tables (their int keys are small or shared by the rows' values).
        return total + sys.getsizeof(self.tail) + sys.getsizeof(self.other_dst)


def _resized(a: np.ndarray, used: int, capacity: int) -> np.ndarray:
    out = np.empty((capacity, *a.shape[1:]), dtype=a.dtype)
    out[:used] = a[:used]
    return out


@dataclass
class _Other:
    src: tuple[int, ...] = ABSENT
    dst: tuple[int, ...] = ABSENT
    inflight: bool = False
    digest: str = ""
    run_copied: bool = False  # as _RUN_COPIED


# Below this many files, a folder's chunk rows are gathered in Python lists, not numpy.
_SMALL_DIR = 16


class _Group:
    """observe_names' rows of one array, in listing order: numpy pieces of large folders,
    and the rows of small ones gathered in plain lists between them."""

    def __init__(self, state: _ArrayState) -> None:
        self.state = state
        self.named: list[tuple[str, list[str]]] = []
        self._idx: list[np.ndarray] = []
        self._new: list[np.ndarray] = []
        self._small_idx: list[int] = []
        self._small_new = array("q")

    def add(self, idx: np.ndarray, new: np.ndarray, prefix: str, names: list[str]) -> None:
        self._flush_small()
        self._idx.append(idx)
        self._new.append(new)
        self.named.append((prefix, names))

    def add_small(self, idx: list[int], flat: array, prefix: str, names: list[str]) -> None:
        self._small_idx += idx
        self._small_new += flat
        self.named.append((prefix, names))

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        self._flush_small()
        return np.concatenate(self._idx), np.concatenate(self._new)

    def _flush_small(self) -> None:
        if self._small_idx:
            self._idx.append(np.array(self._small_idx, dtype=np.int64))
            self._new.append(np.frombuffer(self._small_new, dtype=np.int64).reshape(-1, _FIELDS))
            self._small_idx, self._small_new = [], array("q")


@dataclass
class Ledger:
    arrays: dict[str, _ArrayState] = field(default_factory=dict)
    other: dict[str, _Other] = field(default_factory=dict)
    # dirname -> (array, key prefix inside the array) or None; speeds up locate()
    _dir_cache: dict[str, tuple[_ArrayState, str, int | None] | None] = field(default_factory=dict)
    # Chunk file names -> the coordinate they spell (-1: none): the same few names in every
    # directory of chunks, parsed once per run, not once per file (_NAMES at most).
    _names: dict[str, int] = field(default_factory=dict)
    # keys waiting for a copier; filled lazily from the arrays when it runs dry
    _queue: list[str] = field(default_factory=list)
    # True when array rows may need work that the queue does not hold yet
    _stale: bool = False
    _seen_other: set[str] | None = None
    # The last key located and where: an outcome's handling asks for one key four or five
    # times in a row (copied, set_copied, copied_first, source, needs_work).
    _last: tuple[str, tuple[_ArrayState, int] | None] = ("", None)

    # ---- arrays -------------------------------------------------------------

    def set_layout(self, layout: ArrayLayout) -> bool:
        """Register or update one array; returns True when its file grid changed."""
        old = self.arrays.get(layout.path)
        if old is not None and _same_files(old.layout, layout):
            old.layout = layout  # dtype, fill value...: nothing the rows depend on
            return False
        parts = []
        if old is not None:
            parts.append(self._carry_over(old, layout))
        # After the carry-over: rows it moved to the dict may still be keys of the new grid.
        parts.append(self._adoptable(layout))
        ids = np.concatenate([p[0] for p in parts])
        src = np.concatenate([p[1] for p in parts])
        flags = np.concatenate([p[2] for p in parts])
        digest = None
        if any(p[3] is not None for p in parts):
            digest = np.concatenate(
                [p[3] if p[3] is not None else np.zeros((len(p[0]), 32), np.uint8) for p in parts]
            )
        other_dst = {k: v for p in parts for k, v in p[4].items()}
        self.arrays[layout.path] = _ArrayState.build(layout, ids, src, flags, digest, other_dst)
        self._stale = True
        self._dir_cache.clear()
        self._last = ("", None)
        return True

    def drop_array(self, path: str) -> None:
        """The array's metadata vanished: its files become plain files."""
        state = self.arrays.pop(path, None)
        if state is not None:
            self._move_out(state, state.live())
            self._dir_cache.clear()
            self._last = ("", None)

    def _carry_over(self, old: _ArrayState, layout: ArrayLayout) -> _Rows:
        """The rows of an old grid that fit the new one; the others move to the dict.

        A growing time axis is the common case, so this is vectorised: one
        unravel/ravel pass, no Python loop over chunks.
        """
        a, b = old.layout, layout
        same_keys = (a.prefix, a.separator, a.file_shape) == (b.prefix, b.separator, b.file_shape)
        rows = old.live()
        if not same_keys or len(a.grid) != len(b.grid):
            self._move_out(old, rows)
            return _no_rows()
        index = old.index_of(rows)
        coords = np.unravel_index(index, a.grid)
        fits = np.ones(len(rows), dtype=bool)
        for axis, extent in enumerate(b.grid):
            fits &= coords[axis] < extent
        target = np.ravel_multi_index(tuple(c[fits] for c in coords), b.grid)
        kept = rows[fits]
        moved = dict(zip(index[fits].tolist(), target.tolist(), strict=True))
        other_dst = {moved[i]: v for i, v in old.other_dst.items() if i in moved}
        self._move_out(old, rows[~fits])
        digest = None if old.digest is None else old.digest[kept]
        flags = old.flags[kept] & ~_SEEN
        return target.astype(np.int64), old.src[kept], flags, digest, other_dst

    def _move_out(self, state: _ArrayState, rows: np.ndarray) -> None:
        """Carry rows of an array into the dict (its grid no longer covers them)."""
        index = state.index_of(rows)
        for r, i, key in zip(rows.tolist(), index.tolist(), state.layout.keys(index), strict=True):
            self.other[state.prefix + key] = _Other(
                tuple(state.src[r].tolist()),
                state.copied_row(r, i),
                bool(state.flags[r] & _INFLIGHT),
                state.get_digest(r),
            )

    def _adoptable(self, layout: ArrayLayout) -> _Rows:
        """Files seen before their array's metadata, taken out of the dict as rows."""
        prefix = f"{layout.path}/" if layout.path else ""
        found: list[tuple[int, _Other]] = []
        for key in [k for k in self.other if k.startswith(prefix)]:
            index = layout.index(key[len(prefix) :])
            if index is not None:
                found.append((index, self.other.pop(key)))
        if not found:
            return _no_rows()
        ids = np.array([i for i, _ in found], dtype=np.int64)
        src = np.array([e.src for _, e in found], dtype=np.int64).reshape(-1, _FIELDS)
        flags = np.zeros(len(found), dtype=np.uint8)
        other_dst: dict[int, tuple[int, ...]] = {}
        digest = None
        if any(e.digest for _, e in found):
            digest = np.zeros((len(found), 32), dtype=np.uint8)
        for k, (i, e) in enumerate(found):
            if e.dst == ABSENT:
                pass
            elif e.dst == e.src:
                flags[k] |= _SAME
            else:
                flags[k] |= _OTHER
                other_dst[i] = e.dst
            if e.inflight:
                flags[k] |= _INFLIGHT
            if digest is not None and e.digest:
                digest[k] = np.frombuffer(bytes.fromhex(e.digest), dtype=np.uint8)
        return ids, src, flags, digest, other_dst

    def locate(self, key: str) -> tuple[_ArrayState, int] | None:
        last = self._last
        if last[0] == key and key:
            return last[1]
        hit = self._locate(key)
        self._last = (key, hit)
        return hit

    def _locate(self, key: str) -> tuple[_ArrayState, int] | None:
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
            # An absent file that has no row needs none: absent is what a missing row means.
            r = state.find(i) if version is None else state.row(i)
            if r is None:
                return False
            if state.sweeping:
                state.flags[r] |= _SEEN
            if tuple(state.src[r].tolist()) == row:
                return False
            state.set_source(r, i, row)
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

    def observe_names(self, dirs: Iterable[tuple[str, list[str], array]]) -> list[str]:
        """observe_many for files given a directory at a time, as a listing without keys
        gives them (sources.scan.list_names): (directory, names, their versions as one flat
        int64 array). A directory of "/"-separated chunk files costs one lookup of its
        array and a memo lookup per name, at C speed, its versions read in place; a key is
        made only for a file whose version changed. Anything else goes through
        observe_many."""
        groups: dict[int, _Group] = {}
        rest: list[tuple[str, Version]] = []
        for dirname, names, flat in dirs:
            prefix = f"{dirname}/" if dirname else ""
            try:
                hit = self._dir_cache[dirname]
            except KeyError:
                hit = self._dir_cache[dirname] = self._find_array(dirname)
            if hit is None or hit[2] is None or not names:
                rest += _pairs(prefix, names, flat, range(len(names)))
                continue
            state, _, base = hit
            group = groups.get(id(state))
            if group is None:
                group = groups[id(state)] = _Group(state)
            if len(names) < _SMALL_DIR:
                # A folder of a few files (zarr v3's innermost, one or two chunks each) in
                # plain Python: numpy's per-call cost, paid per folder, is most of its time.
                lasts = self._lasts_list(names)
                bound = state.layout.grid[-1]
                if all(0 <= last < bound for last in lasts):
                    group.add_small([base + last for last in lasts], flat, prefix, names)
                    continue
            lasts = np.array(self._lasts_list(names), dtype=np.int64)
            inside = (lasts >= 0) & (lasts < state.layout.grid[-1])
            new = np.frombuffer(flat, dtype=np.int64).reshape(-1, _FIELDS)
            if not inside.all():  # not chunk files of this grid: one by one
                rest += _pairs(prefix, names, flat, np.flatnonzero(~inside).tolist())
                names = [names[j] for j in np.flatnonzero(inside).tolist()]
                lasts, new = lasts[inside], new[inside]
            group.add(base + lasts, new, prefix, names)
        changed = self.observe_many(rest) if rest else []
        for group in groups.values():
            idx, news = group.rows()

            def keys(named: list[tuple[str, list[str]]] = group.named) -> list[str]:
                return [p + n for p, names in named for n in names]

            changed += self._observe_rows(group.state, idx, news, keys)
        return changed

    def _lasts_list(self, names: list[str]) -> list[int]:
        """The coordinate each chunk file name spells (as ArrayLayout.last_coordinate, before
        the grid's bound), -1 where it spells none, through the memo of names."""
        memo = self._names
        lasts = list(map(memo.get, names))
        if None in lasts:
            for j, name in enumerate(names):
                if lasts[j] is None:
                    last = _coordinate(name)
                    lasts[j] = last
                    if len(memo) < _NAMES:
                        memo[name] = last
        return lasts

    def observe_many(self, items: Iterable[tuple[str, Version]]) -> list[str]:
        """observe() for a whole listing at once; returns the keys that changed.

        A scan of a million files must not pay numpy's per-element overhead a
        million times: keys are located one by one (string work), then compared
        and stored per array in one vectorised step.
        """
        groups: dict[int, tuple[_ArrayState, list[int], list[Version], list[str]]] = {}
        changed: list[str] = []
        # locate(), inlined: a listing comes directory by directory, so the directory is
        # looked up once per run of its keys, and a "/" key's last coordinate (the same
        # few names in every directory) is parsed once per name.
        last_dir: str | None = None
        hit: tuple[_ArrayState, str, int | None] | None = None
        group: tuple[_ArrayState, list[int], list[Version], list[str]] | None = None
        coordinate: dict[str, int] = {}
        memo_of: _ArrayState | None = None
        for key, version in items:
            slash = key.rfind("/")
            dirname = key[:slash] if slash >= 0 else ""
            if dirname != last_dir:
                last_dir = dirname
                try:
                    hit = self._dir_cache[dirname]
                except KeyError:
                    hit = self._dir_cache[dirname] = self._find_array(dirname)
                if hit is not None:
                    group = groups.get(id(hit[0]))
                    if group is None:
                        group = groups[id(hit[0])] = (hit[0], [], [], [])
                    if memo_of is not hit[0]:
                        memo_of, coordinate = hit[0], {}  # another array: another last axis
            index = None
            if hit is not None:
                state, inner, base = hit
                name = key[slash + 1 :]
                if base is None:
                    index = state.layout.index(inner + name)
                else:
                    last = coordinate.get(name)
                    if last is None:
                        last = state.layout.last_coordinate(name)
                        if last is not None and len(coordinate) < _COORDINATE_MEMO:
                            coordinate[name] = last
                    index = None if last is None else base + last
            if index is None:
                if self.observe(key, version):
                    changed.append(key)
                continue
            assert group is not None
            group[1].append(index)
            group[2].append(version)
            group[3].append(key)
        for state, indices, versions, keys in groups.values():
            idx = np.fromiter(indices, dtype=np.int64, count=len(indices))
            flat = itertools.chain.from_iterable(versions)  # far cheaper than np.array(tuples)
            new = np.fromiter(flat, dtype=np.int64, count=_FIELDS * len(versions))
            changed += self._observe_rows(state, idx, new.reshape(-1, _FIELDS), keys)
        return changed

    def _observe_rows(
        self,
        state: _ArrayState,
        idx: np.ndarray,
        new: np.ndarray,
        keys: list[str] | Callable[[], list[str]],
    ) -> list[str]:
        """The source's versions `new` of chunks `idx` (distinct) of one array; returns the
        keys of those that changed (`keys`: theirs in order, or what makes them)."""
        rows = state.rows(idx)
        if state.sweeping:
            state.flags[rows] |= _SEEN
        differs = (state.src[rows] != new).any(axis=1)
        if not differs.any():
            return []
        state.set_sources(rows[differs], idx[differs], new[differs])
        self._stale = True
        if callable(keys):
            keys = keys()
        if differs.all():
            return keys
        return [k for k, d in zip(keys, differs.tolist(), strict=True) if d]

    def trust_journaled(
        self,
        there: Iterable[tuple[str, Version]],
        journaled: Mapping[str, tuple[Version, str]],
    ) -> tuple[int, list[tuple[str, Version]]]:
        """Mark copied, in bulk, the destination files the journal vouches for.

        The same test as `plan.decide`'s TRUST (the journal recorded the source's current
        version, and the destination file has its size and mtime), vectorised per array in
        batches, so a rerun over a million chunk files pays no per-file numpy call and holds
        no per-file Python object beyond a batch. Returns how many were trusted and every
        other (key, destination version), in no particular order, for the caller to decide
        one by one.
        """
        items = there if isinstance(there, list) else list(there)
        rest: list[tuple[str, Version]] = []
        trusted = 0
        # per array: (state, chunk indices, journaled versions, destination versions,
        # positions in items)
        groups: dict[int, tuple[_ArrayState, list[int], list[Version], list[Version], list[int]]]
        groups = {}
        # locate(), inlined as in observe_many: a listing comes a directory at a time.
        last_dir: str | None = None
        hit: tuple[_ArrayState, str, int | None] | None = None
        group: tuple[_ArrayState, list[int], list[Version], list[Version], list[int]] | None
        group = None
        coordinate: dict[str, int] = {}
        memo_of: _ArrayState | None = None
        for position, (key, version) in enumerate(items):
            record = journaled.get(key)
            if record is None:
                rest.append((key, version))
                continue
            slash = key.rfind("/")
            dirname = key[:slash] if slash >= 0 else ""
            if dirname != last_dir:
                last_dir = dirname
                try:
                    hit = self._dir_cache[dirname]
                except KeyError:
                    hit = self._dir_cache[dirname] = self._find_array(dirname)
                if hit is not None:
                    group = groups.get(id(hit[0]))
                    if group is None:
                        group = groups[id(hit[0])] = (hit[0], [], [], [], [])
                    if memo_of is not hit[0]:
                        memo_of, coordinate = hit[0], {}  # another array: another last axis
            index = None
            if hit is not None:
                state, inner, base = hit
                name = key[slash + 1 :]
                if base is None:
                    index = state.layout.index(inner + name)
                else:
                    last = coordinate.get(name)
                    if last is None:
                        last = state.layout.last_coordinate(name)
                        if last is not None and len(coordinate) < _COORDINATE_MEMO:
                            coordinate[name] = last
                    index = None if last is None else base + last
            if index is None:
                rest.append((key, version))
                continue
            assert group is not None
            group[1].append(index)
            group[2].append(record[0])
            group[3].append(version)
            group[4].append(position)
            if len(group[1]) >= _TRUST_BATCH:
                trusted += self._trust_batch(*group, items, journaled, rest)
                for part in group[1:]:
                    part.clear()
        for group in groups.values():
            if group[1]:
                trusted += self._trust_batch(*group, items, journaled, rest)
        return trusted, rest

    def _trust_batch(
        self,
        state: _ArrayState,
        indices: list[int],
        records: list[Version],
        versions: list[Version],
        positions: list[int],
        items: list[tuple[str, Version]],
        journaled: Mapping[str, tuple[Version, str]],
        rest: list[tuple[str, Version]],
    ) -> int:
        k = len(indices)
        idx = np.fromiter(indices, dtype=np.int64, count=k)
        flat = itertools.chain.from_iterable
        rec = np.fromiter(flat(records), dtype=np.int64, count=_FIELDS * k).reshape(-1, _FIELDS)
        dst = np.fromiter(flat(versions), dtype=np.int64, count=_FIELDS * k).reshape(-1, _FIELDS)
        r = state.find_many(idx)
        has = r >= 0
        src = np.full((k, _FIELDS), -1, dtype=np.int64)  # no row: absent
        src[has] = state.src[r[has]]
        ok = (
            (src[:, 0] >= 0)
            & (src == rec).all(axis=1)
            & (src[:, 0] == dst[:, 0])  # the destination's size and mtime
            & (src[:, 1] == dst[:, 1])
        )
        good = np.flatnonzero(ok)
        rows = r[good]
        state.flags[rows] = (state.flags[rows] & ~(_COPIED | _INFLIGHT)) | _SAME
        if state.other_dst:
            for i in idx[good].tolist():
                state.other_dst.pop(i, None)
        for g in good.tolist():
            digest = journaled[items[positions[g]][0]][1]
            if digest:
                state.set_digest(int(r[g]), digest)
        rest.extend(items[positions[g]] for g in np.flatnonzero(~ok).tolist())
        self._stale = True
        return len(good)

    def trust_listed(
        self,
        dirs: list[tuple[str, list[str]]],
        there: np.ndarray,
        records: np.ndarray,
        digests: Mapping[int, str],
    ) -> np.ndarray:
        """`trust_journaled` for files given a directory at a time, with their versions as
        arrays: `dirs` is (directory, names) in row order, `there` the destination's versions
        and `records` the journal's (-1 rows where it has none), (n, 4) each; `digests`
        row -> BLAKE3. Returns the mask of rows trusted. A chunk file costs no Python object
        beyond its name: its index comes from the directory's base and a memo of names.
        """
        n = len(there)
        trusted = np.zeros(n, dtype=bool)
        # per array: (state, [row positions], [chunk indices])
        groups: dict[int, tuple[_ArrayState, list[np.ndarray], list[np.ndarray]]] = {}
        start = 0
        for dirname, names in dirs:
            k = len(names)
            positions = np.arange(start, start + k)
            start += k
            try:
                hit = self._dir_cache[dirname]
            except KeyError:
                hit = self._dir_cache[dirname] = self._find_array(dirname)
            if hit is None:
                continue
            state, inner, base = hit
            if base is None:
                found = [state.layout.index(inner + name) for name in names]
                index = np.array([-1 if i is None else i for i in found], dtype=np.int64)
            else:
                index = np.array(self._lasts_list(names), dtype=np.int64)
                index[(index < 0) | (index >= state.layout.grid[-1])] = -1
                index[index >= 0] += base
            inside = index >= 0
            group = groups.setdefault(id(state), (state, [], []))
            group[1].append(positions[inside])
            group[2].append(index[inside])
        row_of = np.full(n, -1, dtype=np.int64)
        for state, parts, indices in groups.values():
            positions = np.concatenate(parts)
            idx = np.concatenate(indices)
            r = state.find_many(idx)
            has = r >= 0
            src = np.full((len(idx), _FIELDS), -1, dtype=np.int64)  # no row: absent
            src[has] = state.src[r[has]]
            dst = there[positions]
            ok = (
                (src[:, 0] >= 0)
                & (src == records[positions]).all(axis=1)
                & (src[:, 0] == dst[:, 0])  # the destination's size and mtime
                & (src[:, 1] == dst[:, 1])
            )
            rows = r[ok]
            state.flags[rows] = (state.flags[rows] & ~(_COPIED | _INFLIGHT)) | _SAME
            if state.other_dst:
                for i in idx[ok].tolist():
                    state.other_dst.pop(i, None)
            trusted[positions[ok]] = True
            row_of[positions[ok]] = rows
            if digests:
                for p in positions[ok].tolist():
                    digest = digests.get(p)
                    if digest:
                        state.set_digest(int(row_of[p]), digest)
            self._stale = True
        return trusted

    def set_copied(self, key: str, version: Version | None, digest: str = "") -> None:
        """The destination now holds `version` of key (None: deleted there), with its BLAKE3."""
        row = _as_row(version)
        hit = self.locate(key)
        if hit is not None:
            state, i = hit
            r = state.find(i) if version is None else state.row(i)
            if r is None:
                return
            state.set_copied(r, i, row)
            state.set_digest(r, digest)
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
        elif entry.src != entry.dst:
            # Work that no observation queued (a file only at the destination, found at
            # the start of a resumed run): the next take() must look for it.
            self._stale = True

    def copied_first(self, key: str) -> bool:
        """Note that this run copied `key`; True the first time it does."""
        hit = self.locate(key)
        if hit is not None:
            state, i = hit
            r = state.find(i)
            if r is None:
                return True
            if state.flags[r] & _RUN_COPIED:
                return False
            state.flags[r] |= _RUN_COPIED
            return True
        entry = self.other.get(key)
        if entry is None:
            return True
        first, entry.run_copied = not entry.run_copied, True
        return first

    def begin_sweep(self) -> None:
        """Start a full scan: every key observed from now on counts as seen."""
        for state in self.arrays.values():
            state.flags[: state.size] &= ~_SEEN
            state.sweeping = True
        self._seen_other = set()

    def end_sweep(self) -> list[str]:
        """Keys the source held before the scan that the scan did not see (maybe deleted)."""
        gone: list[str] = []
        for state in self.arrays.values():
            if not state.sweeping:  # registered during the scan: every row was observed in it
                continue
            n = state.size
            missing = np.flatnonzero((state.src[:n, 0] >= 0) & ((state.flags[:n] & _SEEN) == 0))
            gone.extend(state.prefix + k for k in state.layout.keys(state.index_of(missing)))
            state.sweeping = False
            state.compact()
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
            r = state.find(i)
            if r is not None:
                if inflight:
                    state.flags[r] |= _INFLIGHT
                else:
                    state.flags[r] &= ~_INFLIGHT
        elif key in self.other:
            self.other[key].inflight = inflight

    def source(self, key: str) -> Version | None:
        hit = self.locate(key)
        if hit is not None:
            state, i = hit
            r = state.find(i)
            return None if r is None else _as_version(state.src[r])
        entry = self.other.get(key)
        return None if entry is None else _as_version(entry.src)

    def copied(self, key: str) -> Version | None:
        hit = self.locate(key)
        if hit is not None:
            state, i = hit
            r = state.find(i)
            return None if r is None else _as_version(state.copied_row(r, i))
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
            n = state.size
            rows = np.flatnonzero(state.digest[:n].any(axis=1) & ((state.flags[:n] & _COPIED) != 0))
            index = state.index_of(rows)
            keys = state.layout.keys(index)
            for r, i, key in zip(rows.tolist(), index.tolist(), keys, strict=True):
                version = _as_version(state.copied_row(r, i))
                assert version is not None
                known[state.prefix + key] = (version, state.get_digest(r))
        return known

    def needs_work(self, key: str) -> bool:
        hit = self.locate(key)
        if hit is not None:
            state, i = hit
            r = state.find(i)
            if r is None:
                return False
            flags = state.flags[r]
            if flags & (_INFLIGHT | _SAME):
                return False
            return bool(flags & _OTHER) or bool(state.src[r, 0] >= 0)
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
            budget = most - len(chunks)
            if state.ids is None:  # dense rows are in chunk order already: stop at the budget
                found = [np.zeros(0, dtype=np.int64)]
                for rows in state.spans():
                    found.append(rows.start + np.flatnonzero(state.pending(rows, False)))
                    budget -= len(found[-1])
                    if budget <= 0:
                        break
                index = np.concatenate(found)[: most - len(chunks)]
            else:  # one row per file that exists, and the tail's are not in order
                index = state.ids[np.flatnonzero(state.pending(slice(0, state.size), False))]
                if len(index) > budget:
                    index = np.partition(index, budget - 1)[:budget]
                index = np.sort(index)
            chunks.extend(state.prefix + k for k in state.layout.keys(index))
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
            n += sum(int(np.count_nonzero(state.pending(rows))) for rows in state.spans())
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
            for rows in state.spans():
                need = state.pending(rows)
                files += int(np.count_nonzero(need))
                sizes = np.clip(state.src[rows, 0][need], 0, None)
                nbytes += int((-(-sizes // block) * block).sum())
        return files, nbytes

    def source_totals(self) -> tuple[int, int, int]:
        """(files at the source now, their bytes, how many of them the destination holds)."""
        files = nbytes = done = 0
        for e in self.other.values():
            if e.src != ABSENT:
                files += 1
                nbytes += e.src[0]
                done += e.src == e.dst
        for state in self.arrays.values():
            for rows in state.spans():
                sizes = state.src[rows, 0]
                here = sizes >= 0
                files += int(np.count_nonzero(here))
                nbytes += int(sizes[here].sum())
                done += int(np.count_nonzero(here & ((state.flags[rows] & _SAME) != 0)))
        return files, nbytes, done

    # ---- completeness --------------------------------------------------------------

    def expected_counts(self) -> tuple[int, int]:
        """(chunk files present at the source, chunk files the layouts allow)."""
        present = sum(_present(s) for s in self.arrays.values())
        expected = sum(s.layout.n_files for s in self.arrays.values())
        return present, expected

    def all_expected_present(self) -> bool:
        if not self.arrays:
            return False
        # Counted, not compared cell by cell: a sparse grid has fewer rows than cells.
        return all(_present(s) == s.layout.n_files for s in self.arrays.values())

    def memory_bytes(self) -> int:
        return sum(s.memory_bytes() for s in self.arrays.values())


# (chunk indices, source rows, flags, digests or None, copied versions kept aside)
_Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, dict[int, tuple[int, ...]]]


def _no_rows() -> _Rows:
    empty = np.zeros(0, dtype=np.int64)
    return empty, np.zeros((0, _FIELDS), np.int64), np.zeros(0, np.uint8), None, {}


def _pairs(
    prefix: str, names: list[str], flat: array, positions: Iterable[int]
) -> list[tuple[str, Version]]:
    """(key, version) of the files at `positions` of a listing without keys."""
    make = tuple.__new__
    return [(prefix + names[j], make(Version, flat[4 * j : 4 * j + 4])) for j in positions]


def _coordinate(name: str) -> int:
    """ArrayLayout.last_coordinate without the grid's bound; -1 for no coordinate (and for
    any beyond int64's digits: those go the exact way, one by one)."""
    if not name.isascii() or not name.isdigit() or (name[0] == "0" and len(name) > 1):
        return -1
    return int(name) if len(name) <= 18 else -1


def _present(state: _ArrayState) -> int:
    return int((state.src[: state.size, 0] >= 0).sum())


def _same_files(a: ArrayLayout, b: ArrayLayout) -> bool:
    """Whether two layouts name the same chunk files at the same indices."""
    return (a.path, a.grid, a.prefix, a.separator) == (b.path, b.grid, b.prefix, b.separator)
