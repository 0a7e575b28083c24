"""Service manners: sd_notify read from a real datagram socket, the HTTP endpoints read with a
real HTTP client from a real server."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DEADLINE

from softcopy.errors import EXIT_USAGE, ConfigError
from softcopy.service import notify as notify_module
from softcopy.service.http import RUN_STATES, StatusServer, metrics_text, parse_address, serve
from softcopy.service.notify import notify, watchdog_interval

# ---------------------------------------------------------------------------------- sd_notify


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(DEADLINE)  # a bound on a hang: the datagram is queued before notify returns
    return sock


def _nothing_arrived(sock: socket.socket) -> bool:
    # notify() sends synchronously, so whatever it sent is already queued here.
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    path = tmp_path / "notify"
    assert len(os.fsencode(path)) < 108, "sun_path is 108 bytes: shorten the test's name"
    return path


def test_notify_sends_fields_as_one_datagram(socket_path, monkeypatch):
    with _receiver(str(socket_path)) as rx:
        monkeypatch.setenv("NOTIFY_SOCKET", str(socket_path))
        assert notify("READY=1", "STATUS=2 waiting, 1 copying, 5 done, 0 failed")
        assert rx.recv(4096) == b"READY=1\nSTATUS=2 waiting, 1 copying, 5 done, 0 failed"
        assert notify("WATCHDOG=1")
        assert rx.recv(4096) == b"WATCHDOG=1"


def test_notify_abstract_namespace(monkeypatch):
    name = f"softcopy-test-{os.getpid()}-{uuid.uuid4().hex}"
    with _receiver("\0" + name) as rx:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1")
        assert rx.recv(4096) == b"STOPPING=1"


def test_notify_without_socket_sends_nothing(socket_path, monkeypatch):
    with _receiver(str(socket_path)) as rx:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        assert notify("READY=1") is False
        monkeypatch.setenv("NOTIFY_SOCKET", "")
        assert notify("READY=1") is False
        assert _nothing_arrived(rx)


def test_notify_to_a_missing_socket_fails_quietly_then_recovers(socket_path, monkeypatch, caplog):
    """systemd gone (or not yet there): False, no exception, one debug line; and notify works
    again once the socket is back, since a service lives longer than one systemd hiccup."""
    monkeypatch.setattr(notify_module, "_failure_logged", False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(socket_path))
    with caplog.at_level(logging.DEBUG, logger="softcopy"):
        assert notify("READY=1") is False
        assert notify("WATCHDOG=1") is False
    lines = [r for r in caplog.records if r.name.startswith("softcopy.service.notify")]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert str(socket_path) in lines[0].getMessage()
    with _receiver(str(socket_path)) as rx:
        assert notify("READY=1")
        assert rx.recv(4096) == b"READY=1"


def test_notify_to_an_address_that_is_not_a_socket_name(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert notify("READY=1") is False
    plain = tmp_path / "plain-file"
    plain.write_text("")
    monkeypatch.setenv("NOTIFY_SOCKET", str(plain))
    assert notify("READY=1") is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("3000000", "other", None),  # the watchdog is a child's or a parent's, not ours
        ("3000000", "nonsense", None),
        (None, None, None),
        ("0", None, None),
        ("-5", None, None),
        ("abc", None, None),
        ("²", None, None),  # a digit to isdigit(), not to int()
        ("", "self", None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            value = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(value, value)
            monkeypatch.setenv(name, value)
    assert watchdog_interval() == expected


# ------------------------------------------------------------------------------- HTTP server

RECORDS = [
    {
        "run": "run-001",
        "source": "/src/run-001",
        "destination": "/dst/run-001",
        "state": "done",
        "attempts": 1,
        "files": 12,
        "bytes": 4096,
        "error": None,
        "certificate": "/dst/run-001.softcopy/certificate",
    },
    {"run": "run-002", "state": "waiting", "attempts": 0, "error": None, "certificate": None},
]


def _url(server: StatusServer, path: str) -> str:
    host, port = server.address
    return f"http://{host}:{port}{path}"


def _get(server: StatusServer, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    """Any answer, errors included, as (status, headers, body)."""
    request = urllib.request.Request(_url(server, path), method=method)
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as answer:
        with answer:
            return answer.code, dict(answer.headers), answer.read()


@pytest.fixture
def start_server() -> Iterator[Callable[..., StatusServer]]:
    servers: list[StatusServer] = []

    def start(status=lambda: RECORDS, metrics=lambda: metrics_text({}, {}), host="127.0.0.1"):
        server = serve((host, 0), status, metrics)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_status_is_the_records_as_json(start_server):
    server = start_server()
    code, headers, body = _get(server, "/status")
    assert code == 200
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == RECORDS


def test_status_carries_names_that_are_not_utf8(start_server):
    """A run named by raw bytes still gives strict JSON, with the bytes in names_hex."""
    name = os.fsdecode(b"run-\xff")
    server = start_server(status=lambda: [{"run": name, "state": "copying"}])
    _, _, body = _get(server, "/status")
    (record,) = json.loads(body.decode("utf-8", "strict"))
    assert bytes.fromhex(record["names_hex"][record["run"]]) == b"run-\xff"


SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+="(?:[^"\\\n]|\\[\\"n])*"\})? (\S+)')


def _parse_exposition(text: str) -> dict[str, dict]:
    """Prometheus text format by its grammar: name -> {"help", "type", "samples"}."""
    assert text.endswith("\n")
    metrics: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            kind, name, rest = line[2:].split(" ", 2)
            assert kind in ("HELP", "TYPE"), line
            metrics.setdefault(name, {"samples": {}})[kind.lower()] = rest
            continue
        match = SAMPLE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        metric = metrics.get(name)
        assert metric and "help" in metric and "type" in metric, f"no HELP/TYPE before {line!r}"
        metric["samples"][labels or ""] = float(value)
    return metrics


def test_metrics_endpoint_is_prometheus_text(start_server):
    text = metrics_text(
        {"waiting": 2, "copying": 1, "done": 5},
        {"bytes_copied_total": 1 << 40, "copy_lag_seconds": 1.25, "run_failures_total": 3},
    )
    server = start_server(metrics=lambda: text)
    code, headers, body = _get(server, "/metrics")
    assert code == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body)
    metrics = _parse_exposition(body.decode())
    assert all(m["help"] for m in metrics.values())
    assert metrics["softcopy_runs"]["type"] == "gauge"
    runs = metrics["softcopy_runs"]["samples"]
    assert list(runs) == [f'{{state="{s}"}}' for s in RUN_STATES]
    assert runs['{state="waiting"}'] == 2 and runs['{state="done"}'] == 5
    assert runs['{state="failed"}'] == 0 and runs['{state="released"}'] == 0
    expected = {
        "softcopy_bytes_copied_total": ("counter", float(1 << 40)),
        "softcopy_files_copied_total": ("counter", 0.0),
        "softcopy_run_failures_total": ("counter", 3.0),
        "softcopy_hook_failures_total": ("counter", 0.0),
        "softcopy_copy_lag_seconds": ("gauge", 1.25),
    }
    for name, (kind, value) in expected.items():
        assert metrics[name]["type"] == kind
        assert metrics[name]["samples"] == {"": value}


def test_metrics_text_escapes_label_values_and_refuses_unknown_names():
    text = metrics_text({'odd\\state\n"x"': 1}, {})
    assert 'softcopy_runs{state="odd\\\\state\\n\\"x\\""} 1\n' in text
    # The known states come first, in their order, whatever else is there.
    assert text.index('state="released"') < text.index('state="odd')
    _parse_exposition(text)
    assert "softcopy_copy_lag_seconds NaN" in metrics_text({}, {"copy_lag_seconds": float("nan")})
    with pytest.raises(ValueError, match="bytes_copied"):
        metrics_text({}, {"bytes_copied": 1})


def test_index_not_found_and_methods(start_server):
    server = start_server()
    code, headers, body = _get(server, "/")
    assert code == 200 and b"/status" in body and b"/metrics" in body
    assert _get(server, "/status?pretty=1")[0] == 200
    for path in ("/nope", "/status/extra", "/../etc/passwd"):
        assert _get(server, path)[0] == 404, path
    code, headers, body = _get(server, "/status", method="HEAD")
    assert code == 200 and body == b"" and int(headers["Content-Length"]) > 0
    for method in ("POST", "PUT", "DELETE", "BREW"):
        code, headers, _ = _get(server, "/status", method=method)
        assert code == 405, method
        assert headers["Allow"] == "GET, HEAD"


def test_a_failing_callback_gives_500_and_the_server_keeps_serving(start_server, caplog):
    calls = []

    def status() -> list[dict]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("journal is locked")
        return RECORDS

    server = start_server(status=status, metrics=lambda: 1 / 0)
    with caplog.at_level(logging.WARNING, logger="softcopy"):
        code, headers, body = _get(server, "/status")
        assert code == 500
        assert headers["Content-Type"].startswith("text/plain")
        assert body.endswith(b"\n") and body.count(b"\n") == 1
        assert _get(server, "/metrics")[0] == 500
    assert any("journal is locked" in r.getMessage() for r in caplog.records)
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    code, _, body = _get(server, "/status")
    assert code == 200 and json.loads(body) == RECORDS


def _read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_nothing_reaches_stderr(start_server, capfd):
    """Request logs, bad requests and clients that hang up go to the log, not to stderr."""
    server = start_server()
    _get(server, "/status")
    _get(server, "/nope")
    with socket.create_connection(server.address, timeout=DEADLINE) as raw:
        raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert b"400" in _read_to_end(raw)  # an HTTP/0.9 answer: the body alone
    with socket.create_connection(server.address, timeout=DEADLINE):
        pass  # connects and hangs up without a word
    assert _get(server, "/status")[0] == 200  # by now the server has handled both
    assert capfd.readouterr().err == ""


def test_a_silent_client_does_not_block_others(start_server):
    server = start_server()
    with socket.create_connection(server.address, timeout=DEADLINE):
        assert _get(server, "/status")[0] == 200


def test_port_in_use_is_a_config_error_naming_it():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            serve(("127.0.0.1", port), lambda: [], lambda: "")
    assert caught.value.exit_code == EXIT_USAGE
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "in use" in str(caught.value) and "--http" in str(caught.value)


def test_two_servers_never_share_a_port(start_server):
    """SO_REUSEPORT would let a second watcher bind the same port and steal half the
    requests; the second must be refused."""
    first = start_server()
    with pytest.raises(ConfigError, match="in use"):
        serve(first.address, lambda: [], lambda: "")
    assert _get(first, "/status")[0] == 200


def test_an_address_not_on_this_machine_is_a_config_error():
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never a local address.
    with pytest.raises(ConfigError) as caught:
        serve(("192.0.2.1", 0), lambda: [], lambda: "")
    assert "192.0.2.1:0" in str(caught.value)
    assert "not one of this machine's" in str(caught.value)


def test_unknown_host_is_a_config_error():
    with pytest.raises(ConfigError, match=r"no-such-host\.invalid:8080"):
        serve(("no-such-host.invalid", 8080), lambda: [], lambda: "")


def test_close_frees_the_port(start_server):
    server = start_server()
    address = server.address
    server.close()
    server.close()  # a second close (the fixture makes a third) does nothing
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=DEADLINE).close()
    serve(address, lambda: [], lambda: "").close()


def test_ipv6_loopback(start_server):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            pytest.skip("no IPv6 loopback here")
        raise
    server = start_server(host="::1")
    host, port = server.address
    assert host == "::1" and port > 0
    with urllib.request.urlopen(f"http://[::1]:{port}/status", timeout=DEADLINE) as answer:
        assert json.loads(answer.read()) == RECORDS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:8080", ("localhost", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        (":8080", ("127.0.0.1", 8080)),
        ("8080", ("127.0.0.1", 8080)),
        ("0", ("127.0.0.1", 0)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
        ("stage-3.lab.example:9100", ("stage-3.lab.example", 9100)),
    ],
)
def test_parse_address_good(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "port"),
        ("localhost", "port"),
        ("localhost:", "port"),
        ("127.0.0.1:http", "port"),
        ("127.0.0.1:65536", "65536"),
        ("127.0.0.1:-1", "port"),
        ("127.0.0.1:+80", "port"),
        ("127.0.0.1: 80", "port"),
        ("8080 ", "port"),
        ("٨٠٨٠", "port"),  # digits to isdigit(), but not ASCII
        ("::1:8080", "brackets"),
        ("[::1]8080", r"\[ADDRESS\]:PORT"),
        ("[::1", r"\[ADDRESS\]:PORT"),
        ("[127.0.0.1]:80", "not an IPv6 address"),
        ("bad host:80", "not a host name"),
        ("-x:80", "not a host name"),
    ],
)
def test_parse_address_bad(text, says):
    with pytest.raises(ValueError, match=says):
        parse_address(text)
