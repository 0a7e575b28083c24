"""`softcopy watch SOURCE_ROOT s3://BUCKET/PREFIX`: real watchers in subprocesses, each run
copied to PREFIX/RUN on moto's server on loopback, claims as conditional objects, a watcher
killed with SIGKILL and its claim taken over, refusals before anything starts."""

# ruff: noqa: F811 (the fixtures imported from s3server are parameters by the same names)

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import s3server
from conftest import finish, run_softcopy, start_softcopy, wait_for
from s3server import AuthServer, auth_server, bucket, s3_server  # noqa: F401 (fixtures)
from test_s3_copy import files_of, objects, record, record_names
from test_service_claims import children, journal_runs, run_folder, running, statuses, zarr_run

# Small timings so a test takes seconds; every wait is a condition with a deadline.
FAST = ("--retry-delay", "0.2", "--sentinel-min-age", "0.5", "--scan-interval", "1",
        "--nprocs", "1", "--ready-age", "0.3", "--preset", "illumina")  # fmt: skip


def watch(src: Path, dest: str, state: Path, *args: object, **kw: Any) -> subprocess.Popen:
    return start_softcopy("watch", src, dest, "--state-dir", state, *FAST, *args, **kw)


def without_endpoint_variable() -> dict[str, str]:
    """The environment less AWS_ENDPOINT_URL: only --s3-endpoint can lead a copy there."""
    return {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}


def claim_object(bucket: str, run: str) -> dict | None:
    try:
        return record(bucket, f"runs/{run}", "claim.json")
    except s3server.client().exceptions.NoSuchKey:
        return None


def claimed_by(bucket: str, run: str, pid: int) -> bool:
    held = claim_object(bucket, run)
    return held is not None and held.get("pid") == pid


def copying_lines(err: str, run: str) -> int:
    return err.count(f"run {run}: copying to ")


def one_paragraph_error(stderr: str) -> None:
    text = stderr.strip()
    assert text.startswith("softcopy: error: "), stderr
    assert "Traceback" not in stderr, stderr
    assert "\n\n" not in text, f"more than one paragraph:\n{stderr}"


def test_each_run_is_copied_to_its_prefix_and_a_restarted_watcher_copies_none_again(
    bucket: str, s3_server: str, tmp_path: Path
) -> None:
    src, state = tmp_path / "src", tmp_path / "st"
    src.mkdir()
    runs = [run_folder(src, "RUN1").name, zarr_run(src, "z1.zarr").name]
    dest = f"s3://{bucket}/runs"
    hooklog = tmp_path / "hooks.log"
    hook = f'echo "$SOFTCOPY_RUN $SOFTCOPY_DESTINATION" >> {shlex.quote(str(hooklog))}'
    endpoint = ("--s3-endpoint", s3_server)
    env = without_endpoint_variable()
    rc, _, err = finish(watch(src, dest, state, "--once", *endpoint, "--on-done", hook, env=env))
    assert rc == 0, err

    seen = statuses(state)
    for run in runs:
        assert objects(bucket, f"runs/{run}") == files_of(src / run), run
        names = record_names(bucket, f"runs/{run}")
        assert "certificate.json" in names and "hooks.json" in names, names
        assert "claim.json" not in names and "lock" not in names, names  # both released
        cert = record(bucket, f"runs/{run}", "certificate.json")
        assert cert["destination"] == f"{dest}/{run}" and cert["source"] == str(src / run)
        assert seen[run]["state"] == "done", seen[run]
        assert seen[run]["destination"] == f"{dest}/{run}"
        assert seen[run]["certificate"] == f"{dest}/{run}.softcopy/certificate.json"
        assert f"run {run}: copying to {dest}/{run} (attempt 1)" in err, err
        check = run_softcopy("verify", src / run, f"{dest}/{run}")
        assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(hooklog.read_text().splitlines()) == sorted(f"{r} {dest}/{r}" for r in runs)

    # Restarted with its journal, or as a second host with a journal of its own: the
    # certificates in the bucket say the runs are done, and nothing is copied again.
    for journal in (state, tmp_path / "st-other"):
        rc, _, err = finish(watch(src, dest, journal, "--once", *endpoint, "--on-done", hook))
        assert rc == 0, err
        for run in runs:
            assert copying_lines(err, run) == 0, err
            assert statuses(journal)[run]["state"] == "done"
            if journal != state:
                where = f"{dest}/{run}.softcopy/certificate.json"
                assert f"run {run}: already copied and verified ({where})" in err, err
    assert len(hooklog.read_text().splitlines()) == len(runs)  # hooks.json: run once each


@pytest.mark.slow
def test_two_watchers_copy_each_run_once_and_a_killed_watchers_claim_is_taken_over(
    bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    runs = [run_folder(src, f"RUN{i}").name for i in range(3)]
    dest = f"s3://{bucket}/runs"
    procs = [watch(src, dest, tmp_path / f"st-{i}", "--once", "--max-runs", "1") for i in (0, 1)]
    logs = []
    for proc in procs:
        rc, _, err = finish(proc)
        assert rc == 0, err
        logs.append(err)
    for run in runs:
        started = [copying_lines(err, run) for err in logs]
        assert sorted(started) == [0, 1], (run, started, logs)
        summary = record(bucket, f"runs/{run}", "summary.json")
        assert summary["files_already_there"] == 0, summary  # copied once, from nothing
        assert objects(bucket, f"runs/{run}") == files_of(src / run)
        assert claim_object(bucket, run) is None

    # A run that cannot end (no sentinel yet) holds its watcher's claim until it is killed.
    live = src / "LIVE"
    (live / "Data").mkdir(parents=True)
    (live / "Data" / "L001.cbcl").write_bytes(os.urandom(20_000))
    first = watch(src, dest, tmp_path / "st-a", "--pattern", "LIVE")
    wait_for(lambda: claimed_by(bucket, "LIVE", first.pid), what="the first claim", proc=first)
    wait_for(lambda: objects(bucket, "runs/LIVE") == files_of(live), what="the copy",
             proc=first)  # fmt: skip
    copiers = children(first.pid)
    first.send_signal(signal.SIGKILL)
    finish(first)
    wait_for(lambda: not any(map(running, copiers)), what="its copiers to die")
    assert claimed_by(bucket, "LIVE", first.pid), "a killed watcher released its claim"

    # A lease far longer than any wait here: only "its process is gone" explains a takeover.
    second = watch(src, dest, tmp_path / "st-b", "--pattern", "LIVE", "--once", "--lease", "600")
    wait_for(lambda: claimed_by(bucket, "LIVE", second.pid), what="the takeover", proc=second)
    (live / "CopyComplete.txt").write_text("")
    rc, _, err = finish(second)
    assert rc == 0, err
    assert f"took over the claim of pid {first.pid} on {socket.gethostname()}" in err, err
    assert "its process is gone" in err, err
    assert objects(bucket, "runs/LIVE") == files_of(live)
    assert journal_runs(tmp_path / "st-b")["LIVE"] == "done"
    assert claim_object(bucket, "LIVE") is None
    check = run_softcopy("verify", live, f"{dest}/LIVE")
    assert check.returncode == 0, check.stdout + check.stderr


BAD = ["missing bucket", "wrong credentials", "release after"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_exit_2_in_one_paragraph_before_anything_starts(
    case: str, s3_server: str, auth_server: AuthServer, tmp_path: Path
) -> None:
    src, state = tmp_path / "src", tmp_path / "st"
    src.mkdir()
    run_folder(src, "RUN1")
    env = dict(os.environ)
    if case == "missing bucket":
        args: list[object] = ["s3://softcopy-no-such-bucket/runs"]
        wanted = [f"the bucket softcopy-no-such-bucket does not exist at {s3_server}"]
    elif case == "wrong credentials":
        env.update(AWS_ACCESS_KEY_ID="AKIAWRONG", AWS_SECRET_ACCESS_KEY="Secret-Of-C4-Test")
        args = [f"s3://{auth_server.bucket}/runs", "--s3-endpoint", auth_server.url]
        wanted = [f"s3://{auth_server.bucket}/runs", auth_server.url, "wrong credentials"]
    else:
        args = [f"s3://{s3server.new_bucket()}/runs", "--release-after", "7d"]
        wanted = ["freeing the source of an object-store copy is not built yet"]
    result = run_softcopy("watch", src, *args, "--state-dir", state, "--once", env=env)
    assert result.returncode == 2, result.stderr
    one_paragraph_error(result.stderr)
    for text in wanted:
        assert text in result.stderr, result.stderr
    assert env["AWS_SECRET_ACCESS_KEY"] not in result.stderr  # never a credential
    assert not journal_runs(state), "a run was taken up before the refusal"


def test_a_claim_object_is_taken_over_after_the_lease_and_lost_to_a_later_takeover(
    bucket: str,
) -> None:
    """The claims API on the bucket, in this process: what another host does is planted."""
    from softcopy.service.claims import Busy, Claim, Observations, claim
    from softcopy.sinks.base import spec_for
    from softcopy.sinks.s3 import ObjectStore

    records = ObjectStore.from_spec(spec_for(f"s3://{bucket}/runs")).records_of(
        f"s3://{bucket}/runs/RUN1"
    )
    key = "runs/RUN1.softcopy/claim.json"

    def plant(body: bytes) -> None:
        s3server.client().put_object(Bucket=bucket, Key=key, Body=body)

    theirs = {"host": "other-host.invalid", "boot_id": "b", "pid": 4242, "pid_started": 1,
              "token": "f" * 32, "renewals": 0}  # fmt: skip
    plant(json.dumps(theirs).encode())
    seen = Observations()
    assert isinstance(claim(records, "/src/RUN1", 10.0, seen, now=0.0), Busy)
    plant(json.dumps({**theirs, "renewals": 1}).encode())  # renewed: the lease starts again
    assert isinstance(claim(records, "/src/RUN1", 10.0, seen, now=10.5), Busy)
    mine = claim(records, "/src/RUN1", 10.0, seen, now=21.0)
    assert isinstance(mine, Claim), mine
    assert claim_object(bucket, "RUN1")["token"] == mine.token
    assert mine.renew() and claim_object(bucket, "RUN1")["renewals"] == 1

    # Taken over meanwhile (this host stalled past its lease): the renewal's If-Match
    # fails, and the release leaves the new owner's claim alone.
    plant(json.dumps(theirs).encode())
    assert not mine.renew()
    mine.release()
    assert claim_object(bucket, "RUN1") == theirs

    # A damaged claim object holds the run for a lease, naming itself, then is taken over.
    plant(b'{"host": "other-host.invalid", "tok')
    busy = claim(records, "/src/RUN1", 10.0, seen, now=100.0)
    assert isinstance(busy, Busy) and f"s3://{bucket}/{key} is damaged" in busy.why, busy
    again = claim(records, "/src/RUN1", 10.0, seen, now=111.0)
    assert isinstance(again, Claim), again
    again.release()
    assert claim_object(bucket, "RUN1") is None
