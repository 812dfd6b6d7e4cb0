"""One conformance suite for every storage backend, through the protocol the engine uses."""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import AsyncIterator

import pytest
from anyio import CapacityLimiter

from aiocheckpoint import CheckpointError
from aiocheckpoint.storage import FileCopy, S3Options, Storage, Storages, parse_location

pytestmark = pytest.mark.anyio
LOCATIONS = ("local", "s3", "s3rver")  # s3rver too: see conftest.pytest_generate_tests
MiB = 1024 * 1024


@pytest.fixture
async def store(location) -> AsyncIterator[Storage]:
    storages = Storages(S3Options(), CapacityLimiter(4))
    yield await storages.open(parse_location(location.new(), "test"))
    await storages.aclose()


async def put(store: Storage, key: str, data: bytes) -> None:
    await store.put(key, io.BytesIO(data), zlib.crc32(data))


async def test_objects_round_trip_whole_and_in_ranges(store):
    await put(store, "a/b.bin", b"0123456789")
    await put(store, "a/empty", b"")
    assert await store.get("a/b.bin") == b"0123456789"
    assert await store.get("a/b.bin", 3, 4) == b"3456"
    assert await store.get("a/b.bin", 0, 1) == b"0"  # s3rver sends it all: 1 byte is kept
    assert await store.get("a/b.bin", 8) == b"89"
    assert await store.get("a/empty") == b""
    listed = {(o.key, o.size) for o in await store.list_objects("a/")}
    assert listed == {("a/b.bin", 10), ("a/empty", 0)}


async def test_files_round_trip_a_batch_at_a_time(store, tmp_path):
    data = {f"f{i}.bin": bytes([i]) * (i * 1000) for i in range(5)}
    for name, content in data.items():
        (tmp_path / name).write_bytes(content)
    sent = [FileCopy(f"d/{name}", str(tmp_path / name), len(c)) for name, c in data.items()]
    assert await store.put_files(sent) == [zlib.crc32(c) for c in data.values()]
    back = [
        FileCopy(f"d/{name}", str(tmp_path / "out" / "sub" / name), len(c))
        for name, c in data.items()
    ]
    got = await store.get_files([*back, FileCopy("d/missing", str(tmp_path / "no"), 1)])
    assert got == [(len(c), zlib.crc32(c)) for c in data.values()] + [None]
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "sub").iterdir()} == data
    assert not (tmp_path / "no").exists()


async def test_an_object_longer_than_expected_is_counted_not_written(store, tmp_path):
    await put(store, "long", b"0123456789")
    [(size, _)] = await store.get_files([FileCopy("long", str(tmp_path / "short"), 4)])
    assert size > 4
    assert not (tmp_path / "short").exists()


async def test_a_file_changed_while_stored_fails_naming_it(store, tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="changed while being saved"):
        await store.put_files([FileCopy("f", str(tmp_path / "f"), 10)])


async def test_get_into_copies_ranges_and_reports_a_longer_object(store, tmp_path):
    await put(store, "a/b.bin", b"0123456789")
    fd = os.open(tmp_path / "t", os.O_RDWR | os.O_CREAT)
    try:
        assert await store.get_into("a/b.bin", fd, 3, 5) == (zlib.crc32(b"34567"), 5)
        assert await store.get_into("a/b.bin", fd, 0, 1) == (zlib.crc32(b"0"), 1)  # s3rver
        assert await store.get_into("a/b.bin", fd, 0, 10, whole=True) == (
            zlib.crc32(b"0123456789"),
            10,
        )
        crc, got = await store.get_into("a/b.bin", fd, 0, 4, whole=True)
        assert got > 4
        with pytest.raises(FileNotFoundError, match="not-there"):
            await store.get_into("not-there", fd, 0, 4, whole=True)
    finally:
        os.close(fd)
    assert (tmp_path / "t").read_bytes() == b"0123456789"


async def test_list_dirs_names_the_folders_directly_under_a_prefix(store):
    for key in ("d/a/1", "d/a/sub/2", "d/b/3", "d/file", "e/4"):
        await put(store, key, b"x")
    assert sorted(await store.list_dirs("d/")) == ["d/a/", "d/b/"]
    assert await store.list_dirs("d/a/") == ["d/a/sub/"]
    assert await store.list_dirs("nothing/") == []


async def test_missing_key_is_file_not_found_naming_it(store):
    await put(store, "there", b"x")
    with pytest.raises(FileNotFoundError, match="not-there"):
        await store.get("not-there")
    assert await store.get_files([FileCopy("not-there", "unused", 1)]) == [None]


@pytest.mark.needs("conditional")
async def test_exclusive_create_never_replaces(store):
    await store.put_exclusive("m.json", b"first")
    with pytest.raises(FileExistsError):
        await store.put_exclusive("m.json", b"second")
    assert await store.get("m.json") == b"first"


async def test_delete_is_idempotent_and_lists_reflect_it(store):
    await put(store, "d/1", b"1")
    await put(store, "d/2", b"2")
    await store.delete(["d/1", "d/missing"])
    assert [o.key for o in await store.list_objects("d/")] == ["d/2"]


async def test_multipart_parts_in_any_order_make_one_object(store):
    parts = [bytes([i]) * (5 * MiB) for i in range(2)] + [b"tail"]
    upload = await store.start_multipart("big")
    offsets = [0, 5 * MiB, 10 * MiB]
    for number in (3, 1, 2):
        data = parts[number - 1]
        await upload.put_part(number, offsets[number - 1], io.BytesIO(data), zlib.crc32(data))
    await upload.complete()
    assert await store.get("big") == b"".join(parts)


@pytest.mark.needs("list_uploads")
async def test_unfinished_uploads_are_listed_until_completed(store, location):
    upload = await store.start_multipart("d/big")
    listed = [key for key, _ in await store.list_uploads("d/")]
    # local: an unfinished upload is a temp file, listed (and collected) as a file
    assert listed == ([] if location.kind == "local" else ["d/big"])
    await upload.put_part(1, 0, io.BytesIO(b"tail"), zlib.crc32(b"tail"))
    await upload.complete()
    assert await store.list_uploads("d/") == []


@pytest.mark.needs("abort", "list_uploads")
async def test_aborted_multipart_leaves_nothing(store):
    upload = await store.start_multipart("gone")
    data = b"x" * (5 * MiB)
    await upload.put_part(1, 0, io.BytesIO(data), zlib.crc32(data))
    await upload.abort()
    await upload.abort()  # twice is harmless
    await store.sync()
    assert [o.key for o in await store.list_objects("")] == []
    assert await store.list_uploads("") == []
    with pytest.raises(FileNotFoundError):
        await store.get("gone")
