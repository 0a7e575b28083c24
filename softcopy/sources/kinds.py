"""The two kinds of source tree, as strategies: a Zarr tree, and a plain run folder.

A Zarr tree has metadata that says which chunk files can exist (an expected set,
which one end rule uses), and its writers publish by rename, so a file is ready
as soon as it appears. A plain tree (a sequencer run folder) has no expected set,
and its writers write in place, so a file is ready once it stopped changing.
A new kind of source (an HDF5 file set, say) is one more class here.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import MetadataError, SoftcopyError, from_os_error
from ..zarr.layout import ArrayLayout, read_node
from .scan import Version

Node = ArrayLayout | str | None  # read_node: an array's layout, a group, or nothing


def newest_change(version: Version) -> float:
    """Seconds since the epoch of the last change to a file that anyone could see.

    ctime too: an in-place writer may set an old mtime, and copying onto NFS keeps
    one (sruns-monitor's finding); nobody can set ctime.
    """
    return max(version.mtime_ns, version.ctime_ns) / 1e9


class ZarrTree:
    has_expected_set = True

    def problem(self, root: str) -> SoftcopyError | None:
        """Why `root` (an existing directory) cannot be copied as this kind, if it cannot."""
        try:
            node = read_node(Path(root), "")
        except PermissionError as exc:
            return from_os_error(exc, "read source", root)
        if node is None:
            return MetadataError(
                root,
                "copy source",
                "it holds no zarr metadata (.zarray, .zgroup or zarr.json); for a plain "
                "directory (a sequencer run folder, say) use --kind directory",
            )
        return None

    def node(self, root: str, rel: str) -> Node:
        """The node at `rel` (raises MetadataError or OSError when it cannot be read)."""
        return read_node(Path(root) / rel if rel else Path(root), rel)

    def wait_before_copy(self, version: Version | None, wall: float) -> float:
        return 0.0  # published by rename: complete under its final name


class PlainTree:
    has_expected_set = False

    def __init__(self, ready_age: float) -> None:
        self.ready_age = ready_age

    def problem(self, root: str) -> SoftcopyError | None:
        return None  # chosen explicitly: any directory will do

    def node(self, root: str, rel: str) -> Node:
        return None  # every file is a plain file: no layouts, no expected set

    def wait_before_copy(self, version: Version | None, wall: float | None = None) -> float:
        """Seconds until a file written in place has been unchanged for `ready_age`."""
        if version is None:
            return 0.0
        age = (time.time() if wall is None else wall) - newest_change(version)
        return max(0.0, self.ready_age - age)


SourceKind = ZarrTree | PlainTree


def source_kind(kind: str, ready_age: float) -> SourceKind:
    return PlainTree(ready_age) if kind == "directory" else ZarrTree()
