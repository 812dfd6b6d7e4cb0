"""S3 backend on aiobotocore. Imported only when an ``s3://`` location is used."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from io import BytesIO
from typing import Any

from botocore.exceptions import ClientError

from .._checksum import crc32, to_s3
from .._errors import StorageError
from ._base import ObjectInfo
from ._s3_direct import DirectPut

_MISSING = {"NoSuchKey", "404", "NotFound"}
_EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


class S3Storage:
    empty_means_missing = True
    blocking = False

    def __init__(self, client: Any, bucket: str, prefix: str, credentials: Any = None) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._direct = DirectPut(client, credentials)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def describe(self, key: str = "") -> str:
        return (
            f"s3://{self.bucket}/{self._key(key)}" if key else f"s3://{self.bucket}/{self.prefix}"
        )

    @asynccontextmanager
    async def _errors(self, action: str, key: str) -> AsyncIterator[None]:
        try:
            yield
        except Exception as exc:
            raise self._error(action, key, exc) from exc

    def _error(self, action: str, key: str, exc: Exception) -> Exception:
        """The exception to raise for ``exc``, naming the object."""
        if not isinstance(exc, ClientError):
            return StorageError(f"S3 {action} {self.describe(key)} failed: {exc}")
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        if code in _MISSING:
            return FileNotFoundError(f"no such object: {self.describe(key)}")
        if code in _EXISTS:
            return FileExistsError(f"object exists: {self.describe(key)}")
        message = error.get("Message") or ""
        return StorageError(
            f"S3 {action} {self.describe(key)} failed: {code}"
            + (f" ({message})" if message else "")
        )

    async def put(self, key: str, body: BytesIO, crc: int) -> None:
        full, checksum = self._key(key), to_s3(crc)
        direct = self._direct
        if direct.ready:
            size = _size(body)
            if size <= SEND_AT_ONCE and await direct.put(full, body, size, checksum):
                return
        async with self._errors("PUT", key):
            with direct.watch(full):
                await self._client.put_object(
                    Bucket=self.bucket, Key=full, Body=body, ChecksumCRC32=checksum
                )

    async def put_exclusive(self, key: str, data: bytes) -> None:
        # Like every PUT, with its CRC-32 for S3 to check; bytes without one would be wrapped
        # by botocore in an aws-chunked body that computes it on the way.
        async with self._errors("PUT (If-None-Match)", key):
            await self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=BytesIO(data),
                IfNoneMatch="*",
                ChecksumCRC32=to_s3(crc32(data)),
            )

    async def start_multipart(self, key: str) -> S3Multipart:
        async with self._errors("CreateMultipartUpload", key):
            resp = await self._client.create_multipart_upload(
                Bucket=self.bucket, Key=self._key(key), ChecksumAlgorithm="CRC32"
            )
        return S3Multipart(self, key, resp["UploadId"])

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes | bytearray:
        async with self.reader(key, start, length) as body:
            # Read the body here, inside the caller's concurrency slot: an unread body keeps
            # its pooled connection.
            return await body.read_all()

    @asynccontextmanager
    async def reader(
        self, key: str, start: int = 0, length: int | None = None
    ) -> AsyncIterator[_Body]:
        extra = {}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            extra["Range"] = f"bytes={start}-{end}"
        async with self._errors("GET", key):
            resp = await self._client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
        async with resp["Body"] as body:
            yield _Body(self, key, body, int(resp["ContentLength"]))

    async def _listing(
        self, action: str, operation: str, field: str, prefix: str, name: str = "Key", **extra: str
    ) -> list[dict[str, Any]]:
        """Every item of a paginated listing under ``prefix``, its ``name`` made relative."""
        base = f"{self.prefix}/" if self.prefix else ""
        out = []
        async with self._errors(action, prefix):
            paginator = self._client.get_paginator(operation)
            pages = paginator.paginate(Bucket=self.bucket, Prefix=base + prefix, **extra)
            async for page in pages:
                for item in page.get(field, ()):
                    out.append({**item, name: item[name][len(base) :]})
        return out

    async def list_objects(self, prefix: str = "") -> list[ObjectInfo]:
        items = await self._listing("LIST", "list_objects_v2", "Contents", prefix)
        return [
            ObjectInfo(item["Key"], int(item["Size"]), str(item.get("ETag", "")).strip('"'))
            for item in items
        ]

    async def list_dirs(self, prefix: str) -> list[str]:
        items = await self._listing(
            "LIST", "list_objects_v2", "CommonPrefixes", prefix, name="Prefix", Delimiter="/"
        )
        return [item["Prefix"] for item in items]

    async def delete(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            async with self._errors("DELETE", batch[0]):
                resp = await self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True},
                )
            failed = [e for e in resp.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
            if failed:
                first = failed[0]
                raise StorageError(
                    f"S3 DELETE of {len(failed)} object(s) failed, first s3://{self.bucket}/"
                    f"{first.get('Key')}: {first.get('Code')} ({first.get('Message', '')})"
                )

    async def list_uploads(self, prefix: str) -> list[tuple[str, str]]:
        items = await self._listing(
            "ListMultipartUploads", "list_multipart_uploads", "Uploads", prefix
        )
        return [(item["Key"], item["UploadId"]) for item in items]

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await S3Multipart(self, key, upload_id).abort()

    async def sync(self) -> None:
        pass  # a successful PUT / CompleteMultipartUpload is already durable

    async def aclose(self) -> None:
        pass  # the client belongs to the checkpoint object


#: A PUT body up to this size goes out with its headers (and directly, see _s3_direct); a
#: bigger one waits for the server's "100 Continue" first.
SEND_AT_ONCE = 1024 * 1024


def _size(body: BytesIO) -> int:
    """The bytes from ``body``'s position to its end."""
    with body.getbuffer() as view:
        return view.nbytes - body.tell()


def no_expect_continue(params: dict[str, Any], **kwargs: Any) -> None:
    """``before-call.s3`` handler: send a small PUT's headers and body at once.

    botocore asks for ``Expect: 100-continue`` on every body it is given as a file
    object, so each PUT would wait for the server's go-ahead before sending its body: one
    more round trip and one more wake-up per request, which for many small files costs
    more than the body. A bigger body keeps waiting for the go-ahead: if the server refuses
    it (wrong credentials or region), the client learns why before sending it, rather
    than from a connection closed mid-body.
    """
    body = params.get("body")
    if isinstance(body, BytesIO) and _size(body) <= SEND_AT_ONCE:
        params["headers"].pop("Expect", None)


class S3Multipart:
    def __init__(self, store: S3Storage, key: str, upload_id: str) -> None:
        self._store = store
        self._key = key
        self._upload_id = upload_id
        self._parts: dict[int, dict[str, Any]] = {}

    async def put_part(self, number: int, offset: int, body: BytesIO, crc: int) -> None:
        store = self._store
        checksum = to_s3(crc)
        async with store._errors(f"UploadPart {number} of", self._key):
            resp = await store._client.upload_part(
                Bucket=store.bucket,
                Key=store._key(self._key),
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
                ChecksumCRC32=checksum,
            )
        self._parts[number] = {
            "ETag": resp["ETag"],
            "PartNumber": number,
            "ChecksumCRC32": checksum,
        }

    async def complete(self) -> None:
        store = self._store
        async with store._errors("CompleteMultipartUpload", self._key):
            await store._client.complete_multipart_upload(
                Bucket=store.bucket,
                Key=store._key(self._key),
                UploadId=self._upload_id,
                MultipartUpload={"Parts": [self._parts[n] for n in sorted(self._parts)]},
            )

    async def abort(self) -> None:
        store = self._store
        try:
            async with store._errors("AbortMultipartUpload", self._key):
                await store._client.abort_multipart_upload(
                    Bucket=store.bucket, Key=store._key(self._key), UploadId=self._upload_id
                )
        except FileNotFoundError:
            pass
        except StorageError as exc:
            if "NoSuchUpload" not in str(exc):
                raise


class _Body:
    """A GET's body; its read errors are named after the object."""

    def __init__(self, store: S3Storage, key: str, body: Any, size: int) -> None:
        self._store = store
        self._key = key
        self._body = body
        self.size = size

    async def read(self, n: int) -> bytes:
        try:
            data: bytes = await self._body.read(n)
        except Exception as exc:
            raise self._store._error("GET", self._key, exc) from exc
        return data

    async def read_all(self) -> bytearray:
        """The whole body in one buffer of its Content-Length, filled chunk by chunk,
        instead of joining the chunks at the end (which holds the body twice)."""
        data = bytearray(self.size)
        got = 0
        with memoryview(data) as view:
            while got < self.size:
                try:
                    n = await self._body.readinto(view[got:])
                except Exception as exc:
                    raise self._store._error("GET", self._key, exc) from exc
                if not n:
                    break  # aiobotocore raises for a short body; this is a safety net
                got += n
        if got < self.size:
            del data[got:]
        return data
