"""The acquisition comes first: lowering a thread's CPU and I/O priority.

On Linux both are per thread: a copier process lowers its only thread, a packing target
its own thread, the `--hash` read-back threads their I/O class.
"""

from __future__ import annotations

import os
import threading

# numpy's OpenBLAS starts a thread per CPU when numpy is imported, and they spin waiting
# for linear algebra softcopy never asks for: 0.13 of import numpy's 0.28 CPU-s here,
# taken from the writer. Set for softcopy's own process only (`ours_only` hands a
# hook the environment as it was).
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1"}
_set_here: set[str] = set()


def one_library_thread() -> None:
    """Before numpy is imported: no idle library threads, unless the user asked for them."""
    for name, value in _ONE_THREAD.items():
        if name not in os.environ:
            os.environ[name] = value
            _set_here.add(name)


def ours_only(env: dict[str, str]) -> dict[str, str]:
    """`env` without what `one_library_thread` set: a program softcopy starts for the user
    gets the user's environment, not softcopy's tuning."""
    return {k: v for k, v in env.items() if k not in _set_here}


def lower_cpu_priority(nice: int = 19, idle_cpu: bool = True) -> list[tuple[str, str]]:
    """Nice and SCHED_IDLE for the calling thread (on Linux both are per thread).

    SCHED_IDLE runs it only on a CPU nothing else wants, and any other task that wakes
    up preempts it at once; nice 19 alone still takes a share of a busy CPU (and every
    wake-up of the writer waits for the copier's time slice). Returns (level, text)
    notes for the supervisor to log.
    """
    notes: list[tuple[str, str]] = []
    if nice:
        os.nice(nice)
    if idle_cpu:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError) as exc:
            # Not permitted (a seccomp profile, an old kernel): nice 19 still applies.
            me = threading.get_native_id()
            notes.append(("debug", f"thread {me}: could not set SCHED_IDLE: {exc}"))
    return notes


def lower_io_priority() -> list[tuple[str, str]]:
    """The idle I/O class for the calling thread and what it starts."""
    me = threading.get_native_id()
    try:
        import psutil

        psutil.Process(me).ionice(psutil.IOPRIO_CLASS_IDLE)
    except Exception as exc:  # no ioprio support: keep going at normal I/O priority
        return [("warn", f"thread {me}: could not set idle I/O priority: {exc}")]
    return []


def lower_priority(
    nice: int = 19, idle_cpu: bool = True, idle_io: bool = True
) -> list[tuple[str, str]]:
    """Idle CPU scheduling, idle I/O class, nice 19, for the calling thread and what it
    starts."""
    notes = lower_cpu_priority(nice, idle_cpu)
    return notes + (lower_io_priority() if idle_io else [])
