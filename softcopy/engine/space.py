"""Will it fit? The destination's free space against what is still to copy, in words.

Sizes are rounded up to the destination's block size by the caller (a 1-byte file
takes a whole block); inodes count files. The source may still grow after the
preflight check, so a full destination mid-copy gets its own message.
"""

from __future__ import annotations

from ..sinks.base import Space
from ..units import counted, human_bytes


def preflight_problem(files: int, nbytes: int, space: Space) -> str | None:
    """Why a copy of `files` files and `nbytes` bytes cannot start here (None: it fits)."""
    if nbytes > space.free_bytes:
        return (
            f"{space.where} has {human_bytes(space.free_bytes)} free, but "
            f"{human_bytes(nbytes)} in {counted(files, 'file')} still to be copied; free at least "
            f"{human_bytes(nbytes - space.free_bytes)} and run again"
        )
    if space.free_inodes is not None and files > space.free_inodes:
        return (
            f"{space.where} has room for {space.free_inodes} more files (inodes), but {files} "
            "are still to be copied; free inodes and run again"
        )
    return None


def taken_back(removed: list[str] | None) -> str:
    """The end of a refusal before anything was copied: what it left (`removed`: what
    this run had made and removed again; None: a destination it cannot tidy, a bucket)."""
    if removed is None:
        return "; nothing was copied"
    if not removed:
        return "; nothing was copied, and the destination is as it was"
    return "; nothing was copied, and the folders softcopy made for this run were removed: " + (
        ", ".join(sorted(removed))
    )


def full_problem(error: str, files: int, nbytes: int, space: Space) -> str:
    """What to say when the destination filled up mid-copy."""
    if space.free_inodes == 0:
        problem = f"it is out of inodes, and {counted(files, 'file')} still to be copied"
    else:
        problem = (
            f"{human_bytes(space.free_bytes)} free, about {human_bytes(nbytes)} more needed "
            f"for {counted(files, 'file')}"
        )
    return (
        f"{error}: {space.where} is full ({problem}); nothing partial was left behind: free "
        "space and run the same command again to resume"
    )
