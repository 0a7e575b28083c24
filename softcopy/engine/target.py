"""One target from start to done: watch, scan, feed copiers, notice the end, drain, verify.

States: waiting -> copying -> draining -> verifying -> done | failed | interrupted.
Only this module decides what a key needs; copiers just do what they are told.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import heapq
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import wait
from pathlib import Path

from .. import __version__
from ..config import TargetConfig
from ..copiers.pool import CopierOptions, CopierPool
from ..errors import ConfigError, MetadataError, SoftcopyError, from_os_error
from ..names import json_record, shown
from ..sinks.local import (
    CHANGED,
    COPIED,
    DELETED,
    FAILED,
    SAME,
    DirCache,
    Outcome,
    copy_one,
    temp_name,
)
from ..sources.mounts import events_unreliable, filesystem_type
from ..sources.pressure import DiskPressure, idle_class_warning
from ..sources.scan import TEMP_PREFIX, ScanResult, Version, scan_tree, stat_key
from ..sources.watch import TreeWatcher
from ..state.journal import Journal, default_state_dir, read_copied_files
from ..state.records import (
    RecordFile,
    Records,
    describe,
    lock_fd,
    open_directory,
    records_dir,
    write_file,
)
from ..throttle import create_bucket
from ..units import human_bytes
from ..verify.compare import Finding, Verification, compare_trees
from ..verify.manifest import CERTIFICATE, MANIFEST, write_certificate, write_manifest
from ..zarr.layout import ArrayLayout, metadata_kind, read_node
from .ledger import Ledger
from .plan import COMPARE, COPY, DELETE, KEEP_EXTRA, TRUST, decide, plan_all
from .racy import Granularity, coarse_clock_ns, proven_after_ns

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 1.0
_SUPERVISOR_NICE = 10
_LOG_EVERY = 10.0
_ARRAY_METADATA = ("zarr.json", ".zarray")
_NODE_METADATA = ("zarr.json", ".zarray", ".zgroup")  # str.endswith: cheap on a million keys
# A file that exists but cannot be stat'ed: no real file has inode 0.
_UNKNOWN_VERSION = Version(0, 0, 0, 0)
# Seconds between journal checkpoints (a syncfs of the destination, then one
# SQLite transaction): the most a crash can make a resumed run compare again.
_CHECKPOINT_EVERY = 2.0
_RETRY_BASE = 0.2
# A busy source disk pauses the copiers, but never for good: another job's I/O can keep
# a shared disk busy for hours. After this long, one batch goes out every _TRICKLE_EVERY.
_MAX_PAUSE = 30.0
_TRICKLE_EVERY = 5.0
# Work pending and nothing done for this long: say why, in the log and in `status`.
_STALL_AFTER = 20.0
# Nothing to copy and no end in sight for this long (at least 4 x --settle): say once
# what would end the run.
_WAITING_NOTE_AFTER = 10.0
# The destination holds a copy whose source version is not proven (racy.py): it is
# compared again. Negative fields read as "absent" everywhere, and match no version.
_UNPROVEN = Version(-2, -2, -2, -2)
# Network filesystems stamp files with the server's clock, which may run behind ours.
_NETWORK_CLOCK_SKEW_NS = 2_000_000_000
# How a target's end was decided, and whether that proves the writer was done.
END_PROVEN = {"marker": True, "sentinel": True, "settle": False, "idle_timeout": False}
_BUSY = "another softcopy is already copying there"
_FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class StopSignal:
    """Ctrl-C / SIGTERM / SIGHUP, shared by every target: 1 = finish files in flight, 2 = abort."""

    def __init__(self) -> None:
        self.level = 0
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)

    def request(self) -> None:
        self.level += 1
        try:
            os.write(self._w, b"x")
        except BlockingIOError:
            pass

    def fileno(self) -> int:
        return self._r


@dataclass
class Summary:
    source: str
    destination: str
    state: str = "waiting"
    reason: str = ""
    files_copied: int = 0
    bytes_copied: int = 0
    files_deleted: int = 0
    files_already_there: int = 0
    files_at_source: int = 0
    bytes_at_source: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    error: str = ""
    plan: dict = field(default_factory=dict)  # --dry-run: what a run would do
    end_rule: str = ""  # marker, sentinel, settle, idle_timeout (END_PROVEN)

    @property
    def ok(self) -> bool:
        return self.state == "done" or (self.state == "dry-run" and self.plan.get("fits", False))

    def line(self) -> str:
        if self.state == "dry-run":
            p = self.plan
            return (
                f"dry run: {self.source} -> {self.destination}: would copy "
                f"{p['files_to_copy']} files ({human_bytes(p['bytes_to_copy'])}), of which "
                f"{p['files_to_recopy']} replace a file of another size; compare "
                f"{p['files_to_compare']}, trust {p['files_trusted']}, delete "
                f"{p['files_to_delete']}, leave {p['extras_kept']} foreign; "
                f"{human_bytes(p['free_bytes'])} free at {p['destination_mount']}: "
                + ("fits" if p["fits"] else "DOES NOT FIT")
            )
        rate = self.bytes_copied / self.seconds / 1e6 if self.seconds > 0 else 0.0
        checked = "verified" if self.ok else "at the source"
        return (
            f"{self.state}: {self.source} -> {self.destination}: "
            f"{self.files_at_source} files ({human_bytes(self.bytes_at_source)}) {checked}; "
            f"{self.files_copied} copied ({human_bytes(self.bytes_copied)}), "
            f"{self.files_deleted} deleted, {self.files_already_there} already there; "
            f"{self.seconds:.1f} s, {rate:.1f} MB/s"
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d["findings"] = [f.as_dict() for f in self.findings]
        return d


def sidecar_dir(destination: Path) -> Path:
    """softcopy's own records live beside the copy, never inside it."""
    return records_dir(destination)


class Supervisor:
    def __init__(
        self,
        cfg: TargetConfig,
        stop: StopSignal | None = None,
        events: Callable[[dict], None] | None = None,
        run_rate: tuple[str, float] | None = None,
    ) -> None:
        self.cfg = cfg
        self.stop = stop or StopSignal()
        self.events = events
        self.run_rate = run_rate  # a --max-rate shared with every other target of the run
        self._rate_file: str | None = None
        self.pressure: DiskPressure | None = None
        self.paused = False
        self.src = str(cfg.source)
        self.dst = str(cfg.destination)
        self.summary = Summary(self.src, self.dst)
        self.ledger = Ledger()
        self.watcher: TreeWatcher | None = None
        self.pool: CopierPool | None = None
        # Files at the source root that say the writer is done (`complete`, sentinels):
        # never copied with the data, only last, after verification.
        self.markers: dict[str, Version] = {}
        self.polling = False
        self.kind_is_directory = cfg.kind == "directory"
        self._markers_copied = 0
        self.temp_count = 0
        self.last_change = time.monotonic()
        self.next_scan = 0.0
        self.compare_first: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.deferred: dict[str, float] = {}  # key -> monotonic time it may be tried again
        self.failed: dict[str, str] = {}
        self.unreadable: dict[str, str] = {}  # directories the last scans could not list
        self._said_unreadable: set[str] = set()
        self.fatal: SoftcopyError | None = None
        self.queue_empty = False
        self.bad_metadata: dict[str, tuple[Version | None, ...]] = {}
        self.records: Records | None = None  # held open with its lock and the destination's
        self._dest_fd = -1  # the destination directory itself, locked (_prepare_destination)
        self._last_progress = time.monotonic()
        self._last_log = time.monotonic()
        self._bytes_at_last_progress = 0
        # Copy lag: seconds from a change seen at the source to its copy published.
        self._observed_at: dict[str, float] = {}
        self._lags: list[float] = []
        self._settle_checked = 0.0
        self._changes_seen = False
        self.journal: Journal | None = None
        self._unsynced: list[tuple[str, Version, str]] = []  # copied, not yet flushed+recorded
        self._unsynced_deleted: list[str] = []
        self._last_checkpoint = time.monotonic()
        self._pending = (0, 0)
        self._counts = (0, 0)
        self._totals = (0, 0, 0)
        self._recount_at = 0.0
        self.longest_pause = 0.0  # between two changes at the source
        # Copies whose source version a later change could still hide (racy.py): key ->
        # the version copied; each is compared again once its timestamp tick has passed.
        self.granularity = Granularity()
        self.racy: dict[str, Version] = {}
        self._racy_due: list[tuple[int, str]] = []  # heap of (wall ns, key)
        self._racy_margin_ns = coarse_clock_ns()
        self._paused_since = 0.0
        self._last_trickle = 0.0
        self._said_trickle = False
        self._last_advance = time.monotonic()  # last outcome from a copier
        self._said_stall = ""
        self._said_waiting = False

    # ---- the whole run --------------------------------------------------------------

    def run(self) -> Summary:
        started = self._started = time.monotonic()
        self._wall_started = time.time()
        try:
            self._run()
        except SoftcopyError as exc:
            self.summary.error = str(exc)
            self._set_state("failed", str(exc))
            raise
        finally:
            self.summary.seconds = time.monotonic() - started
            self._shutdown()
        return self.summary

    def _run(self) -> None:
        if self.cfg.dry_run:
            return self._dry_run()
        # The acquisition comes first: this thread too yields the CPU to the writer
        # (os.nice applies to the calling thread on Linux; copiers go to 19).
        os.nice(_SUPERVISOR_NICE)
        if not self.cfg.wait_for_source:
            problem = self._source_problem()  # bad input touches nothing, not even a lock
            if problem is not None:
                raise problem
        self._lock_destination()
        self.journal = Journal(
            self.cfg.state_dir or default_state_dir(),
            self.src,
            self.dst,
            reset_damaged=self.cfg.reset_journal,
        )
        self._set_state("waiting")
        if not self._wait_for_source():
            return self._interrupted()
        self._prepare_destination()
        self._set_state("copying")
        warning = idle_class_warning(self.src)
        if warning:
            log.warning("%s: %s", self.src, warning)
        if self.cfg.backoff:
            # The first sample's interval spans the scan: known before any file is copied.
            self.pressure = DiskPressure(self.src, busy_utilisation=self.cfg.busy_utilisation)
        self._choose_event_source()
        self.full_scan(initial=True)
        self._match_destination()
        self._preflight_space()
        limits = [self.run_rate] if self.run_rate else []
        if self.cfg.max_rate:
            self._rate_file = create_bucket()
            limits.append((self._rate_file, self.cfg.max_rate))
        self.pool = CopierPool(
            self.cfg.nprocs,
            CopierOptions(
                self.src,
                self.dst,
                self.cfg.sleep_time,
                self.cfg.fsync,
                digest=self.cfg.hash,
                rate_limits=tuple(limits),
            ),
        )
        log.info("%s: copying to %s with %d copiers", self.src, self.dst, self.cfg.nprocs)
        self._check_pressure()
        reason = self._loop(finishing=False)
        if reason is None:
            return self._interrupted()
        self.summary.reason = reason
        log.info("%s: finished (%s); copying what is left", self.src, reason)
        if not END_PROVEN.get(self.summary.end_rule, False):
            log.warning(
                "%s: the end of the acquisition was guessed (%s): the copy is verified, but its "
                "certificate will not say the source is safe to free%s. To be sure, have the "
                "acquisition write a '%s' file at the source root when it ends (or give "
                "--sentinel for the file it writes)",
                self.src,
                reason,
                " (--trust-guessed-end overrides this)" if not self.cfg.trust_guessed_end else "",
                self.cfg.complete_marker,
            )
        self._set_state("draining")
        if not self._drain():
            return self._interrupted()
        self._checkpoint(fresh=True)
        self._set_state("verifying")
        self._verify_and_finish()
        self._set_state(self.summary.state, self.summary.error)

    def _choose_event_source(self) -> None:
        """inotify where it sees the writer; periodic scans where it cannot (network mounts)."""
        fstype, mount = filesystem_type(self.src)
        watch = self.cfg.watch
        self.polling = watch == "poll" or (watch == "auto" and events_unreliable(fstype))
        if self.polling or events_unreliable(fstype):
            self._racy_margin_ns += _NETWORK_CLOCK_SKEW_NS
        if self.polling:
            why = (
                "as asked (--watch poll)"
                if watch == "poll"
                else f"because it is on a {fstype} filesystem (mounted at {mount}), where "
                "inotify cannot see writes made by other hosts or behind the mount"
            )
            log.warning(
                "%s: no change notifications %s; polling every %g s instead",
                self.src,
                why,
                self.cfg.poll_interval,
            )
        else:
            self.watcher = TreeWatcher(self.src)

    def _dry_run(self) -> None:
        """Everything a run would decide before copying, from read-only listings."""
        problem = self._source_problem()
        if problem is not None:
            raise problem
        src = scan_tree(self.src)
        here = {k: v for k, v in src.files.items() if self._wanted(k)}
        dst_path = Path(self.dst)
        existing = dst_path.is_dir()
        dst_files = scan_tree(self.dst).files if existing else {}
        there = {k: v for k, v in dst_files.items() if self._wanted(k)}
        records = Records.open(sidecar_dir(dst_path), create=False)
        try:
            previous = _previous_target(records) if records is not None else None
        finally:
            if records is not None:
                records.close()
        # The same refusal as a real run, so a plan never promises what a run refuses.
        owned = self._claim(existing and any(dst_path.iterdir()), previous)
        journaled = read_copied_files(
            self.cfg.state_dir or default_state_dir(), self.dst, self.src, self.cfg.reset_journal
        )
        plan = plan_all(here, there, journaled, owned)
        probe = dst_path
        while not probe.exists():
            probe = probe.parent
        free_bytes, free_inodes = _free_space(str(probe))
        needed = plan.bytes.get(COPY, 0)
        self.summary.plan = {
            "files_to_copy": plan.files.get(COPY, 0),
            "bytes_to_copy": needed,
            "files_to_compare": plan.files.get(COMPARE, 0),
            "bytes_to_compare": plan.bytes.get(COMPARE, 0),
            "files_trusted": plan.files.get(TRUST, 0),
            "files_to_delete": plan.files.get(DELETE, 0),
            "extras_kept": plan.files.get(KEEP_EXTRA, 0),
            "free_bytes": free_bytes,
            "free_inodes": free_inodes,
            "destination_mount": _mount_point(str(probe)),
            "fits": needed <= free_bytes
            and (free_inodes is None or plan.files.get(COPY, 0) <= free_inodes),
        }
        # "re-copy": files at the destination that will be rewritten (other size)
        self.summary.plan["files_to_recopy"] = sum(
            1 for k, v in here.items() if k in there and there[k].size != v.size
        )
        self.summary.files_at_source = len(here) + len(src.links)
        self.summary.bytes_at_source = sum(v.size for v in here.values())
        self.summary.state = "dry-run"
        self._emit("plan", **self.summary.plan)

    def _set_state(self, state: str, error: str = "") -> None:
        self.summary.state = state
        if self.journal is not None:
            self.journal.set_state(state, self.summary.reason, error)
        self._emit("state", state=state, reason=self.summary.reason, error=error)
        if self.events is not None and self.pool is not None:
            self._report_progress()  # a short copy may end before the first timed report

    def _emit(self, event: str, **fields: object) -> None:
        """Hand one event to the reporter (progress display, JSON lines); never prints."""
        if self.events is not None:
            self.events(
                {"event": event, "time": time.time(), "source": self.src, "destination": self.dst}
                | fields
            )

    def _interrupted(self) -> None:
        self.summary.error = (
            "stopped before the copy was complete; run the same command again to resume"
        )
        self._set_state("interrupted", self.summary.error)

    # ---- start ---------------------------------------------------------------------------

    def _wait_for_source(self) -> bool:
        """True once the source exists and holds zarr metadata; False if stopped meanwhile."""
        said = 0.0
        while True:
            problem = self._source_problem()
            if problem is None:
                return True
            if not self.cfg.wait_for_source:
                raise problem
            now = time.monotonic()
            if now - said >= 30:
                log.info(
                    "%s: waiting for the source (%s); Ctrl-C to give up",
                    self.src,
                    problem.problem,
                )
                said = now
            wait([self.stop], 0.5)
            if self.stop.level:
                return False

    def _source_problem(self) -> SoftcopyError | None:
        try:
            os.stat(self.src)
        except FileNotFoundError:
            return ConfigError(self.src, "copy source", "it does not exist")
        except OSError as exc:
            return from_os_error(exc, "read source", self.src)
        if not os.path.isdir(self.src):
            return ConfigError(self.src, "copy source", "it is not a directory")
        if self.kind_is_directory:
            return None  # chosen explicitly: any directory will do
        try:
            node = read_node(Path(self.src), "")
        except PermissionError as exc:
            return from_os_error(exc, "read source", self.src)
        if node is None:
            return MetadataError(
                self.src,
                "copy source",
                "it holds no zarr metadata (.zarray, .zgroup or zarr.json); for a plain "
                "directory (a sequencer run folder, say) use --kind directory",
            )
        return None

    def _lock_destination(self) -> None:
        """One softcopy per records folder: taken before anything else touches it or its journal.

        The destination directory itself is locked too, by identity, once it exists
        (_prepare_destination): a second name for it (a link, a bind mount) has another
        records folder, but not another directory.
        """
        dst = Path(self.dst)
        if os.path.lexists(dst) and (dst.is_symlink() or not dst.is_dir()):
            raise ConfigError(dst, "use destination", describe(dst))
        self.records = Records.open(sidecar_dir(dst))
        if not self.records.lock():
            raise ConfigError(dst, "copy to destination", _BUSY)

    def _lock_identity(self) -> None:
        """flock the destination directory itself: every name of it meets the same lock."""
        assert self.records is not None
        self._dest_fd = open_directory(self.dst, "copy to destination")
        self.records.hold(self._dest_fd)
        if not lock_fd(self._dest_fd):
            raise ConfigError(
                self.dst, "copy to destination", f"{_BUSY} (under another name for this "
                "directory: a symbolic link or a bind mount)",
            )  # fmt: skip

    def _source_identity(self) -> list[int]:
        try:
            st = os.stat(self.src)
        except OSError as exc:
            raise from_os_error(exc, "read source", self.src) from exc
        return [st.st_dev, st.st_ino]

    def _claim(self, existed: bool, previous: dict | None) -> bool:
        """Is the destination ours to make a copy of this source (delete what it lacks)?

        New or empty: yes. A copy softcopy made of this same source (path and
        directory identity): yes. Not made by softcopy: no, its files are never
        deleted. A copy of another source, or of a source directory deleted and made
        again at the same path (a new acquisition): refused, unless --replace.
        """
        if not existed:
            return True
        if previous is None or not isinstance(previous.get("source"), str):
            return False
        source = previous["source"]
        identity = previous.get("source_identity")  # absent in records of older versions
        if not (isinstance(identity, list) and len(identity) == 2):
            identity = None
        current = self._source_identity()
        if source == self.src and (identity is None or identity == current):
            return True
        if self.cfg.replace:
            log.warning(
                "%s: replacing the copy of %s in %s (--replace)", self.src, source, self.dst
            )
            return True
        records = sidecar_dir(Path(self.dst)) / "target.json"
        if source != self.src:
            problem = (
                f"it holds softcopy's copy of another source, {source} (so says {records}), "
                f"not of {self.src}; copying would delete that copy's files that {self.src} "
                "lacks: choose another destination, or give --replace to turn it into a "
                f"copy of {self.src}"
            )
        else:
            problem = (
                f"it holds softcopy's copy of {source} as that directory was before it was "
                f"deleted and made again (device:inode {identity[0]}:{identity[1]}, now "
                f"{current[0]}:{current[1]}; so says {records}): a new acquisition at the "
                "same path would delete the old one's files here: choose another destination, "
                "or give --replace if it is the same data (a remount can change the device)"
            )
        raise ConfigError(self.dst, "copy to destination", problem)

    def _prepare_destination(self) -> None:
        dst = Path(self.dst)
        records = self.records
        assert records is not None
        try:
            dst.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, "create destination", exc.filename or dst) from exc
        self._lock_identity()
        with os.scandir(self._dest_fd) as entries:
            existed = next(entries, None) is not None
        # Decided (and refused) before anything in the destination or its records changes.
        # Files in the destination that the source lacks are deleted only when the
        # destination is ours: new, or made by softcopy from this same source.
        self.owned = self._claim(existed, _previous_target(records))
        records.remove_stale_temporaries()
        # Whatever a previous run certified no longer holds once this run writes:
        # a cleanup script must never find a certificate for a copy in progress.
        for stale in (CERTIFICATE, MANIFEST, "summary.json"):
            records.unlink(stale)
        if self.owned:
            # Recorded only for a destination softcopy made: a foreign one stays foreign
            # on every later run, so its files are never deleted.
            _write_json(
                records / "target.json",
                {
                    "source": self.src,
                    "source_identity": self._source_identity(),
                    "destination": self.dst,
                    "version": __version__,
                },
            )
        self._probe_destination()

    def _probe_destination(self) -> None:
        """Fail once, up front, when the destination cannot take files (read-only, permissions)."""
        probe = f"{TEMP_PREFIX}probe-{os.getpid()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            # Relative to the locked destination: never through a link put in its place.
            fd = os.open(probe, flags, 0o600, dir_fd=self._dest_fd)
            os.close(fd)
            os.unlink(probe, dir_fd=self._dest_fd)
        except OSError as exc:
            raise from_os_error(exc, "write to destination", self.dst) from exc

    def _match_destination(self) -> None:
        """Take stock of what a previous run (or someone else) already put in the destination.

        A file is trusted only when the journal says this run's predecessor copied
        exactly the source's current version and the file still has its size and
        mtime. Anything else of the right size is compared byte for byte before
        any rewrite: a destination populated by other means is checked, not trusted.
        """
        assert self.journal is not None
        journaled = self.journal.copied_files()
        dst = scan_tree(self.dst)
        dirs = DirCache(self.dst)
        try:
            for key in dst.temporary:
                rel_dir, _, name = key.rpartition("/")
                if name.startswith(TEMP_PREFIX):  # a crashed run's partial file
                    try:  # through the directories opened without following links
                        os.unlink(name, dir_fd=dirs.open(rel_dir, create=False))
                    except OSError:
                        pass
        finally:
            dirs.close()
        for key, there in dst.files.items():
            if not self._wanted(key):
                continue  # markers come last, after verification; excluded files are not ours
            here = self.ledger.source(key)
            action = decide(here, there, journaled.get(key), self.owned)
            if action == DELETE:
                self.ledger.set_copied(key, there)  # the copier deletes it
            elif action == TRUST:
                self.ledger.set_copied(key, here, journaled[key][1])
                self.summary.files_already_there += 1
            elif action == COMPARE:
                self.compare_first.add(key)
        for key in dst.links:
            if not self._wanted(key):
                # Not ours either: a link where a marker goes, or under --exclude. In the
                # ledger it would be "copied" from the source again and again, forever.
                continue
            here = self.ledger.source(key)
            if here is not None and _same_link(self.src, self.dst, key):
                self.ledger.set_copied(key, here)
                self.summary.files_already_there += 1
            elif here is None and self.owned:
                self.ledger.set_copied(key, stat_key(self.dst, key))

    # ---- observing the source --------------------------------------------------------------

    def full_scan(self, initial: bool = False) -> int:
        """List the whole source; returns how many keys changed. The source of truth."""
        self.ledger.begin_sweep()
        self.unreadable.clear()
        try:
            result = scan_tree(self.src, "", on_dir=self.watcher.watch if self.watcher else None)
        except OSError as exc:
            raise from_os_error(exc, "scan source", self.src) from exc
        changed = self._absorb(result, initial)
        self._note_unreadable(result)
        for key in self.ledger.end_sweep():
            changed += self._look(key)  # re-stat: it may have appeared after we listed it
        self.temp_count = len(result.temporary)
        interval = self.cfg.poll_interval if self.polling else self.cfg.scan_interval
        self.next_scan = time.monotonic() + interval
        return changed

    def _scan_subtree(self, rel: str) -> None:
        """A new directory: watch it, then list it, so no file falls between the two."""
        assert self.watcher is not None
        result = scan_tree(self.src, rel, on_dir=self.watcher.watch)
        self._absorb(result, initial=False, rel=rel)
        self._note_unreadable(result)

    def _note_unreadable(self, result: ScanResult) -> None:
        """A directory we cannot list is a failure of this target, named, not a crash."""
        for key, exc in result.errors:
            if not _is_dir(os.path.join(self.src, key)):
                # A file we cannot stat goes to a copier like any other, so it gets the
                # same retries, back-off and final failure as an error while copying;
                # unless it is not ours to copy (excluded, or a marker: copied last).
                if self._wanted(key):
                    self._observe(key, _UNKNOWN_VERSION)
                continue
            error = f"cannot list directory: {os.strerror(exc.errno or 0)}"
            if key not in self._said_unreadable:  # once per run, not once per scan
                log.error(
                    "%s: %s/: %s; the next scan tries again", shown(self.src), shown(key), error
                )
                self._said_unreadable.add(key)
            self.unreadable[key + "/"] = error

    def _is_marker(self, key: str) -> bool:
        if "/" in key:
            return False
        return key == self.cfg.complete_marker or any(
            fnmatch.fnmatchcase(key, p) for p in self.cfg.sentinels
        )

    def _wanted(self, key: str) -> bool:
        """A key softcopy copies with the data: not a marker, included, not excluded."""
        if self._is_marker(key):
            return False
        cfg = self.cfg
        if cfg.include and not any(fnmatch.fnmatchcase(key, p) for p in cfg.include):
            return False
        return not any(fnmatch.fnmatchcase(key, p) for p in cfg.exclude)

    def _absorb(self, result: ScanResult, initial: bool, rel: str = "") -> int:
        # Metadata first, so chunk files land in their array's rows.
        nodes = sorted(
            {os.path.dirname(k) for k in result.files if k.endswith(_NODE_METADATA)},
            key=lambda d: d.count("/"),
        )
        for node in nodes:
            self._refresh_node(node, strict=initial)
        self.granularity.observe_versions(result.files.values())
        if rel == "":
            self.markers = {k: v for k, v in result.files.items() if self._is_marker(k)}
        keys = self.ledger.observe_many(
            (key, version) for key, version in result.files.items() if self._wanted(key)
        )
        self._changed(keys)
        changed = len(keys)
        for key in result.links:
            changed += self._look(key)
        if rel == "":  # a whole listing, not one new directory's
            wanted = [v.size for k, v in result.files.items() if self._wanted(k)]
            self.summary.files_at_source = len(wanted) + sum(map(self._wanted, result.links))
            self.summary.bytes_at_source = sum(wanted)
        return changed

    def _look(self, key: str) -> int:
        """Stat one key and record what it is now; an error leaves our view as it was."""
        name = os.path.basename(key)
        try:
            version = stat_key(self.src, key)
        except OSError as exc:
            log.debug("%s: %s: cannot stat (%s); the next scan looks again", self.src, key, exc)
            return 0
        if version is not None and not self.granularity.settled:
            self.granularity.observe_versions((version,))
        if self._is_marker(key):
            if version is None:
                self.markers.pop(key, None)
            else:
                self.markers[key] = version
            return 0
        if not self._wanted(key):
            return 0
        if metadata_kind(name):
            self._refresh_node(os.path.dirname(key), strict=False)
        return self._observe(key, version)

    def _observe(self, key: str, version: Version | None) -> int:
        if not self.ledger.observe(key, version):
            return 0
        self._changed([key], live=version is not None)
        return 1

    def _changed(self, keys: list[str], live: bool = True) -> None:
        """Bookkeeping for keys whose source version just changed."""
        if not keys:
            return
        now = time.monotonic()
        if self._changes_seen:
            self.longest_pause = max(self.longest_pause, now - self.last_change)
        self._changes_seen = True
        self.last_change = now
        if self.pool is not None and live:
            # Only live changes: the backlog of the first scan is not lag. Bounded by
            # what is pending, which during acquisition is small.
            for key in keys:
                self._observed_at.setdefault(key, now)
        if self.failed:
            for key in keys:
                if key in self.failed:  # a new version deserves a new chance
                    del self.failed[key]
                    self.attempts.pop(key, None)

    def _refresh_node(self, rel: str, strict: bool) -> None:
        if self.kind_is_directory:
            return  # every file is a plain file: no layouts, no expected set
        try:
            node = read_node(Path(self.src) / rel if rel else Path(self.src), rel)
        except MetadataError as exc:
            if strict:
                raise
            # Mid-acquisition a hand-written metadata file may be caught half-written;
            # keep the last good layout and say so once per version.
            try:
                seen = tuple(stat_key(self.src, os.path.join(rel, n)) for n in _ARRAY_METADATA)
            except OSError:
                seen = ()
            if self.bad_metadata.get(rel) != seen:
                log.warning("%s: %s; keeping the previous layout", self.src, exc)
                self.bad_metadata[rel] = seen
            return
        except OSError as exc:
            if strict:
                raise from_os_error(exc, "read metadata in", Path(self.src) / rel) from exc
            return
        if isinstance(node, ArrayLayout):
            if self.ledger.set_layout(node):
                log.debug("%s: array %r has file grid %s", self.src, rel, node.grid)
        elif rel in self.ledger.arrays:
            self.ledger.drop_array(rel)

    def _on_events(self) -> None:
        assert self.watcher is not None
        for hint in self.watcher.read(0):
            if hint.kind == "rescan":
                self.full_scan()
            elif hint.kind == "dir":
                self._scan_subtree(hint.key)
                self.last_change = time.monotonic()
            else:
                self._look(hint.key)

    # ---- feeding copiers ---------------------------------------------------------------------

    def _dispatch(self) -> None:
        assert self.pool is not None
        idle = self.pool.idle()
        if not idle:
            return
        now = time.monotonic()
        for key in [k for k, t in self.deferred.items() if t <= now]:
            del self.deferred[key]
            self.ledger.requeue(key)
        skip = set(self.deferred) | set(self.failed)
        if self.paused:
            if not self._trickle(now):
                # Whether anything is left must be known while paused too: a drain with
                # nothing to copy ends whatever the disk is doing.
                peek = self.ledger.take(1, skip=skip)
                for key in peek:
                    self.ledger.set_inflight(key, False)
                    self.ledger.requeue(key)
                self.queue_empty = not peek and not self.deferred
                return
            idle = idle[:1]
        keys = self.ledger.take(self.cfg.batch_size * len(idle), skip=skip)
        if self.kind_is_directory and keys:
            keys = self._settled(keys, now)
        self.queue_empty = not keys and not self.deferred
        # Spread a short queue over every idle copier: lag matters more than batching then.
        for n, copier in enumerate(idle):
            batch = keys[n :: len(idle)]
            if batch:
                self.pool.send(copier, [(k, k in self.compare_first) for k in batch])

    def _trickle(self, now: float) -> bool:
        """While paused for long, one batch every few seconds: progress is guaranteed."""
        if now - self._paused_since < _MAX_PAUSE or now - self._last_trickle < _TRICKLE_EVERY:
            return False
        self._last_trickle = now
        if not self._said_trickle:
            self._said_trickle = True
            assert self.pressure is not None
            log.warning(
                "%s: source disk busy for %.0f s (%s); copying one batch every %.0f s so the "
                "copy keeps moving (--no-backoff copies at full speed)",
                self.src,
                now - self._paused_since,
                self.pressure.describe(),
                _TRICKLE_EVERY,
            )
        return True

    def _settled(self, keys: list[str], now: float) -> list[str]:
        """Plain writers write in place: copy a file only once it stopped changing."""
        ready = []
        wall = time.time()
        for key in keys:
            version = self.ledger.source(key)
            # ctime too: an in-place writer may set an old mtime; nobody sets ctime.
            age = wall - _newest(version) if version is not None else self.cfg.ready_age
            if age >= self.cfg.ready_age:
                ready.append(key)
            else:
                self.ledger.set_inflight(key, False)
                self.deferred[key] = now + (self.cfg.ready_age - age)
        return ready

    def _on_results(self, conn: object) -> None:
        assert self.pool is not None
        outcomes, lost = self.pool.receive(conn)  # type: ignore[arg-type]
        self._apply(outcomes, lost)

    def _apply(self, outcomes: list[Outcome], lost: list[str]) -> None:
        for key in lost:
            self.ledger.set_inflight(key, False)
            self.ledger.requeue(key)
        if outcomes:
            self._last_advance = time.monotonic()
        for o in outcomes:
            if o.status in (COPIED, SAME):
                self.ledger.set_copied(o.key, o.version, o.digest)
                self.compare_first.discard(o.key)
                self.attempts.pop(o.key, None)
                assert o.version is not None
                if self._unproven(o):
                    # Not journaled: a resumed run compares it rather than trusting it.
                    self.racy[o.key] = o.version
                    due = proven_after_ns(o.version, self.granularity.ns, self._racy_margin_ns)
                    heapq.heappush(self._racy_due, (due, o.key))
                else:
                    self.racy.pop(o.key, None)
                    self._unsynced.append((o.key, o.version, o.digest))
                seen = self._observed_at.pop(o.key, None)
                if seen is not None:
                    self._lags.append(time.monotonic() - seen)
                if o.status == COPIED:
                    self.summary.files_copied += 1
                    self.summary.bytes_copied += o.nbytes
                else:
                    self.summary.files_already_there += 1
                if self.ledger.source(o.key) != o.version:
                    # The copier saw a version we never observed (e.g. a change of mtime
                    # alone, or an event lost): look again rather than trust either.
                    self._look(o.key)
                if self.ledger.needs_work(o.key):
                    self.ledger.requeue(o.key)  # the source moved on meanwhile
            elif o.status == DELETED:
                self.racy.pop(o.key, None)
                self.ledger.set_copied(o.key, None)
                self._unsynced_deleted.append(o.key)
                self._look(o.key)
                self.summary.files_deleted += 1
            elif o.status == CHANGED:
                self.ledger.set_inflight(o.key, False)
                self._look(o.key)
                self.ledger.requeue(o.key)
            elif o.status == FAILED:
                self.ledger.set_inflight(o.key, False)
                self._failed(o.key, o.error, o.errno)

    def _unproven(self, o: Outcome) -> bool:
        """A copy checked before its version's timestamp tick ended (see racy.py)."""
        assert o.version is not None
        if not o.checked_ns:
            return False
        due = proven_after_ns(o.version, self.granularity.ns, self._racy_margin_ns)
        return o.checked_ns < due

    def _recheck_racy(self) -> None:
        """Copies whose tick has passed: compare them with the source once more."""
        now = time.time_ns()
        while self._racy_due and self._racy_due[0][0] <= now:
            _, key = heapq.heappop(self._racy_due)
            version = self.racy.get(key)
            if version is None or self.ledger.copied(key) != version:
                continue  # proven, deleted or superseded since
            due = proven_after_ns(version, self.granularity.ns, self._racy_margin_ns)
            if due > now:  # the granularity turned out coarser than when it was queued
                heapq.heappush(self._racy_due, (due, key))
                continue
            # The destination's bytes are no longer vouched for: the copier compares them
            # with the source (and rereads it for the digest) and rewrites them if they differ.
            self.ledger.set_copied(key, _UNPROVEN)
            self.compare_first.add(key)
            self.ledger.requeue(key)

    def _preflight_space(self) -> None:
        """Refuse to start a copy that cannot fit (what the source holds now; it may grow)."""
        block = os.statvfs(self.dst).f_frsize or 1
        files, nbytes = self.ledger.pending_totals(block)
        files -= len(self.compare_first)  # probably identical already: no new space
        nbytes -= sum(
            (self.ledger.source(k) or Version(0, 0, 0, 0)).size for k in self.compare_first
        )
        free_bytes, free_inodes = _free_space(self.dst)
        where = f"the destination filesystem (mounted at {_mount_point(self.dst)})"
        if nbytes > free_bytes:
            raise SoftcopyError(
                self.dst,
                "copy to destination",
                f"{where} has {human_bytes(free_bytes)} free, but {human_bytes(nbytes)} in "
                f"{files} files are still to be copied; free at least "
                f"{human_bytes(nbytes - free_bytes)} and run again",
            )
        if free_inodes is not None and files > free_inodes:
            raise SoftcopyError(
                self.dst,
                "copy to destination",
                f"{where} has room for {free_inodes} more files (inodes), but {files} are "
                "still to be copied; free inodes and run again",
            )

    def _out_of_space(self, key: str, error: str) -> SoftcopyError:
        files, nbytes = self.ledger.pending_totals()
        free_bytes, free_inodes = _free_space(self.dst)
        if free_inodes == 0:
            problem = f"it is out of inodes, and {files} files are still to be copied"
        else:
            problem = (
                f"{human_bytes(free_bytes)} free, about {human_bytes(nbytes)} more needed for "
                f"{files} files"
            )
        return SoftcopyError(
            os.path.join(self.dst, key),
            "write",
            f"{error}: the destination filesystem (mounted at {_mount_point(self.dst)}) is full "
            f"({problem}); nothing partial was left behind: free space and run the same "
            "command again to resume",
        )

    def _failed(self, key: str, error: str, err: int) -> None:
        if err in _FATAL_ERRNOS:
            if err in (errno.ENOSPC, errno.EDQUOT):
                self.fatal = self._out_of_space(key, error)
            else:
                self.fatal = SoftcopyError(os.path.join(self.dst, key), "write", error)
            return
        attempts = self.attempts.get(key, 0) + 1
        self.attempts[key] = attempts
        if attempts < self.cfg.max_attempts:
            delay = _RETRY_BASE * 2 ** (attempts - 1)
            log.warning("%s: %s: %s; retry %d in %.1f s", self.src, key, error, attempts, delay)
            self.deferred[key] = time.monotonic() + delay
        else:
            log.error("%s: %s: %s; giving up after %d attempts", self.src, key, error, attempts)
            self.failed[key] = error
            self._emit("file_failed", key=key, error=error, attempts=attempts)

    # ---- the loop -----------------------------------------------------------------------------

    def _loop(self, finishing: bool) -> str | None:
        """Run until finished (returns why) or, when finishing, until nothing is left to do."""
        assert self.pool is not None
        while True:
            if self.stop.level:
                return None
            if self.fatal is not None:
                raise self.fatal
            if self.racy:
                self._recheck_racy()
            self._dispatch()
            now = time.monotonic()
            if finishing and self._idle():
                return "drained"
            if not finishing:
                reason = self._finished(now)
                if reason:
                    return reason
            sources = [self.stop, *self.pool.connections()]
            if self.watcher is not None:
                sources.append(self.watcher)
            ready = wait(sources, 0.5)
            for source in ready:
                if source is self.watcher:
                    self._on_events()
                elif source is not self.stop:
                    self._on_results(source)
            now = time.monotonic()
            if now >= self.next_scan:
                self.full_scan()
            if now - self._last_checkpoint >= _CHECKPOINT_EVERY or len(self._unsynced) > 2000:
                self._checkpoint()
            if now - self._last_progress >= _PROGRESS_EVERY:
                self._check_pressure()
                self._report_progress()
                self._say_why_no_progress(now, finishing)

    def _finished(self, now: float) -> str:
        """Why the writer is done ("" while it is not); sets the rule in summary.end_rule."""
        rule, reason = self._end_rule(now)
        if reason:
            self.summary.end_rule = rule
        return reason

    def _end_rule(self, now: float) -> tuple[str, str]:
        if self.cfg.complete_marker in self.markers:
            return "marker", f"the source has a '{self.cfg.complete_marker}' marker"
        for key, version in sorted(self.markers.items()):
            # ctime, as sruns-monitor found: copying onto NFS keeps an old mtime.
            age = time.time() - _newest(version)
            if age >= self.cfg.sentinel_min_age:
                return "sentinel", f"the sentinel '{key}' exists and is {age:.0f} s old"
        quiet = now - self.last_change
        idle = self.cfg.idle_timeout
        if idle is not None and quiet >= idle:
            if self.full_scan() == 0:
                return "idle_timeout", f"nothing changed for {idle:g} s (idle timeout)"
            return "", ""
        # A writer that paused for 3 s between timepoints may pause as long again:
        # settling must outlast the longest pause seen, not only --settle.
        settle = max(self.cfg.settle, 2 * self.longest_pause)
        if quiet < settle or now - self._settle_checked < 1.0:
            return "", ""
        self._settle_checked = now
        # A plain directory has no expected set: sentinels or the idle timeout end it.
        if self.kind_is_directory or not self.ledger.all_expected_present() or self.temp_count:
            return "", ""
        # Confirm with a fresh listing: events may have been lost.
        if self.full_scan() == 0 and self.temp_count == 0 and not self.markers:
            return (
                "settle",
                f"every expected file is present and nothing changed for {settle:.3g} s",
            )
        return "", ""

    def _idle(self) -> bool:
        """Nothing to copy, nothing in flight, no retry or re-check pending."""
        assert self.pool is not None
        return (
            self.queue_empty and not self.pool.in_flight() and not self.deferred and not self.racy
        )

    def _say_why_no_progress(self, now: float, finishing: bool) -> None:
        """A run that moves no file for long says why, once per reason, in the log and status."""
        if self._idle():
            self._last_advance = now
            self._said_stall = ""
            if not finishing and not self._said_waiting:
                quiet_since = max(self.last_change, self._started)
                if now - quiet_since >= max(_WAITING_NOTE_AFTER, 4 * self.cfg.settle):
                    self._said_waiting = True
                    self._note("waiting", self._waiting_for())
            return
        if now - self._last_advance < _STALL_AFTER:
            return
        why = self._why_stalled()
        if why != self._said_stall:
            self._said_stall = why
            self._note("stalled", f"no file finished for {now - self._last_advance:.0f} s: {why}")

    def _note(self, event: str, text: str) -> None:
        log.log(logging.WARNING if event == "stalled" else logging.INFO, "%s: %s", self.src, text)
        if self.journal is not None:
            self.journal.set_state(self.summary.state, text)
        self._emit(event, reason=text)

    def _why_stalled(self) -> str:
        assert self.pool is not None
        parts = []
        if self.paused and self.pressure is not None:
            parts.append(
                f"copiers paused while the source disk is busy ({self.pressure.describe()}); "
                f"after {_MAX_PAUSE:.0f} s one batch goes out every {_TRICKLE_EVERY:.0f} s"
            )
        in_flight = len(self.pool.in_flight())
        if in_flight:
            parts.append(f"{in_flight} file(s) in flight (a large file takes a while)")
        if self.deferred:
            parts.append(f"{len(self.deferred)} file(s) waiting to be retried after errors")
        if self.racy:
            parts.append(
                f"{len(self.racy)} copies waiting for the source's timestamp tick "
                f"({self.granularity.ns / 1e9:g} s) to pass before they are compared again"
            )
        return "; ".join(parts) or "no copier is making progress"

    def _waiting_for(self) -> str:
        """What would end a run that has copied everything there is."""
        cfg = self.cfg
        ends = [f"a '{cfg.complete_marker}' file at the source root"]
        ends += [f"a sentinel matching '{p}'" for p in cfg.sentinels]
        text = (
            f"everything there is has been copied and nothing changed for "
            f"{time.monotonic() - max(self.last_change, self._started):.0f} s; waiting for the "
            "end of the acquisition: " + " or ".join(ends)
        )
        if not self.kind_is_directory:
            present, expected = self.ledger.expected_counts()
            if present < expected:
                text += (
                    f"; 'every expected file present' cannot end it while {expected - present} "
                    f"of {expected} expected chunk files are absent (chunks equal to the fill "
                    "value are never written, so that may never happen)"
                )
            elif self.temp_count:
                text += f"; {self.temp_count} writer temporary file(s) remain"
        if cfg.idle_timeout is None:
            text += "; or give --idle-timeout SECONDS to end it after that long without changes"
        return text

    def _drain(self) -> bool:
        """Copy everything left, then list again until a listing finds nothing new."""
        while True:
            self.full_scan()
            if self._loop(finishing=True) is None:
                return False
            if self.full_scan() == 0 and not self._outstanding():
                return True

    def _outstanding(self) -> int:
        """Keys that still need work and may still get it (not given up on)."""
        given_up = sum(1 for key in self.failed if self.ledger.needs_work(key))
        return self.ledger.pending_count() - given_up + len(self.racy)

    def _check_pressure(self) -> None:
        """The acquisition comes first: no new work while the source disk is busy."""
        if self.pressure is None:
            return
        self.pressure.update()
        if not self.paused and self.pressure.busy():
            self.paused = True
            self._paused_since = time.monotonic()
            self._said_trickle = False
            log.warning(
                "%s: source disk busy (%s); pausing copiers", self.src, self.pressure.describe()
            )
            self._emit("paused", reason=self.pressure.describe())
        elif self.paused and self.pressure.quiet():
            self.paused = False
            log.info(
                "%s: source disk quiet again (%s); resuming", self.src, self.pressure.describe()
            )
            self._emit("resumed", reason=self.pressure.describe())

    def _checkpoint(self, fresh: bool = False) -> None:
        """Flush the destination, then record what the flush made durable.

        `fresh`: count what is pending now (a vectorised pass over every array),
        for the last checkpoint of a run; otherwise the count of the last progress
        report (at most a second old) is recorded.
        """
        self._last_checkpoint = time.monotonic()
        if self.journal is None:
            return
        if fresh:
            self._pending = self.ledger.pending_totals()
        if self._unsynced or self._unsynced_deleted:
            _syncfs(self.dst)
        self.journal.checkpoint(
            self._unsynced,
            self._unsynced_deleted,
            {**self.failed, **self.unreadable},
            {
                "files_copied": self.summary.files_copied,
                "bytes_copied": self.summary.bytes_copied,
                "files_pending": self._pending[0],
                "bytes_pending": self._pending[1],
            },
        )
        self._unsynced = []
        self._unsynced_deleted = []

    def _report_progress(self) -> None:
        """A progress event every second; a log line every ten when nobody listens."""
        now = time.monotonic()
        elapsed = max(now - self._last_progress, 1e-9)
        self._last_progress = now
        if now >= self._recount_at:
            # Full passes over every array: on a ten-million-chunk layout they take
            # ~0.1 s, so repeat them no more often than keeps them under ~2 % of a core.
            started = time.monotonic()
            self._pending = self.ledger.pending_totals()  # also what checkpoints record
            self._counts = self.ledger.expected_counts()
            self._totals = self.ledger.source_totals()
            self._recount_at = now + max(_PROGRESS_EVERY, 50 * (time.monotonic() - started))
        present, expected = self._counts
        rate = (self.summary.bytes_copied - self._bytes_at_last_progress) / elapsed
        self._bytes_at_last_progress = self.summary.bytes_copied
        lags = sorted(self._lags)
        self._lags.clear()
        self._emit(
            "progress",
            state=self.summary.state,
            files_copied=self.summary.files_copied,
            bytes_copied=self.summary.bytes_copied,
            files_deleted=self.summary.files_deleted,
            files_pending=self._pending[0],
            bytes_pending=self._pending[1],
            chunks_present=present,
            chunks_expected=expected,
            # Files, not copy operations: a file rewritten and copied again is one file.
            files_at_source=self._totals[0],
            bytes_at_source=self._totals[1],
            files_done=self._totals[2],
            rate=rate,
            lag_p50=lags[len(lags) // 2] if lags else None,
            lag_max=lags[-1] if lags else None,
            failures=len(self.failed) + len(self.unreadable),
        )
        if self.events is not None or now - self._last_log < _LOG_EVERY:
            return
        self._last_log = now
        log.info(
            "%s: %s; %d files copied (%s), %d pending, %d chunk files of %d expected present",
            self.src,
            self.summary.state,
            self.summary.files_copied,
            human_bytes(self.summary.bytes_copied),
            self._pending[0],
            present,
            expected,
        )

    # ---- the end ---------------------------------------------------------------------------

    def _verify_and_finish(self) -> None:
        # Flushed first, so verification reads what the device holds (the cache is
        # dropped per file before it is read), not what the page cache remembers.
        _syncfs(self.dst)
        source_scan = scan_tree(self.src)
        markers = sorted(
            (k for k in source_scan.files.keys() | source_scan.links if self._is_marker(k)),
            key=lambda k: (k == self.cfg.complete_marker, k),  # `complete` very last
        )
        verification = compare_trees(
            self.src,
            self.dst,
            frozenset(markers),
            source_scan,
            hashes=self.cfg.hash,
            known=self.ledger.digests() if self.cfg.hash else None,
            workers=max(2, self.cfg.nprocs),
            keep=self._wanted if self.cfg.include or self.cfg.exclude else None,
        )
        findings = verification.findings
        self.summary.findings = findings
        for finding in findings:
            self._emit("finding", **finding.as_dict())
        self.summary.failures = {**self.failed, **self.unreadable}
        wanted = [k for k in (source_scan.files.keys() | source_scan.links) if self._wanted(k)]
        self.summary.files_at_source = len(wanted)
        self.summary.bytes_at_source = sum(
            source_scan.files[k].size for k in wanted if k in source_scan.files
        )
        if findings or self.summary.failures:
            self.summary.state = "failed"
            self.summary.error = (
                f"verification found {len(findings)} difference(s) and "
                f"{len(self.summary.failures)} file(s) or directories failed to copy"
            )
            if not self.owned and any(f.kind == "extra" for f in findings):
                self.summary.error += (
                    "; the destination already held files the source does not have, and "
                    "softcopy deletes those only in a destination it created: remove them "
                    "or choose an empty destination"
                )
            return
        digests = dict(verification.digests)
        # Markers go last, so whoever waits on one at the destination sees a whole,
        # verified copy.
        for marker in markers:
            dirs = DirCache(self.dst)
            try:
                outcome = copy_one(self.src, dirs, marker, fsync=True, digest=self.cfg.hash)
            finally:
                dirs.close()
            if outcome.status != COPIED:
                where = os.path.join(self.dst, marker)
                problem = outcome.error
                if os.path.isdir(where) and not os.path.islink(where):
                    problem = (
                        "a directory is where the marker goes; softcopy does not remove "
                        "directories: remove it and run again"
                    )
                raise SoftcopyError(where, "write completion marker", problem)
            digests[marker] = outcome.digest  # "" without --hash: counted, not in the manifest
        if markers:
            _syncfs(self.dst)
        self._markers_copied = len(markers)
        self.summary.state = "done"
        self.summary.seconds = time.monotonic() - self._started
        self._certify(verification, digests)

    def _end_record(self) -> dict:
        """How the end was decided, for the certificate: a guess never frees the source."""
        rule = self.summary.end_rule
        proven = END_PROVEN.get(rule, False)
        trusted = not proven and self.cfg.trust_guessed_end
        return {
            "end": {
                "rule": rule,
                "proven": proven,
                "detail": self.summary.reason,
                "trusted_by_user": trusted,
            },
            "safe_to_free": proven or trusted,
        }

    def _certify(self, verification: Verification, digests: dict[str, str]) -> None:
        """The records a facility's cleanup script reads before it frees the source."""
        side = self.records
        assert side is not None
        # Read by scripts and people: strict JSON, byte names through names_hex.
        _write_json(side / "summary.json", json_record(self.summary.as_dict()))
        manifest_hash = None
        if self.cfg.hash:
            manifest_hash = write_manifest(side / MANIFEST, {k: d for k, d in digests.items() if d})
        present, expected = self.ledger.expected_counts()
        write_certificate(
            side / CERTIFICATE,
            {
                "source": self.src,
                "destination": self.dst,
                "started": _iso(self._wall_started),
                "finished": _iso(time.time()),
                "finished_because": self.summary.reason,
                **self._end_record(),
                "verification": "blake3" if self.cfg.hash else "sizes",
                # Every regular file in the destination, the marker included, whatever
                # the verification mode.
                "files": verification.files + self._markers_copied,
                "bytes": verification.bytes,
                "links": verification.links,
                "chunks_expected": expected,
                "chunks_absent": expected - present,
                "files_deleted_during_acquisition": self.summary.files_deleted,
                "manifest": MANIFEST if manifest_hash else None,
                "manifest_blake3": manifest_hash,
            },
        )

    def _shutdown(self) -> None:
        if self.pool is not None:
            graceful = self.stop.level < 2 and self.fatal is None
            leftovers = self.pool.in_flight()
            finished = self.pool.stop(
                graceful=graceful,
                timeout=30.0 if graceful else 5.0,
                abort=lambda: self.stop.level >= 2,
            )
            self._apply(finished, [])
            for key in leftovers:
                rel_dir, _, name = key.rpartition("/")
                _unlink(os.path.join(self.dst, rel_dir, temp_name(name)))
            self.pool = None
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self._rate_file is not None:
            _unlink(self._rate_file)
            self._rate_file = None
        if self.journal is not None:
            try:
                self._checkpoint(fresh=True)
                if self.summary.state not in ("done", "failed", "interrupted"):
                    # Left by an error: say so, so `status` does not show it running.
                    self._set_state("failed", self.summary.error or "stopped by an error")
            finally:
                self.journal.close()
                self.journal = None
        if self.records is not None:
            self.records.close()  # and with it both locks
            self.records = None


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _newest(version: Version) -> float:
    """Seconds since the epoch of the last change to a file that anyone could see."""
    return max(version.mtime_ns, version.ctime_ns) / 1e9


def _free_space(path: str) -> tuple[int, int | None]:
    """(bytes, inodes) an unprivileged writer may still use; inodes None when unlimited."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, (st.f_favail if st.f_files else None)


def _mount_point(path: str) -> str:
    path = os.path.abspath(path)
    dev = os.stat(path).st_dev
    while path != os.path.dirname(path):
        parent = os.path.dirname(path)
        if os.stat(parent).st_dev != dev:
            return path
        path = parent
    return path


def _same_link(src: str, dst: str, key: str) -> bool:
    try:
        return os.readlink(os.path.join(src, key)) == os.readlink(os.path.join(dst, key))
    except OSError:
        return False


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _write_json(path: RecordFile, data: object) -> None:
    write_file(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def _previous_target(records: Records) -> dict | None:
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
        return "it is a symbolic link, which softcopy never follows; remove it"
    return exc.strerror or str(exc)


def _syncfs(path: str) -> None:
    """Flush the destination filesystem before anything says the copy is done."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def copy_target(
    cfg: TargetConfig,
    stop: StopSignal | None = None,
    events: Callable[[dict], None] | None = None,
    run_rate: tuple[str, float] | None = None,
) -> Summary:
    supervisor = Supervisor(cfg, stop, events, run_rate)
    try:
        return supervisor.run()
    finally:
        supervisor._emit("summary", **supervisor.summary.as_dict())
