"""A rerun's verification taken from its match with the journal, when nothing was copied.

A rerun lists the destination once to decide what to copy. When every file there was
vouched for by the journal (the source's current version was copied, and the file still
has its size and mtime), nothing had to be copied or compared, and the source did not
change since its listing (the drain ended on the first listing, taken after the marker),
walking both trees again would find exactly what the match found: each trusted file has
its source's size by construction, a file missing at the destination would have been
copied, one of another size re-copied. So the match's findings are the verification,
and a no-op rerun lists each tree once instead of twice. Anything the match cannot vouch
for (a directory it could not list, a file it could not examine, a leftover temporary
file) sends verification back to walking both trees.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..sources.scan import Version
from ..verify.compare import Finding, Verification, check_metadata, is_metadata
from ..verify.sizes import format_entry

_LINES = 512  # size list lines joined per write


@dataclass
class Matched:
    verification: Verification = field(default_factory=Verification)
    metadata: list[str] = field(default_factory=list)  # metadata files, checked at the end
    markers: list[str] = field(default_factory=list)  # markers at the destination's root
    complete: bool = True  # False: something the match could not vouch for

    def trusted(self, files: Iterable[tuple[str, Version]]) -> None:
        """Files whose copy the journal vouched for, as the destination holds them."""
        result = self.verification
        lines: list[str] = []
        for key, there in files:
            result.files += 1
            result.bytes += there.size
            lines.append(format_entry(key, there.size, there.mtime_ns))
            if is_metadata(key):
                self.metadata.append(key)
            if len(lines) >= _LINES:
                self._write(lines)
        self._write(lines)

    def trusted_lines(self, files: int, nbytes: int, lines: bytes, metadata: list[str]) -> None:
        """`trusted` for files given as their size list lines (engine/prematch.py made them),
        with their bytes and which of them are metadata files."""
        result = self.verification
        result.files += files
        result.bytes += nbytes
        result.size_list.write(lines)
        self.metadata += metadata

    def _write(self, lines: list[str]) -> None:
        # A write per few hundred lines: one per line was half of this step's time.
        self.verification.size_list.write("".join(lines).encode("utf-8", "surrogateescape"))
        lines.clear()

    def extra(self, key: str) -> None:
        self.verification.findings.append(Finding("extra", key))

    def doubt(self) -> None:
        self.complete = False

    def result(self, destination: str, source_markers: frozenset[str]) -> Verification:
        """The verification, given the markers the source has (copied after it)."""
        result = self.verification
        result.findings += [Finding("extra", k) for k in self.markers if k not in source_markers]
        result.findings += check_metadata(destination, self.metadata)
        result.findings.sort(key=lambda f: (f.kind, f.key))
        return result
