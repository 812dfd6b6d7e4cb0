"""How saves and restores fare when the network fails: plain tables for the README.

    .venv/bin/python benchmarks/faults.py           # every table; the last row takes minutes
    .venv/bin/python benchmarks/faults.py --quick   # without the default never-answering row

Against the tests' moto server (tests/_s3server.py) with its faults (tests/_faults.py):
20 save + restore cycles with 5% of GET bodies cut at a random point, 20 with 10% of all
requests answered 500 or 503, each with the library's default settings; then how long a
save and a restore (run side by side) take to fail when the endpoint refuses connections,
answers every request 503, or accepts connections and never answers, with the defaults
and with short settings. Every random fault is seeded.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _faults import silent_endpoint  # noqa: E402
from _s3server import S3Server, match  # noqa: E402
from report import table  # noqa: E402

from aiocheckpoint import AsyncCheckpoint, CheckpointError, TransferConfig  # noqa: E402

MiB = 1024 * 1024
PARTS = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
SHORT = Config(connect_timeout=2, read_timeout=2, retries={"max_attempts": 2})
SHORT_TEXT = 'Config(connect_timeout=2, read_timeout=2, retries={"max_attempts": 2})'


def tree(rng: random.Random) -> dict[str, bytes]:
    """Small files, one fetched whole, one in three ranged GETs."""
    files = {f"small/f{i}.bin": rng.randbytes(rng.randrange(1, 300_000)) for i in range(8)}
    files["whole.bin"] = rng.randbytes(2 * MiB)
    files["big.bin"] = rng.randbytes(11 * MiB)
    return files


def write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def read(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def cycles(url: str, work: Path, seed: int) -> tuple[int, str]:
    """20 saves, each changing a file, each followed by a restore compared byte for byte:
    how many cycles succeeded, and the first error."""
    rng = random.Random(seed)
    files = tree(rng)
    ok, first = 0, ""
    for i in range(20):
        files[f"small/f{i % 8}.bin"] = rng.randbytes(rng.randrange(1, 300_000))
        out = work / f"out{i}"
        out.mkdir(parents=True)
        try:
            async with AsyncCheckpoint(url, transfer=PARTS) as cp:
                await cp.save(write(work / f"src{i}", files))
            async with AsyncCheckpoint(url + "-unused", url, transfer=PARTS) as cp:
                await cp.restore(out)
            if read(out) != files:
                raise CheckpointError(f"cycle {i}: restored files differ")
            ok += 1
        except CheckpointError as exc:
            first = first or f"{type(exc).__name__}: {str(exc)[:120]}"
    return ok, first


async def time_to_fail(endpoint: str, config: Any) -> list[str]:
    """Seconds until a save and a restore (side by side) fail, and what they raise."""
    options = {"endpoint_url": endpoint, "botocore_config": config}
    out = ["", "", "", ""]

    async def run(slot: int, url: str, src: str | None, operation: str) -> None:
        start = time.perf_counter()
        try:
            async with AsyncCheckpoint(url, src, **options) as cp:
                await (cp.write(b"x") if operation == "write" else cp.restore())
            error = "none: it succeeded"
        except CheckpointError as exc:
            error = type(exc).__name__
        out[slot] = f"{time.perf_counter() - start:.1f}"
        out[slot + 1] = error

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, 0, "s3://bench-dead/cp", None, "write")
        tg.start_soon(run, 2, "s3://bench-dead/cp2", "s3://bench-dead/prev", "restore")
    return out


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main(quick: bool) -> None:
    server = S3Server()
    server.start()
    control = server.control
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint_url
    s3 = boto3.session.Session().client("s3", endpoint_url=server.endpoint_url)
    s3.create_bucket(Bucket="bench-faults")
    work = Path(tempfile.mkdtemp(prefix="aiocheckpoint-faults-"))
    try:
        print("## 20 save + restore cycles, default settings\n")
        rows = []
        cut = control.cut(match("GET"), probability=0.05, seed=16)
        ok, first = await cycles("s3://bench-faults/cut", work / "cut", 16)
        gets = len(control.matching(match("GET")))
        resumes = len(control.matching(lambda r: r.method == "GET" and bool(r.if_match)))
        rows.append(
            ["5% of GET bodies cut", f"{ok}/20", f"{cut.struck} of {gets} GETs", resumes, first]
        )
        control.reset()
        faults = [
            control.fail(match(), status=500, code="InternalError", probability=0.05, seed=1),
            control.fail(match(), status=503, code="SlowDown", probability=0.05, seed=2),
        ]
        ok, first = await cycles("s3://bench-faults/5xx", work / "5xx", 17)
        struck = sum(f.struck for f in faults)
        rows.append(
            [
                "10% of requests 500/503",
                f"{ok}/20",
                f"{struck} of {len(control.requests)}",
                "",
                first,
            ]
        )
        control.reset()
        head = ["fault", "cycles ok", "struck", "resumed GETs", "first error"]
        print("\n".join(table(head, rows)))

        print("\n## Time to fail: a save (write) and a restore, side by side, seconds\n")
        rows = []
        refused = f"http://127.0.0.1:{closed_port()}"
        for name, settings, config in (
            ("defaults", "defaults", None),
            ("short", SHORT_TEXT, SHORT),
        ):
            rows.append(["connection refused", settings, *await time_to_fail(refused, config)])
            control.fail(match(), status=503, code="SlowDown")
            rows.append(
                ["every request 503", settings, *await time_to_fail(server.endpoint_url, config)]
            )
            control.reset()
            if name == "defaults" and quick:
                continue
            with silent_endpoint() as silent:
                rows.append(["never answers", settings, *await time_to_fail(silent, config)])
        head = ["endpoint", "settings", "save s", "save raises", "restore s", "restore raises"]
        print("\n".join(table(head, rows)))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the default never-answering row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as aws_dir:
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            del os.environ[name]
        os.environ.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=str(Path(aws_dir) / "config"),
            AWS_SHARED_CREDENTIALS_FILE=str(Path(aws_dir) / "credentials"),
        )
        anyio.run(main, args.quick)
