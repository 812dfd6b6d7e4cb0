"""flytekit's own checkpointer, the API aiocheckpoint copies: ``SyncCheckpoint.save`` of
the folder, then ``restore`` into the target from a second checkpoint whose source is the
first. Underneath it is s3fs's recursive put and get.

flytekit reads its S3 settings from FLYTE_AWS_* variables when it is imported, so they are
set from the arguments first. It has no setting for a CA bundle; botocore's AWS_CA_BUNDLE
reaches the s3fs client it makes.

Runs in the "flytekit" virtualenv; see ``_runner`` for the arguments.
"""

from __future__ import annotations

import argparse
import os
import sys

import _runner


def configure(args: argparse.Namespace) -> None:
    os.environ["FLYTE_AWS_ENDPOINT"] = args.endpoint
    os.environ["FLYTE_AWS_ACCESS_KEY_ID"] = os.environ["AWS_ACCESS_KEY_ID"]
    os.environ["FLYTE_AWS_SECRET_ACCESS_KEY"] = os.environ["AWS_SECRET_ACCESS_KEY"]
    if args.ca_bundle:
        os.environ["AWS_CA_BUNDLE"] = args.ca_bundle


def upload(args: argparse.Namespace) -> None:
    from flytekit.core.checkpointer import SyncCheckpoint

    SyncCheckpoint(checkpoint_dest=f"s3://{args.bucket}/{args.prefix}").save(args.folder)


def download(args: argparse.Namespace) -> None:
    from flytekit.core.checkpointer import SyncCheckpoint

    checkpoint = SyncCheckpoint(
        checkpoint_dest=f"s3://{args.bucket}/{args.prefix}-next",
        checkpoint_src=f"s3://{args.bucket}/{args.prefix}",
    )
    checkpoint.restore(args.folder)


if __name__ == "__main__":
    configure(_runner.parse(sys.argv[1:]))
    import flytekit  # noqa: F401  (imported here, outside the timing, after configure)

    _runner.run(upload, download)
