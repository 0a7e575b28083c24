"""The ledger's bookkeeping, in process: no files needed, versions are data."""

from __future__ import annotations

from softcopy.layout import parse_array_metadata
from softcopy.ledger import Ledger
from softcopy.scan import Version


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
    assert ledger.memory_bytes() <= 64 * 4


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
