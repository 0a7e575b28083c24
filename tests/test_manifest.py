"""The b3sum manifest: its lines are b3sum's, byte for byte, and `b3sum --check` accepts it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from blake3 import blake3
from conftest import run_softcopy, tree_files
from test_acquisition import SMALL, simulate

from softcopy.verify.compare import check_manifest
from softcopy.verify.manifest import format_line, parse_line, read_manifest, write_manifest

DIGEST = blake3(b"softcopy").hexdigest()

# Names b3sum 1.2 prints as they are (spaces, CR, Unicode) or escapes (backslash, newline).
NAMES = [
    "plain",
    "two  spaces",
    " leading and trailing ",
    "back\\slash",
    "trailing backslash\\",
    "new\nline",
    "\n",
    "back\\n not a newline",
    "both\\\nmixed",
    "carriage\rreturn",
    "trailing cr\r",
    "unicode µm ß \u2028 \x85 \x0c",
    "sub/dir/file",
]
NON_UTF8 = os.fsdecode(b"raw \xff\xfe bytes")  # surrogateescape: what os.listdir gives


def need_b3sum() -> str:
    b3sum = shutil.which("b3sum")
    if b3sum is None:
        pytest.skip("b3sum is not installed (CI installs the Debian package)")
    return b3sum


def escapes_cr(b3sum: str, tmp_path: Path) -> bool:
    """Newer b3sum releases escape a carriage return (and strip a trailing one in --check);
    1.2 (Debian 12) prints it raw. A name that ends in one suits only one of the two."""
    probe = tmp_path / "probe\r"
    probe.write_bytes(b"")
    try:
        out = subprocess.run([b3sum, probe.name], cwd=tmp_path, capture_output=True, check=True)
    finally:
        probe.unlink()
    return out.stdout.startswith(b"\\")


@pytest.mark.parametrize("key", [*NAMES, NON_UTF8])
def test_line_round_trip(key: str) -> None:
    line = format_line(DIGEST, key)
    assert line.endswith("\n") and line.count("\n") == 1, "a name never breaks the line"
    utf8 = key != NON_UTF8
    assert line.startswith("\\") == ("\\" in key or "\n" in key or not utf8)
    assert parse_line(line) == (DIGEST, key)


def test_manifest_file_round_trip(tmp_path: Path) -> None:
    digests = {key: blake3(key.encode("utf-8", "surrogateescape")).hexdigest() for key in NAMES}
    digests[NON_UTF8] = DIGEST
    path = tmp_path / "manifest.b3"
    own_hash = write_manifest(path, digests)
    data = path.read_bytes()
    assert own_hash == blake3(data).hexdigest()
    assert read_manifest(path) == digests
    data.decode("utf-8")  # b3sum --check reads it: it refuses a file that is not UTF-8
    assert b"raw \\xff\\xfe bytes" in data, "the name's own bytes, escaped, not U+FFFD"
    keys = [
        parse_line(line)[1] for line in data.decode("utf-8", "surrogateescape").split("\n")[:-1]
    ]
    assert keys == sorted(digests), "one line per key, sorted"
    assert not list(tmp_path.glob(".*tmp")), "no temporary left behind"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        f"{DIGEST[:-1]}  short",
        f"{DIGEST.upper()}  upper",
        f"{DIGEST} one space",
        f"{DIGEST}",
        f"z{DIGEST[1:]}  not hex",
    ],
)
def test_malformed_lines_are_rejected(line: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        parse_line(line)
    path = tmp_path / "manifest.b3"
    path.write_text(format_line(DIGEST, "good") + line.rstrip("\n") + "\n")
    if not line.strip():
        assert read_manifest(path) == {"good": DIGEST}, "blank lines are skipped"
        return
    with pytest.raises(ValueError, match=r"manifest\.b3:2: "):
        read_manifest(path)


def _populate(root: Path, names: list[str]) -> dict[str, str]:
    digests = {}
    for n, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = f"file {n}: {name!r}".encode() * (n + 1)
        path.write_bytes(data)
        digests[name] = blake3(data).hexdigest()
    return digests


def test_lines_are_byte_identical_to_b3sum(tmp_path: Path) -> None:
    b3sum = need_b3sum()
    # Where b3sum escapes CR, a CR in the middle of a name is still read raw by its --check
    # (the next test); only the printed bytes differ.
    names = [n for n in NAMES if "\r" not in n] if escapes_cr(b3sum, tmp_path) else NAMES
    digests = _populate(tmp_path, names)
    printed = subprocess.run(
        [b3sum, "--", *names], cwd=tmp_path, capture_output=True, check=True
    ).stdout
    ours = "".join(format_line(digests[name], name) for name in names).encode()
    assert printed == ours


def test_a_carriage_return_escaped_by_newer_b3sum_is_read() -> None:
    assert parse_line(f"\\{DIGEST}  a\\rb\\\\r\\n\n") == (DIGEST, "a\rb\\r\n")


def test_b3sum_check_accepts_a_written_manifest(tmp_path: Path) -> None:
    b3sum = need_b3sum()
    root = tmp_path / "tree"
    root.mkdir()
    names = NAMES
    if escapes_cr(b3sum, root):  # and strips a trailing CR from every line it checks
        names = [n for n in NAMES if not n.endswith("\r")]
    digests = _populate(root, names)
    manifest = tmp_path / "manifest.b3"
    write_manifest(manifest, digests)
    check = subprocess.run([b3sum, "--check", manifest], cwd=root, capture_output=True)
    assert check.returncode == 0, check
    assert check.stdout.count(b": OK\n") == len(names)
    # And it fails when it should: one byte changed under an escaped name.
    path = root / "both\\\nmixed"
    path.write_bytes(b"X" + path.read_bytes()[1:])
    check = subprocess.run([b3sum, "--check", manifest], cwd=root, capture_output=True)
    assert check.returncode == 1
    assert b"\\both\\\\\\nmixed: FAILED\n" in check.stdout


def test_a_non_utf8_name_is_checked_by_softcopy(tmp_path: Path) -> None:
    """b3sum cannot check such a name (it prints U+FFFD); softcopy keeps the real bytes."""
    root = tmp_path / "tree"
    digests = _populate(root, ["plain", NON_UTF8])
    manifest = tmp_path / "manifest.b3"
    write_manifest(manifest, digests)
    assert check_manifest(str(root), read_manifest(manifest)).ok
    path = root / NON_UTF8
    path.write_bytes(b"X" + path.read_bytes()[1:])
    findings = check_manifest(str(root), read_manifest(manifest)).findings
    assert [(f.kind, f.key) for f in findings] == [("content", NON_UTF8)]


ODD = "notes\\from the\nmicroscope\r.txt"  # needs b3sum's escaping


@pytest.fixture(scope="module")
def hashed_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("hashed")
    src, dst = base / "src.zarr", base / "dst.zarr"
    simulate(src, SMALL)
    (src / ODD).write_text("operator's notes\n")
    os.symlink("zarr.json", src / "metadata-link")  # copied as a link, not in the manifest
    result = run_softcopy("copy", "--hash", src, dst)
    assert result.returncode == 0, result.stderr
    return src, dst


@pytest.fixture
def copied(hashed_copy: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    """This test's own copy and sidecar (source, destination, manifest)."""
    src, dst = hashed_copy
    mine = tmp_path / "dst.zarr"
    shutil.copytree(dst, mine, symlinks=True)
    shutil.copytree(f"{dst}.softcopy", tmp_path / "dst.zarr.softcopy")
    return src, mine, tmp_path / "dst.zarr.softcopy" / "manifest.b3"


def regular_files(root: Path) -> set[str]:
    return {k for k in tree_files(root) if not os.path.islink(root / k)}


def test_b3sum_check_accepts_the_manifest_of_a_hashed_copy(
    copied: tuple[Path, Path, Path],
) -> None:
    b3sum = need_b3sum()
    _, dst, manifest = copied
    assert set(read_manifest(manifest)) == regular_files(dst)
    line = format_line(blake3((dst / ODD).read_bytes()).hexdigest(), ODD)
    assert line.startswith("\\") and line.encode() in manifest.read_bytes()
    relative = Path("..", manifest.parent.name, manifest.name)  # as the issue has it
    check = subprocess.run([b3sum, "--check", relative], cwd=dst, capture_output=True)
    assert check.returncode == 0, check
    assert check.stdout.count(b": OK\n") == len(regular_files(dst))
    key = sorted(k for k in regular_files(dst) if k.startswith("c/"))[4]
    (dst / key).write_bytes(b"\x00" + (dst / key).read_bytes()[1:])
    check = subprocess.run([b3sum, "--check", relative], cwd=dst, capture_output=True)
    assert check.returncode == 1 and f"{key}: FAILED\n".encode() in check.stdout


def verify(*args: object) -> tuple[int, list[str], str]:
    result = run_softcopy("verify", *args)
    return result.returncode, result.stdout.splitlines(), result.stderr


def test_verify_destination_alone_uses_the_sidecar_manifest(
    copied: tuple[Path, Path, Path],
) -> None:
    _, dst, _ = copied
    rc, out, err = verify(dst)
    assert rc == 0, f"{out}\n{err}"
    assert out[0].startswith(f"identical: {len(regular_files(dst))} files")
    assert "against the manifest" in out[0]
    key = sorted(k for k in regular_files(dst) if k.startswith("c/"))[2]
    path = dst / key
    original = path.read_bytes()
    st = path.stat()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0x80]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    rc, out, _ = verify(dst)
    assert rc == 1
    assert len(out) == 1 and out[0].startswith(f"content differs: {key} "), out
    path.write_bytes(original)
    gone = sorted(k for k in regular_files(dst) if k.startswith("c/"))[-1]
    (dst / gone).unlink()
    rc, out, _ = verify(dst)
    assert rc == 1
    assert len(out) == 1 and out[0].startswith(f"missing: {gone}"), out


def test_verify_with_a_kept_manifest_after_the_source_is_gone(
    copied: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    src, dst, manifest = copied
    kept = tmp_path / "archive" / "run42.b3"
    kept.parent.mkdir()
    shutil.copy(manifest, kept)
    shutil.rmtree(manifest.parent)
    shutil.rmtree(src)  # months later: the instrument's disk was freed
    rc, out, err = verify(dst, "--manifest", kept)
    assert rc == 0, f"{out}\n{err}"
    (dst / ODD).write_text("edited\n")
    rc, out, _ = verify(dst, "--manifest", kept)
    assert rc == 1, out
    assert len(out) == 1, "one line per finding, whatever the name"
    assert out[0].startswith("content differs: notes\\\\from the\\nmicroscope\\r.txt "), out
