"""The `--on-done` / `--on-failed` hooks of `softcopy watch`: one shell command per ended run.

A hook is someone else's program: it may not read its input, print without end, hang, or
leave a child behind that holds its output open. None of that may block the service or
grow its memory, and none of it changes the run's data state: `run_hook` only reports
what happened, as a `HookResult` the journal keeps.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shlex
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..names import name_bytes, safe_text, shown
from ..priority import ours_only

OUTPUT_TAIL = 4096

# After the shell exited, how long a child it left behind may keep the output pipe open.
EXIT_GRACE = 1.0
# Between SIGTERM and SIGKILL to the hook's process group.
KILL_GRACE = 2.0
# After SIGKILL, how long to wait for the pipe to close (a child that left the group
# may still hold it; it is not ours to chase).
EOF_AFTER_KILL = 0.5
# Only when pidfd_open is missing: how often to look whether the shell has exited.
_POLL_TICK = 0.05

_READ_SIZE = 65536
_WRITE_SIZE = 65536

ENV_FIELDS = {
    "SOFTCOPY_RUN": "run",
    "SOFTCOPY_SOURCE": "source",
    "SOFTCOPY_DESTINATION": "destination",
    "SOFTCOPY_STATE": "state",
}

# Words sh runs without looking on PATH: a hook made of them needs no program file.
SHELL_WORDS = frozenset(
    {":", "true", "false", "echo", "printf", "exec", "cd", "test", "[", "exit", "set"}
    | {"export", "if", "for", "while", "case", "{", "("}
)

# softcopy's own line to its service manager (sd_notify): a hook that inherited it could
# speak for softcopy (READY, STOPPING, watchdog pings) if the unit accepts other pids.
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")

# What sh itself means by these; a hook may exit with them too, so they are only a hint.
_SHELL_CODES = {
    126: "the shell found the program but could not execute it",
    127: "the shell could not find or start the program",
}

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class HookResult:
    """What one hook did, ready for the journal and `status`."""

    command: str
    exit_code: int | None  # None: did not exit by itself (timed out, killed, could not start)
    timed_out: bool
    output: str  # the last OUTPUT_TAIL bytes of stdout+stderr, safe text (see `tail_text`)
    seconds: float
    error: str  # "" or why it failed, in words

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def run_hook(command: str, run: dict[str, Any], timeout: float) -> HookResult:
    """Run `command` through `/bin/sh -c` for one ended run; never raises.

    stdin: `run` as one JSON object, `json.dumps(run, default=str)` and a newline, then
    closed. The object is dumped as given, with `ensure_ascii` on: a name byte that is
    not UTF-8 (a surrogateescape character) appears as its `\\udcXX` escape, which
    Python's `json.loads` turns back into the same key (`os.fsencode` gives the bytes).
    A caller that wants `status --json`'s form passes `names.json_record(run)`.

    Environment: softcopy's as it was started (less its sd_notify variables, PRIVATE_ENV,
    and its own OPENBLAS_NUM_THREADS, priority.ours_only), plus SOFTCOPY_RUN,
    SOFTCOPY_SOURCE, SOFTCOPY_DESTINATION and SOFTCOPY_STATE from run["run"], run["source"],
    run["destination"], run["state"] ("" when missing); a name's value is its exact bytes.

    Working directory: the run's destination when it is a directory (not a link to
    one), else softcopy's current directory.

    The hook runs in its own session, so softcopy's Ctrl-C does not reach it and a timeout
    reaches everything it started: after `timeout` seconds SIGTERM to its process group,
    SIGKILL 2 s later. Its output (stdout and stderr, interleaved) is read as it comes and
    only the tail is kept; it never reaches softcopy's own stdout. A hook whose shell has
    exited but whose child still holds the output pipe gets `EXIT_GRACE` seconds, then its
    group is killed; its exit code is the shell's.
    """
    started = time.monotonic()
    try:
        payload = (json.dumps(run, default=str) + "\n").encode("ascii")
    except (TypeError, ValueError) as exc:  # a circular record: a caller's bug, still no raise
        return HookResult(command, None, False, "", 0.0, f"could not start: {exc}")
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=_working_directory(run),
            env=_environment(run),
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the command or env
        return HookResult(
            command, None, False, "", time.monotonic() - started, f"could not start: {exc}"
        )
    try:
        output, timed_out = _supervise(proc, payload, started + max(timeout, 0.0))
    finally:
        _kill_group_if_running(proc)
    returncode = proc.wait()
    seconds = time.monotonic() - started
    if timed_out:
        error = f"killed after {_seconds_text(timeout)} s (--hook-timeout)"
        return HookResult(command, None, True, output, seconds, error)
    if returncode < 0:
        return HookResult(command, None, False, output, seconds, _signal_text(-returncode))
    error = "" if returncode == 0 else f"exit code {returncode}"
    if returncode in _SHELL_CODES:
        error += f" ({_SHELL_CODES[returncode]})"
    return HookResult(command, returncode, False, output, seconds, error)


def check_hook(command: str, option: str) -> None:
    """Refuse, before anything starts, a hook whose program cannot run.

    The program is the first word after any `NAME=value` assignments: a word with a "/"
    must be an absolute path (the hook runs in the run's destination, so a relative one
    would mean something else there) to an executable regular file; any other word must
    be a shell builtin or keyword sh runs itself, or a program on PATH. Only the first
    command of a list or pipeline is checked. Raises ConfigError (exit 2).
    """
    action = f"check {option} hook"
    if "\0" in command:
        raise ConfigError(command, action, "it holds a NUL byte, which no shell command can")
    try:
        words = _shell_words(command)
    except ValueError as exc:
        raise ConfigError(
            command, action, f"it cannot be parsed as a shell command: {exc}"
        ) from None
    while words and _ASSIGNMENT.match(words[0]):
        words.pop(0)
    if not words:
        raise ConfigError(command, action, "it names no program to run")
    program = words[0]
    problem = _program_problem(program)
    if problem:
        raise ConfigError(command, action, f"program '{shown(program)}' {problem}")


def tail_text(data: bytes, truncated: bool) -> str:
    """The kept output as text for a journal: newlines kept, every other control character
    and every byte that is not UTF-8 escaped (names.safe_text); a character cut in two by
    the tail's start is dropped rather than shown as raw bytes."""
    if truncated:
        skip = 0
        while skip < min(3, len(data)) and 0x80 <= data[skip] <= 0xBF:
            skip += 1  # UTF-8 continuation bytes of a character that began before the tail
        data = data[skip:]
    text = data.decode("utf-8", "surrogateescape")
    return "\n".join(safe_text(line) for line in text.split("\n"))


def _shell_words(command: str) -> list[str]:
    # punctuation_chars: "(true)" and "true;false" split at the operators as sh does.
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def _program_problem(program: str) -> str:
    if "/" not in program:
        if program in SHELL_WORDS or shutil.which(program):
            return ""
        return "is not a shell builtin and is not found on PATH"
    path = os.path.expanduser(os.path.expandvars(program))
    if "$" in path:
        return ""  # a variable sh alone can expand: it runs, or the hook reports exit 127
    if not os.path.isabs(path):
        return "is a relative path; hooks run in the run's destination, give an absolute path"
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot be used: {os.strerror(exc.errno) if exc.errno else exc}"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if not os.access(path, os.X_OK):
        return "is not executable (no x permission; chmod +x it)"
    return ""


def _environment(run: dict[str, Any]) -> dict[str, Any]:
    mine = ours_only(dict(os.environ))
    env: dict[str, Any] = {k: v for k, v in mine.items() if k not in PRIVATE_ENV}
    for variable, field in ENV_FIELDS.items():
        value = run.get(field)
        # Bytes: a name that is not UTF-8 reaches the hook as its exact bytes.
        env[variable] = b"" if value is None else name_bytes(str(value))
    return env


def _working_directory(run: dict[str, Any]) -> str | None:
    destination = run.get("destination")
    if not destination:
        return None
    try:
        is_dir = stat.S_ISDIR(os.lstat(str(destination)).st_mode)
    except (OSError, ValueError):
        return None
    return str(destination) if is_dir else None


def _supervise(proc: subprocess.Popen, payload: bytes, deadline: float) -> tuple[str, bool]:
    """Feed stdin, drain output and watch the shell until it ended and its pipe closed, or
    the deadline passed and the group was killed. The shell is left unreaped (a zombie
    keeps its pid, and so the group id, from being reused while we may still signal it)."""
    assert proc.stdin is not None and proc.stdout is not None
    tail = _Tail()
    sel = selectors.DefaultSelector()
    pidfd = _open_pidfd(proc.pid)
    stdin_fd: int | None = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    stdout_fd = proc.stdout.fileno()
    sel.register(stdout_fd, selectors.EVENT_READ)
    sel.register(stdin_fd, selectors.EVENT_WRITE)
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ)
    sent = 0
    exited_at: float | None = None
    eof = False
    timed_out = False
    term_at: float | None = None  # when SIGTERM went to the group
    kill_at: float | None = None  # when SIGKILL went to the group
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and _has_exited(proc.pid):
                exited_at = now
                if stdin_fd is not None:  # nobody is left to read it (or a stray child is)
                    sel.unregister(stdin_fd)
                    _close_stdin(proc)
                    stdin_fd = None
                if pidfd is not None:
                    sel.unregister(pidfd)
            if eof and exited_at is not None:
                break
            # What to do next and by when: each branch ends in a bounded wait.
            if kill_at is not None:
                limit = kill_at + EOF_AFTER_KILL
                if exited_at is not None and now >= limit:
                    break  # a child that left the group holds the pipe: not ours to wait for
            elif term_at is not None:
                limit = term_at + KILL_GRACE
                if now >= limit:
                    _signal_group(proc.pid, signal.SIGKILL)
                    kill_at = now
                    continue
            elif exited_at is not None:
                limit = min(exited_at + EXIT_GRACE, max(deadline, exited_at))
                if now >= limit:
                    _signal_group(proc.pid, signal.SIGTERM)
                    term_at = now
                    continue
            else:
                limit = deadline
                if now >= limit:
                    timed_out = True
                    _signal_group(proc.pid, signal.SIGTERM)
                    term_at = now
                    continue
            wait = max(0.0, limit - now)
            if exited_at is None and (pidfd is None or wait == 0.0):
                # No exit event to wait on, or a killed shell not yet gone: look again soon.
                wait = _POLL_TICK if wait == 0.0 else min(wait, _POLL_TICK)
            for key, _ in sel.select(wait):
                if key.fd == stdout_fd:
                    if not tail.read(stdout_fd):
                        eof = True
                        sel.unregister(stdout_fd)
                elif key.fd == stdin_fd:
                    sent, done = _feed(stdin_fd, payload, sent)
                    if done:
                        sel.unregister(stdin_fd)
                        _close_stdin(proc)
                        stdin_fd = None
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        if stdin_fd is not None:
            _close_stdin(proc)
        proc.stdout.close()
    return tail.text(), timed_out


class _Tail:
    """The last OUTPUT_TAIL bytes of a stream, however much passes through."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.truncated = False

    def read(self, fd: int) -> bool:
        """One read; False at end of file."""
        try:
            chunk = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        self.data += chunk
        if len(self.data) > OUTPUT_TAIL:
            del self.data[:-OUTPUT_TAIL]
            self.truncated = True
        return True

    def text(self) -> str:
        return tail_text(bytes(self.data), self.truncated)


def _feed(fd: int, payload: bytes, sent: int) -> tuple[int, bool]:
    """Write what the pipe takes now; (bytes sent, finished). A hook that closed its stdin
    or exited (EPIPE) has simply read all it wanted."""
    try:
        sent += os.write(fd, payload[sent : sent + _WRITE_SIZE])
    except BlockingIOError:
        return sent, False
    except OSError:
        return sent, True
    return sent, sent >= len(payload)


def _close_stdin(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()  # type: ignore[union-attr]
    except OSError:
        pass  # EPIPE on the final flush: the hook stopped reading


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    # WNOWAIT: look without reaping, so the pid and group id stay ours until proc.wait().
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # reaped by someone else: it has certainly exited
    return info is not None and info.si_pid == pid


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _kill_group_if_running(proc: subprocess.Popen) -> None:
    """On the way out (normal or an exception such as KeyboardInterrupt), nothing of the
    hook's may keep running unseen when its shell is still there."""
    if not _has_exited(proc.pid):
        _signal_group(proc.pid, signal.SIGKILL)


def _seconds_text(seconds: float) -> str:
    return f"{seconds:g}"


def _signal_text(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"killed by signal {number}"
    return f"killed by signal {number} ({name})"
