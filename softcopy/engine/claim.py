"""Whose copy is the destination? Decided, and refused, before anything in it changes.

New or empty: ours. A copy softcopy made of this same source (path and directory
identity): ours, and files the source lacks are deleted. Not made by softcopy:
not ours, its files are never deleted (ours with --replace); and refused when it holds
only names the source lacks (a folder to copy into, out of `cp -r` habit), or, met for
the first time, files that cannot be this source's (config.not_this_copy). A copy of
another source, or of a source directory deleted and made again at the same path (a new
acquisition): refused, unless --replace.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Callable

from ..config import TargetConfig
from ..errors import ConfigError, from_os_error
from ..state.records import LINK_PROBLEM, Records

log = logging.getLogger(__name__)


def source_identity(src: str) -> list[int]:
    try:
        st = os.stat(src)
    except OSError as exc:
        raise from_os_error(exc, "read source", src) from exc
    return [st.st_dev, st.st_ino]


def claim(
    cfg: TargetConfig,
    existed: bool,
    previous: dict | None,
    foreign: Callable[[str], str | None],
    records: object,
) -> bool:
    """True when the destination is ours to make a copy of cfg.source; refuses otherwise.

    `foreign` is the sink's: why its destination is something else's, if it is. `records`
    names where target.json is, for messages.
    """
    src, dst = str(cfg.source), str(cfg.destination)
    if not existed:
        return True
    if previous is None or not isinstance(previous.get("source"), str):
        # Checked when the target was made too; again here for a source that appeared
        # only since (--wait-for-source, the service).
        problem = foreign(src)
        if problem is not None:
            raise ConfigError(dst, "copy to destination", problem)
        if cfg.replace:  # asked for: its files the source lacks go, the others are rewritten
            log.warning("%s: making %s, a folder softcopy did not make, its copy (--replace)",
                        src, dst)  # fmt: skip
            return True
        return False
    if previous.get("compressed") and not cfg.replace:
        # A plain copy would find every FILE.gz extra and delete it.
        raise ConfigError(
            dst, "copy to destination", f"it holds softcopy's compressed copy of "
            f"{previous['source']} (--compress {previous['compressed']}, so says {records}): "
            "copy again with the same --compress, or choose another destination",
        )  # fmt: skip
    source = previous["source"]
    identity = previous.get("source_identity")  # absent in records of older versions
    if not (isinstance(identity, list) and len(identity) == 2):
        identity = None
    current = source_identity(src)
    if source == src and (identity is None or identity == current):
        return True
    if cfg.replace:
        log.warning("%s: replacing the copy of %s in %s (--replace)", src, source, dst)
        return True
    if source != src:
        problem = (
            f"it holds softcopy's copy of another source, {source} (so says {records}), "
            f"not of {src}; copying would delete that copy's files that {src} "
            "lacks: choose another destination, or give --replace to turn it into a "
            f"copy of {src}"
        )
    else:
        assert identity is not None
        problem = (
            f"it holds softcopy's copy of {source} as that directory was before it was "
            f"deleted and made again (device:inode {identity[0]}:{identity[1]}, now "
            f"{current[0]}:{current[1]}; so says {records}): a new acquisition at the "
            "same path would delete the old one's files here: choose another destination, "
            "or give --replace if it is the same data (a remount can change the device)"
        )
    raise ConfigError(dst, "copy to destination", problem)


def previous_target(records: Records) -> dict | None:
    """What target.json says this destination is a copy of; None when it says nothing."""
    try:
        record = json.loads(records.read("target.json"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        # A link or a fifo in its place decides nothing: say so, rather than guess.
        problem = describe_record(exc)
        raise ConfigError(records / "target.json", "read records", problem) from exc
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def describe_record(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return LINK_PROBLEM
    return exc.strerror or str(exc)
