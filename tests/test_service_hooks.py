"""Hooks of `softcopy watch`: real /bin/sh processes fed a run, timed out, killed, checked."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from conftest import wait_for

from softcopy.errors import ConfigError
from softcopy.service.hooks import OUTPUT_TAIL, check_hook, run_hook

# A bound on a hang, never a wait: each hook below ends long before it unless it is broken.
LONG = 30.0


def _run(tmp_path: Path, name: str = "acq-1", **extra: object) -> dict[str, object]:
    destination = tmp_path / "dest" / "acq"
    destination.mkdir(parents=True, exist_ok=True)
    return {
        "run": name,
        "source": str(tmp_path / "src" / "acq"),
        "destination": str(destination),
        "state": "done",
        "attempts": 1,
        "files": 3,
        "bytes": 12345,
        "certificate": None,
        **extra,
    }


def _gone(pid: int) -> bool:
    """The process no longer runs: no such pid, or a zombie nobody has reaped yet."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] == "Z"


def _wait_gone(pid: int) -> None:
    # The pipe closes as the child exits, a moment before it is a zombie: wait for that.
    wait_for(lambda: _gone(pid), timeout=10.0, what=f"hook child {pid} to be gone")


def test_hook_gets_the_run_on_stdin_and_in_its_environment(tmp_path):
    out = tmp_path / "seen"
    out.mkdir()
    # A name that is not UTF-8 (byte 0xff), as os.scandir gives it.
    run = _run(tmp_path, name=os.fsdecode(b"acq-\xff-1"))
    q = shlex.quote(str(out))
    command = (
        f"cat > {q}/stdin.json; pwd -P > {q}/cwd; "
        f'printf "%s\\0" "$SOFTCOPY_RUN" "$SOFTCOPY_SOURCE" "$SOFTCOPY_DESTINATION" '
        f'"$SOFTCOPY_STATE" > {q}/env'
    )
    result = run_hook(command, run, LONG)
    assert result.ok and result.exit_code == 0 and result.error == "", result
    assert json.loads((out / "stdin.json").read_text()) == run
    env = (out / "env").read_bytes().split(b"\0")[:-1]
    assert env == [
        b"acq-\xff-1",
        os.fsencode(run["source"]),
        os.fsencode(run["destination"]),
        b"done",
    ]
    assert (out / "cwd").read_text().strip() == os.path.realpath(run["destination"])


def test_missing_fields_are_empty_and_cwd_falls_back_when_destination_is_absent(
    tmp_path, monkeypatch
):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    seen = tmp_path / "seen"
    run = {"run": "r", "destination": str(tmp_path / "not-there")}
    q = shlex.quote(str(seen))
    command = f'pwd -P > {q}; printf "%s" "${{SOFTCOPY_STATE-unset}}" >> {q}'
    assert run_hook(command, run, LONG).ok
    assert seen.read_text() == f"{os.path.realpath(here)}\n"


def test_hook_inherits_the_environment_but_not_the_service_managers_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTCOPY_TEST_INHERITED", "yes")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    seen = tmp_path / "seen"
    command = 'echo "$SOFTCOPY_TEST_INHERITED ${NOTIFY_SOCKET-none} ${WATCHDOG_USEC-none}"'
    result = run_hook(f"{command} > {shlex.quote(str(seen))}", _run(tmp_path), LONG)
    assert result.ok and seen.read_text() == "yes none none\n"


def test_destination_that_is_a_link_is_not_the_working_directory(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "dest-link"
    link.symlink_to(elsewhere)
    monkeypatch.chdir(tmp_path)
    seen = tmp_path / "seen"
    assert run_hook(f"pwd -P > {shlex.quote(str(seen))}", {"destination": str(link)}, LONG).ok
    assert seen.read_text().strip() == os.path.realpath(tmp_path)


def test_exit_code_and_interleaved_output_are_recorded(tmp_path):
    result = run_hook("echo out; echo err >&2; echo more; exit 3", _run(tmp_path), LONG)
    assert result.exit_code == 3 and not result.ok and not result.timed_out
    assert result.error == "exit code 3"
    assert result.output == "out\nerr\nmore\n"


def test_output_control_characters_and_raw_bytes_are_escaped(tmp_path):
    result = run_hook(r"printf 'a\033[31mb\tc\nd\377'", _run(tmp_path), LONG)
    assert result.ok
    assert result.output == "a\\x1b[31mb\\tc\nd\\xff"


def test_a_megabyte_of_output_keeps_only_the_tail(tmp_path):
    command = "head -c 1048576 /dev/zero | tr '\\0' a; printf 'é-END' >&2"
    result = run_hook(command, _run(tmp_path), LONG)
    assert result.ok and not result.timed_out, result
    assert result.output.endswith("aé-END")
    assert len(result.output.encode()) <= OUTPUT_TAIL
    assert set(result.output[: -len("é-END")]) == {"a"}


def test_a_cut_character_at_the_tails_start_is_dropped(tmp_path):
    # 'é' is 2 bytes: an odd count of them before a tail of even length cuts one in two.
    n = OUTPUT_TAIL // 2 + 1
    result = run_hook(f"for i in $(seq {n}); do printf 'é'; done; printf x", _run(tmp_path), LONG)
    assert result.ok
    assert result.output == "é" * (OUTPUT_TAIL // 2 - 1) + "x"


def test_hook_output_never_reaches_softcopys_own_streams(tmp_path, capfd):
    assert run_hook("echo on-stdout; echo on-stderr >&2", _run(tmp_path), LONG).ok
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_hanging_hook_and_its_child_are_killed_at_the_timeout(tmp_path):
    pidfile = tmp_path / "child"
    command = f"sleep 60 & echo $! > {shlex.quote(str(pidfile))}; wait"
    result = run_hook(command, _run(tmp_path), 2.0)
    assert result.timed_out and result.exit_code is None and not result.ok
    assert result.error == "killed after 2 s (--hook-timeout)"
    _wait_gone(int(pidfile.read_text()))


def test_a_hook_ignoring_sigterm_is_killed(tmp_path):
    pidfile = tmp_path / "child"
    # An ignored signal stays ignored in the child: only SIGKILL ends either.
    command = f"trap '' TERM; sleep 60 & echo $! > {shlex.quote(str(pidfile))}; wait; sleep 60"
    result = run_hook(command, _run(tmp_path), 2.0)
    assert result.timed_out and result.exit_code is None
    _wait_gone(int(pidfile.read_text()))


def test_a_hook_that_never_reads_a_big_stdin_does_not_hang(tmp_path):
    run = _run(tmp_path, blob="x" * 1_000_000)
    result = run_hook("sleep 0.2; echo ignored-stdin", run, LONG)
    assert result.ok and not result.timed_out and result.output == "ignored-stdin\n"


def test_a_hook_that_reads_part_of_stdin_then_exits(tmp_path):
    run = _run(tmp_path, blob="x" * 1_000_000)
    result = run_hook("head -c 10 >/dev/null; exit 0", run, LONG)
    assert result.ok and not result.timed_out


def test_a_background_child_holding_the_pipe_does_not_hold_up_the_hook(tmp_path):
    pidfile = tmp_path / "child"
    command = f"echo started; sleep 60 & echo $! > {shlex.quote(str(pidfile))}; exit 0"
    result = run_hook(command, _run(tmp_path), 20.0)
    # The shell's own exit counts; waiting for the child's 60 s would pass the timeout.
    assert result.ok and not result.timed_out and result.seconds < 20.0, result
    assert result.output == "started\n"
    _wait_gone(int(pidfile.read_text()))


def test_a_missing_program_is_exit_127_and_says_so(tmp_path):
    result = run_hook("no-such-program-softcopy-test --flag", _run(tmp_path), LONG)
    assert result.exit_code == 127 and not result.ok
    assert "exit code 127" in result.error and "could not find" in result.error
    assert "not found" in result.output


def test_a_program_without_x_permission_is_exit_126_and_says_so(tmp_path):
    script = tmp_path / "plain.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = run_hook(shlex.quote(str(script)), _run(tmp_path), LONG)
    assert result.exit_code == 126 and "could not execute" in result.error


def test_a_command_that_cannot_start_is_reported_not_raised(tmp_path):
    result = run_hook("echo a\0b", _run(tmp_path), LONG)
    assert result.exit_code is None and not result.ok and not result.timed_out
    assert result.error.startswith("could not start: ")


def test_a_hook_killed_by_a_signal_says_which(tmp_path):
    result = run_hook("kill -9 $$", _run(tmp_path), LONG)
    assert result.exit_code is None and not result.timed_out
    assert result.error.startswith("killed by signal 9")


def test_values_json_cannot_hold_are_written_as_text(tmp_path):
    seen = tmp_path / "seen"
    run = {"run": "r", "started": tmp_path}
    assert run_hook(f"cat > {shlex.quote(str(seen))}", run, LONG).ok
    assert json.loads(seen.read_text()) == {"run": "r", "started": str(tmp_path)}


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "hook.sh"
    good.write_text("#!/bin/sh\nexit 0\n")
    good.chmod(0o755)
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\nexit 0\n")
    plain.chmod(0o644)
    return {"good": good, "plain": plain, "dir": tmp_path}


@pytest.mark.parametrize(
    "command",
    [
        "true",
        ":",
        "FOO=1 true",
        "A=1 B='x y' sh -c 'exit 0'",
        "sh -c 'echo hi'",
        "(true)",
        "{ true; }",
        "echo hi | cat",
        "if true; then :; fi",
        "$SOFTCOPY_DESTINATION/bin/hook",  # set only for the hook: sh alone can expand it
        "GOOD",
    ],
)
def test_check_hook_accepts_commands_that_can_run(command, scripts):
    check_hook(command.replace("GOOD", shlex.quote(str(scripts["good"]))), "--on-done")


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("no-such-program-softcopy-test --flag", "'no-such-program-softcopy-test' is not a shell"),
        ("PLAIN", "is not executable"),
        ("echo 'unclosed", "cannot be parsed"),
        ("FOO=1", "names no program"),
        ("", "names no program"),
        ("./hook.sh", "is a relative path"),
        ("DIR", "is not a regular file"),
        ("DIR/missing.sh arg", "No such file or directory"),
        ("FOO=1 nope-softcopy-test", "'nope-softcopy-test' is not a shell"),
    ],
)
def test_check_hook_refuses_commands_that_cannot_run(command, problem, scripts):
    for word in ("PLAIN", "DIR"):
        command = command.replace(word, str(scripts[word.lower()]))
    with pytest.raises(ConfigError) as caught:
        check_hook(command, "--on-failed")
    err = caught.value
    assert err.exit_code == 2
    assert err.action == "check --on-failed hook" and err.path == command
    assert problem in err.problem, err.problem
