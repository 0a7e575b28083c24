"""The ledger's bookkeeping, in process: no files needed, versions are data."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softcopy.engine import ledger as ledger_module
from softcopy.engine.ledger import Ledger
from softcopy.sources.scan import Version
from softcopy.zarr.layout import ArrayLayout, parse_array_metadata


def layout(shape: list[int], chunks: list[int], path: str = ""):
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": "uint16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "chunk_key_encoding": {"name": "default"},
        "codecs": [{"name": "bytes"}],
        "fill_value": 0,
    }
    return parse_array_metadata(meta, path, "zarr.json")


def v(n: int) -> Version:
    return Version(n, n, n)


def test_chunks_live_in_arrays_and_other_files_in_the_dict() -> None:
    ledger = Ledger()
    ledger.set_layout(layout([4, 4], [2, 2]))
    assert ledger.observe("c/1/1", v(1))
    assert ledger.observe("zarr.json", v(2))
    assert ledger.observe("acquisition.log", v(3))
    assert set(ledger.other) == {"zarr.json", "acquisition.log"}
    assert not ledger.observe("c/1/1", v(1)), "same version is no change"
    # Files outside the grid go first, so the destination is readable early.
    assert set(ledger.take(2)) == {"acquisition.log", "zarr.json"}
    assert ledger.take(10) == ["c/1/1"]
    assert ledger.take(10) == [], "in flight keys are never handed out twice"


def test_a_key_in_flight_is_not_taken_again_until_its_result() -> None:
    ledger = Ledger()
    ledger.set_layout(layout([4], [1]))
    ledger.observe("c/0", v(1))
    assert ledger.take(5) == ["c/0"]
    ledger.observe("c/0", v(2))  # the writer renamed a newer version meanwhile
    assert ledger.take(5) == []
    ledger.set_copied("c/0", v(1))
    assert ledger.needs_work("c/0")
    assert ledger.take(5) == ["c/0"]
    ledger.set_copied("c/0", v(2))
    assert not ledger.needs_work("c/0") and ledger.take(5) == []


def test_a_busy_non_chunk_file_does_not_starve_chunks() -> None:
    ledger = Ledger()
    ledger.set_layout(layout([8], [1]))
    for i in range(8):
        ledger.observe(f"c/{i}", v(1))
    got: list[str] = []
    for round_ in range(4):
        ledger.observe("log.txt", v(10 + round_))  # rewritten before every dispatch
        batch = ledger.take(2)
        got += batch
        for key in batch:
            ledger.set_copied(key, ledger.source(key))
    assert any(k.startswith("c/") for k in got)


def test_growing_array_keeps_its_rows() -> None:
    ledger = Ledger()
    ledger.set_layout(layout([2, 4], [1, 2]))
    ledger.observe("c/1/1", v(1))
    ledger.set_copied("c/1/1", v(1))
    ledger.observe("c/0/0", v(2))
    # Grow the time axis and another axis: chunk indices move, versions must follow.
    assert ledger.set_layout(layout([3, 6], [1, 2]))
    assert ledger.copied("c/1/1") == v(1) and ledger.source("c/0/0") == v(2)
    assert not ledger.needs_work("c/1/1") and ledger.needs_work("c/0/0")
    assert ledger.other == {}


def test_shrinking_moves_out_of_range_chunks_to_the_dict() -> None:
    ledger = Ledger()
    ledger.set_layout(layout([3], [1]))
    ledger.observe("c/2", v(1))
    ledger.set_copied("c/2", v(1))
    ledger.set_layout(layout([2], [1]))
    assert "c/2" in ledger.other and ledger.copied("c/2") == v(1)
    ledger.observe("c/2", None)  # the writer deleted it on shrink
    assert ledger.take(5) == ["c/2"], "the destination copy must be deleted too"


def test_files_seen_before_their_metadata_are_adopted() -> None:
    ledger = Ledger()
    ledger.observe("img/c/0", v(1))
    assert "img/c/0" in ledger.other
    ledger.set_layout(layout([2], [1], path="img"))
    assert ledger.other == {} and ledger.source("img/c/0") == v(1)


def test_sweep_reports_keys_a_full_scan_did_not_see() -> None:
    ledger = Ledger()
    ledger.set_layout(layout([4], [1]))
    for key in ("c/0", "c/1", "notes"):
        ledger.observe(key, v(1))
    ledger.begin_sweep()
    ledger.observe("c/0", v(1))
    assert sorted(ledger.end_sweep()) == ["c/1", "notes"]


def test_completeness_counts_expected_chunks() -> None:
    ledger = Ledger()
    assert not ledger.all_expected_present(), "no array yet is not complete"
    ledger.set_layout(layout([2, 2], [1, 1]))
    for key in ("c/0/0", "c/0/1", "c/1/0"):
        ledger.observe(key, v(1))
    assert ledger.expected_counts() == (3, 4) and not ledger.all_expected_present()
    ledger.observe("c/1/1", v(1))
    assert ledger.all_expected_present()
    assert ledger.memory_bytes() <= 64 * 4 + 512  # 33 B per cell, plus two empty dicts


def test_the_directory_fast_path_agrees_with_index_for_every_key() -> None:
    """locate() parses only a "/" key's last coordinate; it must agree with index()
    on every valid key and reject exactly what index() rejects."""
    v2_nested = parse_array_metadata(
        {"zarr_format": 2, "shape": [3, 4, 5], "chunks": [1, 2, 2], "dtype": "<u2",
         "dimension_separator": "/", "compressor": None, "fill_value": 0, "order": "C",
         "filters": None},
        "img", ".zarray",
    )  # fmt: skip
    for lay in (layout([3, 4, 5], [1, 2, 2], path="a/b"), v2_nested):
        ledger = Ledger()
        ledger.set_layout(lay)
        prefix = f"{lay.path}/"
        for i in range(lay.n_files):
            key = lay.key(i)
            assert ledger.locate(prefix + key)[1] == i
        head = lay.key(0).rsplit("/", 1)[0]
        for bad in ("01", "3", "-1", "1.0", " 1", "x", "0.__lock", "²"):
            assert lay.index(f"{head}/{bad}") is None
            assert ledger.locate(f"{prefix}{head}/{bad}") is None, bad


# ---- memory: rows for the files that exist, not for the grid that could ------------------


def clustered_tiles(count: int) -> list[str]:
    """Tile keys of a mosaic: rows of 500 neighbouring tiles somewhere on a huge canvas."""
    return [f"c/{123456 + i // 500 * 7}/{987654 + i % 500}" for i in range(count)]


def test_a_huge_sparse_grid_costs_memory_per_file_not_per_cell() -> None:
    ledger = Ledger()
    ledger.set_layout(layout([10**6, 10**6], [1, 1]))  # 10^12 cells
    keys = clustered_tiles(1000)
    ledger.observe_many((k, v(i)) for i, k in enumerate(keys))
    assert ledger.memory_bytes() < 1000 * 64 + 2048
    assert ledger.expected_counts() == (1000, 10**12)
    assert not ledger.all_expected_present()
    assert sorted(ledger.take(5000)) == sorted(keys)
    ledger.set_layout(layout([2 * 10**6, 10**6], [1, 1]))  # grows: rows carried over, still sparse
    assert ledger.memory_bytes() < 1000 * 64 + 2048
    assert ledger.expected_counts() == (1000, 2 * 10**12)
    assert all(not ledger.needs_work(k) for k in keys), "still in flight"


@pytest.mark.parametrize("grid", [[20, 100, 100], [10**6, 10**6]], ids=["dense", "sparse"])
def test_200000_files_cost_at_most_64_bytes_each(grid: list[int]) -> None:
    n = 200_000
    lay = layout(grid, [1] * len(grid))
    keys = [lay.key(i) for i in range(n)] if len(grid) == 3 else clustered_tiles(n)
    items = [(k, Version(i, i, i, i)) for i, k in enumerate(keys)]
    tracemalloc.start()
    try:
        ledger = Ledger()
        ledger.set_layout(lay)
        ledger.observe_many(items)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert ledger.memory_bytes() <= 64 * n
    assert held <= 64 * n, f"{held / n:.1f} B per file"  # everything the ledger holds
    assert ledger.expected_counts() == (n, lay.n_files)
    assert ledger.all_expected_present() == (len(grid) == 3)


# ---- the ledger against a model: a dict of (source, copied, in flight, digest) per key ---

LAYOUTS = {
    "small": layout([4, 4], [1, 1]),  # 16 cells: always dense
    "mid": layout([6, 12], [1, 1]),  # 72 cells: sparse until 58 files exist
    "wide": layout([7, 13], [1, 1]),
    "canvas": layout([10**6, 10**6], [1, 1]),  # always sparse
    "dots": parse_array_metadata(
        {"zarr_format": 3, "node_type": "array", "shape": [10, 10], "data_type": "uint16",
         "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 1]}},
         "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
         "codecs": [{"name": "bytes"}], "fill_value": 0},
        "", "zarr.json",
    ),  # same path, other key names: every row moves to the dict and back
}  # fmt: skip
KEYS = (
    GRID_KEYS := [f"c/{i}/{j}" for i in range(7) for j in range(13)]
    + [f"c.{i}.{j}" for i in range(3) for j in range(3)]
    + ["c/999999/999999", "c/01/1", "c/1", "zarr.json", "log.txt"]
)
VERSIONS = [None] + [Version(s, s + 1, s + 2, s + 3) for s in range(4)]
DIGESTS = ["", "ab" * 32, "cd" * 32]

keys_st = st.sampled_from(KEYS)
versions_st = st.sampled_from(VERSIONS)
ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("observe"), keys_st, versions_st),
        st.tuples(st.just("observe_many"),
                  st.dictionaries(keys_st, st.sampled_from(VERSIONS[1:]), max_size=20)),
        # A whole grid at once (dense rows pay), every key or every other one
        st.tuples(st.just("observe_grid"), st.sampled_from(VERSIONS[1:]), st.integers(1, 2)),
        st.tuples(st.just("set_copied"), keys_st, versions_st, st.sampled_from(DIGESTS)),
        st.tuples(st.just("take"), st.integers(1, 100)),
        st.tuples(st.just("done"), st.integers(0, 100)),  # copiers report what they took
        st.tuples(st.just("set_inflight"), keys_st, st.booleans()),
        st.tuples(st.just("layout"), st.sampled_from(sorted(LAYOUTS))),
        st.tuples(st.just("drop")),
        st.tuples(st.just("sweep"), st.dictionaries(keys_st, st.sampled_from(VERSIONS[1:]))),
    ),
    max_size=40,
)  # fmt: skip


class Model:
    def __init__(self) -> None:
        self.src: dict[str, Version | None] = {}
        self.dst: dict[str, Version | None] = {}
        self.inflight: set[str] = set()
        self.digest: dict[str, str] = {}
        self.layout: ArrayLayout | None = None

    def needs_work(self, key: str) -> bool:
        return key not in self.inflight and self.src.get(key) != self.dst.get(key)

    def in_grid(self, key: str) -> bool:
        return self.layout is not None and self.layout.index(key) is not None


def check_against(ledger: Ledger, model: Model) -> None:
    for key in KEYS:
        assert ledger.source(key) == model.src.get(key), key
        assert ledger.copied(key) == model.dst.get(key), key
        assert ledger.needs_work(key) == model.needs_work(key), key
    pending = [k for k in KEYS if model.src.get(k) != model.dst.get(k)]
    assert ledger.pending_count() == len(pending)
    nbytes = sum(-(-(model.src.get(k) or Version(0, 0, 0, 0)).size // 4) * 4 for k in pending)
    assert ledger.pending_totals(4) == (len(pending), nbytes)
    if model.layout is not None:
        present = sum(1 for k in KEYS if model.in_grid(k) and model.src.get(k) is not None)
        assert ledger.expected_counts() == (present, model.layout.n_files)
        assert ledger.all_expected_present() == (present == model.layout.n_files)
    else:
        assert ledger.expected_counts() == (0, 0) and not ledger.all_expected_present()
    digests = {
        k: (model.dst[k], d) for k, d in model.digest.items() if d and model.dst.get(k) is not None
    }
    assert ledger.digests() == digests


@settings(max_examples=300, deadline=None)
@given(ops_st, st.booleans())
def test_the_ledger_agrees_with_a_dict_of_keys(ops: list[tuple], tiny_tail: bool) -> None:
    # A tiny tail makes the sparse rows merge and compact within a few operations; tiny
    # blocks and spans make an in-place merge or densify, and a pass over the rows, take
    # several steps.
    names = ("_TAIL_ROWS", "_LOOKUP_MERGE", "_BLOCK", "_SPAN")
    saved = [getattr(ledger_module, name) for name in names]
    if tiny_tail:
        for name, value in zip(names, (2, 3, 2, 5), strict=True):
            setattr(ledger_module, name, value)
    try:
        run_model(ops)
    finally:
        for name, value in zip(names, saved, strict=True):
            setattr(ledger_module, name, value)


def run_model(ops: list[tuple]) -> None:
    ledger, model = Ledger(), Model()
    taken: list[str] = []
    for op, *args in ops:
        if op == "observe":
            key, version = args
            assert ledger.observe(key, version) == (model.src.get(key) != version)
            model.src[key] = version
        elif op == "observe_many":
            (listing,) = args
            changed = ledger.observe_many(listing.items())
            assert sorted(changed) == sorted(k for k, x in listing.items() if model.src.get(k) != x)
            model.src.update(listing)
        elif op == "observe_grid":
            version, step = args
            listing = dict.fromkeys(GRID_KEYS[::step], version)
            changed = ledger.observe_many(listing.items())
            assert sorted(changed) == sorted(k for k, x in listing.items() if model.src.get(k) != x)
            model.src.update(listing)
        elif op == "sweep":
            (listing,) = args
            ledger.begin_sweep()
            ledger.observe_many(listing.items())
            model.src.update(listing)
            gone = ledger.end_sweep()
            assert sorted(gone) == sorted(
                k for k, x in model.src.items() if x is not None and k not in listing
            )
        elif op == "set_copied":
            key, version, digest = args
            digest = digest if version is not None else ""
            ledger.set_copied(key, version, digest)
            model.dst[key] = version
            model.digest[key] = digest
            model.inflight.discard(key)
        elif op == "take":
            (limit,) = args
            for key in model.src.keys() | model.dst.keys():  # as the supervisor does, after results
                ledger.requeue(key)
            got = ledger.take(limit)
            assert len(got) == len(set(got))
            expected = {k for k in KEYS if model.needs_work(k)}
            assert set(got) <= expected
            assert len(got) == min(limit, len(expected))
            for key in got:
                model.inflight.add(key)
            taken += got
        elif op == "done":
            (count,) = args
            for key in taken[:count]:
                ledger.set_copied(key, model.src.get(key))
                model.dst[key] = model.src.get(key)
                model.digest[key] = ""
                model.inflight.discard(key)
            del taken[:count]
        elif op == "set_inflight":
            key, flag = args
            if flag and not model.needs_work(key):
                continue  # the supervisor only marks keys it took
            ledger.set_inflight(key, flag)
            (model.inflight.add if flag else model.inflight.discard)(key)
        elif op == "layout":
            model.layout = LAYOUTS[args[0]]
            ledger.set_layout(model.layout)
        elif op == "drop":
            ledger.drop_array("")
            model.layout = None
        check_against(ledger, model)


def test_metadata_rewritten_without_a_new_grid_keeps_the_rows() -> None:
    """NaN != NaN: a float array's fill value once made every metadata event rebuild (and
    copy) all its rows; only what names the files matters."""
    meta = {"zarr_format": 2, "shape": [4], "chunks": [1], "dtype": "<f4", "fill_value": "NaN"}
    ledger = Ledger()
    first = parse_array_metadata({**meta, "fill_value": float("nan")}, "", ".zarray")
    assert ledger.set_layout(first)
    ledger.observe("0", v(1))
    state = ledger.arrays[""]
    again = parse_array_metadata({**meta, "fill_value": float("nan")}, "", ".zarray")
    assert not ledger.set_layout(again)
    assert ledger.arrays[""] is state and ledger.source("0") == v(1)


def test_rows_of_files_deleted_at_both_ends_are_dropped_after_a_sweep() -> None:
    ledger = Ledger()
    ledger.set_layout(layout([10**6, 10**6], [1, 1]))
    keys = clustered_tiles(100)
    ledger.observe_many((k, v(1)) for k in keys)
    for key in keys[:50]:
        ledger.set_copied(key, v(1))
    for key in keys[::2]:  # deleted at the source; half of them were copied
        ledger.observe(key, None)
    for key in keys[:50:2]:
        ledger.set_copied(key, None)  # and deleted at the destination
    state = ledger.arrays[""]
    assert state.size == 100
    ledger.begin_sweep()
    ledger.observe_many((k, v(1)) for k in keys[1::2])
    assert ledger.end_sweep() == []
    # 25 were deleted at both ends, 25 were deleted before they were ever copied.
    assert state.size == 50, "rows that hold nothing are dropped"
    for i, key in enumerate(keys):
        gone = i % 2 == 0
        assert ledger.source(key) == (None if gone else v(1))
        assert ledger.copied(key) == (None if gone or i >= 50 else v(1))
        assert ledger.needs_work(key) == (not gone and i >= 50)


def test_a_file_only_at_the_destination_is_handed_out_for_deletion() -> None:
    """A resumed run finds a file the source no longer has: nothing observed it, yet
    take() must hand it out (a resume used to drain forever, '0/1 files')."""
    ledger = Ledger()
    ledger.set_copied("gone.txt", v(3))
    assert ledger.needs_work("gone.txt")
    assert ledger.take(10) == ["gone.txt"]


def test_source_totals_count_files_not_copies() -> None:
    ledger = Ledger()
    ledger.set_layout(layout([4], [1]))
    for key in ("c/0", "c/1", "notes"):
        ledger.observe(key, v(2))
    ledger.set_copied("c/0", v(2))
    ledger.set_copied("notes", v(2))
    ledger.observe("c/0", v(3))  # rewritten: copied once, not current any more
    ledger.set_copied("c/0", v(3))  # and copied again: still one file
    assert ledger.source_totals() == (3, 2 + 3 + 2, 2)


@settings(max_examples=60, deadline=None)
@given(
    cases=st.lists(
        st.tuples(
            st.integers(0, 63),  # chunk index of a 64-cell (dense) or 10^6-cell (sparse) grid
            st.sampled_from(["same", "other_size", "other_mtime", "old_record", "no_record"]),
            st.booleans(),  # the source holds the file
            st.sampled_from(["", "ab" * 32]),  # the journal's digest
        ),
        unique_by=lambda c: c[0],
        max_size=40,
    ),
    sparse=st.booleans(),
    batch=st.sampled_from([1, 3, 8192]),
)
def test_bulk_trust_decides_as_plan_decide_does(
    cases: list[tuple], sparse: bool, batch: int
) -> None:
    """`trust_journaled` (a rerun's vectorised start) trusts exactly the keys for which
    `plan.decide` says TRUST, records their digests, and hands every other key back."""
    from softcopy.engine.plan import TRUST, decide

    grid = [1000, 1000] if sparse else [8, 8]
    bulk, single = Ledger(), Ledger()
    there: list[tuple[str, Version]] = []
    journaled: dict[str, tuple[Version, str]] = {}
    for ledger in (bulk, single):
        ledger.set_layout(layout(grid, [1, 1]))
    for i, kind, present, digest in cases:
        key = f"c/{i // 8}/{i % 8}"
        here = Version(10 + i, 1000 + i, 5000 + i, 7000 + i)
        if present:
            bulk.observe(key, here)
            single.observe(key, here)
        dst = {
            "other_size": Version(here.size + 1, here.mtime_ns, 1, 1),
            "other_mtime": Version(here.size, here.mtime_ns + 1, 1, 1),
        }.get(kind, Version(here.size, here.mtime_ns, 1, 1))
        there.append((key, dst))
        if kind == "old_record":
            journaled[key] = (here._replace(ino=1), digest)
        elif kind != "no_record":
            journaled[key] = (here, digest)
    there.append(("zarr.json", Version(1, 1, 1, 1)))  # not a chunk: always handed back
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ledger_module, "_TRUST_BATCH", batch)
        trusted, rest = bulk.trust_journaled(there, journaled)
    expected_rest = []
    for key, dst in there:
        here = single.source(key)
        if key != "zarr.json" and decide(here, dst, journaled.get(key), True) == TRUST:
            single.set_copied(key, here, journaled[key][1])
        else:
            expected_rest.append((key, dst))
    assert sorted(rest) == sorted(expected_rest)
    assert trusted == len(there) - len(rest)
    for key, _ in there:
        assert bulk.copied(key) == single.copied(key), key
        assert bulk.needs_work(key) == single.needs_work(key), key
    assert bulk.digests() == single.digests()


def v2_layout(shape: list[int], chunks: list[int], path: str):
    meta = {
        "zarr_format": 2,
        "shape": shape,
        "chunks": chunks,
        "dtype": "<u2",
        "compressor": None,
        "fill_value": 0,
        "order": "C",
        "filters": None,
    }
    return parse_array_metadata(meta, path, ".zarray")


@settings(max_examples=80, deadline=None)
@given(
    listing=st.lists(
        st.sampled_from(
            # Two "/" arrays whose last axes differ (4 and 2): "3" is a chunk only in `a`;
            # a "." array; names that are no chunk (01, +1, out of range); plain files.
            [f"a/c/{i}/{j}" for i in range(3) for j in range(5)]
            + [f"b/c/{i}/{j}" for i in range(2) for j in range(4)]
            + [f"v2/{i}.{j}" for i in range(2) for j in range(3)]
            + ["a/c/01/1", "a/c/0/01", "a/c/0/+1", "b/c/0/99", "a/zarr.json", "log.txt", "v2/x"]
        ),
        max_size=60,
    ),
)
def test_observe_many_agrees_with_observe(listing: list[str]) -> None:
    """The inlined, memoised lookup of a listing puts every key where `observe` puts it,
    whatever order the keys come in (directories interleaved, arrays alternating)."""
    bulk, single = Ledger(), Ledger()
    for ledger in (bulk, single):
        ledger.set_layout(layout([3, 4], [1, 1], "a"))
        ledger.set_layout(layout([2, 2], [1, 1], "b"))
        ledger.set_layout(v2_layout([2, 2], [1, 1], "v2"))
    items = [(k, Version(n + 1, n, n, n)) for n, k in enumerate(listing)]
    changed = bulk.observe_many(items)
    expected = [k for k, version in items if single.observe(k, version)]
    assert sorted(changed) == sorted(expected)
    assert set(bulk.other) == set(single.other)
    for key, _ in items:
        assert bulk.source(key) == single.source(key), key
        a, b = bulk.locate(key), single.locate(key)
        assert (a is None) == (b is None) and (a is None or a[1] == b[1]), key  # type: ignore[index]
    assert bulk.expected_counts() == single.expected_counts()


def test_a_file_copied_twice_in_a_run_is_one_file_copied() -> None:
    # A chunk the writer rewrote mid-copy is copied again: `files_copied` counts it once.
    ledger = Ledger()
    ledger.set_layout(layout([4, 4], [2, 2]))
    for key in ("c/0/0", "c/1/1", "zarr.json", "notes.txt"):
        ledger.observe(key, v(1))
    for key in ("c/0/0", "zarr.json", "notes.txt"):
        assert ledger.copied_first(key) is True, key
        ledger.set_copied(key, v(1))
        ledger.observe(key, v(2))  # rewritten: copied again
        ledger.set_copied(key, v(2))
        assert ledger.copied_first(key) is False, key
    assert ledger.copied_first("c/1/1") is True  # another chunk of the same array
    ledger.set_layout(layout([8, 4], [2, 2]))  # the array grew: its rows carried over
    assert ledger.copied_first("c/0/0") is False
    assert ledger.copied_first("c/3/1") is True


def test_a_key_located_again_after_its_array_changed_is_located_afresh() -> None:
    # locate() remembers the last key it located: a new grid or a dropped array must not
    # hand out the old array's place.
    ledger = Ledger()
    ledger.set_layout(layout([4, 4], [2, 2]))
    first = ledger.locate("c/1/1")
    assert first is not None and ledger.locate("c/1/1") is first
    ledger.set_layout(layout([4, 4], [1, 1]))  # another grid: c/1/1 is another chunk
    again = ledger.locate("c/1/1")
    assert again is not None and again[0] is not first[0] and again[1] == 5
    ledger.drop_array("")
    assert ledger.locate("c/1/1") is None
