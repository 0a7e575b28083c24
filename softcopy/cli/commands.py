"""Command line: parse, call the engine, turn outcomes and errors into exit codes."""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..config import TargetConfig, load_targets, make_target
from ..engine.target import StopSignal, Summary, copy_target
from ..errors import EXIT_FAILED, EXIT_OK, ConfigError, SoftcopyError
from ..names import json_record, safe_text, shown, utf8_text
from ..state.journal import RUNNING_STATES
from ..throttle import create_bucket
from ..units import human_bytes, parse_rate
from ..zarr.simulate import FORMATS, LAYOUTS
from .progress import Reporter, make_reporter

log = logging.getLogger("softcopy")

EXIT_CODES_HELP = """\b
Exit codes:
  0  every target copied and verified
  1  a copy or verification failed, or the run was interrupted
  2  usage or configuration error (bad option, targets file, source, metadata)"""


def _target_options(func: Callable) -> Callable:
    """Options shared by `copy` and `run` (for `run` they override the targets file)."""
    options = [
        click.option("--nprocs", type=click.IntRange(min=1), help="Copier processes [2]."),
        click.option(
            "--sleep-time",
            type=click.FloatRange(min=0),
            help="Seconds each copier sleeps after each file [0].",
        ),
        click.option(
            "--wait-for-source/--no-wait-for-source",
            default=None,
            help="Wait for the source to appear instead of failing [no].",
        ),
        click.option(
            "--idle-timeout",
            type=click.FloatRange(min=0),
            help="Finish when nothing changed for this many seconds [off].",
        ),
        click.option(
            "--settle",
            type=click.FloatRange(min=0),
            help="Finish once every expected chunk exists and nothing changed for this long [5].",
        ),
        click.option(
            "--scan-interval",
            type=click.FloatRange(min=0.1),
            help="Seconds between full reconciliation scans of the source [30].",
        ),
        click.option(
            "--complete-marker", help="Name of the source's end-of-acquisition file [complete]."
        ),
        click.option(
            "--fsync/--no-fsync", default=None, help="fsync every file before its rename [no]."
        ),
        click.option(
            "--state-dir",
            type=click.Path(path_type=Path, file_okay=False),
            help="Where the journal lives [$XDG_STATE_HOME/softcopy].",
        ),
        click.option(
            "--reset-journal",
            is_flag=True,
            default=None,
            help="If the journal is damaged (or not softcopy's), move it aside and start a "
            "new one; files already copied are compared with the source, not trusted [no].",
        ),
        click.option(
            "--replace",
            is_flag=True,
            default=None,
            help="Let DESTINATION, softcopy's copy of another source (or of a source deleted "
            "and made again), become a copy of SOURCE, deleting what SOURCE lacks [no].",
        ),
        click.option(
            "--hash/--no-hash",
            "hash_",
            default=None,
            help="BLAKE3 while copying, verify content, write a b3sum manifest [no].",
        ),
        click.option(
            "--max-rate",
            help="Bytes/s for all copiers together, e.g. 200M, 1.5G, 100Mi [no limit]. "
            "With `run`: one limit shared by every target.",
        ),
        click.option(
            "--backoff/--no-backoff",
            default=None,
            help="Pause copiers while the source disk is busy being written [yes].",
        ),
        click.option(
            "--busy-utilisation",
            type=click.FloatRange(0.05, 1.0),
            help="Source disk utilisation that counts as busy [0.75].",
        ),
        click.option(
            "--kind",
            type=click.Choice(["zarr", "directory"]),
            help="zarr (metadata required) or directory (any tree, e.g. a run folder) [zarr].",
        ),
        click.option(
            "--sentinel",
            "sentinels",
            multiple=True,
            help="Root file (glob) saying the run is finished, e.g. CopyComplete.txt; repeatable.",
        ),
        click.option(
            "--sentinel-min-age",
            type=click.FloatRange(min=0),
            help="Seconds a sentinel must be unchanged before it counts [10].",
        ),
        click.option(
            "--ready-age",
            type=click.FloatRange(min=0),
            help="Directory targets: copy a file once unchanged this long [2].",
        ),
        click.option("--include", multiple=True, help="Copy only paths matching this glob."),
        click.option("--exclude", multiple=True, help="Never copy paths matching this glob."),
        click.option(
            "--watch",
            type=click.Choice(["auto", "inotify", "poll"]),
            help="Change notifications; auto polls on network and FUSE filesystems [auto].",
        ),
        click.option(
            "--poll-interval",
            type=click.FloatRange(min=0.1),
            help="Seconds between scans when polling [5].",
        ),
        click.option(
            "--trust-guessed-end/--no-trust-guessed-end",
            default=None,
            help="Let a guessed end (settle, --idle-timeout) count as proven in the "
            "certificate's safe_to_free [no: only a marker or sentinel proves it].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _output_options(func: Callable) -> Callable:
    """What `copy` and `run` show, and whether they write at all."""
    options = [
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="Events as JSON lines on stdout (schema in the user guide); "
            "human lines go to stderr.",
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Live progress table on stderr [auto: on a terminal; otherwise a log line "
            "per target every 10 s]. --progress forces the table, --no-progress shows neither.",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Show what would be copied, re-copied and deleted and whether it fits; "
            "write nothing.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _given(**options: Any) -> dict[str, Any]:
    """Options given on the command line (None or an empty repeatable: not given)."""
    return {k.rstrip("_"): v for k, v in options.items() if v is not None and v != ()}


@click.group(epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="softcopy")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Copy Zarr archives off the acquisition machine while they are being written."""
    ctx.obj = {"verbose": verbose}
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _LineFormatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"
            if verbose
            else "softcopy: %(message)s"
        )
    )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


class _LineFormatter(logging.Formatter):
    """Every log line is one printable line: a name in it (or in an error message that
    quotes one) cannot break the line, move the cursor or fail to encode (names.safe_text).
    A traceback (--verbose) is added after, as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return safe_text(super().formatMessage(record))


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("destination", type=click.Path(path_type=Path))
@_target_options
@_output_options
@click.pass_context
def copy(
    ctx: click.Context,
    source: Path,
    destination: Path,
    as_json: bool,
    progress: bool | None,
    dry_run: bool,
    **options: Any,
) -> None:
    """Copy one zarr SOURCE to DESTINATION (the copy itself; created if missing)."""
    _run(
        ctx,
        lambda: [
            make_target(source, destination, _given(**options, **_dry(dry_run)), "command line")
        ],
        make_reporter(as_json, False if dry_run else progress),  # a plan has no progress
        dry_run,
    )


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("targets_file", type=click.Path(path_type=Path))
@_target_options
@_output_options
@click.pass_context
def run(
    ctx: click.Context,
    targets_file: Path,
    as_json: bool,
    progress: bool | None,
    dry_run: bool,
    **options: Any,
) -> None:
    """Copy every target of TARGETS_FILE in parallel (see targets.example.yaml)."""
    run_rate = options.pop("max_rate", None)  # shared by all targets, not one each
    rate = _parse_rate_option(run_rate) if run_rate else None
    _run(
        ctx,
        lambda: load_targets(targets_file, _given(**options, **_dry(dry_run))),
        make_reporter(as_json, False if dry_run else progress),  # a plan has no progress
        dry_run,
        rate,
    )


def _parse_rate_option(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-rate") from None


def _dry(dry_run: bool) -> dict[str, bool]:
    return {"dry_run": True} if dry_run else {}


def _run(
    ctx: click.Context,
    make: Callable[[], list[TargetConfig]],
    reporter: Reporter,
    dry_run: bool = False,
    run_rate: float | None = None,
) -> None:
    targets: list[TargetConfig] = []

    def body() -> int:
        try:
            targets.extend(make())
            return _copy_all(
                targets, reporter=reporter, dry_run=dry_run, run_rate=run_rate, keep_handlers=True
            )
        except SoftcopyError as exc:
            if reporter.json:  # a script reading stdout learns why it stopped
                one = targets[0] if len(targets) == 1 else None
                reporter.emit(
                    "error",
                    source=str(one.source) if one else None,
                    destination=str(one.destination) if one else None,
                    error=str(exc),
                    exit_code=exc.exit_code,
                )
            raise

    code = _guarded(ctx, body)
    # Every output is written: a late Ctrl-C must not reach the interpreter's shutdown,
    # where Python's default handler is back and the exit status would become "killed by
    # SIGINT" instead of the code decided here. Blocked signals die with the process.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    ctx.exit(code)


def _guarded(ctx: click.Context, body: Callable[[], int]) -> int:
    """One paragraph per error, no traceback unless --verbose."""
    try:
        return body()
    except SoftcopyError as exc:
        if ctx.obj["verbose"]:
            log.exception("error")
        _say(f"softcopy: error: {safe_text(str(exc))}", err=True)
        return exc.exit_code
    except Exception as exc:
        # A bug of ours still gets one paragraph; the traceback is for -v and a report.
        if ctx.obj["verbose"]:
            log.exception("internal error")
        _say(
            f"softcopy: internal error: {type(exc).__name__}: {safe_text(str(exc))}. This is "
            "a bug in softcopy: run again with -v for the traceback, and report it.",
            err=True,
        )
        return EXIT_FAILED


def _copy_all(
    targets: list[TargetConfig],
    stop: StopSignal | None = None,
    reporter: Reporter | None = None,
    dry_run: bool = False,
    run_rate: float | None = None,
    keep_handlers: bool = False,
) -> int:
    """Every target in its own thread; the exit code of all of them.

    `keep_handlers`: signals stay caught until the process exits (see `_signals_to`).
    """
    stop = stop or StopSignal()
    reporter = reporter or make_reporter()
    results: dict[int, Summary | SoftcopyError | BaseException] = {}
    bucket = create_bucket() if run_rate else None
    shared = (bucket, run_rate) if bucket and run_rate else None

    def work(i: int, cfg: TargetConfig) -> None:
        try:
            results[i] = copy_target(cfg, stop, reporter, shared)
        except BaseException as exc:  # reported by the main thread
            results[i] = exc

    threads = [
        threading.Thread(target=work, args=(i, t), name=f"target-{i}", daemon=True)
        for i, t in enumerate(targets)
    ]
    # The live display ends (its last frame stays) before the summary lines print.
    signals = _signals_to(stop, keep=keep_handlers)
    try:
        with reporter, signals:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
    finally:
        if bucket:
            os.unlink(bucket)
    # With --json, stdout carries the events only: the human lines go to stderr.
    err = reporter.json
    codes = [EXIT_OK]
    for i, _ in enumerate(targets):
        result = results[i]
        if isinstance(result, Summary):
            plan = result.plan if dry_run else None
            if plan:  # the engine emitted it as a `plan` event too
                _say(_plan_text(result.source, result.destination, plan), err=err)
                codes.append(EXIT_OK if plan.get("fits") else EXIT_FAILED)
                continue
            _say(safe_text(result.line()), err=err)
            for key, error in sorted(result.failures.items()):
                _say(f"  failed: {shown(key)}: {safe_text(error)}", err=err)
            for finding in result.findings:
                _say(f"  {finding}", err=err)
            if result.error:
                _say(f"softcopy: {shown(result.source)}: {safe_text(result.error)}", err=True)
            codes.append(EXIT_OK if result.ok else EXIT_FAILED)
        elif isinstance(result, SoftcopyError):
            if len(targets) == 1:
                raise result
            _say(f"softcopy: error: {safe_text(str(result))}", err=True)
            if reporter.json:
                reporter.emit(
                    "error",
                    source=str(targets[i].source),
                    destination=str(targets[i].destination),
                    error=str(result),
                    exit_code=result.exit_code,
                )
            codes.append(result.exit_code)
        else:
            raise result
    if signals.received:
        # "Interrupted, run again to resume", whenever the signal came: a rerun of a copy
        # that had finished anyway finds it done.
        codes.append(EXIT_FAILED)
    return max(codes)


PLAN_FIELDS = (
    "files_to_copy",
    "bytes_to_copy",
    "files_to_recopy",
    "files_to_delete",
    "free_bytes",
    "free_inodes",
    "fits",
    "destination_mount",
)


def _plan_text(source: str, destination: str, plan: dict[str, Any]) -> str:
    def files(name: str, size: str | None = None) -> str:
        n = int(plan.get(name) or 0)
        text = f"{n} file{'' if n == 1 else 's'}"
        return f"{text} ({human_bytes(plan.get(size) or 0)})" if size else text

    inodes = plan.get("free_inodes")
    free = human_bytes(plan.get("free_bytes") or 0)
    if inodes is not None:
        free += f" and {inodes} inodes"
    lines = [
        f"plan: {shown(source)} -> {shown(destination)} (dry run: nothing was written)",
        f"  to copy:     {files('files_to_copy', 'bytes_to_copy')}",
        f"  to re-copy:  {files('files_to_recopy')} (at the destination with another size; "
        "part of the files to copy)",
    ]
    if "files_to_compare" in plan:
        lines.append(
            f"  to compare:  {files('files_to_compare', 'bytes_to_compare')} (same size: "
            "kept if identical, copied if not)"
        )
    if "files_trusted" in plan:
        lines.append(f"  trusted:     {files('files_trusted')} (the journal says they are copied)")
    lines.append(f"  to delete:   {files('files_to_delete')}")
    if plan.get("extras_kept"):
        lines.append(
            f"  foreign:     {files('extras_kept')} only in the destination, left alone "
            "(verification will fail: the destination is not softcopy's)"
        )
    lines += [
        f"  free space:  {free} on {plan.get('destination_mount')}",
        "  fits:        "
        + ("yes" if plan.get("fits") else "NO: free space or choose another destination"),
    ]
    return "\n".join(lines)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _signals_to:
    """First Ctrl-C, SIGTERM or SIGHUP (the terminal or ssh session went away): finish the
    files in flight and stop. Second: abort.

    `keep`: the handlers stay for the rest of the process. Python's own would raise
    KeyboardInterrupt (exit 130) or end the process (SIGHUP, SIGTERM) while the summary
    prints, making the exit code a matter of timing; `received` makes it 1 instead.
    """

    def __init__(self, stop: StopSignal, keep: bool = False) -> None:
        self.stop = stop
        self.keep = keep
        self.saved: dict[int, Any] = {}
        self.ended = False
        self.received = 0  # signals, also those after the work ended

    def handle(self, signum: int, frame: object) -> None:
        self.received += 1
        if signum == signal.SIGHUP:
            _silence_hung_up_outputs()
        if self.ended:
            return  # nothing left to stop: the summary is printing
        self.stop.request()
        if self.stop.level == 1:
            again = "Ctrl-C" if signum == signal.SIGINT else "a second signal"
            message = f"softcopy: stopping after the files in flight ({again} to abort)"
        else:
            message = "softcopy: aborting"
        _tell(message)

    def __enter__(self) -> _signals_to:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.saved[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended = True
        if not self.keep:
            for sig, handler in self.saved.items():
                signal.signal(sig, handler)


def _tell(message: str) -> None:
    """A line on stderr from a signal handler; it must never raise.

    sys.stderr as it is now: the live display's proxy prints above the table (click.echo
    would write to the stream beneath it and tear the display).
    """
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError, RuntimeError):  # gone (EIO, EPIPE), closed, re-entered
        _silence(2)


def _say(text: str, err: bool = False) -> None:
    """A line of output that cannot turn a finished run into a crash: after a hang-up the
    terminal is gone (EIO, EPIPE), and a name that is not UTF-8 may not encode."""
    try:
        try:
            click.echo(text, err=err)
        except UnicodeEncodeError:
            click.echo(utf8_text(text), err=err)
    except (OSError, ValueError):
        _silence(2 if err else 1)


def _silence_hung_up_outputs() -> None:
    """After a hang-up, stdout and stderr on the dead terminal go to /dev/null: every later
    write (log lines, the summary, the interpreter's last flush) then succeeds."""
    poller = select.poll()
    for fd in (1, 2):
        poller.register(fd, 0)  # POLLERR and POLLHUP are reported whatever is asked
    for fd, events in poller.poll(0):
        if events & (select.POLLERR | select.POLLHUP) and not events & select.POLLNVAL:
            _silence(fd)


def _silence(fd: int) -> None:
    try:
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)


VERIFY_HELP = """\b
With SOURCE and DESTINATION: missing, extra and size-mismatched files, link
targets, metadata that does not parse; --hash adds content (BLAKE3).
With DESTINATION alone: every file against the b3sum manifest in
DESTINATION.softcopy/manifest.b3 (or --manifest), without the source.
Exit codes: 0 identical, 1 differences found (all listed), 2 usage error."""


@main.command(epilog=VERIFY_HELP)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--hash", "hashes", is_flag=True, help="Compare content by BLAKE3 (reads both sides)."
)
@click.option("--decode", is_flag=True, help="Also decode every chunk at the destination.")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    help="Check DESTINATION against this b3sum manifest (default: its sidecar's).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON record per finding, then a summary."
)
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True)
@click.pass_context
def verify(
    ctx: click.Context,
    paths: tuple[Path, ...],
    hashes: bool,
    decode: bool,
    manifest: Path | None,
    as_json: bool,
    workers: int,
) -> None:
    """Check a copy: `verify SOURCE DESTINATION`, or `verify DESTINATION` against its manifest."""
    ctx.exit(_guarded(ctx, lambda: _verify(paths, hashes, decode, manifest, as_json, workers)))


def _verify(
    paths: tuple[Path, ...],
    hashes: bool,
    decode: bool,
    manifest: Path | None,
    as_json: bool,
    workers: int,
) -> int:
    from ..engine.target import sidecar_dir
    from ..names import json_record
    from ..state.records import RecordFile, Records
    from ..verify.compare import check_manifest, compare_trees
    from ..verify.manifest import MANIFEST, read_manifest

    if len(paths) > 2:
        raise ConfigError(
            " ".join(map(str, paths)), "verify", "give SOURCE DESTINATION or DESTINATION"
        )
    for path in paths:
        if not path.is_dir():
            raise ConfigError(path, "verify", "it is not a directory")
    started = time.monotonic()
    destination = paths[-1]
    if len(paths) == 2:
        if manifest is not None:
            raise ConfigError(
                manifest, "verify", "--manifest checks DESTINATION alone; give one path"
            )
        result = compare_trees(str(paths[0]), str(destination), hashes=hashes, workers=workers)
        mode = "BLAKE3" if hashes else "size"
    else:
        missing = "it does not exist (copies made with --hash have one; or give SOURCE too)"
        records = None
        where: Path | RecordFile | None = manifest
        if where is None:
            # softcopy's own record, beside the directory the copy resolved DESTINATION to:
            # read without following a link, like every record (any owner may read it).
            side = sidecar_dir(Path(os.path.realpath(destination)))
            records = Records.open(side, create=False, check_owner=False)
            if records is None:
                raise ConfigError(side / MANIFEST, "read manifest", missing)
            where = records / MANIFEST
        try:
            # A FIFO, a device or a huge file given as --manifest: ConfigError, no hang.
            digests = read_manifest(where, missing)
        except (OSError, ValueError) as exc:
            raise ConfigError(where, "read manifest", str(exc)) from exc
        finally:
            if records is not None:
                records.close()
        result = check_manifest(str(destination), digests, workers)
        mode = "BLAKE3 against the manifest"
    if decode:
        from ..sources.scan import scan_tree
        from ..zarr.decode import check_decode

        result.findings += check_decode(str(destination), scan_tree(str(destination)).files)
        mode += ", decoded"
    seconds = time.monotonic() - started
    rate = result.bytes / seconds / 1e6 if seconds > 0 else 0.0
    for finding in result.findings:
        click.echo(json.dumps(json_record(finding.as_dict())) if as_json else str(finding))
    summary = {
        "kind": "summary",
        "ok": result.ok,
        "findings": len(result.findings),
        "files": result.files,
        "bytes": result.bytes,
        "compared_by": mode,
        "seconds": round(seconds, 3),
    }
    if as_json:
        click.echo(json.dumps(summary))
    elif result.ok:
        click.echo(
            f"identical: {result.files} files ({result.bytes} bytes) compared by {mode} "
            f"in {seconds:.1f} s ({rate:.0f} MB/s)"
        )
    else:
        click.echo(f"{len(result.findings)} difference(s) found", err=True)
    return EXIT_OK if result.ok else EXIT_FAILED


@main.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the journal lives [$XDG_STATE_HOME/softcopy].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON record per target.")
@click.pass_context
def status(ctx: click.Context, state_dir: Path | None, as_json: bool) -> None:
    """Targets in the journal: state, files and bytes done and pending, failures, last activity."""
    from ..state.journal import default_state_dir, read_status

    def body() -> int:
        targets = read_status(state_dir or default_state_dir())
        for t in targets:
            if as_json:
                _say(json.dumps(_status_record(t), default=str))
            else:
                _say(_status_text(t))
        if not targets and not as_json:
            _say("no targets in the journal")
        return EXIT_OK

    ctx.exit(_guarded(ctx, body))


def _status_text(t: dict[str, Any]) -> str:
    def when(seconds: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))

    pad = " " * 12
    lines = [
        f"{t['state']:<11} {shown(t['source'])} -> {shown(t['destination'])}",
        f"{pad}{t['files_done']} files ({human_bytes(t['bytes_done'])}) done, "
        f"{t['files_pending']} files ({human_bytes(t['bytes_pending'])}) pending, "
        f"{len(t['failures'])} failed; last activity {when(t['updated'])}",
    ]
    if t.get("recorded_state"):
        lines.append(
            f"{pad}not running: its process ({t['pid']} on {t['host']}) is gone; it was "
            f"{t['recorded_state']}, last seen {when(t['updated'])}; run the same command "
            "again to resume"
        )
    elif t["running"] is None and t["state"] in RUNNING_STATES and t.get("pid"):
        lines.append(f"{pad}running on {t['host']} (pid {t['pid']}), as far as it last said")
    if t.get("reason") and not t["error"]:
        # While copying: what it waits for, or why nothing moves; after: why it ended.
        lines.append(f"{pad}{safe_text(t['reason'])}")
    if t["error"]:
        lines.append(f"{pad}{safe_text(t['error'])}")
    for key, error in sorted(t["failures"].items()):
        lines.append(f"{pad}failed: {shown(key)}: {safe_text(error)}")
    return "\n".join(lines)


def _status_record(t: dict[str, Any]) -> dict[str, Any]:
    """Valid UTF-8 JSON: a name that is not UTF-8 shows its raw bytes as \\xNN, and the
    record's `names_hex` maps that text to the exact bytes (see names.json_record)."""
    extra = {"last_seen": t["updated"]} if t.get("recorded_state") else {}
    return json_record({**t, **extra})


# ---- simulation and demo ---------------------------------------------------------------


def _simulation_options(func: Callable) -> Callable:
    options = [
        click.option(
            "--format", "fmt", type=click.Choice(FORMATS), default="v3", show_default=True
        ),
        click.option("--layout", type=click.Choice(LAYOUTS), default="array", show_default=True),
        click.option("--timepoints", type=click.IntRange(min=1), default=10, show_default=True),
        click.option("--interval", type=click.FloatRange(min=0), default=0.2, show_default=True),
        click.option("--shape", default="4,64,64", show_default=True, help="One timepoint: z,y,x."),
        click.option("--chunks", default="1,32,32", show_default=True),
        click.option(
            "--holes",
            type=click.FloatRange(0, 1),
            default=0.0,
            help="Fraction of fill-value chunks.",
        ),
        click.option("--grow/--no-grow", default=False, help="Resize the time axis per timepoint."),
        click.option(
            "--partial-writes", type=click.IntRange(min=1), default=1, help="Slabs per timepoint."
        ),
        click.option(
            "--delete-chunk/--no-delete-chunk", default=False, help="Fill timepoint 0 at the end."
        ),
        click.option("--complete/--no-complete", default=True, help="Touch 'complete' at the end."),
        click.option("--wells", type=click.IntRange(min=1), default=2, show_default=True),
        click.option("--seed", type=int, default=0),
        click.option("--compress/--no-compress", default=True, help="blosc/zstd or raw bytes."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _spec(fmt: str, shape: str, chunks: str, **options: Any):
    from ..zarr.simulate import SimulationSpec

    def ints(text: str, name: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in text.split(","))
        except ValueError:
            raise click.BadParameter(
                f"{text!r} is not a comma-separated list of integers", param_hint=name
            ) from None

    try:
        return SimulationSpec(
            format=fmt, shape=ints(shape, "--shape"), chunks=ints(chunks, "--chunks"), **options
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@main.command()
@click.argument("destination", type=click.Path(path_type=Path))
@_simulation_options
@click.pass_context
def simulate(ctx: click.Context, destination: Path, **options: Any) -> None:
    """Write a zarr archive with tensorstore the way a microscope does (for demos and tests)."""
    from ..zarr.simulate import simulate as run_simulation

    spec = _spec(**options)

    def body() -> int:
        try:
            summary = run_simulation(destination, spec, log=lambda m: log.info("%s", m))
        except FileExistsError as exc:
            raise SoftcopyError(destination, "simulate into", str(exc)) from exc
        click.echo(
            f"simulated {summary['files']} files ({summary['bytes']} bytes) in "
            f"{summary['seconds']:.1f} s at {destination}"
        )
        return EXIT_OK

    ctx.exit(_guarded(ctx, body))


@main.command()
@click.option("--keep", is_flag=True, help="Keep the demo directory instead of deleting it.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="v3", show_default=True)
@click.option("--layout", type=click.Choice(LAYOUTS), default="ome", show_default=True)
@click.option("--nprocs", type=click.IntRange(min=1), default=2, show_default=True)
@click.pass_context
def demo(ctx: click.Context, keep: bool, fmt: str, layout: str, nprocs: int) -> None:
    """Simulate an acquisition, copy it live, verify, and print a summary."""
    base = Path(tempfile.mkdtemp(prefix="softcopy-demo-"))
    source, destination = base / "acquisition.zarr", base / "copy.zarr"
    click.echo(f"softcopy demo in {base}: a simulated microscope writes {source.name} ...")
    writer = subprocess.Popen(
        [sys.executable, "-m", "softcopy", "simulate", str(source), "--format", fmt,
         "--layout", layout, "--timepoints", "12", "--interval", "0.25", "--holes", "0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    code = EXIT_FAILED
    stop = StopSignal()

    def relay_writer() -> None:
        # sys.stderr as it is at each line: above the live table while it is shown
        # (the writer's own writes to the terminal would tear it).
        assert writer.stderr is not None
        for line in writer.stderr:
            print(line, end="", file=sys.stderr, flush=True)

    relay = threading.Thread(target=relay_writer, daemon=True)
    relay.start()

    def watch_writer() -> None:
        if writer.wait() != 0:
            stop.request()  # nothing more will come: stop waiting for it

    threading.Thread(target=watch_writer, daemon=True).start()
    try:
        cfg = make_target(source, destination, {"nprocs": nprocs, "wait_for_source": True}, "demo")
        code = _guarded(ctx, lambda: _copy_all([cfg], stop, make_reporter()))
        if writer.wait(60) != 0:
            click.echo("softcopy: the simulated writer failed", err=True)
            code = EXIT_FAILED
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        relay.join(5)
        if keep:
            click.echo(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    ctx.exit(code)


if __name__ == "__main__":
    main()
