"""Property tests of the metadata parsers: any input either parses to a layout whose keys and
indices round-trip, or is a MetadataError; never another exception, never a huge allocation."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from softcopy.errors import MetadataError
from softcopy.zarr.layout import (
    INDEX_LIMIT,
    MAX_NESTING,
    ArrayLayout,
    _deep_json_problem,
    attributes_problem,
    json_nesting,
    parse_array_metadata,
    parse_json,
    read_node,
)

# Integers where parsers break: around 0, around int64, and far beyond anything numpy holds.
edgy_ints = st.one_of(
    st.integers(-3, 12),
    st.integers(0, 2**70),
    st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, 10**19, 10**400, -(2**63)]),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), edgy_ints, st.floats(allow_nan=True), st.text(max_size=5)
)
anything = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
# Now and then more dimensions than numpy's index functions take.
dims = st.integers(0, 9).flatmap(
    lambda r: (
        st.lists(st.integers(1, 2), min_size=30, max_size=40)
        if r == 9
        else st.lists(edgy_ints, max_size=5)
    )
)


def maybe(value: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly `value`, sometimes anything at all, sometimes missing (KeyError)."""
    return st.integers(0, 19).flatmap(
        lambda r: value if r < 18 else anything if r == 18 else st.just(KeyError)
    )


@st.composite
def metadata(draw: st.DrawFn) -> dict:
    rank = draw(st.integers(0, 4))
    shape = draw(maybe(st.lists(edgy_ints, min_size=rank, max_size=rank) | dims))
    chunks = draw(maybe(st.lists(edgy_ints, min_size=rank, max_size=rank) | dims))
    fmt = draw(maybe(st.sampled_from([2, 3])))
    if fmt == 2:
        meta = {
            "zarr_format": 2,
            "shape": shape,
            "chunks": chunks,
            "dtype": draw(maybe(st.sampled_from(["<u2", "|u1"]))),
            "dimension_separator": draw(maybe(st.sampled_from([".", "/", None, "-"]))),
        }
    else:
        sharding = {"name": "sharding_indexed", "configuration": {"chunk_shape": chunks}}
        meta = {
            "zarr_format": fmt,
            "node_type": draw(maybe(st.just("array"))),
            "shape": shape,
            "data_type": draw(maybe(st.just("uint16"))),
            "chunk_grid": draw(
                maybe(st.fixed_dictionaries({"name": maybe(st.just("regular")),
                                             "configuration": maybe(st.fixed_dictionaries(
                                                 {"chunk_shape": maybe(st.just(chunks))}))}))
            ),
            "chunk_key_encoding": draw(
                maybe(st.fixed_dictionaries({"name": maybe(st.sampled_from(["default", "v2"])),
                                             "configuration": maybe(st.fixed_dictionaries(
                                                 {"separator": maybe(st.sampled_from(
                                                     [".", "/", "|"]))}))}))
            ),
            "codecs": draw(maybe(st.sampled_from([[{"name": "bytes"}], [sharding], ["bytes"]]))),
        }  # fmt: skip
    return {k: v for k, v in meta.items() if v is not KeyError}


def check_layout(layout: ArrayLayout, picks: list[int]) -> None:
    n = layout.n_files
    assert 0 <= n <= INDEX_LIMIT
    if n == 0:
        return
    indices = sorted({0, n - 1, *(p % n for p in picks)})
    keys = [layout.key(i) for i in indices]
    assert [layout.index(k) for k in keys] == indices
    assert layout.keys(np.array(indices, dtype=np.int64)) == keys
    assert layout.index(keys[-1] + "9" * 5000) is None  # int() refuses > 4300 digits
    if layout.shape:
        assert layout.last_coordinate("9" * 5000) is None
    for key in keys:
        assert layout.index(key + "0") != layout.index(key) or layout.shape == ()
        assert layout.index("0" + key) is None or layout.prefix or key == "0"
    if layout.shape:
        # The ledger's vectorised carry-over: unravel and ravel in numpy int64.
        coords = np.unravel_index(np.array(indices, dtype=np.int64), layout.grid)
        assert np.ravel_multi_index(coords, layout.grid).tolist() == indices


@settings(max_examples=600, deadline=None)
@given(metadata(), st.lists(st.integers(0, 2**64), max_size=4),
       st.sampled_from([".zarray", "zarr.json", "meta.json"]))  # fmt: skip
@example({"zarr_format": 3, "node_type": "array", "shape": [10**6, 10**6], "data_type": "u1",
          "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 1]}},
          "codecs": ["bytes"]}, [123456789012], "zarr.json")  # fmt: skip
@example({"zarr_format": 2, "shape": [2**63 - 1], "chunks": [1], "dtype": "<u2"}, [2**63 - 2],
         ".zarray")  # fmt: skip
@example({"zarr_format": 2, "shape": [2**40, 2**40], "chunks": [1, 1], "dtype": "<u2"}, [],
         ".zarray")  # fmt: skip
@example({"zarr_format": 2, "shape": [0, 2**62, 8], "chunks": [1, 1, 1], "dtype": "<u2"}, [],
         ".zarray")  # fmt: skip
def test_any_metadata_parses_to_a_round_tripping_layout_or_is_a_metadata_error(
    meta: dict, picks: list[int], name: str
) -> None:
    try:
        layout = parse_array_metadata(meta, "a", f"/x/a/{name}")
    except MetadataError as exc:
        assert f"/x/a/{name}" in str(exc)
        return
    check_layout(layout, picks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(anything, st.integers(0, 3 * MAX_NESTING), st.sampled_from(["zarr.json", ".zarray",
                                                                   ".zgroup"]))  # fmt: skip
def test_any_file_is_a_node_or_a_metadata_error(content: object, depth: int, name: str) -> None:
    text = json.dumps({"zarr_format": 3, "node_type": "array", "x": content})
    text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_text(text)
        try:
            node = read_node(Path(tmp), "")
        except MetadataError as exc:
            assert str(Path(tmp) / name) in str(exc)
            assert depth <= MAX_NESTING or "nesting deeper" in exc.problem
            return
    assert node == "group" or isinstance(node, ArrayLayout)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=10,
)  # fmt: skip


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@given(json_values, st.integers(0, 3))
def test_nesting_is_counted_outside_strings(value: object, indent: int) -> None:
    assert json_nesting(json.dumps(value, indent=indent or None)) == depth_of(value)


@given(json_values, st.data())
def test_the_recursion_free_check_agrees_with_json_loads(value: object, data: st.DataObject):
    text = json.dumps(value)
    assert _deep_json_problem(text) is None
    # One character removed, inserted or replaced: both must agree on validity.
    i = data.draw(st.integers(0, len(text)))
    c = data.draw(st.sampled_from(list('[]{},:"\\ 0a-.e')))
    mutated = data.draw(st.sampled_from([text[:i] + text[i + 1 :], text[:i] + c + text[i:],
                                         text[:i] + c + text[i + 1 :]]))  # fmt: skip
    try:
        json.loads(mutated)
        valid = True
    except ValueError:
        valid = False
    assert (_deep_json_problem(mutated) is None) == valid, mutated


def test_deep_attributes_are_valid_json_and_broken_ones_are_named(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / ".zattrs").write_text('{"a": ' + deep + "}")
    assert attributes_problem(tmp_path / ".zattrs") is None
    (tmp_path / ".zattrs").write_text('{"a": ' + deep[:-1] + "}")
    assert "not valid JSON" in attributes_problem(tmp_path / ".zattrs")
    try:
        parse_json(("[" * 100_000).encode(), "f")
    except MetadataError as exc:
        assert exc.problem == f"nesting deeper than {MAX_NESTING} levels (100000)"
