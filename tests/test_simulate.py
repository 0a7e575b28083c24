"""Tests for the tensorstore acquisition simulator."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from softcopy.zarr.simulate import (
    FORMATS,
    LAYOUTS,
    SimulationSpec,
    array_paths,
    chunk_files,
    expected_data,
    simulate,
    timepoint_data,
)

SMALL = {"timepoints": 4, "interval": 0.0, "shape": (2, 16, 16), "chunks": (1, 8, 8)}
METADATA = {".zarray", ".zgroup", ".zattrs", "zarr.json", "complete"}


def all_files(root: Path) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names
    }


def data_files(root: Path) -> set[str]:
    """Chunk / shard files: everything that is not metadata or the marker."""
    return {f for f in all_files(root) if Path(f).name not in METADATA}


def open_array(root: Path, spec: SimulationSpec, path: str) -> ts.TensorStore:
    driver = "zarr3" if spec.format.startswith("v3") else "zarr"
    kvstore = {"driver": "file", "path": str(root / path) if path else str(root)}
    return ts.open({"driver": driver, "kvstore": kvstore}, open=True).result()


def key_index(spec: SimulationSpec, path: str, key: str) -> tuple[int, ...]:
    """Grid index of a chunk file key (relative to the root) of the array at `path`."""
    rel = key[len(path) + 1 :] if path else key
    if spec.format in ("v3", "v3-sharded"):
        assert rel.startswith("c/")
        rel = rel[2:]
    sep = "/" if spec.format in ("v2-nested", "v3", "v3-sharded") else "."
    return tuple(int(p) for p in rel.split(sep))


def check_archive(root: Path, spec: SimulationSpec, summary: dict) -> None:
    assert not [f for f in all_files(root) if f.endswith((".__lock", ".partial"))]
    assert (root / "complete").exists() == spec.complete
    if spec.complete:
        assert (root / "complete").stat().st_size == 0
    assert [a["path"] for a in summary["arrays"]] == array_paths(spec)
    expected_files: set[str] = set()
    for path in array_paths(spec):
        want = expected_data(spec, path)
        arr = open_array(root, spec, path)
        assert arr.shape == want.shape
        got = arr.read().result()
        np.testing.assert_array_equal(got, want)
        expected_files |= chunk_files(spec, path)
    assert data_files(root) == expected_files
    assert summary["files"] == len(all_files(root))
    assert summary["bytes"] == sum((root / f).stat().st_size for f in all_files(root))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_and_layout_reads_back(tmp_path: Path, fmt: str, layout: str) -> None:
    spec = SimulationSpec(format=fmt, layout=layout, holes=0.25, partial_writes=3, **SMALL)
    messages: list[str] = []
    summary = simulate(tmp_path / "acq.zarr", spec, log=messages.append)
    check_archive(tmp_path / "acq.zarr", spec, summary)
    assert len(messages) == spec.timepoints
    # Holes really are missing files: an unsharded array has fewer chunk files than grid cells.
    if fmt != "v3-sharded":
        path = array_paths(spec)[0]
        want = expected_data(spec, path)
        cells = want.shape[0] * math.prod(
            -(-s // c) for s, c in zip(spec.shape, spec.chunks, strict=True)
        )
        assert 0 < len(chunk_files(spec, path)) < cells


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_grow_and_delete_chunk(tmp_path: Path, fmt: str, layout: str) -> None:
    spec = SimulationSpec(format=fmt, layout=layout, grow=True, delete_chunk=True, **SMALL)
    root = tmp_path / "acq.zarr"
    summary = simulate(root, spec)
    check_archive(root, spec, summary)
    for entry in summary["arrays"]:
        path = entry["path"]
        arr = open_array(root, spec, path)
        timepoints = spec.timepoints - entry["first_timepoint"]
        assert arr.shape[0] == timepoints == entry["shape"][0]
        assert not arr[0].read().result().any()
        keys = [f for f in data_files(root) if f.startswith(path)]
        t_of = [key_index(spec, path, k)[0] for k in keys if key_index(spec, path, k)]
        if fmt == "v3-sharded":
            # Shard 0 also holds time point 1, so it is rewritten, not deleted.
            assert (0 in t_of) == (timepoints > 1)
        else:
            assert 0 not in t_of
            assert set(t_of) == set(range(1, timepoints))


def test_hole_chunks_have_no_file(tmp_path: Path) -> None:
    spec = SimulationSpec(format="v2", holes=1.0, **SMALL)
    root = tmp_path / "a"
    simulate(root, spec)
    assert data_files(root) == set()
    assert not open_array(root, spec, "").read().result().any()
    assert chunk_files(spec) == set()


def test_holes_are_exactly_fill_and_data_is_not(tmp_path: Path) -> None:
    spec = SimulationSpec(holes=0.5, **SMALL)
    data = expected_data(spec)
    grid = data.reshape(4, 2, 2, 8, 2, 8).transpose(0, 1, 2, 4, 3, 5).reshape(4, 2, 2, 2, -1)
    nonzero = (grid != 0).sum(axis=-1)
    # Each chunk is either a hole (all fill) or fully non-fill.
    assert set(np.unique(nonzero)) == {0, 64}
    assert (nonzero == 0).sum() == round(0.5 * nonzero.size)


def test_data_is_deterministic_and_seeded() -> None:
    spec = SimulationSpec(**SMALL)
    np.testing.assert_array_equal(timepoint_data(spec, 1), timepoint_data(spec, 1))
    assert not np.array_equal(timepoint_data(spec, 0), timepoint_data(spec, 1))
    other = SimulationSpec(seed=1, **SMALL)
    assert not np.array_equal(timepoint_data(spec, 0), timepoint_data(other, 0))
    assert timepoint_data(spec, 0).dtype == np.uint16


def test_complete_false_and_uncompressed(tmp_path: Path) -> None:
    spec = SimulationSpec(format="v3", complete=False, compress=False, dtype="uint8", **SMALL)
    summary = simulate(tmp_path / "a", spec)
    check_archive(tmp_path / "a", spec, summary)
    meta = json.loads((tmp_path / "a" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes"]
    # Uncompressed chunks are exactly one chunk's bytes.
    assert {(tmp_path / "a" / f).stat().st_size for f in data_files(tmp_path / "a")} == {64}


def test_ome_metadata(tmp_path: Path) -> None:
    for fmt in ("v2", "v3"):
        root = tmp_path / fmt
        simulate(root, SimulationSpec(format=fmt, layout="ome", **SMALL))
        if fmt == "v2":
            assert json.loads((root / ".zgroup").read_text()) == {"zarr_format": 2}
            attrs = json.loads((root / ".zattrs").read_text())
        else:
            group = json.loads((root / "zarr.json").read_text())
            assert group["node_type"] == "group"
            attrs = group["attributes"]["ome"]
            assert attrs["version"] == "0.5"
        (ms,) = attrs["multiscales"]
        assert [d["path"] for d in ms["datasets"]] == ["0", "1"]
        assert [a["name"] for a in ms["axes"]] == ["t", "z", "y", "x"]
    level1 = expected_data(SimulationSpec(layout="ome", **SMALL), "1")
    assert level1.shape == (4, 2, 8, 8)


def test_plate_wells_appear_during_acquisition(tmp_path: Path) -> None:
    spec = SimulationSpec(format="v2-nested", layout="plate", wells=4, **SMALL)
    assert array_paths(spec) == ["A/1/0/0", "B/1/0/0", "A/2/0/0", "B/2/0/0"]
    messages: list[str] = []
    root = tmp_path / "plate.zarr"
    summary = simulate(root, spec, log=messages.append)
    assert [a["first_timepoint"] for a in summary["arrays"]] == [0, 1, 2, 3]
    assert [a["shape"][0] for a in summary["arrays"]] == [4, 3, 2, 1]
    assert ["new wells" in m for m in messages] == [True] * 4
    plate = json.loads((root / ".zattrs").read_text())["plate"]
    assert [w["path"] for w in plate["wells"]] == ["A/1", "B/1", "A/2", "B/2"]
    assert [r["name"] for r in plate["rows"]] == ["A", "B"]
    assert not (root / "A" / ".zattrs").exists()
    well = json.loads((root / "B" / "2" / ".zattrs").read_text())["well"]
    assert well["images"][0]["path"] == "0"
    check_archive(root, spec, summary)


def test_interval_paces_timepoints(tmp_path: Path) -> None:
    spec = SimulationSpec(timepoints=3, interval=0.1, shape=(1, 8, 8), chunks=(1, 8, 8))
    began = time.monotonic()
    summary = simulate(tmp_path / "a", spec)
    assert time.monotonic() - began >= 0.2
    assert summary["seconds"] >= 0.2


def test_refuses_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        simulate(tmp_path / "full", SimulationSpec(**SMALL))
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a directory"):
        simulate(tmp_path / "file", SimulationSpec(**SMALL))
    (tmp_path / "empty").mkdir()
    simulate(tmp_path / "empty", SimulationSpec(**SMALL))
    assert (tmp_path / "empty" / "complete").exists()


@pytest.mark.parametrize(
    "bad",
    [
        {"format": "v4"},
        {"layout": "tiles"},
        {"timepoints": 0},
        {"shape": (64,), "chunks": (32,)},
        {"chunks": (1, 32)},
        {"holes": 1.5},
        {"partial_writes": 0},
        {"dtype": "bool"},
        {"layout": "ome", "shape": (1, 1, 1, 8, 8), "chunks": (1, 1, 1, 8, 8)},
    ],
)
def test_invalid_spec(bad: dict) -> None:
    with pytest.raises(ValueError, match="invalid simulation spec"):
        SimulationSpec(**bad)


def test_default_spec_runs_quickly(tmp_path: Path) -> None:
    spec = SimulationSpec(interval=0.0)
    summary = simulate(tmp_path / "a", spec)
    check_archive(tmp_path / "a", spec, summary)
    assert summary["seconds"] < 2.0


def test_runs_out_of_process(tmp_path: Path) -> None:
    root = tmp_path / "sub.zarr"
    code = (
        "import json, sys; from pathlib import Path; "
        "from softcopy.zarr.simulate import SimulationSpec, simulate; "
        "spec = SimulationSpec(format='v3-sharded', layout='ome', timepoints=3, interval=0, "
        "shape=(2, 16, 16), chunks=(1, 8, 8), holes=0.2); "
        "json.dump(simulate(Path(sys.argv[1]), spec), sys.stdout)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    spec = SimulationSpec(
        format="v3-sharded",
        layout="ome",
        timepoints=3,
        interval=0,
        shape=(2, 16, 16),
        chunks=(1, 8, 8),
        holes=0.2,
    )
    check_archive(root, spec, summary)
    assert summary["arrays"][0]["shard"] == [2, 2, 16, 16]
