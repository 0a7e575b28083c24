"""`copy --hash`: BLAKE3 while copying, the manifest, the certificate a cleanup script trusts."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from blake3 import blake3
from conftest import (
    assert_same_tree,
    finish,
    met_before,
    run_softcopy,
    start_softcopy,
    tree_files,
    wait_for,
)
from test_acquisition import SMALL, assert_arrays_read_back, simulate

import softcopy
from softcopy.sources.scan import Version, version_of
from softcopy.verify.compare import compare_trees
from softcopy.verify.manifest import read_manifest

LIVE = ("--settle", "600", "--scan-interval", "600")  # finishes only on the marker


def sidecar(dst: Path) -> Path:
    return dst.parent / f"{dst.name}.softcopy"


def certificate(dst: Path) -> dict:
    return json.loads((sidecar(dst) / "certificate.json").read_text())


def regular_files(root: Path) -> dict[str, int]:
    return {k: n for k, n in tree_files(root).items() if not os.path.islink(root / k)}


def chunk_keys(root: Path) -> list[str]:
    return sorted(k for k in regular_files(root) if k.startswith("c/"))


def b3(path: Path) -> str:
    return blake3(path.read_bytes()).hexdigest()


def test_certificate_of_a_hashed_copy(tmp_path: Path) -> None:
    spec = replace(SMALL, holes=0.3)
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, spec)
    result = run_softcopy("copy", "--hash", src, dst)
    assert result.returncode == 0, result.stderr
    assert_same_tree(src, dst)
    assert_arrays_read_back(dst, spec)

    cert = certificate(dst)
    files = regular_files(dst)
    assert cert["verification"] == "blake3"
    assert (cert["source"], cert["destination"]) == (str(src), str(dst))
    assert cert["softcopy_version"] == softcopy.__version__
    assert cert["files"] == len(files)
    assert cert["bytes"] == sum(files.values())
    assert cert["files_deleted_during_acquisition"] == 0
    meta = json.loads((dst / "zarr.json").read_text())
    grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
    expected = math.prod(math.ceil(n / c) for n, c in zip(meta["shape"], grid, strict=True))
    present = len(chunk_keys(dst))
    assert cert["chunks_expected"] == expected
    assert cert["chunks_absent"] == expected - present > 0, "holes are absent, not missing"
    started, finished = (datetime.fromisoformat(cert[k]) for k in ("started", "finished"))
    assert started <= finished

    manifest = sidecar(dst) / cert["manifest"]
    assert cert["manifest_blake3"] == b3(manifest)
    assert read_manifest(manifest) == {key: b3(dst / key) for key in files}


def test_certificate_of_a_copy_by_sizes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    cert = certificate(dst)
    assert cert["verification"] == "sizes"
    assert cert["manifest"] is None and cert["manifest_blake3"] is None
    assert not (sidecar(dst) / "manifest.b3").exists()
    # The same counts as with --hash: every regular file, the marker included.
    assert cert["files"] == len(regular_files(dst))
    assert cert["bytes"] == sum(regular_files(dst).values())
    assert cert["chunks_absent"] == 0 and cert["chunks_expected"] == len(chunk_keys(dst))


def test_no_certificate_when_verification_failed(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    dst.mkdir()
    (dst / "notes.txt").write_text("someone else's file")  # foreign: never deleted
    met_before(dst)  # and copied into before: the file is a finding, not a refusal
    # Beside a file of the source: a copy made by other means, not a folder to copy into.
    meta = next(p for p in sorted(src.iterdir()) if p.is_file() and p.name != "complete")
    (dst / meta.name).write_bytes(meta.read_bytes())
    result = run_softcopy("copy", "--hash", src, dst)
    assert result.returncode == 1, result.stderr
    assert "  extra: notes.txt (in the destination, not in the source)" in result.stdout
    assert not (sidecar(dst) / "certificate.json").exists()
    assert not (sidecar(dst) / "manifest.b3").exists()
    assert not (dst / "complete").exists()


def test_a_stale_certificate_goes_as_soon_as_a_new_run_starts(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    first = run_softcopy("copy", "--hash", "--settle", "0.3", src, dst)
    assert first.returncode == 0, first.stderr
    cert = sidecar(dst) / "certificate.json"
    assert cert.exists() and (sidecar(dst) / "manifest.b3").exists()
    # The writer goes on (softcopy cannot know yet): a new run must withdraw the promise.
    proc = start_softcopy("copy", "--hash", src, dst, *LIVE)
    # Both go at the start of the run, the certificate first: wait for both.
    wait_for(
        lambda: not cert.exists() and not (sidecar(dst) / "manifest.b3").exists(),
        timeout=30,
        what="the stale certificate and manifest to go",
        proc=proc,
    )
    assert proc.poll() is None, "the run is still going, with no certificate"
    (src / "complete").touch()
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert certificate(dst)["finished_because"] == "the source has a 'complete' marker"


def _live_copy(tmp_path: Path) -> tuple[Path, Path, object]:
    """A hashed copy that has copied everything but is still waiting for the writer."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    proc = start_softcopy("copy", "--hash", src, dst, *LIVE)
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the copy", proc=proc)
    assert proc.poll() is None
    return src, dst, proc


def _flip_in_place(path: Path) -> None:
    """One bit changed, size, inode and mtime kept (restored before close): no quick check
    by size or time can notice (only ctime moves, which no check of the destination uses)."""
    fd = os.open(path, os.O_RDWR)
    try:
        st = os.fstat(fd)
        byte = os.pread(fd, 1, st.st_size // 2)
        os.pwrite(fd, bytes([byte[0] ^ 0x10]), st.st_size // 2)
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fd)
    assert version_of(os.stat(path))[:3] == version_of(st)[:3]


def test_a_flipped_byte_at_the_destination_is_found_before_done(tmp_path: Path) -> None:
    src, dst, proc = _live_copy(tmp_path)
    key = chunk_keys(dst)[6]
    _flip_in_place(dst / key)
    (src / "complete").touch()
    rc, out, err = finish(proc)
    assert rc == 1, f"reported done with a corrupt destination:\n{out}\n{err}"
    line = f"  content differs: {key} source {b3(src / key)[:16]} destination {b3(dst / key)[:16]}"
    assert line in out.splitlines(), out
    assert "failed:" in out and "done:" not in out
    assert not (sidecar(dst) / "certificate.json").exists()
    assert not (sidecar(dst) / "manifest.b3").exists()
    assert not (dst / "complete").exists()


def test_an_in_place_rewrite_with_its_mtime_restored_is_copied_again(tmp_path: Path) -> None:
    """A change to the source that keeps size, mtime and inode after it was copied (the
    hardening review's torn file that --hash passed) still moves ctime: it is a new
    version, copied again, and the manifest holds the new content's digest. (That the
    source is read once, and its digest trusted for its version, is the next test's.)"""
    src, dst, proc = _live_copy(tmp_path)
    key = chunk_keys(src)[3]
    _flip_in_place(src / key)
    (src / "complete").touch()
    rc, out, err = finish(proc)
    assert rc == 0, f"{out}\n{err}"
    assert certificate(dst)["verification"] == "blake3"
    assert read_manifest(sidecar(dst) / "manifest.b3")[key] == b3(dst / key) == b3(src / key)
    assert run_softcopy("verify", "--hash", src, dst).returncode == 0


def test_known_digests_are_trusted_only_for_the_version_they_belong_to(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for root in (src, dst):
        (root / "c").mkdir(parents=True)
        (root / "c" / "0").write_bytes(b"chunk zero" * 100)
        (root / "c" / "1").write_bytes(b"chunk one" * 100)
    now = version_of(os.lstat(src / "c" / "0"))
    wrong = blake3(b"something else").hexdigest()

    def findings(known: dict[str, tuple[Version, str]]) -> list[tuple[str, str]]:
        result = compare_trees(str(src), str(dst), hashes=True, known=known)
        return [(f.kind, f.key) for f in result.findings]

    assert findings({}) == []
    # Trusted for the current version: the source is not read, so the wrong digest shows.
    assert findings({"c/0": (now, wrong)}) == [("content", "c/0")]
    # For any other version it is stale: ignored, and the source is hashed instead.
    for stale in (now._replace(mtime_ns=now.mtime_ns - 1), now._replace(ino=now.ino + 1)):
        assert findings({"c/0": (stale, wrong)}) == []
    result = compare_trees(str(src), str(dst), hashes=True, known={})
    assert result.digests == {k: b3(dst / k) for k in ("c/0", "c/1")}


def test_digests_read_back_during_the_copy_count_only_for_the_files_read(tmp_path: Path) -> None:
    """--hash reads the copy back after each checkpoint (verify/early.py); verification
    uses such a digest only while both the destination file and its source are as they
    were then, and reads everything else from the device itself."""
    from softcopy.verify.early import EarlyRead, EarlyReads

    src, dst = tmp_path / "src", tmp_path / "dst"
    for root in (src, dst):
        (root / "c").mkdir(parents=True)
        (root / "c" / "0").write_bytes(b"chunk zero" * 100)
        (root / "c" / "1").write_bytes(b"chunk one" * 100)
    here = version_of(os.lstat(src / "c" / "0"))
    reads = EarlyReads(str(dst), workers=2)
    reads.read(
        [("c/0", here, ""), ("c/1", version_of(os.lstat(src / "c" / "1")), ""), ("gone", here, "")]
    )
    early = reads.take()
    assert set(early) == {"c/0", "c/1"}  # a file that is not there is left to verification
    assert early["c/0"] == EarlyRead(
        version_of(os.lstat(dst / "c" / "0")), here, b3(dst / "c" / "0")
    )

    def findings(early: dict[str, EarlyRead]) -> list[tuple[str, str]]:
        result = compare_trees(str(src), str(dst), hashes=True, early=early)
        return [(f.kind, f.key) for f in result.findings]

    assert findings(early) == []
    wrong = blake3(b"something else").hexdigest()
    # Used as read: the destination is not read again, so a wrong digest shows.
    assert findings({"c/0": early["c/0"]._replace(digest=wrong)}) == [("content", "c/0")]
    # The destination file changed since (here: another ctime), or the source did: ignored.
    there = early["c/0"].destination
    for stale in (
        early["c/0"]._replace(
            digest=wrong, destination=there._replace(ctime_ns=there.ctime_ns - 1)
        ),
        early["c/0"]._replace(digest=wrong, source=here._replace(ino=here.ino + 1)),
    ):
        assert findings({"c/0": stale}) == []
