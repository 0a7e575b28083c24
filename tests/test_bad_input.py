"""Bad input at the command line: the right exit code, one clear message, nothing touched.

Every case runs the real CLI in a subprocess and checks that
  * the exit code is 2 for usage, configuration and metadata problems, 1 for copy failures;
  * stderr holds exactly one error paragraph, naming the path, and no traceback;
  * the source (here: the whole test directory) is exactly as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import finish, run_softcopy, softcopy_cmd, start_softcopy, wait_for

import softcopy

ZARRAY = {"zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "<u2", "fill_value": 0}
ZARR_JSON = {
    "zarr_format": 3,
    "node_type": "array",
    "shape": [4],
    "data_type": "uint16",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
    "chunk_key_encoding": {"name": "default"},
    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    "fill_value": 0,
}


def make_array(path: Path, chunks: tuple[str, ...] = ("0", "1"), meta: dict = ZARRAY) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / ".zarray").write_text(json.dumps(meta))
    for key in chunks:
        (path / key).write_bytes(key.encode() * 4)
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry below root (root included): mode, size, mtime_ns, inode; links not followed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return found


def assert_one_error(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    paragraphs = [p for p in stderr.strip().split("\n\n") if p.strip()]
    assert len(paragraphs) == 1, stderr
    assert paragraphs[0].startswith("softcopy: error: "), stderr
    assert stderr.count("softcopy: error:") == 1, stderr
    for needle in needles:
        assert needle in stderr, f"{needle!r} not in {stderr!r}"


# ---- one case per kind of bad input ------------------------------------------------------------
# Each builds its files below `t` and returns (softcopy arguments, exit code, needles).

Case = tuple[list[object], int, list[str]]


def missing_source(t: Path) -> Case:
    return ["copy", t / "missing.zarr", t / "copy"], 2, [f"{t}/missing.zarr", "does not exist"]


def source_is_a_file(t: Path) -> Case:
    (t / "file.zarr").write_bytes(b"not a directory")
    return ["copy", t / "file.zarr", t / "copy"], 2, [f"{t}/file.zarr", "not a directory"]


def no_zarr_metadata(t: Path) -> Case:
    (t / "plain").mkdir()
    (t / "plain" / "0").write_bytes(b"data")
    (t / "plain" / ".zattrs").write_text("{}")  # attributes alone make no zarr node
    return ["copy", t / "plain", t / "copy"], 2, [f"{t}/plain", "holds no zarr metadata"]


def zarray_not_json(t: Path) -> Case:
    make_array(t / "a.zarr")
    (t / "a.zarr" / ".zarray").write_text('{"zarr_format": 2, "shape": [4')
    return ["copy", t / "a.zarr", t / "copy"], 2, [f"{t}/a.zarr/.zarray", "not valid JSON"]


def zarr_json_wrong_field(t: Path) -> Case:
    meta = json.loads(json.dumps(ZARR_JSON))
    meta["chunk_grid"]["configuration"]["chunk_shape"] = [0]
    (t / "a.zarr").mkdir()
    (t / "a.zarr" / "zarr.json").write_text(json.dumps(meta))
    return (
        ["copy", t / "a.zarr", t / "copy"],
        2,
        [f"{t}/a.zarr/zarr.json", "chunk_shape", "integers >= 1", "[0]"],
    )


def destination_inside_source(t: Path) -> Case:
    make_array(t / "a.zarr")
    return (
        ["copy", t / "a.zarr", t / "a.zarr" / "copy"],
        2,
        [f"{t}/a.zarr/copy", "inside the source"],
    )


def source_inside_destination(t: Path) -> Case:
    make_array(t / "outer" / "inner.zarr")
    return (
        ["copy", t / "outer" / "inner.zarr", t / "outer"],
        2,
        [f"{t}/outer/inner.zarr", "inside the destination"],
    )


def destination_is_source(t: Path) -> Case:
    make_array(t / "a.zarr")
    return ["copy", t / "a.zarr", f"{t}/./a.zarr/"], 2, [f"{t}/a.zarr", "the source itself"]


def destination_is_source_through_a_link(t: Path) -> Case:
    make_array(t / "a.zarr")
    (t / "alias").symlink_to(t / "a.zarr")
    return ["copy", t / "a.zarr", t / "alias"], 2, [f"{t}/alias", "the source itself"]


def destination_is_a_file(t: Path) -> Case:
    make_array(t / "a.zarr")
    (t / "copy").write_bytes(b"someone's file")
    return ["copy", t / "a.zarr", t / "copy"], 2, [f"{t}/copy", "not a directory"]


def targets_file_missing(t: Path) -> Case:
    return ["run", t / "targets.yaml"], 2, [f"{t}/targets.yaml", "No such file"]


def targets_file_not_yaml(t: Path) -> Case:
    make_array(t / "a.zarr")
    (t / "targets.yaml").write_text("targets: [\n  - {source: a.zarr, destination: copy\n")
    return ["run", t / "targets.yaml"], 2, [f"{t}/targets.yaml", "not valid YAML"]


def targets_file_unknown_option(t: Path) -> Case:
    make_array(t / "a.zarr")
    (t / "targets.yaml").write_text(
        "targets:\n  - {source: a.zarr, destination: copy, n_procs: 4}\n"
    )
    return (
        ["run", t / "targets.yaml"],
        2,
        [f"{t}/targets.yaml", "targets[0].n_procs", "unknown option"],
    )


def targets_file_bad_value(t: Path) -> Case:
    make_array(t / "a.zarr")
    make_array(t / "b.zarr")
    (t / "targets.yaml").write_text(
        "targets:\n"
        "  - {source: a.zarr, destination: copy-a}\n"
        "  - {source: b.zarr, destination: copy-b, nprocs: zero}\n"
    )
    return (
        ["run", t / "targets.yaml"],
        2,
        [f"{t}/targets.yaml", "targets[1].nprocs", "'zero' is not a whole number"],
    )


def targets_file_overlapping_destinations(t: Path) -> Case:
    make_array(t / "a.zarr")
    make_array(t / "b.zarr")
    (t / "targets.yaml").write_text(
        "targets:\n"
        "  - {source: a.zarr, destination: copies}\n"
        "  - {source: b.zarr, destination: copies/b.zarr}\n"
    )
    return (
        ["run", t / "targets.yaml"],
        2,
        [f"{t}/targets.yaml", "targets[1].destination", "overlaps targets[0]"],
    )


CASES = [
    missing_source,
    source_is_a_file,
    no_zarr_metadata,
    zarray_not_json,
    zarr_json_wrong_field,
    destination_inside_source,
    source_inside_destination,
    destination_is_source,
    destination_is_source_through_a_link,
    destination_is_a_file,
    targets_file_missing,
    targets_file_not_yaml,
    targets_file_unknown_option,
    targets_file_bad_value,
    targets_file_overlapping_destinations,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_clear_error_and_touches_nothing(
    tmp_path: Path, case: Callable[[Path], Case]
) -> None:
    t = tmp_path / "work"
    t.mkdir()
    args, code, needles = case(t)
    before = snapshot(tmp_path)
    proc = run_softcopy(*args)
    assert proc.returncode == code, proc.stderr
    assert_one_error(proc.stderr, *needles)
    assert snapshot(tmp_path) == before  # no destination, no sidecar, source unchanged


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    args, code, needles = zarray_not_json(tmp_path)
    proc = run_softcopy("--verbose", *args)
    assert proc.returncode == code
    assert "Traceback (most recent call last)" in proc.stderr
    assert "MetadataError" in proc.stderr
    for needle in needles:
        assert needle in proc.stderr
    # The one-line message still ends the output, for whoever reads only the last line.
    assert proc.stderr.strip().splitlines()[-1].startswith("softcopy: error: ")


# ---- a destination that is already being copied to ---------------------------------------------


def test_a_second_copy_to_the_same_destination_is_refused(tmp_path: Path) -> None:
    # Chunk "1" is missing and there is no `complete` marker: the first copy keeps waiting.
    src = make_array(tmp_path / "a.zarr", chunks=("0",))
    dst = tmp_path / "copy.zarr"
    sidecar = tmp_path / "copy.zarr.softcopy"
    first = start_softcopy("copy", src, dst, "--nprocs", "1", "--idle-timeout", "600",
                           "--settle", "600")  # fmt: skip
    try:
        # target.json is written after the lock is taken; the chunk after the first scan.
        wait_for(
            lambda: (sidecar / "target.json").exists() and (dst / "0").exists(),
            what="the first softcopy to take the destination",
            proc=first,
        )
        source_before = snapshot(src)
        dst_before = snapshot(tmp_path / "copy.zarr")
        # --idle-timeout: should the lock not hold, the second copy ends soon and says so.
        second = run_softcopy("copy", src, dst, "--idle-timeout", "2")
        assert second.returncode == 2, second.stderr
        assert_one_error(second.stderr, str(dst), "another softcopy")
        # Refused before touching anything: the same with a targets file.
        (tmp_path / "t.yaml").write_text("targets: [{source: a.zarr, destination: copy.zarr}]\n")
        third = run_softcopy("run", tmp_path / "t.yaml", "--idle-timeout", "2")
        assert third.returncode == 2, third.stderr
        assert_one_error(third.stderr, str(dst), "another softcopy")
        assert snapshot(src) == source_before
        assert snapshot(tmp_path / "copy.zarr") == dst_before
        assert first.poll() is None  # the first copy is unaffected
    finally:
        first.send_signal(signal.SIGTERM)
        finish(first)


# ---- a source file softcopy may not read -------------------------------------------------------

NOBODY = 65534


def unprivileged_python(probe_dir: str) -> tuple[str | None, str]:
    """An interpreter that user `nobody` can run, and that can start copiers, or why not.

    A venv's interpreter may live below /root (mode 0700): `setpriv` still starts it, but
    it cannot start another copy of itself, as softcopy does for its copiers.
    """
    if os.geteuid() != 0:
        return None, "needs root to switch to an unprivileged user"
    if not shutil.which("setpriv"):
        return None, "setpriv (util-linux) is not installed"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [sys.executable, os.path.realpath(sys.executable)]
    candidates += [shutil.which(f"python{version}", path=p) for p in ("/usr/local/bin", "/usr/bin")]
    check = (
        "import os, subprocess, sys, softcopy.cli, softcopy.engine.target, softcopy.copiers.pool;"
        f"assert sys.version_info[:2] == {tuple(sys.version_info[:2])};"
        f"os.listdir({probe_dir!r});"
        "subprocess.run([sys.executable, '-c', 'import softcopy.sinks.local'], check=True)"
    )
    tried = []
    for exe in dict.fromkeys(c for c in candidates if c):
        proc = subprocess.run(
            [*as_nobody(), exe, "-c", check],
            env=nobody_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode == 0:
            return exe, ""
        tried.append(f"{exe}: {proc.stderr.strip().splitlines()[-1:]}")
    return None, "no interpreter usable by an unprivileged user: " + "; ".join(tried)


def as_nobody() -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def nobody_env() -> dict[str, str]:
    # The project and the venv's packages, for an interpreter outside the venv.
    paths = [str(Path(softcopy.__file__).parents[1]), sysconfig.get_paths()["purelib"]]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/",
    }


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory user nobody can reach (pytest's tmp_path is below a mode-0700 directory)."""
    base = Path(tempfile.mkdtemp(prefix="softcopy-unprivileged-"))
    try:
        os.chmod(base, 0o755)
        os.chown(base, NOBODY, NOBODY)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_unreadable_source_file_is_named_and_exits_1(shared_dir: Path) -> None:
    python, why = unprivileged_python(str(shared_dir))
    if python is None:
        pytest.skip(why)
    src = make_array(shared_dir / "a.zarr")
    (src / "complete").touch()
    dst = shared_dir / "copy.zarr"
    targets = shared_dir / "targets.yaml"
    targets.write_text(
        f"targets:\n  - {{source: {src}, destination: {dst}, max_attempts: 1, nprocs: 1}}\n"
    )
    for dirpath, dirnames, filenames in os.walk(shared_dir):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), NOBODY, NOBODY)
    os.chmod(src / "1", 0)  # even its owner may not read it
    before = snapshot(src)

    out, err = shared_dir / "stdout", shared_dir / "stderr"
    with open(out, "w") as fout, open(err, "w") as ferr:
        proc = subprocess.Popen(
            [*as_nobody(), python, *softcopy_cmd("run", targets)[1:]],
            env={**nobody_env(), "XDG_STATE_HOME": str(shared_dir / "state")},
            stdout=fout,
            stderr=ferr,
            cwd=shared_dir,
        )
    try:
        wait_for(lambda: "giving up" in err.read_text(), what="softcopy to give up on key 1",
                 proc=proc)  # fmt: skip
        # Giving up on one key must not stop the run from ending (verification is quick).
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"softcopy did not exit after giving up:\n{err.read_text()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = out.read_text(), err.read_text()
    assert code == 1, stdout + stderr
    assert "Traceback" not in stderr
    assert f"{src}/1" in stdout + stderr
    assert "read permission is missing on" in stdout + stderr
    assert "failed: 1:" in stdout
    assert snapshot(src) == before
    assert (dst / "0").read_bytes() == (src / "0").read_bytes()
    assert not (dst / "1").exists()
    assert not (dst / "complete").exists()  # the marker means a whole copy; this is not
    assert not [n for n in os.listdir(dst) if n.startswith(".softcopy-tmp")]
    assert stat.S_IMODE(os.lstat(src / "1").st_mode) == 0
