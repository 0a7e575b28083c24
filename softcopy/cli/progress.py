"""What a run shows while it copies: a live table, periodic log lines, or JSON events.

One `Reporter` per command. The supervisors of every target (one thread each)
call it with their events (see `Supervisor._emit`); it is thread-safe. It writes:

- with `json_out`: every event as one JSON object per line, with `"schema"`,
  flushed per line (stdout stays pure JSON: human lines go to stderr);
- on stderr, one of: a rich live table (one row per target, refreshed 4 times a
  second, log lines printed above it), a plain log line per target every 10 s,
  or nothing.

Nothing the reporter does may stop a copy: its own errors are logged once and
swallowed. It never writes to the console while holding its lock (the live
display's refresh thread takes that lock to draw), so it cannot deadlock.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from ..names import json_record, shown
from ..states import FINAL_STATES
from ..units import human_bytes

log = logging.getLogger("softcopy")

SCHEMA = 1
LIVE, LOG, OFF = "live", "log", "off"
LOG_EVERY = 10.0
REFRESH_PER_SECOND = 4.0
# How long a lag measurement is shown after the last interval that had one.
_LAG_SHOWN_FOR = 10.0
# Weight of the newest rate sample (one a second) in the smoothed rate.
_RATE_WEIGHT = 0.5


# ---- formatting ------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """42 -> '42s', 185 -> '3m05s', 7500 -> '2h05m', 200000 -> '2d07h'; None -> ''."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 100 * 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_rate(bytes_per_second: float | None) -> str:
    """1.5e6 -> '1.5 MB/s'; None -> ''."""
    if bytes_per_second is None or bytes_per_second < 0:
        return ""
    return f"{human_bytes(bytes_per_second)}/s"


def eta_seconds(bytes_pending: int | None, rate: float | None) -> float | None:
    """Seconds to copy what is pending at `rate`; 0 when nothing is; None when unknown."""
    if bytes_pending is None:
        return None
    if bytes_pending <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return bytes_pending / rate


def format_lag(p50: float | None, worst: float | None) -> str:
    """Copy lag (change seen at the source -> copy published): '0.4s/1.2s' (median/max)."""
    if p50 is None or worst is None:
        return ""

    def one(s: float) -> str:
        return f"{s:.1f}s" if s < 10 else format_duration(s)

    return f"{one(p50)}/{one(worst)}"


# ---- per-target state --------------------------------------------------------------------


@dataclass
class TargetRow:
    source: str
    destination: str
    state: str = "waiting"
    files_copied: int = 0
    bytes_copied: int = 0
    files_pending: int | None = None
    bytes_pending: int | None = None
    chunks_present: int | None = None
    chunks_expected: int | None = None
    rate: float | None = None  # smoothed, bytes/s
    lag_p50: float | None = None
    lag_max: float | None = None
    lag_time: float = 0.0  # event time of the last lag measurement
    failures: int = 0
    findings: int = 0
    error: str = ""
    paused: bool = False  # copiers held back while the source disk is busy
    files_done: int | None = None  # files the destination holds as the source has them
    files_at_source: int | None = None
    last_time: float = 0.0
    last_log: float | None = None  # event time of the last periodic log line

    @property
    def files_total(self) -> int | None:
        return None if self.files_pending is None else self.files_copied + self.files_pending

    @property
    def bytes_total(self) -> int | None:
        return None if self.bytes_pending is None else self.bytes_copied + self.bytes_pending

    @property
    def eta(self) -> float | None:
        if self.state in FINAL_STATES:
            return None
        return eta_seconds(self.bytes_pending, self.rate)

    def lag(self) -> str:
        if self.state in FINAL_STATES or self.last_time - self.lag_time > _LAG_SHOWN_FOR:
            return ""
        return format_lag(self.lag_p50, self.lag_max)

    def files_text(self) -> str:
        if self.files_at_source is not None and self.files_done is not None:
            # Files at the destination as they are at the source, of the files there now.
            return f"{min(self.files_done, self.files_at_source)}/{self.files_at_source}"
        total = self.files_total
        return f"{self.files_copied}" if total is None else f"{self.files_copied}/{total}"

    def bytes_text(self) -> str:
        total = self.bytes_total
        done = human_bytes(self.bytes_copied)
        return done if total is None else f"{done}/{human_bytes(total)}"

    def state_text(self) -> str:
        if self.paused and self.state not in FINAL_STATES:
            return "paused"  # for the acquisition: its disk is busy
        if self.findings:
            return f"{self.state} ({self.findings} findings)"
        return self.state

    def update(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        self.last_time = float(event.get("time") or self.last_time)
        if "state" in event and isinstance(event["state"], str):
            self.state = event["state"]
        if kind == "progress":
            for name in (
                "files_copied", "bytes_copied", "files_pending", "bytes_pending",
                "chunks_present", "chunks_expected", "files_done", "files_at_source",
            ):  # fmt: skip
                if event.get(name) is not None:
                    setattr(self, name, int(event[name]))
            rate = event.get("rate")
            if rate is not None:
                rate = max(float(rate), 0.0)
                self.rate = (
                    rate
                    if self.rate is None
                    else _RATE_WEIGHT * rate + (1 - _RATE_WEIGHT) * self.rate
                )
            if event.get("lag_p50") is not None and event.get("lag_max") is not None:
                self.lag_p50, self.lag_max = float(event["lag_p50"]), float(event["lag_max"])
                self.lag_time = self.last_time
            self.failures = int(event.get("failures") or 0)
        elif kind in ("paused", "resumed"):
            self.paused = kind == "paused"
        elif kind == "file_failed":
            self.failures += 1  # the next progress event has the exact count
        elif kind == "finding":
            self.findings += 1
        elif kind == "summary":
            self.files_copied = int(event.get("files_copied") or 0)
            self.bytes_copied = int(event.get("bytes_copied") or 0)
            if event.get("files_at_source") is not None:
                self.files_at_source = int(event["files_at_source"])
            if self.state == "done":
                self.files_pending = self.bytes_pending = 0
                self.files_done = self.files_at_source
            self.failures = len(event.get("failures") or {})
            self.findings = len(event.get("findings") or [])
            self.error = str(event.get("error") or "")
        if kind == "state" and event.get("error"):
            self.error = str(event["error"])

    def log_line(self) -> str:
        files, nbytes = self.files_text(), self.bytes_text()
        parts = [f"{shown(self.source)}: {self.state_text()}; {files} files ({nbytes}) copied"]
        if self.rate is not None:
            parts.append(format_rate(self.rate))
        eta = self.eta
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        lag = self.lag()
        if lag:
            parts.append(f"lag {lag}")
        if self.chunks_expected:
            parts.append(f"{self.chunks_present} of {self.chunks_expected} chunk files present")
        parts.append(f"{self.failures} failed")
        return ", ".join(parts)


# ---- the reporter ------------------------------------------------------------------------


class Reporter:
    """Callable handed to `copy_target(..., events=reporter)`; a context manager around the run.

    display: LIVE (rich live table on `err`), LOG (a log line per target every
    `log_every` seconds), or OFF. json_out: where JSON events go (None: no JSON).
    """

    def __init__(
        self,
        display: str = OFF,
        json_out: TextIO | None = None,
        err: TextIO | None = None,
        log_every: float = LOG_EVERY,
        refresh_per_second: float = REFRESH_PER_SECOND,
        force_terminal: bool | None = None,
    ) -> None:
        if display not in (LIVE, LOG, OFF):
            raise ValueError(f"unknown display {display!r}")
        self.display = display
        self.json_out = json_out
        self.err = err if err is not None else sys.stderr
        self.log_every = log_every
        self.refresh_per_second = refresh_per_second
        self.force_terminal = force_terminal
        self.rows: dict[tuple[str, str], TargetRow] = {}
        self._lock = threading.Lock()
        self._live: Any = None
        self._swapped: list[tuple[logging.StreamHandler, Any]] = []
        self._complained = False

    @property
    def json(self) -> bool:
        """In JSON mode, human lines go to stderr: stdout carries the events only."""
        return self.json_out is not None

    # ---- events ---------------------------------------------------------------------------

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            self._handle(event)
        except Exception as exc:  # a display problem never stops a copy
            if not self._complained:
                self._complained = True
                log.warning("progress reporting failed (the copy goes on): %r", exc)

    def _handle(self, event: dict[str, Any]) -> None:
        line = None
        with self._lock:
            row = None
            if event.get("source") is not None:  # not a command's own `error`
                key = (str(event["source"]), str(event.get("destination")))
                row = self.rows.get(key)
                if row is None:
                    row = self.rows[key] = TargetRow(*key)
                row.update(event)
            if self.json_out is not None:
                self._write_json(event)
            if row is not None and self.display == LOG and event.get("event") == "progress":
                now = row.last_time
                if row.last_log is None:
                    row.last_log = now  # the first line after `log_every`, as the engine did
                elif now - row.last_log >= self.log_every:
                    row.last_log = now
                    line = row.log_line()
        if line is not None:  # outside the lock: logging may go through the live console
            log.info("%s", line)

    def _write_json(self, event: dict[str, Any]) -> None:
        assert self.json_out is not None
        # Names that are not UTF-8 travel as text plus `names_hex` (names.json_record):
        # every line is strict JSON that any reader accepts.
        text = json.dumps(json_record({"schema": SCHEMA, **event}), default=str)
        try:
            self.json_out.write(text + "\n")
            self.json_out.flush()
        except (OSError, ValueError) as exc:  # e.g. `| head`: the reader went away
            self.json_out = None
            raise RuntimeError(f"cannot write JSON events: {exc}") from exc

    def emit(
        self, event: str, source: str | None = None, destination: str | None = None, **fields: Any
    ) -> None:
        """An event of the command itself (an `error`), in the same stream; source and
        destination are null when the error concerns no one target."""
        self(
            {"event": event, "time": time.time(), "source": source, "destination": destination}
            | fields
        )

    # ---- the live display ---------------------------------------------------------------

    def __enter__(self) -> Reporter:
        if self.display == LIVE:
            self._start_live()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        try:
            live.refresh()  # the final states stay on screen
            live.stop()  # shows the cursor again, ends the last line
        finally:
            for handler, stream in self._swapped:
                handler.setStream(stream)
            self._swapped = []

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.err, force_terminal=self.force_terminal, stderr=False)
        live = Live(
            get_renderable=self.render,
            console=console,
            refresh_per_second=self.refresh_per_second,
            redirect_stdout=False,  # stdout carries JSON or the summary lines
            redirect_stderr=self.err is sys.stderr,
            transient=False,
        )
        live.start()
        self._live = live
        # Log lines go through the live console, above the table: handlers keep the
        # stream they were given, so point those writing to our stderr at the console.
        for handler in {*logging.getLogger().handlers, *log.handlers}:
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and handler.stream is self.err
            ):
                self._swapped.append((handler, handler.setStream(_ConsoleStream(console))))

    def render(self) -> Any:
        """The table, one row per target (called by rich's refresh thread)."""
        with self._lock:
            rows = [
                (
                    f"{shown(r.source)}\0{shown(r.destination)}",
                    r.state_text(),
                    r.files_text(),
                    r.bytes_text(),
                    "" if r.state in FINAL_STATES else format_rate(r.rate),
                    format_duration(r.eta),
                    r.lag(),
                    str(r.failures),
                    r.state,
                )
                for r in self.rows.values()
            ]
        return _Frame(rows)


_HEADERS = ("target", "state", "files", "bytes", "rate", "ETA", "lag", "failed")
_STYLES = {"done": "green", "failed": "red", "interrupted": "yellow"}


class _Frame:
    """One frame of the live display: a table sized to the terminal when it is drawn."""

    def __init__(self, rows: list[tuple[str, ...]]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.table import Table
        from rich.text import Text

        rows = self.rows or [("starting …\0", "", "", "", "", "", "", "0", "")]
        # Every column but the target's is as wide as its widest cell; the target's
        # name gets the rest, cut short with an ellipsis on a narrow terminal.
        widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(_HEADERS)]
        widths[0] = max(len(_label(row[0], 1 << 30)) for row in rows)
        rest = options.max_width - sum(widths[1:]) - (len(_HEADERS) - 1)
        rows = [(_label(row[0], max(12, min(widths[0], rest))), *row[1:]) for row in rows]
        widths[0] = max(len(_HEADERS[0]), *(len(row[0]) for row in rows))
        table = Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, header_style="bold")
        for i, header in enumerate(_HEADERS):
            table.add_column(
                header,
                justify="left" if i < 2 else "right",
                no_wrap=True,
                overflow="ellipsis",
                width=widths[i],
            )
        for *cells, state in rows:
            failed = cells[-1]
            table.add_row(
                *cells[:1],
                Text(cells[1], style=_STYLES.get(state, "cyan")),
                *cells[2:-1],
                Text(failed, style="red" if failed != "0" else ""),
            )
        yield table


def _label(names: str, width: int) -> str:
    """'source → destination' if it fits, else the source's path, cut at the left."""
    source, _, destination = names.partition("\0")
    both = f"{source} → {destination}" if destination else source
    if len(both) <= width:
        return both
    return source if len(source) <= width else "…" + source[len(source) - width + 1 :]


class _ConsoleStream:
    """A file-like stream that prints whole lines through a rich console."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.buffer = ""

    def write(self, text: str) -> int:
        from rich.text import Text

        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.console.print(Text.from_ansi(line))
        return len(text)

    def flush(self) -> None:
        pass


def make_reporter(
    as_json: bool = False,
    progress: bool | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> Reporter:
    """--json and --progress/--no-progress: progress None means auto (live on a terminal)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if progress is False:
        display = OFF
    elif progress is True:
        display = LIVE
    else:
        display = LIVE if _is_terminal(err) else LOG
    return Reporter(
        display=display,
        json_out=out if as_json else None,
        err=err,
        force_terminal=True if progress is True else None,
    )


def _is_terminal(stream: TextIO) -> bool:
    """A terminal that can redraw: rich's own test (isatty, TERM not dumb/unknown)."""
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    from rich.console import Console

    console = Console(file=stream)
    return console.is_terminal and not console.is_dumb_terminal
