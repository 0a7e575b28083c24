"""One file's transfer, the unit of work of a copier: kernel copy and hashing copy.

pytest benchmarks --benchmark-enable -k transfer
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from softcopy.sinks.local import COPIED, DirCache, copy_one


@pytest.fixture
def chunk(tmp_path: Path) -> tuple[str, str]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "c" / "0").mkdir(parents=True)
    dst.mkdir()
    (src / "c" / "0" / "0").write_bytes(os.urandom(64 << 10))
    return str(src), str(dst)


@pytest.mark.parametrize("digest", [False, True], ids=["kernel-copy", "hashing-copy"])
def test_transfer_one_64k_chunk(benchmark, chunk: tuple[str, str], digest: bool) -> None:
    src, dst = chunk

    def one() -> None:
        dirs = DirCache(dst)
        try:
            assert copy_one(src, dirs, "c/0/0", digest=digest).status == COPIED
        finally:
            dirs.close()

    benchmark(one)
