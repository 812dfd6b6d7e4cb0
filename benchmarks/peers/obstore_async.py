"""obstore from asyncio: every file put (or got) concurrently under a semaphore of
``--concurrency`` (default 32); ``put_async`` does a multipart upload for big files on its
own (5 MiB parts, 12 at a time per file). Downloads stream each object's chunks to disk.

Runs in the "obstore" virtualenv; see ``_runner`` for the arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import _runner
import obstore
from obstore.store import S3Store


def store(args: argparse.Namespace) -> S3Store:
    options: dict[str, object] = {"allow_http": args.endpoint.startswith("http://")}
    if args.ca_bundle:
        options["root_certificate"] = Path(args.ca_bundle).read_text()
    # credentials and region from the AWS_* environment variables
    return S3Store(args.bucket, prefix=args.prefix, endpoint=args.endpoint, client_options=options)


async def upload_all(args: argparse.Namespace) -> None:
    bucket = store(args)
    limit = asyncio.Semaphore(args.concurrency or 32)

    async def one(name: str, path: Path) -> None:
        async with limit:
            await obstore.put_async(bucket, name, path)

    async with asyncio.TaskGroup() as group:
        for name, path in _runner.files_under(args.folder):
            group.create_task(one(name, path))


async def download_all(args: argparse.Namespace) -> None:
    bucket = store(args)
    limit = asyncio.Semaphore(args.concurrency or 32)

    async def one(name: str) -> None:
        async with limit:
            target = Path(args.folder, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            result = await obstore.get_async(bucket, name)
            with open(target, "wb") as f:  # noqa: ASYNC230 (page-cache writes, as obstore shows)
                async for chunk in result.stream():
                    f.write(chunk)

    async with asyncio.TaskGroup() as group:
        async for batch in obstore.list(bucket, chunk_size=1000):
            for item in batch:
                group.create_task(one(item["path"]))


def upload(args: argparse.Namespace) -> None:
    asyncio.run(upload_all(args))


def download(args: argparse.Namespace) -> None:
    asyncio.run(download_all(args))


if __name__ == "__main__":
    _runner.run(upload, download)
    # A tokio thread of obstore's can still be returning from its last call into Python
    # (the future's set_result) when the interpreter finalizes, and that aborts the process
    # now and then (SIGABRT after the work is done). Leave without finalizing.
    os._exit(0)
