"""A source directory softcopy may not read, under inotify: a named failure of that
directory (exit 1), never of the whole copy, and never a traceback.

Permissions mean nothing to root, so softcopy runs without the power to bypass them:
as an unprivileged user made with useradd, or, where that user cannot run this
checkout's interpreter (it lives in a directory only root may enter), as root without
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, which is the same to the kernel's checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DEADLINE, finish, start, wait_for

USER = "softcopy-test"
_NO_DAC = "-dac_override,-dac_read_search"


@dataclass
class Unprivileged:
    prefix: list[str]  # runs a command without permission to bypass modes
    base: Path  # a directory that the command may write to
    uid: int | None  # files made for the test are given to it (None: root keeps them)

    def softcopy(self, *args: object) -> list[str]:
        return [*self.prefix, sys.executable, "-m", "softcopy", *map(str, args)]

    def own(self, *paths: Path) -> None:
        if self.uid is None:
            return
        for path in paths:
            for dirpath, dirnames, filenames in os.walk(path):
                for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                    os.lchown(name, self.uid, self.uid)


def _works(prefix: list[str], cwd: Path) -> bool:
    """The prefix runs this interpreter with softcopy, and then cannot list a 000 directory."""
    probe = cwd / "probe-000"
    probe.mkdir()
    probe.chmod(0)
    # As softcopy does: start the interpreter again (copiers), from inside the first one.
    code = (
        "import os, subprocess, sys, softcopy\n"
        "subprocess.run([sys.executable, '-c', 'import softcopy'], check=True)\n"
        "try:\n os.listdir(sys.argv[1])\nexcept PermissionError:\n raise SystemExit(0)\n"
        "raise SystemExit(3)"
    )
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-c", code, str(probe)],
            cwd=cwd,
            capture_output=True,
            timeout=DEADLINE,
        )
    except OSError:
        return False
    finally:
        probe.chmod(0o700)
        probe.rmdir()
    return done.returncode == 0


def _user_prefix(base: Path) -> tuple[list[str], int] | None:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
        useradd = shutil.which("useradd")
        if not useradd:
            return None
        made = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            capture_output=True,
        )
        if made.returncode not in (0, 9):  # 9: made meanwhile by a parallel run
            return None
    uid = int(subprocess.run(["id", "-u", USER], capture_output=True, text=True).stdout)
    gid = int(subprocess.run(["id", "-g", USER], capture_output=True, text=True).stdout)
    os.chown(base, uid, gid)
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"], uid


@pytest.fixture
def unprivileged() -> Iterator[Unprivileged]:
    if os.geteuid() != 0:
        pytest.skip("needs root, to make a user or to drop root's permission bypass")
    base = Path(tempfile.mkdtemp(prefix="softcopy-unreadable-"))
    base.chmod(0o755)
    try:
        found = None
        as_user = _user_prefix(base)
        if as_user is not None and _works(as_user[0], base):
            found = Unprivileged(as_user[0], base, as_user[1])
        else:
            os.chown(base, 0, 0)
            no_dac = ["setpriv", f"--inh-caps={_NO_DAC}", f"--bounding-set={_NO_DAC}", "--"]
            if shutil.which("setpriv") and _works(no_dac, base):
                found = Unprivileged(no_dac, base, None)
        if found is None:
            pytest.skip(
                f"cannot run {sys.executable} as user {USER} (the interpreter or the checkout "
                "is not readable by it) nor as root without CAP_DAC_OVERRIDE"
            )
        yield found
    finally:
        for dirpath, dirnames, _ in os.walk(base):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o700)
        shutil.rmtree(base, ignore_errors=True)


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _env(u: Unprivileged) -> dict[str, str]:
    state = u.base / "state"
    state.mkdir(exist_ok=True)
    u.own(state)
    return {**os.environ, "XDG_STATE_HOME": str(state), "HOME": str(u.base)}


def test_an_unreadable_directory_at_the_start_fails_alone(unprivileged: Unprivileged) -> None:
    u = unprivileged
    src, dst = u.base / "src", u.base / "dst"
    _tree(src, {"a.txt": b"a", "ok/b.txt": b"b", "locked/c.txt": b"c"})
    u.own(src)
    (src / "locked").chmod(0)
    proc = start(
        u.softcopy("copy", "--kind", "directory", "--watch", "inotify", "--idle-timeout", "1",
                   "--ready-age", "0", "--no-progress", src, dst),
        cwd=u.base, env=_env(u),
    )  # fmt: skip
    rc, out, err = finish(proc)
    assert rc == 1, err
    assert "Traceback" not in err
    assert f"{src}: locked/: cannot list directory: Permission denied" in err, err
    assert "failed: locked/: cannot list directory" in out + err
    assert (dst / "a.txt").read_bytes() == b"a" and (dst / "ok" / "b.txt").read_bytes() == b"b"
    assert f"cannot scan source {src}" not in err, "the failure is the directory's, not the root's"


def test_an_unreadable_directory_that_appears_mid_run_fails_alone(
    unprivileged: Unprivileged,
) -> None:
    u = unprivileged
    src, dst, staging = u.base / "src", u.base / "dst", u.base / "staging"
    _tree(src, {"a.txt": b"a"})
    _tree(staging, {"late/c.txt": b"c"})
    u.own(src, staging)
    (staging / "late").chmod(0)
    proc = start(
        u.softcopy("copy", "--kind", "directory", "--watch", "inotify", "--idle-timeout", "3",
                   "--ready-age", "0", "--no-progress", src, dst),
        cwd=u.base, env=_env(u),
    )  # fmt: skip
    wait_for(lambda: (dst / "a.txt").exists(), what="the first file copied", proc=proc)
    # Moved in whole, already unreadable: the supervisor meets it through IN_MOVED_TO.
    os.rename(staging / "late", src / "late")
    (src / "after.txt").write_bytes(b"after")
    u.own(src / "after.txt")
    wait_for(lambda: (dst / "after.txt").exists(), what="a file written after it", proc=proc)
    rc, _, err = finish(proc)
    assert rc == 1, err
    assert "Traceback" not in err and "PermissionError" not in err, err
    assert "late/: cannot list directory: Permission denied" in err, err
    assert (dst / "after.txt").read_bytes() == b"after"


def test_unreadable_hostile_names_are_named_escaped(unprivileged: Unprivileged) -> None:
    """Every line that names them (log lines, the summary's failures) shows the escapes:
    nothing can clear the screen, forge a line, or fail to encode."""
    u = unprivileged
    src, dst = u.base / "src", u.base / "dst"
    _tree(src, {"a.txt": b"a"})
    bad_dir = os.path.join(os.fsencode(src), b"dir\x1b[2J\xff\n")
    bad_file = os.path.join(os.fsencode(src), b"file\x1b[2J\xfe\n")
    os.mkdir(bad_dir)
    with open(bad_file, "wb") as f:
        f.write(b"secret")
    u.own(src)
    os.chmod(bad_dir, 0)
    os.chmod(bad_file, 0)
    proc = start(
        u.softcopy("copy", "--kind", "directory", "--watch", "inotify", "--idle-timeout", "1",
                   "--ready-age", "0", "--no-progress", src, dst),
        cwd=u.base, env={**_env(u), "PYTHONIOENCODING": "utf-8:strict"},
    )  # fmt: skip
    rc, out, err = finish(proc)
    assert rc == 1, err
    for text in (out, err):
        assert "\x1b" not in text and "Traceback" not in text, text
        text.encode("utf-8")
    assert "dir\\x1b[2J\\xff\\n/: cannot list directory: Permission denied" in err, err
    assert "failed: file\\x1b[2J\\xfe\\n: permission denied" in out + err, err
    assert (dst / "a.txt").read_bytes() == b"a"


def test_verify_names_an_unreadable_directory_and_guesses_nothing_below_it(
    unprivileged: Unprivileged,
) -> None:
    """Both trees are walked together: a source directory that cannot be listed is one
    finding, and what the destination holds below it is neither missing nor extra."""
    u = unprivileged
    src, dst = u.base / "src", u.base / "dst"
    files = {"a.txt": b"a", "locked/c.txt": b"c", "locked/deeper/d.txt": b"d"}
    _tree(src, files)
    _tree(dst, files)
    u.own(src, dst)
    (src / "locked").chmod(0)
    result = subprocess.run(
        u.softcopy("verify", src, dst), cwd=u.base, env=_env(u), capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert "cannot read: locked: source: Permission denied" in lines, lines
    assert not [line for line in lines if "locked/" in line], lines
