"""boto3, the naive way: ``upload_file`` for each file, then ``download_file`` for each key,
one after another (s3transfer still splits a big file into parts on its own threads).

Runs in the "boto3" virtualenv; see ``_runner`` for the arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _runner
import boto3


def upload(args: argparse.Namespace) -> None:
    client = boto3.client("s3", endpoint_url=args.endpoint, verify=args.ca_bundle)
    for name, path in _runner.files_under(args.folder):
        client.upload_file(str(path), args.bucket, f"{args.prefix}/{name}")


def download(args: argparse.Namespace) -> None:
    client = boto3.client("s3", endpoint_url=args.endpoint, verify=args.ca_bundle)
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=args.bucket, Prefix=args.prefix + "/"
    )
    for page in pages:
        for item in page.get("Contents", []):
            target = Path(args.folder, item["Key"].removeprefix(args.prefix + "/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(args.bucket, item["Key"], str(target))


if __name__ == "__main__":
    _runner.run(upload, download)
