"""Compare a destination reached through its sink (an object store) with its source or records.

The twin of compare.py for a destination that is not a directory tree: its listing comes from
`sink.listings()`, its bytes from `sink.open(key)`. The findings, their meaning and the size
list are compare.py's own; what differs is said where it is done:

- A source link is no finding when the sink keeps no links (object stores have none): the
  copy skipped it on purpose, so it is counted (`Verification.links_skipped`) for the
  certificate to say so. With the sink's `follow_links_inside`, a link leading to a file
  inside the source was uploaded as that file (sources/links.py), and is compared as one.
- Zarr metadata is not parsed here (that would need a reader over the sink); with `hashes`
  its bytes are proven equal to the source's (or the manifest's), which is stronger.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..errors import SoftcopyError
from ..sources.links import followed
from ..sources.scan import DirListing, Version
from .compare import (
    Finding,
    Verification,
    _compare_dir,
    _reason,
    _walk_both,
    against_manifest,
    against_size_list,
)
from .hashing import hash_files, new_hasher

if TYPE_CHECKING:
    from ..sinks.base import Sink

_BLOCK = 1 << 20  # one read of a download: the sink's buffer size


def compare_with_sink(
    source: str,
    sink: Sink,
    ignore: frozenset[str] = frozenset(),
    hashes: bool = False,
    known: Mapping[str, tuple[Version, str]] | None = None,
    workers: int = 4,
    keep: Callable[[str], bool] | None = None,
) -> Verification:
    """Every difference in the set of files, sizes and (with `hashes`) content.

    As compare.compare_trees, with the destination read through `sink`: its listing is
    grouped by directory and compared with the source one directory at a time; with
    `hashes` every object is downloaded again (`workers` at a time) and its BLAKE3 compared
    with `known` (digests taken while copying, by source version) or the source's. Source
    links the sink cannot hold are not findings but `links_skipped`. Zarr metadata is not
    parsed: with `hashes` its bytes are proven, without them its size.
    """
    result = Verification()
    same_size: list[tuple[str, Version, Version]] = []
    there_of = _by_directory(sink)
    keeps_links = sink.capabilities.links
    metadata: list[str] = []  # collected by _compare_dir, never parsed here (see above)
    follow = dict(sink.spec.options).get("follow_links_inside") == "true"
    followed_to: dict[str, str] = {}  # key -> the file a followed link leads to

    def excluded(key: str) -> bool:
        return key in ignore or (keep is not None and not keep(key))

    location = sink.spec.location
    # A directory's listing has its files' own mtimes; a store listed without a request per
    # object has only its upload times (Sink.listings, exact=False).
    listed_mtime = sink.capabilities.local_paths
    for rel, here, there in _walk_both(source, location, there_of):
        if isinstance(here, DirListing) and not keeps_links:
            mine = there if isinstance(there, DirListing) else None
            here = _as_uploaded(source, here, mine, excluded, result, follow, followed_to)
        _compare_dir(source, location, rel, here, there, ignore, keep, hashes, result,
                     same_size, metadata, sink.link_target, listed_mtime)  # fmt: skip
    if hashes:
        same_size.sort()
        _compare_content(source, sink, same_size, known or {}, followed_to, workers, result)
    result.findings.sort(key=lambda f: (f.kind, f.key))
    return result


def _by_directory(sink: Sink) -> Callable[[str], DirListing | OSError | None]:
    """The sink's listing regrouped one DirListing per directory (the source's unit, with
    `dirs` as a directory's would have): the destination listing of a directory by its key,
    an OSError for a part that could not be listed (an empty listing whose errors name it),
    None for one that does not exist."""
    groups: dict[str, DirListing] = {}
    blocked: dict[str, OSError] = {}

    groups[""] = DirListing()

    def group(rel: str) -> DirListing:
        found = groups.get(rel)
        if found is not None:
            return found
        found = groups[rel] = DirListing()
        child = rel  # its parents too, each in its parent's `dirs` (no recursion: any depth)
        while True:
            parent = _parent(child)
            above = groups.get(parent)
            if above is not None:
                above.dirs.append(child)
                return found
            above = groups[parent] = DirListing(dirs=[child])
            child = parent

    # Sizes are all a comparison needs: no request per object for its recorded mtime.
    for part in sink.listings(exact=False):
        if part.errors and not (part.files or part.links or part.temporary):
            for key, exc in part.errors:
                blocked[key] = exc
                if key and key not in groups:
                    group(key)  # walked to, then found unlistable
            continue
        for key, version in part.files.items():
            group(_parent(key)).files[key] = version
        for key in part.links:
            group(_parent(key)).links.append(key)
        for key in part.temporary:
            group(_parent(key)).temporary.append(key)
        for key, exc in part.errors:
            group(_parent(key)).errors.append((key, exc))

    def there_of(rel: str) -> DirListing | OSError | None:
        if rel in blocked:
            return blocked[rel]
        return groups.get(rel)

    return there_of


def _parent(key: str) -> str:
    return key.rpartition("/")[0]


def _as_uploaded(
    source: str,
    here: DirListing,
    there: DirListing | None,
    excluded: Callable[[str], bool],
    result: Verification,
    follow: bool,
    followed_to: dict[str, str],
) -> DirListing:
    """The source directory as a sink without links holds it: each link skipped (counted,
    unless the destination holds something by its name: then it is a type difference), or
    with `follow`, one leading to a file inside the source standing for that file."""
    if not here.links:
        return here
    files = here.files
    links: list[str] = []
    for key in here.links:
        if excluded(key):
            continue
        found = followed(source, key) if follow else None
        if found is not None:
            files = dict(files) if files is here.files else files
            followed_to[key], files[key] = found
            continue
        if there is not None and key in there.files:
            links.append(key)  # an object where the source has a link: `type` finding
        else:
            result.links_skipped += 1
    return DirListing(files, links, here.dirs, here.temporary, here.errors, here.newest_ns)


def _compare_content(
    source: str,
    sink: Sink,
    same_size: list[tuple[str, Version, Version]],
    known: Mapping[str, tuple[Version, str]],
    followed_to: Mapping[str, str],
    workers: int,
    result: Verification,
) -> None:
    expected: dict[str, str] = {}
    to_hash: list[str] = []
    linked: list[str] = []
    for key, here, _ in same_size:
        entry = known.get(key)
        if entry is not None and entry[0] == here:
            expected[key] = entry[1]
        else:
            (linked if key in followed_to else to_hash).append(key)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reads = hash_files(source, to_hash, workers, executor=pool)
        # A followed link's bytes are its file's (hash_files opens keys without following).
        link_reads = _in_order(pool, lambda k: _file_digest(followed_to[k]), linked, workers)
        for key, digest, exc in itertools.chain(reads, link_reads):
            if digest is None:
                result.findings.append(Finding("unreadable", key, f"source: {exc}"))
            else:
                expected[key] = digest
        keys = [key for key, _, _ in same_size]
        for key, digest, exc in download_digests(sink, keys, workers, pool):
            if digest is None:
                result.findings.append(Finding("unreadable", key, f"destination: {exc}"))
                continue
            result.digests[key] = digest
            if key in expected and expected[key] != digest:
                result.findings.append(
                    Finding("content", key, source=expected[key][:16], destination=digest[:16])
                )


def download_digests(
    sink: Sink, keys: Iterable[str], workers: int = 4, executor: Executor | None = None
) -> Iterator[tuple[str, str | None, str | None]]:
    """(key, BLAKE3 of the bytes the sink gives back, or None and why) for each key, in
    order, `workers` downloads at a time (boto3 clients are thread-safe: the sink's is
    shared)."""
    if executor is None:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            yield from download_digests(sink, keys, workers, pool)
        return
    yield from _in_order(executor, lambda key: _object_digest(sink, key), keys, workers)


def _in_order(
    executor: Executor, read: Callable[[str], str], keys: Iterable[str], workers: int
) -> Iterator[tuple[str, str | None, str | None]]:
    """`read` of each key on the executor, a few per worker in flight (not a future per
    object of a million), results in the order of `keys`."""
    window = 4 * max(1, workers)
    pending: deque[tuple[str, Future[str]]] = deque()
    try:
        for key in keys:
            pending.append((key, executor.submit(read, key)))
            if len(pending) >= window:
                yield _outcome(*pending.popleft())
        while pending:
            yield _outcome(*pending.popleft())
    finally:  # a caller that stops early leaves no reads running for nothing
        for _, future in pending:
            future.cancel()


def _outcome(key: str, future: Future[str]) -> tuple[str, str | None, str | None]:
    try:
        return key, future.result(), None
    except SoftcopyError as exc:  # the store refused (denied, unreachable): said in words
        return key, None, exc.problem
    except OSError as exc:
        return key, None, exc.strerror or str(exc)
    except Exception as exc:
        # A streamed body can also fail with the store library's own errors (a reset
        # mid-download): one object that cannot be read is that object's finding.
        return key, None, f"{type(exc).__name__}: {exc}"


def _file_digest(path: str) -> str:
    hasher = new_hasher()
    # The real path, every link resolved: one swapped in since is refused (ELOOP), not read.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
        while block := f.read(_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


def _object_digest(sink: Sink, key: str) -> str:
    hasher = new_hasher()
    with sink.open(key) as body:
        while block := body.read(_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


def _whole(
    sink: Sink, exact: bool = True
) -> tuple[dict[str, Version], list[str], list[str], list[Finding]]:
    """(files, links, temporaries, unreadable findings) of the whole sink listing; `exact`
    as for Sink.listings (False: sizes are enough)."""
    files: dict[str, Version] = {}
    links: list[str] = []
    temporary: list[str] = []
    findings: list[Finding] = []
    for part in sink.listings(exact):
        files.update(part.files)
        links += part.links
        temporary += part.temporary
        findings += [Finding("unreadable", k, f"destination: {_reason(e)}") for k, e in part.errors]
    return files, links, temporary, findings


def check_sink_manifest(
    sink: Sink,
    digests: Mapping[str, str],
    workers: int = 4,
    keep: Callable[[str], bool] | None = None,
) -> Verification:
    """A destination in a sink against its manifest alone (compare.check_manifest's twin):
    every object is downloaded again and its BLAKE3 compared with the manifest's."""
    files, links, _, unreadable = _whole(sink, exact=False)  # contents are compared

    def read_back(keys: list[str]) -> Iterator[tuple[str, str | None, str]]:
        for key, digest, problem in download_digests(sink, keys, workers):
            yield key, digest, problem or ""

    return against_manifest(files, links, digests, read_back, keep, unreadable)


def check_sink_sizes(
    sink: Sink,
    listed: Mapping[str, tuple[int, int]],
    keep: Callable[[str], bool] | None = None,
) -> Verification:
    """A destination in a sink against its size list (compare.check_sizes' twin). An object
    softcopy wrote carries its source version's mtime (the sink's Version gives it back),
    so an object replaced since, same size or not, shows as a difference."""
    files, links, temporary, unreadable = _whole(sink)
    return against_size_list(files, links, temporary, listed, keep, unreadable)
