"""Packs: small files stored end to end in few objects, read back by ranges, kept full."""

from __future__ import annotations

import json
import os
import random

import anyio
import pytest
from _holds import cancelled_while_held, held_while
from _s3server import match
from _trees import read_tree, restore_all, write_tree
from conftest import Location

from aiocheckpoint import (
    AsyncCheckpoint,
    CorruptCheckpointError,
    TransferConfig,
)

pytestmark = pytest.mark.anyio

KiB = 1024
DATA_PUT = match("PUT", path_contains="/.aiocheckpoint/data/")
DATA_GET = match("GET", path_contains="/.aiocheckpoint/data/")


def small_files(count: int, size: int, seed: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"d{i % 7}/f{i:04d}.bin": rng.randbytes(size) for i in range(count)}


def stored_bytes(location: Location, dest: str) -> int:
    """What the data objects under ``dest`` hold, in all."""
    return sum(len(location.read(dest, key)) for key in location.data_keys(dest))


async def test_three_thousand_small_files_are_one_put_and_one_get(s3_control, s3, bucket, tmp_path):
    files = small_files(3000, 1000)
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    assert len(s3_control.matching(DATA_PUT)) == 1
    manifest = Location("s3", tmp_path, s3, bucket).manifest(dest)
    assert manifest["format"] == 2
    [(pack, size)] = manifest["packs"].items()
    assert size == 3000 * 1000
    assert {e["object"] for e in manifest["files"].values()} == {pack}
    s3_control.reset()
    assert await restore_all(dest, tmp_path / "out") == files
    assert len(s3_control.matching(DATA_GET)) == 1


async def test_the_byte_budget_bounds_packs_in_flight(s3_control, bucket, tmp_path):
    files = small_files(24, 50_000)  # packs of two files, 100,000 bytes each
    transfer = TransferConfig(pack_size=100_000, max_buffer_bytes=200_000)
    hold = s3_control.hold(DATA_PUT)
    watch = s3_control.watch(DATA_PUT)
    async with AsyncCheckpoint(f"s3://{bucket}/cp", transfer=transfer) as cp:
        with anyio.fail_after(60):
            assert await held_while(hold, 2, cp.save, write_tree(tmp_path / "src", files)) == 2
    assert watch.max_in_flight <= 2
    assert await restore_all(f"s3://{bucket}/cp", tmp_path / "out", transfer=transfer) == files


async def test_a_cancelled_save_of_packs_gives_back_its_slots_and_bytes(
    s3_control, bucket, tmp_path
):
    files = small_files(24, 50_000)
    src = write_tree(tmp_path / "src", files)
    transfer = TransferConfig(max_concurrency=4, pack_size=100_000, max_buffer_bytes=200_000)
    async with AsyncCheckpoint(f"s3://{bucket}/cp", transfer=transfer) as cp:
        # two packs' PUTs hold the whole byte budget
        await cancelled_while_held(s3_control, DATA_PUT, 2, cp.save, src)
        with anyio.fail_after(60):
            await cp.save(src)
    assert await restore_all(f"s3://{bucket}/cp", tmp_path / "out") == files


async def test_damaged_files_in_one_pack_are_each_named(location, tmp_path):
    dest = location.new()
    files = small_files(20, 100)
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    entries = location.manifest(dest)["files"]
    pack = ".aiocheckpoint/" + entries["d3/f0003.bin"]["object"]
    data = bytearray(location.read(dest, pack))
    for victim in ("d3/f0003.bin", "d5/f0012.bin"):
        data[entries[victim]["offset"] + 50] ^= 0xFF
    location.put(dest, pack, bytes(data))
    (tmp_path / "out").mkdir()
    async with AsyncCheckpoint(location.new(), dest) as cp:
        with pytest.raises(CorruptCheckpointError) as info:
            await cp.restore(tmp_path / "out")
    assert "d3/f0003.bin: checksum mismatch" in str(info.value)
    assert "d5/f0012.bin: checksum mismatch" in str(info.value)
    assert len(info.value.errors) == 2
    assert list((tmp_path / "out").iterdir()) == []


async def test_a_missing_pack_names_a_file_in_it(location, tmp_path):
    dest = location.new()
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", small_files(5, 100)))
    entry = location.manifest(dest)["files"]["d0/f0000.bin"]
    location.delete(dest, ".aiocheckpoint/" + entry["object"])
    (tmp_path / "out").mkdir()
    async with AsyncCheckpoint(location.new(), dest) as cp:
        with pytest.raises(
            CorruptCheckpointError, match=r"d\d/f000\d\.bin: object .*pack-0+1 is missing"
        ):
            await cp.restore(tmp_path / "out")


async def test_a_mostly_dead_pack_is_read_by_ranges_of_its_live_files(
    s3_control, s3, bucket, tmp_path
):
    # A manifest naming two files at either end of a 2.5 MiB pack (as an older version
    # could): two ranged GETs of their bytes, not the whole pack.
    dest = f"s3://{bucket}/cp"
    files = small_files(40, 64 * KiB)
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    store = Location("s3", tmp_path, s3, bucket)
    manifest = store.manifest(dest)
    first, last = "d0/f0000.bin", "d4/f0039.bin"
    manifest["files"] = {name: manifest["files"][name] for name in (first, last)}
    manifest["version"] = 2
    store.put(dest, ".aiocheckpoint/manifests/v0000000002.json", json.dumps(manifest).encode())
    store.delete(dest, ".aiocheckpoint/latest.json")
    s3_control.reset()
    assert await restore_all(dest, tmp_path / "out") == {n: files[n] for n in (first, last)}
    ranges = sorted(r.range for r in s3_control.matching(DATA_GET))
    entries = manifest["files"]
    assert ranges == sorted(
        f"bytes={e['offset']}-{e['offset'] + e['size'] - 1}" for e in entries.values()
    )


async def test_a_hundred_saves_keep_storage_and_restore_requests_bounded(
    s3_control, s3, bucket, tmp_path
):
    # 2,000 files of 2 KiB in packs of 256 KiB; each save changes 1% of them. Compaction
    # keeps what is stored under twice what is live, and a restore under twice the GETs
    # of a fresh save's.
    transfer = TransferConfig(pack_size=256 * KiB)
    files = small_files(2000, 2 * KiB)
    src = write_tree(tmp_path / "src", files)
    store = Location("s3", tmp_path, s3, bucket)
    fresh = f"s3://{bucket}/fresh"
    dest = f"s3://{bucket}/cp"
    rng = random.Random(1)
    async with AsyncCheckpoint(dest, transfer=transfer) as cp:
        await cp.save(src)
        for step in range(100):
            for name in rng.sample(sorted(files), 20):
                files[name] = rng.randbytes(2 * KiB)
                (src / name).write_bytes(files[name])
            await cp.save(src)
            if step == 0:  # one file changed of 2,000: at most a pack's worth stored
                manifest = store.manifest(dest)
                new = [k for k in manifest["packs"] if k.startswith("data/0000000002-")]
                assert sum(manifest["packs"][k] for k in new) <= 256 * KiB
    async with AsyncCheckpoint(fresh, transfer=transfer) as cp:
        await cp.save(src)
    live = 2000 * 2 * KiB
    assert stored_bytes(store, dest) <= 2 * live
    gets = {}
    for url in (fresh, dest):
        s3_control.reset()
        assert await restore_all(url, tmp_path / url.rsplit("/", 1)[1]) == files
        gets[url] = len(s3_control.matching(DATA_GET))
    assert gets[dest] <= 2 * gets[fresh], gets


async def test_a_checkpoint_of_one_object_per_file_restores_and_is_packed_by_the_next_save(
    location, tmp_path
):
    dest = location.new()
    files = small_files(30, 500)
    src = write_tree(tmp_path / "src", files)
    async with AsyncCheckpoint(dest, transfer=TransferConfig(pack_threshold=0)) as cp:
        await cp.save(src)
    manifest = location.manifest(dest)
    assert manifest["format"] == 1  # what earlier versions wrote, and read
    assert "packs" not in manifest
    assert await restore_all(dest, tmp_path / "out1") == files
    files["d0/f0000.bin"] = b"changed"
    (src / "d0/f0000.bin").write_bytes(b"changed")
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(src)
    manifest = location.manifest(dest)
    assert manifest["format"] == 2
    assert all("offset" in e for e in manifest["files"].values())
    assert len(location.data_keys(dest)) == 1  # the old objects collected
    assert await restore_all(dest, tmp_path / "out2") == files


async def test_files_above_the_threshold_stay_objects_of_their_own(location, tmp_path):
    dest = location.new()
    files = {"big.bin": os.urandom(300 * KiB), "a.txt": b"a", "b.txt": b"b"}
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    entries = location.manifest(dest)["files"]
    assert entries["big.bin"]["object"].endswith("/big.bin")
    assert "offset" not in entries["big.bin"]
    assert entries["a.txt"]["object"] == entries["b.txt"]["object"]
    assert (entries["a.txt"]["offset"], entries["b.txt"]["offset"]) == (0, 1)
    assert await restore_all(dest, tmp_path / "out") == files


async def test_local_restore_of_many_small_files_verifies_each(tmp_path):
    dest = tmp_path / "dest"
    files = small_files(1500, 100)
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    [pack] = [p for p in (dest / ".aiocheckpoint" / "data").rglob("pack-*")]
    assert pack.stat().st_size == 1500 * 100
    assert await restore_all(str(dest), tmp_path / "out") == files
    assert read_tree(tmp_path / "src") == files


async def test_a_restore_into_a_folder_with_files_keeps_them_and_replaces_the_saved_ones(
    location, tmp_path
):
    # Folders the target lacks move in whole; into those it has, file by file.
    dest = location.new()
    files = {"new/a.bin": b"a", "new/deep/b.bin": b"b", "old/c.bin": b"c", "top.bin": b"t"}
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    out = write_tree(tmp_path / "out", {"old/c.bin": b"stale", "old/mine.txt": b"mine"})
    async with AsyncCheckpoint(location.new(), dest) as cp:
        await cp.restore(out)
    assert read_tree(out) == {**files, "old/mine.txt": b"mine"}


async def test_files_only_earlier_saves_have_do_not_keep_dead_packs_alive(location, tmp_path):
    # Each save rewrites state.bin and adds a log, and the previous log leaves the
    # folder; the checkpoint keeps every log (saves merge). Each pack then holds one live
    # log beside a dead state.bin: compaction copies such files out of their packs.
    dest = location.new()
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(5)
    files: dict[str, bytes] = {}
    async with AsyncCheckpoint(dest) as cp:
        for step in range(30):
            (src / f"log_{step - 1:02d}.txt").unlink(missing_ok=True)
            files["state.bin"] = rng.randbytes(100 * KiB)
            files[f"log_{step:02d}.txt"] = b"step %d" % step
            write_tree(src, {k: files[k] for k in ("state.bin", f"log_{step:02d}.txt")})
            await cp.save(src)
    live = sum(len(data) for data in files.values())
    assert stored_bytes(location, dest) <= 2 * live
    assert len(location.data_keys(dest)) <= 2
    assert await restore_all(dest, tmp_path / "out") == files


async def test_empty_files_at_the_end_of_a_pack_need_no_request(s3_control, s3, bucket, tmp_path):
    dest = f"s3://{bucket}/cp"
    files = {"a.bin": b"a" * 100, "z-empty": b""}
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    store = Location("s3", tmp_path, s3, bucket)
    manifest = store.manifest(dest)
    assert manifest["files"]["z-empty"]["offset"] == 100  # the end of the pack
    manifest["files"] = {"z-empty": manifest["files"]["z-empty"]}  # as a later version could
    manifest["version"] = 2
    store.put(dest, ".aiocheckpoint/manifests/v0000000002.json", json.dumps(manifest).encode())
    store.delete(dest, ".aiocheckpoint/latest.json")
    s3_control.reset()
    assert await restore_all(dest, tmp_path / "out") == {"z-empty": b""}
    assert s3_control.matching(DATA_GET) == []


async def test_files_over_a_mebibyte_in_a_pack_are_streamed_into_place(location, tmp_path):
    # A writer with a high pack_threshold: big files in a pack come back a piece at a
    # time, from their offset, not whole in memory.
    dest = location.new()
    files = {f"f{i}.bin": random.Random(i).randbytes(1536 * KiB) for i in range(3)}
    files["small.txt"] = b"small"
    transfer = TransferConfig(pack_threshold=2 * 1024 * KiB, pack_size=8 * 1024 * KiB)
    async with AsyncCheckpoint(dest, transfer=transfer) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    entries = location.manifest(dest)["files"]
    assert len({e["object"] for e in entries.values()}) == 1
    assert sorted(e["offset"] for e in entries.values())[1:] == [
        1536 * KiB,
        2 * 1536 * KiB,
        3 * 1536 * KiB,
    ]
    assert await restore_all(dest, tmp_path / "out") == files
