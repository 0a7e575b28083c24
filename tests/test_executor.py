"""Verification over an injected executor: threads, processes (or, later, a Dask client) find
the same differences as the built-in thread pool."""

from __future__ import annotations

import errno
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from softcopy.verify.compare import Verification, check_manifest, compare_trees
from softcopy.verify.hashing import hash_files

FILES = {f"c/{i}": bytes([i]) * (100 + i) for i in range(40)}
FILES["big"] = os.urandom(9 << 20)  # hashed on BLAKE3's own threads
FILES["zarr.json"] = b'{"zarr_format": 3, "node_type": "group"}'


@pytest.fixture(scope="module", params=["default", "threads", "processes"])
def executor(request: pytest.FixtureRequest) -> Iterator[Executor | None]:
    if request.param == "default":
        yield None
    elif request.param == "threads":
        with ThreadPoolExecutor(3) as pool:
            yield pool
    else:
        # spawn: fresh interpreters, as the copiers are, not forks of a threaded pytest
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield pool


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A source and a copy with one flipped byte, one file short and one file too many."""
    src = tree(tmp_path / "src", FILES)
    changed = dict(FILES)
    changed["c/7"] = b"\x08" + FILES["c/7"][1:]  # same size, other content
    del changed["c/9"]
    changed["c/extra"] = b"x"
    return src, tree(tmp_path / "dst", changed)


def summary(result: Verification) -> tuple:
    return ([str(f) for f in result.findings], result.files, result.bytes, result.digests)


def test_compare_trees_finds_the_same_on_any_executor(
    pair: tuple[Path, Path], executor: Executor | None
) -> None:
    src, dst = str(pair[0]), str(pair[1])
    result = compare_trees(src, dst, hashes=True, workers=2, executor=executor)
    assert summary(result) == summary(compare_trees(src, dst, hashes=True, workers=2))
    assert [(f.kind, f.key) for f in result.findings] == [
        ("content", "c/7"),
        ("extra", "c/extra"),
        ("missing", "c/9"),
    ]
    assert result.digests["big"] == blake3(FILES["big"]).hexdigest()


def test_check_manifest_finds_the_same_on_any_executor(
    pair: tuple[Path, Path], executor: Executor | None
) -> None:
    digests = {k: blake3(v).hexdigest() for k, v in FILES.items()}
    dst = str(pair[1])
    result = check_manifest(dst, digests, 2, executor=executor)
    assert summary(result) == summary(check_manifest(dst, digests, 2))
    assert sorted((f.kind, f.key) for f in result.findings) == [
        ("content", "c/7"),
        ("manifest", "c/extra"),
        ("missing", "c/9"),
    ]


def test_hash_files_reports_errors_from_any_executor(
    pair: tuple[Path, Path], executor: Executor | None
) -> None:
    src = pair[0]
    (src / "link").symlink_to("big")
    keys = [*FILES, "gone", "link"]
    found = {
        key: (digest, exc) for key, digest, exc in hash_files(str(src), keys, 2, False, executor)
    }
    assert found.keys() == set(keys)
    for key, data in FILES.items():
        assert found[key] == (blake3(data).hexdigest(), None)
    # The errors themselves cross a process boundary: errno and all.
    assert found["gone"][0] is None and found["gone"][1].errno == errno.ENOENT
    assert found["link"][0] is None and found["link"][1].errno == errno.ELOOP  # never followed


class Recording(ThreadPoolExecutor):
    """A real pool that keeps the futures it hands out."""

    def __init__(self) -> None:
        super().__init__(1)
        self.futures: list[Future] = []

    def submit(self, *args: Any, **kwargs: Any) -> Future:
        future = super().submit(*args, **kwargs)
        self.futures.append(future)
        return future


def test_a_caller_that_stops_early_leaves_nothing_queued(pair: tuple[Path, Path]) -> None:
    keys = sorted(FILES) * 20  # 4 batches per worker at most: many more than one
    with Recording() as pool:
        results = hash_files(str(pair[0]), keys, 1, executor=pool)
        next(results)
        results.close()  # what a `for` loop left by `break` or an exception does
    assert len(pool.futures) > 2
    assert all(f.done() for f in pool.futures)
    assert any(f.cancelled() for f in pool.futures)
