"""Packed copies on the command line: `verify ARCHIVE` (from verify.py) and `unpack`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import EXIT_FAILED, EXIT_OK, ConfigError, SoftcopyError
from ..locations import is_object_store
from .common import quiet_asked
from .signals import guarded

if TYPE_CHECKING:  # `softcopy --help` loads nothing heavy
    from ..archives.members import Member
    from ..sinks.archive_file import ArchiveAt
    from ..verify.compare import Verification


def archive_named(location: str, endpoint: str = "") -> bool:
    """Whether `location` is a packed copy: a file or object certified as an archive."""
    from ..state.records import records_dir

    if not is_object_store(location):
        try:
            if stat.S_ISDIR(os.lstat(location).st_mode):
                return False
            os.lstat(records_dir(Path(os.path.abspath(location))))
        except OSError:
            return False
    archive = _open(location, endpoint)
    try:
        return "packed" in _certificate(archive)
    except SoftcopyError:
        return False
    finally:
        archive.close()


def _open(location: str, endpoint: str) -> ArchiveAt:
    from ..sinks.archive_file import ArchiveAt
    from ..sinks.base import spec_for

    options = {"endpoint_url": endpoint} if endpoint else None
    return ArchiveAt(location, spec_for(location, options) if is_object_store(location) else None)


def _certificate(archive: ArchiveAt) -> dict:
    from ..verify.manifest import CERTIFICATE

    where = f"{archive.location}.softcopy/{CERTIFICATE}"
    try:
        data = archive.records.read(CERTIFICATE)
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(
            where, "read the archive's certificate", "it does not exist: the archive was not "
            "finished and verified by softcopy",
        ) from exc  # fmt: skip
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise ConfigError(where, "read the archive's certificate", str(exc)) from exc
    if not isinstance(record, dict) or not isinstance(record.get("packed"), dict):
        raise ConfigError(where, "read the archive's certificate", "it is not a packed copy's")
    return record


def _expected(archive: ArchiveAt, cert: dict) -> tuple[list[Member], tuple[int, str]]:
    """The members the archive must hold, and its own size and BLAKE3, from its records."""
    from ..archives.check import parse_members
    from ..engine.pack import MEMBERS

    packed = cert["packed"]
    try:
        members = parse_members(archive.records.read(MEMBERS))
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise ConfigError(
            f"{archive.location}.softcopy/{MEMBERS}", "read the archive's members", str(exc)
        ) from exc
    return members, (int(packed["archive_bytes"]), str(packed["archive_blake3"]))


def _packing(cert: dict) -> Any:
    """How the archive was packed, as its certificate says (its name need not)."""
    from ..archives.formats import Encryption, Packing, parse_pack

    packed = cert["packed"]
    encryption = packed.get("encryption")
    return Packing(
        parse_pack(str(packed.get("format"))),
        encryption=Encryption(
            str(encryption.get("tool")), tuple(map(str, encryption.get("recipients") or ()))
        )
        if isinstance(encryption, dict)
        else None,
    )


def verify_archive(texts: tuple[str, ...], store: dict) -> tuple[Verification, str]:
    """`verify [SOURCE] ARCHIVE`: findings and the words saying how it was compared."""
    from ..archives.check import compare
    from ..engine.finished import keep_of
    from ..engine.pack import check_archive, members_of_source
    from ..verify.compare import Finding, Verification

    location = texts[-1]
    archive = _open(location, store.get("endpoint_url", ""))
    try:
        cert = _certificate(archive)
        expected, digest = _expected(archive, cert)
        packing = _packing(cert)
        identity = store.get("identity")
        inp = archive.reader()
        try:
            problems, how = check_archive(inp, packing, identity, expected, digest, location)
        finally:
            inp.close()
    finally:
        archive.close()
    findings = [Finding("archive", archive.name, p) for p in problems]
    mode = (
        "every member (BLAKE3) read back from the archive"
        if how == "members"
        else "the archive's stored bytes (BLAKE3) only: no key here to decrypt it "
        "(--identity FILE for age, the secret key in the keyring for gpg)"
    )
    if len(texts) == 2:
        run_name = expected[0].path.split("/", 1)[0] if expected else ""
        source = members_of_source(Path(texts[0]), run_name, keep_of(cert))
        findings += [
            Finding("archive", texts[0], f"source and manifest differ: {p}")
            for p in compare(source, expected)
        ]
        mode += ", and the source against the manifest"
    files = [m for m in expected if m.kind == "file"]
    return Verification(findings, files=len(files), bytes=sum(m.size for m in files)), mode


@click.command()
@click.argument("archive", type=click.Path())
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--identity",
    type=click.Path(path_type=Path, dir_okay=False),
    help="age: the identity file that decrypts the archive (gpg uses its keyring).",
)
@click.option(
    "--s3-endpoint",
    metavar="URL",
    help="Object store: S3-compatible endpoint URL [AWS_ENDPOINT_URL, else AWS].",
)
@click.pass_context
def unpack(
    ctx: click.Context,
    archive: str,
    directory: Path,
    identity: Path | None,
    s3_endpoint: str | None,
) -> None:
    """Restore a packed copy into DIRECTORY, every member verified against its records.

    Members whose paths would leave DIRECTORY (absolute, `..`, through or to a link
    outside) are refused, and nothing existing is overwritten. Exit codes: 0 restored and
    verified, 1 a member differs or the archive is damaged, 2 usage error.
    """
    ctx.exit(guarded(ctx, lambda: _unpack(archive, directory, identity, s3_endpoint or "")))


def _unpack(location: str, directory: Path, identity: Path | None, endpoint: str) -> int:
    from ..archives.pipeline import unpacker
    from ..archives.unpack import unpack_stream
    from ..engine.pack import problems_text

    target = Path(os.path.abspath(directory))
    opened = _open(location, endpoint)
    try:
        cert = _certificate(opened)
        expected, digest = _expected(opened, cert)
        packing = _packing(cert)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from ..errors import from_os_error

            raise from_os_error(exc, "create the folder to unpack into", target) from exc
        inp = opened.reader()
        try:
            with unpacker(inp, packing, identity) as (stream, counted):
                restored = unpack_stream(stream, target, expected)
        finally:
            inp.close()
    finally:
        opened.close()
    if (counted.size, counted.blake3) != digest:
        raise SoftcopyError(
            location,
            "unpack",
            problems_text(
                [
                    f"the archive is {counted.size} bytes with BLAKE3 {counted.blake3}, but "
                    f"its records say {digest[0]} bytes with BLAKE3 {digest[1]}"
                ]
            ),
        )
    if not quiet_asked():
        files = sum(1 for m in restored if m.kind == "file")
        click.echo(
            f"unpacked {location} into {target}: {len(restored)} members ({files} files), "
            "each verified against the archive's records"
        )
    return EXIT_OK if restored is not None else EXIT_FAILED
