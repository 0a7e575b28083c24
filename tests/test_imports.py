"""The fixed cost of a small copy: what the supervisor and a copier import, and what they run.

Every process is real: the CLI runs in a subprocess that reports its `sys.modules` after the
command, and a copier is started as the supervisor starts one, under `-X importtime`, which
lists every module it imported in its whole life (those imported inside functions too).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from conftest import DEADLINE, assert_same_tree, run_softcopy

from softcopy.copiers.protocol import CopierOptions, decode_outcomes, encode
from softcopy.zarr.layout import _NESTING_IN_PYTHON, json_nesting

# Modules no copy needs: the writer's libraries, the targets-file parser, the live table.
NEVER_FOR_A_COPY = ("zarr", "tensorstore", "numcodecs", "yaml", "rich", "difflib")
# A copier moves bytes: no arrays, no command line, no journal, no thread pool, no OpenSSL.
NEVER_IN_A_COPIER = (
    *NEVER_FOR_A_COPY,
    "numpy",
    "click",
    "sqlite3",
    "concurrent.futures",
    "hashlib",
    "softcopy.config",
    "softcopy.engine",
    "softcopy.zarr",
)

ZARR_JSON = {
    "zarr_format": 3,
    "node_type": "array",
    "shape": [4, 8],
    "data_type": "uint8",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 8]}},
    "chunk_key_encoding": {"name": "default"},
    "codecs": [{"name": "bytes"}],
    "fill_value": 0,
}

# Runs the `softcopy` program in this process and, as it exits (the program ends with
# os._exit once its exit handlers ran), reports the modules it left loaded and whether
# ctypes.util.find_library (which runs `ldconfig -p`, a process) was called, and, when the
# copy started its copiers early, whether numpy was loaded by then. Functions are wrapped,
# never replaced: they still answer.
PROGRAM = """
import atexit, ctypes.util, json, os, runpy, sys
report, sys.argv = sys.argv[1], ["softcopy", *sys.argv[2:]]
calls, early = [], []
original = ctypes.util.find_library
def find_library(name):
    calls.append(name)
    return original(name)
ctypes.util.find_library = find_library
from softcopy.copiers import spares
start = spares.start
def start_early(n):
    early.append({"copiers": n, "numpy": "numpy" in sys.modules})
    return start(n)
spares.start = start_early
def write():
    with open(report, "w") as f:
        json.dump({"modules": sorted(sys.modules), "find_library": calls, "early": early,
                   "blas": os.environ.get("OPENBLAS_NUM_THREADS")}, f)
atexit.register(write)
runpy.run_module("softcopy", run_name="__main__", alter_sys=True)
"""


def four_chunk_archive(path: Path) -> Path:
    path.mkdir()
    (path / "zarr.json").write_text(json.dumps(ZARR_JSON))
    for t in range(4):
        (path / "c" / str(t)).mkdir(parents=True)
        (path / "c" / str(t) / "0").write_bytes(bytes([t]) * 8)
    (path / "complete").touch()
    return path


def run_in_process(tmp_path: Path, *args: object, env: dict[str, str] | None = None) -> dict:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(report), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=tmp_path,
        env=env,
    )
    assert report.exists(), done.stderr
    result = json.loads(report.read_text())
    result["code"], result["stderr"] = done.returncode, done.stderr
    return result


def loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def test_a_small_copy_is_verified_without_the_modules_it_does_not_need(tmp_path: Path) -> None:
    src = four_chunk_archive(tmp_path / "src.zarr")
    result = run_in_process(tmp_path, "copy", src, tmp_path / "dst.zarr")
    assert result["code"] == 0, result["stderr"]
    assert_same_tree(src, tmp_path / "dst.zarr")
    assert loaded(result["modules"], NEVER_FOR_A_COPY) == []
    # Its two copiers were started before the engine was imported: their start-up overlaps it.
    assert result["early"] == [{"copiers": 2, "numpy": False}]
    # inotify_simple's own way to find libc runs `ldconfig -p` in every run.
    assert result["find_library"] == []
    # The check sees what a command imports: a targets file needs yaml, and yaml is there.
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  - source: {src}\n    destination: {tmp_path / 'again.zarr'}\n")
    result = run_in_process(tmp_path, "run", targets)
    assert result["code"] == 0, result["stderr"]
    assert "yaml" in result["modules"]


# numpy imported as the program imports it (after one_library_thread), with nothing else
# running: the threads that exist then are the interpreter's and OpenBLAS's.
THREADS_AFTER_NUMPY = """
import os
from softcopy.priority import one_library_thread
one_library_thread()
import numpy
print(len(os.listdir("/proc/self/task")), os.environ["OPENBLAS_NUM_THREADS"])
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no thread on one CPU")
def test_numpys_blas_starts_no_threads_of_its_own_unless_the_user_asks(tmp_path: Path) -> None:
    # They would spin for work softcopy never gives them, on the writer's CPUs.
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}

    def threads(**extra: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", THREADS_AFTER_NUMPY], capture_output=True, text=True,
            env={**env, **extra}, timeout=DEADLINE, check=True,
        )  # fmt: skip
        return done.stdout.split()

    assert threads() == ["1", "1"]  # the main thread alone
    assert threads(OPENBLAS_NUM_THREADS="2") == ["2", "2"]  # the user's choice is kept
    # The program itself runs with it set, and a copy that imports numpy works.
    src = four_chunk_archive(tmp_path / "src.zarr")
    ours = run_in_process(tmp_path, "copy", src, tmp_path / "a.zarr", env=env)
    assert ours["code"] == 0, ours["stderr"]
    assert "numpy" in ours["modules"] and ours["blas"] == "1"


def test_status_and_the_verification_of_a_small_copy_never_import_numpy(tmp_path: Path) -> None:
    src = four_chunk_archive(tmp_path / "src.zarr")
    dst = tmp_path / "dst.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0
    for command in (("verify", src, dst), ("status",)):
        result = run_in_process(tmp_path, *command)
        assert result["code"] == 0, (command, result["stderr"])
        assert loaded(result["modules"], ("numpy", *NEVER_FOR_A_COPY)) == [], command


def test_a_copier_copies_without_arrays_configuration_or_journal(tmp_path: Path) -> None:
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "chunk").write_bytes(b"x" * 1000)
    parent, child = socket.socketpair()
    options = CopierOptions(str(src), str(dst), sleep_time=0.0, fsync=False, digest=False)
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "softcopy.copiers.child",
         str(child.fileno()), str(os.getpid()), "19", "1", "1"],
        pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    child.close()
    conn = Connection(parent.detach())
    try:
        conn.send(("options", encode(options)))
        conn.send(("batch", 1, [("chunk", False)]))
        assert conn.poll(DEADLINE), "the copier never answered"
        message = conn.recv()
        while message[0] != "done":  # notes (a priority it could not set) come first
            assert conn.poll(DEADLINE), "the copier never finished its batch"
            message = conn.recv()
        conn.send(("stop",))
        _, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert [o.status for o in decode_outcomes(message[2])] == ["copied"]
    assert (dst / "chunk").read_bytes() == b"x" * 1000
    assert proc.returncode == 0, stderr
    modules = [line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if "|" in line]
    assert "softcopy.sinks.local" in modules  # the listing is the copier's imports
    assert loaded(modules, NEVER_IN_A_COPIER) == []


@pytest.mark.parametrize("depth", [0, 1, 7, 300])
def test_json_nesting_agrees_on_both_sides_of_the_python_threshold(depth: int) -> None:
    """Small metadata is measured in Python (no numpy import), large with numpy: same answer."""
    body = "[" * depth + "]" * depth
    small = json.dumps({"a": "[[[{", "b": json.loads(body) if depth else 0})
    pad = " " * (_NESTING_IN_PYTHON + 10)
    large = small[:-1] + pad + "}"
    expected = depth + 1
    assert json_nesting(small) == json_nesting(large) == expected
    # Unbalanced closing brackets first: depth counts from the start, never below zero.
    assert json_nesting("]]" + "[" * 3) == json_nesting("]]" + "[" * 3 + pad) == 1
