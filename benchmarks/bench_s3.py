"""Time saving and restoring a folder of many files to S3, against a sequential baseline.

    python benchmarks/bench_s3.py                   # 64 files x 8 MiB, 3 repeats
    python benchmarks/bench_s3.py --files 16 --size 32MiB --repeat 5
    python benchmarks/bench_s3.py --quick           # a tiny run, to check it works

The S3 server is moto on 127.0.0.1, in a process of its own, behind a small
WSGI middleware that waits ``--latency`` milliseconds before each request (S3's
time to first byte, which a local server lacks; 0 turns it off). On a 2-core
machine moto's own CPU is the ceiling at low latency. Every run uploads to a
fresh prefix, downloads into a fresh folder and checks the download byte for byte.
Needs the test extras (moto, boto3): pip install -e '.[test]'.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import boto3

from aiocheckpoint import AsyncCheckpoint, SyncCheckpoint

BUCKET = "bench"
MiB = 1024 * 1024


def serve(port: Any, latency: float) -> None:
    """Run moto's S3 app, each request delayed by ``latency`` seconds; report the port."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import WSGIRequestHandler, make_server

    app = DomainDispatcherApplication(create_backend_app)

    def delayed(environ: dict[str, Any], start_response: Any) -> Any:
        time.sleep(latency)
        return app(environ, start_response)

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, delayed, threaded=True, request_handler=Quiet)
    port.put(server.server_port)
    server.serve_forever()


def parse_size(text: str) -> int:
    """Read a size such as 8MiB, 512KiB or 1048576 as bytes."""
    for suffix, factor in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024), ("B", 1)):
        if text.endswith(suffix):
            return int(float(text.removesuffix(suffix)) * factor)
    return int(text)


def make_files(folder: Path, count: int, size: int) -> None:
    for i in range(count):
        (folder / f"file-{i:04d}.bin").write_bytes(os.urandom(size))


def baseline_save(client, source: Path, prefix: str) -> None:
    for path in sorted(source.iterdir()):
        with open(path, "rb") as f:
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.name}", Body=f)


def baseline_restore(client, prefix: str, target: Path) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    for page in pages:
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"]
            with open(target / obj["Key"].rsplit("/", 1)[1], "wb") as f:
                shutil.copyfileobj(body, f, MiB)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_baseline(client, source: Path, prefix: str, target: Path) -> tuple[float, float]:
    return (
        timed(lambda: baseline_save(client, source, prefix)),
        timed(lambda: baseline_restore(client, prefix, target)),
    )


def run_sync(endpoint: str, source: Path, prefix: str, target: Path) -> tuple[float, float]:
    url = f"s3://{BUCKET}/{prefix}"
    with SyncCheckpoint(url, endpoint_url=endpoint) as checkpoint:
        save = timed(lambda: checkpoint.save(source))
    with SyncCheckpoint(url, url, endpoint_url=endpoint) as checkpoint:
        restore = timed(lambda: checkpoint.restore(target))
    return save, restore


def run_async(endpoint: str, source: Path, prefix: str, target: Path) -> tuple[float, float]:
    url = f"s3://{BUCKET}/{prefix}"

    async def main() -> tuple[float, float]:
        async with AsyncCheckpoint(url, endpoint_url=endpoint) as checkpoint:
            start = time.perf_counter()
            await checkpoint.save(source)
            save = time.perf_counter() - start
        async with AsyncCheckpoint(url, url, endpoint_url=endpoint) as checkpoint:
            start = time.perf_counter()
            await checkpoint.restore(target)
            restore = time.perf_counter() - start
        return save, restore

    return anyio.run(main)


def same_files(source: Path, target: Path) -> bool:
    names = sorted(p.name for p in source.iterdir())
    match, _, _ = filecmp.cmpfiles(source, target, names, shallow=False)
    return len(match) == len(names)


def delete_prefix(client, prefix: str) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    for page in pages:
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--size", type=parse_size, default=8 * MiB, help="bytes per file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=float, default=20, help="ms added to each request")
    parser.add_argument("--quick", action="store_true", help="8 files x 256 KiB, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.files, args.size, args.repeat = 8, 256 * 1024, 1
    total = args.files * args.size

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # werkzeug logs every request
    spawn = multiprocessing.get_context("spawn")
    port = spawn.Queue()
    server = spawn.Process(target=serve, args=(port, args.latency / 1000), daemon=True)
    server.start()
    endpoint = f"http://127.0.0.1:{port.get(timeout=60)}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)

    runners = {
        "baseline (boto3, one file at a time)": lambda *a: run_baseline(client, *a),
        "SyncCheckpoint": lambda *a: run_sync(endpoint, *a),
        "AsyncCheckpoint": lambda *a: run_async(endpoint, *a),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    print(
        f"{args.files} files x {args.size / MiB:g} MiB = {total / MiB:g} MiB, "
        f"{args.repeat} repeat(s), moto at {endpoint} (own process, +{args.latency:g} ms"
        " per request)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "source")
        source.mkdir()
        make_files(source, args.files, args.size)
        for repeat in range(args.repeat):
            for i, (name, run) in enumerate(runners.items()):
                prefix = f"run-{repeat}-{i}"
                target = Path(tmp, prefix)
                target.mkdir()
                times[name].append(run(source, prefix, target))
                if not same_files(source, target):
                    raise SystemExit(f"{name}: downloaded files differ from the originals")
                shutil.rmtree(target)
                delete_prefix(client, prefix)
    server.terminate()

    print()
    print("| method | op | median s | min–max s | MiB/s | speedup vs baseline |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    baseline = next(iter(times.values()))
    for name, runs in times.items():
        for op, column in (("save", 0), ("restore", 1)):
            seconds = [run[column] for run in runs]
            median = statistics.median(seconds)
            speedup = statistics.median(r[column] for r in baseline) / median
            print(
                f"| {name} | {op} | {median:.3f} | {min(seconds):.3f}–{max(seconds):.3f} "
                f"| {total / MiB / median:.1f} | {speedup:.2f}x |"
            )


if __name__ == "__main__":
    main()
