"""Save a folder to S3 and restore it somewhere else.

    python examples/s3_example.py [s3://BUCKET/PREFIX]

The endpoint and credentials come from the usual AWS settings. With no endpoint
set (AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3), the example starts a local moto
server, creates the bucket there and stops the server at the end.
It writes ./s3_example/source and restores into ./s3_example/restored.

Needs the S3 extra, and boto3 and moto for the local server:
``pip install '.[s3]' boto3 'moto[server]'`` (or ``pip install '.[test]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from aiocheckpoint import SyncCheckpoint


@contextlib.contextmanager
def local_s3(bucket: str) -> Iterator[None]:
    """Run a moto S3 server in this process unless an endpoint is already configured."""
    if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"):
        yield
        return
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise SystemExit(
            f"{exc.name} is not installed: with no S3 endpoint set, this example runs a"
            " local moto server, which needs pip install boto3 'moto[server]'"
        ) from exc

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # werkzeug logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    print(f"started a moto S3 server at {os.environ['AWS_ENDPOINT_URL']}")
    boto3.client("s3").create_bucket(Bucket=bucket)
    try:
        yield
    finally:
        server.stop()
        print("stopped the moto server")


def make_source(folder: Path) -> None:
    """Write a small folder tree worth checkpointing."""
    (folder / "weights").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"layers": 4, "lr": 0.001}\n')
    (folder / "weights" / "layer0.bin").write_bytes(os.urandom(256 * 1024))
    (folder / "weights" / "layer1.bin").write_bytes(os.urandom(12 * 1024 * 1024))
    (folder / "weights" / "empty.bin").write_bytes(b"")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="s3://aiocheckpoint-example/demo")
    url = parser.parse_args().url
    bucket = url.removeprefix("s3://").split("/")[0]

    source = Path("s3_example", "source")
    restored = Path("s3_example", "restored")
    make_source(source)
    restored.mkdir(parents=True, exist_ok=True)

    with local_s3(bucket):
        with SyncCheckpoint(url) as checkpoint:
            checkpoint.save(source)
        print(f"saved {source} to {url}")

        with SyncCheckpoint(url, checkpoint_src=url) as checkpoint:
            folder = checkpoint.restore(restored)
        print(f"restored {url} into {folder}")

    files = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(source, restored, files, shallow=False)
    if mismatch or errors:
        raise SystemExit(f"restored files differ: {mismatch + errors}")
    print(f"all {len(match)} files match: {', '.join(match)}")


if __name__ == "__main__":
    main()
