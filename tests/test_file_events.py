"""What happened, per file: --file-events in --json, the run log beside the copy, the dry
run's listing with -v, and the live table's layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import blake3
from conftest import run_softcopy, start_softcopy, wait_for

from softcopy.cli.progress import (
    HEADERS,
    NOTE,
    FrameRow,
    Reporter,
    frame_lines,
    names_line,
    shorten_middle,
)
from softcopy.state.records import Records
from softcopy.state.runlog import LOG, OLDER, RunLog, read_tail

ZARRAY = {"zarr_format": 2, "shape": [6], "chunks": [2], "dtype": "<u2", "fill_value": 0}
FILE_EVENTS = {"file_copied", "file_recopied", "file_deleted", "file_failed"}


def archive(path: Path, chunks: dict[str, bytes] | None = None, complete: bool = True) -> Path:
    """A small finished zarr v2 array: metadata, chunk files and the `complete` marker."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ".zarray").write_text(json.dumps(ZARRAY))
    for key, data in (chunks or {"0": b"a" * 4, "1": b"b" * 4, "2": b"c" * 4}).items():
        (path / key).write_bytes(data)
    if complete:
        (path / "complete").write_text("")
    return path


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def log_of(dst: Path) -> list[dict]:
    text = (dst.parent / f"{dst.name}.softcopy" / LOG).read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_file_events_name_each_copied_file_with_its_size_and_digest(tmp_path: Path) -> None:
    src, dst = archive(tmp_path / "src.zarr"), tmp_path / "dst.zarr"
    result = run_softcopy("copy", "--json", "--file-events", "--hash", src, dst)
    assert result.returncode == 0, result.stderr
    copied = {e["key"]: e for e in events_of(result.stdout) if e["event"] == "file_copied"}
    assert set(copied) == {".zarray", "0", "1", "2"}, copied
    for key, event in copied.items():
        data = (src / key).read_bytes()
        assert event["size"] == len(data)
        assert event["digest"] == blake3.blake3(data).hexdigest()
        assert event["schema"] == 1 and event["source"] == str(src)
    # The run log holds the same objects between the run's start and end lines.
    logged = log_of(dst)
    assert logged[0]["event"] == "run_started" and logged[0]["hash"] is True
    assert logged[-1]["event"] == "run_ended" and logged[-1]["state"] == "done"
    assert logged[-1]["files_copied"] == 4
    assert {e["key"]: e for e in logged if e["event"] == "file_copied"} == copied


def test_file_events_are_opt_in_but_the_run_log_is_always_kept(tmp_path: Path) -> None:
    src, dst = archive(tmp_path / "src.zarr"), tmp_path / "dst.zarr"
    result = run_softcopy("copy", "--json", src, dst)
    assert result.returncode == 0, result.stderr
    assert not {e["event"] for e in events_of(result.stdout)} & FILE_EVENTS
    logged = log_of(dst)
    assert sorted(e["key"] for e in logged if e["event"] == "file_copied") == [
        ".zarray", "0", "1", "2"
    ]  # fmt: skip
    assert all("digest" not in e for e in logged)  # only with --hash


def test_a_second_run_logs_recopied_and_deleted_files_after_the_first(tmp_path: Path) -> None:
    src, dst = archive(tmp_path / "src.zarr"), tmp_path / "dst.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0
    (src / "0").write_bytes(b"longer than the copy")  # another size: re-copied
    (src / "1").unlink()  # gone from the source: deleted at the destination
    (src / "3").write_bytes(b"d" * 4)  # new
    result = run_softcopy("copy", "--json", "--file-events", src, dst)
    assert result.returncode == 0, result.stderr
    per_file = {
        (e["event"], e["key"]) for e in events_of(result.stdout) if e["event"] in FILE_EVENTS
    }
    assert per_file == {("file_recopied", "0"), ("file_deleted", "1"), ("file_copied", "3")}
    logged = log_of(dst)
    assert [e["event"] for e in logged].count("run_started") == 2  # appended, not replaced
    second = logged[max(i for i, e in enumerate(logged) if e["event"] == "run_started") :]
    assert {(e["event"], e["key"]) for e in second if "key" in e} == per_file
    assert second[-1]["event"] == "run_ended"
    assert (second[-1]["files_copied"], second[-1]["files_deleted"]) == (2, 1)


def test_a_file_rewritten_at_the_source_in_place_of_its_copy_is_a_recopy(tmp_path) -> None:
    """The same size, not vouched for by the journal: compared, then copied again."""
    src, dst = archive(tmp_path / "src.zarr"), tmp_path / "dst.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0
    (src / "2").write_bytes(b"z" * 4)
    os.utime(src / "2", ns=(1, 1))  # as if older: size and mtime say nothing
    result = run_softcopy("copy", "--json", "--file-events", src, dst)
    assert result.returncode == 0, result.stderr
    per_file = [(e["event"], e["key"]) for e in events_of(result.stdout) if "key" in e]
    assert per_file == [("file_recopied", "2")], per_file
    assert (dst / "2").read_bytes() == b"z" * 4


def test_a_link_planted_as_the_run_log_is_never_written_through(tmp_path: Path) -> None:
    src, dst = archive(tmp_path / "src.zarr"), tmp_path / "dst.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    log = tmp_path / "dst.zarr.softcopy" / LOG
    log.unlink()
    log.symlink_to(outside)
    (src / "3").write_bytes(b"d" * 4)
    result = run_softcopy("copy", src, dst)
    # The copy goes on: the log is the record of it, not a condition for it.
    assert result.returncode == 0, result.stderr
    assert outside.read_text() == "keep me"
    assert log.is_symlink()
    assert f"cannot write the run log {log}: it is a symbolic link" in result.stderr
    assert (dst / "3").read_bytes() == b"d" * 4


def test_lines_are_written_when_the_copiers_fall_idle_so_a_kill_keeps_them(tmp_path) -> None:
    """A run waiting for its acquisition to end has its lines on disk already: a kill -9
    then loses none of them, and the next run appends its own."""
    src, dst = archive(tmp_path / "src.zarr", complete=False), tmp_path / "dst.zarr"
    proc = start_softcopy("copy", "--settle", "600", "--no-progress", src, dst)
    log = tmp_path / "dst.zarr.softcopy" / LOG

    def copied() -> set[str]:
        if not log.exists():
            return set()
        return {json.loads(line).get("key") for line in log.read_text().splitlines()}

    wait_for(lambda: {".zarray", "0", "1", "2"} <= copied(), what="the log's lines", proc=proc)
    proc.kill()
    proc.communicate()
    (src / "complete").write_text("")
    assert run_softcopy("copy", src, dst).returncode == 0
    events = [e["event"] for e in log_of(dst)]
    assert events[0] == "run_started" and events.count("file_copied") == 4
    assert events.count("run_started") == 2 and events.count("run_ended") == 1  # killed


def test_the_run_log_rotates_so_it_stays_bounded_and_its_tail_reads_back(tmp_path) -> None:
    folder = tmp_path / "dst.softcopy"
    records = Records.open(folder)
    assert records is not None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    (folder / OLDER).symlink_to(elsewhere)  # rotation replaces it, never follows it
    try:
        runlog = RunLog(records, rotate_at=4096)
        for n in range(400):
            runlog.add({"event": "file_copied", "key": f"c/{n}", "size": n})
            runlog.flush()
        tail = read_tail(records, 20)
    finally:
        records.close()
    assert elsewhere.read_text() == "untouched" and not (folder / OLDER).is_symlink()
    sizes = [(folder / name).stat().st_size for name in (LOG, OLDER)]
    assert all(size < 4096 + 200 for size in sizes), sizes  # the bound: rotate_at + one flush
    assert [e["key"] for e in tail] == [f"c/{n}" for n in range(380, 400)]


def test_a_torn_last_line_after_a_crash_is_skipped_when_read(tmp_path: Path) -> None:
    folder = tmp_path / "dst.softcopy"
    records = Records.open(folder)
    assert records is not None
    try:
        runlog = RunLog(records)
        runlog.add({"event": "run_started"})
        runlog.flush()
        with open(folder / LOG, "a") as f:
            f.write('{"event": "file_cop')  # killed mid-write
        runlog.add({"event": "run_started", "again": True})  # the next run goes on
        runlog.flush()
        assert [e["event"] for e in read_tail(records)] == ["run_started"]
    finally:
        records.close()


# ---- the dry run, per file -------------------------------------------------------------------


def test_dry_run_with_verbose_lists_what_it_would_do_per_file(tmp_path: Path) -> None:
    src, dst = archive(tmp_path / "src.zarr"), tmp_path / "dst.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0
    (src / "0").write_bytes(b"longer than the copy")
    (src / "1").unlink()
    (src / "3").write_bytes(b"d" * 4)
    (src / "2").write_bytes(b"z" * 4)
    os.utime(src / "2", ns=(1, 1))
    plain = run_softcopy("copy", "--dry-run", src, dst)
    assert plain.returncode == 0, plain.stderr
    verbose = run_softcopy("-v", "copy", "--dry-run", src, dst)
    assert verbose.returncode == 0, verbose.stderr
    listed = [line.split() for line in verbose.stdout.splitlines() if line.startswith("  ")]
    # "  ACTION  SIZE UNIT  NAME": the listing's lines, not the counts ("  to copy: ...")
    per_file = {(w[0], w[-1]) for w in listed if len(w) == 4 and w[1][0].isdigit()}
    assert per_file == {("re-copy", "0"), ("delete", "1"), ("copy", "3"), ("compare", "2")}
    # Without -v only the counts, as before; the files trusted are never listed.
    assert "re-copy " not in plain.stdout.replace("to re-copy:", "")
    assert ".zarray" not in verbose.stdout
    assert verbose.stdout.index("  copy ") < verbose.stdout.index("  to copy:")


def test_dry_run_file_events_in_json(tmp_path: Path) -> None:
    src, dst = archive(tmp_path / "src.zarr"), tmp_path / "dst.zarr"
    result = run_softcopy("copy", "--dry-run", "--json", "--file-events", src, dst)
    assert result.returncode == 0, result.stderr
    events = events_of(result.stdout)
    planned = [(e["key"], e["action"], e["size"]) for e in events if e["event"] == "plan_file"]
    assert planned == [
        (".zarray", "copy", (src / ".zarray").stat().st_size),
        ("0", "copy", 4), ("1", "copy", 4), ("2", "copy", 4),
    ]  # fmt: skip
    assert "plan_files" not in events[-1]  # the summary stays small
    assert not (tmp_path / "dst.zarr.softcopy").exists()  # a dry run writes no log


# ---- the live table --------------------------------------------------------------------------


def test_the_table_fits_80_columns_and_shortens_both_paths_in_the_middle() -> None:
    src = "/acquisition/lightsheet/2026-01-15_embryo01_long_name.zarr"
    dst = "/mnt/storage/lightsheet/project-x/2026-01-15_embryo01_long_name.zarr"
    cells = ("copying", "1212/3400", "62%", "276.0 MB/443.1 MB", "58.2 MB/s", "3m05s", "3s",
             "0.4s/1.9s", "0")  # fmt: skip
    lines = [text for text, _ in frame_lines([FrameRow(src, dst, cells, "copying")], 80)]
    assert all(len(line) <= 80 for line in lines), lines
    header, names, numbers, note = lines
    assert header.split() == ["state", "files", "%", "bytes", "rate", "elapsed", "ETA", "lag",
                              "med/max", "failed"]  # fmt: skip
    source, destination = names.split(" → ")
    for shown, full in ((source, src), (destination, dst)):
        head, tail = shown.split("…")
        assert full.startswith(head) and full.endswith(tail) and tail.endswith(".zarr")
    assert numbers.split() == ["copying", "1212/3400", "62%", "276.0", "MB/443.1", "MB",
                               "58.2", "MB/s", "3m05s", "3s", "0.4s/1.9s", "0"]  # fmt: skip
    assert note == NOTE and "catch up" in note and len(HEADERS) == len(cells)


def test_a_narrow_terminal_drops_columns_rather_than_wrapping() -> None:
    cells = ("copying", "12/34", "35%", "2.0 MB/5.7 MB", "1.0 MB/s", "5s", "3s", "0.4s/0.9s", "0")
    lines = [text for text, _ in frame_lines([FrameRow("/s", "/d", cells, "copying")], 50)]
    assert all(len(line) <= 50 for line in lines), lines
    assert "rate" not in lines[0] and "ETA" in lines[0] and "failed" in lines[0]
    assert names_line("/s", "/d", 50) == "/s → /d"
    assert shorten_middle("/abcdefghij/klmnopqrst", 10) == "/ab…opqrst"  # 10 columns


def test_rows_count_elapsed_percent_of_the_source_and_say_eta_is_catching_up() -> None:
    reporter = Reporter()
    common = {"source": "/s", "destination": "/d"}
    reporter({"event": "state", "time": 100.0, "state": "copying", **common})
    reporter({"event": "progress", "time": 160.0, "state": "copying", **common,
              "files_copied": 50, "bytes_copied": 5_000_000, "files_pending": 30,
              "bytes_pending": 3_000_000, "files_done": 40, "files_at_source": 70,
              "bytes_at_source": 4_000_000, "rate": 1_000_000.0})  # fmt: skip
    row = reporter.rows[("/s", "/d")]
    # Of what the source holds: 1 MB of 4 MB there, not the 5 MB of copy operations.
    assert row.bytes_text() == "1.0 MB/4.0 MB" and row.percent_text() == "25%"
    assert row.files_text() == "40/70"
    assert row.elapsed(160.0) == 60.0
    assert "elapsed 1m00s" in row.log_line() and "ETA 3s to catch up" in row.log_line()
    reporter({"event": "state", "time": 161.0, "state": "draining", **common})
    assert "ETA 3s," in row.log_line()  # the writer is done: no longer catching up
    reporter({"event": "summary", "time": 170.0, "state": "done", **common, "files_copied": 80,
              "files_at_source": 70, "bytes_at_source": 4_000_000, "seconds": 9.5})  # fmt: skip
    assert row.percent_text() == "100%" and row.elapsed(999.0) == 9.5


def test_a_name_that_is_not_utf8_is_logged_with_its_exact_bytes(tmp_path: Path) -> None:
    src, dst = archive(tmp_path / "src.zarr"), tmp_path / "dst.zarr"
    name = b"notes-\xff\xfe.txt"
    with open(os.path.join(os.fsencode(src), name), "wb") as f:
        f.write(b"raw")
    result = run_softcopy("copy", "--json", "--file-events", src, dst)
    assert result.returncode == 0, result.stderr
    for events in (events_of(result.stdout), log_of(dst)):
        (odd,) = [e for e in events if e.get("key", "").startswith("notes-")]
        assert bytes.fromhex(odd["names_hex"][odd["key"]]) == name
        assert odd["size"] == 3
