"""Which filesystem a path is on, and whether inotify can see what writers do there."""

from __future__ import annotations

import os

# inotify reports changes made through this kernel only. On these, the writer is
# usually another host (or a FUSE daemon's backing store), so events never come.
_NO_REMOTE_EVENTS = (
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "9p",
    "ceph",
    "glusterfs",
    "lustre",
    "gpfs",
    "beegfs",
    "afs",
    "fuse",  # and every fuse.* (sshfs, rclone, s3fs, ...)
)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    return (
        field.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def filesystem_type(path: str) -> tuple[str, str]:
    """(type, mount point) of the filesystem holding `path`, from /proc/self/mountinfo."""
    target = os.path.realpath(path)
    best, best_type = "", "unknown"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mount = _unescape(fields[4])
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, best_type = mount, right.split()[0]
    except OSError:
        pass
    return best_type, best


def events_unreliable(fstype: str) -> bool:
    """True where inotify cannot be trusted to report the writer's changes."""
    return fstype in _NO_REMOTE_EVENTS or fstype.startswith("fuse.")
