"""boto3's transfer manager: every file submitted at once, ``max_concurrency`` threads
(``--concurrency``, default 10, s3transfer's own default) shared by files and their parts.

Runs in the "boto3" virtualenv; see ``_runner`` for the arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _runner
import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from s3transfer.manager import TransferManager


def manager(args: argparse.Namespace) -> TransferManager:
    concurrency = args.concurrency or 10
    client = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        verify=args.ca_bundle,
        config=Config(max_pool_connections=concurrency),
    )
    return create_transfer_manager(client, TransferConfig(max_concurrency=concurrency))


def upload(args: argparse.Namespace) -> None:
    with manager(args) as transfers:
        futures = [
            transfers.upload(str(path), args.bucket, f"{args.prefix}/{name}")
            for name, path in _runner.files_under(args.folder)
        ]
        for future in futures:
            future.result()


def download(args: argparse.Namespace) -> None:
    with manager(args) as transfers:
        pages = transfers.client.get_paginator("list_objects_v2").paginate(
            Bucket=args.bucket, Prefix=args.prefix + "/"
        )
        futures = []
        for page in pages:
            for item in page.get("Contents", []):
                target = Path(args.folder, item["Key"].removeprefix(args.prefix + "/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                futures.append(transfers.download(args.bucket, item["Key"], str(target)))
        for future in futures:
            future.result()


if __name__ == "__main__":
    _runner.run(upload, download)
