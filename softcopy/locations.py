"""What a destination names: a local folder, or an object store's `s3://BUCKET/PREFIX`.

Shared by the configuration (which must not import a sink, let alone boto3) and the
object-store sink, so both read a location the same way.
"""

from __future__ import annotations

from .errors import ConfigError

OBJECT_SCHEME = "s3://"
RECORDS_SUFFIX = ".softcopy"  # records beside the copy, for a folder and a prefix alike


def is_object_store(text: object) -> bool:
    """`s3://...` as typed (a Path would have folded the two slashes into one)."""
    return isinstance(text, str) and text[:5].lower() == OBJECT_SCHEME


def parse_object_url(location: str) -> tuple[str, str]:
    """(bucket, prefix without slashes at either end) of `s3://BUCKET/PREFIX`."""
    if not is_object_store(location):
        raise ConfigError(
            location, "use destination", "an object store is named s3://BUCKET/PREFIX"
        )
    bucket, _, prefix = location[len(OBJECT_SCHEME) :].partition("/")
    prefix = prefix.strip("/")
    if not bucket or not prefix:
        raise ConfigError(
            location,
            "use destination",
            "give both a bucket and a prefix, s3://BUCKET/NAME: softcopy keeps its records "
            f"beside the copy, under NAME{RECORDS_SUFFIX}/",
        )
    if any(c.isspace() for c in bucket) or "//" in prefix:
        raise ConfigError(
            location, "use destination", "a bucket name has no spaces, and a prefix no '//'"
        )
    return bucket, prefix


def object_url(location: str) -> str:
    """The one spelling of an object-store location: `s3://BUCKET/PREFIX`."""
    bucket, prefix = parse_object_url(location)
    return f"{OBJECT_SCHEME}{bucket}/{prefix}"


def records_url(location: str) -> str:
    """Where the records of an object-store copy live: `s3://BUCKET/PREFIX.softcopy/`."""
    return object_url(location) + RECORDS_SUFFIX + "/"
