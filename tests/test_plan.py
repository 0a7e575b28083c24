"""What a run decides for each destination file, and --dry-run saying it without writing."""

from __future__ import annotations

import os
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
