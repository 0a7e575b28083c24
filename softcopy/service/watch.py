"""`softcopy watch`: every run under a root, copied by the engine, announced, and freed.

One main thread decides everything: it lists the root (sooner when inotify says
something changed), keeps each run's row in the journal (state/runs.py), claims a
run before it copies it (claims.py), starts at most `max_runs` copies on the
engine's runner, and when one ends records how, runs its hook and releases the
claim. A renewal thread keeps held claims alive however long the main thread is
busy. Nothing about a run stays in memory after it ended: the journal is the list.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import (
    TargetConfig,
    check_paths,
    load_entries,
    make_target,
    raise_in_order,
    read_entries_file,
)
from ..engine.events import Event, Summary
from ..engine.runner import Finished, Runner
from ..engine.stop import StopSignal
from ..errors import ConfigError, DestinationBusy, SoftcopyError, from_os_error
from ..locations import is_object_store, object_url, records_url
from ..options import (
    DIRECTORY,
    DURATION,
    FLAG,
    GLOBS,
    OPTIONS,
    TEXT,
    WHOLE,
    Option,
    number,
    parse_options,
)
from ..presets import apply_preset
from ..state.journal import default_state_dir, process_start
from ..state.records import Records, records_dir
from ..state.runs import (
    COPYING,
    DONE,
    FAILED,
    RETRY,
    VERIFYING,
    WAITING,
    RunBook,
    read_runs,
    run_record,
)
from ..states import State
from ..verify.manifest import CERTIFICATE
from . import notify
from .claims import Busy, Claim, Observations, claim
from .discover import Found, RootWatcher, find_runs
from .hooks import HookResult, check_hook, run_hook

if TYPE_CHECKING:  # boto3 is loaded only for an object-store DEST_ROOT
    from ..sinks.s3 import ObjectRecords, ObjectStore

log = logging.getLogger("softcopy")

HOOK_RECORD = "hooks.json"  # in the run's records folder: which hooks already ran
_LIST_EVERY = 5.0  # seconds between listings of the root when nothing said to list sooner
_RELEASE_EVERY = 60.0
_BUSY_WAIT = 15.0  # seconds before a run whose destination another softcopy locks is tried again


# The service's own options, one row each (the copy options of every run come from
# options.OPTIONS): `watch`'s command line and a targets file's `watch:` entries.
SERVICE_OPTIONS: tuple[Option, ...] = (
    Option("depth", WHOLE, 1, "Runs are this many levels below SOURCE_ROOT [1]."),
    Option(
        "patterns",
        GLOBS,
        (),
        "Only runs whose name matches this glob (with a '/': their path under the root); "
        "repeatable [all].",
        flag="--pattern",
        dest="patterns",
    ),
    Option("max_runs", WHOLE, 2, "Runs copied at once; the others wait in order found [2]."),
    Option(
        "once",
        FLAG,
        False,
        "Copy every run present now, wait for each to end, then exit: 0 if all are done, "
        "1 if any failed (for cron).",
    ),
    Option("max_attempts", WHOLE, 3, "Attempts per run before it is failed [3]."),
    Option(
        "retry_delay",
        number(0),
        60.0,
        "Seconds before a failed run's second attempt; doubled for each one after [60].",
    ),
    Option(
        "lease",
        number(1),
        60.0,
        "Seconds a claim lasts unrenewed before a watcher on another host takes it over [60].",
    ),
    Option(
        "on_done",
        TEXT,
        None,
        "Shell command run once per run done (the run as JSON on stdin, SOFTCOPY_* variables).",
    ),
    Option("on_failed", TEXT, None, "Shell command run once per run failed."),
    Option(
        "hook_timeout", number(0.1), 600.0, "Seconds a hook may take before it is killed [600]."
    ),
    Option(
        "release_after",
        DURATION,
        None,
        "Free the source of runs done this long ago (e.g. 7d), when `softcopy release` "
        "would [never].",
    ),
    Option(
        "release_to",
        DIRECTORY,
        None,
        "With --release-after: move freed sources into this folder (same filesystem) "
        "instead of deleting them.",
    ),
    Option(
        "http",
        TEXT,
        None,
        "Serve /status and /metrics at this address, e.g. "
        "127.0.0.1:9155 (loopback unless a host is given) [off].",
    ),
)


@dataclass(frozen=True)
class WatchConfig:
    """One watched root: the service's own settings, and the copy options for each run."""

    source_root: Path
    destination_root: Path | str  # a folder, or an object store's s3://BUCKET/PREFIX
    options: dict[str, Any] = field(default_factory=dict)  # as for `copy`, given explicitly
    depth: int = 1
    patterns: tuple[str, ...] = ()
    max_runs: int = 2
    once: bool = False
    max_attempts: int = 3
    retry_delay: float = 60.0
    lease: float = 60.0
    on_done: str | None = None
    on_failed: str | None = None
    hook_timeout: float = 600.0
    release_after: float | None = None
    release_to: Path | None = None
    http: str | None = None
    wait_for_source: bool = False

    @property
    def state_dir(self) -> Path:
        return self.options.get("state_dir") or default_state_dir()


@dataclass
class Active:
    """A run this service holds a claim on: copying, or running its hook."""

    name: str
    source: str
    destination: str
    claim: Claim
    stop: StopSignal
    index: int = -1  # the runner's index while copying
    lost: bool = False  # the claim was taken over: stopped, not failed


def watch_config(
    source_root: Any,
    destination_root: Any,
    service: dict[str, Any],
    copy: dict[str, Any],
    where: str,
) -> WatchConfig:
    """One watched root from its paths, its service options and the copy options for
    every run (both given explicitly: the defaults are the tables')."""
    paths: list[Path | str] = []
    for name, value in (("source_root", source_root), ("destination_root", destination_root)):
        if not isinstance(value, str | os.PathLike) or not str(value):
            raise ConfigError(f"{where}.{name}", "read watch", "a path is required")
        if is_object_store(value):
            if name == "source_root":
                raise ConfigError(value, "watch", "an object store is never a source")
            paths.append(object_url(value))  # each run goes to s3://BUCKET/PREFIX/RUN
            continue
        paths.append(Path(os.path.abspath(os.path.expanduser(value))))
    chosen = {o.name: o.default for o in SERVICE_OPTIONS}
    chosen.update(parse_options(service, where, SERVICE_OPTIONS))
    copy = parse_options(copy, where)
    return WatchConfig(
        Path(paths[0]),
        paths[1],
        options=copy,
        wait_for_source=bool(copy.get("wait_for_source", False)),
        **chosen,
    )


def load_watches(path: Path, overrides: dict[str, Any] | None = None) -> list[WatchConfig]:
    """A targets file's `watch:` entries: `source_root`, `destination_root`, the service's
    options and any copy option, over the file's `defaults:` (copy options only).

    Every error in them is reported at once, each with its line, as for `targets:`.
    """
    doc, lines, base, errors = read_entries_file(path)
    service_names = {o.name for o in SERVICE_OPTIONS}

    def build(paths: list[Any], own: dict[str, Any], where: str) -> WatchConfig:
        service = {k: v for k, v in own.items() if k in service_names}
        copy = {**base, **{k: v for k, v in own.items() if k not in service_names}}
        return watch_config(*paths, service, {**copy, **(overrides or {})}, where)

    # The service's row last: its max_attempts (per run) is the one a watch entry means.
    table = (*OPTIONS, *SERVICE_OPTIONS)
    required = ("source_root", "destination_root")
    watches = load_entries(path, doc, lines, "watch", required, table, build, errors)
    raise_in_order(path, errors)
    return watches


def run_options(options: dict[str, Any], kind: str) -> dict[str, Any]:
    """The copy options for one run of this kind: a preset's rules apply to the runs
    they are for (an Illumina preset says nothing about a Zarr archive in the root)."""
    chosen = {k: v for k, v in options.items() if k != "wait_for_source"}
    preset = chosen.get("preset", "none")
    if (kind == "zarr") != (preset == "zarr"):
        chosen.pop("preset", None)
    chosen["kind"] = kind
    return chosen


def check(cfg: WatchConfig) -> None:
    """Every up-front refusal (exit 2), before anything starts."""
    root, dest = cfg.source_root, cfg.destination_root
    if not cfg.wait_for_source:
        try:
            if not root.is_dir():
                what = "it is not a directory" if root.exists() else "it does not exist"
                raise ConfigError(
                    root,
                    "watch source root",
                    f"{what} (give --wait-for-source to wait for it to appear)",
                )
            os.listdir(root)
        except OSError as exc:
            raise from_os_error(exc, "list source root", root) from exc
    if is_object_store(dest):
        if cfg.release_after is not None or cfg.release_to is not None:
            raise ConfigError(
                dest, "release sources of runs copied to", "freeing the source of an "
                "object-store copy is not built yet, so --release-after and --release-to "
                "cannot be kept: watch without them, check each run with `softcopy verify "
                "--hash SOURCE DESTINATION`, and free its source yourself",
            )  # fmt: skip
    else:
        try:
            check_paths(root, Path(dest))
        except ConfigError as exc:
            raise ConfigError(
                dest, "watch", f"DEST_ROOT and SOURCE_ROOT overlap: {exc.problem}"
            ) from exc
    apply_preset(cfg.options, "on the command line")
    for option, command in (("--on-done", cfg.on_done), ("--on-failed", cfg.on_failed)):
        if command:
            check_hook(command, option)
    if cfg.release_to is not None and not cfg.release_to.is_dir():
        raise ConfigError(cfg.release_to, "move released sources into", "it is not a directory")


class Service:
    def __init__(self, cfg: WatchConfig, stop: StopSignal, announce: bool = False) -> None:
        check(cfg)
        self.cfg = cfg
        self.stop = stop
        self.announce = announce  # sd_notify (only the `watch` command's process)
        self.root = str(cfg.source_root)
        # An object store that refuses us (no bucket, wrong credentials, no write access,
        # no answer) is refused here, as `copy` refuses it, not once per run.
        self.objects = open_store(cfg) if is_object_store(cfg.destination_root) else None
        self.book = RunBook(cfg.state_dir)  # an unwritable state directory fails here
        self.server = None
        if cfg.http:
            from .http import parse_address, serve

            try:
                address = parse_address(cfg.http)
            except ValueError as exc:
                raise ConfigError(cfg.http, "listen for HTTP (--http)", str(exc)) from None
            self.server = serve(address, self.status, self.metrics)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._events_lock = threading.Lock()
        self._states: dict[str, str] = {}  # source -> the engine's latest state
        self._progress: dict[str, dict] = {}  # source -> latest progress event
        self.counters = {
            "bytes_copied": 0.0,
            "files_copied": 0.0,
            "run_failures": 0.0,
            "hook_failures": 0.0,
        }
        self.runner = Runner(stop=None, events=self._on_event, on_end=self._wake)
        self.active: dict[str, Active] = {}
        self._by_index: dict[int, str] = {}
        self._hooks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hook")
        self._hook_futures: dict[str, Future] = {}
        self.observations = Observations()
        # run -> (its owner, as last logged; when to look again)
        self._claimed_elsewhere: dict[str, tuple[str, float]] = {}
        self._renewer = threading.Thread(target=self._renew_claims, name="claims", daemon=True)
        self._claims_lock = threading.Lock()
        self._once: set[str] | None = None
        self._watcher: RootWatcher | None = None
        self._listed = 0.0
        self._released_checked = 0.0
        self._watchdog = notify.watchdog_interval() if announce else None
        self._pinged = 0.0
        self._said_status = ""

    # ---- what others read ----------------------------------------------------------

    def status(self) -> list[dict]:
        return [run_record(r) for r in read_runs(self.cfg.state_dir)]

    def metrics(self) -> str:
        from .http import metrics_text

        with self._events_lock:
            live = list(self._progress.values())
        c = dict(self.counters)
        counters = {
            "bytes_copied_total": c["bytes_copied"] + sum(p.get("bytes_copied", 0) for p in live),
            "files_copied_total": c["files_copied"] + sum(p.get("files_copied", 0) for p in live),
            "run_failures_total": c["run_failures"],
            "hook_failures_total": c["hook_failures"],
            "copy_lag_seconds": max((p.get("lag_max") or 0.0 for p in live), default=0.0),
        }
        return metrics_text(read_counts(self.cfg.state_dir, self.root), counters)

    # ---- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Until stopped (or, with `once`, until every run present at start ended): 0, or
        1 when `once` and a run failed or did not finish."""
        try:
            if not self._wait_for_root():
                return 1 if self.cfg.once else 0
            if self.objects is None:  # a prefix exists once an object does
                Path(self.cfg.destination_root).mkdir(parents=True, exist_ok=True)
            self._recover()
            self._list(force=True)
            if self.cfg.once:
                self._once = {r["run"] for r in self.book.active(self.root)}
            self._watcher = self._make_watcher()
            self._renewer.start()
            self._notify("READY=1")
            if self.server is not None:  # the port it has, for --http HOST:0 too
                host, port = self.server.address
                shown = f"[{host}]" if ":" in host else host
                log.info("serving /status and /metrics at http://%s:%d/", shown, port)
            log.info(
                "watching %s for runs, copying each to %s (%d at once)",
                self.root,
                self.cfg.destination_root,
                self.cfg.max_runs,
            )
            while not self.stop.level:
                self._step()
                if self._once is not None and self._once_finished():
                    break
                self._sleep()
            return self._finish()
        finally:
            self._close()

    def _step(self) -> None:
        now = time.monotonic()
        self._collect()
        self._collect_hooks()
        self._apply_events()
        if now - self._listed >= _LIST_EVERY or (self._watcher and self._watcher.drain()):
            self._list()
        self._start_runs()
        self._release_old()
        self._report()

    def _sleep(self) -> None:
        fds = [self.stop.fileno(), self._wake_r]
        if self._watcher is not None:
            fds.append(self._watcher.fileno())
        ready, _, _ = select.select(fds, [], [], 1.0)
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        if self._watchdog and time.monotonic() - self._pinged >= self._watchdog:
            self._pinged = time.monotonic()
            self._notify("WATCHDOG=1")

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _wait_for_root(self) -> bool:
        said = False
        while not self.cfg.source_root.is_dir():
            if not said:
                log.info("waiting for the source root %s to appear", self.root)
                said = True
            select.select([self.stop.fileno()], [], [], 1.0)
            if self.stop.level:
                return False
        return True

    def _make_watcher(self) -> RootWatcher | None:
        if self.cfg.options.get("watch") == "poll":
            return None
        try:
            return RootWatcher(self.root, self.cfg.depth)
        except OSError as exc:
            log.warning("%s: no inotify (%s); listing every %g s", self.root, exc, _LIST_EVERY)
            return None

    def _recover(self) -> None:
        """Rows a killed service left `copying` or `verifying` wait again (the engine's own
        records make the next attempt resume, not start over)."""
        for row in self.book.active(self.root):
            self._orphaned(row)

    def _orphaned(self, row: dict[str, Any]) -> bool:
        """A row left `copying` by a watcher of this host that is gone (a journal two
        watchers share) goes back to `waiting`; True if it did."""
        if row["state"] not in (COPYING, VERIFYING) or row["run"] in self.active:
            return False
        host, _, pid = str(row["owner"]).rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid():
            if process_start(int(pid)) is not None:
                return False  # another live watcher on this host copies it
        elif row["owner"] and host != socket.gethostname():
            return False
        self.book.update(self.root, row["run"], state=WAITING)
        row["state"] = WAITING
        return True

    # ---- finding runs -----------------------------------------------------------------

    def _list(self, force: bool = False) -> None:
        self._listed = time.monotonic()
        if self._watcher is not None:
            self._watcher.refresh()
        try:
            found = find_runs(self.root, self.cfg.depth, self.cfg.patterns)
        except SoftcopyError as exc:
            log.warning("%s", exc)
            return
        present = {f.run: f for f in found}
        for f in found:
            if self._once is not None and f.run not in self._once:
                continue  # --once: only the runs present at start
            row = self.book.get(self.root, f.run)
            if row is None:
                dest = run_destination(self.cfg.destination_root, f.run)
                dest += archive_suffix(self.cfg.options)
                self.book.add(self.root, f.run, f.path, dest, f.kind)
                log.info(
                    "run %s: found (%s)%s",
                    f.run,
                    _kind_text(f.kind),
                    "" if f.ready else "; waiting for its zarr metadata",
                )
            elif row["kind"] != f.kind and row["state"] == WAITING:
                self.book.update(self.root, f.run, kind=f.kind)
        for row in self.book.active(self.root):
            name = row["run"]
            if name in present or name in self.active:
                continue
            if not os.path.lexists(row["source"]):
                # Gone before it was copied (an aborted run, moved away): not a failure.
                log.info("run %s: its source %s is gone; forgotten", name, row["source"])
                self.book.forget(self.root, name)
                self._claimed_elsewhere.pop(name, None)
                if self._once is not None:
                    self._once.discard(name)

    # ---- starting ---------------------------------------------------------------------

    def _start_runs(self) -> None:
        if self.stop.level:
            return
        now = time.time()
        copying = sum(1 for a in self.active.values() if a.index >= 0)
        for row in self.book.active(self.root):
            if copying >= self.cfg.max_runs:
                return
            name = row["run"]
            if name in self.active:
                continue
            if row["state"] not in (WAITING, RETRY) and not self._orphaned(row):
                continue
            if row["next_attempt"] and row["next_attempt"] > now:
                continue
            if self._once is not None and name not in self._once:
                continue
            if row["kind"] == "zarr" and not _has_zarr_metadata(row["source"]):
                continue  # it may be created before its metadata is written
            elsewhere = self._claimed_elsewhere.get(name)
            if elsewhere and time.monotonic() < elsewhere[1]:
                continue
            if self._begin(row):
                copying += 1

    def _begin(self, row: dict[str, Any]) -> bool:
        """Claim the run and start its copy; False when it is not ours to copy now."""
        name, src, dst = row["run"], row["source"], row["destination"]
        try:
            got = claim(self._records_of(dst), src, self.cfg.lease, self.observations)
        except SoftcopyError as exc:
            log.warning("run %s: cannot claim it (%s); trying again later", name, exc)
            return False
        if isinstance(got, Busy):
            if self._claimed_elsewhere.get(name, ("",))[0] != got.owner:
                log.info("run %s: copied by %s (%s); not copied here", name, got.owner, got.why)
            # Looked at again a few times per lease: often enough to see it end or go stale.
            again = time.monotonic() + min(5.0, self.cfg.lease / 4)
            self._claimed_elsewhere[name] = (got.owner, again)
            return False
        self._claimed_elsewhere.pop(name, None)
        active = Active(name, src, dst, got, StopSignal())
        with self._claims_lock:
            self.active[name] = active
        certificate = _certificate(got.records, src)
        if certificate is not None:
            # Copied and certified already (by another watcher, or before a crash): not again.
            log.info(
                "run %s: already copied and verified (%s)", name, record_place(dst, CERTIFICATE)
            )
            self._done(
                active,
                row,
                certificate,
                files=certificate.get("files", 0),
                nbytes=certificate.get("bytes", 0),
            )
            return False
        try:
            cfg = self._target(row)
        except SoftcopyError as exc:
            self._release_claim(active)
            self._fail(row, str(exc), final=True)
            return False
        active.index = self.runner.add(cfg, stop=active.stop)
        self._by_index[active.index] = name
        self.book.update(
            self.root,
            name,
            state=COPYING,
            attempts=row["attempts"] + 1,
            started=time.time(),
            ended=None,
            error="",
            owner=_me(),
            next_attempt=None,
        )
        log.info("run %s: copying to %s (attempt %d)", name, dst, row["attempts"] + 1)
        return True

    def _target(self, row: dict[str, Any]) -> TargetConfig:
        options = run_options(self.cfg.options, row["kind"])
        return make_target(row["source"], row["destination"], options, f"run {row['run']}")

    # ---- ending -----------------------------------------------------------------------

    def _collect(self) -> None:
        for index, end in self.runner.take_finished():
            name = self._by_index.pop(index)
            active = self.active[name]
            active.index = -1
            with self._events_lock:
                progress = self._progress.pop(active.source, {})
                self._states.pop(active.source, None)
            self.counters["bytes_copied"] += progress.get("bytes_copied", 0)
            self.counters["files_copied"] += progress.get("files_copied", 0)
            self._ended(active, end)

    def _ended(self, active: Active, end: Finished) -> None:
        row = self.book.get(self.root, active.name)
        result = end.result
        if row is None:  # forgotten meanwhile (cannot happen while claimed); nothing to say
            self._release_claim(active)
            return
        if isinstance(result, Summary) and result.state == State.DONE:
            certificate = _certificate(active.claim.records, active.source) or {}
            # The certificate counts every file, markers and sentinels included.
            files = certificate.get("files", result.files_at_source)
            nbytes = certificate.get("bytes", result.bytes_at_source)
            self._done(active, row, certificate, files, nbytes)
            return
        interrupted = isinstance(result, Summary) and result.state == State.INTERRUPTED
        if active.lost or (interrupted and self.stop.level):
            # Stopped, not failed: it resumes next time, and the attempt does not count.
            self.book.update(
                self.root, active.name, state=WAITING, attempts=max(0, row["attempts"] - 1)
            )
            log.info(
                "run %s: stopped%s; it resumes when started again",
                active.name,
                " (its claim was taken over)" if active.lost else "",
            )
            self._release_claim(active)
            return
        if isinstance(result, DestinationBusy):
            self._busy(active, row, result)
            return
        if isinstance(result, Summary):
            error = result.error or result.reason or f"ended {result.state}"
        elif isinstance(result, SoftcopyError):
            error = str(result)
        else:
            log.error("run %s: internal error", active.name, exc_info=result)
            error = f"internal error: {result!r}"
        self.counters["run_failures"] += 1
        gone = not os.path.isdir(active.source)
        if gone:
            error = f"its source {active.source} vanished while it was being copied ({error})"
        self._release_claim(active)
        self._fail(row, error, final=gone)

    def _busy(self, active: Active, row: dict[str, Any], busy: DestinationBusy) -> None:
        """Another softcopy holds the destination's lock: not a failed attempt. A run taken
        over from a watcher that died on another host waits here for that watcher's lock
        to run out (its lease); one copied by hand meanwhile, until that copy ends."""
        delay = min(self.cfg.retry_delay, _BUSY_WAIT)
        self.book.update(
            self.root,
            active.name,
            state=RETRY,
            attempts=max(0, row["attempts"] - 1),
            error=str(busy),
            next_attempt=time.time() + delay,
        )
        log.info("run %s: %s; trying again in %.3g s", active.name, busy.problem, delay)
        self._release_claim(active)

    def _done(
        self, active: Active, row: dict[str, Any], certificate: dict, files: int, nbytes: int
    ) -> None:
        self.book.update(
            self.root,
            active.name,
            state=DONE,
            ended=time.time(),
            error="",
            finished_because=str(certificate.get("finished_because", "")),
            end_rule=str((certificate.get("end") or {}).get("rule", "")),
            safe_to_free=int(bool(certificate.get("safe_to_free"))),
            files=int(files),
            bytes=int(nbytes),
            certificate=record_place(active.destination, CERTIFICATE),
        )
        if not row.get("started"):
            self.book.update(self.root, active.name, started=time.time())
        log.info(
            "run %s: done: copied and verified (%s)",
            active.name,
            certificate.get("finished_because", "finished"),
        )
        self._hook(active, "on_done", self.cfg.on_done)

    def _fail(self, row: dict[str, Any], error: str, final: bool) -> None:
        name = row["run"]
        attempts = row["attempts"]
        if final or attempts >= self.cfg.max_attempts:
            self.book.update(self.root, name, state=FAILED, error=error, ended=time.time())
            log.error("run %s: failed after %d attempt(s): %s", name, attempts, error)
            active = self.active.get(name)
            if active is None:
                active = self._claim_for_hook(row)
            if active is not None:
                self._hook(active, "on_failed", self.cfg.on_failed)
            return
        delay = self.cfg.retry_delay * 2 ** max(0, attempts - 1)
        self.book.update(
            self.root, name, state=RETRY, error=error, next_attempt=time.time() + delay
        )
        log.warning(
            "run %s: attempt %d failed (%s); trying again in %.3g s", name, attempts, error, delay
        )

    def _claim_for_hook(self, row: dict[str, Any]) -> Active | None:
        """A claim held while the failure hook runs, so another watcher does not run it too."""
        if not self.cfg.on_failed:
            return None
        try:
            got = claim(
                self._records_of(row["destination"]), row["source"], self.cfg.lease,
                self.observations,
            )  # fmt: skip
        except SoftcopyError as exc:
            log.warning("run %s: cannot claim it to run its hook (%s)", row["run"], exc)
            return None
        if isinstance(got, Busy):
            return None
        active = Active(row["run"], row["source"], row["destination"], got, StopSignal())
        with self._claims_lock:
            self.active[row["run"]] = active
        return active

    # ---- hooks ------------------------------------------------------------------------

    def _hook(self, active: Active, which: str, command: str | None) -> None:
        """Run the hook (once per run, across watchers: the records folder says whether it
        ran), then release the claim. A hook never changes the run's data state."""
        ran = _read_json(active.claim.records, HOOK_RECORD) or {}
        if not command or which in ran:
            self._release_claim(active)
            return
        row = self.book.get(self.root, active.name)
        record = run_record(row) if row else {"run": active.name}
        future = self._hooks.submit(run_hook, command, record, self.cfg.hook_timeout)
        future.add_done_callback(lambda _f: self._wake())
        self._hook_futures[active.name] = future
        active.index = -2  # running its hook

    def _collect_hooks(self) -> None:
        for name, future in list(self._hook_futures.items()):
            if not future.done():
                continue
            del self._hook_futures[name]
            active = self.active[name]
            row = self.book.get(self.root, name) or {}
            which = "on_done" if row.get("state") == DONE else "on_failed"
            result: HookResult = future.result()
            self.book.update(
                self.root,
                name,
                hook_command=result.command,
                hook_exit_code=result.exit_code,
                hook_error=result.error,
                hook_output=result.output,
            )
            if not result.ok:
                self.counters["hook_failures"] += 1
                log.warning(
                    "run %s: the --%s hook failed: %s", name, which.replace("_", "-"), result.error
                )
            ran = _read_json(active.claim.records, HOOK_RECORD) or {}
            ran[which] = {"exit_code": result.exit_code, "error": result.error, "host": _me()}
            try:
                active.claim.records.write(HOOK_RECORD, json.dumps(ran, indent=2).encode())
            except SoftcopyError as exc:
                log.warning("run %s: %s", name, exc)
            self._release_claim(active)

    # ---- claims -----------------------------------------------------------------------

    def _records_of(self, destination: str) -> Path | ObjectRecords:
        """Where a run's claim and records are: its records folder, or its records prefix
        in the bucket (on the watcher's one client)."""
        if self.objects is not None:
            return self.objects.records_of(destination)
        return records_dir(Path(destination))

    def _release_claim(self, active: Active) -> None:
        with self._claims_lock:
            self.active.pop(active.name, None)
        try:
            active.claim.release()
        except SoftcopyError as exc:
            log.warning("run %s: could not release its claim: %s", active.name, exc)

    def _renew_claims(self) -> None:
        every = max(0.2, self.cfg.lease / 4)
        while not self.stop.level:
            time.sleep(every)
            with self._claims_lock:
                held = list(self.active.values())
            for active in held:
                try:
                    if active.claim.released or active.claim.renew():
                        continue
                except SoftcopyError as exc:
                    log.warning("run %s: could not renew its claim: %s", active.name, exc)
                    continue
                log.error(
                    "run %s: another watcher took over its claim; stopping this copy", active.name
                )
                active.lost = True
                active.stop.request()
                active.stop.request()

    # ---- events from the copies -------------------------------------------------------

    def _on_event(self, event: dict) -> None:
        """From the copies' threads: only noted here; the main thread acts on it."""
        kind = event.get("event")
        source = str(event.get("source"))
        with self._events_lock:
            if kind == Event.STATE:
                self._states[source] = str(event.get("state"))
            elif kind == Event.PROGRESS:
                self._progress[source] = event
        if kind == Event.STATE:
            self._wake()

    def _apply_events(self) -> None:
        with self._events_lock:
            states = dict(self._states)
        for active in list(self.active.values()):
            state = states.get(active.source)
            if active.index >= 0 and state == State.VERIFYING:
                row = self.book.get(self.root, active.name)
                if row and row["state"] == COPYING:
                    self.book.update(self.root, active.name, state=VERIFYING)

    # ---- freeing sources --------------------------------------------------------------

    def _release_old(self) -> None:
        if self.cfg.release_after is None:
            return
        now = time.monotonic()
        if now - self._released_checked < _RELEASE_EVERY and self._released_checked:
            return
        self._released_checked = now
        from .release import release

        for row in self.book.done_before(self.root, time.time() - self.cfg.release_after):
            try:
                result = release(
                    Path(row["destination"]),
                    Path(row["source"]),
                    to=self.cfg.release_to,
                    state_dir=self.cfg.state_dir,
                )
            except SoftcopyError as exc:
                reasons = [str(exc)]
            else:
                if result.released:
                    log.info(
                        "run %s: released its source %s%s",
                        row["run"],
                        row["source"],
                        f" (moved to {result.moved_to})" if result.moved_to else "",
                    )
                    continue
                reasons = result.reasons
            text = "not released: " + "; ".join(reasons)
            if row["error"] != text:
                log.warning("run %s: %s", row["run"], text)
                self.book.update(self.root, row["run"], error=text)

    # ---- reporting --------------------------------------------------------------------

    def _report(self) -> None:
        counts = self.book.counts(self.root)
        text = (
            f"{counts.get(WAITING, 0) + counts.get(RETRY, 0)} waiting, "
            f"{counts.get(COPYING, 0) + counts.get(VERIFYING, 0)} copying, "
            f"{counts.get(DONE, 0)} done, {counts.get(FAILED, 0)} failed"
        )
        if text != self._said_status:
            self._said_status = text
            self._notify(f"STATUS={text}")

    def _notify(self, *fields: str) -> None:
        if self.announce:
            notify.notify(*fields)

    def _once_finished(self) -> bool:
        assert self._once is not None
        if self.active or self._hook_futures:
            return False
        for name in list(self._once):
            row = self.book.get(self.root, name)
            if row is None:
                self._once.discard(name)
            elif row["state"] not in (DONE, FAILED, "released"):
                return False
        return True

    def _finish(self) -> int:
        """Stop the copies (they resume next time), wait for them and the hooks."""
        self._notify("STOPPING=1")
        if self.active:
            log.info(
                "stopping: %d run(s) in progress resume when softcopy starts again",
                sum(1 for a in self.active.values() if a.index >= 0),
            )
        for active in list(self.active.values()):
            active.stop.request()
        escalated = False
        while self.active:
            if self.stop.level >= 2 and not escalated:  # a second signal: abort the files
                escalated = True
                for active in list(self.active.values()):
                    active.stop.request()
            self._collect()
            self._collect_hooks()
            if self.active:
                select.select([self._wake_r], [], [], 0.5)
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
        if self._once is None:
            return 0
        failed = [
            n
            for n in sorted(self._once)
            if (self.book.get(self.root, n) or {}).get("state") not in (DONE, "released")
        ]
        return 1 if failed else 0

    def _close(self) -> None:
        self._hooks.shutdown(wait=True)
        if self.server is not None:
            self.server.close()
        if self._watcher is not None:
            self._watcher.close()
        self.runner.close()
        self.book.close()
        if self.objects is not None:
            self.objects.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def open_store(cfg: WatchConfig) -> ObjectStore:
    """The bucket of an object-store DEST_ROOT, with the copy options every run gets
    (--s3-endpoint, ...), probed as `copy` probes its destination: listing and writing
    under PREFIX/ (ConfigError, naming bucket and endpoint, when refused)."""
    from ..sinks.base import spec_of
    from ..sinks.s3 import ObjectStore

    target = make_target(
        cfg.source_root, cfg.destination_root, run_options(cfg.options, "directory"), "watch"
    )
    store = ObjectStore.from_spec(spec_of(target))
    store.probe()
    return store


def run_destination(root: Path | str, run: str) -> str:
    """Where a run is copied: DEST_ROOT/RUN, or the prefix PREFIX/RUN with the run's name
    written as each file's name is in a bucket (sinks/s3.py `escape`)."""
    if isinstance(root, Path):
        return str(root / run)
    from ..sinks.s3 import escape

    return f"{root}/{escape(run)}"


def archive_suffix(options: dict[str, Any]) -> str:
    """With --pack, a run's archive is DEST_ROOT/RUN.tar.zst (.age, .gpg when encrypted)."""
    fmt = options.get("pack")
    if not fmt:
        return ""
    tools = {value.partition(":")[0] for value in options.get("encrypt", ())}
    return f".{fmt}" + (f".{tools.pop()}" if len(tools) == 1 else "")


def record_place(destination: str, name: str) -> str:
    """A run's record as logs, status and hooks name it: a path, or an s3:// URL."""
    if is_object_store(destination):
        return records_url(destination) + name
    return str(records_dir(Path(destination)) / name)


def read_counts(state_dir: Path, root: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in read_runs(state_dir):
        if row["source_root"] == root:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def _certificate(records: Records | ObjectRecords, source: str) -> dict | None:
    """The run's certificate, if it certifies a copy of this source as it is now."""
    certificate = _read_json(records, CERTIFICATE)
    if not certificate or certificate.get("source") != source:
        return None
    target = _read_json(records, "target.json") or {}
    identity = target.get("source_identity")
    if isinstance(identity, list):
        try:
            st = os.stat(source)
        except OSError:
            return None
        if identity != [st.st_dev, st.st_ino]:
            return None  # a new acquisition at the same path
    return certificate


def _read_json(records: Records | ObjectRecords, name: str) -> dict | None:
    try:
        data = json.loads(records.read(name))
    except (OSError, ValueError, SoftcopyError):
        # Unreadable reads as absent: a run copied again verifies what is there.
        return None
    return data if isinstance(data, dict) else None


def _has_zarr_metadata(path: str) -> bool:
    return any(os.path.lexists(os.path.join(path, m)) for m in (".zarray", ".zgroup", "zarr.json"))


def _kind_text(kind: str) -> str:
    return "a zarr archive" if kind == "zarr" else "a run folder"


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


__all__ = ["Found", "Service", "WatchConfig", "check", "run_options"]
