"""What the commands print: pure functions of the engine's results and records."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..names import json_record, safe_text, shown
from ..sinks.base import UNLIMITED
from ..state.journal import RUNNING_STATES
from ..units import counted, human_bytes

if TYPE_CHECKING:
    from ..engine.target import Summary

PLAN_FIELDS = (
    "files_to_copy",
    "bytes_to_copy",
    "files_to_recopy",
    "files_to_delete",
    "free_bytes",
    "free_inodes",
    "fits",
    "destination_mount",
)


def plan_text(
    source: str,
    destination: str,
    plan: dict[str, Any],
    per_file: list[tuple[str, str, int]] | None = None,
) -> str:
    """A --dry-run's plan, for people; with `per_file` (-v), first a line per file, as
    `rsync -n -v` lists them: the action, the size and the name (engine.plan.plan_files)."""

    def files(name: str, size: str | None = None) -> str:
        n = int(plan.get(name) or 0)
        text = f"{n} file{'' if n == 1 else 's'}"
        return f"{text} ({human_bytes(plan.get(size) or 0)})" if size else text

    inodes = plan.get("free_inodes")
    free = human_bytes(plan.get("free_bytes") or 0)
    if (plan.get("free_bytes") or 0) >= UNLIMITED:
        free = "no limit known (a bucket: a quota shows as a refused upload)"
    if inodes is not None:
        free += f" and {inodes} inodes"
    listing = [
        f"  {action:<8} {human_bytes(size):>10}  {shown(key)}"
        for key, action, size in per_file or ()
    ]
    lines = [
        f"plan: {shown(source)} -> {shown(destination)} (dry run: nothing was written)",
        *listing,
        f"  to copy:     {files('files_to_copy', 'bytes_to_copy')}",
        f"  to re-copy:  {files('files_to_recopy')} (at the destination with another size; "
        "part of the files to copy)",
    ]
    if "files_to_compare" in plan:
        lines.append(
            f"  to compare:  {files('files_to_compare', 'bytes_to_compare')} (same size: "
            "kept if identical, copied if not)"
        )
    if "files_trusted" in plan:
        because = plan.get("trusted_because") or "the journal says they are copied"
        lines.append(f"  trusted:     {files('files_trusted')} ({because})")
    lines.append(f"  to delete:   {files('files_to_delete')}")
    if plan.get("extras_kept"):
        lines.append(
            f"  foreign:     {files('extras_kept')} only in the destination, left alone "
            "(verification will fail: the destination is not softcopy's)"
        )
    lines += [
        f"  free space:  {free} on {plan.get('destination_mount')}",
        "  fits:        "
        + (
            "yes" if plan.get("fits") else "NO: free some space there or choose another destination"
        ),
    ]
    return "\n".join(lines)


def summary_lines(result: Summary, err: bool, quiet: bool = False) -> list[tuple[str, bool]]:
    """A finished target's lines, each with whether it goes to stderr: `err` for the
    summary itself (with --json stdout carries events only), stderr always for its error.
    `quiet` (-q): none for a target done, all on stderr for one that is not."""
    if quiet and result.ok:
        return []
    err = err or quiet
    lines = [(safe_text(result.line()), err)]
    lines += [
        (f"  failed: {shown(key)}: {safe_text(error)}", err)
        for key, error in sorted(result.failures.items())
    ]
    lines += [(f"  {finding}", err) for finding in result.findings]
    if result.error:
        lines.append((f"softcopy: {shown(result.source)}: {safe_text(result.error)}", True))
    return lines


def verify_summary_text(
    ok: bool, findings: int, files: int, nbytes: int, mode: str, seconds: float
) -> str:
    """`verify`'s last line (stdout when identical, stderr otherwise)."""
    if not ok:
        return f"{counted(findings, 'difference')} found"
    rate = nbytes / seconds / 1e6 if seconds > 0 else 0.0
    return (
        f"identical: {counted(files, 'file')} ({counted(nbytes, 'byte')}) compared by {mode} "
        f"in {seconds:.1f} s ({rate:.0f} MB/s)"
    )


def status_text(t: dict[str, Any]) -> str:
    """One journal target, for people."""

    def when(seconds: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))

    pad = " " * 12
    lines = [
        f"{t['state']:<11} {shown(t['source'])} -> {shown(t['destination'])}",
        f"{pad}{counted(t['files_done'], 'file')} ({human_bytes(t['bytes_done'])}) done, "
        f"{counted(t['files_pending'], 'file')} ({human_bytes(t['bytes_pending'])}) pending, "
        f"{len(t['failures'])} failed; last activity {when(t['updated'])}",
    ]
    if t.get("recorded_state"):
        lines.append(
            f"{pad}not running: its process ({t['pid']} on {t['host']}) is gone; it was "
            f"{t['recorded_state']}, last seen {when(t['updated'])}; run the same command "
            "again to resume"
        )
    elif t["running"] is None and t["state"] in RUNNING_STATES and t.get("pid"):
        lines.append(f"{pad}running on {t['host']} (pid {t['pid']}), as far as it last said")
    if t.get("reason") and not t["error"]:
        # While copying: what it waits for, or why nothing moves; after: why it ended.
        lines.append(f"{pad}{safe_text(t['reason'])}")
    if t["error"]:
        lines.append(f"{pad}{safe_text(t['error'])}")
    for key, error in sorted(t["failures"].items()):
        lines.append(f"{pad}failed: {shown(key)}: {safe_text(error)}")
    return "\n".join(lines)


def status_record(t: dict[str, Any]) -> dict[str, Any]:
    """Valid UTF-8 JSON: a name that is not UTF-8 shows its raw bytes as \\xNN, and the
    record's `names_hex` maps that text to the exact bytes (see names.json_record)."""
    extra = {"last_seen": t["updated"]} if t.get("recorded_state") else {}
    return json_record({**t, **extra})


def run_text(r: dict[str, Any]) -> str:
    """One run of `watch`, for people (a `run_record`)."""
    pad = " " * 12
    lines = [
        f"{r['state']:<11} run {shown(r['run'])}: {shown(r['source'])} -> "
        f"{shown(r['destination'])}",
        f"{pad}{counted(r['files'], 'file')} ({human_bytes(r['bytes'])}), "
        f"attempt {r['attempts']}; "
        f"found {r['discovered']}, started {r['started'] or '-'}, ended {r['ended'] or '-'}",
    ]
    if r["finished_because"]:
        free = (
            ""
            if r["safe_to_free"] is None
            else ("; safe to free" if r["safe_to_free"] else "; a guessed end: not safe to free")
        )
        lines.append(f"{pad}finished because {safe_text(r['finished_because'])}{free}")
    if r["error"]:
        lines.append(f"{pad}{safe_text(r['error'])}")
    if r["next_attempt"] and r["state"] == "retry":
        lines.append(f"{pad}next attempt at {r['next_attempt']}")
    hook = r.get("hook")
    if hook:
        outcome = "ok" if hook["exit_code"] == 0 else (hook["error"] or "failed")
        lines.append(f"{pad}hook {safe_text(hook['command'])}: {safe_text(outcome)}")
    if r.get("released"):
        lines.append(
            f"{pad}released {r['released']}"
            + (f" (moved to {shown(r['released_to'])})" if r.get("released_to") else "")
        )
    return "\n".join(lines)
