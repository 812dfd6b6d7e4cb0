"""Requests in flight as the S3 server sees them: bounded, overlapping, cleaned up."""

# Blocking file work in these async tests is test setup, not library code.

from __future__ import annotations

import io
import os
import random
import tracemalloc
from pathlib import Path

import anyio
import pytest
from _holds import cancelled_while_held, held_at_once, held_while
from _s3server import Request, match
from _trees import read_tree, restore_all, write_tree

from aiocheckpoint import AsyncCheckpoint, CheckpointError, StorageError, TransferConfig

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
UPLOAD_PART = match("PUT", param="partNumber")
DATA_PUT = match("PUT", path_contains="/.aiocheckpoint/data/")
DATA_GET = match("GET", path_contains="/.aiocheckpoint/data/")
MULTIPART = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
#: The tests of small files here are of one object per file; test_packs.py has packs'.
OBJECTS = {"pack_threshold": 0}


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(3).randbytes(12 * MiB))
    return path


@pytest.mark.parametrize(
    ("transfer", "requests"),
    [
        (TransferConfig(max_concurrency=4, **OBJECTS), 24),
        (TransferConfig(max_concurrency=4, pack_size=2000), 12),  # packs of two files
    ],
    ids=["objects", "packs"],
)
async def test_requests_overlap_but_never_exceed_max_concurrency(
    s3_control, bucket, tmp_path, transfer, requests
):
    # The server holds the PUTs, then the GETs: 4 of them pile up, never a fifth, and
    # once they are let go the save and then the restore complete.
    files = {f"f{i:02d}.bin": os.urandom(1000) for i in range(24)}
    dest = f"s3://{bucket}/cp"

    hold = s3_control.hold(DATA_PUT)
    async with AsyncCheckpoint(dest, transfer=transfer) as cp:
        assert await held_while(hold, 4, cp.save, write_tree(tmp_path / "src", files)) == 4
    assert s3_control.max_in_flight <= 4
    assert len(s3_control.matching(DATA_PUT)) == requests

    s3_control.reset()
    hold = s3_control.hold(DATA_GET)
    restored: list[dict[str, bytes]] = []

    async def restore() -> None:
        restored.append(await restore_all(dest, tmp_path / "out", transfer=transfer))

    assert await held_while(hold, 4, restore) == 4
    assert s3_control.max_in_flight <= 4
    assert restored == [files]
    assert len(s3_control.matching(DATA_GET)) == requests


async def test_memory_bound_limits_parts_in_flight(s3_control, bucket, tmp_path, big):
    parts = {"multipart_threshold": 5 * MiB, "part_size": 5 * MiB, "max_concurrency": 8}
    hold = s3_control.hold(UPLOAD_PART)
    async with AsyncCheckpoint(f"s3://{bucket}/a", transfer=TransferConfig(**parts)) as cp:
        assert await held_while(hold, 3, cp.save, big) == 3  # unbounded by memory, all 3 overlap

    s3_control.reset()
    hold = s3_control.hold(UPLOAD_PART)
    watch = s3_control.watch(UPLOAD_PART)
    bounded = TransferConfig(**parts, max_buffer_bytes=5 * MiB)  # room for one part
    async with AsyncCheckpoint(f"s3://{bucket}/b", transfer=bounded) as cp:
        assert await held_while(hold, 1, cp.save, big) == 1
    assert watch.max_in_flight == 1
    assert len(s3_control.matching(UPLOAD_PART)) == 3
    assert await restore_all(f"s3://{bucket}/b", tmp_path / "out") == {"big.bin": big.read_bytes()}


async def test_memory_bound_limits_small_files_in_flight(s3_control, bucket, tmp_path):
    files = {f"f{i:02d}.bin": os.urandom(100_000) for i in range(12)}
    hold = s3_control.hold(DATA_PUT)
    watch = s3_control.watch(DATA_PUT)
    bounded = TransferConfig(max_buffer_bytes=200_000, **OBJECTS)  # room for two files
    async with AsyncCheckpoint(f"s3://{bucket}/cp", transfer=bounded) as cp:
        with anyio.fail_after(60):
            assert await held_while(hold, 2, cp.save, write_tree(tmp_path / "src", files)) == 2
    assert watch.max_in_flight <= 2
    assert await restore_all(f"s3://{bucket}/cp", tmp_path / "out") == files


async def test_one_slot_and_one_part_of_memory_still_save_big_and_small_files(
    s3_control, bucket, tmp_path
):
    # The tightest settings: a part needs the whole byte budget while it holds the only
    # request slot, so nothing may hold bytes while it waits for a slot.
    files = {"a.bin": os.urandom(12 * MiB), **{f"b{i}.bin": os.urandom(1000) for i in range(4)}}
    tight = TransferConfig(max_concurrency=1, multipart_threshold=5 * MiB, part_size=5 * MiB)
    async with AsyncCheckpoint(f"s3://{bucket}/cp", transfer=tight) as cp:
        with anyio.fail_after(30):
            await cp.save(write_tree(tmp_path / "src", files))
    assert await restore_all(f"s3://{bucket}/cp", tmp_path / "out") == files


async def test_a_cancelled_save_gives_back_the_memory_it_held(s3_control, bucket, tmp_path):
    # Cancelled while its files wait for room in the byte budget, a save gives back what
    # it holds, or the next save on the same checkpoint waits forever.
    sizes = {"a.bin": 150_000, "b.bin": 100_000, "c.bin": 100_000, "d.bin": 150_000}
    files = {name: os.urandom(size) for name, size in sizes.items()}
    src = write_tree(tmp_path / "src", files)
    bounded = TransferConfig(max_buffer_bytes=250_000, **OBJECTS)  # room for a and b at most
    async with AsyncCheckpoint(f"s3://{bucket}/cp", transfer=bounded) as cp:
        # a's and b's PUTs keep their bytes, so c and d wait for room
        await cancelled_while_held(s3_control, DATA_PUT, 2, cp.save, src)
        with anyio.fail_after(60):
            await cp.save(src)
    assert await restore_all(f"s3://{bucket}/cp", tmp_path / "out") == files


def small_files(count: int) -> dict[str, bytes]:
    return {f"d{i % 5}/f{i:03d}.bin": os.urandom(1000 + i) for i in range(count)}


async def test_small_files_read_in_batches_still_fill_the_window(s3_control, bucket, tmp_path):
    # Small files for S3 are read several per worker-thread call; held by the server,
    # their PUTs still pile up to max_concurrency (64), and never beyond.
    files = small_files(200)
    hold = s3_control.hold(DATA_PUT)
    watch = s3_control.watch(DATA_PUT)
    async with AsyncCheckpoint(f"s3://{bucket}/cp", transfer=TransferConfig(**OBJECTS)) as cp:
        assert await held_while(hold, 64, cp.save, write_tree(tmp_path / "src", files)) == 64
    assert watch.max_in_flight <= 64
    assert len(s3_control.matching(DATA_PUT)) == len(files)
    assert await restore_all(f"s3://{bucket}/cp", tmp_path / "out") == files


async def test_a_cancelled_save_of_small_files_gives_back_its_request_slots(
    s3_control, bucket, tmp_path
):
    # Batches of small files hold a request slot per file while they wait for room in the
    # byte budget. Cancelled then, a save gives every slot back: the next save on the same
    # checkpoint still gets 64 PUTs in flight.
    waiting = write_tree(
        tmp_path / "waiting", {f"f{i:03d}": os.urandom(64 * 1024) for i in range(200)}
    )
    files = small_files(200)
    bounded = TransferConfig(max_buffer_bytes=2 * MiB, **OBJECTS)  # 32 64 KiB files at once
    async with AsyncCheckpoint(f"s3://{bucket}/cp", transfer=bounded) as cp:
        # 32 PUTs hold the whole byte budget; the batches behind them wait for it
        await cancelled_while_held(s3_control, DATA_PUT, 32, cp.save, waiting)
        hold = s3_control.hold(DATA_PUT)
        assert await held_while(hold, 64, cp.save, write_tree(tmp_path / "src", files)) == 64
    assert await restore_all(f"s3://{bucket}/cp", tmp_path / "out") == files


@pytest.mark.parametrize(
    ("transfer", "held"),
    [
        (TransferConfig(**OBJECTS), 32),  # the last file is read after 64 PUTs are answered
        (TransferConfig(max_concurrency=2, pack_size=4000), 2),  # packs of 3, 2 at a time
    ],
    ids=["objects", "packs"],
)
async def test_a_small_file_cut_short_during_a_save_fails_it_and_keeps_the_last_version(
    s3_control, bucket, tmp_path, transfer, held
):
    dest = f"s3://{bucket}/cp"
    files = small_files(200)
    src = write_tree(tmp_path / "src", files)
    last = src / "d4/f199.bin"
    errors: list[CheckpointError] = []
    async with AsyncCheckpoint(dest, transfer=transfer) as cp:
        await cp.write(b"version 1")
        hold = s3_control.hold(DATA_PUT)

        async def save() -> None:
            try:
                await cp.save(src)
            except CheckpointError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(save)
            try:
                assert await anyio.to_thread.run_sync(hold.wait_for, held)
                last.write_bytes(b"cut")
            finally:
                hold.release(forward=True)
    assert len(errors) == 1
    assert f"{last} changed while being saved (expected 1199 bytes, read 3)" in str(errors[0])
    async with AsyncCheckpoint(f"s3://{bucket}/unused", dest) as reader:
        assert await reader.read() == b"version 1"


async def test_large_file_goes_multipart_within_the_same_budget(s3_control, bucket, tmp_path, big):
    transfer = TransferConfig(max_concurrency=3, multipart_threshold=5 * MiB, part_size=5 * MiB)
    src = tmp_path / "src"
    files = {f"small{i}.txt": f"small {i}".encode() for i in range(6)}
    write_tree(src, files)
    (src / "big.bin").write_bytes(big.read_bytes())
    dest = f"s3://{bucket}/cp"

    s3_control.delay(0.05)
    async with AsyncCheckpoint(dest, transfer=transfer) as cp:
        await cp.save(src)
    assert s3_control.matching(match("POST", param="uploads"))
    assert len(s3_control.matching(UPLOAD_PART)) >= 3
    assert s3_control.max_in_flight <= 3

    s3_control.reset()
    s3_control.delay(0.05)
    restored = await restore_all(dest, tmp_path / "out", transfer=transfer)
    assert s3_control.max_in_flight <= 3
    assert restored == {**files, "big.bin": big.read_bytes()}


async def test_failed_upload_part_raises_storage_error_and_aborts(
    s3_control, s3, bucket, tmp_path, big
):
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest, transfer=MULTIPART) as cp:
        await cp.write(b"version 1")
        s3_control.fail(UPLOAD_PART, status=400, code="InvalidRequest")
        with pytest.raises(StorageError) as info:
            await cp.save(big)
        assert info.value.__cause__ is not None
        assert "big.bin" in str(info.value)
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
        assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": b"version 1"}

        s3_control.reset()
        await cp.save(big)
    assert await restore_all(dest, tmp_path / "out2") == {
        "_dst_cp": b"version 1",
        "big.bin": big.read_bytes(),
    }


async def test_cancelled_save_leaves_no_multipart_upload_open(
    s3_control, s3, bucket, tmp_path, big
):
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest, transfer=MULTIPART) as cp:
        await cp.write(b"version 1")
        hold = s3_control.hold(UPLOAD_PART)
        with anyio.move_on_after(120) as guard:
            async with anyio.create_task_group() as tg:
                tg.start_soon(cp.save, big)
                assert await anyio.to_thread.run_sync(hold.wait_for, 1)
                tg.cancel_scope.cancel()
        assert not guard.cancelled_caught, "the cancelled save did not return"
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
        assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": b"version 1"}

        s3_control.reset()
        await cp.write(b"version 2")
    assert await restore_all(dest, tmp_path / "out2") == {"_dst_cp": b"version 2"}


async def test_two_writers_racing_on_one_dest_never_corrupt_it(location, tmp_path):
    """One writer per dest is supported; a racing second one must lose cleanly."""
    dest = location.new()
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"before")
    trees = {
        name: write_tree(tmp_path / name, {f"{name}/f{i}": os.urandom(500) for i in range(10)})
        for name in ("first", "second")
    }
    errors: dict[str, CheckpointError | None] = {}

    async def save(name: str) -> None:
        async with AsyncCheckpoint(dest) as cp:
            try:
                await cp.save(trees[name])
                errors[name] = None
            except CheckpointError as exc:
                errors[name] = exc

    async with anyio.create_task_group() as tg:
        for name in trees:
            tg.start_soon(save, name)
    lost = [name for name, exc in errors.items() if exc is not None]
    assert len(lost) <= 1, errors
    for name in lost:
        assert "another writer" in str(errors[name])
    expected = {"_dst_cp": b"before"}
    for name, root in trees.items():
        if name not in lost:
            expected.update(read_tree(root))
    assert await restore_all(dest, tmp_path / "out") == expected
    assert location.data_keys(dest) == location.referenced(dest)


@pytest.mark.parametrize(("budget", "in_flight"), [(None, 3), (10 * MiB, 2)], ids=["all", "two"])
async def test_big_restores_use_concurrent_ranged_gets_within_the_byte_budget(
    s3_control, bucket, tmp_path, big, budget, in_flight
):
    # A range counts against the budget from its GET until its bytes are on disk, so
    # the budget, not only max_concurrency, bounds the big bodies in flight at once.
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest, transfer=MULTIPART) as cp:
        await cp.save(big)
    s3_control.reset()

    def is_range(r: Request) -> bool:
        return r.method == "GET" and r.range.startswith("bytes=")

    hold = s3_control.hold(is_range)
    ranged = s3_control.watch(is_range)
    transfer = TransferConfig(
        multipart_threshold=5 * MiB, part_size=5 * MiB, max_buffer_bytes=budget
    )
    restored: list[dict[str, bytes]] = []

    async def restore() -> None:
        restored.append(await restore_all(dest, tmp_path / "out", transfer=transfer))

    assert await held_while(hold, in_flight, restore) == in_flight
    assert restored == [{"big.bin": big.read_bytes()}]
    assert len(s3_control.matching(is_range)) == 3
    assert ranged.max_in_flight <= in_flight


@pytest.mark.parametrize("threshold", [32 * MiB, 5 * MiB], ids=["whole", "ranges"])
async def test_restore_holds_pieces_not_whole_objects(tmp_path, threshold):
    # Local storage: tracemalloc counts the whole process, and the test S3 server runs in
    # it. The S3 path streams the same way; the benchmark measures its peak RSS.
    data = random.Random(5).randbytes(24 * MiB)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(data)
    transfer = TransferConfig(max_concurrency=4, multipart_threshold=threshold, part_size=5 * MiB)
    async with AsyncCheckpoint(tmp_path / "dest", transfer=transfer) as cp:
        await cp.save(tmp_path / "src")
    (tmp_path / "out").mkdir()
    async with AsyncCheckpoint(tmp_path / "other", tmp_path / "dest", transfer=transfer) as cp:
        tracemalloc.start()
        try:
            await cp.restore(tmp_path / "out")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert (tmp_path / "out" / "big.bin").read_bytes() == data
    # Whole bodies would be 24 MiB (one read) or 4 x 5 MiB (four ranges in flight).
    assert peak < 8 * MiB, f"a restore of 24 MiB held {peak / MiB:.1f} MiB at once"


async def test_connection_pool_is_at_least_max_concurrency(s3_control, bucket, tmp_path):
    # botocore's own default pool is 10 connections: 16 requests held by the server at
    # once, each on a connection of its own, prove ours is larger.
    files = {f"f{i:02d}": b"x" for i in range(32)}
    hold = s3_control.hold(DATA_PUT)
    transfer = TransferConfig(max_concurrency=16, **OBJECTS)
    async with AsyncCheckpoint(f"s3://{bucket}/cp", transfer=transfer) as cp:
        assert await held_while(hold, 16, cp.save, write_tree(tmp_path / "src", files)) == 16
    assert s3_control.max_in_flight <= 16
    assert await restore_all(f"s3://{bucket}/cp", tmp_path / "out") == files


class RecordingReader(io.RawIOBase):
    """A binary stream that remembers how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.asks: list[int] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        self.asks.append(len(buffer))
        return self._data.readinto(buffer)


async def test_file_objects_are_streamed_in_parts(s3_control, bucket, tmp_path):
    data = random.Random(7).randbytes(17 * MiB)
    reader = RecordingReader(data)
    transfer = TransferConfig(
        multipart_threshold=5 * MiB, part_size=5 * MiB, max_buffer_bytes=10 * MiB
    )
    dest = f"s3://{bucket}/cp"
    hold = s3_control.hold(UPLOAD_PART)
    async with AsyncCheckpoint(dest, transfer=transfer) as cp:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cp.save, reader)
            try:
                # read ahead as far as the memory bound allows: two parts, not a third
                assert await held_at_once(hold, 2) == 2
                read_while_two_parts_in_flight = sum(reader.asks)
            finally:
                hold.release(forward=True)
    assert read_while_two_parts_in_flight <= 10 * MiB < len(data)
    assert len(s3_control.matching(UPLOAD_PART)) == 4
    assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": data}


async def test_a_local_save_reads_one_small_file_at_a_time_per_worker_thread(tmp_path):
    # Local storage: small files are read and stored in batches, one file at a time in
    # each worker thread, so memory follows the threads, not the files waiting for one.
    files = {f"d{i % 4}/f{i:02d}.bin": random.Random(i).randbytes(MiB) for i in range(48)}
    src = write_tree(tmp_path / "src", files)
    transfer = TransferConfig(max_threads=2)
    async with AsyncCheckpoint(tmp_path / "dest", transfer=transfer) as cp:
        tracemalloc.start()
        try:
            await cp.save(src)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert await restore_all(str(tmp_path / "dest"), tmp_path / "out") == files
    assert peak < 8 * MiB, f"a save of 48 x 1 MiB with 2 threads held {peak / MiB:.1f} MiB"


async def test_a_local_save_with_one_slot_and_one_part_of_memory_stores_every_file(tmp_path):
    files = {
        "a.bin": os.urandom(12 * MiB),
        **{f"s/b{i}.bin": os.urandom(i * 997) for i in range(40)},
    }
    tight = TransferConfig(
        max_concurrency=1, multipart_threshold=5 * MiB, part_size=5 * MiB, max_buffer_bytes=5 * MiB
    )
    async with AsyncCheckpoint(tmp_path / "dest", transfer=tight) as cp:
        with anyio.fail_after(30):
            await cp.save(write_tree(tmp_path / "src", files))
    assert await restore_all(str(tmp_path / "dest"), tmp_path / "out") == files


async def test_a_multipart_threshold_under_a_mebibyte_still_stores_every_file(location, tmp_path):
    # Files up to 1 MiB are batched only when they are also under the threshold: a file
    # between the two goes up in parts, and the small files beside it are not left out.
    files = {
        "a.bin": os.urandom(600 * 1024),
        "b.bin": os.urandom(100 * 1024),
        "c/d.bin": os.urandom(700 * 1024),
        "c/e.bin": b"tiny",
    }
    dest = location.new()
    low = TransferConfig(multipart_threshold=512 * 1024)
    async with AsyncCheckpoint(dest, transfer=low) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    assert await restore_all(dest, tmp_path / "out", transfer=low) == files


async def test_a_stream_upload_cancelled_while_starting_its_multipart_leaves_none_open(
    s3_control, s3, bucket, tmp_path
):
    # A new checkpoint object guesses its dest is new and uploads a stream at once. The
    # listing then shows version 1, so that early upload is cancelled, here while its
    # CreateMultipartUpload is held by the server: the upload it started is aborted.
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"version 1")
    data = os.urandom(12 * MiB)
    create = s3_control.hold(lambda r: r.method == "POST" and r.has_param("uploads"))
    manifest_read = s3_control.watch(match("GET", path_contains="/.aiocheckpoint/manifests/v"))
    async with AsyncCheckpoint(dest, transfer=MULTIPART) as cp:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cp.save, io.BytesIO(data))
            try:
                assert await anyio.to_thread.run_sync(create.wait_for, 1, 60)
                assert await anyio.to_thread.run_sync(manifest_read.wait_answered, 1, 60)
            finally:
                create.release(forward=True)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": data}
