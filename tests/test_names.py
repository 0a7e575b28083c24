"""File names are bytes: any name the filesystem allows is copied, shown, logged, put in
JSON, written to the manifest and verified, and none breaks a line of output."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from blake3 import blake3
from conftest import assert_same_tree, run_softcopy
from hypothesis import given
from hypothesis import strategies as st

from softcopy.names import json_record, name_from_json, safe_text, shown
from softcopy.sinks.local import NAME_MAX, temp_name
from softcopy.sources.scan import is_temporary
from softcopy.verify.compare import check_manifest
from softcopy.verify.manifest import format_line, parse_line, read_manifest, write_manifest

DIGEST = blake3(b"softcopy").hexdigest()


def fsname(raw: bytes) -> str:
    return os.fsdecode(raw)


# A basename: any bytes but "/" and NUL, at most NAME_MAX of them.
basenames = st.binary(min_size=1, max_size=NAME_MAX).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


def unshown(text: str) -> bytes:
    """The inverse of `shown`, as bytes: proves no two names show the same."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        kind = text[i + 1]
        if kind in "\\nrt":
            out += {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t"}[kind]
            i += 2
        elif kind == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            width = 4 if kind == "u" else 8
            out += chr(int(text[i + 2 : i + 2 + width], 16)).encode()
            i += 2 + width
    return bytes(out)


# ---- shown: one line, printable, unambiguous --------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"plain.txt", "plain.txt"),
        (b"caf\xe9", "caf\\xe9"),
        (b"\xff\xfe", "\\xff\\xfe"),
        (b"new\nline", "new\\nline"),
        (b"cr\rtab\t", "cr\\rtab\\t"),
        (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        (b"back\\slash", "back\\\\slash"),
        (b"  leading", "  leading"),
        (b"-dash", "-dash"),
        ("µm ß".encode(), "µm ß"),
        ("nel\x85".encode(), "nel\\u0085"),  # a C1 control, not the raw byte 0x85
        (b"nel\x85", "nel\\x85"),
        ("line\u2028sep".encode(), "line\\u2028sep"),
        (b"del\x7f", "del\\x7f"),
    ],
)
def test_shown(raw: bytes, expected: str) -> None:
    assert shown(fsname(raw)) == expected
    assert unshown(expected) == raw


@given(basenames)
def test_shown_is_printable_and_one_to_one(raw: bytes) -> None:
    text = shown(fsname(raw))
    assert text.isprintable() and "\n" not in text
    text.encode("utf-8")  # strict: never a lone surrogate
    assert unshown(text) == raw


@given(basenames)
def test_safe_text_is_printable_and_leaves_shown_names_alone(raw: bytes) -> None:
    name = fsname(raw)
    assert safe_text(name).isprintable()
    assert safe_text(f"cannot copy {shown(name)}: denied") == f"cannot copy {shown(name)}: denied"


# ---- JSON: strict, and the exact name comes back -----------------------------------------


@given(st.lists(basenames, min_size=1, max_size=4))
def test_json_records_are_strict_and_give_the_names_back(raws: list[bytes]) -> None:
    names = [fsname(r) for r in raws]
    record = {"key": names[0], "failures": {n: f"cannot read {n}" for n in names}, "n": 1}
    line = json.dumps(json_record(record))
    line.encode("ascii")
    assert not re.search(r"\\ud[89a-f]", line), "no lone surrogate escapes: strict JSON"
    back = json.loads(line)
    assert name_from_json(back, back["key"]) == names[0]
    assert sorted(name_from_json(back, k) for k in back["failures"]) == sorted(set(names))


def test_a_utf8_record_is_unchanged() -> None:
    record = {"key": "new\nline µm", "findings": [{"key": "x"}]}
    assert json_record(record) == record


# ---- the manifest --------------------------------------------------------------------------


@given(st.lists(basenames, min_size=1, max_size=3))
def test_manifest_lines_round_trip_any_name(raws: list[bytes]) -> None:
    key = "/".join(fsname(r) for r in raws)
    line = format_line(DIGEST, key)
    line.encode("utf-8")  # strict: a manifest b3sum --check can read
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_line(line) == (DIGEST, key)


def need_b3sum() -> str:
    b3sum = shutil.which("b3sum")
    if b3sum is None:
        pytest.skip("b3sum is not installed (CI installs the Debian package)")
    return b3sum


NON_UTF8 = [fsname(b"caf\xe9"), fsname(b"\xff\xfe"), fsname(b"back\\sl\xe9\nx")]


def test_b3sum_checks_every_other_file_of_a_manifest_with_non_utf8_names(
    tmp_path: Path,
) -> None:
    """b3sum can print no line that its --check accepts for a name that is not UTF-8 (it
    writes U+FFFD, then refuses it). A manifest holding one must not stop it from checking
    the rest (a file that is not UTF-8 text makes it check nothing at all), and softcopy
    checks the whole of it."""
    b3sum = need_b3sum()
    root = tmp_path / "tree"
    root.mkdir()
    good = ["plain", "back\\slash", "new\nline", "  leading", "-dash", "ünï"]
    digests = {}
    for n, name in enumerate(good + NON_UTF8):
        data = f"file {n}".encode()
        (root / name).write_bytes(data)
        digests[name] = blake3(data).hexdigest()
    manifest = tmp_path / "manifest.b3"
    write_manifest(manifest, digests)
    check = subprocess.run([b3sum, "--check", manifest], cwd=root, capture_output=True)
    assert check.stdout.count(b": OK\n") == len(good), check
    assert b"FAILED" not in check.stdout
    assert check.stderr.count(b"b3sum: ") == len(NON_UTF8), check.stderr
    assert check.returncode == 1, "b3sum cannot vouch for those names"
    assert check_manifest(str(root), read_manifest(manifest)).ok
    # Manifests of names b3sum can print pass b3sum whole, byte-identical to its own.
    only_good = tmp_path / "good.b3"
    write_manifest(only_good, {k: digests[k] for k in good})
    check = subprocess.run([b3sum, "--check", only_good], cwd=root, capture_output=True)
    assert check.returncode == 0, check
    printed = subprocess.run(
        [b3sum, "--", *sorted(good)], cwd=root, capture_output=True, check=True
    ).stdout
    assert printed == only_good.read_bytes()


# ---- temporary names of long names ---------------------------------------------------------

LONG = [
    "a" * 255,
    "é" * 127 + "a",  # 255 bytes in 128 characters
    "€" * 85,  # 255 bytes of three-byte characters
    fsname(b"\xe9" * 255),
    "x" * 241,  # the longest name whose temporary name is the plain prefix + name
    "x" * 242,
]


@pytest.mark.parametrize("name", LONG, ids=lambda n: f"{len(os.fsencode(n))}B")
def test_a_temporary_name_fits_whatever_the_name(name: str) -> None:
    tmp = temp_name(name)
    assert len(os.fsencode(tmp)) <= NAME_MAX
    assert is_temporary(tmp)
    assert temp_name(name) == tmp, "stable: a retry overwrites the same temporary file"


@given(basenames, basenames)
def test_temporary_names_are_one_to_one(a: bytes, b: bytes) -> None:
    ta, tb = temp_name(fsname(a)), temp_name(fsname(b))
    assert len(os.fsencode(ta)) <= NAME_MAX and is_temporary(ta)
    assert (ta == tb) == (a == b)


def test_a_short_name_that_looks_hashed_does_not_share_a_temporary_file() -> None:
    long = "z" * 250
    digest_form = temp_name(long)[len(".softcopy-tmp.") :]
    assert temp_name(digest_form) != temp_name(long)


# ---- end to end: the real CLI ----------------------------------------------------------------

HOSTILE = [
    b"caf\xe9",
    b"\xff\xfe",
    b"new\nline",
    b"back\\slash",
    b"  leading spaces",
    b"-dash-leading",
    b"--help",
    b"\x1b]0;title\x07\x1b[31mred",
    b"cr\rin the middle",
    b"notes.partial",  # zarr-python's temporaries end in .<32 hex>.partial
    b"a.__lock.txt",  # tensorstore's end in .__lock
    b"softcopy-tmp.x",
    b".softcopy-tmp",
    b"0123456789abcdef0123456789abcdef.partial.bak",
    b"a" * 255,
    "é".encode() * 127 + b"a",
    "€".encode() * 85,
    b"\xe9" * 255,
    b"sub\xff/inner\xfe",
    "dir µm/nested\n/file".encode(),
]


def _make(root: Path, raws: list[bytes]) -> None:
    for n, raw in enumerate(raws):
        path = os.path.join(os.fsencode(root), raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"content %d of %r\n" % (n, raw))


def _raw_output_is_clean(text: str) -> None:
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    text.encode("utf-8")  # no raw byte of a name reached the terminal
    assert "Traceback" not in text


def test_any_name_is_copied_hashed_verified_and_shown(tmp_path: Path) -> None:
    """Needs the journal to store names as bytes too: it fails there until it does."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make(src, HOSTILE)
    result = run_softcopy(
        "copy", "--kind", "directory", "--hash", "--idle-timeout", "0.5", "--ready-age", "0",
        "--no-progress", "--json", src, dst,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _raw_output_is_clean(result.stderr)
    assert_same_tree(src, dst)
    assert not [k for k in os.listdir(dst) if k.startswith(".softcopy-tmp.")]
    for line in result.stdout.splitlines():
        assert not re.search(r"\\ud[89a-f]", line), line  # strict JSON: no lone surrogate
        json.loads(line)
    manifest = tmp_path / "dst.softcopy" / "manifest.b3"
    expected = {os.path.relpath(os.fsdecode(p), src) for p in _files(os.fsencode(src))}
    assert set(read_manifest(manifest)) == expected
    check = run_softcopy("verify", dst)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"identical: {len(HOSTILE)} files")


def _files(root: bytes) -> list[bytes]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def test_findings_and_events_show_hostile_names_escaped(tmp_path: Path) -> None:
    """A foreign destination file with a hostile name is a finding: the summary lines show
    it escaped on one line, the JSON event gives its exact bytes back."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make(src, [b"data"])
    evil = [b"evil\x1b]0;pwned\x07\nforged: line", b"raw \xff"]
    _make(dst, evil)
    _make(dst, [b"data"])  # the source's file too: a copy by other means, not a folder to fill
    args = ("copy", "--kind", "directory", "--idle-timeout", "0.5", "--ready-age", "0",
            "--no-progress", "--json", src, dst)  # fmt: skip
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    # Met for the first time with files the source lacks: refused, the names escaped.
    refused = run_softcopy(*args, env=env)
    assert refused.returncode == 2, refused.stderr
    _raw_output_is_clean(refused.stderr)
    assert "evil\\x1b]0;pwned\\x07\\nforged: line" in refused.stderr, refused.stderr
    # Met before (a copy of `data` alone), the same files are findings of the copy.
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for name in evil:
        os.rename(os.path.join(os.fsencode(dst), name), os.path.join(os.fsencode(hidden), name))
    assert run_softcopy(*args, env=env).returncode == 0
    for name in evil:
        os.rename(os.path.join(os.fsencode(hidden), name), os.path.join(os.fsencode(dst), name))
    result = run_softcopy(*args, env=env)
    assert result.returncode == 1, result.stderr
    _raw_output_is_clean(result.stderr)
    assert "  extra: evil\\x1b]0;pwned\\x07\\nforged: line (in the destination" in result.stderr
    assert "  extra: raw \\xff (in the destination" in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    found = {name_from_json(e, e["key"]) for e in events if e["event"] == "finding"}
    assert found == {fsname(r) for r in evil}
    assert not any(re.search(r"\\ud[89a-f]", line) for line in result.stdout.splitlines())


def test_a_rerun_trusts_every_name_the_journal_recorded(tmp_path: Path) -> None:
    """A rerun matches the destination with the journal a directory's names at a time
    (names that are not UTF-8 are stored as bytes): every file is already there, none is
    copied or compared again, and verification passes."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make(src, HOSTILE)
    args = ("copy", "--kind", "directory", "--idle-timeout", "0.5", "--ready-age", "0",
            "--no-progress", "--json", src, dst)  # fmt: skip
    assert run_softcopy(*args).returncode == 0
    again = run_softcopy(*args)
    assert again.returncode == 0, again.stderr
    summary = [json.loads(line) for line in again.stdout.splitlines()][-1]
    assert summary["files_copied"] == 0, summary
    assert summary["files_already_there"] == len(HOSTILE), summary
    assert_same_tree(src, dst)
