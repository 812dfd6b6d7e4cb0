"""An async pipeline that produces shards concurrently and checkpoints them.

    python examples/async_pipeline.py [CHECKPOINT_DIR]

Eight producers build their shards at the same time and write them to a work
folder, with an index of SHA-256 digests beside them. AsyncCheckpoint saves the
folder as one commit; a second AsyncCheckpoint restores it into ./restored,
and every shard is checked against the index.

Needs only aiocheckpoint itself (``pip install .``): checkpoints go to local disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import tempfile
from pathlib import Path

import anyio

from aiocheckpoint import AsyncCheckpoint, TransferConfig

SHARDS = 8


async def produce_shard(index: int, folder: Path, digests: dict[str, str]) -> None:
    """Pretend to fetch and transform a batch of records, then write it as one shard."""
    rng = random.Random(index)
    await anyio.sleep(rng.uniform(0.01, 0.1))  # stands in for network I/O
    records = [{"id": index * 1000 + i, "value": rng.random()} for i in range(1000)]
    data = "".join(json.dumps(record) + "\n" for record in records).encode()
    name = f"shards/shard-{index:03d}.jsonl"
    await anyio.Path(folder, name).write_bytes(data)
    digests[name] = hashlib.sha256(data).hexdigest()


async def verify(folder: Path) -> int:
    """Check every shard in ``folder`` against its index; return how many were checked."""
    index = json.loads(await anyio.Path(folder, "index.json").read_text())
    for name, digest in index.items():
        data = await anyio.Path(folder, name).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise SystemExit(f"{name} does not match its digest")
    return len(index)


async def main(dest: str, restore_to: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        await anyio.Path(work, "shards").mkdir()
        digests: dict[str, str] = {}
        async with anyio.create_task_group() as tg:
            for index in range(SHARDS):
                tg.start_soon(produce_shard, index, work, digests)
        await anyio.Path(work, "index.json").write_text(json.dumps(digests, indent=1))
        print(f"produced {len(digests)} shards in a work folder")

        transfer = TransferConfig(max_concurrency=8)
        async with AsyncCheckpoint(dest, transfer=transfer) as checkpoint:
            await checkpoint.save(work)
        print(f"saved them to {dest}")

    # A later job, or a retry, reads the same location back.
    await anyio.Path(restore_to).mkdir(parents=True, exist_ok=True)
    async with AsyncCheckpoint(dest, checkpoint_src=dest) as checkpoint:
        folder = await checkpoint.restore(restore_to)
    print(f"restored into {folder}")
    print(f"verified {await verify(folder)} shards against index.json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="pipeline_checkpoint")
    parser.add_argument("--restore-to", type=Path, default=Path("restored"))
    args = parser.parse_args()
    anyio.run(main, args.checkpoint, args.restore_to)
