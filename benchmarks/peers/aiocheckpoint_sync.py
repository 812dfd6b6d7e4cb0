"""aiocheckpoint's SyncCheckpoint with default settings (see _runner.py for the protocol).

upload: ``SyncCheckpoint("s3://B/P").save(folder)``; download: a checkpoint whose source is
``s3://B/P`` (and whose dest is a throwaway local folder) restores into ``folder``. The
server's certificate is trusted through ``AWS_CA_BUNDLE``, which botocore reads.
aiocheckpoint imports aiobotocore only when an s3:// location is first used; this
script imports it up front, as the other runners import their library, so that neither
the import time nor its memory counts as the transfer's. bench.py's base tool runs this
same script with a previous version's ``src`` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import tempfile

import aiobotocore.session  # noqa: F401  (imported before the timer, see above)
from _runner import run, trust

from aiocheckpoint import SyncCheckpoint


def upload(args: argparse.Namespace) -> None:
    trust(args)
    with SyncCheckpoint(f"s3://{args.bucket}/{args.prefix}", endpoint_url=args.endpoint) as cp:
        cp.save(args.folder)


def download(args: argparse.Namespace) -> None:
    trust(args)
    with tempfile.TemporaryDirectory() as unused:
        src = f"s3://{args.bucket}/{args.prefix}"
        with SyncCheckpoint(unused, src, endpoint_url=args.endpoint) as cp:
            cp.restore(args.folder)


if __name__ == "__main__":
    run(upload, download)
