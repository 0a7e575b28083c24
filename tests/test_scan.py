"""`scan_tree`, the one-loop listing, says what `walk` (the generator) says, for every kind
of entry a source holds."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from softcopy.sources.scan import Version, scan_tree, walk


def test_scan_tree_lists_what_walk_yields(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "c" / "0").mkdir(parents=True)
    (root / "c" / "1" / "deep").mkdir(parents=True)
    (root / "zarr.json").write_text("{}")
    for name in ["0", "1", "x.__lock", f"y.{'a' * 32}.partial", ".softcopy-tmp.0"]:
        (root / "c" / "0" / name).write_bytes(b"1234")
    (root / "c" / "1" / "deep" / "f").write_bytes(b"x" * 10)
    (root / "c" / "1" / os.fsdecode(b"\xff-not-utf8")).write_bytes(b"y")
    (root / "link").symlink_to("zarr.json")
    (root / "dirlink").symlink_to("c")  # a link to a directory: listed as a link, not entered
    os.mkfifo(root / "fifo")

    result = scan_tree(str(root))

    files: dict[str, Version] = {}
    links, temporary = set(), []
    for key, st, temp in walk(str(root)):
        if temp:
            temporary.append(key)
        elif stat.S_ISREG(st.st_mode):
            files[key] = Version(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        elif stat.S_ISLNK(st.st_mode):
            links.add(key)
    assert result.files == files
    assert all(type(v) is Version for v in result.files.values())
    assert result.links == links == {"link", "dirlink"}
    assert sorted(result.temporary) == sorted(temporary)
    assert len(temporary) == 3
    assert sorted(result.directories) == ["", "c", "c/0", "c/1", "c/1/deep"]
    assert "fifo" not in result.files and not result.errors
    assert os.fsdecode(b"c/1/\xff-not-utf8") in result.files


def test_scan_tree_of_a_subtree_and_of_a_vanished_one(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"1")
    seen: list[str] = []
    result = scan_tree(str(tmp_path), "a", on_dir=seen.append)
    assert list(result.files) == ["a/b/f"] and seen == ["a", "a/b"]
    assert scan_tree(str(tmp_path), "gone").files == {}


def test_a_directory_swapped_for_a_link_mid_listing_is_not_entered(tmp_path: Path) -> None:
    """A directory replaced by a link after its parent was listed is never followed: the
    listing must not reach files outside the tree (each directory is opened O_NOFOLLOW)."""
    root, outside = tmp_path / "src", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "inside").write_bytes(b"in")
    outside.mkdir()
    (outside / "secret").write_bytes(b"not ours")

    def swap(rel: str) -> None:
        if rel == "sub":  # called just before "sub" is opened: the writer's race, made certain
            (root / "sub" / "inside").unlink()
            (root / "sub").rmdir()
            (root / "sub").symlink_to(outside)

    result = scan_tree(str(root), on_dir=swap)
    assert not any("secret" in key for key in result.files)
    assert result.errors == []
    assert scan_tree(str(root)).links == {"sub"}  # the next listing sees it as a link


def test_a_source_root_given_as_a_link_is_listed(tmp_path: Path) -> None:
    """The root the user names may be a link; only what is below it is never followed."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a").write_bytes(b"a")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert set(scan_tree(str(tmp_path / "alias")).files) == {"a"}
