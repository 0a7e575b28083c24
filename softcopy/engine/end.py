"""The end of a target: the verdict of verification, and the records that certify it.

Written in this order, each step only after the one before succeeded: the
destination flushed and verified, the markers published and flushed, then
`summary.json`, the manifest, and last the certificate, the file a cleanup script
checks before it frees the source.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..names import json_record
from ..sources.select import Selection
from ..state.records import RecordFile, Records, write_file
from ..units import counted
from ..verify.compare import Finding, Verification
from ..verify.manifest import CERTIFICATE, MANIFEST, write_certificate, write_manifest
from ..verify.sizes import SIZE_LIST, format_entry, write_size_list
from .events import Summary
from .finish import end_record

if TYPE_CHECKING:
    from ..sinks.base import Sink


def verdict(findings: list[Finding], failures: dict[str, str], owned: bool) -> str:
    """Why the copy is not done ("" when it is)."""
    if not findings and not failures:
        return ""
    error = (
        f"verification found {counted(len(findings), 'difference')}, and "
        f"{counted(len(failures), 'file or directory', 'files or directories')} failed to copy"
    )
    if not owned and any(f.kind == "extra" for f in findings):
        error += (
            "; the destination already held files the source does not have, and "
            "softcopy deletes those only in a destination it created: remove them "
            "or choose an empty destination"
        )
    return error


def certificate(
    summary: Summary,
    verification: Verification,
    *,
    started: float,
    hashed: bool,
    trust_guessed_end: bool,
    markers_copied: int,
    marker_bytes: int = 0,
    chunks: tuple[int, int] = (0, 0),
    manifest_blake3: str | None,
    selection: Selection | None = None,
    size_list_blake3: str | None = None,
) -> dict:
    present, expected = chunks
    record = {
        "source": summary.source,
        "destination": summary.destination,
        "started": _iso(started),
        "finished": _iso(time.time()),
        "finished_because": summary.reason,
        **end_record(summary.end_rule, summary.reason, trust_guessed_end),
        "verification": "blake3" if hashed else "sizes",
        # Every regular file in the destination, the marker included, whatever the
        # verification mode.
        "files": verification.files + markers_copied,
        "bytes": verification.bytes + marker_bytes,
        "links": verification.links,
        "chunks_expected": expected,
        "chunks_absent": expected - present,
        "files_deleted_during_acquisition": summary.files_deleted,
        "manifest": MANIFEST if manifest_blake3 else None,
        "manifest_blake3": manifest_blake3,
        # Read by `verify`: a file left out on purpose is not missing.
        "selection": None if selection is None else selection_record(selection),
        "size_list": SIZE_LIST if size_list_blake3 else None,
        "size_list_blake3": size_list_blake3,
        # Links the source holds at the end that this kind of destination cannot.
        "links_skipped": verification.links_skipped,
    }
    if verification.links_skipped:
        # The copy lacks what those links said: freeing the source would lose it.
        record["safe_to_free"] = False
    return record


def selection_record(selection: Selection) -> dict:
    return {
        "include": list(selection.include),
        "exclude": list(selection.exclude),
        "complete_marker": selection.complete_marker,
        "sentinels": list(selection.sentinels),
    }


def write_size_list_of(
    records: Records, verification: Verification, sink: Sink, markers: Iterable[str]
) -> str:
    """The size list (files.tsv) of every regular file of the verified copy: what
    verification found, then the markers published after it (a marker copied as a link is
    not a file). Returns its BLAKE3, which the certificate records."""
    body = verification.size_list
    body.seek(0, os.SEEK_END)
    for key in sorted(markers):
        held = sink.version(key)
        if held is not None and sink.link_target(key) is None:
            body.write(
                format_entry(key, held.size, held.mtime_ns).encode("utf-8", "surrogateescape")
            )
    return write_size_list(records / SIZE_LIST, body)


def write_summary(records: Records, summary: Summary) -> None:
    # Read by scripts and people: strict JSON, byte names through names_hex.
    write_json(records / "summary.json", json_record(summary.as_dict()))


def write_manifest_of(records: Records, digests: dict[str, str]) -> str:
    """The b3sum manifest of every file with a digest; returns the manifest's own BLAKE3."""
    return write_manifest(records / MANIFEST, {k: d for k, d in digests.items() if d})


def write_certificate_to(records: Records, record: dict) -> None:
    write_certificate(records / CERTIFICATE, record)


def write_json(path: RecordFile, data: object) -> None:
    write_file(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
