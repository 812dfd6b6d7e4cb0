"""Under trio: local checkpoints work; S3 (aiobotocore runs on asyncio only) is refused
with an error that says so, before any request."""

from __future__ import annotations

import pytest
import trio

from aiocheckpoint import AsyncCheckpoint, SyncCheckpoint

MiB = 1024 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.mark.anyio
async def test_local_checkpoints_save_restore_read_and_write_under_trio(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    files = {"a.bin": b"a" * 100, "sub/big.bin": bytes(range(256)) * (12 * MiB // 256)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    dest = str(tmp_path / "cp")
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(folder)
        await cp.save(folder)  # unchanged: nothing new committed
    out = tmp_path / "out"
    out.mkdir()
    async with AsyncCheckpoint(str(tmp_path / "next"), dest) as cp:
        assert await cp.restore(out) == out
    for name, data in files.items():
        assert (out / name).read_bytes() == data

    blob = str(tmp_path / "blob")
    async with AsyncCheckpoint(blob) as cp:
        await cp.write(b"state under trio")
    async with AsyncCheckpoint(str(tmp_path / "after"), blob) as cp:
        assert await cp.read() == b"state under trio"


@pytest.mark.anyio
async def test_s3_under_trio_is_refused_at_construction(tmp_path):
    with pytest.raises(RuntimeError, match="asyncio") as info:
        AsyncCheckpoint("s3://bucket/run")
    assert "s3://bucket/run" in str(info.value)
    with pytest.raises(RuntimeError, match="asyncio"):
        AsyncCheckpoint(str(tmp_path), "s3://bucket/prev")


def test_s3_checkpoint_made_outside_a_loop_is_refused_at_first_use_under_trio(tmp_path):
    cp = AsyncCheckpoint("s3://bucket/run")

    async def use() -> None:
        async with cp:
            pass

    with pytest.raises(RuntimeError, match="asyncio"):
        trio.run(use)


def test_sync_checkpoint_on_s3_works_from_a_trio_program(s3_server, bucket):
    async def main() -> bytes | None:
        def blocking() -> bytes | None:
            with SyncCheckpoint(f"s3://{bucket}/one") as cp:
                cp.write(b"from trio")
            with SyncCheckpoint(f"s3://{bucket}/two", f"s3://{bucket}/one") as cp:
                return cp.read()

        return await trio.to_thread.run_sync(blocking)

    assert trio.run(main) == b"from trio"


def test_sync_checkpoint_on_s3_can_be_made_on_trios_own_thread(s3_server, bucket):
    async def main() -> bytes | None:
        # blocking calls in a trio task, as a script that mixes them would make
        with SyncCheckpoint(f"s3://{bucket}/one") as cp:
            cp.write(b"made under trio")
        with SyncCheckpoint(f"s3://{bucket}/two", f"s3://{bucket}/one") as cp:
            return cp.read()

    assert trio.run(main) == b"made under trio"
