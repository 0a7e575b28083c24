"""Compare a destination with its source or its manifest: findings as data, never exceptions."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..errors import MetadataError
from ..names import safe_text, shown
from ..sources.scan import DirListing, DirNames, Version, gone, list_dir, list_names, scan_tree
from ..zarr.layout import METADATA_NAMES, attributes_problem, metadata_kind, read_node
from .early import EarlyRead
from .hashing import hash_files
from .sizes import format_entries, format_entry, size_list_body

# `{against}` is what the destination is compared with: the source, or (the source long
# gone) the manifest or the size list the copy left in its records.
_METADATA_ENDINGS = tuple(METADATA_NAMES)  # str.endswith first: cheap on a million keys
_TEMPLATES = {
    "missing": "missing: {key} (in the {against}, not in the destination)",
    "extra": "extra: {key} (in the destination, not in the {against})",
    "size": "size differs: {key} {against} {source} destination {destination}",
    "mtime": "modification time differs: {key} {against} {source} destination {destination}",
    "content": "content differs: {key} {against} {source} destination {destination}",
    "type": "type differs: {key} {against} is a {source}, destination a {destination}",
    "link": "link target differs: {key} {against} -> {source}, destination -> {destination}",
    "leftover": "temporary file left in the destination: {key}",
    "metadata": "metadata does not parse: {key}: {detail}",
    "decode": "does not decode: {key}: {detail}",
    "unreadable": "cannot read: {key}: {detail}",
    "manifest": "not in the manifest: {key}",
    "size list": "not in the size list: {key}",
    "archive": "archive differs: {key}: {detail}",
    "mode": "mode differs: {key} {against} {source} destination {destination}",
}

SOURCE, MANIFEST, SIZE_LIST = "source", "manifest", "size list"
_Listing = DirListing | DirNames  # as list_dir or list_names gives a directory


# The name `status` and older callers use; one function shows every name (names.shown).
printable = shown


@dataclass(frozen=True)
class Finding:
    kind: str
    key: str
    detail: str = ""
    source: object = None
    destination: object = None
    against: str = SOURCE  # what `source` is: the source tree, the manifest, the size list

    def __str__(self) -> str:
        fields = {k: shown(v) if isinstance(v, str) else v for k, v in asdict(self).items()}
        # The detail is a message (an error, a parser's complaint), not a name.
        fields["detail"] = safe_text(self.detail)
        return _TEMPLATES[self.kind].format(**fields)

    def as_dict(self) -> dict:
        # `against` only when it is not the source: records of a two-tree check keep their form.
        return {
            k: v
            for k, v in asdict(self).items()
            if v not in (None, "") and not (k == "against" and v == SOURCE)
        }


@dataclass
class Verification:
    findings: list[Finding] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)  # destination BLAKE3 per file
    # What the destination held of each file found equal (size, mtime_ns): the size list.
    size_list: BinaryIO = field(default_factory=size_list_body)  # verify/sizes.py lines
    files: int = 0
    bytes: int = 0
    links: int = 0
    # Source links left out on purpose: a destination that keeps none (an object store).
    links_skipped: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings


def compare_trees(
    source: str,
    destination: str,
    ignore: frozenset[str] = frozenset(),
    hashes: bool = False,
    known: Mapping[str, tuple[Version, str]] | None = None,
    workers: int = 4,
    keep: Callable[[str], bool] | None = None,
    executor: Executor | None = None,
    early: Mapping[str, EarlyRead] | None = None,
) -> Verification:
    """Every difference in the set of files, sizes, link targets and (with `hashes`) content.

    Both trees are walked together, one directory of each at a time, so a copy of ten
    million files is compared holding one directory's listings, not two whole ones; the
    size list of what was found equal is built as it goes (`size_list`, in walk order).
    `known` holds BLAKE3 digests taken while copying, by the source version they
    belong to; a file whose source is still at that version is not read again.
    `early`: digests of the destination read back during the copy (early.py), used for
    files still as read then. The destination is always read from the device, never from
    the page cache. `ignore` names root-level keys to leave out on both sides (the
    `complete` marker, copied only after verification passed). `executor` runs the
    content reads (default: a pool of `workers` threads; see hashing.hash_files).
    """
    result = Verification()
    same_size: list[tuple[str, Version, Version]] = []  # with hashes only
    metadata: list[str] = []
    quick = not hashes and keep is None  # a digest or a filter looks at every file
    # A digest or a filter compares file by file: then every folder is listed keyed.
    lister = _lister_by_size() if quick else list_dir
    for rel, here, there in _walk_both(source, destination, lister=lister):
        if quick and _same_files(rel, here, there, result, metadata):
            continue
        _compare_dir(source, destination, rel, _keyed(rel, here), _keyed(rel, there), ignore,
                     keep, hashes, result, same_size, metadata)  # fmt: skip
    findings = result.findings
    if hashes:
        same_size.sort()  # read in order: neighbours on disk, findings in order
        _compare_content(
            source, destination, same_size, known or {}, early or {}, workers, executor, result
        )
    findings += check_metadata(destination, metadata)
    findings.sort(key=lambda f: (f.kind, f.key))
    return result


def _walk_both(
    source: str,
    destination: str,
    there_of: Callable[[str], DirListing | OSError | None] | None = None,
    lister: Callable[[str, str], _Listing] = list_dir,
) -> Iterator[tuple[str, _Listing | OSError | None, _Listing | OSError | None]]:
    """(rel, source listing, destination listing) for every directory of either tree, parents
    first; None for a side that has no such directory, an OSError for one not listable.
    `there_of`: the destination's listing of a directory, for one that is not a tree here
    (a sink's listing regrouped); by default it is listed below `destination`. `lister`:
    list_dir, or list_names for a caller that takes names and arrays (compare_trees)."""
    stack: list[tuple[str, bool, bool]] = [("", True, True)]
    while stack:
        rel, on_source, on_destination = stack.pop()
        here = _listing(source, rel, lister) if on_source else None
        if not on_destination:
            there = None
        else:
            there = _listing(destination, rel, lister) if there_of is None else there_of(rel)
        yield rel, here, there
        if isinstance(here, OSError) or isinstance(there, OSError):
            continue  # what one side cannot show is not walked on the other either
        mine = set(here.dirs) if here is not None else set()
        theirs = set(there.dirs) if there is not None else set()
        stack.extend((d, d in mine, d in theirs) for d in sorted(mine | theirs, reverse=True))


def _listing(
    root: str, rel: str, lister: Callable[[str, str], _Listing] = list_dir
) -> _Listing | OSError | None:
    try:
        return lister(root, rel)
    except OSError as exc:
        if gone(exc):
            return None
        if not rel:
            raise
        return exc


_EMPTY = DirListing()
# Files in a directory from which _same_files compares it as a whole: below, numpy's cost
# per call is more than the file-by-file comparison it saves.
_AS_A_WHOLE_FROM = 16


def _lister_by_size() -> Callable[[str, str], _Listing]:
    """list_names for a folder likely to be compared as a whole, list_dir for one likely
    compared file by file (its keyed listing is what _compare_dir takes, and converting a
    small folder's names cost more than listing it so): decided by the folder listed last,
    as a zarr tree's folders at one depth are alike. Either kind is compared correctly."""
    last = 0  # files in the folder listed last

    def lister(root: str, rel: str) -> _Listing:
        nonlocal last
        if last >= _AS_A_WHOLE_FROM:
            names = list_names(root, rel)
            last = len(names.names)
            return names
        listing = list_dir(root, rel)
        last = len(listing.files)
        return listing

    return lister


def _same_files(
    rel: str,
    here: DirNames | OSError | None,
    there: DirNames | OSError | None,
    result: Verification,
    metadata: list[str],
) -> bool:
    """A directory below the root that holds the same file names of the same sizes on both
    sides and nothing to report (no link, no destination temporary, nothing unreadable):
    counted and put in the size list a directory at a time, with no Version, key or
    comparison per file. False, with nothing done, for anything else: _compare_dir decides.

    A zarr archive is mostly such directories, so verifying a copy costs little more than
    listing both trees (a file-by-file comparison was a third of it)."""
    if not rel or not isinstance(here, DirNames) or not isinstance(there, DirNames):
        return False  # the root: `ignore` applies there; a missing side: findings
    files = len(there.names)
    if files < _AS_A_WHOLE_FROM or len(here.names) != files:
        return False
    if here.links or there.links or there.temporary or here.errors or there.errors:
        return False
    import numpy as np  # only here: `softcopy verify` of a few files does without it

    names = sorted(there.names)  # the size list's order, as _compare_dir's
    at_source = dict(zip(here.names, range(files), strict=True))
    at_destination = dict(zip(there.names, range(files), strict=True))
    try:
        # As many names, each of them on both sides: the same set.
        source_rows = list(map(at_source.__getitem__, names))
    except KeyError:
        return False
    destination_rows = list(map(at_destination.__getitem__, names))
    theirs = np.frombuffer(there.versions, dtype=np.int64).reshape(-1, 4)[destination_rows]
    mine = np.frombuffer(here.versions, dtype=np.int64).reshape(-1, 4)[source_rows]
    if not np.array_equal(mine[:, 0], theirs[:, 0]):
        return False
    sizes = theirs[:, 0].tolist()
    lines = format_entries(f"{rel}/", names, sizes, theirs[:, 1].tolist())
    result.size_list.write(lines.encode("utf-8", "surrogateescape"))
    result.files += files
    result.bytes += sum(sizes)
    # No ending spans the '/': a name ends with one exactly when its key does. A chunk
    # folder holds none: one search of all its names at once says so.
    joined = "".join(names)
    if any(ending in joined for ending in _METADATA_ENDINGS):
        metadata += [f"{rel}/{name}" for name in names if name.endswith(_METADATA_ENDINGS)]
    return True


def _keyed(rel: str, listing: _Listing | OSError | None) -> DirListing | OSError | None:
    """A DirNames as the DirListing _compare_dir takes: its files keyed, a Version each."""
    if not isinstance(listing, DirNames):
        return listing
    prefix = f"{rel}/" if rel else ""
    fields = iter(listing.versions)
    # Four fields at a time at C speed, each made a Version without NamedTuple's argument
    # handling (a large folder with a difference in it, or one side of a folder whose two
    # sides were listed differently).
    make = tuple.__new__
    fours = zip(fields, fields, fields, fields, strict=True)
    files = {
        prefix + name: make(Version, four) for name, four in zip(listing.names, fours, strict=True)
    }
    return DirListing(
        files, listing.links, listing.dirs, listing.temporary, listing.errors, listing.newest_ns
    )


def _compare_dir(
    source: str,
    destination: str,
    rel: str,
    here: DirListing | OSError | None,
    there: DirListing | OSError | None,
    ignore: frozenset[str],
    keep: Callable[[str], bool] | None,
    hashes: bool,
    result: Verification,
    same_size: list[tuple[str, Version, Version]],
    metadata: list[str],
    read_link: Callable[[str], str | None] | None = None,
    listed_mtime: bool = True,
) -> None:
    """`read_link`: the target of a destination link by key (a sink's link_target), for a
    destination that is not a directory here; by default it is read below `destination`.
    `listed_mtime` False: the destination's listing has no file mtimes of its own (a store
    listed without asking per object), so the size list takes the source's, the one its
    upload recorded."""
    findings = result.findings
    for side, listing in (("source", here), ("destination", there)):
        if isinstance(listing, OSError):
            findings.append(Finding("unreadable", rel, f"{side}: {_reason(listing)}"))
        elif listing is not None:
            for key, exc in listing.errors:
                findings.append(Finding("unreadable", key, f"{side}: {_reason(exc)}"))
    if isinstance(here, OSError) or isinstance(there, OSError):
        return  # what one side cannot show is not compared: no missing or extra guesses
    here = here or _EMPTY
    there = there or _EMPTY
    findings += [Finding("leftover", key) for key in there.temporary]
    src_files, dst_files = here.files, there.files
    src_links, dst_links = set(here.links), set(there.links)
    lines = result.size_list
    encode = format_entry
    for key in sorted(src_files.keys() | dst_files.keys() | src_links | dst_links):
        if key in ignore or (keep is not None and not keep(key)):
            continue
        a, b = src_files.get(key), dst_files.get(key)
        if a is not None and b is not None:
            if is_metadata(key):
                metadata.append(key)
            if a.size != b.size:
                findings.append(Finding("size", key, source=a.size, destination=b.size))
                continue
            result.files += 1
            result.bytes += b.size
            mtime_ns = b.mtime_ns if listed_mtime else a.mtime_ns
            lines.write(encode(key, b.size, mtime_ns).encode("utf-8", "surrogateescape"))
            if hashes:
                same_size.append((key, a, b))
            continue
        src_link, dst_link = key in src_links, key in dst_links
        on_source, on_destination = a is not None or src_link, b is not None or dst_link
        if not on_destination:
            findings.append(Finding("missing", key))
        elif not on_source:
            findings.append(Finding("extra", key))
            if b is not None and is_metadata(key):
                metadata.append(key)
        elif src_link != dst_link:
            kinds = ("link" if src_link else "file", "link" if dst_link else "file")
            findings.append(Finding("type", key, source=kinds[0], destination=kinds[1]))
        else:
            result.links += 1
            a_to = os.readlink(os.path.join(source, key))
            if read_link is None:
                b_to: str | None = os.readlink(os.path.join(destination, key))
            else:
                b_to = read_link(key)
            if a_to != b_to:
                findings.append(Finding("link", key, source=a_to, destination=b_to))


def is_metadata(key: str) -> bool:
    """Maybe a zarr metadata file (check_metadata looks at its name exactly): one cheap
    test per key of a million."""
    return key.endswith(_METADATA_ENDINGS)


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno or 0)


def _compare_content(
    source: str,
    destination: str,
    same_size: list[tuple[str, Version, Version]],
    known: Mapping[str, tuple[Version, str]],
    early: Mapping[str, EarlyRead],
    workers: int,
    executor: Executor | None,
    result: Verification,
) -> None:
    expected: dict[str, str] = {}
    read_back: list[tuple[str, str | None, OSError | None]] = []
    to_hash, to_read = [], []
    for key, here, there in same_size:
        entry = known.get(key)
        if entry is not None and entry[0] == here:
            expected[key] = entry[1]
        else:
            to_hash.append(key)
        back = early.get(key)
        if back is not None and back.destination == there and back.source == here:
            read_back.append((key, back.digest, None))
        else:
            to_read.append(key)
    for key, digest, exc in hash_files(source, to_hash, workers, executor=executor):
        if digest is None:
            result.findings.append(Finding("unreadable", key, f"source: {exc}"))
        else:
            expected[key] = digest
    reads = hash_files(destination, to_read, workers, evict=True, executor=executor)
    for key, digest, exc in itertools.chain(read_back, reads):
        if digest is None:
            result.findings.append(Finding("unreadable", key, f"destination: {exc}"))
            continue
        result.digests[key] = digest
        if key in expected and expected[key] != digest:
            result.findings.append(
                Finding("content", key, source=expected[key][:16], destination=digest[:16])
            )


def check_metadata(root: str, keys: Iterable[str]) -> list[Finding]:
    """Every zarr metadata file among `keys` is JSON, and every array's metadata describes a
    layout."""
    findings: list[Finding] = []
    nodes: set[str] = set()
    for key in sorted(k for k in keys if k.endswith(_METADATA_ENDINGS)):
        name = os.path.basename(key)
        kind = metadata_kind(name)
        if kind is None:
            continue
        if kind in ("array_v2", "v3", "group_v2"):
            nodes.add(os.path.dirname(key))
            continue
        try:
            problem = attributes_problem(Path(root, key))
        except OSError as exc:
            problem = str(exc)
        if problem is not None:
            findings.append(Finding("metadata", key, problem))
    for rel in sorted(nodes):
        try:
            read_node(Path(root, rel), rel)
        except MetadataError as exc:
            findings.append(Finding("metadata", metadata_key(root, rel, exc), exc.problem))
        except OSError as exc:
            findings.append(Finding("unreadable", rel, str(exc)))
    return findings


def metadata_key(root: str, rel: str, exc: MetadataError) -> str:
    """The key of the metadata file an error is about (`rel/*` if it names none below root)."""
    key = os.path.relpath(exc.path, root)
    if key == os.pardir or key.startswith(os.pardir + os.sep) or os.path.isabs(key):
        return os.path.join(rel, "*")
    return key


def check_manifest(
    destination: str,
    digests: Mapping[str, str],
    workers: int = 4,
    executor: Executor | None = None,
    keep: Callable[[str], bool] | None = None,
) -> Verification:
    """A destination against its manifest alone: months later, the source long gone.

    `executor` runs the reads (default: a pool of `workers` threads). `keep`: the
    include/exclude the copy (and the check) chose; other keys are left out on both sides.
    """
    dst = scan_tree(destination)

    def read_back(keys: list[str]) -> Iterator[tuple[str, str | None, str]]:
        reads = hash_files(destination, keys, workers, evict=True, executor=executor)
        for key, digest, exc in reads:
            yield key, digest, str(exc) if exc is not None else ""

    return against_manifest(dst.files, dst.links, digests, read_back, keep)


def against_manifest(
    files: Mapping[str, Version],
    links: Iterable[str],
    digests: Mapping[str, str],
    read_back: Callable[[list[str]], Iterable[tuple[str, str | None, str]]],
    keep: Callable[[str], bool] | None = None,
    findings: Iterable[Finding] = (),
) -> Verification:
    """What a destination holds (`files`, `links`) against a manifest; `read_back(keys)`
    gives (key, BLAKE3 or None, why not) of each file as the destination holds it.
    `findings` already made (parts that could not be listed) are kept."""
    result = Verification()
    result.findings += findings
    found = result.findings
    links = set(links)
    # Links are not in a manifest (b3sum would hash what they point to), so not extras.
    present = _kept(set(files) - links, keep)
    listed = _kept(set(digests), keep)
    found += [Finding("missing", k, against=MANIFEST) for k in sorted(listed - present)]
    found += [Finding("manifest", k) for k in sorted(present - listed)]
    keys = sorted(present & listed)
    result.files = len(keys)
    result.bytes = sum(files[k].size for k in keys)
    result.links = len(links)
    for key, digest, problem in read_back(keys):
        if digest is None:
            found.append(Finding("unreadable", key, problem))
        elif digest != digests[key]:
            found.append(
                Finding(
                    "content",
                    key,
                    source=digests[key][:16],
                    destination=digest[:16],
                    against=MANIFEST,
                )
            )
        else:
            result.digests[key] = digest
    found.sort(key=lambda f: (f.kind, f.key))
    return result


def check_sizes(
    destination: str,
    listed: Mapping[str, tuple[int, int]],
    keep: Callable[[str], bool] | None = None,
) -> Verification:
    """A destination against the size list its copy left (key -> size, mtime_ns): for a
    copy made without --hash, checked later without the source. Copies keep their
    mtime, so a file rewritten since (same size or not) shows as a difference."""
    dst = scan_tree(destination)
    unreadable = [
        Finding("unreadable", key, f"destination: {os.strerror(exc.errno or 0)}")
        for key, exc in dst.errors
    ]
    result = against_size_list(dst.files, dst.links, dst.temporary, listed, keep, unreadable)
    result.findings += check_metadata(destination, dst.files)
    return result


def against_size_list(
    files: Mapping[str, Version],
    links: Iterable[str],
    temporary: Iterable[str],
    listed: Mapping[str, tuple[int, int]],
    keep: Callable[[str], bool] | None = None,
    findings: Iterable[Finding] = (),
) -> Verification:
    """What a destination holds against a size list (key -> size, mtime_ns)."""
    result = Verification()
    found = result.findings
    found += [Finding("leftover", key) for key in sorted(temporary)]
    found += findings
    links = set(links)
    # Links are not in the list (their target is what a link holds, not a size).
    present = _kept(set(files) - links, keep)
    wanted = _kept(set(listed), keep)
    found += [Finding("missing", k, against=SIZE_LIST) for k in sorted(wanted - present)]
    found += [Finding("size list", k) for k in sorted(present - wanted)]
    for key in sorted(present & wanted):
        size, mtime_ns = listed[key]
        held = files[key]
        if held.size != size:
            found.append(
                Finding("size", key, source=size, destination=held.size, against=SIZE_LIST)
            )
        elif held.mtime_ns != mtime_ns:
            found.append(
                Finding(
                    "mtime",
                    key,
                    source=_when(mtime_ns),
                    destination=_when(held.mtime_ns),
                    against=SIZE_LIST,
                )
            )
        else:
            result.files += 1
            result.bytes += size
    result.links = len(links)
    return result


def _kept(keys: set[str], keep: Callable[[str], bool] | None) -> set[str]:
    return keys if keep is None else {k for k in keys if keep(k)}


def _when(ns: int) -> str:
    """A modification time to the nanosecond, in UTC, for a finding."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"
