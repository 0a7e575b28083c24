"""What a run decides for each destination file, and --dry-run saying it without writing."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from conftest import run_softcopy, tree_files
from test_acquisition import SMALL, simulate

from softcopy.config import make_target
from softcopy.engine.plan import COMPARE, COPY, DELETE, KEEP_EXTRA, TRUST, decide
from softcopy.engine.target import copy_target
from softcopy.sources.scan import Version

V1, V1_OTHER_MTIME, V2 = Version(10, 1, 7), Version(10, 2, 8), Version(20, 3, 9)


@pytest.mark.parametrize(
    ("here", "there", "record", "owned", "action"),
    [
        (V1, None, None, True, COPY),
        (V1, V1, (V1, ""), True, TRUST),
        (V1, V1, None, True, COMPARE),  # right size and mtime, but nobody vouches for it
        (V1, V1, (V2, ""), True, COMPARE),  # the journal copied another version
        (V1, V1_OTHER_MTIME, (V1, ""), True, COMPARE),
        (V1, V2, (V1, ""), True, COPY),
        (None, V1, None, True, DELETE),
        (None, V1, None, False, KEEP_EXTRA),
        (None, None, None, True, None),
    ],
)
def test_decide(here, there, record, owned, action) -> None:
    assert decide(here, there, record, owned) == action


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            found[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_size, st.st_mtime_ns)
    return found


def test_dry_run_reports_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    assert run_softcopy("copy", src, dst).returncode == 0
    chunks = sorted(k for k in tree_files(src) if k.startswith("c/"))
    (src / chunks[0]).write_bytes(b"longer than before" * 100)  # will be re-copied
    (src / chunks[1]).unlink()  # will be deleted at the destination
    (src / "new.txt").write_text("new")  # will be copied
    before = snapshot(tmp_path) | snapshot(Path(os.environ["XDG_STATE_HOME"]))
    summary = copy_target(make_target(src, dst, {"dry_run": True}, "test"))
    assert snapshot(tmp_path) | snapshot(Path(os.environ["XDG_STATE_HOME"])) == before
    plan = summary.plan
    assert (plan["files_to_copy"], plan["files_to_recopy"], plan["files_to_delete"]) == (2, 1, 1)
    assert plan["files_trusted"] == len(chunks) - 2 + 1  # the other chunks and zarr.json
    assert plan["fits"] and summary.ok
    assert "would copy 2 files" in summary.line()


def test_a_rerun_trusts_only_what_the_journal_vouches_for(tmp_path: Path) -> None:
    """A rerun's start (the bulk, vectorised trust) trusts a file only when the journal
    copied the source's current version (inode and ctime included) and the destination
    file still has its size and mtime; everything else is compared or copied."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    assert run_softcopy("copy", src, dst).returncode == 0
    chunks = sorted(k for k in tree_files(src) if k.startswith("c/"))
    (src / chunks[0]).write_bytes(b"longer than before" * 100)  # another size: copied
    there = os.stat(dst / chunks[1])
    os.utime(dst / chunks[1], ns=(there.st_atime_ns, there.st_mtime_ns + 10**9))  # compared
    (dst / chunks[2]).unlink()  # missing at the destination: copied
    # Same size and mtime, new bytes: only the ctime (and inode) say it is another version.
    here = os.stat(src / chunks[3])
    data = (src / chunks[3]).read_bytes()
    (src / chunks[3]).write_bytes(bytes(b ^ 0xFF for b in data))
    os.utime(src / chunks[3], ns=(here.st_atime_ns, here.st_mtime_ns))
    # In a thread of its own, as the runner does: the supervisor lowers its own thread's
    # priority, which in pytest's main thread every later test's processes would inherit.
    done: list = []
    worker = threading.Thread(
        target=lambda: done.append(copy_target(make_target(src, dst, {}, "test")))
    )
    worker.start()
    worker.join(120)
    (summary,) = done
    assert summary.ok, summary.error
    wanted = [k for k in tree_files(src) if k != "complete"]
    # Trusted, or (chunk 1) compared and found to have the same bytes.
    assert summary.files_already_there == len(wanted) - 3
    assert summary.files_copied == 3  # chunks 0, 2 and 3
    assert (dst / chunks[3]).read_bytes() == (src / chunks[3]).read_bytes()
    assert tree_files(dst) == tree_files(src)
