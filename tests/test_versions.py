"""The versions API, through both checkpoint classes, on local folders and moto: list,
inspect, verify, restore an older version, prune, collect crashed saves' leftovers, and
add up what is stored."""

from __future__ import annotations

import inspect
import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from _s3server import match
from _trees import read_tree, write_tree
from conftest import Location

from aiocheckpoint import (
    AsyncCheckpoint,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    SyncCheckpoint,
    TransferConfig,
)

MiB = 1024 * 1024
#: Files above 1 MiB are stored alone (multipart above 5 MiB); below 64 KiB, in packs.
CONFIG = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)


def version_files(i: int) -> dict[str, bytes]:
    """Version ``i`` of a small model: a packed file that changes every time, one that
    never does, and a file stored alone that changes at version 2."""
    return {
        "step.txt": f"step {i}".encode(),
        "config.json": b'{"lr": 0.1}',
        "weights.bin": bytes([min(i, 2)]) * (3 * MiB),
    }


def three_versions(dest: str, tmp_path: Path, **kwargs: object) -> list[dict[str, bytes]]:
    saved = []
    with SyncCheckpoint(dest, transfer=CONFIG, keep_versions=10, **kwargs) as cp:
        for i in (1, 2, 3):
            files = version_files(i)
            cp.save(write_tree(tmp_path / f"v{i}", files))
            saved.append(files)
    return saved


def test_versions_lists_each_commit_oldest_first(location, tmp_path):
    dest = location.new()
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    with SyncCheckpoint(dest) as cp:
        assert cp.versions() == []
    saved = three_versions(dest, tmp_path)
    with SyncCheckpoint(dest) as cp:
        listed = cp.versions()
    assert [v.version for v in listed] == [1, 2, 3]
    assert [v.files for v in listed] == [3, 3, 3]
    assert [v.bytes for v in listed] == [sum(map(len, f.values())) for f in saved]
    for v in listed:
        assert v.created is not None and before <= v.created <= datetime.now(timezone.utc)
        assert v.created.utcoffset() == timedelta(0)
    assert listed[0].created <= listed[1].created <= listed[2].created  # type: ignore[operator]


def test_inspect_gives_each_files_size_and_checksum(location, tmp_path):
    dest = location.new()
    saved = three_versions(dest, tmp_path)
    with SyncCheckpoint(dest) as cp:
        newest = cp.inspect()
        first = cp.inspect(1)
        with pytest.raises(CheckpointNotFoundError, match=r"no version 9 at .*cp-"):
            cp.inspect(9)
        with pytest.raises(ValueError, match="version"):
            cp.inspect(0)
    assert newest.version == 3 and first.version == 1
    for got, files in ((newest, saved[2]), (first, saved[0])):
        assert [f.path for f in got.files] == sorted(files)
        for f in got.files:
            assert f.size == len(files[f.path])
            assert f.checksum == f"crc32:{zlib.crc32(files[f.path]):08x}"


def test_an_empty_location_has_no_checkpoint_to_inspect(location):
    with SyncCheckpoint(location.new()) as cp:
        for call in (cp.inspect, cp.verify, cp.usage, cp.gc, lambda: cp.prune(1)):
            with pytest.raises(CheckpointNotFoundError, match="no checkpoint at"):
                call()


def test_restore_and_read_an_older_version(location, tmp_path):
    dest = location.new()
    saved = three_versions(dest, tmp_path)
    with SyncCheckpoint(location.new(), dest) as cp:
        for i in (1, 2):
            out = tmp_path / f"out{i}"
            out.mkdir()
            assert cp.restore(out, version=i) == out
            assert read_tree(out) == saved[i - 1]
        private = cp.restore(version=1)
        newest = cp.restore()
        assert private is not None and newest is not None and private != newest
        assert read_tree(private) == saved[0] and read_tree(newest) == saved[2]
        assert cp.restore(version=1) == private  # downloaded once, as restore() is
        with pytest.raises(CheckpointNotFoundError, match="no version 4"):
            cp.restore(version=4)
        with pytest.raises(ValueError, match="out1 already holds version 1, restored by"):
            cp.restore(tmp_path / "out1", version=3)  # the two would mix
        assert read_tree(tmp_path / "out1") == saved[0]
    with SyncCheckpoint(dest) as cp:  # no checkpoint_src: nothing to restore a version of
        with pytest.raises(ValueError, match="no checkpoint_src"):
            cp.read(version=1)
    blob = location.new()
    with SyncCheckpoint(blob, blob, keep_versions=2) as cp:
        cp.write(b"first")
        cp.write(b"second")
        assert cp.read(version=1) == b"first"
        assert cp.read() == b"second"


def corrupt(location: Location, dest: str, name: str, how: str) -> str:
    """Damage the object holding ``name`` in the newest version; its key."""
    entry = location.manifest(dest)["files"][name]
    key = ".aiocheckpoint/" + entry["object"]
    if how == "delete":
        location.delete(dest, key)
        return key
    data = bytearray(location.read(dest, key))
    data[entry.get("offset", 0)] ^= 0xFF  # the same size, one byte of this file flipped
    location.put(dest, key, bytes(data))
    return key


@pytest.mark.parametrize("how", ["flip", "delete"])
def test_verify_names_each_bad_file_and_writes_nothing(location, tmp_path, how):
    dest = location.new()
    three_versions(dest, tmp_path)
    with SyncCheckpoint(dest) as cp:
        good = cp.verify()
        assert good.ok and good.version == 3 and good.files == 3
        assert good.bytes == sum(map(len, version_files(3).values()))
        key = corrupt(location, dest, "weights.bin", how)
        packed = corrupt(location, dest, "step.txt", "flip")
        keys = location.keys(dest)
        bad = cp.verify()
        assert location.keys(dest) == keys
        assert cp.verify(1).ok  # version 1 has weights and a step.txt of its own
    assert not bad.ok
    assert [b.path for b in bad.bad] == ["step.txt", "weights.bin"]  # not config.json
    step, weights = bad.bad
    assert step.object.endswith(packed) and "checksum mismatch" in step.reason
    assert weights.object.endswith(key)
    assert ("missing" if how == "delete" else "checksum mismatch") in weights.reason


def test_verify_finds_an_object_of_the_wrong_size(location, tmp_path):
    dest = location.new()
    three_versions(dest, tmp_path)
    entry = location.manifest(dest)["files"]["weights.bin"]
    key = ".aiocheckpoint/" + entry["object"]
    location.put(dest, key, location.read(dest, key) + b"more")
    with SyncCheckpoint(dest) as cp:
        (bad,) = cp.verify().bad
    assert bad.path == "weights.bin" and f"expected {3 * MiB} bytes" in bad.reason


def test_prune_keeps_the_newest_and_what_they_still_name(location, tmp_path):
    dest = location.new()
    saved = three_versions(dest, tmp_path)
    with SyncCheckpoint(dest) as cp:
        keys = location.keys(dest)
        plan = cp.prune(1, dry_run=True)
        assert location.keys(dest) == keys
        done = cp.prune(1)
        with pytest.raises(ValueError, match="keep"):
            cp.prune(0)
        assert [v.version for v in cp.versions()] == [3]
    assert plan.dry_run and not done.dry_run
    assert plan.versions == done.versions == (1, 2)
    assert plan.objects == done.objects and plan.bytes == done.bytes > 0
    gone = sorted(url.removeprefix(f"{dest}/") for url in done.objects)
    assert sorted(set(keys) - set(location.keys(dest))) == gone
    # weights.bin of version 2 is version 3's too: it stays
    assert location.referenced(dest) <= set(location.keys(dest))
    with SyncCheckpoint(location.new(), dest) as cp:
        out = cp.restore()
        assert out is not None and read_tree(out) == saved[2]


def crashed_leftovers(location: Location, dest: str) -> tuple[set[str], set[str]]:
    """What a killed save left below the newest version, and what a save in flight above
    it has written: (keys gc may take, keys it must leave)."""
    old = {".aiocheckpoint/data/0000000002-deadbeef0000/weights.bin"}
    old.add(".aiocheckpoint/manifests/.tmp-0123456789ab-v0000000002.json")  # a lost commit
    flying = {".aiocheckpoint/data/0000000004-feedface0000/weights.bin"}
    flying.add(".aiocheckpoint/manifests/.tmp-0123456789ab-v0000000004.json")  # committing
    for key in old | flying:
        location.put(dest, key, b"left behind")
    return old, flying


def test_gc_removes_crashed_saves_leftovers_and_nothing_else(location, s3, tmp_path):
    dest = location.new()
    saved = three_versions(dest, tmp_path)
    old, flying = crashed_leftovers(location, dest)
    uploads = []
    if location.kind == "s3":
        prefix = dest.removeprefix(f"s3://{location.bucket}/")
        for key in {k for k in old | flying if "/data/" in k}:
            made = s3.create_multipart_upload(Bucket=location.bucket, Key=f"{prefix}/{key}.part")
            uploads.append((f"{key}.part", made["UploadId"]))
    keys = location.keys(dest)
    with SyncCheckpoint(dest) as cp:
        plan = cp.gc(dry_run=True)
        assert location.keys(dest) == keys
        done = cp.gc()
        assert [v.version for v in cp.versions()] == [1, 2, 3]
    assert plan.objects == done.objects
    assert sorted(url.removeprefix(f"{dest}/") for url in done.objects) == sorted(old)
    assert set(location.keys(dest)) == set(keys) - old
    if location.kind == "s3":
        assert [u.rsplit("/", 1)[1] for u in done.uploads] == ["weights.bin.part"]
        assert "0000000002-deadbeef0000" in done.uploads[0]
        open_now = s3.list_multipart_uploads(Bucket=location.bucket).get("Uploads", [])
        assert [u["Key"].removeprefix(f"{prefix}/") for u in open_now] == [
            f"{k}.part" for k in flying if "/data/" in k
        ]
    for i, files in enumerate(saved, start=1):
        with SyncCheckpoint(location.new(), dest) as cp:
            out = cp.restore(version=i)
            assert out is not None and read_tree(out) == files


def test_usage_adds_up_what_prune_and_gc_would_free(location, tmp_path):
    dest = location.new()
    three_versions(dest, tmp_path)
    live = set(location.referenced(dest)) | {location.manifests(dest)[-1]}
    old, flying = crashed_leftovers(location, dest)
    with SyncCheckpoint(dest) as cp:
        use = cp.usage()
        keys = location.keys(dest)
        stored = sum(len(location.read(dest, k)) for k in keys)
        live |= {k for k in keys if k.endswith("latest.json")}
        assert use.stored_bytes == stored and use.objects == len(keys)
        assert use.live_bytes == sum(len(location.read(dest, k)) for k in live)
        assert (use.versions, use.newest) == (3, 3)
        freed = cp.prune(1).bytes + cp.gc().bytes
        assert use.reclaimable_bytes == freed > 0
        after = cp.usage()
    assert after.reclaimable_bytes == 0
    assert after.stored_bytes == use.live_bytes + len(flying) * len(b"left behind")


def test_an_unreadable_manifest_stops_gc_and_prune_from_deleting(location, tmp_path):
    dest = location.new()
    three_versions(dest, tmp_path)
    crashed_leftovers(location, dest)
    location.put(dest, ".aiocheckpoint/manifests/v0000000002.json", b"{not json")
    keys = location.keys(dest)
    with SyncCheckpoint(dest) as cp:
        with pytest.raises(CorruptCheckpointError, match="v0000000002.json"):
            cp.versions()
        with pytest.raises(CorruptCheckpointError, match="nothing is deleted"):
            cp.gc()
        with pytest.raises(CorruptCheckpointError, match="nothing is deleted"):
            cp.prune(2)
        assert location.keys(dest) == keys
        dropped = cp.prune(1)  # the unreadable version is one of those dropped
    assert dropped.versions == (1, 2)
    assert ".aiocheckpoint/manifests/v0000000002.json" not in location.keys(dest)


@pytest.mark.anyio
async def test_the_async_twins_answer_as_the_sync_ones(location, tmp_path):
    dest = location.new()
    three_versions(dest, tmp_path)
    with SyncCheckpoint(dest) as cp:
        want = (cp.versions(), cp.inspect(2), cp.verify(), cp.usage(), cp.prune(2, dry_run=True))
    async with AsyncCheckpoint(dest) as acp:
        got = (
            await acp.versions(),
            await acp.inspect(2),
            await acp.verify(),
            await acp.usage(),
            await acp.prune(2, dry_run=True),
        )
    assert got == want
    for name in ("versions", "inspect", "verify", "prune", "gc", "usage"):
        assert inspect.iscoroutinefunction(getattr(AsyncCheckpoint, name))
        assert getattr(SyncCheckpoint, name).__doc__ == getattr(AsyncCheckpoint, name).__doc__


KILLED_SAVE = """
import sys
from aiocheckpoint import SyncCheckpoint, TransferConfig
MiB = 1024 * 1024
config = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
with SyncCheckpoint(sys.argv[1], transfer=config) as cp:
    cp.save(sys.argv[2])
"""


def test_gc_collects_a_killed_save_once_told_none_is_running(
    s3_control, s3, bucket, child_env, tmp_path
):
    dest = f"s3://{bucket}/cp"
    with SyncCheckpoint(dest) as cp:
        cp.write(b"version 1")
    files = {"big.bin": bytes(11 * MiB), "small.txt": b"small"}
    hold = s3_control.hold(match("POST", param="uploadId"))  # completing the multipart upload
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, dest, str(write_tree(tmp_path / "src", files))],
        env=child_env,
    )
    try:
        assert hold.wait_for(1, timeout=120), "the save never completed its upload"
    finally:
        child.kill()
        child.wait(60)
    hold.release()
    store = Location("s3", tmp_path, s3, bucket)
    live = store.referenced(dest)
    left = store.data_keys(dest) - live
    # its early upload guessed a new checkpoint (folder 1), then it uploaded into folder 2
    assert {k.split("/")[2].split("-")[0] for k in left} == {"0000000001", "0000000002"}
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    with SyncCheckpoint(dest, dest) as cp:
        cautious = cp.gc()  # both numbered from the newest version (1) up: maybe running
        assert not cautious.objects and not cautious.uploads
        early, folder = cautious.running
        assert early.startswith(f"{dest}/.aiocheckpoint/data/0000000001-")
        assert folder.startswith(f"{dest}/.aiocheckpoint/data/0000000002-")
        told = cp.gc(no_save_running=True)
        assert sorted(told.objects) == sorted(f"{dest}/{k}" for k in left)
        assert [u.removeprefix(folder) for u in told.uploads] == ["big.bin"]
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
        assert cp.read() == b"version 1"
        assert [v.version for v in cp.versions()] == [1]
    assert store.data_keys(dest) == live
