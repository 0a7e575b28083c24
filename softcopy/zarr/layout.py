"""Chunk-file layout of Zarr v2/v3 arrays: the file name of every chunk (or shard) of the grid."""

from __future__ import annotations

import json
import math
import operator
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from softcopy.errors import MetadataError, from_os_error, is_retryable

if TYPE_CHECKING:  # numpy is imported where indices are handled: a plain tree never needs it
    import numpy as np

METADATA_NAMES: frozenset[str] = frozenset(
    {".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"}
)

_KINDS: dict[str, str] = {
    ".zarray": "array_v2",
    ".zgroup": "group_v2",
    "zarr.json": "v3",
    ".zattrs": "attrs",
    ".zmetadata": "attrs",
}

_ACTION = "read zarr metadata"
_SEPARATORS = (".", "/")

# Chunk indices are numpy int64 (ledger rows, unravel/ravel), so every grid position and every
# extent must fit in one.
INDEX_LIMIT = 2**63 - 1
# numpy's unravel_index and ravel_multi_index take at most 64 dimensions; no real array has
# more than a handful.
MAX_RANK = 32
# Metadata is a few kB; hundreds of MB is not metadata, and reading it would cost gigabytes.
MAX_METADATA_BYTES = 64 * 2**20
# json.loads recurses once per level and raises RecursionError near 1000; OME-Zarr needs < 10.
MAX_NESTING = 256
# A JSON string, so that brackets inside strings do not count as nesting.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
# Up to this many characters outside strings, json_nesting counts brackets in Python.
_NESTING_IN_PYTHON = 1 << 16


@dataclass(frozen=True)
class ArrayLayout:
    """Where the chunk files of one array live, derived from its metadata alone.

    Chunk keys are canonical: decimal coordinates without sign, padding or leading zeros,
    exactly as tensorstore and zarr-python write them. `index()` rejects anything else, so
    no two file names ever map to the same grid position.
    """

    path: str
    zarr_format: int
    shape: tuple[int, ...]
    file_shape: tuple[int, ...]
    grid: tuple[int, ...]
    prefix: str
    separator: str
    # hash=False: a JSON fill value may be a list (complex numbers), which is unhashable.
    fill_value: object = field(hash=False)
    sharded: bool
    dtype: str

    _strides: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _n_files: int = field(init=False, repr=False, compare=False)
    _head: str = field(init=False, repr=False, compare=False)
    _key0: str = field(init=False, repr=False, compare=False)
    _longest: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rank = len(self.shape)
        if len(self.file_shape) != rank or len(self.grid) != rank:
            raise ValueError(
                f"shape {self.shape}, file_shape {self.file_shape} and grid {self.grid} "
                "must have the same rank"
            )
        if self.separator not in _SEPARATORS:
            raise ValueError(f"separator must be '.' or '/', got {self.separator!r}")
        if rank > MAX_RANK:
            raise ValueError(f"{rank} dimensions, more than {MAX_RANK}")
        if grid_cells(self.grid) > INDEX_LIMIT or any(n > INDEX_LIMIT for n in self.shape):
            raise ValueError(f"grid {self.grid} of shape {self.shape} does not fit in int64")
        strides = []
        stride = 1
        for n in reversed(self.grid):
            strides.append(stride)
            stride *= n
        strides.reverse()
        # Precomputed so index()/key(), which run once per file of archives with millions of
        # files, are a handful of string operations.
        object.__setattr__(self, "_strides", tuple(strides))
        object.__setattr__(self, "_n_files", math.prod(self.grid))
        object.__setattr__(self, "_head", self.prefix + self.separator if self.prefix else "")
        # A 0-d array has exactly one chunk; its key has no coordinates at all.
        object.__setattr__(self, "_key0", self.prefix or "0")
        last = self.separator.join(str(max(n - 1, 0)) for n in self.grid)
        object.__setattr__(self, "_longest", len(self._head) + len(last))

    @property
    def n_files(self) -> int:
        """Number of grid positions (1 for a 0-d array, 0 if any dimension has length 0)."""
        return self._n_files

    def metadata_name(self) -> str:
        return ".zarray" if self.zarr_format == 2 else "zarr.json"

    def key(self, index: int) -> str:
        """Chunk file key, relative to the array directory, of C-order ravel `index`."""
        rest = operator.index(index)
        if not 0 <= rest < self._n_files:
            raise IndexError(f"chunk index {index} out of range for grid {self.grid}")
        if not self.shape:
            return self._key0
        parts = []
        for stride in self._strides:
            q, rest = divmod(rest, stride)
            parts.append(str(q))
        return self._head + self.separator.join(parts)

    def keys(self, indices: Iterable[int] | np.ndarray) -> list[str]:
        """`[self.key(i) for i in indices]`, but fast for millions of indices."""
        import numpy as np

        idx = np.asarray(indices)
        if idx.size == 0:
            return []
        if idx.dtype.kind not in "iu":
            raise TypeError(f"chunk indices must be integers, got dtype {idx.dtype}")
        idx = idx.ravel()
        if int(idx.min()) < 0 or int(idx.max()) >= self._n_files:
            raise IndexError(f"chunk indices out of range for grid {self.grid}")
        if not self.shape:
            return [self._key0] * idx.size
        # Tabulate the key fragment of every position of a block of trailing dimensions, then
        # build each key by a few object-array lookups and concatenations: 3-6x faster than
        # formatting every key. Blocks are merged while their table stays well below the number
        # of keys asked for, so building tables never dominates.
        n = idx.size
        cap = max(1, n // 8)
        sep = self.separator
        idx = idx.astype(np.int64, copy=False)
        out = None
        end = len(self.grid)
        while end > 0:
            start = end - 1
            size = self.grid[start]
            while start > 0 and size * self.grid[start - 1] <= cap:
                start -= 1
                size *= self.grid[start]
            local = idx // self._strides[end - 1]
            if start > 0:
                local %= size
            lead = self._head if start == 0 else sep
            if size <= n:
                table = [lead + str(v) for v in range(self.grid[start])]
                for d in range(start + 1, end):
                    tails = [sep + str(v) for v in range(self.grid[d])]
                    table = [head + tail for head in table for tail in tails]
                piece = np.array(table, dtype=object)[local]
            else:
                # One dimension longer than the request: format only the values asked for.
                piece = np.array([lead + str(v) for v in local.tolist()], dtype=object)
            out = piece if out is None else piece + out
            end = start
        return out.tolist()

    def index(self, key: str) -> int | None:
        """C-order ravel index of chunk file `key` (relative to the array directory).

        None when `key` is not a canonical chunk key of this grid: wrong prefix or separator,
        wrong number of coordinates, a coordinate that is not plain ASCII decimal digits, has a
        leading zero ("01"), or is outside the grid. Temp files ("0.0.__lock",
        "0.0.<hex>.partial") and metadata names are therefore None.
        """
        if not self.shape:
            return 0 if key == self._key0 else None
        if len(key) > self._longest:  # also keeps int() off thousands of digits
            return None
        head = self._head
        if head:
            if not key.startswith(head):
                return None
            key = key[len(head) :]
        # int() also accepts "+1", " 1", "1_0" and non-ASCII digits; isascii + isdigit does not.
        if not key.isascii():
            return None
        parts = key.split(self.separator)
        if len(parts) != len(self._strides):
            return None
        result = 0
        for part, n, stride in zip(parts, self.grid, self._strides, strict=True):
            if not part.isdigit() or (part[0] == "0" and len(part) > 1):
                return None
            i = int(part)
            if i >= n:
                return None
            result += i * stride
        return result

    def directory_base(self, directory: str) -> int | None:
        """For "/" keys: the index of the first chunk file in `directory` (relative to the
        array, ending in "/"), so that index(directory + name) == base + last(name).

        None when keys are not "/"-separated or `directory` holds no chunk files. A scan
        then parses only each file's last coordinate instead of its whole key.
        """
        if self.separator != "/" or not self.shape:
            return None
        probe = self.index(directory + "0")
        if probe is not None:
            return probe
        # The last axis may have extent 0: no chunk file can exist there.
        return None

    def last_coordinate(self, name: str) -> int | None:
        """The last-axis coordinate a chunk file name stands for, or None (as index())."""
        if not name.isascii() or not name.isdigit() or (name[0] == "0" and len(name) > 1):
            return None
        if len(name) > 19:  # more than any int64
            return None
        i = int(name)
        return i if i < self.grid[-1] else None


def grid_cells(grid: tuple[int, ...]) -> int:
    """The grid's size counting an empty axis as 1: numpy checks that this product of the
    extents fits in int64 even when the grid itself is empty."""
    return math.prod(max(n, 1) for n in grid)


def metadata_kind(name: str) -> str | None:
    """Kind of a metadata file from its basename: "array_v2", "group_v2", "v3", "attrs" or None."""
    return _KINDS.get(name)


class MetadataTooLarge(MetadataError):
    """A metadata file larger than MAX_METADATA_BYTES."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(file: str, problem: str) -> MetadataError:
    return MetadataError(file, _ACTION, problem)


def _require(meta: dict[str, Any], name: str, file: str) -> Any:
    if name not in meta:
        raise _fail(file, f"{name!r} is missing")
    return meta[name]


def _show_int(value: int) -> str:
    text = str(value)
    if len(text) <= 24:
        return text
    if text == "1" + "0" * (len(text) - 1):
        return f"10^{len(text) - 1}"
    return f"{text[:10]}...({len(text)} digits)"


def _int_list(value: object, name: str, minimum: int, file: str) -> tuple[int, ...]:
    # bool is an int subclass; true/false in a shape is malformed, not 1/0.
    if not isinstance(value, list) or not all(type(v) is int and v >= minimum for v in value):
        what = "non-negative integers" if minimum == 0 else f"integers >= {minimum}"
        raise _fail(file, f"{name!r} must be a list of {what}, got {_show(value)}")
    if len(value) > MAX_RANK:
        raise _fail(file, f"{name!r} has {len(value)} dimensions, more than {MAX_RANK}")
    for i, v in enumerate(value):
        if v > INDEX_LIMIT:
            raise _fail(file, f"{name}[{i}] = {_show_int(v)} is larger than 2^63-1")
    return tuple(value)


def _named(value: object, name: str, file: str) -> tuple[str, dict[str, Any]]:
    # The v3 spec allows a bare name string in place of {"name": ..., "configuration": ...}.
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        config = value.get("configuration")
        if config is None:
            return value["name"], {}
        if isinstance(config, dict):
            return value["name"], config
        raise _fail(file, f"'{name}.configuration' must be an object, got {_show(config)}")
    raise _fail(file, f"{name!r} must be a name or an object with a 'name', got {_show(value)}")


def _dtype_text(value: object, name: str, file: str) -> str:
    if isinstance(value, str):
        return value
    # Structured v2 dtypes (lists) and v3 extension data types (objects) are kept as their
    # compact JSON text so the layout stays hashable; the layout never interprets the dtype.
    if isinstance(value, list | dict) and value:
        return json.dumps(value, separators=(",", ":"))
    raise _fail(file, f"{name!r} must be a string, list or object, got {_show(value)}")


def _separator(value: object, name: str, file: str) -> str:
    if value not in _SEPARATORS:
        raise _fail(file, f"{name!r} must be '.' or '/', got {_show(value)}")
    return str(value)


def parse_array_metadata(meta: dict, array_path: str, metadata_file: str) -> ArrayLayout:
    """Layout of the array described by `meta` (the parsed .zarray or zarr.json).

    `array_path` is stored as `ArrayLayout.path`; `metadata_file` only names the file in errors.
    When the file is named ".zarray" or "zarr.json" its zarr_format must be 2 or 3 respectively.
    Raises MetadataError naming the first field that is missing or malformed.
    """
    file = str(metadata_file)
    if not isinstance(meta, dict):
        raise _fail(file, f"must hold a JSON object, got {type(meta).__name__}")
    fmt = _require(meta, "zarr_format", file)
    expected = {".zarray": 2, "zarr.json": 3}.get(os.path.basename(file))
    if type(fmt) is not int or fmt not in (2, 3) or (expected is not None and fmt != expected):
        want = str(expected) if expected is not None else "2 or 3"
        raise _fail(file, f"'zarr_format' must be {want}, got {_show(fmt)}")

    shape = _int_list(_require(meta, "shape", file), "shape", 0, file)
    if fmt == 2:
        chunks_name = "chunks"
        file_shape = _int_list(_require(meta, "chunks", file), "chunks", 1, file)
        dtype = _dtype_text(_require(meta, "dtype", file), "dtype", file)
        separator = meta.get("dimension_separator")
        separator = "." if separator is None else _separator(separator, "dimension_separator", file)
        prefix = ""
        sharded = False
    else:
        node_type = _require(meta, "node_type", file)
        if node_type != "array":
            raise _fail(file, f"'node_type' must be 'array', got {_show(node_type)}")
        dtype = _dtype_text(_require(meta, "data_type", file), "data_type", file)

        grid_name, grid_config = _named(_require(meta, "chunk_grid", file), "chunk_grid", file)
        if grid_name != "regular":
            raise _fail(file, f"'chunk_grid' {grid_name!r} is not supported (only 'regular')")
        chunks_name = "chunk_grid.configuration.chunk_shape"
        if "chunk_shape" not in grid_config:
            raise _fail(file, f"{chunks_name!r} is missing")
        file_shape = _int_list(grid_config["chunk_shape"], chunks_name, 1, file)

        enc_name, enc_config = _named(
            meta.get("chunk_key_encoding", "default"), "chunk_key_encoding", file
        )
        if enc_name == "default":
            prefix, default_sep = "c", "/"
        elif enc_name == "v2":
            prefix, default_sep = "", "."
        else:
            raise _fail(
                file,
                f"'chunk_key_encoding' {enc_name!r} is not supported (only 'default' and 'v2')",
            )
        separator = _separator(
            enc_config.get("separator", default_sep),
            "chunk_key_encoding.configuration.separator",
            file,
        )

        codecs = _require(meta, "codecs", file)
        if not isinstance(codecs, list):
            raise _fail(file, f"'codecs' must be a list, got {_show(codecs)}")
        # In v3 the chunk_grid describes shards when sharding_indexed is the array->bytes codec;
        # the inner chunks live inside the shard file and never appear as files.
        sharded = any(_named(c, "codecs[]", file)[0] == "sharding_indexed" for c in codecs)

        # A storage transformer may rename or relocate keys; copying blindly would be wrong.
        if meta.get("storage_transformers"):
            raise _fail(file, "'storage_transformers' are not supported")

    if len(file_shape) != len(shape):
        raise _fail(
            file,
            f"{chunks_name!r} has {len(file_shape)} dimensions but 'shape' has {len(shape)}",
        )
    grid = tuple(-(-s // c) for s, c in zip(shape, file_shape, strict=True))
    cells = grid_cells(grid)
    if cells > INDEX_LIMIT:
        raise _fail(
            file,
            f"the grid of {'shards' if sharded else 'chunks'} {_show(grid)} has "
            f"{_show_int(cells)} cells, more than 2^63-1",
        )
    return ArrayLayout(
        path=array_path,
        zarr_format=fmt,
        shape=shape,
        file_shape=file_shape,
        grid=grid,
        prefix=prefix,
        separator=separator,
        fill_value=meta.get("fill_value"),
        sharded=sharded,
        dtype=dtype,
    )


def _read_json(file: Path) -> dict | None:
    """Parsed JSON object in `file`, or None if it does not exist (any more)."""
    raw = read_metadata_bytes(file)
    if raw is None:
        return None
    data = parse_json(raw, str(file))
    if not isinstance(data, dict):
        raise _fail(str(file), f"must hold a JSON object, got {type(data).__name__}")
    return data


def read_metadata_bytes(file: Path) -> bytes | None:
    """The bytes of metadata file `file` (at most MAX_METADATA_BYTES), None if it is gone.

    MetadataError when it is a link, not a regular file, too large or unreadable; transient
    OS errors (EIO, ESTALE, ...) propagate as OSError.
    """
    try:
        # O_NOFOLLOW: softcopy never follows symlinks. O_NONBLOCK: a FIFO must not hang us.
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        # Writers delete or replace whole trees while we scan; a vanished node is not an error.
        return None
    except OSError as exc:
        _raise_unreadable(exc, file)
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise _fail(str(file), "it is not a regular file")
            # One byte more than allowed, so a file growing past the cap is still refused.
            raw = f.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        _raise_unreadable(exc, file)
    if len(raw) > MAX_METADATA_BYTES:
        raise MetadataTooLarge(
            str(file),
            _ACTION,
            f"it is {max(st.st_size, len(raw))} bytes, more than the "
            f"{MAX_METADATA_BYTES // 2**20} MiB softcopy reads as metadata",
        )
    return raw


def json_nesting(text: str) -> int:
    """How deeply arrays and objects nest in JSON `text` (brackets inside strings not counted),
    found without recursion and in time linear in the text."""
    bare = _JSON_STRING.sub("", text)
    if len(bare) <= _NESTING_IN_PYTHON:
        # Metadata of a few kB: a loop over its brackets costs less than importing numpy.
        depth = deepest = 0
        for bracket in _BRACKETS.findall(bare):
            depth += 1 if bracket in "[{" else -1
            deepest = max(deepest, depth)
        return deepest
    import numpy as np

    # Outside strings only ASCII is valid JSON; anything else cannot be a bracket.
    codes = np.frombuffer(bare.encode("ascii", "replace"), dtype=np.uint8)
    if codes.size == 0:
        return 0
    step = np.isin(codes, (0x5B, 0x7B)).astype(np.int64) - np.isin(codes, (0x5D, 0x7D))
    return int(np.cumsum(step).max(initial=0))


def parse_json(raw: bytes, file: str) -> Any:
    """`json.loads(raw)`, but every failure is a MetadataError naming `file`: never a
    RecursionError from deep nesting."""
    try:
        text = raw.decode(json.detect_encoding(raw))
    except (UnicodeDecodeError, LookupError) as exc:
        raise _fail(file, f"not valid JSON ({exc})") from None
    depth = json_nesting(text)
    if depth > MAX_NESTING:
        raise _fail(file, f"nesting deeper than {MAX_NESTING} levels ({depth})")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit
        raise _fail(file, f"not valid JSON ({exc})") from None


def attributes_problem(file: Path) -> str | None:
    """What is wrong with attributes file `file` (.zattrs, .zmetadata) as JSON, or None.

    Attributes are not needed for any layout, so what only softcopy cannot take is no
    problem: JSON nested too deeply for json.loads is checked without recursion, and a file
    beyond MAX_METADATA_BYTES is not read (its copy is compared byte for byte anyway).
    Transient OS errors propagate as OSError.
    """
    try:
        raw = read_metadata_bytes(file)
    except MetadataTooLarge:
        return None
    except MetadataError as exc:
        return exc.problem
    if raw is None:
        return "it vanished"
    try:
        parse_json(raw, str(file))
    except MetadataError as exc:
        if not exc.problem.startswith("nesting deeper"):
            return exc.problem
        return _deep_json_problem(raw.decode(json.detect_encoding(raw)))
    return None


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(
    r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null|NaN|-?Infinity"
)


def _deep_json_problem(text: str) -> str | None:
    """Whether `text` is one JSON value, like json.loads, but with an explicit stack instead of
    recursion, so that any depth is fine. The problem found, or None."""
    closers: list[str] = []  # the bracket that closes each open array or object
    pos = _WHITESPACE.match(text, 0).end()
    try:
        while True:
            # A value starts at pos.
            c = text[pos : pos + 1]
            if c in ("[", "{"):
                closers.append("]" if c == "[" else "}")
                pos = _WHITESPACE.match(text, pos + 1).end()
                if text.startswith(closers[-1], pos):
                    closers.pop()
                    pos += 1
                else:
                    if c == "{":
                        pos = _object_key(text, pos)
                    continue
            elif c == '"':
                pos = json.decoder.scanstring(text, pos + 1)[1]
            else:
                match = _SCALAR.match(text, pos)
                if match is None:
                    return f"not valid JSON (expecting a value at character {pos})"
                pos = match.end()
            # A value ended: close what it ends, then expect a separator or the end.
            while True:
                pos = _WHITESPACE.match(text, pos).end()
                if not closers:
                    return None if pos == len(text) else f"extra data at character {pos}"
                c = text[pos : pos + 1]
                if c == closers[-1]:
                    closers.pop()
                    pos += 1
                elif c == ",":
                    pos = _WHITESPACE.match(text, pos + 1).end()
                    if closers[-1] == "}":
                        pos = _object_key(text, pos)
                    break
                else:
                    return f"not valid JSON (expecting ',' or {closers[-1]!r} at character {pos})"
    except ValueError as exc:  # from scanstring or _object_key
        return f"not valid JSON ({exc})"


def _object_key(text: str, pos: int) -> int:
    """Past `"key" :` and the whitespace after it."""
    if not text.startswith('"', pos):
        raise ValueError(f"expecting a property name at character {pos}")
    pos = _WHITESPACE.match(text, json.decoder.scanstring(text, pos + 1)[1]).end()
    if not text.startswith(":", pos):
        raise ValueError(f"expecting ':' at character {pos}")
    return _WHITESPACE.match(text, pos + 1).end()


def _raise_unreadable(exc: OSError, file: Path) -> NoReturn:
    # Transient errors (EIO, ESTALE, ...) stay OSError so the caller's retry logic sees them.
    if is_retryable(exc):
        raise exc
    raise _fail(str(file), from_os_error(exc, _ACTION, file).problem) from exc


def read_node(directory: Path, array_path: str) -> ArrayLayout | str | None:
    """What the zarr node at `directory` is: an ArrayLayout, "group", or None (no metadata).

    Precedence follows zarr-python: zarr.json first, then .zarray, then .zgroup (a directory
    holding both .zarray and .zgroup is an array). Metadata that vanishes while being read
    counts as absent. Raises MetadataError for metadata that is unreadable, not JSON or
    malformed; transient OS errors (EIO, ESTALE, ...) propagate as OSError.
    """
    directory = Path(directory)
    try:
        return _read_node(directory, array_path)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # A parser bug must not kill a copy: every failure reaches the caller as MetadataError.
        raise _fail(
            str(directory), f"metadata cannot be handled ({type(exc).__name__}: {_show(str(exc))})"
        ) from exc


def _read_node(directory: Path, array_path: str) -> ArrayLayout | str | None:
    file = directory / "zarr.json"
    meta = _read_json(file)
    if meta is not None:
        node_type = _require(meta, "node_type", str(file))
        if node_type == "array":
            return parse_array_metadata(meta, array_path, str(file))
        if node_type != "group":
            raise _fail(
                str(file), f"'node_type' must be 'array' or 'group', got {_show(node_type)}"
            )
        if meta.get("zarr_format") != 3:
            raise _fail(str(file), f"'zarr_format' must be 3, got {_show(meta.get('zarr_format'))}")
        return "group"
    file = directory / ".zarray"
    meta = _read_json(file)
    if meta is not None:
        return parse_array_metadata(meta, array_path, str(file))
    file = directory / ".zgroup"
    meta = _read_json(file)
    if meta is not None:
        if meta.get("zarr_format") != 2:
            raise _fail(str(file), f"'zarr_format' must be 2, got {_show(meta.get('zarr_format'))}")
        return "group"
    return None
