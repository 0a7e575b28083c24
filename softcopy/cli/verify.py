"""`verify`: a copy against its source, or against its b3sum manifest alone."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import EXIT_FAILED, EXIT_OK, ConfigError, SoftcopyError
from ..names import json_record
from .common import quiet_asked
from .render import verify_summary_text
from .signals import guarded

if TYPE_CHECKING:  # `softcopy --help` loads this module: nothing heavy at import
    from ..sinks.base import RecordsFolder
    from ..verify.compare import Verification

log = logging.getLogger(__name__)

VERIFY_HELP = """\b
With SOURCE and DESTINATION: missing, extra and size-mismatched files, link
targets, metadata that does not parse; --hash adds content (BLAKE3).
With DESTINATION alone: every file against the b3sum manifest in
DESTINATION.softcopy/manifest.b3 (or --manifest), without the source; a copy
made without --hash is checked against its size list (files.tsv: sizes and
modification times).
Files the copy left out by its --include/--exclude (recorded in its
certificate) are not compared; --include/--exclude here narrow it further.
DESTINATION may be an object store, s3://BUCKET/PREFIX (records under
s3://BUCKET/PREFIX.softcopy/): its listing gives keys and sizes, --hash
downloads every object again; source links are skipped (stores have none).
A packed copy (an archive made with --pack) is read back, decrypted with
--identity (age) or the gpg secret key when given, decompressed, and every
member compared with its records; with SOURCE, the source too.
A compressed copy (--compress) is read back, every file decompressed, and the
BLAKE3 of its original bytes compared with its records; with SOURCE, the
source too.
Exit codes: 0 identical, 1 differences found (all listed), 2 usage error."""


@click.command(epilog=VERIFY_HELP)
# Plain text, not a Path: a Path folds the two slashes of s3://BUCKET/PREFIX into one.
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--hash", "hashes", is_flag=True, help="Compare content by BLAKE3 (reads both sides)."
)
@click.option("--decode", is_flag=True, help="Also decode every chunk at the destination.")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    help="Check DESTINATION against this b3sum manifest (default: its sidecar's).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON record per finding, then a summary."
)
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Compare only keys matching (repeatable), besides what the copy recorded.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Leave out keys matching (repeatable), besides what the copy recorded.",
)
@click.option(
    "--s3-endpoint",
    metavar="URL",
    help="Object store: S3-compatible endpoint URL [AWS_ENDPOINT_URL, else AWS].",
)
@click.option(
    "--follow-links-inside",
    is_flag=True,
    help="Object store: the copy uploaded the files links inside the source lead to.",
)
@click.option(
    "--identity",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Archive encrypted with age: the identity file that decrypts it, so every member "
    "is compared [without: the stored bytes only].",
)
@click.pass_context
def verify(
    ctx: click.Context,
    paths: tuple[str, ...],
    hashes: bool,
    decode: bool,
    manifest: Path | None,
    as_json: bool,
    workers: int,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    follow_links_inside: bool,
    s3_endpoint: str | None,
    identity: Path | None,
) -> None:
    """Check a copy: `verify SOURCE DESTINATION`, or `verify DESTINATION` against its records."""
    store = {"endpoint_url": s3_endpoint or "", "follow_links_inside": follow_links_inside}
    if identity is not None:
        store["identity"] = identity
    ctx.exit(
        guarded(
            ctx,
            lambda: _verify(
                paths, hashes, decode, manifest, as_json, workers, include, exclude, store
            ),
        )
    )


def _verify(
    texts: tuple[str, ...],
    hashes: bool,
    decode: bool,
    manifest: Path | None,
    as_json: bool,
    workers: int,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    store: dict | None = None,
) -> int:
    from ..locations import is_object_store
    from ..sources.select import Selection
    from ..state.records import RecordFile, Records, records_dir
    from ..verify.compare import check_manifest, check_sizes, compare_trees
    from ..verify.manifest import MANIFEST, read_manifest

    if len(texts) > 2:
        shown = (t if is_object_store(t) else str(Path(t)) for t in texts)
        raise ConfigError(" ".join(shown), "verify", "give SOURCE DESTINATION or DESTINATION")
    for text in texts[:-1]:
        if is_object_store(text):
            raise ConfigError(
                text, "verify", "an object store can be the destination only, not the source"
            )
    started = time.monotonic()
    from .archive import archive_named, verify_archive

    if archive_named(texts[-1], (store or {}).get("endpoint_url", "")):
        result, mode = verify_archive(texts, store or {})
        return _report(result, mode, started, as_json)
    from .compressed import compressed_named, verify_compressed

    endpoint = (store or {}).get("endpoint_url", "")
    if compressed_named(texts[-1], endpoint):
        return _report(*verify_compressed(texts, endpoint), started, as_json)
    if is_object_store(texts[-1]):
        result, mode = _verify_object_store(
            texts, hashes, decode, manifest, workers, Selection("", (), include, exclude), store
        )
        return _report(result, mode, started, as_json)
    paths = tuple(Path(text) for text in texts)
    for path in paths:
        if not path.is_dir():
            raise ConfigError(path, "verify", _not_a_directory(path))
    destination = paths[-1]
    # softcopy's own records, beside the directory the copy resolved DESTINATION to:
    # read without following a link, like every record (any owner may read them).
    side = records_dir(Path(os.path.realpath(destination)))
    records: Records | None = None
    cert: dict | None = None
    try:
        try:
            records = Records.open(side, create=False, check_owner=False)
            cert = _certificate(records)
        except SoftcopyError as exc:
            if len(paths) == 1 and manifest is None:
                raise
            # Two trees, or a manifest the user names, compare without any record: only
            # the copy's include/exclude is lost, which can only add findings, never hide one.
            log.warning("%s; comparing every file", exc)
        keep = _keep(cert, Selection("", (), include, exclude))
        if len(paths) == 2:
            if manifest is not None:
                raise ConfigError(
                    manifest, "verify", "--manifest checks DESTINATION alone; give one path"
                )
            result = compare_trees(
                str(paths[0]), str(destination), hashes=hashes, workers=workers, keep=keep
            )
            mode = "BLAKE3" if hashes else "size"
        elif manifest is not None or (records is not None and _has(records, MANIFEST)):
            where: Path | RecordFile = manifest if manifest is not None else records / MANIFEST
            try:
                # A FIFO, a device or a huge file given as --manifest: ConfigError, no hang.
                digests = read_manifest(where)
            except (OSError, ValueError) as exc:
                raise ConfigError(where, "read manifest", str(exc)) from exc
            result = check_manifest(str(destination), digests, workers, keep=keep)
            mode = "BLAKE3 against the manifest"
        else:
            entries = _size_list(side, records, cert, hashes)
            result = check_sizes(str(destination), entries, keep)
            mode = "sizes and modification times against the size list"
    finally:
        if records is not None:
            records.close()
    if decode:
        from ..sources.scan import scan_tree
        from ..zarr.decode import check_decode

        result.findings += check_decode(str(destination), scan_tree(str(destination)).files)
        mode += ", decoded"
    return _report(result, mode, started, as_json)


def _report(result: Verification, mode: str, started: float, as_json: bool) -> int:
    """Every finding, then the summary: the same lines and records for every destination."""
    seconds = time.monotonic() - started
    quiet = quiet_asked()  # -q: stdout stays empty; what differs goes to stderr
    for finding in result.findings:
        if as_json:
            click.echo(json.dumps(json_record(finding.as_dict())))
        else:
            click.echo(str(finding), err=quiet)
    if as_json:
        summary = {
            "kind": "summary",
            "ok": result.ok,
            "findings": len(result.findings),
            "files": result.files,
            "bytes": result.bytes,
            "compared_by": mode,
            "seconds": round(seconds, 3),
        }
        click.echo(json.dumps(summary))
    else:
        text = verify_summary_text(
            result.ok, len(result.findings), result.files, result.bytes, mode, seconds
        )
        if not (result.ok and quiet):  # -q: nothing on success, as rsync -q
            click.echo(text, err=not result.ok)
    return EXIT_OK if result.ok else EXIT_FAILED


def _certificate(records: RecordsFolder | None) -> dict | None:
    """The copy's certificate (None when there is none: a copy not finished, or not ours)."""
    from ..state.records import Records
    from ..verify.manifest import CERTIFICATE

    if records is None:
        return None
    where = records / CERTIFICATE
    if isinstance(records, Records):
        if not _has(records, CERTIFICATE):
            return None
        try:
            data = where.read_bytes()
        except OSError as exc:
            raise ConfigError(where, "read certificate", str(exc)) from exc
    else:  # an object store's: one request says whether it is there and what it holds
        try:
            data = records.read(CERTIFICATE)
        except FileNotFoundError:
            return None
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise ConfigError(where, "read certificate", str(exc)) from exc
    if not isinstance(record, dict):
        raise ConfigError(where, "read certificate", "it is not a JSON object")
    return record


def _keep(cert: dict | None, asked: object) -> Callable[[str], bool] | None:
    """Which keys to compare: what the copy copied (its recorded selection: markers, and
    the files its --include/--exclude chose), narrowed by this check's own."""
    from ..sources.select import Selection

    assert isinstance(asked, Selection)
    recorded = (cert or {}).get("selection")
    copied: Selection | None = None
    if isinstance(recorded, dict) and (recorded.get("include") or recorded.get("exclude")):
        copied = Selection(
            str(recorded.get("complete_marker") or ""),
            tuple(map(str, recorded.get("sentinels") or ())),
            tuple(map(str, recorded.get("include") or ())),
            tuple(map(str, recorded.get("exclude") or ())),
        )
    if copied is None and not asked.filters:
        return None

    def keep(key: str) -> bool:
        if copied is not None and not (copied.is_marker(key) or copied.wanted(key)):
            return False
        return asked.wanted(key)

    return keep


def _has(records: object, name: str) -> bool:
    from ..state.records import Records

    assert isinstance(records, Records)
    try:
        os.stat(name, dir_fd=records.fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _size_list(
    side: Path | RecordsFolder, records: RecordsFolder | None, cert: dict | None, hashes: bool
) -> dict[str, tuple[int, int]]:
    """The size list a finished copy left, if its certificate vouches for it. `side`: where
    the records are (or would be), for messages."""
    from ..verify.manifest import CERTIFICATE, MANIFEST
    from ..verify.sizes import SIZE_LIST, read_size_list

    if hashes:
        raise ConfigError(
            side / MANIFEST,
            "verify content",
            "there is no manifest (the copy was made without --hash); give SOURCE too to "
            "compare content, or drop --hash to check sizes against the size list",
        )
    if records is None:
        raise ConfigError(
            side / MANIFEST,
            "read manifest",
            "it does not exist (copies made with --hash have one, and every finished copy a "
            f"size list, {SIZE_LIST}, in that folder; or give SOURCE too)",
        )
    if cert is None:
        raise ConfigError(
            side / CERTIFICATE,
            "verify without the source",
            "there is no certificate: the copy is not finished (or was not made by "
            "softcopy); give SOURCE too",
        )
    if cert.get("manifest"):
        # A copy made with --hash: its size list is no stand-in for the manifest it had.
        raise ConfigError(
            side / MANIFEST,
            "read manifest",
            "it is missing, though the copy's certificate names it; give SOURCE too",
        )
    recorded = cert.get("size_list_blake3")
    if not recorded:
        raise ConfigError(
            side / SIZE_LIST,
            "verify without the source",
            "the copy was made by a softcopy without size lists and without --hash; give "
            "SOURCE too",
        )
    where = records / SIZE_LIST
    try:
        entries, digest = read_size_list(where, "it is missing; give SOURCE too")
    except (OSError, ValueError) as exc:
        raise ConfigError(where, "read size list", str(exc)) from exc
    if digest != recorded:
        # A list left by an older run, or changed since: it vouches for nothing.
        raise ConfigError(
            where,
            "read size list",
            "it is not the one the certificate names (its BLAKE3 differs); give SOURCE too",
        )
    return entries


def _verify_object_store(
    texts: tuple[str, ...],
    hashes: bool,
    decode: bool,
    manifest: Path | None,
    workers: int,
    asked: object,
    store: dict | None,
) -> tuple[Verification, str]:
    """`verify [SOURCE] s3://BUCKET/PREFIX`: the objects through the sink, the records read
    from PREFIX.softcopy/ without taking the run's lock (a check may run beside a copy)."""
    from ..sinks.base import sink_from_spec, spec_for
    from ..verify.objects import check_sink_manifest, check_sink_sizes, compare_with_sink

    location = texts[-1]
    if decode:
        raise ConfigError(
            location, "decode", "--decode reads chunks of a directory, not of an object store"
        )
    source = Path(texts[0]) if len(texts) == 2 else None
    if source is not None and not source.is_dir():
        raise ConfigError(source, "verify", _not_a_directory(source))
    if source is not None and manifest is not None:
        raise ConfigError(manifest, "verify", "--manifest checks DESTINATION alone; give one path")
    store = store or {}
    options = {"endpoint_url": store["endpoint_url"]} if store.get("endpoint_url") else {}
    if store.get("follow_links_inside"):
        options["follow_links_inside"] = "true"
    sink = sink_from_spec(spec_for(location, options))
    try:
        # Takes nothing; a missing bucket, wrong credentials or an endpoint that does not
        # answer are the sink's ConfigError here, before anything is compared.
        holds, records = sink.peek()
        if not holds:
            raise ConfigError(location, "verify", "no object is stored under it")
        cert: dict | None = None
        try:
            cert = _certificate(records)
        except SoftcopyError as exc:
            if source is None and manifest is None:
                raise
            log.warning("%s; comparing every file", exc)
        keep = _keep(cert, asked)
        if source is not None:
            result = compare_with_sink(str(source), sink, hashes=hashes, workers=workers, keep=keep)
            mode = "BLAKE3" if hashes else "size"
        else:
            digests = _object_manifest(records, manifest)
            if digests is not None:
                result = check_sink_manifest(sink, digests, workers, keep)
                mode = "BLAKE3 against the manifest"
            elif records is None:
                raise ConfigError(location, "verify without the source", "it has no records")
            else:
                result = check_sink_sizes(sink, _size_list(records, records, cert, hashes), keep)
                mode = "sizes and modification times against the size list"
    finally:
        sink.close()
    if result.links_skipped:
        n = result.links_skipped
        mode += f", {n} source link{'s' * (n != 1)} skipped (object storage has none)"
    return result, mode


def _object_manifest(records: RecordsFolder | None, manifest: Path | None) -> dict | None:
    """The digests of --manifest, else of the manifest record; None when there is none."""
    import io

    from ..verify.manifest import MANIFEST, MAX_LINE, parse_lines, read_manifest

    if manifest is not None:
        try:
            return read_manifest(manifest)
        except (OSError, ValueError) as exc:
            raise ConfigError(manifest, "read manifest", str(exc)) from exc
    if records is None:
        return None
    try:
        data = records.read(MANIFEST)  # one request says whether it is there, and gets it
    except FileNotFoundError:
        return None
    where = records / MANIFEST
    body = io.BytesIO(data)
    try:
        return parse_lines(iter(lambda: body.readline(MAX_LINE + 1), b""), where)
    except ValueError as exc:
        raise ConfigError(where, "read manifest", str(exc)) from exc


def _not_a_directory(path: Path) -> str:
    return "it is not a directory" if os.path.lexists(path) else "it does not exist"
