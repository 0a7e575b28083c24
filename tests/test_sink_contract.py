"""The contract every destination keeps, run against every kind of sink (a directory, a bucket).

A new kind (object storage, a tar stream) adds a factory to KINDS and must pass this
suite; its capability flags decide which tests apply. Puts are held mid-copy through
the throttle hook, which a put calls before every slice it copies: the tests look at
the destination, or change the source, at a known point of a copy in flight, with no
timing involved.
"""

from __future__ import annotations

import dataclasses
import errno
import inspect
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import s3server
from blake3 import blake3

from softcopy.copiers.pool import CopierPool
from softcopy.copiers.protocol import CopierOptions
from softcopy.errors import ConfigError, SoftcopyError
from softcopy.sinks.base import (
    CHANGED,
    COPIED,
    DELETED,
    FAILED,
    SAME,
    RecordsFolder,
    Sink,
    SinkSpec,
    sink_from_spec,
)
from softcopy.sources.scan import version_of
from softcopy.state.records import records_dir

MTIME_NS = 1_234_567_890_123_456_789
SIZE = 1 << 20  # sixteen slices of 64 KiB under the hook's rate
DEADLINE = 60.0


@dataclass(frozen=True)
class Kind:
    """How to make a sink of one kind on a test's own storage."""

    location: Callable[[Path], str]
    # The records folder's local path, for tests that plant links in it; None: not local.
    records: Callable[[str], Path] | None = None


KINDS = {
    "local": Kind(lambda tmp: str(tmp / "dst"), lambda loc: records_dir(Path(loc))),
    # A fresh bucket on the loopback moto server (skipped without moto).
    "s3": Kind(lambda tmp: f"s3://{s3server.new_bucket()}/dst"),
}


@dataclass
class Setup:
    name: str
    kind: Kind
    spec: SinkSpec
    src: Path
    tmp: Path

    def make(self, location: str | None = None) -> Sink:
        return sink_from_spec(SinkSpec(self.spec.kind, location or self.spec.location))


@pytest.fixture(params=sorted(KINDS))
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    kind = KINDS[request.param]
    src = tmp_path / "src"
    src.mkdir()
    return Setup(
        request.param, kind, SinkSpec(request.param, kind.location(tmp_path)), src, tmp_path
    )


@pytest.fixture
def sink(setup: Setup) -> Iterator[Sink]:
    """A sink locked and created for a run, as the engine holds it."""
    s = setup.make()
    s.lock()
    s.create()
    try:
        yield s
    finally:
        s.close()


def write(root: Path, key: str, data: bytes, mtime_ns: int = MTIME_NS) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def read(sink: Sink, key: str) -> bytes:
    with sink.open(key) as f:
        return f.read()


def leftovers(sink: Sink) -> list[str]:
    return sink.listing().temporary


class Hook:
    """A throttle that runs `act(n)` before the n-th slice of a put; never waits."""

    rate = 1.0  # the smallest slice: a put of SIZE bytes calls it sixteen times

    def __init__(self, act: Callable[[int], None]) -> None:
        self.act = act
        self.calls = 0

    def __call__(self, nbytes: int) -> None:
        self.calls += 1
        self.act(self.calls)


class Crash(Exception):
    """Not an OSError: a put stops dead, as when its process is killed."""


def requires(sink: Sink, capability: str) -> None:
    if not getattr(sink.capabilities, capability):
        pytest.skip(f"this kind of destination has no {capability}")


NAMES = {
    "plain": "c/0/0",
    "longest": "d/" + "n" * 255,  # its temporary name is a digest form
    "not-utf8": os.fsdecode(b"raw/\xff\xfe-chunk"),
    "long-not-utf8": os.fsdecode(b"\xff/" + b"\xfe" * 255),
}


def test_every_operation_is_there_with_the_protocols_parameters(sink: Sink) -> None:
    for name, wanted in vars(Sink).items():
        if name.startswith("_") or not callable(wanted):
            continue
        have = getattr(sink, name)
        assert (
            list(inspect.signature(have).parameters)
            == list(inspect.signature(wanted).parameters)[1:]
        ), name  # the protocol's own lists self
    assert {f.name for f in dataclasses.fields(sink.capabilities)} >= {"links", "deletes"}
    assert sink_from_spec(sink.spec).spec == sink.spec


def test_every_records_folder_has_the_protocols_operations(sink: Sink) -> None:
    # The engine asks a bucket's records what it asks a folder's: one missing operation
    # was an internal error of every copy to a bucket.
    records = sink.records
    assert records is not None
    for name, wanted in vars(RecordsFolder).items():
        if (name.startswith("_") and name != "__truediv__") or not callable(wanted):
            continue
        assert callable(getattr(records, name, None)), name
    assert not records.has("certificate.json")
    records.write("certificate.json", b"{}")
    assert records.has("certificate.json")
    records.unlink("certificate.json")
    assert not records.has("certificate.json")


# ---- a put ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NAMES))
def test_a_put_publishes_the_whole_file_with_its_mtime(setup: Setup, sink: Sink, name: str) -> None:
    key = NAMES[name]
    data = os.urandom(4097)
    write(setup.src, key, data)
    outcome = sink.put(str(setup.src), key)
    assert outcome.status == COPIED, outcome
    assert outcome.version == version_of(os.lstat(setup.src / key))
    assert outcome.nbytes == len(data)
    listing = sink.listing()
    assert listing.files[key].size == len(data)
    assert listing.files[key].mtime_ns == MTIME_NS
    assert read(sink, key) == data
    assert listing.temporary == []


@pytest.mark.parametrize("digest", [False, True], ids=["kernel-copy", "hashing"])
@pytest.mark.parametrize("before", ["absent", "older"])
def test_a_put_in_flight_is_never_visible_under_the_final_name(
    setup: Setup, sink: Sink, digest: bool, before: str
) -> None:
    key = "c/1/0"
    old = b"the older version"
    if before == "older":
        write(setup.src, key, old, MTIME_NS - 10**9)
        assert sink.put(str(setup.src), key).status == COPIED
    new = os.urandom(SIZE)
    write(setup.src, key, new)
    seen = []

    def look(n: int) -> None:
        if n in (2, 8, 16):  # just started, half way, one slice short of the end
            files = sink.listing().files
            if before == "absent":
                assert key not in files
            else:
                assert files[key].size == len(old)
                assert read(sink, key) == old
            seen.append(n)

    outcome = sink.put(str(setup.src), key, digest=digest, throttle=Hook(look))
    assert seen == [2, 8, 16]
    assert outcome.status == COPIED
    assert read(sink, key) == new
    assert leftovers(sink) == []
    if digest:
        assert outcome.digest == blake3(new).hexdigest()


@pytest.mark.parametrize("before", ["absent", "older"])
def test_a_put_whose_source_fails_mid_read_publishes_nothing(
    setup: Setup, sink: Sink, before: str
) -> None:
    key = "c/2/0"
    if before == "older":
        write(setup.src, key, b"older", MTIME_NS - 10**9)
        sink.put(str(setup.src), key)
    write(setup.src, key, os.urandom(SIZE))

    def fail(n: int) -> None:
        if n == 4:
            raise OSError(errno.EIO, "Input/output error")

    outcome = sink.put(str(setup.src), key, throttle=Hook(fail))
    assert (outcome.status, outcome.errno) == (FAILED, errno.EIO)
    files = sink.listing().files
    if before == "absent":
        assert key not in files
    else:
        assert read(sink, key) == b"older"
    assert leftovers(sink) == []


def _append(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"more")


def _replace(path: Path) -> None:
    new = path.with_name(path.name + ".__lock")
    new.write_bytes(b"a newer version")
    os.rename(new, path)


CHANGES: dict[str, Callable[[Path], None]] = {
    "appended": _append,
    "renamed over": _replace,
    "truncated": lambda p: os.truncate(p, 1000),
    "touched": lambda p: os.utime(p, ns=(MTIME_NS + 10**9, MTIME_NS + 10**9)),
    "deleted": os.unlink,
}


@pytest.mark.parametrize("before", ["absent", "older"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_source_changed_during_a_put_publishes_nothing(
    setup: Setup, sink: Sink, change: str, before: str
) -> None:
    key = "c/3/0"
    if before == "older":
        write(setup.src, key, b"older", MTIME_NS - 10**9)
        sink.put(str(setup.src), key)
    path = write(setup.src, key, os.urandom(SIZE))

    def act(n: int) -> None:
        if n == 2:
            CHANGES[change](path)

    outcome = sink.put(str(setup.src), key, throttle=Hook(act))
    assert outcome.status == CHANGED, outcome
    if before == "absent":
        assert key not in sink.listing().files
    else:
        assert read(sink, key) == b"older"
    assert leftovers(sink) == []


def test_a_newer_version_replaces_an_older_one(setup: Setup, sink: Sink) -> None:
    key = "zarr.json"
    write(setup.src, key, b"version one", MTIME_NS - 10**9)
    assert sink.put(str(setup.src), key).status == COPIED
    write(setup.src, key, b"version two, longer")
    outcome = sink.put(str(setup.src), key)
    assert outcome.status == COPIED
    assert outcome.version == version_of(os.lstat(setup.src / key))
    assert read(sink, key) == b"version two, longer"
    assert sink.listing().files[key].mtime_ns == MTIME_NS


def test_identical_bytes_compared_first_are_not_written_again(setup: Setup, sink: Sink) -> None:
    write(setup.src, "c/4/0", b"same bytes")
    assert sink.put(str(setup.src), "c/4/0").status == COPIED
    outcome = sink.put(str(setup.src), "c/4/0", compare_first=True, digest=True)
    assert outcome.status == SAME
    assert outcome.digest == blake3(b"same bytes").hexdigest()


# ---- deletes, listing, leftovers ---------------------------------------------------------------


def test_delete(setup: Setup, sink: Sink) -> None:
    requires(sink, "deletes")
    write(setup.src, "a/k", b"x")
    write(setup.src, "a/gone", b"y")
    sink.put(str(setup.src), "a/k")
    sink.put(str(setup.src), "a/gone")
    assert sink.delete("a/k").status == DELETED
    assert sink.delete("a/never-there").status == DELETED
    assert sink.delete("no/such/directory").status == DELETED
    (setup.src / "a" / "gone").unlink()
    assert sink.put(str(setup.src), "a/gone").status == DELETED  # the source is gone
    sink.release()
    assert sink.listing().files == {}


def test_listing_gives_sizes_mtimes_and_links(setup: Setup, sink: Sink) -> None:
    keys = {"zarr.json": b"{}", "c/0/0": b"a" * 10, "c/0/1": b"", "deep/er/still": b"abc"}
    for key, data in keys.items():
        write(setup.src, key, data)
        sink.put(str(setup.src), key)
    listing = sink.listing()
    assert {k: (v.size, v.mtime_ns) for k, v in listing.files.items()} == {
        k: (len(d), MTIME_NS) for k, d in keys.items()
    }
    assert listing.links == set()
    if sink.capabilities.links:
        os.symlink("c/0/0", setup.src / "alias")
        assert sink.put(str(setup.src), "alias").status == COPIED
        listing = sink.listing()
        assert listing.links == {"alias"}
        assert "alias" not in listing.files
        assert sink.link_target("alias") == "c/0/0"
        assert sink.link_target("zarr.json") is None
        assert sink.version("alias") is not None
    assert sink.version("c/0/0") == listing.files["c/0/0"]
    assert sink.version("missing") is None


@pytest.mark.parametrize("name", sorted(NAMES))
@pytest.mark.parametrize("how", ["remove_temporaries", "discard_partial"])
def test_the_leftovers_of_a_put_that_died_are_removed(
    setup: Setup, sink: Sink, name: str, how: str
) -> None:
    key = NAMES[name]
    write(setup.src, key, os.urandom(SIZE))

    def die(n: int) -> None:
        if n == 3:
            raise Crash

    with pytest.raises(Crash):
        sink.put(str(setup.src), key, throttle=Hook(die))
    sink.release()
    listing = sink.listing()
    assert key not in listing.files
    # A kind that writes in pieces leaves one temporary; an upload in one request, none.
    assert len(listing.temporary) == (1 if sink.capabilities.partial_writes else 0)
    if how == "remove_temporaries":
        sink.remove_temporaries(listing.temporary)
    else:
        sink.discard_partial([key, "never/put"])
    listing = sink.listing()
    assert listing.temporary == []
    assert listing.files == {}
    assert sink.put(str(setup.src), key).status == COPIED  # and a retry starts afresh


def test_a_writers_temporaries_are_listed_but_never_removed(setup: Setup, sink: Sink) -> None:
    """Only softcopy's own: a tensorstore or zarr-python temporary is not ours to delete."""
    foreign = "c/0/0.__lock"
    write(setup.src, foreign, b"a writer's")
    sink.put(str(setup.src), foreign)  # a plain put, as if the destination had one
    listing = sink.listing()
    assert listing.temporary == [foreign]
    sink.remove_temporaries(listing.temporary)
    assert sink.listing().temporary == [foreign]


# ---- markers, flush, space ----------------------------------------------------------------------


def test_markers_are_written_in_order_durably(setup: Setup, sink: Sink) -> None:
    write(setup.src, "c/0", b"data")
    sink.put(str(setup.src), "c/0")
    write(setup.src, "done.txt", b"sentinel")
    write(setup.src, "complete", b"")
    digests = sink.write_markers(str(setup.src), ["done.txt", "complete"], digest=True)
    assert digests == {
        "done.txt": blake3(b"sentinel").hexdigest(),
        "complete": blake3().hexdigest(),
    }
    assert set(sink.listing().files) == {"c/0", "done.txt", "complete"}
    assert sink.write_markers(str(setup.src), [], digest=False) == {}


def test_the_last_marker_never_follows_one_that_failed(setup: Setup, sink: Sink) -> None:
    write(setup.src, "complete", b"")
    with pytest.raises(SoftcopyError, match="cannot write completion marker"):
        sink.write_markers(str(setup.src), ["vanished-sentinel", "complete"], digest=False)
    assert sink.listing().files == {}


def test_a_directory_where_the_marker_goes_is_named(setup: Setup, sink: Sink) -> None:
    if setup.kind.records is None:
        pytest.skip("a directory in the way is a local directory's problem")
    write(setup.src, "complete", b"")
    (Path(setup.spec.location) / "complete").mkdir()
    with pytest.raises(SoftcopyError, match="a directory is where the marker goes"):
        sink.write_markers(str(setup.src), ["complete"], digest=False)


def test_flush(setup: Setup, sink: Sink) -> None:
    sink.flush()  # nothing written yet
    write(setup.src, "c/0", b"data")
    sink.put(str(setup.src), "c/0", fsync=True)
    sink.flush()
    assert read(sink, "c/0") == b"data"


def test_free_space(setup: Setup, sink: Sink) -> None:
    requires(sink, "free_space")
    space = sink.space()
    assert space.free_bytes > 0 and space.block >= 1
    assert space.free_inodes is None or space.free_inodes > 0
    assert space.mount in space.where
    if setup.kind.records is not None and shutil.which("df"):
        # Asked another way: df, for the same directory.
        out = subprocess.run(
            ["df", "-B1", "--output=avail,target", setup.spec.location],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")[1]
        avail, target = out.split(maxsplit=1)
        assert space.mount == target.strip()
        assert abs(space.free_bytes - int(avail)) < max(64 << 20, int(avail) // 20)


def test_free_space_of_a_destination_not_made_yet(setup: Setup) -> None:
    """A dry run asks before anything exists."""
    s = setup.make(setup.spec.location + "/not/yet")
    try:
        space = s.space()
    finally:
        s.close()
    assert space.free_bytes > 0 and space.mount


def test_probe(sink: Sink) -> None:
    sink.probe()
    assert sink.listing().files == {} and leftovers(sink) == []


# ---- locks and records --------------------------------------------------------------------------


def test_a_second_holder_is_refused(setup: Setup, sink: Sink) -> None:
    other = setup.make()
    try:
        with pytest.raises(ConfigError, match="another softcopy is already copying there"):
            other.lock()
    finally:
        other.close()
    sink.close()  # the first lets go: a later run takes it
    again = setup.make()
    try:
        again.lock()
        assert again.create() is False
    finally:
        again.close()


def test_a_second_holder_through_a_linked_parent_is_refused(setup: Setup, sink: Sink) -> None:
    requires(sink, "links")
    if setup.kind.records is None:
        pytest.skip("linked parents are a local directory's second names")
    location = Path(setup.spec.location)
    alias = setup.tmp / "alias"
    alias.symlink_to(location.parent, target_is_directory=True)
    other = setup.make(str(alias / location.name))
    try:
        with pytest.raises(ConfigError, match="already copying there"):
            other.lock()
    finally:
        other.close()


def test_a_second_holder_through_a_bind_mount_is_refused(setup: Setup, sink: Sink) -> None:
    """Another records folder, the same directory: the identity lock refuses it."""
    requires(sink, "identity_lock")
    if setup.kind.records is None:
        pytest.skip("bind mounts are a local directory's second names")
    where = setup.tmp / "elsewhere" / "dst"
    where.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "--bind", setup.spec.location, where], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount --bind failed: {mounted.stderr.strip()}")
    other = setup.make(str(where))
    try:
        other.lock()  # its own records folder
        with pytest.raises(ConfigError, match="under another name for this directory"):
            other.create()
    finally:
        other.close()
        subprocess.run(["umount", where], check=True)


def test_a_destination_that_is_a_link_is_refused(setup: Setup) -> None:
    if setup.kind.records is None:
        pytest.skip("a local directory's problem")
    real = setup.tmp / "real"
    real.mkdir()
    Path(setup.spec.location).symlink_to(real, target_is_directory=True)
    s = setup.make()
    try:
        with pytest.raises(ConfigError, match="symbolic link"):
            s.lock()
    finally:
        s.close()
    assert list(real.iterdir()) == []


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Beside both trees: nothing may ever be written here."""
    p = tmp_path / "outside"
    p.mkdir()
    (p / "victim").write_bytes(b"precious")
    return p


def untouched(outside: Path) -> bool:
    return os.listdir(outside) == ["victim"] and (outside / "victim").read_bytes() == b"precious"


@pytest.mark.parametrize("planted", ["folder", "lock"])
def test_a_records_folder_or_lock_that_is_a_link_is_refused(
    setup: Setup, outside: Path, planted: str
) -> None:
    if setup.kind.records is None:
        pytest.skip("links are planted in a local records folder")
    records = setup.kind.records(setup.spec.location)
    if planted == "folder":
        records.symlink_to(outside, target_is_directory=True)
    else:
        records.mkdir()
        (records / "lock").symlink_to(outside / "victim")
    s = setup.make()
    try:
        with pytest.raises(ConfigError, match="symbolic link"):
            s.lock()
    finally:
        s.close()
    assert untouched(outside)


def test_records_are_never_written_or_read_through_a_link(
    setup: Setup, sink: Sink, outside: Path
) -> None:
    if setup.kind.records is None:
        pytest.skip("links are planted in a local records folder")
    assert sink.records is not None
    records = setup.kind.records(setup.spec.location)
    (records / "summary.json").symlink_to(outside / "victim")
    with pytest.raises(OSError) as raised:
        sink.records.read("summary.json")
    assert raised.value.errno == errno.ELOOP
    sink.records.write("summary.json", b"{}")  # replaces the link, not its target
    assert (records / "summary.json").read_bytes() == b"{}"
    assert not (records / "summary.json").is_symlink()
    (records / ".target.json.1.tmp").symlink_to(outside / "victim")  # a dead writer's
    sink.records.remove_stale_temporaries()
    assert not os.path.lexists(records / ".target.json.1.tmp")
    assert untouched(outside)


def test_nothing_is_written_through_a_link_in_the_destination(
    setup: Setup, sink: Sink, outside: Path
) -> None:
    requires(sink, "links")
    if setup.kind.records is None:
        pytest.skip("links are planted in a local directory")
    (Path(setup.spec.location) / "c").symlink_to(outside, target_is_directory=True)
    write(setup.src, "c/victim", b"overwritten")
    outcome = sink.put(str(setup.src), "c/victim")
    assert outcome.status == FAILED
    assert untouched(outside)


# ---- the spec, and copier processes that build their sink from it -------------------------------


def test_a_spec_survives_json(setup: Setup) -> None:
    spec = SinkSpec(setup.spec.kind, os.fsdecode(b"/data/\xff\xfe.zarr"), (("part_size", "8"),))
    assert SinkSpec.from_dict(json.loads(json.dumps(spec.as_dict()))) == spec
    with pytest.raises(ValueError, match="unknown kind"):
        sink_from_spec(SinkSpec("tape", "/dev/st0"))


def test_copiers_write_through_the_sink_their_spec_names(setup: Setup, sink: Sink) -> None:
    keys = [NAMES["plain"], NAMES["not-utf8"], NAMES["longest"]]
    for key in keys:
        write(setup.src, key, key.encode("utf-8", "surrogateescape"))
    # No destination path: only the spec says where.
    options = CopierOptions(str(setup.src), "", 0.0, False, False, nice=0, sink=setup.spec)
    pool = CopierPool(1, options)
    try:
        copier = pool.idle()[0]
        pool.send(copier, [(key, False) for key in keys])
        outcomes: list = []
        while not outcomes:
            assert copier.conn.poll(DEADLINE), "the copier never answered"
            outcomes, lost = pool.receive(copier.conn)
            assert lost == []
    finally:
        pool.stop(graceful=True)
    assert [o.status for o in outcomes] == [COPIED] * len(keys)
    for key in keys:
        assert read(sink, key) == key.encode("utf-8", "surrogateescape")


def test_peek_takes_nothing_and_says_what_is_there(setup: Setup) -> None:
    """What a dry run looks at: no lock, nothing made."""
    fresh = setup.make()
    try:
        holds, records = fresh.peek()
        assert holds is False
        if records is not None:
            with pytest.raises(FileNotFoundError):
                records.read("target.json")
    finally:
        fresh.close()
    writer = setup.make()
    writer.lock()
    writer.create()
    try:
        write(setup.src, "a/b", b"data")
        assert writer.put(str(setup.src), "a/b").status == COPIED
        other = setup.make()  # while the run holds its lock: a dry run still looks
        try:
            assert other.peek()[0] is True
        finally:
            other.close()
    finally:
        writer.close()


def test_a_destination_holding_only_other_things_is_foreign(setup: Setup, sink: Sink) -> None:
    write(setup.src, "theirs.pdf", b"not the source's")
    assert sink.put(str(setup.src), "theirs.pdf").status == COPIED
    os.unlink(setup.src / "theirs.pdf")
    write(setup.src, "zarr.json", b"{}")
    problem = sink.foreign(str(setup.src))
    assert problem is not None and "theirs.pdf" in problem
    write(setup.src, "theirs.pdf", b"a name the source has too: a partial copy, resumed")
    assert sink.foreign(str(setup.src)) is None


def test_tidy_after_a_copy_leaves_what_was_copied(setup: Setup, sink: Sink) -> None:
    write(setup.src, "kept", b"x" * 100)
    assert sink.put(str(setup.src), "kept").status == COPIED
    sink.tidy()
    assert read(sink, "kept") == b"x" * 100
