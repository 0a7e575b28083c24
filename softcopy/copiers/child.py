"""A copier process: `python -m softcopy.copiers.child FD PARENT_PID NICE IDLE_CPU IDLE_IO`.

It lowers its priority before it imports anything else: a copier may be started
before the supervisor knows its target (`spares`), and even its own start-up must not
take a CPU the writer wants. Then it waits for its options on the socket and copies the
batches it is given, one outcome per key (`protocol`). It knows nothing of zarr and
imports only the standard library, psutil and its kind of sink.
"""

from __future__ import annotations

import os
import sys

from ..priority import lower_priority

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    # If the supervisor is killed, a copier must not go on writing behind its back.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, 9)  # SIGKILL
    if os.getppid() != parent_pid:
        os._exit(1)


class _Throttle:
    """Every rate limit at once; `rate` (the slowest) tells the copy loop its slice size."""

    def __init__(self, limits: tuple[tuple[str, float], ...]) -> None:
        from ..throttle import RateLimit

        self.limits = [RateLimit(path, rate) for path, rate in limits]
        self.rate = min(rate for _, rate in limits)

    def __call__(self, nbytes: int) -> None:
        for limit in self.limits:
            limit.acquire(nbytes)


def serve(fd: int, notes: list[tuple[str, str]]) -> None:
    """Options first, then batches until "stop", the end of the socket, or SIGTERM."""
    import select
    import signal
    from multiprocessing.connection import Connection

    from ..sinks.base import Outcome, SinkSpec, sink_from_spec
    from ..sinks.local import clear_umask
    from .protocol import decode, encode_outcomes

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
    conn = Connection(fd)
    try:
        message = conn.recv()
    except (EOFError, OSError, InterruptedError):
        return  # a spare nobody needed
    if message[0] != "options":
        return
    options = decode(message[1])
    clear_umask()
    throttle = _Throttle(options.rate_limits) if options.rate_limits else None
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
                options.source,
                key,
                compare_first,
                options.fsync,
                options.digest,
                throttle,
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
            conn.send(("done", batch_id, encode_outcomes(outcomes)))
        except OSError:
            break
    conn.close()


def main(argv: list[str]) -> None:
    fd, parent_pid, nice = int(argv[0]), int(argv[1]), int(argv[2])
    notes = lower_priority(nice, idle_cpu=argv[3] == "1", idle_io=argv[4] == "1")
    _die_with_parent(parent_pid)
    serve(fd, notes)


if __name__ == "__main__":
    main(sys.argv[1:])
    # Everything is reported and the connection closed: tearing down the interpreter would
    # only make the supervisor's stop wait for a process whose work is done.
    os._exit(0)
