"""Peak memory of one big upload and restore, and the cost of a tiny local write().

    python benchmarks/bench_overhead.py              # one 512 MiB file, default settings
    python benchmarks/bench_overhead.py --size 64MiB

Memory is the process's peak RSS (``ru_maxrss``) over what it held before, with moto in a
process of its own (see bench_s3.py), so only the client is counted. The memory bound the
library keeps is ``TransferConfig().buffer_bytes``; the rest is Python's and the allocator's.
Needs the test extras (moto, boto3): pip install -e '.[test]'.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import boto3
from bench_s3 import BUCKET, MiB, parse_size, serve

from aiocheckpoint import AsyncCheckpoint, SyncCheckpoint, TransferConfig


def peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def tiny_writes(folder: Path, count: int = 200) -> tuple[float, float]:
    """Median seconds of ``write(b"tiny")`` on local storage: sync, then async."""
    with SyncCheckpoint(folder / "sync") as cp:
        cp.write(b"warm")
        sync = []
        for _ in range(count):
            start = time.perf_counter()
            cp.write(b"tiny")
            sync.append(time.perf_counter() - start)

    async def run() -> list[float]:
        times = []
        async with AsyncCheckpoint(folder / "async") as cp:
            await cp.write(b"warm")
            for _ in range(count):
                start = time.perf_counter()
                await cp.write(b"tiny")
                times.append(time.perf_counter() - start)
        return times

    return statistics.median(sync), statistics.median(anyio.run(run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=512 * MiB, help="bytes of the file")
    args = parser.parse_args()

    spawn = multiprocessing.get_context("spawn")
    port = spawn.Queue()
    server = spawn.Process(target=serve, args=(port, 0.0), daemon=True)
    server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port.get(timeout=60)}",
    )
    boto3.client("s3").create_bucket(Bucket=BUCKET)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        big = folder / "big.bin"
        with open(big, "wb") as f:
            for _ in range(0, args.size, 8 * MiB):
                f.write(os.urandom(min(8 * MiB, args.size - f.tell())))
        sync, asynchronous = tiny_writes(folder)
        idle = peak_rss()
        url = f"s3://{BUCKET}/big"
        with SyncCheckpoint(url) as cp:
            cp.save(big)
        uploaded = peak_rss()
        out = folder / "out"
        out.mkdir()
        with SyncCheckpoint(folder / "unused", url) as cp:
            cp.restore(out)
        restored = peak_rss()
        if (out / big.name).read_bytes() != big.read_bytes():
            raise SystemExit("the restored file differs from the original")
    server.terminate()

    bound = TransferConfig().buffer_bytes / MiB
    print(f"file {args.size / MiB:g} MiB, library memory bound {bound:g} MiB (defaults)\n")
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| peak RSS over idle, upload | {uploaded - idle:.0f} MiB |")
    print(f"| peak RSS over idle, upload + restore | {restored - idle:.0f} MiB |")
    print(f"| tiny local write(), SyncCheckpoint (median of 200) | {sync * 1000:.2f} ms |")
    print(f"| tiny local write(), AsyncCheckpoint (median of 200) | {asynchronous * 1000:.2f} ms |")


if __name__ == "__main__":
    main()
