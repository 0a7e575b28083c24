"""Copier processes: low priority, fed batches of keys, report one outcome per key.

A copier knows nothing of zarr; it imports only the standard library, psutil and
its kind of sink, so starting one is cheap. Each is a fresh interpreter
(`python -m softcopy.copiers.pool`) talking over a socketpair: no fork of a
multi-threaded supervisor, and no dependence on how the parent was started.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from ..sinks.base import Outcome, SinkSpec, sink_from_spec
from ..sinks.local import clear_umask
from ..throttle import RateLimit

if TYPE_CHECKING:  # a copier process never imports the configuration (yaml, click)
    from ..config import TargetConfig

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# What a copier may say besides "done", and the level the supervisor logs it at.
_NOTE_LEVELS = {"warn": logging.WARNING, "debug": logging.DEBUG}


@dataclass(frozen=True)
class CopierOptions:
    """What a copier needs of its target; made by `copier_options`, whose target settings
    come from the TargetConfig (their defaults are the option table's, not repeated here)."""

    source: str
    destination: str
    sleep_time: float
    fsync: bool
    digest: bool
    # (state file, bytes/s) of every rate limit this copier obeys: its target's
    # --max-rate and a run-wide one; all copiers sharing a file share its rate.
    rate_limits: tuple[tuple[str, float], ...] = ()
    nice: int = 19
    idle_io: bool = True
    idle_cpu: bool = True  # SCHED_IDLE
    # Where copiers write; None: the local directory `destination`.
    sink: SinkSpec | None = None


def copier_options(
    cfg: TargetConfig,
    rate_limits: tuple[tuple[str, float], ...] = (),
    sink: SinkSpec | None = None,
) -> CopierOptions:
    """The one place a target's settings become a copier's."""
    return CopierOptions(
        str(cfg.source),
        str(cfg.destination),
        cfg.sleep_time,
        cfg.fsync,
        digest=cfg.hash,
        rate_limits=rate_limits,
        sink=sink,
    )


# ---- the child side ------------------------------------------------------------------


def _lower_priority(options: CopierOptions) -> list[tuple[str, str]]:
    return lower_priority(options.nice, options.idle_cpu, options.idle_io)


def lower_priority(
    nice: int = 19, idle_cpu: bool = True, idle_io: bool = True
) -> list[tuple[str, str]]:
    """The acquisition comes first: idle CPU scheduling, idle I/O class, nice 19, for the
    calling thread (a copier's only one; a packing target's own) and what it starts.

    SCHED_IDLE runs a copier only on a CPU nothing else wants, and any other task
    that wakes up preempts it at once; nice 19 alone still takes a share of a busy
    CPU (and every wake-up of the writer waits for the copier's time slice).
    Returns (level, text) notes for the supervisor to log: a copier never writes to
    the terminal itself (it would tear the live progress display).
    """
    notes: list[tuple[str, str]] = []
    me = threading.get_native_id()
    if nice:
        os.nice(nice)  # this thread's, on Linux
    if idle_cpu:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError) as exc:
            # Not permitted (a seccomp profile, an old kernel): nice 19 still applies.
            notes.append(("debug", f"copier {me}: could not set SCHED_IDLE: {exc}"))
    if idle_io:
        try:
            import psutil

            psutil.Process(me).ionice(psutil.IOPRIO_CLASS_IDLE)
        except Exception as exc:  # no ioprio support: keep going at normal I/O priority
            notes.append(("warn", f"copier {me}: could not set idle I/O priority: {exc}"))
    return notes


def _die_with_parent(parent_pid: int) -> None:
    # If the supervisor is killed, a copier must not go on writing behind its back.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


class _Throttle:
    """Every rate limit at once; `rate` (the slowest) tells the copy loop its slice size."""

    def __init__(self, limits: tuple[tuple[str, float], ...]) -> None:
        self.limits = [RateLimit(path, rate) for path, rate in limits]
        self.rate = min(rate for _, rate in limits)

    def __call__(self, nbytes: int) -> None:
        for limit in self.limits:
            limit.acquire(nbytes)


def child_main(fd: int, parent_pid: int, options: CopierOptions) -> None:
    _die_with_parent(parent_pid)
    # Ctrl-C, and a hang-up of the terminal, reach the whole process group; the
    # supervisor decides what they mean.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stopping = False
    wake_r, wake_w = os.pipe()

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True  # finish the file in hand, report, exit
        os.write(wake_w, b"x")  # and cut short any --sleep-time pause

    signal.signal(signal.SIGTERM, on_term)
    notes = _lower_priority(options)
    clear_umask()
    throttle = _Throttle(options.rate_limits) if options.rate_limits else None
    conn = Connection(fd)
    for level, text in notes:
        conn.send((level, text))
    sink = sink_from_spec(options.sink or SinkSpec("local", options.destination))
    while not stopping:
        try:
            message = conn.recv()
        except (EOFError, OSError, InterruptedError):
            break
        if message[0] == "stop":
            break
        _, batch_id, jobs = message
        outcomes: list[Outcome] = []

        def put(job: tuple[str, bool]) -> Outcome | None:
            if stopping:
                return None  # not begun: the supervisor sees it as lost, and hands it out again
            key, compare_first = job
            outcome = sink.put(
                options.source, key, compare_first, options.fsync, options.digest, throttle
            )
            if options.sleep_time > 0 and not stopping:
                select.select([wake_r], [], [], options.sleep_time)
            return outcome

        try:
            if sink.puts_in_flight > 1 and len(jobs) > 1:
                # An object store answers each small put after a round trip: several in
                # flight keep its connection pool busy instead of waiting on each.
                from concurrent.futures import ThreadPoolExecutor  # only a store's copiers

                with ThreadPoolExecutor(min(sink.puts_in_flight, len(jobs))) as threads:
                    outcomes += [o for o in threads.map(put, jobs) if o is not None]
            else:
                for job in jobs:
                    outcome = put(job)
                    if outcome is None:
                        break
                    outcomes.append(outcome)
        finally:
            sink.release()
        try:
            conn.send(("done", batch_id, outcomes))
        except OSError:
            break
    conn.close()


# ---- the supervisor side -----------------------------------------------------------------


@dataclass
class Copier:
    process: subprocess.Popen
    conn: Connection
    keys: list[str] = field(default_factory=list)  # the batch it holds, empty when idle
    batch_id: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.keys)


class CopierPool:
    """N copier processes; at most one batch each, so lost work is always known."""

    def __init__(self, n: int, options: CopierOptions) -> None:
        self.options = options
        self.copiers: list[Copier] = []
        self.batches_sent = 0  # a verification may reuse a listing while this is 0
        for _ in range(n):
            self.copiers.append(self._start())

    def _start(self) -> Copier:
        parent, child = socket.socketpair()
        payload = json.dumps(_encode(self.options))
        cmd = [sys.executable, "-m", "softcopy.copiers.pool", str(child.fileno()), str(os.getpid())]
        process = subprocess.Popen(
            [*cmd, payload], pass_fds=[child.fileno()], stdin=subprocess.DEVNULL
        )
        child.close()
        return Copier(process, Connection(parent.detach()))

    def idle(self) -> list[Copier]:
        return [c for c in self.copiers if not c.busy]

    def connections(self) -> list[Connection]:
        return [c.conn for c in self.copiers]

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.copiers]

    def send(self, copier: Copier, jobs: list[tuple[str, bool]]) -> None:
        self.batches_sent += 1
        copier.keys = [key for key, _ in jobs]
        copier.batch_id = self.batches_sent
        copier.conn.send(("batch", copier.batch_id, jobs))

    def receive(self, conn: Connection) -> tuple[list[Outcome], list[str]]:
        """Outcomes of a finished batch, and keys that were handed out but not done.

        A copier that died (killed, crashed) is replaced; its whole batch comes
        back as not done, to be queued again.
        """
        copier = next(c for c in self.copiers if c.conn is conn)
        try:
            message = conn.recv()
        except (EOFError, OSError):
            lost = copier.keys
            self._replace(copier)
            return [], lost
        if message[0] in _NOTE_LEVELS:
            log.log(_NOTE_LEVELS[message[0]], "%s", message[1])
            return [], []
        outcomes = message[2]
        done = {o.key for o in outcomes}
        lost = [k for k in copier.keys if k not in done]
        copier.keys = []
        return outcomes, lost

    def _replace(self, copier: Copier) -> None:
        code = copier.process.poll()
        log.warning(
            "copier process %d ended unexpectedly (exit %s); starting another",
            copier.process.pid,
            code,
        )
        copier.conn.close()
        copier.process.kill()
        copier.process.wait()
        index = self.copiers.index(copier)
        self.copiers[index] = self._start()

    def in_flight(self) -> list[str]:
        return [k for c in self.copiers for k in c.keys]

    def stop(
        self, graceful: bool, timeout: float = 30.0, abort: Callable[[], bool] | None = None
    ) -> list[Outcome]:
        """Graceful: copiers finish the file in hand and report. Otherwise: kill at once.

        `abort` is polled while waiting: a second Ctrl-C turns a graceful stop into a kill.
        """
        outcomes: list[Outcome] = []
        for c in self.copiers:
            if c.process.poll() is None:
                if graceful:
                    if c.busy:
                        c.process.send_signal(signal.SIGTERM)
                    else:
                        _send_quietly(c.conn, ("stop",))
                else:
                    c.process.kill()
        deadline = time.monotonic() + timeout
        for c in self.copiers:
            while graceful and c.busy:
                while not c.conn.poll(0.1) and time.monotonic() < deadline:
                    if abort is not None and abort():
                        graceful = False
                        break
                if not graceful:
                    for other in self.copiers:
                        if other.process.poll() is None:
                            other.process.kill()
                    break
                if not c.conn.poll(0):
                    break  # out of time: killed below
                try:
                    message = c.conn.recv()
                except (EOFError, OSError):
                    break
                if message[0] == "done":
                    outcomes.extend(message[2])
                    break
                log.log(_NOTE_LEVELS.get(message[0], logging.WARNING), "%s", message[1])
            try:
                c.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.process.kill()
                c.process.wait()
            c.conn.close()
        self.copiers = []
        return outcomes


def _encode(options: CopierOptions) -> dict:
    """The options as JSON data for a copier's command line (names as surrogate escapes)."""
    data = dict(options.__dict__)
    if options.sink is not None:
        data["sink"] = options.sink.as_dict()
    return data


def _decode(data: dict) -> CopierOptions:
    data["rate_limits"] = tuple(tuple(x) for x in data.get("rate_limits", ()))
    if data.get("sink") is not None:
        data["sink"] = SinkSpec.from_dict(data["sink"])
    return CopierOptions(**data)


def _send_quietly(conn: Connection, message: object) -> None:
    try:
        conn.send(message)
    except OSError:
        pass


if __name__ == "__main__":
    _fd, _parent, _payload = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    child_main(_fd, _parent, _decode(json.loads(_payload)))
    # Everything is reported and the connection closed: tearing down the interpreter would
    # only make the supervisor's stop wait for a process whose work is done.
    os._exit(0)
