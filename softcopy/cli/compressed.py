"""`verify [SOURCE] DEST` for a compressed copy (`copy --compress`), from verify.py."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..locations import is_object_store

if TYPE_CHECKING:  # `softcopy --help` loads nothing heavy
    from ..state.records import Records
    from ..verify.compare import Verification


def _records(destination: str) -> Records | None:
    from ..state.records import Records, records_dir

    side = records_dir(Path(os.path.realpath(destination)))
    return Records.open(side, create=False, check_owner=False)


def _certificate(records: Records) -> dict | None:
    from ..verify.manifest import CERTIFICATE

    try:
        record = json.loads(records.read(CERTIFICATE))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def compressed_named(destination: str) -> bool:
    """Whether `destination` is a compressed copy: a folder whose certificate says so."""
    if is_object_store(destination):
        return False
    try:
        if not stat.S_ISDIR(os.stat(destination).st_mode):
            return False
        records = _records(destination)
    except (OSError, ConfigError):
        return False
    if records is None:
        return False
    try:
        cert = _certificate(records)
    finally:
        records.close()
    return cert is not None and isinstance(cert.get("compressed"), dict)


def verify_compressed(texts: tuple[str, ...]) -> tuple[Verification, str]:
    """`verify [SOURCE] DEST`: every stored file read back and decompressed against the
    entries record; with SOURCE, the source too. Findings, and how it was compared."""
    from ..engine.stored import ENTRIES, check_destination, check_source, parse_stored
    from ..errors import SoftcopyError

    destination = Path(texts[-1])
    records = _records(texts[-1])
    if records is None:
        raise ConfigError(destination, "verify", "it has no records (DEST.softcopy)")
    try:
        where = records / ENTRIES
        try:
            expected = parse_stored(records.read(ENTRIES), where)
        except OSError as exc:
            raise ConfigError(where, "read the entries", exc.strerror or str(exc)) from exc
        except SoftcopyError as exc:
            raise ConfigError(where, "read the entries", exc.problem) from exc
    finally:
        records.close()
    result = check_destination(destination, expected)
    mode = "decompressing every file read back, BLAKE3 of the original bytes against the records"
    if len(texts) == 2:
        source = Path(texts[0])
        if not source.is_dir():
            raise ConfigError(source, "verify", "it is not a directory")
        result.findings += check_source(source, expected)
        mode += ", and the source against the records"
    return result, mode
