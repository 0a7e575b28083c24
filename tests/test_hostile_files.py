"""Files a user hands softcopy that are not what they should be: a targets file or a
manifest that is not UTF-8, a FIFO, a device, a directory, or far too large. Each is a
one-paragraph error naming the file (exit 2), at once: no hang, no traceback, no memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from blake3 import blake3
from conftest import run_softcopy

from softcopy.errors import ConfigError
from softcopy.verify.manifest import MAX_LINE, format_line, read_manifest

# A bound on a hang: each of these answers at once when it works.
QUICK = 30.0


def _fails_cleanly(result, path: Path, problem: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and problem in lines[0], lines[0]


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def test_a_targets_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_bytes(b"targets:\n  - source: caf\xe9\n    destination: out\n")
    result = run_softcopy("run", path, timeout=QUICK)
    _fails_cleanly(result, path, "is not UTF-8 text (byte 24 is b'\\xe9')")


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("fifo", "it is a FIFO (named pipe), not a regular file"),
        ("device", "it is a character device, not a regular file"),
        ("directory", "it is a directory, not a regular file"),
        ("huge", "it is larger than 4 MiB, too large for a targets file"),
    ],
)
def test_a_targets_file_that_is_not_a_targets_file(tmp_path: Path, kind: str, problem: str) -> None:
    if kind == "fifo":
        path = _fifo(tmp_path)
    elif kind == "device":
        path = Path(os.devnull)
    elif kind == "directory":
        path = tmp_path
    else:
        path = tmp_path / "huge.yaml"
        with open(path, "wb") as f:
            f.truncate(64 << 20)  # sparse: costs no disk, would cost memory
    result = run_softcopy("run", path, timeout=QUICK)
    _fails_cleanly(result, path, problem)


def test_a_missing_targets_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    _fails_cleanly(run_softcopy("run", path, timeout=QUICK), path, "No such file or directory")


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("fifo", "it is a FIFO (named pipe), not a regular file"),
        ("zero", "it is a character device, not a regular file"),
        ("long line", f"line longer than {MAX_LINE} bytes"),
    ],
)
def test_a_manifest_that_is_not_a_manifest(tmp_path: Path, kind: str, problem: str) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    if kind == "fifo":
        path = _fifo(tmp_path)
    elif kind == "zero":
        path = Path("/dev/zero")  # endless, and one endless line: memory, without the check
        if not path.exists():
            pytest.skip("no /dev/zero")
    else:
        path = tmp_path / "manifest.b3"
        with open(path, "wb") as f:
            f.truncate(256 << 20)  # sparse zeros: one line as long as the file
    result = run_softcopy("verify", dst, "--manifest", path, timeout=QUICK)
    _fails_cleanly(result, path, problem)


def test_a_missing_sidecar_manifest_says_what_to_do(tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    result = run_softcopy("verify", dst, timeout=QUICK)
    _fails_cleanly(result, tmp_path / "dst.softcopy" / "manifest.b3", "copies made with --hash")


def test_a_manifest_line_at_the_longest_key_is_read(tmp_path: Path) -> None:
    """The bound is above anything softcopy writes: a 4096-byte key of raw bytes."""
    key = "/".join([os.fsdecode(b"\xff" * 200)] * 20)
    digest = blake3(b"").hexdigest()
    line = format_line(digest, key)
    assert len(line.encode()) <= MAX_LINE
    path = tmp_path / "manifest.b3"
    path.write_text(line)
    assert read_manifest(path) == {key: digest}


def test_an_old_manifest_with_raw_bytes_is_still_read(tmp_path: Path) -> None:
    """Manifests written before names were escaped held a name's raw bytes."""
    digest = blake3(b"x").hexdigest()
    path = tmp_path / "manifest.b3"
    path.write_bytes(digest.encode() + b"  caf\xe9\n")
    assert read_manifest(path) == {os.fsdecode(b"caf\xe9"): digest}


def test_read_manifest_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FIFO"):
        read_manifest(_fifo(tmp_path))
