"""The byte stages between tar and the destination, both ways.

Packing: what tar writes is buffered into large blocks, compressed in this process (zlib
for gzip members, the `zstandard` package for zstd frames, both with their checksums),
fed through a pipe to a real `age` or `gpg` when encrypting, and what comes out is
hashed (BLAKE3), counted and written to `out`, strictly in order. Unpacking reverses it,
reading the input to its very end so that the count and hash are the stored archive's
and every checksum (gzip CRC, zstd frame checksum, age's and gpg's authentication) is
checked.

No plaintext and no key material touches a disk: the tools encrypt to public keys
given on their command lines (or recipients files the user keeps), the session keys
live in their memory only, and there is no passphrase mode at all. gpg runs with
`--trust-model always`: the operator named each key explicitly and parse_encrypt
checked it is in the keyring and can encrypt, so the web of trust has nothing to add,
and gpg's default would stop in batch mode ("There is no assurance this key belongs to
the named user") for any key not signed locally.
"""

from __future__ import annotations

import io
import subprocess
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import zstandard
from blake3 import blake3

from ..errors import ConfigError, SoftcopyError
from ..inputs import open_input
from .formats import Packing, age_recipient_args, gpg_base_args, last_line, tool_path
from .members import DamagedArchive

BLOCK = 1 << 20
# Measured on a 470 MB folder of FASTQ-like text, 2 shared cores (issue 14): zstd level 1
# with one worker thread packs at 110-160 MB/s for 7-9 CPU-s/GB, level 3 at 85-110 MB/s
# for 12-16 CPU-s/GB and compressed no better (2.54 against 2.67 here);
# gzip level 6 (gzip's default) manages 7 MB/s for 126 CPU-s/GB, level 1 30-50 MB/s
# for 19-20. Level 1 and one thread leave the acquisition a core whatever the format.
DEFAULT_LEVEL = {"gzip": 1, "zstd": 1}
DEFAULT_THREADS = {"gzip": 1, "zstd": 1}
_STDERR_KEEP = 8192
_WAIT = 60.0


@dataclass
class Counted:
    """What went through, at the destination side: ciphertext when encrypted."""

    size: int = 0
    _hasher: Any = field(default_factory=lambda: blake3(max_threads=1), repr=False)

    @property
    def blake3(self) -> str:
        return self._hasher.hexdigest()

    def add(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self._hasher.update(data)


class _Stage(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _Out:
    """The last stage: count, hash, and write to the destination, in order."""

    def __init__(self, out: BinaryIO, counted: Counted) -> None:
        self.out, self.counted = out, counted

    def write(self, data: bytes) -> None:
        if data:
            self.counted.add(data)
            self.out.write(data)

    def close(self) -> None:
        self.out.flush()

    def abort(self) -> None:
        pass


class _Deflate:
    """One gzip member (RFC 1952, mtime 0 so archives are reproducible)."""

    def __init__(self, nxt: _Stage, level: int) -> None:
        self.nxt = nxt
        self.z = zlib.compressobj(level, zlib.DEFLATED, 31, 9)

    def write(self, data: bytes) -> None:
        self.nxt.write(self.z.compress(data))

    def close(self) -> None:
        self.nxt.write(self.z.flush())
        self.nxt.close()

    def abort(self) -> None:
        self.nxt.abort()


class _Zstd:
    def __init__(self, nxt: _Stage, level: int, threads: int) -> None:
        self.nxt = nxt
        compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        self.z = compressor.compressobj()

    def write(self, data: bytes) -> None:
        out = self.z.compress(data)
        if out:
            self.nxt.write(out)

    def close(self) -> None:
        self.nxt.write(self.z.flush())
        self.nxt.close()

    def abort(self) -> None:
        self.nxt.abort()


class _Tool:
    """A real program in the pipe: we write its stdin, a thread drains its stdout into the
    next stage (so neither side can block the other), another keeps its stderr's tail."""

    def __init__(self, argv: list[str], nxt: _Stage | None, what: str) -> None:
        self.what = what
        self.nxt = nxt
        self.error: BaseException | None = None
        self.stderr = bytearray()
        # A new session: no controlling terminal, so no tool can ever prompt on one.
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.threads = [threading.Thread(target=self._keep_stderr, daemon=True)]
        if nxt is not None:
            self.threads.append(threading.Thread(target=self._drain, daemon=True))
        for t in self.threads:
            t.start()

    def _keep_stderr(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            self.stderr += chunk
            del self.stderr[:-_STDERR_KEEP]

    def _drain(self) -> None:
        assert self.proc.stdout is not None and self.nxt is not None
        try:
            for chunk in iter(lambda: self.proc.stdout.read1(BLOCK), b""):  # type: ignore[union-attr]
                self.nxt.write(chunk)
        except BaseException as exc:  # the destination failed: stop the tool, pass it on
            self.error = exc
            self.proc.kill()

    def failure(self) -> BaseException:
        if self.error is not None:
            # The destination's (or the source's) own error, as it would be unencrypted.
            return self.error
        code = self.proc.returncode
        detail = f"it failed (exit {code}): {last_line(bytes(self.stderr))}"
        return SoftcopyError(self.what, "run", _explained(bytes(self.stderr), detail))

    def write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError):
            self.abort()
            raise self.failure() from None

    def finish(self) -> None:
        """Wait for the tool and its threads; raise what went wrong."""
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        for t in self.threads:
            t.join()
        self.proc.wait()
        if self.error is not None or self.proc.returncode != 0:
            raise self.failure()

    def close(self) -> None:
        self.finish()
        if self.nxt is not None:
            self.nxt.close()

    def abort(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        self.proc.wait()
        for t in self.threads:
            if t is not threading.current_thread():
                t.join()
        if self.nxt is not None:
            self.nxt.abort()


def encrypt_argv(packing: Packing) -> list[str]:
    """The command line that encrypts stdin to stdout for the packing's recipients."""
    enc = packing.encryption
    assert enc is not None and enc.recipients
    if enc.tool == "age":
        args = [a for r in enc.recipients for a in age_recipient_args(r)]
        return [tool_path("age"), "--encrypt", *args]
    recipients = [a for r in enc.recipients for a in ("--recipient", r)]
    return [
        *gpg_base_args(tool_path("gpg")),
        "--trust-model",
        "always",
        # The data is compressed already (or the user chose plain tar): gpg's own
        # compression would only cost a core.
        "--compress-algo",
        "none",
        "--encrypt",
        *recipients,
        "--output",
        "-",
    ]


def decrypt_argv(packing: Packing, identity: Path | None) -> list[str]:
    enc = packing.encryption
    assert enc is not None
    if enc.tool == "age":
        if identity is None:
            raise ConfigError("age", "decrypt", "an age identity file (--identity) is needed")
        return [tool_path("age"), "--decrypt", "--identity", str(identity)]
    return [*gpg_base_args(tool_path("gpg")), "--decrypt", "--output", "-"]


class _Front(io.RawIOBase):
    """The writable end handed to tar: large blocks only reach the stages."""

    def __init__(self, first: _Stage) -> None:
        self.first = first
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(data)
        if len(self.buf) + n < BLOCK:
            self.buf += data
            return n
        if self.buf:
            self.buf += data
            data, self.buf = bytes(self.buf), bytearray()
        self.first.write(bytes(data))
        return n

    def finish(self) -> None:
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            self.first.write(data)
        self.first.close()


def _levels(packing: Packing) -> tuple[int, int]:
    level = packing.level if packing.level is not None else DEFAULT_LEVEL[packing.compression]
    threads = packing.threads or DEFAULT_THREADS[packing.compression]
    return level, threads


@contextmanager
def packer(out: BinaryIO, packing: Packing) -> Iterator[tuple[BinaryIO, Counted]]:
    """A writable stream whose bytes are compressed, encrypted, counted and written to `out`."""
    counted = Counted()
    stage: _Stage = _Out(out, counted)
    if packing.encryption is not None:
        stage = _Tool(encrypt_argv(packing), stage, packing.encryption.tool)
    try:
        if packing.compression == "gzip":
            level, threads = _levels(packing)
            if threads > 1:
                # zlib compresses in one thread; pigz writes the same gzip format in many.
                pigz = [tool_path("pigz"), f"-{level}", "-p", str(threads), "-c"]
                stage = _Tool(pigz, stage, "pigz")
            else:
                stage = _Deflate(stage, level)
        elif packing.compression == "zstd":
            stage = _Zstd(stage, *_levels(packing))
        front = _Front(stage)
    except BaseException:
        stage.abort()
        raise
    try:
        yield front, counted  # type: ignore[misc]
        front.finish()
    except BaseException:
        stage.abort()
        raise


# ---------------------------------------------------------------- reading


def count_stream(inp: BinaryIO) -> Counted:
    """The size and BLAKE3 of a stream read to its end (an encrypted archive verified
    without its key: its ciphertext only)."""
    counted = Counted()
    for block in iter(lambda: inp.read(BLOCK), b""):
        counted.add(block)
    return counted


class _In:
    """The first stage: read the stored archive, counting and hashing it."""

    def __init__(self, inp: BinaryIO, counted: Counted) -> None:
        self.inp, self.counted = inp, counted

    def read(self) -> bytes:
        data = self.inp.read(BLOCK)
        self.counted.add(data)
        return data


class _Decrypt:
    """The tool reading the archive on its stdin (a feeding thread) and giving the
    plaintext on its stdout (read by the caller)."""

    def __init__(self, src: _In, argv: list[str], what: str) -> None:
        self.src = src
        self.tool = _Tool(argv, None, what)
        self.feeder = threading.Thread(target=self._feed, daemon=True)
        self.feeder.start()

    def _feed(self) -> None:
        stdin = self.tool.proc.stdin
        try:
            for chunk in iter(self.src.read, b""):
                stdin.write(chunk)  # type: ignore[union-attr]
            stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError):
            pass  # the tool stopped reading or was stopped: its exit code and stderr say why
        except BaseException as exc:
            self.tool.error = exc
            self.tool.proc.kill()

    eof = False

    def read(self) -> bytes:
        data = self.tool.proc.stdout.read1(BLOCK)  # type: ignore[union-attr]
        self.eof = not data
        return data

    def exited_failure(self) -> BaseException | None:
        """The tool's failure once its output ended, or None if it succeeded."""
        while self.read():
            pass
        try:
            self.tool.proc.wait(_WAIT)
        except subprocess.TimeoutExpired:
            return None
        self.abort()
        if self.tool.error is not None or self.tool.proc.returncode != 0:
            return self.tool.failure()
        return None

    def finish(self) -> None:
        while self.read():
            pass
        self.feeder.join()
        self.tool.finish()

    def abort(self) -> None:
        self.tool.abort()
        self.feeder.join()


class _Decompress:
    """gzip members or zstd frames one after another, each checked to its end."""

    def __init__(self, src: _In | _Decrypt, compression: str) -> None:
        self.src, self.compression = src, compression
        self.d: Any = None
        self.done = False

    def _new(self) -> Any:
        if self.compression == "gzip":
            return zlib.decompressobj(31)
        return zstandard.ZstdDecompressor().decompressobj()

    def read(self) -> bytes:
        while not self.done:
            data = self.src.read()
            if not data:
                self.done = True
                if self.d is not None and not self.d.eof:
                    raise DamagedArchive(self.compression, "decompress", "the archive is truncated")
                return b""
            out = []
            while data:
                if self.d is None or self.d.eof:
                    self.d = self._new()
                try:
                    out.append(self.d.decompress(data))
                except (zlib.error, zstandard.ZstdError) as exc:
                    raise DamagedArchive(
                        self.compression, "decompress", f"the archive is corrupt ({exc})"
                    ) from None
                data = self.d.unused_data if self.d.eof else b""
            joined = b"".join(out)
            if joined:
                return joined
        return b""

    def finish(self) -> None:
        while self.read():
            pass
        if isinstance(self.src, _Decrypt):
            self.src.finish()

    def abort(self) -> None:
        if isinstance(self.src, _Decrypt):
            self.src.abort()


class _Back(io.RawIOBase):
    def __init__(self, last: _In | _Decrypt | _Decompress) -> None:
        self.last = last
        self.pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self.pending:
            self.pending = memoryview(self.last.read())
        n = min(len(b), len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


@contextmanager
def unpacker(
    inp: BinaryIO, packing: Packing, identity: Path | None
) -> Iterator[tuple[BinaryIO, Counted]]:
    """The plaintext tar of an archive read from `inp`; leaving the block reads `inp` to
    its end and checks every stage (a wrong key, a truncated or tampered archive)."""
    counted = Counted()
    source = _In(inp, counted)
    stage: _In | _Decrypt | _Decompress = source
    if packing.encryption is not None:
        argv = decrypt_argv(packing, identity)
        if identity is not None:
            # Only opened, never read here: age reads the key itself.
            open_input(identity, "read the age identity").close()
        stage = _Decrypt(source, argv, packing.encryption.tool)
    if packing.compression:
        stage = _Decompress(stage, packing.compression)
    back = _Back(stage)
    reader = io.BufferedReader(back, BLOCK)
    try:
        yield reader, counted  # type: ignore[misc]
    except BaseException as exc:
        decrypt = _decrypt_of(stage)
        if decrypt is not None and (decrypt.eof or isinstance(exc, DamagedArchive)):
            # The plaintext was cut short or is damaged: the tool's own verdict (a wrong
            # key, a tampered archive), once it has read its input to the end (gpg
            # checks its MDC there), is the reason.
            failure = decrypt.exited_failure()
            if failure is not None:
                raise failure from exc
        if decrypt is not None:
            decrypt.abort()
        raise
    back.pending = memoryview(b"")
    if isinstance(stage, _In):
        while stage.read():
            pass
    else:
        stage.finish()


def _decrypt_of(stage: _In | _Decrypt | _Decompress) -> _Decrypt | None:
    if isinstance(stage, _Decompress):
        stage = stage.src
    return stage if isinstance(stage, _Decrypt) else None


_MEANINGS = (
    ("no identity matched", "the identity does not match any recipient (wrong key)"),
    ("no secret key", "the secret key is not in the gpg keyring (wrong key)"),
    # age authenticates each 64 KiB chunk: a flipped byte and a cut look the same to it.
    ("failed to decrypt and authenticate", "the archive is truncated, tampered with or corrupt"),
    # gpg checks its MDC at the end: a cut or a flipped byte both fail it.
    ("manipulated", "the archive is truncated, tampered with or corrupt"),
    ("problem reading source", "the archive is truncated"),
    ("unexpected eof", "the archive is truncated"),
)


def _explained(stderr: bytes, detail: str) -> str:
    """A tool's failure in the user's words (what it means), then the tool's own."""
    text = stderr.decode("utf-8", "replace").lower()
    for clue, meaning in _MEANINGS:
        if clue in text:
            return f"{meaning}; {detail}"
    return detail
