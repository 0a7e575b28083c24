"""`verify [SOURCE] DEST` for a compressed copy (`copy --compress`), from verify.py."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, SoftcopyError
from ..locations import is_object_store

if TYPE_CHECKING:  # `softcopy --help` loads nothing heavy
    from ..state.records import Records
    from ..verify.compare import Verification


def _records(destination: str) -> Records | None:
    from ..state.records import Records, records_dir

    side = records_dir(Path(os.path.realpath(destination)))
    return Records.open(side, create=False, check_owner=False)


def _store(destination: str, endpoint: str) -> Any:
    from ..sinks.base import spec_for
    from ..sinks.s3 import ObjectStore

    return ObjectStore(spec_for(destination, {"endpoint_url": endpoint} if endpoint else None))


def _certificate(records: Any) -> dict | None:
    from ..verify.manifest import CERTIFICATE

    try:
        record = json.loads(records.read(CERTIFICATE))
    except (OSError, ValueError, SoftcopyError):
        return None
    return record if isinstance(record, dict) else None


def compressed_named(destination: str, endpoint: str = "") -> bool:
    """Whether `destination` is a compressed copy: a folder, or a bucket's prefix, whose
    certificate says so."""
    if is_object_store(destination):
        try:
            store = _store(destination, endpoint)
        except ConfigError:
            return False
        try:
            cert = _certificate(store.records_of(destination))
        finally:
            store.close()
        return cert is not None and isinstance(cert.get("compressed"), dict)
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


def verify_compressed(texts: tuple[str, ...], endpoint: str = "") -> tuple[Verification, str]:
    """`verify [SOURCE] DEST`: every stored file read back and decompressed against the
    entries record; with SOURCE, the source too. Findings, and how it was compared."""
    from ..engine.finished import keep_of
    from ..engine.stored import check_bucket, check_destination, check_source

    bucket = is_object_store(texts[-1])
    store = _store(texts[-1], endpoint) if bucket else None
    try:
        if store is not None:
            expected, cert = _expected(store.records_of(texts[-1]))
            result = check_bucket(store, expected)
        else:
            records = _records(texts[-1])
            if records is None:
                raise ConfigError(texts[-1], "verify", "it has no records (DEST.softcopy)")
            try:
                expected, cert = _expected(records)
            finally:
                records.close()
            result = check_destination(Path(texts[-1]), expected)
    finally:
        if store is not None:
            store.close()
    mode = "decompressing every file read back, BLAKE3 of the original bytes against the records"
    if bucket:
        mode = mode.replace("read back", "downloaded again")
    if len(texts) == 2:
        source = Path(texts[0])
        if not source.is_dir():
            raise ConfigError(source, "verify", "it is not a directory")
        skipped = frozenset(n for n in cert.get("skipped") or () if isinstance(n, str))
        result.findings += check_source(source, expected, skipped, not bucket, keep_of(cert))
        mode += ", and the source against the records"
    return result, mode


def _expected(records: Any) -> tuple[list, dict]:
    """The entries a compressed copy holds, and its certificate."""
    from ..engine.stored import ENTRIES, parse_stored

    where = records / ENTRIES
    try:
        expected = parse_stored(records.read(ENTRIES), where)
    except OSError as exc:
        raise ConfigError(where, "read the entries", exc.strerror or str(exc)) from exc
    except SoftcopyError as exc:
        raise ConfigError(where, "read the entries", exc.problem) from exc
    return expected, _certificate(records) or {}
