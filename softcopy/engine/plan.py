"""What a run does with each file already in the destination: trust, compare, copy or delete.

Pure decisions from three listings (source, destination, journal), shared by a
real run's start and by `--dry-run`, which must say exactly what the run would do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ..sinks.base import Space
from ..sources.scan import Version

TRUST = "trust"  # the journal says we copied this very source version; size and mtime agree
COMPARE = "compare"  # same size, not vouched for: compare bytes before rewriting
COPY = "copy"  # absent or a different size at the destination
DELETE = "delete"  # only in the destination, and the destination is softcopy's own
KEEP_EXTRA = "keep"  # only in a foreign destination: left alone, reported by verification
RECOPY = "re-copy"  # a COPY onto a file of another size (listed apart; counted as COPY)


def decide(
    here: Version | None,
    there: Version | None,
    record: tuple[Version, str] | None,
    owned: bool,
) -> str | None:
    """The action for one key; None when there is nothing to do (both sides absent)."""
    if here is None:
        if there is None:
            return None
        return DELETE if owned else KEEP_EXTRA
    if there is None:
        return COPY
    quick = here.size == there.size and here.mtime_ns == there.mtime_ns
    if quick and record is not None and record[0] == here:
        return TRUST
    return COMPARE if here.size == there.size else COPY


@dataclass
class Plan:
    """Counts and bytes per action, for `--dry-run` and the preflight space check."""

    files: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)

    def add(self, action: str, size: int) -> None:
        self.files[action] = self.files.get(action, 0) + 1
        self.bytes[action] = self.bytes.get(action, 0) + size


def actions(
    source: Mapping[str, Version],
    destination: Mapping[str, Version],
    journaled: Mapping[str, tuple[Version, str]],
    owned: bool,
) -> Iterator[tuple[str, str, int]]:
    """(key, action, size) for every key with something to decide, in no order."""
    for key in source.keys() | destination.keys():
        here, there = source.get(key), destination.get(key)
        action = decide(here, there, journaled.get(key), owned)
        if action is not None:
            yield key, action, (here or there or Version(0, 0, 0, 0)).size


def plan_all(
    source: Mapping[str, Version],
    destination: Mapping[str, Version],
    journaled: Mapping[str, tuple[Version, str]],
    owned: bool,
) -> Plan:
    plan = Plan()
    for _, action, size in actions(source, destination, journaled, owned):
        plan.add(action, size)
    return plan


def plan_files(
    source: Mapping[str, Version],
    destination: Mapping[str, Version],
    journaled: Mapping[str, tuple[Version, str]],
    owned: bool,
) -> list[tuple[str, str, int]]:
    """What a run would do with each file, sorted by name (`--dry-run -v`, like `rsync -nv`).

    Trusted files are left out, as rsync leaves out files that are up to date; a copy onto
    a file of another size is RECOPY.
    """
    listed = []
    for key, action, size in actions(source, destination, journaled, owned):
        if action == TRUST:
            continue
        if action == COPY and key in destination:
            action = RECOPY
        listed.append((key, action, size))
    # By the name's bytes, as `ls` in the C locale sorts: one order for any name.
    listed.sort(key=lambda item: os.fsencode(item[0]))
    return listed


def plan_record(
    here: Mapping[str, Version],
    there: Mapping[str, Version],
    journaled: Mapping[str, tuple[Version, str]],
    owned: bool,
    space: Space,
) -> dict:
    """What `--dry-run` reports (the `plan` event): actions, bytes, and whether it fits."""
    plan = plan_all(here, there, journaled, owned)
    needed, files = plan.bytes.get(COPY, 0), plan.files.get(COPY, 0)
    return {
        "files_to_copy": files,
        "bytes_to_copy": needed,
        "files_to_compare": plan.files.get(COMPARE, 0),
        "bytes_to_compare": plan.bytes.get(COMPARE, 0),
        "files_trusted": plan.files.get(TRUST, 0),
        "files_to_delete": plan.files.get(DELETE, 0),
        "extras_kept": plan.files.get(KEEP_EXTRA, 0),
        "free_bytes": space.free_bytes,
        "free_inodes": space.free_inodes,
        "destination_mount": space.mount,
        "fits": needed <= space.free_bytes
        and (space.free_inodes is None or files <= space.free_inodes),
        # "re-copy": files at the destination that will be rewritten (other size)
        "files_to_recopy": sum(
            1 for k, v in here.items() if k in there and there[k].size != v.size
        ),
    }
