"""A targets file's `watch:` entries: every error of the file at once, each with its line and a
"did you mean" for an unknown key, worded as for `targets:` entries; nothing starts."""

from __future__ import annotations

from pathlib import Path

from conftest import run_softcopy


def _layout(tmp_path: Path) -> None:
    """A valid target and a root holding a finished run: what an error must leave uncopied."""
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "a.txt").write_text("a\n")
    (tmp_path / "root" / "run1").mkdir(parents=True)
    (tmp_path / "root" / "run1" / "Done.txt").write_text("done\n")


def test_every_error_of_the_watch_entries_at_once_with_its_line(tmp_path: Path) -> None:
    _layout(tmp_path)
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "defaults:\n"  # 1
        "  kind: directory\n"  # 2
        "targets:\n"  # 3
        "  - source: single\n"  # 4
        "    destination: out/single\n"  # 5
        "watch:\n"  # 6
        "  - source_root: root\n"  # 7
        "    destination_root: out/runs\n"  # 8
        "    nproc: 4\n"  # 9
        "    max_runs: many\n"  # 10
        "  - src: root\n"  # 11
        "    destination_root: out/more\n"  # 12
        "  - just a string\n"  # 13
    )
    result = run_softcopy("run", targets)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().split("\n\n") == [
        f"softcopy: error: cannot read targets file {targets}:9: watch[0].nproc: unknown option "
        "'nproc'; did you mean 'nprocs'?",
        f"softcopy: error: cannot read targets file {targets}:10: watch[0].max_runs: 'many' is not "
        "a whole number >= 1",
        f"softcopy: error: cannot read targets file {targets}:11: watch[1].src: unknown option "
        "'src'; did you mean 'source_root'?",
        f"softcopy: error: cannot read watch {targets}:13: watch[2]: expected a mapping with "
        "source_root and destination_root",
    ]
    assert not (tmp_path / "out").exists()


def test_a_watch_entry_words_its_errors_as_a_target_does(tmp_path: Path) -> None:
    _layout(tmp_path)
    as_target = tmp_path / "target.yaml"
    as_target.write_text(
        "targets:\n  - source: single\n    destination: out/single\n    nproc: 4\n    hash: maybe\n"
    )
    as_watch = tmp_path / "watch.yaml"
    as_watch.write_text(
        "watch:\n  - source_root: root\n    destination_root: out/runs\n    nproc: 4\n"
        "    hash: maybe\n"
    )
    said = {}
    for path, entry in ((as_target, "targets[0]"), (as_watch, "watch[0]")):
        result = run_softcopy("run", path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        said[entry] = result.stderr.replace(str(path), "FILE").replace(entry, "ENTRY")
    assert said["targets[0]"] == said["watch[0]"]
    assert "FILE:4: ENTRY.nproc: unknown option 'nproc'; did you mean 'nprocs'?" in said["watch[0]"]
    assert "FILE:5: ENTRY.hash:" in said["watch[0]"]
    assert not (tmp_path / "out").exists()


def test_a_watch_entry_without_a_root_names_its_line(tmp_path: Path) -> None:
    _layout(tmp_path)
    targets = tmp_path / "targets.yaml"
    targets.write_text("watch:\n  - source_root: root\n  - destination_root: out\n")
    result = run_softcopy("run", targets)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().split("\n\n") == [
        f"softcopy: error: cannot read watch {targets}:2: watch[0].destination_root: a path "
        "is required",
        f"softcopy: error: cannot read watch {targets}:3: watch[1].source_root: a path is required",
    ]
    assert not (tmp_path / "out").exists()


def test_a_remote_looking_watch_root_is_refused_as_a_target_is(tmp_path: Path) -> None:
    _layout(tmp_path)
    targets = tmp_path / "targets.yaml"
    targets.write_text("watch:\n  - source_root: root\n    destination_root: host:/data\n")
    result = run_softcopy("run", targets)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"softcopy: error: cannot copy to destination {targets}:3: watch[0].destination_root "
        "host:/data: it looks like a remote location"
    ), result.stderr
    assert not (tmp_path / "host:").exists()


def test_bad_targets_and_bad_watch_entries_are_reported_in_one_go(tmp_path: Path) -> None:
    """One file, one round of errors: those of `targets:` and of `watch:` together, in the
    file's order, the shared `defaults:` error once; `--dry-run` checks `watch:` too."""
    _layout(tmp_path)
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "defaults:\n"  # 1
        "  nprocs: lots\n"  # 2
        "targets:\n"  # 3
        "  - source: single\n"  # 4
        "    destination: out/single\n"  # 5
        "    nproc: 4\n"  # 6
        "watch:\n"  # 7
        "  - source_root: root\n"  # 8
        "    destination_root: out/runs\n"  # 9
        "    max_runs: many\n"  # 10
    )
    for extra in ([], ["--dry-run"]):
        result = run_softcopy("run", *extra, targets)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        paragraphs = result.stderr.strip().split("\n\n")
        assert [p.split(": ")[2].rsplit(":", 1)[-1] for p in paragraphs] == ["2", "6", "10"], (
            result.stderr
        )
        assert not (tmp_path / "out").exists()
