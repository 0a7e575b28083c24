"""Verification compares a folder of many files as a whole (verify.compare._same_files): it
must find exactly what the file-by-file comparison finds, and write the same size list."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from softcopy.sources.scan import TEMP_PREFIX
from softcopy.verify import compare
from softcopy.verify.compare import Verification, compare_trees

FILES = 40  # per folder: well above the size from which a folder is compared as a whole


def _tree(root: Path) -> None:
    root.mkdir()
    (root / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    for folder in ("0", "1"):
        (root / "c" / folder).mkdir(parents=True)
        for i in range(FILES):
            (root / "c" / folder / str(i)).write_bytes(bytes([i]) * (100 + i))
    # A zarr v2 array: its metadata among its chunks, in one folder.
    (root / "v2").mkdir()
    (root / "v2" / ".zarray").write_text(
        '{"zarr_format": 2, "shape": [40], "chunks": [1], "dtype": "<u1", "compressor": null,'
        ' "fill_value": 0, "order": "C", "filters": null}'
    )
    for i in range(FILES):
        (root / "v2" / str(i)).write_bytes(b"x")


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    _tree(dst)
    for path in dst.rglob("*"):  # the copy's own times, as a copy that kept none would have
        if path.is_file():
            os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    return src, dst


def _both_ways(src: Path, dst: Path, monkeypatch: pytest.MonkeyPatch) -> Verification:
    """compare_trees as it runs, checked against the file-by-file comparison of every folder."""
    whole = compare_trees(str(src), str(dst))
    with monkeypatch.context() as m:
        m.setattr(compare, "_AS_A_WHOLE_FROM", 10**9)
        one_by_one = compare_trees(str(src), str(dst))
    assert whole.findings == one_by_one.findings
    assert (whole.files, whole.bytes, whole.links) == (
        one_by_one.files,
        one_by_one.bytes,
        one_by_one.links,
    )
    assert _lines(whole) == _lines(one_by_one)
    return whole


def _lines(result: Verification) -> bytes:
    result.size_list.seek(0)
    return result.size_list.read()


def test_a_true_copy_is_compared_a_folder_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = _pair(tmp_path)
    one_by_one: list[str] = []
    original = compare._compare_dir

    def spy(source, destination, rel, *args, **kwargs):  # type: ignore[no-untyped-def]
        one_by_one.append(rel)
        return original(source, destination, rel, *args, **kwargs)

    monkeypatch.setattr(compare, "_compare_dir", spy)
    result = compare_trees(str(src), str(dst))
    assert result.ok
    assert result.files == 3 * FILES + 2
    # File by file: the root (where `ignore` applies), the folder `c` of two folders, and
    # `c/0`, the first large folder after small ones (listed for that: _lister_by_size).
    assert sorted(one_by_one) == ["", "c", "c/0"]
    lines = _lines(result).decode().splitlines()
    assert "c/1/7\t107\t1000000000" in lines
    # In key order within a folder, as the file-by-file comparison writes them.
    chunk_lines = [line.split("\t")[0] for line in lines if line.startswith("c/1/")]
    assert chunk_lines == sorted(f"c/1/{i}" for i in range(FILES))


def _size(dst: Path) -> None:
    (dst / "c" / "1" / "7").write_bytes(b"short")


def _missing(dst: Path) -> None:
    (dst / "c" / "1" / "7").unlink()


def _extra(dst: Path) -> None:
    (dst / "c" / "1" / "extra").write_bytes(b"x")


def _renamed(dst: Path) -> None:
    # As many files on both sides, not the same names.
    (dst / "c" / "1" / "7").rename(dst / "c" / "1" / "seven")


def _leftover(dst: Path) -> None:
    (dst / "c" / "1" / f"{TEMP_PREFIX}7").write_bytes(b"partial")


def _link_for_file(dst: Path) -> None:
    (dst / "c" / "1" / "7").unlink()
    (dst / "c" / "1" / "7").symlink_to("elsewhere")


def _directory_for_file(dst: Path) -> None:
    (dst / "c" / "1" / "7").unlink()
    (dst / "c" / "1" / "7").mkdir()


def _most_of_the_first_folder_missing(dst: Path) -> None:
    # The two sides of `c/0` then come as the two kinds of listing (_lister_by_size).
    for i in range(2, FILES):
        (dst / "c" / "0" / str(i)).unlink()


@pytest.mark.parametrize(
    ("damage", "kinds"),
    [
        (_size, ["size"]),
        (_missing, ["missing"]),
        (_extra, ["extra"]),
        (_renamed, ["extra", "missing"]),
        (_leftover, ["leftover"]),
        (_link_for_file, ["type"]),
        (_directory_for_file, ["missing"]),
        (_most_of_the_first_folder_missing, ["missing"] * (FILES - 2)),
    ],
)
def test_every_difference_in_a_large_folder_is_found_as_one_by_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Path], None],
    kinds: list[str],
) -> None:
    src, dst = _pair(tmp_path)
    damage(dst)
    result = _both_ways(src, dst, monkeypatch)
    assert sorted(f.kind for f in result.findings) == kinds


def test_metadata_among_many_chunks_is_still_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = _pair(tmp_path)
    for root in (src, dst):  # the same bytes on both sides, and neither parses
        (root / "v2" / ".zarray").write_text("{ not json at all, not at all }")
    result = _both_ways(src, dst, monkeypatch)
    assert [(f.kind, f.key) for f in result.findings] == [("metadata", "v2/.zarray")]


def test_links_in_a_large_folder_are_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = _pair(tmp_path)
    (src / "c" / "1" / "link").symlink_to("0")
    (dst / "c" / "1" / "link").symlink_to("1")
    result = _both_ways(src, dst, monkeypatch)
    assert [(f.kind, f.key) for f in result.findings] == [("link", "c/1/link")]


def test_any_name_in_a_large_folder_is_listed_as_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = _pair(tmp_path)
    odd = [b"caf\xc3\xa9", b"\xff\xfe", b"back\\slash", b"new\nline"]
    for root in (src, dst):
        folder = os.fsencode(root / "c" / "1")
        for name in odd:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(b"odd")
    result = _both_ways(src, dst, monkeypatch)
    assert result.ok
    assert result.files == 3 * FILES + 2 + len(odd)
    # Written escaped, one line each: the raw byte and the newline never reach the list.
    lines = _lines(result).split(b"\n")
    assert any(line.startswith(b"\\c/1/new\\nline\t3\t") for line in lines)
    assert not any(b"\xff" in line for line in lines)
