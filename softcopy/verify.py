"""Compare a destination tree with its source: findings as data, never exceptions."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from .scan import ScanResult, scan_tree


@dataclass(frozen=True)
class Finding:
    kind: str  # missing, extra, size, type, link, leftover
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.key}" + (f" ({self.detail})" if self.detail else "")

    def as_dict(self) -> dict:
        return asdict(self)


def compare_trees(
    source: str,
    destination: str,
    ignore: frozenset[str] = frozenset(),
    source_scan: ScanResult | None = None,
) -> list[Finding]:
    """Every difference in the set of files, their sizes, and link targets.

    `ignore` names root-level keys to leave out on both sides (the `complete`
    marker, which is copied only after verification passed).
    """
    src = source_scan if source_scan is not None else scan_tree(source)
    dst = scan_tree(destination)
    findings: list[Finding] = []
    for key in sorted(dst.temporary):
        findings.append(Finding("leftover", key, "temporary file left in the destination"))
    src_keys = (src.files.keys() | src.links) - ignore
    dst_keys = (dst.files.keys() | dst.links) - ignore
    for key in sorted(src_keys - dst_keys):
        findings.append(Finding("missing", key, "in the source, not in the destination"))
    for key in sorted(dst_keys - src_keys):
        findings.append(Finding("extra", key, "in the destination, not in the source"))
    for key in sorted(src_keys & dst_keys):
        src_link, dst_link = key in src.links, key in dst.links
        if src_link != dst_link:
            kinds = ("link" if src_link else "file", "link" if dst_link else "file")
            findings.append(
                Finding("type", key, f"source is a {kinds[0]}, destination a {kinds[1]}")
            )
        elif src_link:
            a = os.readlink(os.path.join(source, key))
            b = os.readlink(os.path.join(destination, key))
            if a != b:
                findings.append(Finding("link", key, f"source -> {a}, destination -> {b}"))
        elif src.files[key].size != dst.files[key].size:
            findings.append(
                Finding(
                    "size",
                    key,
                    f"source {src.files[key].size} bytes, destination {dst.files[key].size} bytes",
                )
            )
    return findings
