"""Storage tampered with behind the library's back is detected, named, and contained."""

# Blocking file work in these async tests is test setup, not library code.

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from _trees import read_tree, write_tree

from aiocheckpoint import AsyncCheckpoint, CorruptCheckpointError, TransferConfig

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
FILES = {
    "small.bin": b"small file contents",
    "sub/large.bin": bytes(range(256)) * (6 * MiB // 256),  # fetched in ranges
    "sub/mid.bin": bytes(range(255, -1, -1)) * (3 * MiB // 256),  # one GET, in pieces
    "zzz/last.txt": b"the end",
}


async def saved(location, tmp_path: Path) -> str:
    dest = location.new()
    async with AsyncCheckpoint(dest, transfer=TRANSFER) as cp:
        await cp.save(write_tree(tmp_path / "src", FILES))
    return dest


async def failed_restore(location, src: str, out: Path) -> CorruptCheckpointError:
    out.mkdir(parents=True)
    async with AsyncCheckpoint(location.new(), src, transfer=TRANSFER) as cp:
        with pytest.raises(CorruptCheckpointError) as info:
            await cp.restore(out)
    for rel, data in read_tree(out).items():
        assert FILES.get(rel) == data, f"{rel!r} left in the restore folder after a failed restore"
    return info.value


def commit_by_hand(location, dest: str, files: dict) -> str:
    """Write a manifest one version above the newest, as if a save had committed it."""
    version = int(location.manifests(dest)[-1].rsplit("v", 1)[1].split(".")[0]) + 1
    key = f".aiocheckpoint/manifests/v{version:010d}.json"
    doc = {"format": 1, "version": version, "created": "2024-01-01T00:00:00+00:00", "files": files}
    location.put(dest, key, json.dumps(doc).encode())
    return key


VICTIMS = ["small.bin", "sub/mid.bin", "sub/large.bin"]


@pytest.mark.parametrize("victim", VICTIMS)
async def test_deleted_object_is_reported_by_path(location, tmp_path, victim):
    dest = await saved(location, tmp_path)
    entry = location.manifest(dest)["files"][victim]
    location.delete(dest, ".aiocheckpoint/" + entry["object"])
    error = await failed_restore(location, dest, tmp_path / "out")
    assert victim in str(error)


def where(entry: dict) -> tuple[str, int, int]:
    """The key holding a manifest entry's bytes, and their first byte and end there (the
    small files are in a pack)."""
    start = entry.get("offset", 0)
    return ".aiocheckpoint/" + entry["object"], start, start + entry["size"]


@pytest.mark.parametrize("victim", VICTIMS)
async def test_same_size_different_bytes_is_reported_by_path(location, tmp_path, victim):
    dest = await saved(location, tmp_path)
    key, start, end = where(location.manifest(dest)["files"][victim])
    tampered = bytearray(location.read(dest, key))
    tampered[(start + end) // 2] ^= 0xFF
    location.put(dest, key, bytes(tampered))
    error = await failed_restore(location, dest, tmp_path / "out")
    assert victim in str(error)


@pytest.mark.parametrize("victim", VICTIMS)
async def test_truncated_object_is_reported_by_path(location, tmp_path, victim):
    dest = await saved(location, tmp_path)
    key, _, end = where(location.manifest(dest)["files"][victim])
    location.put(dest, key, location.read(dest, key)[: end - 1])
    error = await failed_restore(location, dest, tmp_path / "out")
    assert victim in str(error)


@pytest.mark.parametrize("victim", ["sub/mid.bin"])
async def test_object_longer_than_recorded_is_reported_by_path(location, tmp_path, victim):
    # Objects fetched whole; a ranged fetch (of a big file, or of files in a pack) reads
    # only the recorded bytes, and checks them.
    dest = await saved(location, tmp_path)
    key = ".aiocheckpoint/" + location.manifest(dest)["files"][victim]["object"]
    location.put(dest, key, location.read(dest, key) + b"extra")
    error = await failed_restore(location, dest, tmp_path / "out")
    assert victim in str(error)
    assert "holds more" in str(error)


@pytest.mark.parametrize("evil", ["../evil", "sub/../../evil", "/abs"])
async def test_manifest_path_escaping_the_restore_folder_is_refused(location, tmp_path, evil):
    dest = await saved(location, tmp_path)
    files = location.manifest(dest)["files"]
    if evil == "/abs":
        evil = (tmp_path / "abs_evil").as_posix()
    commit_by_hand(location, dest, {**files, evil: files["small.bin"]})
    parent = tmp_path / "restore"
    error = await failed_restore(location, dest, parent / "into")
    assert evil in str(error)
    assert [p.name for p in parent.iterdir()] == ["into"]
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "abs_evil").exists()


async def test_manifest_naming_a_path_as_file_and_folder_is_refused(location, tmp_path):
    dest = await saved(location, tmp_path)
    files = location.manifest(dest)["files"]
    commit_by_hand(location, dest, {**files, "sub/large.bin/inner": files["small.bin"]})
    error = await failed_restore(location, dest, tmp_path / "out")
    assert "'sub/large.bin' both as a file and as a folder" in str(error)


async def test_plain_prefix_holding_a_key_and_keys_under_it_is_refused(s3, bucket, tmp_path):
    for key in ("plain/a", "plain/a/b"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    out = tmp_path / "out"
    out.mkdir()
    async with AsyncCheckpoint(tmp_path / "dest", f"s3://{bucket}/plain") as cp:
        with pytest.raises(CorruptCheckpointError, match=f"s3://{bucket}/plain/a and keys"):
            await cp.restore(out)
    assert list(out.iterdir()) == []


async def test_manifest_object_outside_the_metadata_folder_is_refused(location, tmp_path):
    dest = await saved(location, tmp_path)
    secret = b"a file next to the checkpoint, not part of it"
    location.put(dest, "secret.txt", secret)
    files = location.manifest(dest)["files"]
    stolen = {
        "object": "../secret.txt",
        "size": len(secret),
        "checksum": f"crc32:{zlib.crc32(secret):08x}",
    }
    commit_by_hand(location, dest, {**files, "stolen.txt": stolen})
    await failed_restore(location, dest, tmp_path / "out")


async def test_unreadable_newest_manifest_is_reported(location, tmp_path):
    dest = await saved(location, tmp_path)
    version = int(location.manifests(dest)[-1].rsplit("v", 1)[1].split(".")[0]) + 1
    name = f"v{version:010d}.json"
    location.put(dest, f".aiocheckpoint/manifests/{name}", b'{"format": 1, "files": {tru')
    error = await failed_restore(location, dest, tmp_path / "out")
    assert name in str(error)


async def test_plain_prefix_with_an_escaping_key_is_refused(s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="plain/ok.txt", Body=b"fine")
    s3.put_object(Bucket=bucket, Key="plain/a/../../evil", Body=b"escape")
    out = tmp_path / "box" / "out"
    out.mkdir(parents=True)
    async with AsyncCheckpoint(f"s3://{bucket}/unused", f"s3://{bucket}/plain") as cp:
        with pytest.raises(CorruptCheckpointError, match=r"a/\.\./\.\./evil"):
            await cp.restore(out)
    assert sorted(p.name for p in (tmp_path / "box").rglob("*")) == ["out"]


async def test_a_local_restore_names_every_damaged_small_file(tmp_path):
    # Unpacked, local storage copies small files in batches of up to 8, each in one
    # worker-thread call (more/f00 to more/f07 are the first); a damaged file does not
    # hide the ones after it in its batch. (test_packs.py: the same in a pack.)
    dest = str(tmp_path / "dest")
    files = {**FILES, **{f"more/f{i:02d}.txt": b"%d" % i for i in range(20)}}
    objects = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB, pack_threshold=0)
    async with AsyncCheckpoint(dest, transfer=objects) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    entries = json.loads(
        max((tmp_path / "dest" / ".aiocheckpoint" / "manifests").iterdir()).read_bytes()
    )["files"]
    data = tmp_path / "dest" / ".aiocheckpoint"
    (data / entries["more/f03.txt"]["object"]).unlink()
    (data / entries["more/f06.txt"]["object"]).write_bytes(b"xy")
    one_thread = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB, max_threads=1)
    (tmp_path / "out").mkdir()
    async with AsyncCheckpoint(tmp_path / "other", dest, transfer=one_thread) as cp:
        with pytest.raises(CorruptCheckpointError) as info:
            await cp.restore(tmp_path / "out")
    assert "more/f03.txt" in str(info.value)
    assert "more/f06.txt" in str(info.value)
    assert len(info.value.errors) == 2
