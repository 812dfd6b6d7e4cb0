"""The "limit" reference row: what the server sustains when the client does next to nothing.

The same protocol as the other runners (see _runner.py), with the client's own work taken
out: an upload reads every file into memory, and cuts and checksums the parts of big
files, before the timer starts; a download keeps what it fetches in memory and writes it
to the folder only after the timer has stopped (so the orchestrator can verify it). In
between, one aiobotocore client with 64 requests in flight at once (64 pooled connections)
moves the bytes: one PUT per object up to 8 MiB, bigger objects as a multipart upload of
8 MiB parts; downloads list the prefix, then GET small objects whole and big ones in 8 MiB
ranges. No checksum is computed or validated in the timed part. The multipart uploads
declare CRC-32 with the part checksums computed beforehand, as S3 requires: the server then
combines part checksums instead of hashing the whole object at completion.

The idle RSS is taken after the data is loaded, so the peak over idle is the transfer's.
Runs with the project's own interpreter (aiobotocore and anyio).
"""

from __future__ import annotations

import argparse
import base64
import zlib
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from _runner import files_under, parse, run
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

CONCURRENCY = 64
PART = 8 * 2**20


class Upload:
    """One object to store: its key and its parts (one part: a single PUT)."""

    def __init__(self, key: str, data: bytes) -> None:
        self.key = key
        self.parts = [data[i : i + PART] for i in range(0, len(data), PART)] or [b""]
        self.crcs = [crc32(part) for part in self.parts] if len(self.parts) > 1 else []


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def client(args: argparse.Namespace) -> AbstractAsyncContextManager[Any]:
    config = AioConfig(
        max_pool_connections=CONCURRENCY,
        retries={"mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"payload_signing_enabled": False},
    )
    return get_session().create_client(
        "s3", endpoint_url=args.endpoint, verify=args.ca_bundle, config=config
    )


async def put(s3: Any, limiter: anyio.CapacityLimiter, bucket: str, upload: Upload) -> None:
    if not upload.crcs:
        async with limiter:
            await s3.put_object(Bucket=bucket, Key=upload.key, Body=upload.parts[0])
        return
    async with limiter:
        created = await s3.create_multipart_upload(
            Bucket=bucket, Key=upload.key, ChecksumAlgorithm="CRC32"
        )
    upload_id = created["UploadId"]
    etags: list[str] = [""] * len(upload.parts)

    async def part(number: int) -> None:
        async with limiter:
            response = await s3.upload_part(
                Bucket=bucket,
                Key=upload.key,
                UploadId=upload_id,
                PartNumber=number + 1,
                Body=upload.parts[number],
                ChecksumCRC32=upload.crcs[number],
            )
        etags[number] = response["ETag"]

    async with anyio.create_task_group() as tg:
        for number in range(len(upload.parts)):
            tg.start_soon(part, number)
    parts = [
        {"PartNumber": i + 1, "ETag": etag, "ChecksumCRC32": crc}
        for i, (etag, crc) in enumerate(zip(etags, upload.crcs, strict=True))
    ]
    async with limiter:
        await s3.complete_multipart_upload(
            Bucket=bucket, Key=upload.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )


async def get(
    s3: Any, limiter: anyio.CapacityLimiter, bucket: str, key: str, size: int
) -> list[bytes]:
    ranges = [(start, min(start + PART, size) - 1) for start in range(0, size, PART)]
    chunks: list[bytes] = [b""] * len(ranges)

    async def fetch(index: int) -> None:
        extra = {"Range": "bytes={}-{}".format(*ranges[index])} if len(ranges) > 1 else {}
        async with limiter:
            response = await s3.get_object(Bucket=bucket, Key=key, **extra)
            async with response["Body"] as body:
                chunks[index] = await body.read()

    async with anyio.create_task_group() as tg:
        for index in range(len(ranges)):
            tg.start_soon(fetch, index)
    return chunks


async def upload_all(args: argparse.Namespace) -> None:
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    async with client(args) as s3, anyio.create_task_group() as tg:
        for upload in UPLOADS:
            tg.start_soon(put, s3, limiter, args.bucket, upload)


async def download_all(args: argparse.Namespace) -> None:
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    prefix = args.prefix + "/"
    async with client(args) as s3:
        objects = []
        async for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=args.bucket, Prefix=prefix
        ):
            objects += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]

        async def one(key: str, size: int) -> None:
            DOWNLOADED[key.removeprefix(prefix)] = await get(s3, limiter, args.bucket, key, size)

        async with anyio.create_task_group() as tg:
            for key, size in objects:
                tg.start_soon(one, key, size)


def main() -> None:
    args = parse()
    if args.op == "upload":
        for name, path in files_under(args.folder):
            UPLOADS.append(Upload(f"{args.prefix}/{name}", path.read_bytes()))
    run(lambda args: anyio.run(upload_all, args), lambda args: anyio.run(download_all, args))
    for name, chunks in DOWNLOADED.items():
        path = args.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.writelines(chunks)


UPLOADS: list[Upload] = []  # filled before the timer starts
DOWNLOADED: dict[str, list[bytes]] = {}  # written after it stops

if __name__ == "__main__":
    main()
