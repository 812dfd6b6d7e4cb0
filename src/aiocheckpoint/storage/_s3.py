"""S3 backend on aiobotocore. Imported only when an ``s3://`` location is used."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from io import BytesIO
from typing import Any

import anyio.to_thread
from anyio import CapacityLimiter
from botocore.exceptions import ClientError

from .._checksum import crc32, to_s3
from .._errors import StorageError
from .._io import new_body, pwrite_all, read_at, write_file
from .._tasks import task_group
from ._base import FileCopy, ObjectInfo
from ._s3_body import Body, total_attempts

_MISSING = {"NoSuchKey", "404", "NotFound"}
_EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
#: Where "not found" means the object is missing. Elsewhere (a PUT) it means the server
#: refused the request, e.g. a key its router cannot take: a StorageError with the code.
_FINDS = {"GET", "AbortMultipartUpload"}
_MAX_KEY = 1024  # bytes of UTF-8, S3's limit

#: A PUT body up to this size goes out with its headers; a bigger one waits for the
#: server's "100 Continue" first (see ``no_expect_continue``).
SEND_AT_ONCE = 1024 * 1024


class S3Storage:
    empty_means_missing = True
    overlaps_listing = True
    exclusive_create: bool | None = None

    def __init__(
        self, client: Any, bucket: str, prefix: str, threads: CapacityLimiter, piece: int
    ) -> None:
        self.client = client
        self.endpoint = str(client.meta.endpoint_url)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.max_key_bytes: int | None = _MAX_KEY - len(self.full_key("").encode())
        self._threads = threads
        self._piece = piece  # what one streamed GET holds in memory at most
        #: What a GET whose body breaks off gets in all, as botocore gives every request.
        self.attempts = total_attempts(client.meta.config)

    def full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def describe(self, key: str = "") -> str:
        return (
            f"s3://{self.bucket}/{self.full_key(key)}"
            if key
            else f"s3://{self.bucket}/{self.prefix}"
        )

    @asynccontextmanager
    async def errors(self, action: str, key: str) -> AsyncIterator[None]:
        """Raise what the client raises as :meth:`error` names it."""
        try:
            yield
        except Exception as exc:
            raise self.error(action, key, exc) from exc

    def error(self, action: str, key: str, exc: Exception) -> Exception:
        """The exception to raise for ``exc``, naming the object."""
        if not isinstance(exc, ClientError):
            return StorageError(f"S3 {action} {self.describe(key)} failed: {exc}")
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        if code in _MISSING and action in _FINDS:
            return FileNotFoundError(f"no such object: {self.describe(key)}")
        if code in _EXISTS:
            return FileExistsError(f"object exists: {self.describe(key)}")
        message = error.get("Message") or ""
        return StorageError(
            f"S3 {action} {self.describe(key)} failed: {code}"
            + (f" ({message})" if message else "")
        )

    async def put(self, key: str, body: BytesIO, crc: int) -> None:
        async with self.errors("PUT", key):
            await self.client.put_object(
                Bucket=self.bucket, Key=self.full_key(key), Body=body, ChecksumCRC32=to_s3(crc)
            )

    async def put_exclusive(self, key: str, data: bytes) -> None:
        # Like every PUT, with its CRC-32 for S3 to check; bytes without one would be wrapped
        # by botocore in an aws-chunked body that computes it on the way.
        async with self.errors("PUT (If-None-Match)", key):
            await self.client.put_object(
                Bucket=self.bucket,
                Key=self.full_key(key),
                Body=BytesIO(data),
                IfNoneMatch="*",
                ChecksumCRC32=to_s3(crc32(data)),
            )

    async def put_files(self, files: Sequence[FileCopy]) -> list[int]:
        """Read the files in one worker-thread call (a hand-off costs about as much client
        CPU as reading 64 KiB), then PUT each as a request of its own, all at once."""
        bodies = [new_body(f.size) for f in files]  # made and freed on the loop's thread

        def read() -> list[tuple[BytesIO, int]]:
            out = []
            for f, body in zip(files, bodies, strict=True):
                chunk = read_at(f.path, 0, f.size, body)
                out.append((chunk.body, chunk.crc))
            return out

        chunks = await anyio.to_thread.run_sync(read, limiter=self._threads)
        async with task_group() as tg:
            for f, (body, crc) in zip(files, chunks, strict=True):
                tg.start_soon(self.put, f.key, body, crc)
        return [crc for _, crc in chunks]

    async def start_multipart(self, key: str) -> S3Multipart:
        async with self.errors("CreateMultipartUpload", key):
            resp = await self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.full_key(key), ChecksumAlgorithm="CRC32"
            )
        return S3Multipart(self, key, resp["UploadId"])

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes | bytearray:
        async with self._reader(key, start, length) as body:
            if length is not None and body.size > length:  # a server that ignores Range
                raise StorageError(
                    f"S3 GET of {self.describe(key)} sent {body.size} bytes for a range of {length}"
                )
            # Read the body here, inside the caller's concurrency slot: an unread body keeps
            # its pooled connection.
            return await body.read_all()

    async def get_files(self, files: Sequence[FileCopy]) -> list[tuple[int, int] | None]:
        """GET every object at once, then write them in one worker-thread call."""
        got: list[tuple[int, bytes | bytearray] | None] = [None] * len(files)

        async def fetch(i: int, f: FileCopy) -> None:
            try:
                async with self._reader(f.key) as body:
                    data = await body.read_all() if body.size <= f.size else b""
                    got[i] = (body.size, data)
            except FileNotFoundError:
                pass  # None: missing

        async with task_group() as tg:
            for i, f in enumerate(files):
                tg.start_soon(fetch, i, f)

        def write() -> list[tuple[int, int] | None]:
            return [
                None if g is None else (g[0], write_file(f.path, g[1]) if g[0] <= f.size else 0)
                for f, g in zip(files, got, strict=True)
            ]

        return await anyio.to_thread.run_sync(write, limiter=self._threads)

    async def get_into(
        self, key: str, fd: int, start: int, length: int, *, whole: bool = False, at: int = -1
    ) -> tuple[int, int]:
        """Write the body as it arrives, up to ``piece`` bytes per worker-thread call."""
        first = start if at < 0 else at
        crc = got = 0
        async with self._reader(key, start, None if whole else length) as body:
            if body.size > length:
                return crc, body.size
            while pieces := await body.read_pieces(self._piece):
                n = sum(len(p) for p in pieces)
                if got + n > length:
                    return crc, got + n
                crc = await anyio.to_thread.run_sync(
                    _write_pieces, fd, first + got, pieces, crc, limiter=self._threads
                )
                got += n
        return crc, got

    @asynccontextmanager
    async def _reader(
        self, key: str, start: int = 0, length: int | None = None
    ) -> AsyncIterator[Body]:
        body = Body(self, key, start, length)
        try:
            await body.open()
            yield body
        finally:
            body.close()

    async def _listing(
        self, action: str, operation: str, field: str, prefix: str, name: str = "Key", **extra: str
    ) -> list[dict[str, Any]]:
        """Every item of a paginated listing under ``prefix``, its ``name`` made relative."""
        base = f"{self.prefix}/" if self.prefix else ""
        out = []
        async with self.errors(action, prefix):
            paginator = self.client.get_paginator(operation)
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
            async with self.errors("DELETE", batch[0]):
                resp = await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.full_key(k)} for k in batch], "Quiet": True},
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


def _write_pieces(fd: int, offset: int, pieces: list[bytes], crc: int) -> int:
    for piece in pieces:
        pwrite_all(fd, piece, offset)
        crc = crc32(piece, crc)
        offset += len(piece)
    return crc


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
    if isinstance(body, BytesIO):
        with body.getbuffer() as view:
            small = view.nbytes - body.tell() <= SEND_AT_ONCE
        if small:
            params["headers"].pop("Expect", None)


class S3Multipart:
    def __init__(self, store: S3Storage, key: str, upload_id: str) -> None:
        self._store = store
        self._key = key
        self._upload_id = upload_id
        self._parts: dict[int, dict[str, Any]] = {}

    def _args(self) -> dict[str, Any]:
        store = self._store
        return {
            "Bucket": store.bucket,
            "Key": store.full_key(self._key),
            "UploadId": self._upload_id,
        }

    async def put_part(self, number: int, offset: int, body: BytesIO, crc: int) -> None:
        checksum = to_s3(crc)
        async with self._store.errors(f"UploadPart {number} of", self._key):
            resp = await self._store.client.upload_part(
                **self._args(), PartNumber=number, Body=body, ChecksumCRC32=checksum
            )
        self._parts[number] = {
            "ETag": resp["ETag"],
            "PartNumber": number,
            "ChecksumCRC32": checksum,
        }

    async def complete(self) -> None:
        parts = [self._parts[n] for n in sorted(self._parts)]
        async with self._store.errors("CompleteMultipartUpload", self._key):
            await self._store.client.complete_multipart_upload(
                **self._args(), MultipartUpload={"Parts": parts}
            )

    async def abort(self) -> None:
        try:
            async with self._store.errors("AbortMultipartUpload", self._key):
                await self._store.client.abort_multipart_upload(**self._args())
        except FileNotFoundError:
            pass
        except StorageError as exc:
            if "NoSuchUpload" not in str(exc):
                raise
