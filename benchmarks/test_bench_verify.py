"""Micro-benchmarks: verification's walk of a source and its copy (`compare_trees`), for
folders of many chunks (compared a folder at a time) and of few (zarr v3's innermost, often
8 chunks: compared file by file).

Run with `pytest benchmarks --benchmark-enable` (see benchmarks/README.md). Without
`--benchmark-enable` each benchmark runs once, as a plain test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from softcopy.verify.compare import compare_trees

SHAPES = {"1000 a folder": (20, 1000), "8 a folder": (2500, 8)}  # 20,000 files each


@pytest.fixture(scope="module", params=sorted(SHAPES))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    folders, files = SHAPES[request.param]
    base = tmp_path_factory.mktemp("verify")
    src = base / "src"
    block = b"x" * 1024
    for i in range(folders):
        folder = src / "c" / str(i // 100) / str(i % 100)
        folder.mkdir(parents=True)
        for j in range(files):
            (folder / str(j)).write_bytes(block)
    dst = base / "dst"
    shutil.copytree(src, dst)
    return src, dst, folders * files


def test_compare_trees(benchmark, pair: tuple[Path, Path, int]) -> None:
    src, dst, files = pair
    result = benchmark(lambda: compare_trees(str(src), str(dst)))
    assert result.ok and result.files == files
