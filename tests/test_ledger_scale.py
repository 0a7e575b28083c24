"""The ledger at scale: rows grow, merge and turn dense in place, and a rerun's bulk trust
keeps each array's keys apart. In process: versions are data."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pytest
from test_ledger import layout

from softcopy.engine import ledger as ledger_module
from softcopy.engine import observe
from softcopy.engine.ledger import Ledger
from softcopy.sources.scan import Version


def version(i: int) -> Version:
    return Version(i, 10**18 + i, i + 7, 10**18 + 2 * i)


def listing_order(keys: list[str], per_dir: int, seed: int) -> list[str]:
    """Keys as a listing gives them: directories and the names in each in no order."""
    rng = random.Random(seed)
    dirs = [keys[i : i + per_dir] for i in range(0, len(keys), per_dir)]
    rng.shuffle(dirs)
    for d in dirs:
        rng.shuffle(d)
    return [k for d in dirs for k in d]


def test_a_listing_that_fills_a_grid_peaks_below_48_bytes_per_file() -> None:
    """Growing, merging and turning dense never hold the rows twice (the peak was 81 B per
    file: a merge or the switch to dense built new arrays beside the old ones)."""
    n, per_dir = 200_000, 1000
    lay = layout([n // per_dir, per_dir], [1, 1])
    keys = listing_order([lay.key(i) for i in range(n)], per_dir, seed=1)
    items = [(k, version(i)) for i, k in enumerate(keys)]
    warm = Ledger()  # numpy's lazy imports, before anything is measured
    warm.set_layout(layout([64, 64], [1, 1]))
    warm.observe_many([(lay.key(i), version(i)) for i in range(3000)])
    tracemalloc.start()
    try:
        ledger = Ledger()
        ledger.set_layout(lay)
        start = tracemalloc.get_traced_memory()[0]
        for i in range(0, n, observe._BATCH):
            ledger.observe_many(items[i : i + observe._BATCH])
        held, peak = (m - start for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert ledger.arrays[""].ids is None, "dense once the grid is full"
    assert peak <= 48 * n, f"{peak / n:.1f} B per file at the peak"
    assert held <= 36 * n, f"{held / n:.1f} B per file held"
    assert ledger.source_totals()[0] == n
    for i in range(0, n, 997):
        assert ledger.source(lay.key(i)) == version(keys.index(lay.key(i)))


@pytest.mark.parametrize("block", [3, 64, 16384])
def test_rows_keep_everything_through_merges_and_the_switch_to_dense(block: int) -> None:
    """Sources, copies (this version or another), jobs in flight and digests survive the
    in-place merges and the in-place switch to dense, moved a block at a time."""
    cells = 3000
    lay = layout([30, 100], [1, 1])
    keys = listing_order([lay.key(i) for i in range(cells)], 100, seed=block)
    at = {k: cells + i for i, k in enumerate(keys)}
    ledger = Ledger()
    ledger.set_layout(lay)
    expect: dict[str, tuple] = {}  # key -> (source, copied, digest, in flight)
    saved = ledger_module._BLOCK
    ledger_module._BLOCK = block
    try:
        for start in range(0, cells, 211):
            batch = keys[start : start + 211]
            ledger.observe_many((k, version(at[k])) for k in batch)
            for j, key in enumerate(batch):
                here = version(at[key])
                if j % 3 == 0:  # copied as it is now, with its digest
                    digest = f"{j % 255 + 1:02x}" * 32
                    ledger.set_copied(key, here, digest)
                    expect[key] = (here, here, digest, False)
                elif j % 3 == 1:  # copied, then the source moved on
                    ledger.set_copied(key, here)
                    newer = here._replace(size=here.size + 1)
                    ledger.observe(key, newer)
                    expect[key] = (newer, here, "", False)
                else:  # handed to a copier
                    ledger.set_inflight(key, True)
                    expect[key] = (here, None, "", True)
            state = ledger.arrays[""]
            assert state.ids is None or len(state.ids) <= -(-4 * cells // 5) + 211
    finally:
        ledger_module._BLOCK = saved
    assert ledger.arrays[""].ids is None
    for key, (here, copied, _, inflight) in expect.items():
        assert ledger.source(key) == here, key
        assert ledger.copied(key) == copied, key
        assert ledger.needs_work(key) == (not inflight and here != copied), key
    known = ledger.digests()
    assert {k: d for k, (_, d) in known.items()} == {k: e[2] for k, e in expect.items() if e[2]}


def test_rows_a_caller_still_views_are_copied_not_moved_under_it() -> None:
    """Growing in place is a realloc: with a view of the rows alive, numpy refuses, and the
    ledger copies instead; the view still reads the rows it was taken of."""
    lay = layout([10**6, 10**6], [1, 1])  # sparse for ever
    ledger = Ledger()
    ledger.set_layout(lay)
    ledger.observe_many([(lay.key(i), version(i)) for i in range(100)])
    state = ledger.arrays[""]
    view = state.src[:100]
    before = view.copy()
    ledger.observe_many([(lay.key(i), version(i)) for i in range(100, 5000)])
    assert np.array_equal(view, before)
    assert state.src is not view.base
    assert all(ledger.source(lay.key(i)) == version(i) for i in range(0, 5000, 7))


def test_bulk_trust_keeps_the_coordinates_of_each_array_apart() -> None:
    """Chunk names are parsed once per directory run and array; a directory of another
    array in between must not lend its parse (here "7" is past the second array's axis)."""
    wide = layout([4, 10], [1, 1], path="wide")
    narrow = layout([4, 5], [1, 1], path="narrow")
    ledger = Ledger()
    ledger.set_layout(wide)
    ledger.set_layout(narrow)
    there, journaled = [], {}
    for d in range(4):
        for prefix, lay in (("wide/", wide), ("narrow/", narrow)):
            for j in range(10):
                key = f"{prefix}c/{d}/{j}"
                here = version(len(there))
                if j < lay.grid[1]:
                    ledger.observe(key, here)
                there.append((key, Version(here.size, here.mtime_ns, 1, 1)))
                journaled[key] = (here, "")
    trusted, rest = ledger.trust_journaled(there, journaled)
    beyond = {k for k, _ in there if k.startswith("narrow/") and int(k.rsplit("/", 1)[1]) >= 5}
    assert {k for k, _ in rest} == beyond
    assert trusted == len(there) - len(beyond)
    assert all(not ledger.needs_work(k) for k, _ in there)


def test_counting_and_queueing_hold_a_span_of_rows_not_the_array() -> None:
    """Totals, counts and a refill of the queue look at the rows a span at a time: at ten
    million rows, one mask's indices and sizes at once were hundreds of MB."""
    n = 200_000
    lay = layout([n // 1000, 1000], [1, 1])
    ledger = Ledger()
    ledger.set_layout(lay)
    ledger.observe_many([(lay.key(i), version(i)) for i in range(n)])
    ledger.set_copied(lay.key(5), version(5))
    ledger.pending_totals(4096)  # numpy's lazy imports, before anything is measured
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        totals = ledger.pending_totals(4096), ledger.pending_count(), ledger.source_totals()
        counted = tracemalloc.get_traced_memory()[1] - start
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        taken = ledger.take(100)
        refilled = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    blocks = sum(-(-i // 4096) * 4096 for i in range(n) if i != 5)  # version(i) has size i
    assert totals == ((n - 1, blocks), n - 1, (n, sum(range(n)), 1))
    assert counted < 48 * ledger_module._SPAN, f"{counted} B"  # was 17 B per row
    assert taken == [lay.key(i) for i in range(101) if i != 5]
    assert refilled < 8 * 1024 * 1024  # 20,000 keys, and a span's rows beside them
