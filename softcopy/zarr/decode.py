"""Structural check: every chunk or shard file present decodes with its array's codecs.

A torn chunk that the writer itself produced is identical on both sides, so only
decoding finds it. tensorstore does the decoding (all zarr v2 and v3 codecs, and
the shard index with its checksum); a read of exactly one file's region touches
that file alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import MetadataError
from ..verify.compare import Finding, metadata_key
from .layout import ArrayLayout, metadata_kind, read_node


def find_arrays(
    root: str, keys: Iterable[str], problems: list[Finding] | None = None
) -> list[ArrayLayout]:
    """Every array with metadata among `keys`; metadata that does not parse goes to `problems`:
    no chunk of such an array can be decoded, and without a source nothing else reports it."""
    arrays = []
    for rel in sorted({os.path.dirname(k) for k in keys if metadata_kind(os.path.basename(k))}):
        try:
            node = read_node(Path(root, rel), rel)
        except MetadataError as exc:  # a SoftcopyError, not a ValueError
            if problems is not None:
                problems.append(Finding("decode", metadata_key(root, rel, exc), exc.problem))
            continue
        except (OSError, ValueError) as exc:
            if problems is not None:
                problems.append(Finding("decode", rel or ".", _short(exc)))
            continue
        if isinstance(node, ArrayLayout):
            arrays.append(node)
    return arrays


def check_decode(root: str, keys: Iterable[str]) -> list[Finding]:
    """A finding for every chunk file (of `keys`) that does not decode."""
    import tensorstore as ts  # only this check needs it

    keys = list(keys)
    # No cache: every read must come from the file, not from an earlier read.
    context = ts.Context({"cache_pool": {"total_bytes_limit": 0}})
    findings: list[Finding] = []
    for layout in find_arrays(root, keys, findings):
        prefix = f"{layout.path}/" if layout.path else ""
        driver = "zarr" if layout.zarr_format == 2 else "zarr3"
        try:
            store = ts.open(
                {
                    "driver": driver,
                    "kvstore": {"driver": "file", "path": str(Path(root, layout.path))},
                },
                open=True,
                read=True,
                context=context,
            ).result()
        except Exception as exc:  # tensorstore raises ValueError and others
            findings.append(Finding("decode", prefix + layout.metadata_name(), _short(exc)))
            continue
        for key in keys:
            if not key.startswith(prefix):
                continue
            index = layout.index(key[len(prefix) :])
            if index is None:
                continue
            box = _region(layout, index)
            try:
                store[box].read().result()
            except Exception as exc:
                findings.append(Finding("decode", key, _short(exc)))
    return findings


def _region(layout: ArrayLayout, index: int) -> tuple[slice, ...]:
    coords = []
    for extent in reversed(layout.grid):
        coords.append(index % extent)
        index //= extent
    coords.reverse()
    return tuple(
        slice(c * size, min((c + 1) * size, dim))
        for c, size, dim in zip(coords, layout.file_shape, layout.shape, strict=True)
    )


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
