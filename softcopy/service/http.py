"""The service's HTTP endpoints: `/status` (JSON) and `/metrics` (Prometheus text)."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import math
import re
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..names import json_record

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"

RUN_STATES = ("waiting", "copying", "verifying", "done", "retry", "failed", "released")

# name (without the softcopy_ prefix) -> (type, help)
COUNTERS = {
    "bytes_copied_total": ("counter", "Bytes copied to destinations since the service started."),
    "files_copied_total": ("counter", "Files copied to destinations since the service started."),
    "run_failures_total": ("counter", "Run attempts that failed since the service started."),
    "hook_failures_total": ("counter", "Hooks that failed or timed out since the service started."),
    "copy_lag_seconds": ("gauge", "The longest any file has now been waiting to be copied."),
}

_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")

# A client that connects and sends nothing must not hold a thread for ever.
_REQUEST_TIMEOUT = 10.0

_BIND_PROBLEMS = {
    errno.EADDRINUSE: "the port is in use by another program: choose another with --http",
    errno.EADDRNOTAVAIL: "the address is not one of this machine's: choose another with --http",
    errno.EACCES: (
        "permission denied (ports below 1024 need privileges): choose another with --http"
    ),
}


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPV6]:PORT`, `:PORT` or `PORT` (the last two on loopback)."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r}: an IPv6 address is written [ADDRESS]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in text:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address in brackets, [ADDRESS]:PORT")
        host = host or DEFAULT_HOST
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    else:
        host, port = DEFAULT_HOST, text
    if not (port.isascii() and port.isdigit()):
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535, not {port!r}")
    number = int(port)
    if number > 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535, not {number}")
    return host, number


class StatusServer:
    """A bound HTTP server answering from its own daemon thread until `close()`."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="softcopy-http", daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return host, port

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()

    def __enter__(self) -> StatusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    address: tuple[str, int],
    status: Callable[[], list[dict]],
    metrics: Callable[[], str],
) -> StatusServer:
    """Bind `address` now (a bad one fails before the service starts) and serve from a thread."""
    host, port = address
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(shown, "listen for HTTP", f"unknown host ({exc.strerror})") from None
    family, _, _, _, sockaddr = infos[0]
    server = _Server(family, sockaddr, status, metrics)
    try:
        server.server_bind()
        server.server_activate()
    except OSError as exc:
        server.server_close()
        problem = _BIND_PROBLEMS.get(exc.errno or 0) or (
            f"{exc.strerror or exc}: choose another with --http"
        )
        raise ConfigError(shown, "listen for HTTP", problem) from None
    return StatusServer(server)


def metrics_text(runs_by_state: dict[str, int], counters: dict[str, float]) -> str:
    """Prometheus text exposition format 0.0.4."""
    unknown = set(counters) - set(COUNTERS)
    if unknown:
        raise ValueError(f"unknown metrics: {', '.join(sorted(unknown))}")
    lines = [
        "# HELP softcopy_runs Runs known to this service, by state.",
        "# TYPE softcopy_runs gauge",
    ]
    extra = sorted(set(runs_by_state) - set(RUN_STATES))
    for state in (*RUN_STATES, *extra):
        value = _sample(runs_by_state.get(state, 0))
        lines.append(f'softcopy_runs{{state="{_label_value(state)}"}} {value}')
    for name, (kind, help_text) in COUNTERS.items():
        lines.append(f"# HELP softcopy_{name} {help_text}")
        lines.append(f"# TYPE softcopy_{name} {kind}")
        lines.append(f"softcopy_{name} {_sample(counters.get(name, 0))}")
    return "\n".join(lines) + "\n"


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEPORT would let a second watcher bind the same port silently.
    allow_reuse_port = False

    def __init__(
        self,
        family: int,
        sockaddr: tuple,
        status: Callable[[], list[dict]],
        metrics: Callable[[], str],
    ) -> None:
        self.address_family = family  # read by TCPServer.__init__ to make the socket
        self.status = status
        self.metrics = metrics
        super().__init__(sockaddr, _Handler, bind_and_activate=False)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name, which may hang; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: object, client_address: tuple) -> None:
        # The default prints a traceback to stderr; a dropped client is not worth one.
        log.debug("http: request from %s failed", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _REQUEST_TIMEOUT
    server_version = "softcopy"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler answers 501 for methods it has no do_X for; every method
        # exists in HTTP terms, it is just not allowed here.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._reply(405, "text/plain; charset=utf-8", b"method not allowed: use GET\n",
                    {"Allow": "GET, HEAD"})  # fmt: skip

    def _answer(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/status":
                # Names that are not UTF-8 travel as text plus names_hex, as in every JSON
                # softcopy writes: a strict JSON reader refuses lone surrogates.
                records = [json_record(r) for r in self.server.status()]
                body = json.dumps(records, default=str).encode()
                ctype = "application/json"
            elif path == "/metrics":
                body = self.server.metrics().encode()
                ctype = "text/plain; version=0.0.4; charset=utf-8"
            elif path == "/":
                body = b"softcopy\n/status  runs as JSON\n/metrics  Prometheus metrics\n"
                ctype = "text/plain; charset=utf-8"
            else:
                body = b"not found: try /status or /metrics\n"
                self._reply(404, "text/plain; charset=utf-8", body, send_body=send_body)
                return
        except Exception as exc:
            log.warning("http: cannot answer %s: %s: %s", path, type(exc).__name__, exc)
            log.debug("http: %s failed", path, exc_info=True)
            body = f"internal error: cannot answer {path}: {type(exc).__name__}\n".encode()
            self._reply(500, "text/plain; charset=utf-8", body, send_body=send_body)
            return
        self._reply(200, ctype, body, send_body=send_body)

    def _reply(
        self,
        code: int,
        ctype: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        send_body: bool = True,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body and self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http: %s %s", self.address_string(), format % args)
