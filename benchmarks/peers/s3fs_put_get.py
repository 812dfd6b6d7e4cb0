"""s3fs: one recursive ``put`` of the folder and one recursive ``get`` back, with s3fs's
defaults (fsspec's batch of files in flight, ``max_concurrency`` parts per big file).

The trailing slashes matter: like ``cp -r``, fsspec copies the folder *into* an existing
target unless the source ends with "/", which means its contents.

Runs in the "s3fs" virtualenv; see ``_runner`` for the arguments.
"""

from __future__ import annotations

import argparse

import _runner
import s3fs


def filesystem(args: argparse.Namespace) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": args.endpoint, "verify": args.ca_bundle},
        skip_instance_cache=True,
    )


def upload(args: argparse.Namespace) -> None:
    fs = filesystem(args)
    fs.put(f"{args.folder}/", f"{args.bucket}/{args.prefix}/", recursive=True)


def download(args: argparse.Namespace) -> None:
    fs = filesystem(args)
    fs.get(f"{args.bucket}/{args.prefix}/", f"{args.folder}/", recursive=True)


if __name__ == "__main__":
    _runner.run(upload, download)
