"""aiocheckpoint's AsyncCheckpoint with default settings, under ``anyio.run``.

The same operations as aiocheckpoint_sync.py, awaited on the main thread's event loop
(see _runner.py for the protocol), aiobotocore imported up front as there.
"""

from __future__ import annotations

import argparse
import tempfile

import aiobotocore.session  # noqa: F401  (imported before the timer, see above)
import anyio
from _runner import run, trust

from aiocheckpoint import AsyncCheckpoint


async def save(args: argparse.Namespace) -> None:
    async with AsyncCheckpoint(
        f"s3://{args.bucket}/{args.prefix}", endpoint_url=args.endpoint
    ) as cp:
        await cp.save(args.folder)


async def restore(args: argparse.Namespace, unused: str) -> None:
    src = f"s3://{args.bucket}/{args.prefix}"
    async with AsyncCheckpoint(unused, src, endpoint_url=args.endpoint) as cp:
        await cp.restore(args.folder)


def upload(args: argparse.Namespace) -> None:
    trust(args)
    anyio.run(save, args)


def download(args: argparse.Namespace) -> None:
    trust(args)
    with tempfile.TemporaryDirectory() as unused:
        anyio.run(restore, args, unused)


if __name__ == "__main__":
    run(upload, download)
