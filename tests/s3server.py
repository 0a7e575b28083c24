"""A real S3 server on loopback for tests: moto's server mode, driven through real HTTP.

`s3_server` (session) gives the endpoint URL and sets fake credentials and
AWS_ENDPOINT_URL in the environment, which subprocesses inherit; `bucket` makes a fresh
bucket per test. `auth_server` is a second server, in its own process, that checks
credentials (moto's INITIAL_NO_AUTH_ACTION_COUNT): one user with read-only rights.
Everything skips cleanly when moto is not installed.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask a cloud's metadata service
    "AWS_CONFIG_FILE": os.devnull,  # the real user's ~/.aws stays out of it
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
DEADLINE = 60.0

_server = None
_saved_env: dict[str, str | None] = {}
_names = itertools.count()


def endpoint() -> str:
    """Start the shared server on first use; its endpoint URL."""
    global _server
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("boto3", reason="boto3 is not installed")
    if _server is None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        _server = server
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        for name, value in {**FAKE_ENV, "AWS_ENDPOINT_URL": url}.items():
            _saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        for name in _UNSET:
            _saved_env.setdefault(name, os.environ.pop(name, None))
    host, port = _server.get_host_and_port()
    return f"http://{host}:{port}"


def stop() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
    for name, value in _saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _saved_env.clear()


def client(url: str | None = None, **kw):
    """A plain boto3 client for the test's own look at the server (not the sink's)."""
    import boto3

    return boto3.client("s3", endpoint_url=url or endpoint(), **kw)


def new_bucket() -> str:
    name = f"softcopy-test-{os.getpid()}-{next(_names)}"
    client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    try:
        yield endpoint()
    finally:
        stop()


@pytest.fixture
def bucket(s3_server: str) -> str:
    return new_bucket()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A moto server on a port the system picks; prints the port once it listens, then serves
# until killed.
_SERVE_ON_ANY_PORT = """
import threading
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
threading.Event().wait()
"""


@dataclass(frozen=True)
class AuthServer:
    url: str
    bucket: str
    key_id: str  # of a user who may list and read, never write
    secret: str


@pytest.fixture(scope="session")
def auth_server(s3_server: str) -> Iterator[AuthServer]:
    """A server that checks credentials: its first four requests (the set-up) go unchecked."""
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
    env.pop("AWS_ENDPOINT_URL", None)
    # Port 0, and the server says which port it got: no other test can take it meanwhile.
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE_ON_ANY_PORT],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.strip().isdigit():
            pytest.fail(f"the moto server did not start (exit {proc.wait()})")
        url = f"http://127.0.0.1:{int(line)}"
        import boto3

        iam = boto3.client("iam", endpoint_url=url)
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket", "s3:GetObject", "s3:CreateBucket"],
                    "Resource": "*",
                }
            ],
        }
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(policy))
        reader = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        reader.create_bucket(Bucket="guarded")
        yield AuthServer(url, "guarded", key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.kill()
        proc.wait()


class Outage:
    """A TCP relay in front of the server that can go away and come back: while `cut`, every
    connection is reset (RST) the moment it is made, and those open are reset too, the way a
    store behind a failing load balancer looks to a client. Counted, so a test waits for
    resets that happened, not for time to pass."""

    def __init__(self, upstream: str) -> None:
        import threading

        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.refused = 0
        self._cut = threading.Event()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for s in self._open:
                _reset(s)
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept
        except OSError:
            pass
        self.listener.close()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self._cut.is_set():
                _reset(client)
                self.refused += 1
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _reset(s: socket.socket) -> None:
    import struct

    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # linger 0: the peer gets a reset, not an orderly end
    except OSError:
        pass


def _pump(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
