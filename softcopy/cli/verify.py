"""`verify`: a copy against its source, or against its b3sum manifest alone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from ..errors import EXIT_FAILED, EXIT_OK, ConfigError
from ..names import json_record
from .render import verify_summary_text
from .signals import guarded

VERIFY_HELP = """\b
With SOURCE and DESTINATION: missing, extra and size-mismatched files, link
targets, metadata that does not parse; --hash adds content (BLAKE3).
With DESTINATION alone: every file against the b3sum manifest in
DESTINATION.softcopy/manifest.b3 (or --manifest), without the source.
Exit codes: 0 identical, 1 differences found (all listed), 2 usage error."""


@click.command(epilog=VERIFY_HELP)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
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
@click.pass_context
def verify(
    ctx: click.Context,
    paths: tuple[Path, ...],
    hashes: bool,
    decode: bool,
    manifest: Path | None,
    as_json: bool,
    workers: int,
) -> None:
    """Check a copy: `verify SOURCE DESTINATION`, or `verify DESTINATION` against its manifest."""
    ctx.exit(guarded(ctx, lambda: _verify(paths, hashes, decode, manifest, as_json, workers)))


def _verify(
    paths: tuple[Path, ...],
    hashes: bool,
    decode: bool,
    manifest: Path | None,
    as_json: bool,
    workers: int,
) -> int:
    from ..state.records import RecordFile, Records, records_dir
    from ..verify.compare import check_manifest, compare_trees
    from ..verify.manifest import MANIFEST, read_manifest

    if len(paths) > 2:
        raise ConfigError(
            " ".join(map(str, paths)), "verify", "give SOURCE DESTINATION or DESTINATION"
        )
    for path in paths:
        if not path.is_dir():
            raise ConfigError(path, "verify", "it is not a directory")
    started = time.monotonic()
    destination = paths[-1]
    if len(paths) == 2:
        if manifest is not None:
            raise ConfigError(
                manifest, "verify", "--manifest checks DESTINATION alone; give one path"
            )
        result = compare_trees(str(paths[0]), str(destination), hashes=hashes, workers=workers)
        mode = "BLAKE3" if hashes else "size"
    else:
        missing = "it does not exist (copies made with --hash have one; or give SOURCE too)"
        records = None
        where: Path | RecordFile | None = manifest
        if where is None:
            # softcopy's own record, beside the directory the copy resolved DESTINATION to:
            # read without following a link, like every record (any owner may read it).
            side = records_dir(Path(os.path.realpath(destination)))
            records = Records.open(side, create=False, check_owner=False)
            if records is None:
                raise ConfigError(side / MANIFEST, "read manifest", missing)
            where = records / MANIFEST
        try:
            # A FIFO, a device or a huge file given as --manifest: ConfigError, no hang.
            digests = read_manifest(where, missing)
        except (OSError, ValueError) as exc:
            raise ConfigError(where, "read manifest", str(exc)) from exc
        finally:
            if records is not None:
                records.close()
        result = check_manifest(str(destination), digests, workers)
        mode = "BLAKE3 against the manifest"
    if decode:
        from ..sources.scan import scan_tree
        from ..zarr.decode import check_decode

        result.findings += check_decode(str(destination), scan_tree(str(destination)).files)
        mode += ", decoded"
    seconds = time.monotonic() - started
    for finding in result.findings:
        click.echo(json.dumps(json_record(finding.as_dict())) if as_json else str(finding))
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
        click.echo(text, err=not result.ok)
    return EXIT_OK if result.ok else EXIT_FAILED
