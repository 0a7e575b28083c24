"""systemd's sd_notify without a library: one datagram to $NOTIFY_SOCKET per call."""

from __future__ import annotations

import logging
import os
import socket
import threading

log = logging.getLogger(__name__)

# A receiver that stopped reading must not stall the service: a send that cannot go out in
# this time is dropped, like any other failure to notify.
_SEND_TIMEOUT = 1.0

_lock = threading.Lock()
_sock: socket.socket | None = None
_sock_pid: int | None = None
_failure_logged = False


def notify(*fields: str) -> bool:
    """Send `fields` (e.g. "READY=1", "STATUS=...") to systemd; True if the datagram went out.

    Without $NOTIFY_SOCKET (not run by systemd, or `NotifyAccess` denies it) nothing is sent.
    Never raises: the service must not die because its supervisor went away.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        # systemd also offers vsock: addresses (for VMs); a host service never gets those.
        _log_failure_once(address, "not a path nor an abstract socket name")
        return False
    payload = "\n".join(fields).encode("utf-8", "surrogateescape")
    try:
        with _lock:
            _socket().sendto(payload, address)
    except OSError as exc:
        _log_failure_once(address, os.strerror(exc.errno) if exc.errno else str(exc))
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half the watchdog's timeout), None if none is asked."""
    pid = os.environ.get("WATCHDOG_PID")
    # The watchdog is meant for one process; a child of the service must not answer for it.
    if pid is not None and _whole_number(pid) != os.getpid():
        return None
    usec = _whole_number(os.environ.get("WATCHDOG_USEC", ""))
    if not usec:
        return None
    return usec / 2 / 1_000_000


def _whole_number(text: str) -> int | None:
    text = text.strip()
    # isdigit() alone admits digits int() refuses, such as superscripts.
    return int(text) if text.isascii() and text.isdigit() else None


def _socket() -> socket.socket:
    """This process's notify socket: made once, remade in a forked child (it is not shared)."""
    global _sock, _sock_pid
    if _sock is None or _sock_pid != os.getpid():
        # Python's sockets are close-on-exec already: hooks and copiers do not inherit it.
        _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _sock.settimeout(_SEND_TIMEOUT)
        _sock_pid = os.getpid()
    return _sock


def _log_failure_once(address: str, problem: str) -> None:
    global _failure_logged
    if not _failure_logged:
        _failure_logged = True
        shown = "@" + address[1:] if address.startswith("\0") else address
        log.debug("cannot notify systemd at %s: %s (not logged again)", shown, problem)
