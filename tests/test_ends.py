"""How a target ends, and what softcopy says while it cannot: proven and guessed ends in the
certificate, the note on what a quiet run waits for, bounded back-off, totals, link markers."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import (
    assert_same_tree,
    finish,
    run_softcopy,
    start_disk_load,
    start_softcopy,
    wait_for,
)
from test_acquisition import SMALL, simulate
from test_throttle import loop_source  # noqa: F401 (a fixture)

from softcopy.units import human_bytes


def certificate(dst: Path) -> dict:
    return json.loads((dst.parent / f"{dst.name}.softcopy" / "certificate.json").read_text())


def test_a_marker_is_a_proven_end_and_safe_to_free(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    cert = certificate(dst)
    assert cert["end"] == {
        "rule": "marker",
        "proven": True,
        "detail": "the source has a 'complete' marker",
        "trusted_by_user": False,
    }
    assert cert["safe_to_free"] is True
    assert "guessed" not in result.stderr


@pytest.mark.parametrize(
    ("args", "rule"),
    [
        (["--settle", "0.5"], "settle"),
        (["--idle-timeout", "0.5", "--settle", "600"], "idle_timeout"),
    ],
)
def test_a_guessed_end_is_verified_but_never_safe_to_free(
    tmp_path: Path, args: list[str], rule: str
) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    result = run_softcopy("copy", src, dst, *args)
    assert result.returncode == 0, result.stderr
    assert_same_tree(src, dst)
    cert = certificate(dst)
    assert cert["end"]["rule"] == rule and cert["end"]["proven"] is False
    assert cert["safe_to_free"] is False, "a guess must never free the source"
    # The warning says it was a guess and what would make it sure.
    assert "was guessed" in result.stderr and "'complete' file" in result.stderr


def test_a_guessed_end_is_safe_to_free_only_when_the_user_says_so(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    result = run_softcopy("copy", src, dst, "--settle", "0.5", "--trust-guessed-end")
    assert result.returncode == 0, result.stderr
    cert = certificate(dst)
    assert cert["end"]["proven"] is False and cert["end"]["trusted_by_user"] is True
    assert cert["safe_to_free"] is True


def test_a_copy_that_cannot_end_says_what_it_waits_for(tmp_path: Path) -> None:
    """Fill-value holes and no marker: every expected chunk will never exist."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False, holes=0.3))
    proc = start_softcopy("copy", src, dst, "--settle", "1", "--json")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    note = wait_for(
        lambda: next((line for line in lines if "waiting for the end" in line), None),
        what="the note on what the run waits for",
        proc=proc,
    )
    assert "'complete' file at the source root" in note
    assert "expected chunk files are absent" in note and "--idle-timeout" in note
    status = run_softcopy("status", "--json")
    (record,) = [json.loads(line) for line in status.stdout.splitlines()]
    assert "waiting for the end" in record["reason"]
    assert "waiting for the end" in run_softcopy("status").stdout
    (src / "complete").touch()
    code, out, _ = finish(proc)
    reader.join(10)
    assert code == 0, "".join(lines)
    assert sum("waiting for the end" in line for line in lines) == 1, "said once, not per second"
    events = [json.loads(line) for line in out.splitlines()]
    assert any(e["event"] == "waiting" for e in events)


def test_totals_after_an_interruption_count_files_and_bytes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False, layout="ome"))
    proc = start_softcopy("copy", src, dst, "--settle", "600")
    wait_for(lambda: dst.exists() and any(dst.rglob("c")), what="the copy to start", proc=proc)
    proc.send_signal(2)
    code, out, _ = finish(proc)
    assert code == 1
    files = [p for p in src.rglob("*") if p.is_file() or p.is_symlink()]
    nbytes = sum(p.lstat().st_size for p in files)
    assert f"{len(files)} files ({human_bytes(nbytes)}) at the source" in out, out


@pytest.mark.alone
@pytest.mark.slow
@pytest.mark.timeout(170)
def test_a_busy_disk_never_stops_the_copy_for_good(tmp_path: Path, loop_source: Path) -> None:  # noqa: F811
    """Another job keeps the source disk busy for as long as the copy runs: softcopy says
    why nothing moves, in its log and in `status`, and then trickles until it is done."""
    src, dst = loop_source / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, timepoints=1, shape=(2, 16, 16), complete=False))
    load = start_disk_load(loop_source)
    targets = tmp_path / "t.yaml"
    targets.write_text(
        f"targets:\n  - {{source: {src}, destination: {dst}, busy_utilisation: 0.3, "
        "batch_size: 1, settle: 600}\n"
    )
    try:
        proc = start_softcopy("run", targets)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        # No marker yet: the run cannot end before the disk is seen busy. Only copying
        # waits for a busy disk: keep giving it something to copy until it pauses.
        # At most two files waiting at a time: each pending file costs a trickle batch
        # (one every few seconds) once the pause came.
        work = iter(range(10**6))

        def paused() -> bool:
            waiting = [p for p in src.glob("work-*.txt") if not (dst / p.name).exists()]
            if len(waiting) < 2:
                (src / f"work-{next(work)}.txt").write_text("more")
            return any("pausing copiers" in line for line in lines)

        wait_for(paused, what="a pause", proc=proc)
        # Work that arrives while paused, then the end: it must be copied anyway. One
        # file proves it (each more costs a trickle batch, 5 s).
        (src / "notes.txt").write_text("a note")
        (src / "complete").touch()
        stalled = wait_for(
            lambda: next((line for line in lines if "no file finished for" in line), None),
            what="the note on why nothing moves",
            proc=proc,
        )
        assert "source disk is busy" in stalled
        record = json.loads(run_softcopy("status", "--json").stdout.splitlines()[0])
        assert "no file finished for" in record["reason"]
        assert proc.wait(timeout=120) == 0, "".join(lines)
        reader.join(10)
        assert any("copying one batch every" in line for line in lines)
        # With nothing left to copy, a busy disk delays nothing: the rerun ends at once.
        again = run_softcopy("run", targets)
        assert again.returncode == 0, again.stderr
        assert "copying one batch every" not in again.stderr
        assert "no file finished" not in again.stderr
    finally:
        load.kill()
        load.wait()
        subprocess.run(["sync"], check=False)
    assert_same_tree(src, dst)


def test_a_marker_that_is_a_link_ends_the_copy_and_is_copied_as_a_link(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    (tmp_path / "outside").write_text("not ours")
    os.symlink("../outside", src / "complete")
    result = run_softcopy("copy", src, dst, "--settle", "600")
    assert result.returncode == 0, result.stderr
    assert os.readlink(dst / "complete") == "../outside"
    assert certificate(dst)["end"]["rule"] == "marker"
