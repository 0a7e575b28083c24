"""A job that reads a finished run once: a packed copy (pack.py), a compressed one (compress.py).

What they share: the source waited for until the end rules say its writer is done (the
same `SourceView.end_rule` as a copy), then read at idle priority, paced by --max-rate
and the run's rate, pausing while the source disk is busy, with a progress event a
second at most, and the state in the journal so `softcopy status` shows it.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable
from typing import Any

from ..archives.members import Keep
from ..config import TargetConfig
from ..errors import ConfigError, SoftcopyError, from_os_error
from ..priority import lower_priority
from ..sources.kinds import source_kind
from ..sources.pressure import DiskPressure
from ..sources.select import Selection
from ..state.journal import Journal, default_state_dir
from ..states import State
from ..throttle import RateLimit, create_bucket
from .backoff import Backoff
from .events import Event, Summary
from .finish import rules_of, settle_time
from .ledger import Ledger
from .notes import MAX_PAUSE
from .observe import SourceView
from .stop import StopSignal

log = logging.getLogger("softcopy")

_PACE_EVERY = 64 << 20  # bytes read between two looks at the source disk's pressure


class FinishedJob:
    """The waiting, pacing and reporting of a job over a finished run; `_run` is its work.

    `verb` names the job in messages ("pack", "compress").
    """

    verb = ""

    def __init__(
        self,
        cfg: TargetConfig,
        stop: StopSignal,
        events: Callable[[dict], None] | None,
        run_rate: tuple[str, float] | None,
        location: str,
    ) -> None:
        self.cfg, self.stop, self.events, self.run_rate = cfg, stop, events, run_rate
        self.src = str(cfg.source)
        self.location = location
        self.summary = Summary(self.src, self.location)
        self.backoff = Backoff(self.src, self.emit)
        self._limits: list[RateLimit] = []
        self._rate_file = ""
        self._unpaced = 0
        self.journal: Journal | None = None
        self._read = self._read_at_last = 0  # bytes of the source read so far
        self._progress_at = time.monotonic()
        self._total = (0, 0)  # files and bytes at the source when its end was decided
        self._wall_started = time.time()
        # --include/--exclude choose what is taken; markers and sentinels always are.
        self.select = Selection(
            cfg.complete_marker, cfg.sentinels + cfg.sentinel_fallbacks, cfg.include, cfg.exclude
        )
        self.keep = self.select.taken if self.select.filters else None

    def emit(self, event: str, **fields: object) -> None:
        if self.events is not None:
            self.events(
                {
                    "event": event,
                    "time": time.time(),
                    "source": self.src,
                    "destination": self.location,
                }
                | fields
            )

    def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when a stop was asked for (at once, by its pipe)."""
        if self.stop.level == 0:
            select.select([self.stop], [], [], seconds)
        return self.stop.level > 0

    def _state(self, state: str, error: str = "") -> None:
        self.summary.state = state
        if self.journal is not None:  # `softcopy status` shows it like any other copy
            self.journal.set_state(state, self.summary.reason, error)
        self.emit(Event.STATE, state=state, reason=self.summary.reason, error=error)

    def run(self) -> Summary:
        started = time.monotonic()
        try:
            self._run()
        except SoftcopyError as exc:
            self.summary.error = str(exc)
            self._state(State.FAILED, str(exc))
            raise
        finally:
            self.summary.seconds = time.monotonic() - started
            if self.journal is not None:
                self.journal.close()
            if self._rate_file:
                os.unlink(self._rate_file)
            for limit in self._limits:
                limit.close()
        return self.summary

    def _run(self) -> None:
        raise NotImplementedError

    def _begin(self) -> Any:
        """Idle priority, and the source's kind; raises for a source that cannot be one
        (unless --wait-for-source)."""
        self._wall_started = time.time()
        for level, text in lower_priority():
            getattr(log, "warning" if level == "warn" else "debug")("%s: %s", self.src, text)
        kind = source_kind(self.cfg.kind, self.cfg.ready_age)
        problem = source_problem(self.src, kind, self.verb)
        if problem is not None and not self.cfg.wait_for_source:
            raise problem
        return kind

    def _filters(self) -> dict:
        """For the certificate: what --include/--exclude took, so verify and a rerun
        compare the source with what was chosen (markers named: always taken)."""
        if not self.select.filters:
            return {}
        return {
            "include": list(self.select.include),
            "exclude": list(self.select.exclude),
            "complete_marker": self.select.complete_marker,
            "sentinels": list(self.select.sentinels),
        }

    def _plan(self, planned: list[tuple[str, str, int]]) -> None:
        """A --dry-run's result from read-only looks: per file (key, action, size), where
        "trust" is a file an earlier run finished, and whether the rest fits."""
        from ..sinks.base import sink_from_spec, spec_of

        space = sink_from_spec(spec_of(self.cfg)).space()
        todo = [(k, a, n) for k, a, n in planned if a != "trust"]
        needed = sum(n for _, _, n in todo)
        self.summary.plan = {
            "files_to_copy": len(todo),
            "bytes_to_copy": needed,
            "files_trusted": len(planned) - len(todo),
            "trusted_because": "its records say an earlier run finished them",
            "files_to_delete": 0,
            "files_to_recopy": 0,
            "free_bytes": space.free_bytes,
            "free_inodes": space.free_inodes,
            "destination_mount": space.mount,
            # Compressed, it takes less; never more than the source and a header a file.
            "fits": needed + 1024 * len(todo) <= space.free_bytes,
        }
        self.summary.plan_files = todo  # as for a copy: what is vouched for is not listed
        if self.cfg.file_events:
            for key, action, size in todo:
                self.emit(Event.PLAN_FILE, key=key, action=action, size=size)
        self.summary.files_at_source = len(planned)
        self.summary.bytes_at_source = sum(n for _, _, n in planned)
        self.summary.state = State.DRY_RUN
        self.emit(Event.PLAN, **self.summary.plan)

    def _open_journal(self) -> None:
        self.journal = Journal(
            self.cfg.state_dir or default_state_dir(),
            self.src,
            self.location,
            reset_damaged=self.cfg.reset_journal,
        )

    def _finished_source(
        self, kind: Any, records: Any, stale: tuple[str, ...], what: str
    ) -> SourceView | None:
        """The source's listing once its writer is done; None, said, when stopped first.
        The `stale` records go first: a certificate must never outlive what it certified."""
        for name in stale:
            records.unlink(name)
        self._state(State.WAITING)
        view = self._wait_for_end(kind)
        if view is None:
            self.summary.error = f"stopped before {what} was written; run again"
            self._state(State.INTERRUPTED, self.summary.error)
        return view

    def _wait_for_end(self, kind: Any) -> SourceView | None:
        """The source's listing once the end rules say its writer is done; None if stopped."""
        cfg = self.cfg
        while True:
            problem = source_problem(self.src, kind, self.verb)
            if problem is None:
                break
            if self._wait(cfg.poll_interval):
                return None
        ledger = Ledger()
        view = SourceView(self.src, kind, self.select, ledger, lambda keys, live: None, 1e9)
        rules = rules_of(cfg)
        listed = time.monotonic()
        view.full_scan(initial=True)
        took = time.monotonic() - listed
        said = False
        while not self.stop.level > 0:
            now = time.monotonic()
            quiet = now - view.last_change
            due = kind.has_expected_set and quiet >= settle_time(rules, view.longest_pause)
            rule, reason = view.end_rule(rules, now, due)
            if reason:
                self.summary.end_rule, self.summary.reason = rule, reason
                log.info("%s: finished (%s); %s it", self.src, reason, _WORDS[self.verb][0])
                return view
            if not said:
                said = True
                log.info(
                    "%s: waiting for the writer to finish before %s", self.src, _WORDS[self.verb][0]
                )
            # Listing is the whole cost of waiting: every poll interval, and for a tree
            # that takes long to list, at most a tenth of the time (acquisition first).
            if self._wait(max(cfg.poll_interval, 10 * took)):
                return None
            listed = time.monotonic()
            view.full_scan()
            took = time.monotonic() - listed
        return None

    def _start_pacing(self, view: SourceView) -> None:
        """--max-rate, the run's shared rate and the source disk's back-off, from now on."""
        if self.cfg.max_rate:
            self._rate_file = create_bucket()
            self._limits.append(RateLimit(self._rate_file, self.cfg.max_rate))
        if self.run_rate:
            self._limits.append(RateLimit(*self.run_rate))
        if self.cfg.backoff:
            self.backoff.pressure = DiskPressure(
                self.src, busy_utilisation=self.cfg.busy_utilisation
            )
        self._total = (view.files_at_source, view.bytes_at_source)

    def _check_unchanged(self, view: SourceView) -> None:
        """Anything the writer did since the end was decided means it was not done."""
        changed = view.full_scan()
        if changed:
            raise SoftcopyError(
                self.src, self.verb, f"{changed} file(s) changed while the run was being "
                f"{_WORDS[self.verb][1]}, after its end was decided: it is not finished; run "
                "again once it is",
            )  # fmt: skip

    def _progress(self) -> None:
        """A progress event a second at most, in bytes of the source read so far."""
        now = time.monotonic()
        if now - self._progress_at < 1.0 and self._read < self._total[1]:
            return
        rate = (self._read - self._read_at_last) / max(now - self._progress_at, 1e-9)
        self._progress_at, self._read_at_last = now, self._read
        files, total = self._total
        self.emit(
            Event.PROGRESS,
            state=self.summary.state,
            files_copied=0,
            bytes_copied=self._read,
            files_deleted=0,
            files_pending=files,
            bytes_pending=max(0, total - self._read),
            chunks_present=0,
            chunks_expected=0,
            files_at_source=files,
            bytes_at_source=total,
            files_done=0,
            rate=rate,
            lag_p50=None,
            lag_max=None,
            failures=0,
        )

    def _pace(self, nbytes: int) -> None:
        """After `nbytes` of the source were read: the rate limits, progress, back-off."""
        for limit in self._limits:
            limit.acquire(nbytes)
        self._read += nbytes
        if self.events is not None:
            self._progress()
        self._unpaced += nbytes
        if self._unpaced < _PACE_EVERY or self.backoff.pressure is None:
            return
        self._unpaced = 0
        self.backoff.check()
        paused_at = time.monotonic()
        # While the source disk is busy (the next run being written), wait; never forever.
        while self.backoff.paused and time.monotonic() - paused_at < MAX_PAUSE:
            if self._wait(1.0):
                raise self._stopped()
            self.backoff.check()
        if self.stop.level > 0:
            raise self._stopped()

    def _stopped(self) -> SoftcopyError:
        return SoftcopyError(self.location, self.verb, f"stopped; run again to {self.verb}")


_WORDS = {"pack": ("packing", "packed"), "compress": ("compressing", "compressed")}


def source_problem(src: str, kind: Any, verb: str) -> SoftcopyError | None:
    """Why `src` cannot be read as a finished run now (missing, not a folder), or None."""
    try:
        os.stat(src)
    except FileNotFoundError:
        return ConfigError(src, f"{verb} source", "it does not exist")
    except OSError as exc:
        return from_os_error(exc, "read source", src)
    if os.path.islink(src) or not os.path.isdir(src):
        return ConfigError(src, f"{verb} source", "it is not a directory")
    return kind.problem(src)


def keep_of(cert: dict) -> Keep | None:
    """What a copy with the certificate's --include/--exclude took (None: everything)."""
    include, exclude = cert.get("include") or [], cert.get("exclude") or []
    if not (include or exclude):
        return None
    marker = str(cert.get("complete_marker") or "")
    sentinels = tuple(cert.get("sentinels") or ())
    return Selection(marker, sentinels, tuple(include), tuple(exclude)).taken


def run_job(job: FinishedJob) -> Summary:
    """Run a job to its end; its summary event goes out however it ends."""
    try:
        return job.run()
    finally:
        job.emit(Event.SUMMARY, **job.summary.as_dict())
