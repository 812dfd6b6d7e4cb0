"""One conformance suite for every storage backend, through the protocol the engine uses."""

from __future__ import annotations

import io
import zlib
from collections.abc import AsyncIterator

import pytest
from anyio import CapacityLimiter

from aiocheckpoint.storage import S3Options, Storage, Storages, parse_location

pytestmark = pytest.mark.anyio
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
    assert await store.get("a/b.bin", 8) == b"89"
    assert await store.get("a/empty") == b""
    listed = {(o.key, o.size) for o in await store.list_objects("a/")}
    assert listed == {("a/b.bin", 10), ("a/empty", 0)}


async def read_stream(store: Storage, key: str, *args: int) -> tuple[int, list[bytes]]:
    async with store.reader(key, *args) as body:
        pieces = []
        while piece := await body.read(3):
            assert len(piece) <= 3
            pieces.append(piece)
        assert await body.read(3) == b""  # and it stays at the end
        return body.size, pieces


async def test_reader_streams_what_get_returns(store):
    await put(store, "a/b.bin", b"0123456789")
    size, pieces = await read_stream(store, "a/b.bin")
    assert (size, b"".join(pieces)) == (10, b"0123456789")
    size, pieces = await read_stream(store, "a/b.bin", 3, 5)
    assert (size, b"".join(pieces)) == (5, b"34567")
    size, pieces = await read_stream(store, "a/b.bin", 8)
    assert (size, b"".join(pieces)) == (2, b"89")


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
    with pytest.raises(FileNotFoundError, match="not-there"):
        await read_stream(store, "not-there")


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
    assert await store.list_uploads("") == []


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
