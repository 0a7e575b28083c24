"""Acquisition simulator: writes a Zarr archive with tensorstore the way a microscope does."""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

FORMATS = ("v2", "v2-nested", "v3", "v3-v2keys", "v3-sharded")
LAYOUTS = ("array", "ome", "plate")

# Time points per shard in "v3-sharded": small enough that every shard is rewritten as time
# points arrive, large enough that one shard holds the inner chunks of several time points.
SHARD_TIMEPOINTS = 2

_AXES = {2: "yx", 3: "zyx", 4: "czyx"}


@dataclass(frozen=True)
class SimulationSpec:
    """What to write; every field has a small default that runs in a few seconds."""

    format: str = "v3"
    layout: str = "array"
    timepoints: int = 10
    interval: float = 0.2
    shape: tuple[int, ...] = (4, 64, 64)
    chunks: tuple[int, ...] = (1, 32, 32)
    dtype: str = "uint16"
    compress: bool = True
    holes: float = 0.0
    grow: bool = False
    partial_writes: int = 1
    delete_chunk: bool = False
    complete: bool = True
    seed: int = 0
    wells: int = 2

    def __post_init__(self) -> None:
        import numpy as np

        # Normalise lists (from JSON/YAML/CLI) to tuples so the spec stays hashable.
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "chunks", tuple(int(n) for n in self.chunks))
        problems = []
        if self.format not in FORMATS:
            problems.append(f"format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.layout not in LAYOUTS:
            problems.append(f"layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.timepoints < 1:
            problems.append(f"timepoints must be >= 1, got {self.timepoints}")
        if self.interval < 0:
            problems.append(f"interval must be >= 0, got {self.interval}")
        if len(self.shape) < 2 or min(self.shape) < 1:
            problems.append(f"shape needs >= 2 positive dimensions (.., y, x), got {self.shape}")
        if self.layout != "array" and len(self.shape) > 4:
            problems.append(
                f"OME-Zarr allows at most (c, z, y, x) per time point, got {self.shape}"
            )
        if len(self.chunks) != len(self.shape) or min(self.chunks, default=0) < 1:
            problems.append(
                f"chunks must be {len(self.shape)} positive sizes like shape, got {self.chunks}"
            )
        try:
            if np.dtype(self.dtype).kind not in "iuf":
                problems.append(f"dtype must be an integer or float type, got {self.dtype!r}")
        except TypeError:
            problems.append(f"dtype {self.dtype!r} is not a numpy dtype")
        if not 0.0 <= self.holes <= 1.0:
            problems.append(f"holes must be a fraction in [0, 1], got {self.holes}")
        if self.partial_writes < 1:
            problems.append(f"partial_writes must be >= 1, got {self.partial_writes}")
        if self.wells < 1:
            problems.append(f"wells must be >= 1, got {self.wells}")
        if problems:
            raise ValueError("invalid simulation spec: " + "; ".join(problems))


@dataclass(frozen=True)
class _Array:
    path: str  # relative to the root, "" for the root itself
    well: int  # which data stream (plate well; 0 otherwise)
    level: int  # multiscale level: 1 is level 0 subsampled 2x in y/x
    start: int  # global time point at which the array is created
    frame: tuple[int, ...]  # shape of one time point
    chunks: tuple[int, ...]  # chunk shape of one time point (inner chunk when sharded)


def _well_names(spec: SimulationSpec) -> list[tuple[str, str]]:
    # Column-major walk over a near-square grid, so that both new rows and new columns
    # (new sub-trees at two depths) appear during the acquisition.
    rows = math.ceil(math.sqrt(spec.wells))
    return [(chr(ord("A") + k % rows), str(k // rows + 1)) for k in range(spec.wells)]


def _well_start(spec: SimulationSpec, k: int) -> int:
    return k * spec.timepoints // spec.wells


def _level1(
    frame: tuple[int, ...], chunks: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = (*frame[:-2], (frame[-2] + 1) // 2, (frame[-1] + 1) // 2)
    return shape, tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))


@functools.lru_cache(maxsize=64)
def _plan(spec: SimulationSpec) -> tuple[_Array, ...]:
    if spec.layout == "array":
        return (_Array("", 0, 0, 0, spec.shape, spec.chunks),)
    if spec.layout == "ome":
        shape1, chunks1 = _level1(spec.shape, spec.chunks)
        return (
            _Array("0", 0, 0, 0, spec.shape, spec.chunks),
            _Array("1", 0, 1, 0, shape1, chunks1),
        )
    return tuple(
        _Array(f"{row}/{col}/0/0", k, 0, _well_start(spec, k), spec.shape, spec.chunks)
        for k, (row, col) in enumerate(_well_names(spec))
    )


def array_paths(spec: SimulationSpec) -> list[str]:
    """Paths (relative to the root, "" = the root itself) of the arrays `simulate` writes."""
    return [a.path for a in _plan(spec)]


def _find(spec: SimulationSpec, path: str) -> _Array:
    path = path.strip("/")
    for a in _plan(spec):
        if a.path == path:
            return a
    raise KeyError(f"no array {path!r} in a {spec.layout!r} simulation: {array_paths(spec)}")


def _timepoints(spec: SimulationSpec, a: _Array) -> int:
    return spec.timepoints - a.start


def _grid(frame: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-(-s // c) for s, c in zip(frame, chunks, strict=True))


@functools.lru_cache(maxsize=64)
def _holes(spec: SimulationSpec, well: int) -> np.ndarray:
    """Boolean (t, *chunk grid) mask of the level-0 chunks written as all fill value."""
    import numpy as np

    a = next(x for x in _plan(spec) if x.well == well and x.level == 0)
    grid = (_timepoints(spec, a), *_grid(a.frame, a.chunks))
    total = math.prod(grid)
    count = round(spec.holes * total)
    if spec.holes > 0:
        count = max(count, 1)  # a nonzero fraction must give at least one hole to observe
    mask = np.zeros(total, dtype=bool)
    rng = np.random.default_rng([spec.seed, well, 1])
    mask[rng.choice(total, size=count, replace=False)] = True
    return mask.reshape(grid)


def _level0(spec: SimulationSpec, well: int, t: int) -> np.ndarray:
    import numpy as np

    dtype = np.dtype(spec.dtype)
    high = min(1000, np.iinfo(dtype).max) if dtype.kind in "iu" else 1000
    rng = np.random.default_rng([spec.seed, well, 0, t])
    # Values start at 1 so that only the hole chunks can equal the fill value 0.
    data = rng.integers(1, high, size=spec.shape, endpoint=True).astype(dtype)
    mask = _holes(spec, well)[t]
    if mask.any():
        for axis, c in enumerate(spec.chunks):
            mask = np.repeat(mask, c, axis=axis)
        data[mask[tuple(slice(0, s) for s in spec.shape)]] = 0
    return data


def timepoint_data(spec: SimulationSpec, t: int, path: str = "") -> np.ndarray:
    """The frame written at local time point `t` of the array at `path` (before delete_chunk)."""
    a = _find(spec, path)
    if not 0 <= t < _timepoints(spec, a):
        raise IndexError(f"array {path!r} has time points 0..{_timepoints(spec, a) - 1}, not {t}")
    data = _level0(spec, a.well, t)
    if a.level == 1:
        data = data[..., ::2, ::2].copy()  # subsampling keeps hole chunks exactly fill
    return data


def expected_data(spec: SimulationSpec, path: str = "") -> np.ndarray:
    """The final content (t, ...) of the array at `path`, after holes and delete_chunk."""
    import numpy as np

    a = _find(spec, path)
    out = np.stack([timepoint_data(spec, t, path) for t in range(_timepoints(spec, a))])
    if spec.delete_chunk:
        out[0] = 0
    return out


def _file_unit(spec: SimulationSpec, a: _Array) -> tuple[int, ...]:
    """Shape (t, ...) of one chunk file: the shard when sharded, else the chunk."""
    if spec.format == "v3-sharded":
        grid = _grid(a.frame, a.chunks)
        return (SHARD_TIMEPOINTS, *(g * c for g, c in zip(grid, a.chunks, strict=True)))
    return (1, *a.chunks)


def _key(spec: SimulationSpec, index: tuple[int, ...]) -> str:
    parts = [str(i) for i in index]
    if spec.format in ("v2", "v3-v2keys"):
        return ".".join(parts)
    if spec.format == "v2-nested":
        return "/".join(parts)
    return "/".join(["c", *parts])


def chunk_files(spec: SimulationSpec, path: str = "") -> set[str]:
    """Chunk (or shard) files, relative to the root, that the finished array at `path` has.

    A file exists iff its final content is not all fill value: tensorstore skips fill chunks
    and deletes chunks (and fully-fill shards) overwritten with fill.
    """
    a = _find(spec, path)
    data = expected_data(spec, path)
    unit = _file_unit(spec, a)
    prefix = f"{a.path}/" if a.path else ""
    found = set()
    for index in itertools.product(
        *(range(-(-s // u)) for s, u in zip(data.shape, unit, strict=True))
    ):
        region = tuple(slice(i * u, (i + 1) * u) for i, u in zip(index, unit, strict=True))
        if data[region].any():
            found.add(prefix + _key(spec, index))
    return found


# --- metadata -----------------------------------------------------------------------------


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    # Temp file in the same directory + rename, like zarr-python: the final name only ever
    # appears with complete content. Temp name pattern matches zarr-python's `.partial`.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)


def _v3(spec: SimulationSpec) -> bool:
    return spec.format.startswith("v3")


def _write_group(spec: SimulationSpec, directory: Path, attributes: dict[str, Any]) -> None:
    """Write (or rewrite) group metadata; `attributes` are OME keys without version wrapping."""
    if _v3(spec):
        if not attributes and (directory / "zarr.json").exists():
            return  # never clobber attributes an earlier step wrote
        attrs = {"ome": {"version": "0.5", **attributes}} if attributes else {}
        doc = {"zarr_format": 3, "node_type": "group", "attributes": attrs}
        _write_json(directory / "zarr.json", doc)
        return
    if not (directory / ".zgroup").exists():
        _write_json(directory / ".zgroup", {"zarr_format": 2})
    if attributes:
        _write_json(directory / ".zattrs", attributes)


def _multiscales(spec: SimulationSpec, levels: int, name: str) -> dict[str, Any]:
    units = {"t": ("time", "second"), "c": ("channel", None)}
    axes = []
    for ax in "t" + _AXES[len(spec.shape)]:
        kind, unit = units.get(ax, ("space", "micrometer"))
        axes.append({"name": ax, "type": kind, **({"unit": unit} if unit else {})})
    datasets = []
    for level in range(levels):
        f = 2**level
        scale = [spec.interval or 1.0] + [1.0] * (len(spec.shape) - 2) + [float(f), float(f)]
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    ms: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets}
    if not _v3(spec):
        ms = {"version": "0.4", **ms}
    return {"multiscales": [ms]}


def _plate_attrs(spec: SimulationSpec, count: int) -> dict[str, Any]:
    names = _well_names(spec)[:count]
    rows = sorted({r for r, _ in names})
    cols = sorted({c for _, c in names}, key=int)
    wells = [
        {"path": f"{r}/{c}", "rowIndex": rows.index(r), "columnIndex": cols.index(c)}
        for r, c in names
    ]
    plate: dict[str, Any] = {
        "name": "softcopy-simulation",
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": c} for c in cols],
        "wells": wells,
        "field_count": 1,
        "acquisitions": [{"id": 0}],
    }
    if not _v3(spec):
        plate = {"version": "0.4", **plate}
    return {"plate": plate}


def _well_attrs(spec: SimulationSpec) -> dict[str, Any]:
    well: dict[str, Any] = {"images": [{"path": "0", "acquisition": 0}]}
    if not _v3(spec):
        well = {"version": "0.4", **well}
    return {"well": well}


def _array_spec(spec: SimulationSpec, a: _Array, root: Path, t_shape: int) -> dict[str, Any]:
    import numpy as np

    shape = [t_shape, *a.frame]
    chunks = [1, *a.chunks]
    dtype = np.dtype(spec.dtype)
    kvstore = {"driver": "file", "path": str(root / a.path) if a.path else str(root)}
    if not _v3(spec):
        compressor = (
            {"id": "blosc", "cname": "zstd", "clevel": 1, "shuffle": 2} if spec.compress else None
        )
        metadata: dict[str, Any] = {
            "shape": shape,
            "chunks": chunks,
            "dtype": dtype.str,
            "compressor": compressor,
            "fill_value": 0,
            "order": "C",
            "filters": None,
            "dimension_separator": "/" if spec.format == "v2-nested" else ".",
        }
        return {"driver": "zarr", "kvstore": kvstore, "metadata": metadata}
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if spec.compress:
        blosc = {"cname": "zstd", "clevel": 1, "shuffle": "bitshuffle", "typesize": dtype.itemsize}
        codecs.append({"name": "blosc", "configuration": blosc})
    grid_shape = chunks
    if spec.format == "v3-sharded":
        grid_shape = list(_file_unit(spec, a))
        sharding = {
            "chunk_shape": chunks,
            "codecs": codecs,
            "index_codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "crc32c"},
            ],
        }
        codecs = [{"name": "sharding_indexed", "configuration": sharding}]
    keys: dict[str, Any] = {"name": "default"}
    if spec.format == "v3-v2keys":
        keys = {"name": "v2", "configuration": {"separator": "."}}
    metadata = {
        "shape": shape,
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid_shape}},
        "chunk_key_encoding": keys,
        "codecs": codecs,
        "fill_value": 0,
    }
    if len(a.frame) in _AXES:
        metadata["dimension_names"] = list("t" + _AXES[len(a.frame)])
    return {"driver": "zarr3", "kvstore": kvstore, "metadata": metadata}


# --- the acquisition ----------------------------------------------------------------------


def _prepare(destination: Path) -> None:
    if destination.is_symlink():
        raise FileExistsError(f"cannot simulate into {destination}: it is a symbolic link")
    if destination.exists() and not destination.is_dir():
        raise FileExistsError(
            f"cannot simulate into {destination}: it exists and is not a directory"
        )
    if destination.is_dir():
        if any(destination.iterdir()):
            raise FileExistsError(
                f"cannot simulate into {destination}: the directory is not empty "
                "(choose a new path; the simulator never overwrites data)"
            )
        return
    destination.mkdir(parents=True)


def _tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def simulate(
    destination: Path,
    spec: SimulationSpec,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the acquisition described by `spec` into `destination` and summarise it.

    `destination` must not exist or be an empty directory (else FileExistsError). Time point t
    starts `t * spec.interval` seconds after the first; the `complete` marker, if asked for, is
    the very last file written.
    """
    import tensorstore as ts

    destination = Path(destination)
    _prepare(destination)
    began = time.monotonic()
    context = ts.Context()
    plan = _plan(spec)
    stores: dict[str, Any] = {}
    written: dict[str, int] = {}  # local time points written so far, per array

    def create(a: _Array) -> None:
        size = 1 if spec.grow else _timepoints(spec, a)
        stores[a.path] = ts.open(
            _array_spec(spec, a, destination, size), create=True, context=context
        ).result()
        written[a.path] = 0

    if spec.layout == "ome":
        # Like iohub: group first, then the arrays, then the multiscales attributes that
        # point at them (so the group metadata is rewritten once arrays exist).
        _write_group(spec, destination, {})
        for a in plan:
            create(a)
        _write_group(spec, destination, _multiscales(spec, len(plan), "image"))
    elif spec.layout == "array":
        create(plan[0])
    else:
        _write_group(spec, destination, {})

    wells_open = 0
    for t in range(spec.timepoints):
        if t:
            delay = began + t * spec.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        new_wells = []
        if spec.layout == "plate":
            while wells_open < spec.wells and _well_start(spec, wells_open) <= t:
                new_wells.append(_open_well(spec, destination, plan[wells_open], create))
                wells_open += 1
                _write_group(spec, destination, _plate_attrs(spec, wells_open))
        active = [a for a in plan if a.path in stores]
        for a in active:
            local = written[a.path]
            if spec.grow and local > 0:
                store = stores[a.path]
                stores[a.path] = store.resize(
                    exclusive_max=[local + 1] + [None] * len(a.frame)
                ).result()
            _write_timepoint(spec, stores[a.path], timepoint_data(spec, local, a.path), local)
            written[a.path] = local + 1
        if log is not None:
            extra = f", new wells {', '.join(new_wells)}" if new_wells else ""
            log(
                f"time point {t + 1}/{spec.timepoints} written to {len(active)} "
                f"array(s) in {time.monotonic() - began:.2f} s{extra}"
            )

    if spec.delete_chunk:
        import numpy as np

        for a in plan:
            store = stores[a.path]
            store[0].write(np.zeros((*a.frame,), dtype=spec.dtype)).result()
        if log is not None:
            log("time point 0 overwritten with the fill value (its chunk files are deleted)")
    if spec.complete:
        # Written in place, as acquisition software does; only after every write has been awaited.
        (destination / "complete").touch(exist_ok=False)

    seconds = time.monotonic() - began
    files, size = _tree_size(destination)
    arrays = []
    for a in plan:
        unit = _file_unit(spec, a)
        arrays.append(
            {
                "path": a.path,
                "shape": [written[a.path], *a.frame],
                "chunks": [1, *a.chunks],
                "shard": list(unit) if spec.format == "v3-sharded" else None,
                "first_timepoint": a.start,
                "level": a.level,
            }
        )
    return {
        "destination": str(destination),
        "format": spec.format,
        "layout": spec.layout,
        "arrays": arrays,
        "timepoints": spec.timepoints,
        "complete": spec.complete,
        "files": files,
        "bytes": size,
        "seconds": round(seconds, 3),
    }


def _open_well(
    spec: SimulationSpec, root: Path, a: _Array, create: Callable[[_Array], None]
) -> str:
    """Create one well's sub-tree in iohub's order: groups, array, then their attributes."""
    row, col, field, _level = a.path.split("/")
    _write_group(spec, root / row, {})
    well_dir = root / row / col
    _write_group(spec, well_dir, {})
    _write_group(spec, well_dir / field, {})
    create(a)
    _write_group(spec, well_dir / field, _multiscales(spec, 1, f"{row}{col}"))
    _write_group(spec, well_dir, _well_attrs(spec))
    return f"{row}/{col}"


def _write_timepoint(spec: SimulationSpec, store: Any, data: np.ndarray, t: int) -> None:
    # Each slab is awaited on its own, so every chunk a slab touches is committed (renamed)
    # once per slab, as with a camera streaming strips of a frame.
    import numpy as np

    rows = data.shape[-2]
    bounds = np.linspace(0, rows, min(spec.partial_writes, rows) + 1).round().astype(int)
    for y0, y1 in itertools.pairwise(bounds):
        index = (t, Ellipsis, slice(int(y0), int(y1)), slice(None))
        store[index].write(data[..., y0:y1, :]).result()
