"""Copier processes started before their target is known, while the supervisor imports.

A copier is a fresh interpreter: about 0.1 s of start-up before it can copy. A small
copy's supervisor spends longer than that importing numpy and its engine, so `copy`
starts its copiers first and the pool takes them (`take`) instead of starting its own:
the two start-ups overlap on two cores instead of following each other. A spare lowers
its CPU priority before anything else (child.py), so it starts only on an idle CPU.
Spares nobody took are killed by `discard`: they have been told nothing.

Standard library only: this runs before the engine is imported.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

# The priority a spare starts at (nice, SCHED_IDLE, idle I/O): a pool whose copiers want
# another one starts its own.
PRIORITY = (19, True, True)

_lock = threading.Lock()
_spares: list[tuple[subprocess.Popen, socket.socket]] = []


def launch(priority: tuple[int, bool, bool]) -> tuple[subprocess.Popen, socket.socket]:
    """One copier process at this (nice, SCHED_IDLE, idle I/O), waiting for its options;
    the supervisor's end of its socket."""
    parent, child = socket.socketpair()
    nice, idle_cpu, idle_io = priority
    cmd = [sys.executable, "-m", "softcopy.copiers.child", str(child.fileno()), str(os.getpid())]
    process = subprocess.Popen(
        [*cmd, str(nice), "1" if idle_cpu else "0", "1" if idle_io else "0"],
        pass_fds=[child.fileno()],
        stdin=subprocess.DEVNULL,
    )
    child.close()
    return process, parent


def start(n: int) -> None:
    """Start `n` spares (in the thread that outlives the copy: a copier dies with it)."""
    with _lock:
        for _ in range(max(0, n - len(_spares))):
            _spares.append(launch(PRIORITY))


def take(n: int, priority: tuple[int, bool, bool]) -> list[tuple[subprocess.Popen, socket.socket]]:
    """Up to `n` spares still running, if they are at this priority."""
    if priority != PRIORITY:
        return []
    taken = []
    with _lock:
        while _spares and len(taken) < n:
            process, sock = _spares.pop(0)
            if process.poll() is None:
                taken.append((process, sock))
            else:
                sock.close()
    return taken


def discard() -> None:
    """Kill the spares nobody took (they hold nothing: no options, no file)."""
    with _lock:
        left, _spares[:] = list(_spares), []
    for process, sock in left:
        sock.close()
        process.kill()
        process.wait()
