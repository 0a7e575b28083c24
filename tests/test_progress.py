"""The progress reporter: synthetic events in-process, and a real run on a pseudo-terminal."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DEADLINE, softcopy_cmd
from test_acquisition import SMALL, simulate

from softcopy.cli.progress import (
    LIVE,
    LOG,
    OFF,
    SCHEMA,
    Reporter,
    eta_seconds,
    format_duration,
    format_lag,
    format_rate,
    make_reporter,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def progress(source: str, t: float, **fields: object) -> dict:
    event = {
        "event": "progress",
        "time": t,
        "source": source,
        "destination": source + ".copy",
        "state": "copying",
        "files_copied": 10,
        "bytes_copied": 1_000_000,
        "files_deleted": 0,
        "files_pending": 30,
        "bytes_pending": 3_000_000,
        "chunks_present": 40,
        "chunks_expected": 64,
        "rate": 500_000.0,
        "lag_p50": 0.4,
        "lag_max": 1.25,
        "failures": 0,
    }
    return event | fields


# ---- formatting ------------------------------------------------------------------------


def test_durations_rates_and_lags_are_short_and_blank_when_unknown() -> None:
    assert format_duration(None) == ""
    assert format_duration(0) == "0s"
    assert format_duration(42.4) == "42s"
    assert format_duration(185) == "3m05s"
    assert format_duration(7500) == "2h05m"
    assert format_duration(200_000) == "55h33m"
    assert format_duration(400_000) == "4d15h"
    assert format_rate(None) == ""
    assert format_rate(1.5e6) == "1.5 MB/s"
    assert format_rate(0) == "0 B/s"
    assert format_lag(None, None) == ""
    assert format_lag(0.4, 1.25) == "0.4s/1.2s"
    assert format_lag(3, 75) == "3.0s/1m15s"


def test_eta_is_pending_bytes_over_rate_zero_when_caught_up_and_unknown_without_rate() -> None:
    assert eta_seconds(3_000_000, 500_000.0) == pytest.approx(6.0)
    assert eta_seconds(0, 0.0) == 0.0
    assert eta_seconds(3_000_000, 0.0) is None
    assert eta_seconds(None, 500_000.0) is None


def test_a_row_smooths_the_rate_and_totals_copied_plus_pending() -> None:
    reporter = Reporter(OFF)
    reporter(progress("/a", 1.0, rate=400_000.0))
    reporter(progress("/a", 2.0, rate=800_000.0, bytes_pending=1_200_000))
    (row,) = reporter.rows.values()
    assert row.rate == pytest.approx(600_000.0)  # half old, half new
    assert row.eta == pytest.approx(2.0)
    assert (row.files_text(), row.bytes_text()) == ("10/40", "1.0 MB/2.2 MB")
    assert row.lag() == "0.4s/1.2s"
    # a quiet second has no lag sample: the last one is shown for a while, then not
    reporter(progress("/a", 5.0, lag_p50=None, lag_max=None))
    assert row.lag() == "0.4s/1.2s"
    reporter(progress("/a", 20.0, lag_p50=None, lag_max=None))
    assert row.lag() == ""
    reporter({"event": "paused", "time": 20.5, "source": "/a", "destination": "/a.copy",
              "reason": "vda 90% busy"})  # fmt: skip
    assert row.state_text() == "paused"
    reporter({"event": "resumed", "time": 20.7, "source": "/a", "destination": "/a.copy",
              "reason": "vda 3% busy"})  # fmt: skip
    assert row.state_text() == "copying"
    reporter({"event": "state", "time": 21.0, "source": "/a", "destination": "/a.copy",
              "state": "done", "reason": "marker", "error": ""})  # fmt: skip
    assert row.eta is None and row.state_text() == "done"


# ---- thread safety and JSON -------------------------------------------------------------


def hammer(reporter: Reporter, threads: int, events: int) -> None:
    """Each thread is one target's supervisor, sending its events in order."""

    def target(n: int) -> None:
        for i in range(events):
            reporter(progress(f"/src/{n}", float(i), seq=i, files_copied=i, note="x" * (i % 50)))

    workers = [threading.Thread(target=target, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(DEADLINE)


def test_json_mode_writes_one_valid_object_per_line_from_many_threads() -> None:
    out = io.StringIO()
    reporter = Reporter(OFF, json_out=out)
    hammer(reporter, threads=8, events=300)
    lines = out.getvalue().splitlines()
    assert len(lines) == 8 * 300
    seen: dict[str, list[int]] = {}
    for line in lines:
        event = json.loads(line)  # raises on a torn or interleaved line
        assert event["schema"] == SCHEMA == 1
        assert list(event)[:2] == ["schema", "event"]
        seen.setdefault(event["source"], []).append(event["seq"])
    assert all(seqs == list(range(300)) for seqs in seen.values()), "order within a target"
    assert len(seen) == 8


def test_live_display_survives_many_threads_and_ends_with_the_cursor_shown() -> None:
    err = io.StringIO()
    reporter = Reporter(LIVE, err=err, force_terminal=True, refresh_per_second=50)
    with reporter:
        hammer(reporter, threads=6, events=200)
        time.sleep(0.1)  # a few refreshes with every row
    assert {r.files_copied for r in reporter.rows.values()} == {199}
    text = err.getvalue()
    assert text.count("\x1b[?25l") == 1 and text.endswith("\x1b[?25h")
    last = ANSI.sub("", text).split("\r")[-1]
    assert all(f"/src/{n}" in last for n in range(6)), last


def test_log_mode_writes_one_line_per_target_every_ten_seconds(caplog) -> None:
    reporter = Reporter(LOG)
    with caplog.at_level(logging.INFO, logger="softcopy"):
        for t in range(36):
            for name in ("/a", "/b"):
                reporter(progress(name, 1000.0 + t))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6, lines  # at 10, 20 and 30 s, for each target
    assert lines[0] == (
        "/a: copying; 10/40 files (1.0 MB/4.0 MB) copied, 500.0 KB/s, elapsed 10s, "
        "ETA 6s to catch up, lag 0.4s/1.2s (median/max), 40 of 64 chunk files present, 0 failed"
    )


def test_a_broken_output_never_stops_the_copy(caplog) -> None:
    out = io.StringIO()
    out.close()  # as after `softcopy copy --json ... | head -1`
    reporter = Reporter(OFF, json_out=out)
    with caplog.at_level(logging.WARNING, logger="softcopy"):
        reporter(progress("/a", 1.0))
        reporter(progress("/a", 2.0))
    assert len(caplog.records) == 1 and "the copy goes on" in caplog.records[0].getMessage()
    assert reporter.rows[("/a", "/a.copy")].last_time == 2.0


def test_log_lines_print_above_the_live_table_and_handlers_get_their_stream_back() -> None:
    err = io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("softcopy: %(message)s"))
    logger = logging.getLogger("softcopy")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with Reporter(LIVE, err=err, force_terminal=True) as reporter:
            reporter(progress("/a", 1.0))
            logging.getLogger("softcopy.engine.target").warning("a line from the engine")
            assert handler.stream is not err
        assert handler.stream is err
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = ANSI.sub("", err.getvalue()).replace("\r", "\n").splitlines()
    (i,) = [n for n, line in enumerate(lines) if line == "softcopy: a line from the engine"]
    assert lines[i + 1].startswith("state "), "the table is drawn again below the log line"


def test_auto_mode_is_live_on_a_terminal_and_log_lines_otherwise() -> None:
    assert make_reporter(err=io.StringIO()).display == LOG
    assert make_reporter(progress=False, err=io.StringIO()).display == OFF
    assert make_reporter(progress=True, err=io.StringIO()).display == LIVE
    out = io.StringIO()
    assert make_reporter(as_json=True, out=out, err=io.StringIO()).json_out is out
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert make_reporter(err=tty).display == LIVE
    finally:
        os.close(master)
        os.close(slave)


# ---- a real run on a pseudo-terminal ---------------------------------------------------


def run_on_tty(*args: object, interrupt_when=None) -> tuple[int, str, str]:
    """softcopy with stderr on a pty (120 x 30, xterm); (exit code, stdout, raw stderr).

    interrupt_when(text so far) -> True sends one SIGINT (Ctrl-C)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        softcopy_cmd(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    raw = b""
    deadline = time.monotonic() + DEADLINE
    interrupted = interrupt_when is None
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the pty has closed it
                    break
                if not data:
                    break
                raw += data
            if not interrupted and interrupt_when(ANSI.sub("", raw.decode(errors="replace"))):
                proc.send_signal(signal.SIGINT)
                interrupted = True
        out = proc.communicate(timeout=DEADLINE)[0].decode()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, raw.decode(errors="replace")


def frames(raw: str, targets: int = 1) -> list[str]:
    """The display's frames (header, then a names line and a numbers line per target):
    rich redraws each one after moving the cursor back up to its first line."""
    found = []
    for chunk in raw.split("\r\x1b[2K"):
        lines = ANSI.sub("", chunk).replace("\r", "").split("\n")
        for i, line in enumerate(lines):
            if line.startswith("state ") and len(lines) > i + 2 * targets:
                found.append("\n".join(lines[i : i + 1 + 2 * targets]))
    return found


def cursor_restored(raw: str) -> bool:
    """Hidden once while the display ran, shown again when it stopped; nothing drawn after."""
    hide, show = "\x1b[?25l", "\x1b[?25h"
    after = raw[raw.rindex(show) :] if show in raw else ""
    return raw.count(hide) == 1 and raw.index(hide) < raw.rindex(show) and "\x1b[1A" not in after


def test_a_copy_on_a_terminal_draws_the_live_table(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    rc, out, raw = run_on_tty("copy", src, dst)
    assert rc == 0, raw
    assert out.startswith("done: "), out  # the summary line on stdout, below the display
    drawn = [f for f in frames(raw) if "src.zarr → " in f]
    assert drawn, raw
    final = drawn[-1]
    # "source → destination" above the numbers, each path shortened in the middle to fit
    # the 120 columns: its start and its name kept
    names, numbers = final.splitlines()[1:3]
    assert len(names) <= 120 and str(src).startswith(names.split("…")[0]), names
    assert re.fullmatch(r"\S+…\S*/src\.zarr → \S+…\S*/dst\.zarr", names), names
    assert re.match(r"done +49/49 +100% ", numbers), final
    assert cursor_restored(raw)
    print("\ncaptured frame:\n" + final)


def test_ctrl_c_on_a_terminal_stops_the_display_cleanly(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))  # never finishes on its own

    def copying(text: str) -> bool:
        return re.search(r"(?m)^copying +\d+/\d+ ", text) is not None

    rc, out, raw = run_on_tty("copy", src, dst, "--settle", "600", interrupt_when=copying)
    assert rc == 1, raw
    assert out.startswith("interrupted: "), out
    text = ANSI.sub("", raw)
    assert "stopping after the files in flight" in text, text
    drawn = frames(raw)
    assert re.search(r"(?m)^interrupted ", drawn[-1]), drawn[-1]
    assert cursor_restored(raw)
    copying = [f for f in drawn if re.search(r"(?m)^copying ", f)]
    print("\ncaptured frames, copying and after Ctrl-C:\n" + copying[-1] + "\n" + drawn[-1])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s"]))


def test_the_table_counts_files_not_copy_operations() -> None:
    """A rewritten file copied twice is one file: 630 of 1282 files, not 630/1431."""
    from softcopy.cli.progress import TargetRow

    row = TargetRow("src", "dst")
    row.update({"event": "progress", "state": "copying", "files_copied": 760,
                "files_pending": 671, "files_done": 630, "files_at_source": 1282})  # fmt: skip
    assert row.files_text() == "630/1282"
    row.update({"event": "summary", "state": "done", "files_copied": 1431,
                "files_at_source": 1282})  # fmt: skip
    assert row.files_text() == "1282/1282"
