"""One object written from a stream whose length is known only at its end.

A packed archive (archive_file.py) and a compressed file (engine/compress_bucket.py) are
made as they are uploaded. A stream that ends within its first part is one PutObject; a
longer one a multipart upload of 16 MiB parts, doubling every 1,000 (10,000 parts then
hold ~160 TB), `in_flight` parts at a time (the stream is made while earlier parts go
up; memory: a part being filled and `in_flight` being sent). Each request carries the
SHA-256 of its body (or its MD5, option `checksum=md5`) for the store to check. Either
way nothing is under the key until the last request is answered: a kill before it
leaves nothing, or an unfinished upload that the next run aborts under the records'
lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import SoftcopyError

PART_SIZE = 16 << 20  # the first parts; larger ones follow (see part_size)
IN_FLIGHT = 4  # parts sent at once at most: 64 MiB of memory at first


def part_size(parts_sent: int, first: int = PART_SIZE) -> int:
    return first << min(parts_sent // 1000, 10)


class ObjectStream:
    """A sequential writer of one object: `write` what comes, then `complete` (its ETag)
    or `abort`. `error(exc, action)` turns a store's refusal into the caller's error."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        checksum: str,
        error: Callable[[BaseException, str], SoftcopyError],
        metadata: dict[str, str] | None = None,
        in_flight: int = 1,
        part: int = PART_SIZE,
    ) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.in_flight = max(1, in_flight)
        self.part = part  # the first parts' size (S3: at least 5 MiB but the last)
        self._pool: ThreadPoolExecutor | None = None
        self._sending: list[Future] = []
        self.sent = 0  # parts handed to the senders
        self.sha256 = checksum == "sha256"
        self.error = error
        self.metadata = metadata or {}
        self.upload_id = ""
        self.parts: list[dict[str, Any]] = []
        self.buffer = bytearray()
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.buffer += data
        size = part_size(self.sent, self.part)
        while len(self.buffer) >= size:
            self._send(bytes(self.buffer[:size]))
            del self.buffer[:size]
            size = part_size(self.sent, self.part)
        return len(data)

    def flush(self) -> None:
        pass

    def _checksum(self, data: bytes) -> dict[str, str]:
        from .s3 import _b64

        if self.sha256:
            return {"ChecksumSHA256": _b64(hashlib.sha256(data).digest())}
        return {"ContentMD5": _b64(hashlib.md5(data, usedforsecurity=False).digest())}

    def _start(self) -> None:
        from .s3 import botocore

        extra = {"ChecksumAlgorithm": "SHA256"} if self.sha256 else {}
        try:
            self.upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, Metadata=self.metadata, **extra
            )["UploadId"]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self.error(exc, "start the upload") from exc

    def _send(self, data: bytes) -> None:
        """Hand a part to the senders; wait while `in_flight` are being sent."""
        if not self.upload_id:
            self._start()
        self.sent += 1
        number = self.sent
        if self.in_flight == 1:
            self.parts.append(self._upload(number, data))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="s3-part")
        self._sending.append(self._pool.submit(self._upload, number, data))
        while len(self._sending) > self.in_flight:
            self.parts.append(self._sending.pop(0).result())

    def _drain(self) -> None:
        while self._sending:
            self.parts.append(self._sending.pop(0).result())

    def _upload(self, number: int, data: bytes) -> dict[str, Any]:
        from .s3 import botocore

        extra = self._checksum(data)
        try:
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
                **extra,
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self.error(exc, f"upload part {number}") from exc
        entry = {"PartNumber": number, "ETag": answer["ETag"]}
        if self.sha256:
            entry["ChecksumSHA256"] = extra["ChecksumSHA256"]
        return entry

    def complete(self) -> str:
        """Publish the object; its ETag."""
        from .s3 import botocore

        data = bytes(self.buffer)
        self.buffer.clear()
        try:
            if not self.upload_id:
                answer = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=data,
                    Metadata=self.metadata,
                    **self._checksum(data),
                )
            else:
                if data:
                    self._send(data)
                self._drain()
                answer = self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},
                )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self.error(exc, "complete the upload") from exc
        self.closed = True
        self._stop()
        return str(answer["ETag"])

    def _stop(self) -> None:
        if self._pool is not None:
            for future in self._sending:
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
        self._sending.clear()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop()
        if not self.upload_id:
            return
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )
        except Exception:  # the next run aborts what is left, under the records' lock
            pass


def abort_uploads_of(client: Any, bucket: str, key: str) -> None:
    """Abort every unfinished multipart upload of `key`. Only for the holder of the
    records' lock: nobody else writes there."""
    pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key)
    for page in pages:
        for upload in page.get("Uploads", ()):
            if upload["Key"] == key:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
