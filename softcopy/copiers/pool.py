"""Copier processes, the supervisor's side: N of them, fed batches of keys, one outcome per key.

Each copier is a fresh interpreter (`python -m softcopy.copiers.child`, see child.py)
talking over a socketpair (`protocol`): no fork of a multi-threaded supervisor, and no
dependence on how the parent was started. A pool takes the copiers `copy` started early
(`spares`) before it starts its own.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from ..sinks.base import Outcome, SinkSpec
from . import spares
from .protocol import CopierOptions, decode_outcomes, encode

if TYPE_CHECKING:  # a copier process never imports the configuration (yaml, click)
    import socket

    from ..config import TargetConfig

log = logging.getLogger(__name__)

# What a copier may say besides "done", and the level the supervisor logs it at.
_NOTE_LEVELS = {"warn": logging.WARNING, "debug": logging.DEBUG}


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
        priority = (options.nice, options.idle_cpu, options.idle_io)
        started = spares.take(n, priority)
        while len(started) < n:
            started.append(spares.launch(priority))
        for process, sock in started:
            self.copiers.append(self._tell(process, sock))

    def _tell(self, process: subprocess.Popen, sock: socket.socket) -> Copier:
        conn = Connection(sock.detach())
        # A copier that died meanwhile shows as a lost batch at its first one, and is replaced.
        _send_quietly(conn, ("options", encode(self.options)))
        return Copier(process, conn)

    def _start(self) -> Copier:
        o = self.options
        return self._tell(*spares.launch((o.nice, o.idle_cpu, o.idle_io)))

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
        # A copier that died while idle (killed, out of memory) shows at `receive`: its
        # socket reads as ended, and the batch comes back as not done.
        _send_quietly(copier.conn, ("batch", copier.batch_id, jobs))

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
        outcomes = decode_outcomes(message[2])
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
                    outcomes.extend(decode_outcomes(message[2]))
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


def _send_quietly(conn: Connection, message: object) -> None:
    try:
        conn.send(message)
    except OSError:
        pass
