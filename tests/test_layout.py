"""Tests for softcopy.zarr.layout against archives really written by tensorstore and zarr-python."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import zarr

from softcopy.errors import MetadataError
from softcopy.zarr import layout as layout_module
from softcopy.zarr.layout import (
    METADATA_NAMES,
    ArrayLayout,
    metadata_kind,
    parse_array_metadata,
    read_node,
)

# Non-divisible shape: the last chunk of every dimension is partial.
SHAPE = (5, 7, 9)
CHUNKS = (2, 3, 4)
GRID = (3, 3, 3)
# C-order ravel indices of the chunks the tests write (corners, middle, partial edge chunks).
WRITTEN = [0, 1, 5, 13, 20, 26]


def chunk_files(array_dir: Path) -> set[str]:
    """Every non-metadata file below `array_dir`, as posix paths relative to it."""
    found = set()
    for root, _dirs, files in os.walk(array_dir):
        for name in files:
            if name not in METADATA_NAMES:
                found.add((Path(root) / name).relative_to(array_dir).as_posix())
    return found


def region(index: int, shape: tuple[int, ...], unit: tuple[int, ...]) -> tuple[slice, ...]:
    coords = np.unravel_index(index, [-(-s // u) for s, u in zip(shape, unit, strict=True)])
    return tuple(
        slice(int(c) * u, min((int(c) + 1) * u, s))
        for c, u, s in zip(coords, unit, shape, strict=True)
    )


def open_ts(array_dir: Path, driver: str, metadata: dict) -> ts.TensorStore:
    spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(array_dir)}}
    return ts.open({**spec, "metadata": metadata}, create=True).result()


def write_ts(array_dir: Path, driver: str, metadata: dict, indices: list[int]) -> None:
    store = open_ts(array_dir, driver, metadata)
    unit = tuple(metadata.get("chunks") or metadata["chunk_grid"]["configuration"]["chunk_shape"])
    for i in indices:
        sel = region(i, tuple(metadata["shape"]), unit)
        store[sel].write(np.full([s.stop - s.start for s in sel], i + 1, np.uint16)).result()


def assert_matches_disk(lay: ArrayLayout, array_dir: Path, indices: list[int]) -> None:
    on_disk = chunk_files(array_dir)
    assert on_disk == {lay.key(i) for i in indices}
    assert on_disk == set(lay.keys(np.array(indices)))
    for key in on_disk:
        assert lay.key(lay.index(key)) == key
    assert sorted(lay.index(k) for k in on_disk) == sorted(indices)
    assert (array_dir / lay.metadata_name()).is_file()


def enc(name: str, separator: str) -> dict:
    return {"name": name, "configuration": {"separator": separator}}


def regular(chunk_shape: list) -> dict:
    return {"name": "regular", "configuration": {"chunk_shape": chunk_shape}}


V2_META = {"dtype": "<u2", "shape": list(SHAPE), "chunks": list(CHUNKS)}
V3_META = {
    "data_type": "uint16",
    "shape": list(SHAPE),
    "chunk_grid": regular(list(CHUNKS)),
}


@pytest.mark.parametrize(
    ("driver", "extra", "fmt", "prefix", "sep", "sample"),
    [
        ("zarr", {"dimension_separator": "."}, 2, "", ".", "2.1.0"),
        ("zarr", {"dimension_separator": "/"}, 2, "", "/", "2/1/0"),
        ("zarr3", {}, 3, "c", "/", "c/2/1/0"),
        ("zarr3", {"chunk_key_encoding": enc("default", ".")}, 3, "c", ".", "c.2.1.0"),
        ("zarr3", {"chunk_key_encoding": {"name": "v2"}}, 3, "", ".", "2.1.0"),
        ("zarr3", {"chunk_key_encoding": enc("v2", "/")}, 3, "", "/", "2/1/0"),
    ],
    ids=["v2-dot", "v2-slash", "v3-default", "v3-default-dot", "v3-v2keys", "v3-v2keys-slash"],
)  # fmt: skip
def test_tensorstore_unsharded(tmp_path, driver, extra, fmt, prefix, sep, sample):
    array_dir = tmp_path / "arr.zarr"
    base = V2_META if driver == "zarr" else V3_META
    write_ts(array_dir, driver, {**base, **extra}, WRITTEN)

    lay = read_node(array_dir, "")
    assert isinstance(lay, ArrayLayout)
    assert (lay.path, lay.zarr_format, lay.shape, lay.file_shape, lay.grid) == (
        "",
        fmt,
        SHAPE,
        CHUNKS,
        GRID,
    )
    assert (lay.prefix, lay.separator, lay.sharded, lay.n_files) == (prefix, sep, False, 27)
    assert lay.dtype == ("<u2" if fmt == 2 else "uint16")
    assert lay.key(2 * 9 + 1 * 3 + 0) == sample
    assert_matches_disk(lay, array_dir, WRITTEN)


def test_tensorstore_sharded(tmp_path):
    array_dir = tmp_path / "arr.zarr"
    meta = {
        "data_type": "uint16",
        "shape": [5, 8, 8],
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 8, 8]}},
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [1, 4, 4],
                    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                },
            }
        ],
    }
    store = open_ts(array_dir, "zarr3", meta)
    # One inner chunk of shard 0 and the (partial) last shard: the files are shards.
    store[0, 0:4, 0:4].write(np.ones((4, 4), np.uint16)).result()
    store[4, :, :].write(np.ones((8, 8), np.uint16)).result()

    lay = read_node(array_dir, "sub/arr.zarr")
    assert isinstance(lay, ArrayLayout)
    assert lay.sharded
    assert (lay.path, lay.file_shape, lay.grid, lay.n_files) == (
        "sub/arr.zarr",
        (2, 8, 8),
        (3, 1, 1),
        3,
    )
    assert_matches_disk(lay, array_dir, [0, 2])


@pytest.mark.parametrize(
    ("driver", "extra", "key"),
    [
        ("zarr", {}, "0"),
        ("zarr3", {}, "c"),
        ("zarr3", {"chunk_key_encoding": enc("default", ".")}, "c"),
        ("zarr3", {"chunk_key_encoding": {"name": "v2"}}, "0"),
    ],
)  # fmt: skip
def test_tensorstore_zero_d(tmp_path, driver, extra, key):
    array_dir = tmp_path / "scalar.zarr"
    meta = {"shape": [], **({"dtype": "<u2"} if driver == "zarr" else {"data_type": "uint16"})}
    store = open_ts(array_dir, driver, {**meta, **extra})
    store.write(np.uint16(7)).result()

    lay = read_node(array_dir, "scalar.zarr")
    assert isinstance(lay, ArrayLayout)
    assert (lay.shape, lay.grid, lay.n_files, lay.key(0)) == ((), (), 1, key)
    assert_matches_disk(lay, array_dir, [0])
    assert lay.index("c/0") is None
    assert lay.index("0.0") is None


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
@pytest.mark.parametrize(
    ("fmt", "shards", "prefix", "sep"),
    [(2, None, "", "."), (3, None, "c", "/"), (3, (4, 6, 8), "c", "/")],
    ids=["v2", "v3", "v3-sharded"],
)
def test_zarr_python_group_with_array(tmp_path, fmt, shards, prefix, sep):
    root = tmp_path / "g.zarr"
    group = zarr.open_group(root, mode="w", zarr_format=fmt)
    arr = group.create_array("img", shape=SHAPE, chunks=CHUNKS, shards=shards, dtype="uint16")
    unit = shards or CHUNKS
    written = [0, 3] if shards else WRITTEN
    for i in written:
        sel = region(i, SHAPE, unit)
        arr[sel] = i + 1
    group.attrs["note"] = "x"
    zarr.consolidate_metadata(root)

    assert read_node(root, "") == "group"
    lay = read_node(root / "img", "img")
    assert isinstance(lay, ArrayLayout)
    assert (lay.zarr_format, lay.prefix, lay.separator, lay.sharded) == (
        fmt,
        prefix,
        sep,
        shards is not None,
    )
    assert lay.file_shape == unit
    assert lay.dtype == ("<u2" if fmt == 2 else "uint16")
    assert_matches_disk(lay, root / "img", written)


# --- key <-> index on odd shapes -------------------------------------------------------------


def v3_layout(shape, chunks, encoding=None, **extra) -> ArrayLayout:
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": encoding or {"name": "default"},
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "fill_value": "NaN",
        **extra,
    }
    return parse_array_metadata(meta, "a", "/x/a/zarr.json")


def v2_layout(shape, chunks, sep=None) -> ArrayLayout:
    meta = {"zarr_format": 2, "shape": list(shape), "chunks": list(chunks), "dtype": "<f4"}
    if sep is not None:
        meta["dimension_separator"] = sep
    return parse_array_metadata(meta, "a", "/x/a/.zarray")


ODD_LAYOUTS = [
    v3_layout((10, 1, 7), (3, 1, 7)),
    v3_layout((1000,), (7,), {"name": "v2", "configuration": {"separator": "/"}}),
    v2_layout((3, 5, 2, 11), (2, 2, 2, 4), sep="/"),
    v2_layout((13, 17), (100, 100)),
    v2_layout((), ()),
    v3_layout((), ()),
]


@pytest.mark.parametrize("lay", ODD_LAYOUTS, ids=lambda lay: f"{lay.zarr_format}-{lay.shape}")
def test_key_index_round_trip(lay):
    expected_grid = tuple(-(-s // c) for s, c in zip(lay.shape, lay.file_shape, strict=True))
    assert lay.grid == expected_grid
    assert lay.n_files == int(np.prod(expected_grid))
    all_keys = [lay.key(i) for i in range(lay.n_files)]
    assert len(set(all_keys)) == lay.n_files
    assert [lay.index(k) for k in all_keys] == list(range(lay.n_files))
    assert lay.keys(np.arange(lay.n_files)) == all_keys
    rng = np.random.default_rng(0)
    sample = rng.integers(0, lay.n_files, 50).astype(np.uint32)
    assert lay.keys(sample) == [all_keys[i] for i in sample]
    assert lay.keys(sample.tolist()) == [all_keys[i] for i in sample]
    with pytest.raises(IndexError):
        lay.key(lay.n_files)
    with pytest.raises(IndexError):
        lay.key(-1)
    with pytest.raises(IndexError):
        lay.keys([0, lay.n_files])


def test_keys_large_grid_and_many_indices():
    lay = v3_layout((10**10, 50, 40), (1, 1, 1))
    big = [0, 10**10 * 2000 - 1, 12345678901]
    assert lay.keys(big) == [lay.key(i) for i in big] == ["c/0/0/0", "c/9999999999/49/39",
                                                          "c/6172839/22/21"]  # fmt: skip
    many = np.arange(0, 10**10 * 2000, 10**10 * 2000 // 20000, dtype=np.int64)
    assert lay.keys(many) == [lay.key(int(i)) for i in many]
    with pytest.raises(TypeError):
        lay.keys(np.array([1.0]))
    assert lay.keys([]) == []


def test_zero_length_dimension():
    lay = v2_layout((4, 0, 3), (2, 2, 2))
    assert lay.grid == (2, 0, 2)
    assert lay.n_files == 0
    assert lay.index("0.0.0") is None
    assert lay.keys(np.array([], dtype=np.int64)) == []
    with pytest.raises(IndexError):
        lay.key(0)


@pytest.mark.parametrize(
    ("lay", "key"),
    [
        (v3_layout((4, 6, 8), (1, 4, 4)), bad)
        for bad in [
            "c/0/1/0.__lock",
            "c/0/1/0_c132adad6775c2a0.__lock",
            "c/0/1/1.0123456789abcdef0123456789abcdef.partial",
            "c/4/0/0",  # out of range
            "c/0/2/0",
            "c/0/0",  # wrong rank
            "c/0/0/0/0",
            "c/01/0/0",  # leading zero: not a key any writer produces
            "c/-1/0/0",
            "c/+1/0/0",
            "c/ 1/0/0",
            "c/1_0/0/0",
            "c/\u0661/0/0",  # Arabic-Indic digit one: int() would accept it
            "c/0/0/",
            "c//0/0",
            "c.0.0.0",  # wrong separator
            "0/0/0",  # missing prefix
            "d/0/0/0",
            "c",
            "",
            "zarr.json",
        ]
    ]
    + [
        (v2_layout((4, 6, 8), (1, 4, 4)), bad)
        for bad in [
            "0.1.abcdef0123456789abcdef0123456789.partial",
            "0.1.0.__lock",
            "0/1/0",
            "c/0/1/0",
            "00.0.0",
            "0.0",
            "4.0.0",
            ".zarray",
            "0.0.0 ",
        ]
    ],
)
def test_index_rejects(lay, key):
    assert lay.index(key) is None


def test_index_accepts_multi_digit():
    lay = v2_layout((1000, 20), (1, 1), sep="/")
    assert lay.index("999/19") == 999 * 20 + 19
    assert lay.index("100/0") == 2000
    assert lay.index("0/10") == 10


# --- metadata parsing and errors -------------------------------------------------------------


def test_v3_fields_and_shorthand():
    lay = v3_layout(
        (6, 6),
        (4, 4),
        encoding="default",
        codecs=["transpose", {"name": "sharding_indexed", "configuration": {}}],
    )
    assert (lay.prefix, lay.separator, lay.sharded, lay.fill_value) == ("c", "/", True, "NaN")
    assert lay.metadata_name() == "zarr.json"
    assert v2_layout((1,), (1,)).metadata_name() == ".zarray"
    assert hash(v3_layout((2,), (1,), fill_value=[1.0, 2.0])) is not None


def test_structured_dtype_kept_as_json():
    meta = {"zarr_format": 2, "shape": [2], "chunks": [1], "dtype": [["a", "<u2"], ["b", "<f4"]]}
    lay = parse_array_metadata(meta, "", "/x/.zarray")
    assert json.loads(lay.dtype) == [["a", "<u2"], ["b", "<f4"]]


GOOD_V2 = {"zarr_format": 2, "shape": [4, 4], "chunks": [2, 2], "dtype": "<u2", "fill_value": 0}
GOOD_V3 = {
    "zarr_format": 3,
    "node_type": "array",
    "shape": [4, 4],
    "data_type": "uint16",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 2]}},
    "chunk_key_encoding": {"name": "default"},
    "codecs": [{"name": "bytes"}],
    "fill_value": 0,
}


def without(meta: dict, key: str) -> dict:
    return {k: v for k, v in meta.items() if k != key}


@pytest.mark.parametrize(
    ("name", "meta", "problem"),
    [
        (".zarray", without(GOOD_V2, "shape"), "'shape' is missing"),
        (".zarray", {**GOOD_V2, "shape": "abc"},
         "'shape' must be a list of non-negative integers, got 'abc'"),
        (".zarray", {**GOOD_V2, "shape": [4, -1]}, "'shape' must be a list"),
        (".zarray", {**GOOD_V2, "shape": [4, 4.0]}, "'shape' must be a list"),
        (".zarray", {**GOOD_V2, "shape": [True, 4]}, "'shape' must be a list"),
        (".zarray", {**GOOD_V2, "chunks": [2, 0]}, "'chunks' must be a list of integers >= 1"),
        (".zarray", {**GOOD_V2, "chunks": [2]}, "'chunks' has 1 dimensions but 'shape' has 2"),
        (".zarray", without(GOOD_V2, "chunks"), "'chunks' is missing"),
        (".zarray", without(GOOD_V2, "dtype"), "'dtype' is missing"),
        (".zarray", {**GOOD_V2, "dimension_separator": "\\"}, "'dimension_separator' must be"),
        (".zarray", {**GOOD_V2, "zarr_format": 3}, "'zarr_format' must be 2, got 3"),
        (".zarray", without(GOOD_V2, "zarr_format"), "'zarr_format' is missing"),
        ("zarr.json", {**GOOD_V3, "zarr_format": 2}, "'zarr_format' must be 3, got 2"),
        ("zarr.json", {**GOOD_V3, "chunk_grid": {"name": "rectilinear", "configuration": {}}},
         "'chunk_grid' 'rectilinear' is not supported"),
        ("zarr.json", {**GOOD_V3, "chunk_grid": {"name": "regular", "configuration": {}}},
         "'chunk_grid.configuration.chunk_shape' is missing"),
        ("zarr.json", {**GOOD_V3, "chunk_grid": regular([2, "2"])},
         "'chunk_grid.configuration.chunk_shape' must be a list of integers >= 1"),
        ("zarr.json", {**GOOD_V3, "chunk_grid": 7}, "'chunk_grid' must be a name or an object"),
        ("zarr.json", {**GOOD_V3, "chunk_key_encoding": {"name": "fancy"}},
         "'chunk_key_encoding' 'fancy' is not supported"),
        ("zarr.json", {**GOOD_V3, "chunk_key_encoding": enc("default", "-")},
         "'chunk_key_encoding.configuration.separator' must be '.' or '/', got '-'"),
        ("zarr.json", {**GOOD_V3, "codecs": {"name": "bytes"}}, "'codecs' must be a list"),
        ("zarr.json", without(GOOD_V3, "codecs"), "'codecs' is missing"),
        ("zarr.json", {**GOOD_V3, "codecs": [{"configuration": {}}]}, "'codecs[]' must be a name"),
        ("zarr.json", without(GOOD_V3, "data_type"), "'data_type' is missing"),
        ("zarr.json", {**GOOD_V3, "node_type": "group"},
         "'node_type' must be 'array', got 'group'"),
        ("zarr.json", {**GOOD_V3, "storage_transformers": [{"name": "x"}]},
         "'storage_transformers' are not supported"),
    ],
)  # fmt: skip
def test_parse_rejects(name, meta, problem):
    file = f"/data/run1/a.zarr/{name}"
    with pytest.raises(MetadataError) as info:
        parse_array_metadata(meta, "a.zarr", file)
    assert file in str(info.value)
    assert problem in str(info.value)


def write(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        (".zarray", "{not json", "not valid JSON"),
        (".zarray", "", "not valid JSON"),
        ("zarr.json", "[1, 2]", "must hold a JSON object, got list"),
        (".zarray", {"zarr_format": 2, "chunks": [1], "dtype": "<u2"}, "'shape' is missing"),
        ("zarr.json", {"zarr_format": 3, "node_type": "thing"},
         "'node_type' must be 'array' or 'group'"),
        ("zarr.json", {"zarr_format": 3}, "'node_type' is missing"),
        ("zarr.json", {"zarr_format": 2, "node_type": "group"}, "'zarr_format' must be 3"),
        (".zgroup", {"zarr_format": 3}, "'zarr_format' must be 2"),
        (".zgroup", "\xff\xfe garbage", "not valid JSON"),
    ],
)  # fmt: skip
def test_read_node_rejects(tmp_path, name, content, problem):
    file = write(tmp_path / "a.zarr" / name, content)
    with pytest.raises(MetadataError) as info:
        read_node(file.parent, "a.zarr")
    assert str(file) in str(info.value)
    assert problem in str(info.value)


def test_read_node_absent_and_vanished(tmp_path):
    assert read_node(tmp_path, "") is None
    assert read_node(tmp_path / "gone", "gone") is None
    write(tmp_path / "f", "x")
    assert read_node(tmp_path / "f", "f") is None  # directory replaced by a file
    write(tmp_path / "d" / ".zattrs", {})
    assert read_node(tmp_path / "d", "d") is None


def test_read_node_precedence(tmp_path):
    write(tmp_path / "both" / ".zarray", GOOD_V2)
    write(tmp_path / "both" / ".zgroup", {"zarr_format": 2})
    assert isinstance(read_node(tmp_path / "both", "both"), ArrayLayout)
    write(tmp_path / "both" / "zarr.json", {"zarr_format": 3, "node_type": "group"})
    assert read_node(tmp_path / "both", "both") == "group"
    write(tmp_path / "g2" / ".zgroup", {"zarr_format": 2})
    assert read_node(tmp_path / "g2", "g2") == "group"


def test_read_node_refuses_symlink_and_directory(tmp_path):
    real = write(tmp_path / "real.json", GOOD_V2)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / ".zarray").symlink_to(real)
    with pytest.raises(MetadataError, match="symbolic link"):
        read_node(tmp_path / "link", "link")
    (tmp_path / "dir" / ".zarray").mkdir(parents=True)
    with pytest.raises(MetadataError, match=r"dir/\.zarray"):
        read_node(tmp_path / "dir", "dir")


def test_read_node_os_errors(tmp_path, monkeypatch):
    write(tmp_path / "a" / ".zarray", GOOD_V2)
    real_open = os.open

    def failing(code):
        def fake_open(path, *args, **kwargs):
            if str(path).endswith(".zarray"):
                raise OSError(code, os.strerror(code), str(path))
            return real_open(path, *args, **kwargs)

        return fake_open

    monkeypatch.setattr(layout_module.os, "open", failing(errno.EACCES))
    with pytest.raises(MetadataError, match="Permission denied"):
        read_node(tmp_path / "a", "a")
    # Transient errors stay OSError so that the caller can retry.
    monkeypatch.setattr(layout_module.os, "open", failing(errno.EIO))
    with pytest.raises(OSError) as info:
        read_node(tmp_path / "a", "a")
    assert not isinstance(info.value, MetadataError)
    assert info.value.errno == errno.EIO


def test_metadata_kind():
    assert metadata_kind(".zarray") == "array_v2"
    assert metadata_kind(".zgroup") == "group_v2"
    assert metadata_kind("zarr.json") == "v3"
    assert metadata_kind(".zattrs") == "attrs"
    assert metadata_kind(".zmetadata") == "attrs"
    for name in ["0.0.0", "c", "zarr.json.__lock", "zarr.0123.partial", ".zarray.__lock", ""]:
        assert metadata_kind(name) is None
    assert {n for n in METADATA_NAMES if metadata_kind(n)} == METADATA_NAMES
