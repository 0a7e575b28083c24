"""A rerun's verification from its match: the size list it writes in blocks of lines is the
one a line per file gives, whatever the names and however the batches fall."""

from __future__ import annotations

import pytest

from softcopy.engine import matched as matched_module
from softcopy.engine.matched import Matched
from softcopy.sources.scan import Version
from softcopy.verify.sizes import format_entry

NAMES = [f"c/{i // 10}/{i % 10}" for i in range(100)] + [
    "back\\slash",
    "new\nline",
    "caf\u00e9",
    "not-utf8-\udcff",
    "tab\tname",
    "group/zarr.json",
    "array/.zarray",
]


@pytest.mark.parametrize("lines", [1, 3, 512])
@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_the_size_list_is_every_line_in_order(
    lines: int, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(matched_module, "_LINES", lines)
    files = [(k, Version(10 + i, 10**18 + i, i, 0)) for i, k in enumerate(NAMES)]
    match = Matched()
    for start in range(0, len(files), batch):
        match.trusted(iter(files[start : start + batch]))  # any iterable, read once
    match.trusted([])
    body = match.verification.size_list
    body.seek(0)
    expected = "".join(format_entry(k, v.size, v.mtime_ns) for k, v in files)
    assert body.read() == expected.encode("utf-8", "surrogateescape")
    assert match.verification.files == len(files)
    assert match.verification.bytes == sum(v.size for _, v in files)
    assert match.metadata == ["group/zarr.json", "array/.zarray"]
