"""What a target reports: its event types and its summary (states: softcopy/states.py).

States and event names are `StrEnum`s: they compare equal to, and serialise as,
the plain strings of the `--json` wire format (schema 1), which stays unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum

from ..sinks.base import UNLIMITED
from ..states import FINAL_STATES, RUNNING_STATES, State
from ..units import counted, human_bytes
from ..verify.compare import Finding


class Event(StrEnum):
    STATE = "state"
    PROGRESS = "progress"
    PAUSED = "paused"
    RESUMED = "resumed"
    WAITING = "waiting"  # everything copied, no end rule met yet: what would end it
    STALLED = "stalled"  # work pending, nothing finished for a while: why
    FILE_FAILED = "file_failed"
    FILE_SKIPPED = "file_skipped"  # the destination cannot hold it (a link at an object store)
    # Per file, only when asked (--file-events) and always in the run log (state/runlog.py):
    FILE_COPIED = "file_copied"  # a file new at the destination
    FILE_RECOPIED = "file_recopied"  # replaced a version the destination held
    FILE_DELETED = "file_deleted"  # gone from the source, so deleted at the destination
    PLAN_FILE = "plan_file"  # --dry-run: what a run would do with one file
    RUN_STARTED = "run_started"  # the run log's first line of a run
    RUN_ENDED = "run_ended"  # and its last
    FINDING = "finding"
    PLAN = "plan"
    SUMMARY = "summary"
    ERROR = "error"


@dataclass
class Summary:
    """One target's result: the `summary` event, summary.json, and the line printed."""

    source: str
    destination: str
    state: str = State.WAITING
    reason: str = ""
    files_copied: int = 0  # distinct files: one the writer rewrote mid-copy counts once
    bytes_copied: int = 0  # by every copy made
    files_deleted: int = 0
    files_already_there: int = 0
    files_at_source: int = 0
    bytes_at_source: int = 0
    # Copied last, after verification, and counted apart (not data); the verified copy
    # has them too, as `verify` and the certificate count it.
    markers_copied: int = 0
    seconds: float = 0.0
    copies_made: int = 0  # copy operations: files_copied and every copy made again
    failures: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    error: str = ""
    plan: dict = field(default_factory=dict)  # --dry-run: what a run would do
    # --dry-run, per file: (key, action, size); listed with -v, not part of the summary event
    plan_files: list[tuple[str, str, int]] = field(default_factory=list, repr=False)
    end_rule: str = ""  # marker, sentinel, settle, idle_timeout (finish.END_PROVEN)
    links_skipped: list[str] = field(default_factory=list)  # an object store has no links

    @property
    def ok(self) -> bool:
        return self.state == State.DONE or (
            self.state == State.DRY_RUN and self.plan.get("fits", False)
        )

    def line(self) -> str:
        if self.state == State.DRY_RUN:
            p = self.plan
            free = human_bytes(p["free_bytes"]) if p["free_bytes"] < UNLIMITED else "no limit known"
            return (
                f"dry run: {self.source} -> {self.destination}: would copy "
                f"{counted(p['files_to_copy'], 'file')} ({human_bytes(p['bytes_to_copy'])}), "
                f"of which {p['files_to_recopy']} "
                f"{'replaces' if p['files_to_recopy'] == 1 else 'replace'} a file of another "
                "size; compare "
                f"{p['files_to_compare']}, trust {p['files_trusted']}, delete "
                f"{p['files_to_delete']}, leave {p['extras_kept']} foreign; "
                f"{free} free at {p['destination_mount']}: "
                + ("fits" if p["fits"] else "DOES NOT FIT")
            )
        rate = self.bytes_copied / self.seconds / 1e6 if self.seconds > 0 else 0.0
        skipped = (
            f"{counted(len(self.links_skipped), 'link')} skipped; " if self.links_skipped else ""
        )
        checked = "verified" if self.ok else "at the source"
        return (
            f"{self.state}: {self.source} -> {self.destination}: "
            f"{counted(self.files_at_source + self.markers_copied, 'file')} "
            f"({human_bytes(self.bytes_at_source)}) {checked}; "
            f"{self.files_copied} copied ({human_bytes(self.bytes_copied)}), "
            f"{self.files_deleted} deleted, {self.files_already_there} already there; "
            f"{skipped}{self.seconds:.1f} s, {rate:.1f} MB/s"
        )

    def as_dict(self) -> dict:
        # Not dataclasses.asdict: it would deep-copy a dry run's per-file list too.
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "plan_files"}
        d["state"] = str(self.state)
        d["failures"] = dict(self.failures)
        d["plan"] = dict(self.plan)
        d["findings"] = [f.as_dict() for f in self.findings]
        d["links_skipped"] = list(self.links_skipped)
        return d


__all__ = ["FINAL_STATES", "RUNNING_STATES", "Event", "State", "Summary"]
