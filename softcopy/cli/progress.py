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
# States in which the source may still be written: an ETA then is the time to catch up.
_ACQUIRING = ("waiting", "copying")


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
    bytes_at_source: int | None = None
    started: float | None = None  # event time of the target's first event
    seconds: float | None = None  # how long it took, once it ended (the summary's)
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

    def bytes_done(self) -> int | None:
        """Bytes the destination holds as the source has them: of files, not copy
        operations (a file copied twice counts once); None when the engine did not say."""
        if self.bytes_at_source is None or self.bytes_pending is None:
            return None
        return min(max(self.bytes_at_source - self.bytes_pending, 0), self.bytes_at_source)

    def bytes_text(self) -> str:
        done = self.bytes_done()
        if done is not None:
            return f"{human_bytes(done)}/{human_bytes(self.bytes_at_source or 0)}"
        total = self.bytes_total
        copied = human_bytes(self.bytes_copied)
        return copied if total is None else f"{copied}/{human_bytes(total)}"

    def percent_text(self) -> str:
        """How much of what the source holds now is copied: by bytes, by files when the
        source holds no bytes; '' while unknown."""
        if self.state == "done":
            return "100%"
        done, total = self.bytes_done(), self.bytes_at_source
        if not total:
            done, total = self.files_done, self.files_at_source
        if done is None or not total:
            return ""
        # Floored: 100% only once everything is there, never for 99.6%.
        return f"{min(done, total) * 100 // total}%"

    def elapsed(self, now: float) -> float | None:
        if self.seconds is not None and self.state in FINAL_STATES:
            return self.seconds
        return None if self.started is None else max(now - self.started, 0.0)

    def eta_text(self, words: bool = False) -> str:
        """The ETA; with `words`, saying while the source may still be written that it is
        the time to catch up with it (the table says so once, below)."""
        eta = self.eta
        if eta is None:
            return ""
        catch_up = words and self.state in _ACQUIRING
        return format_duration(eta) + (" to catch up" if catch_up else "")

    def state_text(self) -> str:
        if self.paused and self.state not in FINAL_STATES:
            return "paused"  # for the acquisition: its disk is busy
        if self.findings:
            return f"{self.state} ({self.findings} findings)"
        return self.state

    def update(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        self.last_time = float(event.get("time") or self.last_time)
        if self.started is None and event.get("time"):
            self.started = self.last_time
        if "state" in event and isinstance(event["state"], str):
            self.state = event["state"]
        if kind == "progress":
            for name in (
                "files_copied", "bytes_copied", "files_pending", "bytes_pending",
                "chunks_present", "chunks_expected", "files_done", "files_at_source",
                "bytes_at_source",
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
            if event.get("bytes_at_source") is not None:
                self.bytes_at_source = int(event["bytes_at_source"])
            if event.get("seconds") is not None:
                self.seconds = float(event["seconds"])
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
        percent = self.percent_text()
        if percent:
            parts.append(percent)
        if self.rate is not None:
            parts.append(format_rate(self.rate))
        elapsed = self.elapsed(self.last_time)
        if elapsed is not None:
            parts.append(f"elapsed {format_duration(elapsed)}")
        eta = self.eta_text(words=True)
        if eta:
            parts.append(f"ETA {eta}")
        lag = self.lag()
        if lag:
            parts.append(f"lag {lag} (median/max)")
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
        """The table, two lines per target (called by rich's refresh thread)."""
        now = time.time()
        with self._lock:
            rows = [
                FrameRow(
                    shown(r.source),
                    shown(r.destination),
                    (
                        r.state_text(),
                        r.files_text(),
                        r.percent_text(),
                        r.bytes_text(),
                        "" if r.state in FINAL_STATES else format_rate(r.rate),
                        format_duration(r.elapsed(now)),
                        r.eta_text(),
                        r.lag(),
                        str(r.failures),
                    ),
                    r.state,
                )
                for r in self.rows.values()
            ]
        return _Frame(rows)


# The numbers line of each target; its names line (source → destination) is above it.
HEADERS = ("state", "files", "%", "bytes", "rate", "elapsed", "ETA", "lag med/max", "failed")
# Dropped in this order when a terminal is narrower than the numbers line.
_DROPPED_FIRST = ("rate", "elapsed", "bytes", "lag med/max", "%")
_STYLES = {"done": "green", "failed": "red", "interrupted": "yellow"}
NOTE = "ETA: time to catch up with the source, not to the end of the acquisition"


@dataclass
class FrameRow:
    source: str
    destination: str
    cells: tuple[str, ...]  # one per HEADERS
    state: str


def frame_lines(rows: list[FrameRow], width: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """The display as lines of at most `width` columns, each (text, [(cell, style)]).

    A header, then per target a line with its names (each path shortened in the middle
    when both do not fit) and a line with its numbers; the ETA note last.
    """
    width = max(width, 20)
    columns = list(range(len(HEADERS)))
    cells = [r.cells for r in rows] or [("starting …", *[""] * (len(HEADERS) - 1))]
    widths = [max([len(HEADERS[i])] + [len(c[i]) for c in cells]) for i in columns]

    def total() -> int:
        return sum(widths[i] for i in columns) + len(columns) - 1

    for name in _DROPPED_FIRST:
        if total() <= width:
            break
        columns.remove(HEADERS.index(name))

    def line(values: tuple[str, ...], styles: tuple[str, ...]) -> tuple[str, list]:
        parts = [
            (values[i].ljust(widths[i]) if i == 0 else values[i].rjust(widths[i]), styles[i])
            for i in columns
        ]
        spaced = []
        for n, part in enumerate(parts):
            spaced += [(" ", "")] if n else []
            spaced.append(part)
        text = "".join(p for p, _ in spaced)[:width]
        return text, spaced

    plain = ("",) * len(HEADERS)
    out = [line(HEADERS, ("bold",) * len(HEADERS))]
    for r in rows or [FrameRow("", "", cells[0], "")]:
        if r.source:
            names = names_line(r.source, r.destination, width)
            out.append((names, [(names, "")]))
        styles = list(plain)
        styles[0] = _STYLES.get(r.state, "cyan")
        styles[-1] = "red" if r.cells[-1] not in ("0", "") else ""
        out.append(line(r.cells, tuple(styles)))
    note = shorten_middle(NOTE, width) if len(NOTE) > width else NOTE
    out.append((note, [(note, "dim")]))
    return out


def names_line(source: str, destination: str, width: int) -> str:
    """'source → destination' in `width` columns, each shortened in the middle as needed:
    both ends of a path (its root and its file name) say more than its middle."""
    arrow = " → "
    if len(source) + len(arrow) + len(destination) <= width:
        return f"{source}{arrow}{destination}"
    room = max(width - len(arrow), 2)
    # The source gets half, or less when the destination is shorter than its half.
    first = min(len(source), max(room // 2, room - len(destination)))
    return shorten_middle(source, first) + arrow + shorten_middle(destination, room - first)


def shorten_middle(text: str, width: int) -> str:
    """'/acquisition/…/run42.zarr': the start and (longer) the end, an ellipsis between."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    keep = width - 1
    head = keep // 3
    return text[:head] + "…" + text[len(text) - (keep - head) :]


class _Frame:
    """One frame of the live display: laid out for the terminal's width when it is drawn."""

    def __init__(self, rows: list[FrameRow]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        for _, parts in frame_lines(self.rows, options.max_width):
            text = Text(no_wrap=True, overflow="ellipsis")
            for part, style in parts:
                text.append(part, style=style or None)
            text.truncate(options.max_width)
            yield text


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


def verbose_asked() -> bool:
    """-v, before or after the command (cli/common.py keeps it on the root context's obj),
    or a log level of debug: what asks for per-file detail, e.g. the dry run's listing."""
    import click

    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    if isinstance(obj, dict) and obj.get("verbose"):
        return True
    return logging.getLogger().isEnabledFor(logging.DEBUG)


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
