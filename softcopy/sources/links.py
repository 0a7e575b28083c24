"""Links inside the source, followed for a destination that has none (an object store, with
`--follow-links-inside`): the file a link points to is copied under the link's name.

Only a link that resolves, through every link on the way, to a regular file inside the
source is followed; any other stays a link (and is skipped, with a warning). Its version
is the file's, with the later of the two change times: a link pointed elsewhere, or the
file rewritten, is a new version of the key, so its copy is redone.
"""

from __future__ import annotations

import os
import stat

from .scan import Version


def followed(root: str, key: str) -> tuple[str, Version] | None:
    """(the file's real path, the key's version) when `key` is a link to a regular file
    inside `root`; None otherwise (not a link, outside, a directory, dangling)."""
    path = os.path.join(root, key)
    try:
        link = os.lstat(path)
        if not stat.S_ISLNK(link.st_mode):
            return None
        real = os.path.realpath(path)
        inside = os.path.realpath(root)
        if real == inside or os.path.commonpath([inside, real]) != inside:
            return None
        target = os.stat(real)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(target.st_mode):
        return None
    return real, followed_version(link, target)


def followed_version(link: os.stat_result, target: os.stat_result) -> Version:
    return Version(
        target.st_size,
        target.st_mtime_ns,
        target.st_ino,
        max(link.st_ctime_ns, target.st_ctime_ns),
    )
