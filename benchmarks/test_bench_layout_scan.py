"""Micro-benchmarks: chunk key <-> index on a 10-million-file grid, and a full tree scan.

Run with `pytest benchmarks --benchmark-enable` (see benchmarks/README.md). Without
`--benchmark-enable` each benchmark runs once, as a plain test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from softcopy.sources.scan import scan_tree
from softcopy.zarr.layout import ArrayLayout, parse_array_metadata

GRID = (1000, 100, 100)  # time points x chunk rows x chunk columns: 10,000,000 chunk files
CHUNK = (1, 64, 64)
SAMPLE = 10_000  # keys per round for the one-at-a-time benchmarks
BULK = 100_000  # keys per call of ArrayLayout.keys


@pytest.fixture(scope="module")
def layout() -> ArrayLayout:
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [g * c for g, c in zip(GRID, CHUNK, strict=True)],
        "data_type": "uint16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(CHUNK)}},
        "chunk_key_encoding": {"name": "default"},
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "fill_value": 0,
    }
    result = parse_array_metadata(meta, "", "zarr.json")
    assert result.grid == GRID
    return result


@pytest.fixture(scope="module")
def sample(layout: ArrayLayout) -> tuple[np.ndarray, list[str]]:
    indices = np.random.default_rng(0).integers(0, layout.n_files, size=SAMPLE)
    return indices, [layout.key(int(i)) for i in indices]


def test_index(benchmark, layout: ArrayLayout, sample: tuple[np.ndarray, list[str]]) -> None:
    indices, keys = sample
    found = benchmark(lambda: [layout.index(k) for k in keys])
    assert found == indices.tolist()


def test_key(benchmark, layout: ArrayLayout, sample: tuple[np.ndarray, list[str]]) -> None:
    indices, keys = sample
    as_ints = indices.tolist()
    made = benchmark(lambda: [layout.key(i) for i in as_ints])
    assert made == keys


def test_keys_contiguous(benchmark, layout: ArrayLayout) -> None:
    # The supervisor's usual request: the next pending chunks in ascending order.
    indices = np.arange(5_000_000, 5_000_000 + BULK, dtype=np.int64)
    made = benchmark(layout.keys, indices)
    assert len(made) == BULK
    assert made[0] == layout.key(5_000_000) and made[-1] == layout.key(5_000_000 + BULK - 1)


def test_keys_scattered(benchmark, layout: ArrayLayout) -> None:
    indices = np.sort(np.random.default_rng(1).integers(0, layout.n_files, size=BULK))
    made = benchmark(layout.keys, indices)
    assert made[::997] == [layout.key(int(i)) for i in indices[::997]]


# ---- scan -------------------------------------------------------------------------------

TREE = (20, 10, 100)  # c/<t>/<y>/<x>: 200 directories of 100 files, 20,000 files


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scan") / "archive.zarr"
    (root / "c").mkdir(parents=True)
    (root / "zarr.json").write_text("{}")
    payload = b"\0" * 64
    for t in range(TREE[0]):
        for y in range(TREE[1]):
            directory = root / "c" / str(t) / str(y)
            directory.mkdir(parents=True)
            for x in range(TREE[2]):
                (directory / str(x)).write_bytes(payload)
    # A few writer temporary files, which a scan must set apart.
    (root / "c" / "0" / "0" / "0.__lock").write_bytes(payload)
    (root / "c" / "0" / "1" / "5.0123456789abcdef0123456789abcdef.partial").write_bytes(payload)
    return root


def test_scan_tree(benchmark, tree: Path) -> None:
    result = benchmark(scan_tree, str(tree))
    assert len(result.files) == TREE[0] * TREE[1] * TREE[2] + 1
    assert len(result.temporary) == 2
