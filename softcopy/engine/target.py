"""One target from start to done: watch, scan, feed copiers, notice the end, drain, verify.

States: waiting -> copying -> draining -> verifying -> done | failed | interrupted.
Only this module decides what a key needs; copiers just do what they are told.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from multiprocessing.connection import wait

import numpy as np

from .. import __version__
from ..config import TargetConfig
from ..copiers.pool import CopierPool, copier_options
from ..errors import ConfigError, SoftcopyError, from_os_error
from ..names import shown
from ..sinks.base import (
    CHANGED,
    COPIED,
    DELETED,
    FAILED,
    SAME,
    SKIPPED,
    Outcome,
    sink_from_spec,
    spec_of,
)
from ..sources.kinds import source_kind
from ..sources.mounts import events_unreliable, filesystem_type
from ..sources.pressure import DiskPressure, idle_class_warning
from ..sources.scan import Version, scan_tree
from ..sources.select import Selection
from ..sources.watch import TreeWatcher
from ..state.journal import Journal, default_state_dir, read_copied_files
from ..state.records import Records
from ..state.runlog import RunLog
from ..throttle import create_bucket
from ..units import counted, human_bytes
from ..verify.compare import Verification, compare_trees
from ..verify.early import EarlyReads
from ..verify.manifest import CERTIFICATE, MANIFEST
from ..verify.sizes import SIZE_LIST
from .backoff import Backoff, shares_disk
from .checkpoint import Checkpoints
from .claim import claim, previous_target, source_identity
from .early_match import MATCH_BATCH as _MATCH_BATCH
from .early_match import NICE as _SUPERVISOR_NICE
from .early_match import SIDE_FROM as _SIDE_FROM
from .early_match import take as take_early_side
from .end import (
    certificate,
    verdict,
    write_certificate_to,
    write_json,
    write_manifest_of,
    write_summary,
)
from .events import FINAL_STATES, Event, State, Summary
from .finish import END_PROVEN, rules_of, settle_time
from .ledger import Ledger
from .made import Made, missing_before, take_back
from .matched import Matched
from .notes import STALL_AFTER, Snapshot, waiting_for, waiting_note_after
from .notes import why_stalled as stalled_text
from .observe import UNKNOWN_VERSION, SourceView
from .plan import COMPARE, COPY, DELETE, KEEP_EXTRA, TRUST, decide, plan_files, plan_record
from .prematch import Batch, DestinationSide, Directory, End
from .prematch import start as start_destination_side
from .racy import UnprovenCopies, coarse_clock_ns, proven_after_ns
from .report import EVERY as REPORT_EVERY
from .report import Progress
from .retry import OUT_OF_SPACE, Decision, RetryPolicy
from .space import full_problem, preflight_problem, taken_back
from .stop import StopSignal

log = logging.getLogger(__name__)

_LOG_EVERY = 10.0
# The loop's longest sleep while copying, and how often it reads change notifications:
# every _EVENTS_EVERY while a copier could take new work, every _EVENTS_EVERY_BUSY while
# every copier is busy and work is queued (files seen sooner would not be copied sooner,
# and each read's work, a look per file and a listing per new directory, is the bulk of
# the supervisor's CPU, taken from a writer at full speed).
_BUSY_WAIT = 0.5
_EVENTS_EVERY = 0.05
_EVENTS_EVERY_BUSY = 0.2
# The destination holds a copy whose source version is not proven (racy.py): it is
# compared again. Negative fields read as "absent" everywhere, and match no version.
_UNPROVEN = Version(-2, -2, -2, -2)
# Network filesystems stamp files with the server's clock, which may run behind ours.
_NETWORK_CLOCK_SKEW_NS = 2_000_000_000


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
        self.src = str(cfg.source)
        self.dst = str(cfg.destination)
        self.summary = Summary(self.src, self.dst)
        self.backoff = Backoff(self.src, self._emit)
        self.ledger = Ledger()
        self.pool: CopierPool | None = None
        self.polling = False
        self.kind = source_kind(cfg.kind, cfg.ready_age)
        self.select = Selection(
            cfg.complete_marker, cfg.sentinels + cfg.sentinel_fallbacks, cfg.include, cfg.exclude
        )
        self.view = SourceView(
            self.src, self.kind, self.select, self.ledger, self._changed, cfg.scan_interval
        )
        self._markers: list[str] = []  # published after verification, in that order
        self._markers_copied = 0
        self._marker_bytes = 0
        self.compare_first: set[str] = set()
        self.retry = RetryPolicy(cfg.max_attempts)
        self.rules = rules_of(cfg)
        self.fatal: SoftcopyError | None = None
        self.queue_empty = False
        self.records: Records | None = None  # held open with its lock and the destination's
        self.sink = sink_from_spec(spec_of(cfg))
        self.view.follow_links = cfg.follow_links_inside and not self.sink.capabilities.links
        self._last_log = time.monotonic()
        self.progress = Progress(self.ledger)
        self.checkpoints = Checkpoints()
        self._settle_checked = 0.0
        self.journal: Journal | None = None
        # Copies whose source version a later change could still hide (racy.py): key ->
        # the version copied; each is compared again once its timestamp tick has passed.
        self.racy = UnprovenCopies(self.view.granularity, coarse_clock_ns())
        self._last_advance = time.monotonic()  # last outcome from a copier
        self._said_stall = ""
        self._said_waiting = False
        self.early: EarlyReads | None = None  # --hash: the copy read back as it is made
        # What the match of a rerun found (matched.py), and whether the drain ended on the
        # first listing: then the match is the verification.
        self.matched = Matched()
        self._ended_on_first_listing = False
        self._copies_sent = False  # since the last back-off check: copying, not comparing
        self._rechecking: set[str] = set()  # this run's copies compared again (racy.py)

    # ---- the whole run --------------------------------------------------------------

    def run(self) -> Summary:
        started = self._started = time.monotonic()
        self._wall_started = time.time()
        try:
            self._run()
        except SoftcopyError as exc:
            self.summary.files_at_source = self.view.files_at_source
            self.summary.bytes_at_source = self.view.bytes_at_source
            self.summary.error = str(exc)
            self._set_state(State.FAILED, str(exc))
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
        # What is missing now is what this run makes: a refusal before the first copy
        # takes it back (made.py). A bucket's records are objects, left as they are.
        if self.sink.capabilities.local_paths:
            self._made = missing_before(self.dst)
        self._lock_destination()
        self.journal = Journal(
            self.cfg.state_dir or default_state_dir(),
            self.src,
            self.dst,
            reset_damaged=self.cfg.reset_journal,
        )
        self._set_state(State.WAITING)
        if not self._wait_for_source():
            return self._interrupted()
        self._prepare_destination()
        self._set_state(State.COPYING)
        warning = idle_class_warning(self.src)
        if warning:
            log.warning("%s: %s", self.src, warning)
        if self.cfg.backoff:
            # The first sample's interval spans the scan: known before any file is copied.
            pressure = DiskPressure(self.src, busy_utilisation=self.cfg.busy_utilisation)
            self.backoff.pressure = pressure
            # Copies onto another device, of files the page cache holds, leave the source
            # disk alone: its load is then no reason to pause (Backoff.disk_matters).
            local = self.sink.capabilities.local_paths
            self.backoff.shares_disk = local and shares_disk(pressure.device, self.dst)
            self.backoff.own_pids = lambda: self.pool.pids() if self.pool else []
        self._choose_event_source()
        side = self._start_destination_side()
        try:
            self.view.full_scan(initial=True)
            records = side.records(lambda: self.stop.level > 0) if side is not None else None
            if records is not None:
                self._match_listed(records)
            else:
                self._match_destination()
        finally:
            if side is not None:
                side.close()
        self._preflight_space()
        limits = [self.run_rate] if self.run_rate else []
        if self.cfg.max_rate:
            self._rate_file = create_bucket()
            limits.append((self._rate_file, self.cfg.max_rate))
        self._copier_options = copier_options(self.cfg, tuple(limits), sink=self.sink.spec)
        # A rerun with nothing to copy or compare starts no copier: they start with the first
        # work there is (_dispatch), and a no-op rerun does not wait for them to start and stop.
        self.pool = CopierPool(self.cfg.nprocs if self._work_waiting() else 0, self._copier_options)
        if self.cfg.hash and self.sink.capabilities.flush:  # a flush puts it on the device
            self.early = EarlyReads(
                self.dst, workers=min(2, self.cfg.nprocs), flush=self.sink.flush
            )
        copiers = counted(self.cfg.nprocs, "copier")
        log.info("%s: copying to %s with %s", self.src, self.dst, copiers)
        self.backoff.check(
            copying=self.ledger.pending_count() > len(self.compare_first),
            copied=self.summary.bytes_copied,
        )
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
        self._set_state(State.DRAINING)
        if not self._drain():
            return self._interrupted()
        self._checkpoint(fresh=True)
        self._set_state(State.VERIFYING)
        self._verify_and_finish()
        self._set_state(self.summary.state, self.summary.error)

    def _choose_event_source(self) -> None:
        """inotify where it sees the writer; periodic scans where it cannot (network mounts)."""
        fstype, mount = filesystem_type(self.src)
        watch = self.cfg.watch
        self.polling = watch == "poll" or (watch == "auto" and events_unreliable(fstype))
        if self.polling or events_unreliable(fstype):
            self.racy.margin_ns += _NETWORK_CLOCK_SKEW_NS
        if self.polling:
            self.view.scan_interval = self.cfg.poll_interval
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
            self.view.watcher = TreeWatcher(self.src)

    def _dry_run(self) -> None:
        """Everything a run would decide before copying, from read-only listings."""
        problem = self._source_problem()
        if problem is not None:
            raise problem
        src = scan_tree(self.src)
        here = {k: v for k, v in src.files.items() if self.select.wanted(k)}
        holds, records = self.sink.peek()
        dst_files = self.sink.listing().files if holds else {}
        there = {k: v for k, v in dst_files.items() if self.select.wanted(k)}
        try:
            previous = previous_target(records) if records is not None else None
            where = records / "target.json" if records is not None else ""
        finally:
            if records is not None:
                records.close()
        # The same refusal as a real run, so a plan never promises what a run refuses.
        owned = claim(self.cfg, holds, previous, self.sink.foreign, where)
        journaled = read_copied_files(
            self.cfg.state_dir or default_state_dir(), self.dst, self.src, self.cfg.reset_journal
        )
        self.summary.plan = plan_record(here, there, journaled, owned, self.sink.space())
        self.summary.plan_files = plan_files(here, there, journaled, owned)
        if self.cfg.file_events:
            for key, action, size in self.summary.plan_files:
                self._emit(Event.PLAN_FILE, key=key, action=action, size=size)
        self.summary.files_at_source = len(here) + len(src.links)
        self.summary.bytes_at_source = sum(v.size for v in here.values())
        self.summary.state = State.DRY_RUN
        self._emit(Event.PLAN, **self.summary.plan)

    def _set_state(self, state: str, error: str = "") -> None:
        self.summary.state = state
        if self.journal is not None:
            self.journal.set_state(state, self.summary.reason, error)
        self._emit(Event.STATE, state=state, reason=self.summary.reason, error=error)
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
        self.summary.files_at_source = self.view.files_at_source
        self.summary.bytes_at_source = self.view.bytes_at_source
        self.summary.error = (
            "stopped before the copy was complete; run the same command again to resume"
        )
        self._set_state(State.INTERRUPTED, self.summary.error)

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
        return self.kind.problem(self.src)

    def _lock_destination(self) -> None:
        """One softcopy per destination: taken before anything else touches it or its journal."""
        self.sink.lock()
        self.records = self.sink.records

    def _prepare_destination(self) -> None:
        records = self.records
        assert records is not None
        existed = self._existed = self.sink.create()  # made if missing, locked by identity
        # Decided (and refused) before anything in the destination or its records changes.
        # Files in the destination that the source lacks are deleted only when the
        # destination is ours: new, or made by softcopy from this same source.
        self.owned = claim(
            self.cfg, existed, previous_target(records), self.sink.foreign, records / "target.json"
        )
        self._claimed = True  # the run log is written only into a destination that is ours
        records.remove_stale_temporaries()
        # Whatever a previous run certified no longer holds once this run writes:
        # a cleanup script must never find a certificate for a copy in progress.
        self._withdrew = records.has(CERTIFICATE)  # said if this run is refused
        for stale in (CERTIFICATE, MANIFEST, SIZE_LIST, "summary.json"):
            records.unlink(stale)
        if self.owned:
            # Recorded only for a destination softcopy made: a foreign one stays foreign
            # on every later run, so its files are never deleted.
            write_json(
                records / "target.json",
                {
                    "source": self.src,
                    "source_identity": source_identity(self.src),
                    "destination": self.dst,
                    "version": __version__,
                },
            )
        self.sink.probe()  # read-only, permissions: one clear error up front

    def _start_destination_side(self) -> DestinationSide | None:
        """A rerun of a large copy lists the destination and asks the journal in another
        process while this one lists the source (engine/prematch.py)."""
        assert self.journal is not None
        if not (self._existed and self.sink.capabilities.local_paths):
            return None
        early = take_early_side(self.dst, self.journal, self.select)  # begun by `copy`
        if early is not None:
            return early
        if not self.journal.holds(_SIDE_FROM):
            return None
        return start_destination_side(
            self.dst, self.journal.path, self.journal.id, self.select, _MATCH_BATCH
        )

    def _match_listed(self, records: Iterator[Directory | Batch | End]) -> None:
        """`_match_destination` from what the destination's side found."""
        self._replacing = set()
        self.matched = Matched()
        for record in records:
            if isinstance(record, Batch):
                self._match_listed_batch(record)
            elif isinstance(record, Directory):
                if record.doubt:
                    self.matched.doubt()  # verification walks both trees, and names these
                self.sink.remove_temporaries(record.temporary)  # a crashed run's partial files
                self._match_links(record.links)
            else:
                self.matched.markers = record.markers

    def _match_listed_batch(self, batch: Batch) -> None:
        there = np.frombuffer(batch.there, dtype=np.int64).reshape(-1, 4)
        records = np.frombuffer(batch.records, dtype=np.int64).reshape(-1, 4)
        trusted = self.ledger.trust_listed(batch.dirs, there, records, batch.digests)
        count = int(np.count_nonzero(trusted))
        self.summary.files_already_there += count
        metadata = list(zip(batch.metadata, _keys_at(batch.dirs, batch.metadata), strict=True))
        if count == len(trusted):
            nbytes = int(there[:, 0].sum())
            self.matched.trusted_lines(count, nbytes, batch.lines, [k for _, k in metadata])
            return
        keys = [f"{d}/{n}" if d else n for d, names in batch.dirs for n in names]
        lines = batch.lines.split(b"\n")
        good = np.flatnonzero(trusted)
        self.matched.trusted_lines(
            count,
            int(there[good, 0].sum()),
            b"".join(lines[g] + b"\n" for g in good.tolist()),
            [k for p, k in metadata if trusted[p]],
        )
        rest = []
        for p in np.flatnonzero(~trusted).tolist():
            record = None
            if records[p, 0] >= 0:
                record = (Version(*records[p].tolist()), batch.digests.get(p, ""))
            rest.append((keys[p], Version(*there[p].tolist()), record))
        self._decide_rest(rest)

    def _match_destination(self) -> None:
        """Take stock of what a previous run (or someone else) already put in the destination.

        A file is trusted only when the journal says this run's predecessor copied
        exactly the source's current version and the file still has its size and
        mtime. Anything else of the right size is compared byte for byte before
        any rewrite: a destination populated by other means is checked, not trusted.
        """
        assert self.journal is not None
        self._replacing = set()  # keys whose copy replaces a file of another size
        # markers come last, after verification; excluded files are not ours
        wanted = self.select.wanted
        # A directory at a time, in batches: a rerun of ten million files holds neither the
        # destination's whole listing nor the journal's every row.
        batch: list[tuple[str, Version]] = []
        self.matched = Matched()
        first = True
        for listing in self.sink.listings():
            if listing.errors or listing.temporary:
                self.matched.doubt()  # verification walks both trees, and names these
            self.sink.remove_temporaries(listing.temporary)  # a crashed run's partial files
            if first:  # the root: where markers are
                is_marker = self.select.is_marker
                self.matched.markers = [k for k in (*listing.files, *listing.links) if is_marker(k)]
                first = False
            batch += [(k, v) for k, v in listing.files.items() if wanted(k)]
            if len(batch) >= _MATCH_BATCH:
                self._match_batch(batch)
            self._match_links(listing.links)
        self._match_batch(batch)

    def _match_batch(self, batch: list[tuple[str, Version]]) -> None:
        assert self.journal is not None
        journaled = self.journal.copied_of([k for k, _ in batch])
        trusted, rest = self.ledger.trust_journaled(batch, journaled)  # a rerun's bulk
        if rest:
            others = {k for k, _ in rest}
            self.matched.trusted((k, v) for k, v in batch if k not in others)
        else:
            self.matched.trusted(batch)
        batch.clear()
        self.summary.files_already_there += trusted
        self._decide_rest([(key, there, journaled.get(key)) for key, there in rest])

    def _decide_rest(self, rest: list[tuple[str, Version, tuple[Version, str] | None]]) -> None:
        """The destination files the bulk step did not trust, one by one."""
        for key, there, record in rest:
            here = self.ledger.source(key)
            action = decide(here, there, record, self.owned)
            if action == TRUST:
                assert record is not None
                self.ledger.set_copied(key, here, record[1])
                self.summary.files_already_there += 1
                self.matched.trusted([(key, there)])
                continue
            if action == KEEP_EXTRA:
                self.matched.extra(key)
                continue
            self.matched.doubt()  # work to do: verification walks both trees after it
            if action == DELETE:
                self.ledger.set_copied(key, there)  # the copier deletes it
            elif action == COMPARE:
                self.compare_first.add(key)
            elif action == COPY and here is not None:
                self._replacing.add(key)  # its copy is a re-copy (the run log says so)

    def _match_links(self, links: list[str]) -> None:
        for key in links:
            if not self.select.wanted(key):
                # Not ours either: a link where a marker goes, or under --exclude. In the
                # ledger it would be "copied" from the source again and again, forever.
                continue
            here = self.ledger.source(key)
            if here is not None and self._same_link(key):
                self.ledger.set_copied(key, here)
                self.summary.files_already_there += 1
                self.matched.verification.links += 1
            elif here is None and not self.owned:
                self.matched.extra(key)
            else:
                self.matched.doubt()
                if here is None:
                    self.ledger.set_copied(key, self.sink.version(key))

    def _same_link(self, key: str) -> bool:
        try:
            here = os.readlink(os.path.join(self.src, key))
        except OSError:
            return False
        return here == self.sink.link_target(key)

    def _changed(self, keys: list[str], live: bool) -> None:
        """The engine's bookkeeping for keys whose source version just changed."""
        if self.pool is not None and live:
            # Only live changes: the backlog of the first scan is not lag. Bounded by
            # what is pending, which during acquisition is small.
            self.progress.changed(keys, time.monotonic())
        self.retry.changed(keys)

    # ---- feeding copiers ---------------------------------------------------------------------

    def _work_waiting(self) -> bool:
        return bool(self.retry.deferred or self.racy) or self.ledger.pending_count() > 0

    def _dispatch(self) -> None:
        assert self.pool is not None
        if not self.pool.copiers:
            if not self._work_waiting():
                self.queue_empty = True
                return
            self.pool = CopierPool(self.cfg.nprocs, self._copier_options)
        idle = self.pool.idle()
        if not idle:
            return
        now = time.monotonic()
        for key in self.retry.due(now):
            self.ledger.requeue(key)
        skip = self.retry.skip()
        if self.backoff.paused:
            if not self.backoff.trickle(now):
                self._dispatch_while_paused(idle, skip)
                return
            idle = idle[:1]
        keys = self.ledger.take(self.cfg.batch_size * len(idle), skip=skip)
        if keys and not self.kind.has_expected_set:
            keys = self._settled(keys, now)
        self.queue_empty = not keys and not self.retry.deferred
        if not self._copies_sent:
            self._copies_sent = any(k not in self.compare_first for k in keys)
        # Spread a short queue over every idle copier: lag matters more than batching then.
        for n, copier in enumerate(idle):
            batch = keys[n :: len(idle)]
            if batch:
                self.pool.send(copier, [(k, k in self.compare_first) for k in batch])

    def _dispatch_while_paused(self, idle: list, skip: set[str]) -> None:
        """Only copying waits for a busy disk: comparing what the destination already holds
        is verification, and a rerun that has nothing to copy must not wait for other jobs."""
        assert self.pool is not None
        limit = self.cfg.batch_size * len(idle)
        keys = []
        for key in self.compare_first:
            if len(keys) >= limit:
                break
            if key not in skip and self.ledger.needs_work(key):
                keys.append(key)
        for key in keys:
            self.ledger.set_inflight(key, True)
        for n, copier in enumerate(idle):
            batch = keys[n :: len(idle)]
            if batch:
                self.pool.send(copier, [(k, True) for k in batch])
        # Whether anything is left must be known while paused too: a drain with
        # nothing to copy ends whatever the disk is doing.
        peek = self.ledger.take(1, skip=skip)
        for key in peek:
            self.ledger.set_inflight(key, False)
            self.ledger.requeue(key)
        self.queue_empty = not keys and not peek and not self.retry.deferred

    def _copy_work(self) -> bool:
        """Copies sent since the last look, or pending beyond comparisons (the last count)."""
        sent, self._copies_sent = self._copies_sent, False
        return sent or self.progress.pending[0] > len(self.compare_first)

    def _settled(self, keys: list[str], now: float) -> list[str]:
        """Plain writers write in place: copy a file only once it stopped changing."""
        ready = []
        wall = time.time()
        for key in keys:
            wait = self.kind.wait_before_copy(self.ledger.source(key), wall)
            if wait <= 0:
                ready.append(key)
            else:
                self.ledger.set_inflight(key, False)
                self.retry.deferred[key] = now + wait
        return ready

    def _on_results(self, conn: object) -> None:
        assert self.pool is not None
        outcomes, lost = self.pool.receive(conn)  # type: ignore[arg-type]
        self._apply(outcomes, lost)

    def _apply(self, outcomes: list[Outcome], lost: list[str]) -> None:
        for key in lost:
            self.ledger.set_inflight(key, False)
            self.ledger.requeue(key)
        now = time.monotonic()
        if outcomes:
            self._last_advance = now
        for o in outcomes:
            if o.status in (COPIED, SAME):
                # A copy of this run compared again once its tick passed (racy.py) is not a
                # file the destination already held: counted once, as copied.
                rechecked = o.key in self._rechecking
                self._rechecking.discard(o.key)
                # Before the ledger forgets it: did the destination hold another version?
                replaced = o.key in self._replacing
                if replaced:
                    self._replacing.discard(o.key)
                replaced = o.status == COPIED and (
                    replaced or o.key in self.compare_first or self.ledger.copied(o.key) is not None
                )
                self.ledger.set_copied(o.key, o.version, o.digest)
                self.compare_first.discard(o.key)
                self.retry.succeeded(o.key)
                assert o.version is not None
                if self.racy.unproven(o.version, o.checked_ns):
                    # Not journaled: a resumed run compares it rather than trusting it.
                    self.racy.hold(o.key, o.version)
                else:
                    self.racy.settle(o.key)
                    self.checkpoints.copied.append((o.key, o.version, o.digest))
                    if self.early is not None:
                        self.early.copied(o.key, o.version)
                self.progress.published(o.key, now)
                if o.status == COPIED:
                    # Files, not copies: a file the writer rewrote is copied again, once more.
                    self.summary.copies_made += 1
                    self.summary.files_copied += self.ledger.copied_first(o.key)
                    self.summary.bytes_copied += o.nbytes
                    if o.resumed:
                        log.info(
                            "%s: %s: resumed an interrupted upload; %s of %s were already there",
                            shown(self.src),
                            shown(o.key),
                            human_bytes(o.resumed),
                            human_bytes(o.nbytes),
                        )
                    self._file_event(
                        Event.FILE_RECOPIED if replaced else Event.FILE_COPIED,
                        o.key,
                        size=o.nbytes,
                        **({"digest": o.digest} if o.digest else {}),
                        **({"resumed": o.resumed} if o.resumed else {}),
                    )
                elif not rechecked:
                    self.summary.files_already_there += 1
                if self.ledger.source(o.key) != o.version:
                    # The copier saw a version we never observed (e.g. a change of mtime
                    # alone, or an event lost): look again rather than trust either.
                    self.view.look(o.key)
                    # (Otherwise the ledger holds the copied version as the source's: no work.)
                    if self.ledger.needs_work(o.key):
                        self.ledger.requeue(o.key)  # the source moved on meanwhile
            elif o.status == DELETED:
                self._rechecking.discard(o.key)
                self.racy.settle(o.key)
                self.ledger.set_copied(o.key, None)
                self.checkpoints.deleted.append(o.key)
                self.view.look(o.key)
                self.summary.files_deleted += 1
                self._file_event(Event.FILE_DELETED, o.key)
            elif o.status == CHANGED:
                self.ledger.set_inflight(o.key, False)
                self.view.look(o.key)
                self.ledger.requeue(o.key)
            elif o.status == SKIPPED:
                # Not journaled: the destination does not hold it, so a rerun looks again.
                self.ledger.set_copied(o.key, o.version)
                self.retry.succeeded(o.key)
                self._skipped(o.key, o.error)
            elif o.status == FAILED:
                self.ledger.set_inflight(o.key, False)
                self._failed(o.key, o.error, o.errno)
                if o.key in self.retry.failed:  # given up on: _failed emitted file_failed
                    self._log_line(Event.FILE_FAILED, o.key, error=o.error)
        if self._runlog is not None and (self.pool is None or not self.pool.in_flight()):
            self._runlog.idle()

    # ---- what happened, per file ---------------------------------------------------------

    def _skipped(self, key: str, why: str) -> None:
        """A file this destination cannot hold (a link at an object store): said once each,
        and counted in the certificate, which then never says the source is safe to free."""
        skipped = self.summary.links_skipped
        if key not in skipped:
            skipped.append(key)
            log.warning("%s: %s: %s", shown(self.src), shown(key), why)
            self._file_event(Event.FILE_SKIPPED, key, error=why)

    _runlog: RunLog | None = None  # opened on the first line, once the records are locked
    _claimed = False  # the destination passed `claim`
    _made: Made | None = None  # what a local destination lacked before this run
    _withdrew = False  # this run removed a previous run's certificate
    _holes_checked = False  # absent chunk files looked for, once settled
    _replacing: set[str] = frozenset()  # type: ignore[assignment]  # a set from the start on

    def _file_event(self, event: str, key: str, **fields: object) -> None:
        """One file's outcome: always in the run log, in the events with --file-events."""
        when = time.time()
        runlog = self._run_log()
        if runlog is not None:
            runlog.add_file(event, when, (self.src, self.dst), key, fields)
        if self.cfg.file_events and self.events is not None:
            self.events(
                {"event": event, "time": when, "source": self.src, "destination": self.dst}
                | {"key": key}
                | fields
            )

    def _log_line(self, event: str, key: str, **fields: object) -> None:
        """A file's line in the run log only (its event went out another way)."""
        runlog = self._run_log()
        if runlog is not None:
            runlog.add_file(event, time.time(), (self.src, self.dst), key, fields)

    def _run_log(self) -> RunLog | None:
        """The records folder's log.jsonl, only while this run holds its lock."""
        if self._runlog is None and self.records is not None and self._claimed:
            self._runlog = RunLog(self.records)
            self._runlog.add(
                {
                    "schema": 1,
                    "event": Event.RUN_STARTED,
                    "time": self._wall_started,
                    "source": self.src,
                    "destination": self.dst,
                    "pid": os.getpid(),
                    "version": __version__,
                    "hash": self.cfg.hash,
                }
            )
        return self._runlog

    def _end_run_log(self) -> None:
        """The run's last line: how it ended, with the summary's counts."""
        runlog = self._run_log()
        if runlog is None:
            return
        s = self.summary
        runlog.add(
            {
                "schema": 1,
                "event": Event.RUN_ENDED,
                "time": time.time(),
                "source": self.src,
                "destination": self.dst,
                "state": str(s.state),
                "end_rule": s.end_rule,
                "error": s.error,
                "files_copied": s.files_copied,
                "copies_made": s.copies_made,
                "bytes_copied": s.bytes_copied,
                "files_deleted": s.files_deleted,
                "files_already_there": s.files_already_there,
                "files_failed": len(s.failures),
                "seconds": s.seconds,
            }
        )
        runlog.flush()
        self._runlog = None

    def _recheck_racy(self) -> None:
        """Copies whose tick has passed: compare them with the source once more."""
        for key in self.racy.due(self.ledger.copied):
            # The destination's bytes are no longer vouched for: the copier compares them
            # with the source (and rereads it for the digest) and rewrites them if they differ.
            self.ledger.set_copied(key, _UNPROVEN)
            self.compare_first.add(key)
            self._rechecking.add(key)
            self.ledger.requeue(key)

    def _preflight_space(self) -> None:
        """Refuse to start a copy that cannot fit (what the source holds now; it may grow)."""
        space = self.sink.space()
        files, nbytes = self.ledger.pending_totals(space.block)
        files -= len(self.compare_first)  # probably identical already: no new space
        nbytes -= sum((self.ledger.source(k) or UNKNOWN_VERSION).size for k in self.compare_first)
        problem = preflight_problem(files, nbytes, space)
        if problem:
            raise SoftcopyError(self.dst, "copy to destination", problem + self._take_back())

    def _take_back(self) -> str:
        """Nothing was copied: what this run made at the destination goes again, in words."""
        if self._withdrew:
            # A rerun: the copy stays, but the previous run's certificate went as this one
            # began. Nothing is taken back, and the words must not say "as it was".
            return (
                "; nothing was copied: the copy there is kept, but its certificate was "
                "withdrawn as this run began, and a run that completes certifies it again"
            )
        if self._made is None:
            return taken_back(None)
        # No run log into a records folder about to go: the journal keeps the refusal.
        self._claimed = False
        self._runlog = None
        try:
            return taken_back(take_back(self._made, self.dst, self.records))
        except (OSError, SoftcopyError) as exc:  # the refusal is the news, not this
            log.warning("%s: could not remove what this run made: %s", self.dst, exc)
            return taken_back(None)

    def _out_of_space(self, key: str, error: str) -> SoftcopyError:
        files, nbytes = self.ledger.pending_totals()
        problem = full_problem(error, files, nbytes, self.sink.space())
        return SoftcopyError(os.path.join(self.dst, key), "write", problem)

    def _failed(self, key: str, error: str, err: int) -> None:
        decision, attempts, delay = self.retry.failure(key, error, err, time.monotonic())
        if decision == Decision.STOP:
            if err in OUT_OF_SPACE:
                self.fatal = self._out_of_space(key, error)
            else:
                self.fatal = SoftcopyError(os.path.join(self.dst, key), "write", error)
        elif decision == Decision.RETRY:
            log.warning("%s: %s: %s; retry %d in %.1f s", self.src, key, error, attempts, delay)
        else:
            log.error("%s: %s: %s; giving up after %d attempts", self.src, key, error, attempts)
            self._emit(Event.FILE_FAILED, key=key, error=error, attempts=attempts)

    # ---- the loop -----------------------------------------------------------------------------

    def _loop(self, finishing: bool) -> str | None:
        """Run until finished (returns why) or, when finishing, until nothing is left to do."""
        assert self.pool is not None
        if self.backoff.pressure is not None:
            self.backoff.pressure.watch_own(lambda: self.pool.pids() if self.pool else [])
        events_read = 0.0  # when change notifications were last read
        while True:
            if self.stop.level:
                return None
            if self.fatal is not None:
                raise self.fatal
            if self.sink.lock_lost:  # another run took the destination over: stop writing
                raise SoftcopyError(self.dst, "copy to destination", self.sink.lock_lost)
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
            # A stop and a copier's outcome wake the loop at once. Change notifications are
            # read in batches, at most every _EVENTS_EVERY: a writer making thousands of files
            # a second then costs the supervisor a few wake-ups, not one per file.
            sources = [self.stop, *self.pool.connections()]
            saturated = not self.queue_empty and not self.pool.idle()
            events_due = events_read + (_EVENTS_EVERY_BUSY if saturated else _EVENTS_EVERY) - now
            if self.view.watcher is not None and events_due <= 0:
                sources.append(self.view.watcher)
            timeout = self._wait_timeout(now)
            if self.view.watcher is not None and events_due > 0:
                timeout = min(timeout, events_due)
            ready = wait(sources, timeout)
            for source in ready:
                if source is not self.view.watcher and source is not self.stop:
                    self._on_results(source)
            if self.view.watcher in ready:
                # Copiers first: a copier that just reported gets its next batch before the
                # notifications are handled (a new directory's listing takes a while).
                if len(ready) > 1 and self._may_go_on():
                    self._dispatch()
                self.view.on_events()
                events_read = time.monotonic()
            now = time.monotonic()
            if now >= self.view.next_scan:
                self.view.full_scan()
            if self.checkpoints.due(now):
                self._checkpoint()
            if now - self.progress.last >= REPORT_EVERY:
                self.backoff.check(copying=self._copy_work(), copied=self.summary.bytes_copied)
                self._report_progress()
                self._say_why_no_progress(now, finishing)
                if self._runlog is not None and not self.pool.in_flight():
                    self._runlog.idle()  # lines the last outcomes left in the buffer

    def _may_go_on(self) -> bool:
        return self.fatal is None and not self.stop.level and not self.sink.lock_lost

    def _wait_timeout(self, now: float) -> float:
        """How long the loop may sleep when nothing wakes it.

        With work on hand, _BUSY_WAIT (retries and re-checks fall due in between). With
        nothing to do, until the next progress report or full listing: an idle copy of a
        finished acquisition wakes about once a second, not twice.
        """
        if not self._idle():
            return _BUSY_WAIT
        until = min(self.progress.last + REPORT_EVERY, self.view.next_scan) - now
        return min(REPORT_EVERY, max(0.01, until))

    def _finished(self, now: float) -> str:
        """Why the writer is done ("" while it is not); sets the rule in summary.end_rule."""
        rule, reason = self._end_rule(now)
        if reason:
            self.summary.end_rule = rule
        return reason

    def _end_rule(self, now: float) -> tuple[str, str]:
        # Counting every array's files costs a pass over each: once a second at most, and
        # only once the source has been quiet for long enough to settle.
        settle_due = (
            self.kind.has_expected_set
            and now - self.view.last_change >= settle_time(self.rules, self.view.longest_pause)
            and now - self._settle_checked >= 1.0
        )
        if settle_due:
            self._settle_checked = now
        return self.view.end_rule(self.rules, now, settle_due)

    def _idle(self) -> bool:
        """Nothing to copy, nothing in flight, no retry or re-check pending."""
        assert self.pool is not None
        return (
            self.queue_empty
            and not self.pool.in_flight()
            and not self.retry.deferred
            and not self.racy
        )

    def _say_why_no_progress(self, now: float, finishing: bool) -> None:
        """A run that moves no file for long says why, once per reason, in the log and status."""
        if self._idle():
            self._last_advance = now
            self._said_stall = ""
            if not finishing and not self._said_waiting:
                quiet_since = max(self.view.last_change, self._started)
                if self._holes_at_settle(now) or (
                    now - quiet_since >= waiting_note_after(self.cfg.settle)
                ):
                    self._said_waiting = True
                    self._note(Event.WAITING, self._waiting_for())
            return
        if now - self._last_advance < STALL_AFTER:
            return
        why = self._why_stalled()
        if why != self._said_stall:
            self._said_stall = why
            self._note(
                Event.STALLED, f"no file finished for {now - self._last_advance:.0f} s: {why}"
            )

    def _note(self, event: str, text: str) -> None:
        log.log(
            logging.WARNING if event == Event.STALLED else logging.INFO, "%s: %s", self.src, text
        )
        if self.journal is not None:
            self.journal.set_state(self.summary.state, text)
        self._emit(event, reason=text)

    def _why_stalled(self) -> str:
        assert self.pool is not None
        paused = self.backoff.why()
        return stalled_text(
            Snapshot(
                paused_because=paused,
                in_flight=len(self.pool.in_flight()),
                retrying=len(self.retry.deferred),
                unproven=len(self.racy),
                tick_seconds=self.view.granularity.ns / 1e9,
            )
        )

    def _holes_at_settle(self, now: float) -> bool:
        """Everything copied, quiet for as long as the settle rule waits, and chunk files
        absent: the settle rule cannot end this run (fill-value holes are never written),
        so what would end it is said now, not after waiting_note_after. Counted once."""
        if self._holes_checked or not self.kind.has_expected_set:
            return False
        if now - self.view.last_change < settle_time(self.rules, self.view.longest_pause):
            return False  # a writer between two timepoints: absent chunks are still to come
        self._holes_checked = True
        present, expected = self.ledger.expected_counts()
        return present < expected

    def _waiting_for(self) -> str:
        """What would end a run that has copied everything there is, and when it would."""
        cfg = self.cfg
        until = ""
        if cfg.idle_timeout is not None:
            at = time.time() + cfg.idle_timeout - (time.monotonic() - self.view.last_change)
            clock = datetime.fromtimestamp(max(at, time.time())).strftime("%H:%M:%S")
            until = f"; or, if nothing changes before, the idle timeout ends it at {clock}"
        else:
            until = (
                "; otherwise it waits until stopped (Ctrl-C; the same command with "
                "--idle-timeout 0 then ends it without copying anything twice)"
            )
        return (
            waiting_for(
                quiet=time.monotonic() - self.view.last_change,  # dated by the source's times
                complete_marker=cfg.complete_marker,
                sentinels=cfg.sentinels + cfg.sentinel_fallbacks,
                expected=self.ledger.expected_counts() if self.kind.has_expected_set else None,
                temp_count=self.view.temp_count,
                idle_timeout=cfg.idle_timeout,
            )
            + until
        )

    def _drain(self) -> bool:
        """Copy everything left, then list again until a listing finds nothing new."""
        while True:
            # A listing that finds nothing new while nothing is left ends the drain; when the
            # end was seen with nothing to copy (a rerun), that is the first listing.
            if self._listed_after_end() and self._idle() and not self._outstanding():
                self._ended_on_first_listing = True
                return True
            # Listed only once what is queued is copied: a listing while copies are still
            # queued (as the end is seen, most of a copy) finds nothing the last one will
            # not, and costs a whole listing (0.55 CPU-s for 20,000 files in as many folders).
            quiet = self._idle() and not self._outstanding()
            if quiet and self.view.full_scan() == 0 and self._idle() and not self._outstanding():
                return True
            if self._loop(finishing=True) is None:
                return False

    def _listed_after_end(self) -> bool:
        """A rerun with nothing to copy: the newest listing began after the marker or
        sentinel that ended the run, nothing changed since, and nothing was sent to copy.

        Then it already shows the source as it ends (nothing is written after the marker),
        and the rerun does not list the source again before verifying. The marker's
        timestamp tick must have ended before the listing began, or the marker may have
        been made while it ran. After copies the drain lists again, as ever: a writer that
        wrote past its own marker gets its late files copied, not a failed verification.
        """
        markers = list(self.view.markers.values())
        proven = END_PROVEN.get(self.summary.end_rule, False)
        sent = self.pool is not None and self.pool.batches_sent
        if sent or not (self.view.unchanged_since_listing and markers and proven):
            return False
        tick = self.view.granularity.ns
        newest = max(proven_after_ns(v, tick, self.racy.margin_ns) for v in markers)
        return newest <= self.view.listed_at_ns

    def _outstanding(self) -> int:
        """Keys that still need work and may still get it (not given up on)."""
        given_up = sum(1 for key in self.retry.failed if self.ledger.needs_work(key))
        return self.ledger.pending_count() - given_up + len(self.racy)

    def _checkpoint(self, fresh: bool = False) -> None:
        """Flush the destination, then record what the flush made durable.

        `fresh`: count what is pending now (a vectorised pass over every array),
        for the last checkpoint of a run; otherwise the count of the last progress
        report (at most a second old) is recorded.
        """
        if fresh and self.journal is not None:
            self.progress.recount()
        files_pending, bytes_pending = self.progress.pending
        durable = self.checkpoints.commit(
            self.journal,
            self.sink.flush,
            {**self.retry.failed, **self.view.unreadable},
            {
                "files_copied": self.summary.files_copied,
                "bytes_copied": self.summary.bytes_copied,
                "files_pending": files_pending,
                "bytes_pending": bytes_pending,
            },
        )
        if self.early is not None and durable and not fresh:
            # Read back now, not all at the end; the last checkpoint's are read by
            # verification itself, on more threads.
            self.early.read(durable)

    def _report_progress(self) -> None:
        """A progress event every second; a log line every ten when nobody listens."""
        fields = self.progress.fields(self.summary.bytes_copied)
        self._emit(
            Event.PROGRESS,
            state=self.summary.state,
            files_copied=self.summary.files_copied,
            bytes_copied=self.summary.bytes_copied,
            files_deleted=self.summary.files_deleted,
            **fields,
            failures=len(self.retry.failed) + len(self.view.unreadable),
        )
        now = time.monotonic()
        if self.events is not None or now - self._last_log < _LOG_EVERY:
            return
        self._last_log = now
        log.info(
            "%s: %s; %d files copied (%s), %d pending, %d chunk files of %d expected present",
            self.src,
            self.summary.state,
            self.summary.files_copied,
            human_bytes(self.summary.bytes_copied),
            fields["files_pending"],
            fields["chunks_present"],
            fields["chunks_expected"],
        )

    # ---- the end ---------------------------------------------------------------------------

    def _verify_and_finish(self) -> None:
        # Flushed first, so verification reads what the device holds (the cache is
        # dropped per file before it is read), not what the page cache remembers.
        self.sink.flush()
        # The drain ended on a listing that found nothing new with nothing left to copy:
        # verification lists both trees again, one directory at a time (nothing is held).
        self.view.check_root()
        markers = sorted(
            self.view.markers,  # as the last listing (or a change since) showed them
            key=lambda k: (k == self.cfg.complete_marker, k),  # `complete` very last
        )
        matched, self.matched = self.matched, Matched()
        if (
            self._ended_on_first_listing
            and matched.complete
            and not self.cfg.hash
            and self.sink.capabilities.local_paths  # the match parses metadata by path
        ):
            # A rerun with nothing to do: what the match found is what a walk would find.
            verification = matched.result(self.dst, frozenset(markers))
        else:
            verification = self._walk_both(markers)
        self.view.check_root()  # a root gone mid-listing lists as empty
        findings = verification.findings
        self.summary.findings = findings
        for finding in findings:
            self._emit(Event.FINDING, **finding.as_dict())
        self.summary.failures = {**self.retry.failed, **self.view.unreadable}
        self.summary.files_at_source = self.view.files_at_source
        self.summary.bytes_at_source = self.view.bytes_at_source
        error = verdict(findings, self.summary.failures, self.owned)
        if error:
            self.summary.state = State.FAILED
            self.summary.error = error
            return
        digests = dict(verification.digests)
        self.sink.tidy()  # e.g. multipart uploads a killed run left: no longer of any use
        # Markers go last, so whoever waits on one at the destination sees a whole,
        # verified copy.
        digests.update(self.sink.write_markers(self.src, markers, self.cfg.hash))
        self._markers = markers
        self._markers_copied = self.summary.markers_copied = len(markers)
        self._marker_bytes = sum(
            v.size
            for k, v in self.view.markers.items()
            if k in markers and not os.path.islink(os.path.join(self.src, k))
        )
        self.summary.state = State.DONE
        self.summary.seconds = time.monotonic() - self._started
        self._certify(verification, digests)

    def _walk_both(self, markers: list[str]) -> Verification:
        if not self.sink.capabilities.local_paths:
            from ..verify.objects import compare_with_sink  # only for an object store

            return compare_with_sink(
                self.src,
                self.sink,
                frozenset(markers),
                hashes=self.cfg.hash,
                known=self.ledger.digests() if self.cfg.hash else None,
                workers=max(2, self.cfg.nprocs),
                keep=self.select.wanted if self.select.filters else None,
            )
        return compare_trees(
            self.src,
            self.dst,
            frozenset(markers),
            hashes=self.cfg.hash,
            known=self.ledger.digests() if self.cfg.hash else None,
            early=self.early.take() if self.early is not None else None,
            workers=max(2, self.cfg.nprocs),
            keep=self.select.wanted if self.select.filters else None,
        )

    def _certify(self, verification: Verification, digests: dict[str, str]) -> None:
        """The records a facility's cleanup script reads before it frees the source."""
        from .end import write_size_list_of

        records = self.records
        assert records is not None
        write_summary(records, self.summary)
        manifest_blake3 = write_manifest_of(records, digests) if self.cfg.hash else None
        # Markers are at the root, published after verification: the list covers them too.
        size_list_blake3 = write_size_list_of(records, verification, self.sink, self._markers)
        record = certificate(
            self.summary,
            verification,
            started=self._wall_started,
            hashed=self.cfg.hash,
            trust_guessed_end=self.cfg.trust_guessed_end,
            markers_copied=self._markers_copied,
            marker_bytes=self._marker_bytes,
            chunks=self.ledger.expected_counts(),
            manifest_blake3=manifest_blake3,
            selection=self.select,
            size_list_blake3=size_list_blake3,
        )
        write_certificate_to(records, record)

    def _shutdown(self) -> None:
        if self.early is not None:
            self.early.close()
        if self.pool is not None:
            graceful = self.stop.level < 2 and self.fatal is None
            leftovers = self.pool.in_flight()
            finished = self.pool.stop(
                graceful=graceful,
                timeout=30.0 if graceful else 5.0,
                abort=lambda: self.stop.level >= 2,
            )
            self._apply(finished, [])
            self.sink.discard_partial(leftovers)
            self.pool = None
        if self.view.watcher is not None:
            self.view.watcher.close()
            self.view.watcher = None
        if self._rate_file is not None:
            _unlink(self._rate_file)
            self._rate_file = None
        if self.journal is not None:
            try:
                self._checkpoint(fresh=True)
                if self.summary.state not in FINAL_STATES:
                    # Left by an error: say so, so `status` does not show it running.
                    self._set_state(State.FAILED, self.summary.error or "stopped by an error")
            finally:
                self.journal.close()
                self.journal = None
        self._end_run_log()  # while the records (and their lock) are still ours
        self.sink.close()  # the records, and with them both locks
        self.records = None


def _keys_at(dirs: list[tuple[str, list[str]]], rows: list[int]) -> list[str]:
    """The keys of some rows (ascending) of files given a directory at a time."""
    keys = []
    start = 0
    it = iter(rows)
    row = next(it, None)
    for d, names in dirs:
        end = start + len(names)
        while row is not None and row < end:
            name = names[row - start]
            keys.append(f"{d}/{name}" if d else name)
            row = next(it, None)
        start = end
    return keys


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


def copy_target(
    cfg: TargetConfig,
    stop: StopSignal | None = None,
    events: Callable[[dict], None] | None = None,
    run_rate: tuple[str, float] | None = None,
) -> Summary:
    if cfg.pack:
        from .pack import pack_target

        return pack_target(cfg, stop, events, run_rate)
    if cfg.compress:
        from .compress import compress_target

        return compress_target(cfg, stop, events, run_rate)
    supervisor = Supervisor(cfg, stop, events, run_rate)
    try:
        return supervisor.run()
    finally:
        supervisor._emit(Event.SUMMARY, **supervisor.summary.as_dict())
