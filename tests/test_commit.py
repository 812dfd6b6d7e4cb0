"""The commit protocol where requests fail, vanish or race, and what merged saves hold."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from urllib.parse import unquote

import anyio
import anyio.lowlevel
import pytest
from _events import Events
from _s3server import Request, match
from _trees import read_tree, restore_all, write_tree
from conftest import Location

from aiocheckpoint import AsyncCheckpoint, CheckpointError, TransferConfig

pytestmark = pytest.mark.anyio


MiB = 1024 * 1024


_LATEST = ".aiocheckpoint/latest.json"


def _keys(s3, bucket: str) -> list[str]:
    """The bucket's keys but ``latest.json`` (the copy of the newest manifest) and the
    empty object that tells whether the server honours If-None-Match."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    return [k for k in keys if not k.endswith((f"/{_LATEST}", "/.aiocheckpoint/probe"))]


def _listing_manifests(request: Request) -> bool:
    return request.method == "GET" and "/.aiocheckpoint/manifests/" in unquote(request.query)


async def test_commit_whose_response_was_lost_is_still_a_commit(s3_control, bucket, tmp_path):
    # The manifest PUT reaches the server, the answer does not: botocore retries, meets
    # its own manifest (412), and the save must see that it did commit.
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"version 1")
        s3_control.fail(
            match("PUT", path_contains="/.aiocheckpoint/manifests/"),
            status=500,
            code="InternalError",
            times=1,
            applied=True,
        )
        await cp.save(write_tree(tmp_path / "v2", {"model.bin": b"version 2"}))
        await cp.write(b"version 3")
    assert await restore_all(dest, tmp_path / "out") == {
        "_dst_cp": b"version 3",
        "model.bin": b"version 2",
    }


async def test_failed_commit_keeps_the_previous_version(s3_control, s3, bucket, tmp_path):
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"version 1")
        s3_control.fail(match("PUT", path_contains="/.aiocheckpoint/manifests/"), code="Nope")
        with pytest.raises(CheckpointError, match="Nope"):
            await cp.write(b"version 2")
    s3_control.reset()
    assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": b"version 1"}
    # The failed commit's data stays (its request might still have landed) until the next
    # save, which collects it.
    keys = _keys(s3, bucket)
    assert len(keys) == 3, keys
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"version 3")
    keys = _keys(s3, bucket)
    assert len(keys) == 2, keys  # one manifest, one data object
    assert await restore_all(dest, tmp_path / "out2") == {"_dst_cp": b"version 3"}


async def test_restore_restarts_from_the_newest_version_when_objects_vanish(
    s3_control, bucket, tmp_path
):
    dest = f"s3://{bucket}/cp"
    v1 = {f"f{i}": b"old %d" % i for i in range(5)}
    v2 = {f"f{i}": b"new %d" % i for i in range(5)}
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "v1", v1))
    hold = s3_control.hold(match("GET", path_contains="/.aiocheckpoint/data/"))
    out = tmp_path / "out"
    out.mkdir()
    events = Events()
    async with AsyncCheckpoint(f"s3://{bucket}/unused", dest) as reader:
        async with anyio.create_task_group() as tg:
            result: list[Path | None] = []

            async def restore() -> None:
                result.append(await reader.restore(out, progress=events))

            tg.start_soon(restore)
            assert await anyio.to_thread.run_sync(hold.wait_for, 1)  # the pack
            # Meanwhile a new version replaces every file; its cleanup deletes v1's data.
            async with AsyncCheckpoint(dest) as writer:
                await writer.save(write_tree(tmp_path / "v2", v2))
            hold.release(forward=True)
    assert result == [out]
    assert read_tree(out) == v2
    events.check("restore", v2)  # the first attempt's bytes are not counted again


async def test_a_restore_reads_the_newest_manifest_while_it_lists_them(
    s3_control, s3, bucket, tmp_path
):
    # Listing the manifests and then reading the newest would put two round trips before
    # any data; the commit's copy in latest.json is read while the listing runs.
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"version 1")
        await cp.save(write_tree(tmp_path / "v2", {"model.bin": b"version 2"}))
    store = Location("s3", tmp_path, s3, bucket)
    assert store.read(dest, _LATEST) == store.read(dest, store.manifests(dest)[-1])
    s3_control.reset()
    listing = s3_control.hold(_listing_manifests)
    latest = s3_control.hold(match("GET", path_contains=f"/{_LATEST}"))
    out = tmp_path / "out"
    out.mkdir()
    async with AsyncCheckpoint(f"{dest}-unused", dest) as reader:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.restore, out)
            assert await anyio.to_thread.run_sync(listing.wait_for, 1, 60)
            assert await anyio.to_thread.run_sync(latest.wait_for, 1, 60)
            latest.release(forward=True)
            listing.release(forward=True)
    assert read_tree(out) == {"_dst_cp": b"version 1", "model.bin": b"version 2"}
    assert not s3_control.matching(match("GET", path_contains="/.aiocheckpoint/manifests/v"))


@pytest.mark.parametrize("copy", ["older", "lost the race", "garbage", "missing"])
async def test_a_restore_reads_the_manifest_itself_when_latest_json_is_not_it(
    s3_control, s3, bucket, tmp_path, copy
):
    # An older save's copy may land last, a writer that lost the race for a version may
    # have written its own, a bad write may leave anything, and a checkpoint from an
    # older aiocheckpoint has none.
    dest = f"s3://{bucket}/cp"
    store = Location("s3", tmp_path, s3, bucket)
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "v1", {"model.bin": b"version 1"}))
        first = store.read(dest, _LATEST)
        await cp.save(write_tree(tmp_path / "v2", {"model.bin": b"version 2"}))
    if copy == "older":
        store.put(dest, _LATEST, first)
    elif copy == "lost the race":  # version 2's number, version 1's data
        doc = json.loads(first)
        doc["version"] = 2
        store.put(dest, _LATEST, json.dumps(doc).encode())
    elif copy == "garbage":
        store.put(dest, _LATEST, b"{not a manifest")
    else:
        store.delete(dest, _LATEST)
    s3_control.reset()
    assert await restore_all(dest, tmp_path / "out") == {"model.bin": b"version 2"}
    assert s3_control.matching(match("GET", path_contains="/.aiocheckpoint/manifests/v"))


@pytest.mark.parametrize("again", [b"version 2", b"version 1"], ids=["changed", "unchanged"])
async def test_next_save_aborts_uploads_a_killed_save_left_open(s3, bucket, tmp_path, again):
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"version 1")
    # What a save killed between CreateMultipartUpload and its abort leaves behind.
    s3.create_multipart_upload(Bucket=bucket, Key="cp/.aiocheckpoint/data/0000000002-ab/big")
    s3.put_object(Bucket=bucket, Key="cp/.aiocheckpoint/data/0000000002-ab/small", Body=b"s")
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(again)  # even a save that changes nothing cleans up
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="cp/")["Contents"]]
    # The new save's own folder is 0000000002-<random hex>: match the leftover's whole name.
    assert not [k for k in keys if "/0000000002-ab/" in k], keys
    assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": again}


async def test_a_file_can_become_a_folder_and_back(location, tmp_path):
    dest = location.new()
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "a", {"x": b"file", "keep": b"k"}))
        await cp.save(write_tree(tmp_path / "b", {"x/y": b"now a folder"}))
    assert await restore_all(dest, tmp_path / "out1") == {"x/y": b"now a folder", "keep": b"k"}
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "c", {"x": b"a file again"}))
    assert await restore_all(dest, tmp_path / "out2") == {"x": b"a file again", "keep": b"k"}


async def test_names_that_are_odd_but_legal_round_trip(location, tmp_path):
    files = {"a:b.txt": b"colon", "back\\slash": b"bs", "sp ace/ü.bin": b"u", "C:x": b"c"}
    dest = location.new()
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    assert await restore_all(dest, tmp_path / "out") == files


async def test_plain_prefix_with_folder_markers_restores_its_files(s3, bucket, tmp_path):
    for key, body in [("plain/", b""), ("plain/models/", b""), ("plain/models/m.bin", b"m")]:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert await restore_all(f"s3://{bucket}/plain", tmp_path / "out") == {"models/m.bin": b"m"}


async def test_keep_versions_keeps_older_versions_restorable(location, tmp_path):
    dest = location.new()
    async with AsyncCheckpoint(dest, keep_versions=2) as cp:
        for n in (1, 2, 3):
            await cp.write(b"version %d" % n)
    manifests = location.manifests(dest)
    assert [m.rsplit("/", 1)[1] for m in manifests] == ["v0000000002.json", "v0000000003.json"]
    assert len(location.data_keys(dest)) == 2
    # The older kept version is intact: delete the newest manifest and restore.
    location.delete(dest, manifests[-1])
    assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": b"version 2"}


async def test_local_save_after_a_cancelled_one_succeeds(tmp_path):
    src = write_tree(tmp_path / "src", {f"d{i % 50}/f{i}": b"x" * 4096 for i in range(2000)})
    dest = tmp_path / "dest"
    data = dest / ".aiocheckpoint" / "data"
    async with AsyncCheckpoint(dest, transfer=TransferConfig(max_concurrency=2)) as cp:
        await cp.write(b"version 1")
        (first,) = os.listdir(data)

        def under_way() -> bool:
            """A file of the save is stored in one of its new subfolders."""
            return any(
                folder.name != first
                and any(sub.is_dir() and any(sub.iterdir()) for sub in folder.iterdir())
                for folder in data.iterdir()
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(cp.save, src)
            with anyio.fail_after(60):
                while not under_way():
                    # Looked at on every turn of the loop: the save needs many turns to
                    # store its 2000 files, so it is cancelled well before it is done.
                    await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
        assert len(os.listdir(dest / ".aiocheckpoint" / "manifests")) == 1  # not committed
        await cp.write(b"version 2")
    assert await restore_all(str(dest), tmp_path / "out") == {"_dst_cp": b"version 2"}
    assert len(list(data.iterdir())) == 1  # only version 2's folder: the rest was collected


async def test_gc_spares_the_uploads_its_own_save_made(s3_control, s3, bucket, tmp_path):
    # The listing of unfinished uploads runs while the save's own multipart upload is in
    # flight; after the commit that upload is complete and must not be taken for a crashed
    # save's (aborting it fails, and the rest of the collection would be skipped).
    dest = f"s3://{bucket}/cp"
    transfer = TransferConfig(multipart_threshold=5 * 2**20, part_size=5 * 2**20)
    src = tmp_path / "src"
    listing_uploads = match("GET", param="uploads")
    async with AsyncCheckpoint(dest, transfer=transfer) as cp:
        await cp.save(write_tree(src, {"model.bin": b"1" * (6 * 2**20)}))
        # The server answers the listing only while the save's upload is open: one of its
        # parts is held, so the listing shows that upload.
        parts = s3_control.hold(match("PUT", param="partNumber"))
        listing = s3_control.hold(listing_uploads)
        listed = s3_control.watch(listing_uploads)
        async with anyio.create_task_group() as tg:
            tg.start_soon(cp.save, write_tree(src, {"model.bin": b"2" * (6 * 2**20)}))
            try:
                assert await anyio.to_thread.run_sync(parts.wait_for, 1, 60)
                assert await anyio.to_thread.run_sync(listing.wait_for, 1, 60), (
                    "the save did not list unfinished uploads while its own was open"
                )
                listing.release(forward=True)
                assert await anyio.to_thread.run_sync(listed.wait_answered, 1, 60)
            finally:
                listing.release(forward=True)
                parts.release(forward=True)
    assert not s3_control.matching(match("DELETE", param="uploadId"))  # nothing aborted
    keys = _keys(s3, bucket)
    assert len(keys) == 2, keys  # the old version's object was collected too
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert await restore_all(dest, tmp_path / "out", transfer=transfer) == {
        "model.bin": b"2" * (6 * 2**20)
    }


async def test_a_first_save_uploads_while_the_manifests_are_listed(
    s3_control, s3, bucket, tmp_path
):
    # Waiting for the listing first would add a round trip to every save.
    dest = f"s3://{bucket}/cp"
    files = {f"d/f{i}": os.urandom(1000) for i in range(8)}
    listing = s3_control.hold(_listing_manifests)
    data_puts = match("PUT", path_contains="/.aiocheckpoint/data/")
    puts = s3_control.hold(data_puts)
    async with AsyncCheckpoint(dest) as cp, anyio.create_task_group() as tg:
        tg.start_soon(cp.save, write_tree(tmp_path / "src", files))
        assert await anyio.to_thread.run_sync(listing.wait_for, 1, 60)
        # The files' pack is PUT while the listing is still held.
        assert await anyio.to_thread.run_sync(puts.wait_for, 1, 60)
        puts.release(forward=True)
        listing.release(forward=True)
    store = Location("s3", tmp_path, s3, bucket)
    assert store.manifests(dest) == [".aiocheckpoint/manifests/v0000000001.json"]
    assert store.data_keys(dest) == store.referenced(dest)
    assert len(s3_control.matching(data_puts)) == 1  # the pack, once
    assert await restore_all(dest, tmp_path / "out") == files


async def _holding_the_listing(s3_control, save: Callable[[], Awaitable[None]], early: int):
    """Run ``save`` with the listing of manifests held until ``early`` data PUTs arrived."""
    s3_control.reset()
    listing = s3_control.hold(_listing_manifests)
    puts = s3_control.hold(match("PUT", path_contains="/.aiocheckpoint/data/"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(save)
        assert await anyio.to_thread.run_sync(listing.wait_for, 1, 60)
        assert await anyio.to_thread.run_sync(puts.wait_for, early, 60)
        puts.release(forward=True)
        listing.release(forward=True)


async def test_a_save_whose_guess_of_the_version_is_wrong_starts_over_and_leaves_nothing(
    s3_control, s3, bucket, tmp_path
):
    dest = f"s3://{bucket}/cp"
    store = Location("s3", tmp_path, s3, bucket)
    data_puts = match("PUT", path_contains="/.aiocheckpoint/data/")
    deletes = match("POST", param="delete")
    v1 = {"same": os.urandom(3000), "changes": b"one"}
    # One object per file, so that the requests show which files went up.
    objects = TransferConfig(pack_threshold=0)
    async with AsyncCheckpoint(dest, transfer=objects) as first:
        await first.save(write_tree(tmp_path / "v1", v1))
        kept = store.referenced(dest)
        # A new object guesses a new checkpoint and uploads all three files early. The
        # listing shows version 1: that upload is deleted, and the save starts over
        # from version 1, uploading only the two files that differ from it.
        v2 = {"same": v1["same"], "changes": b"two", "new": b"three"}
        async with AsyncCheckpoint(dest, transfer=objects) as second:
            v2_folder = write_tree(tmp_path / "v2", v2)
            await _holding_the_listing(s3_control, partial(second.save, v2_folder), 3)
        assert len(s3_control.matching(data_puts)) == 3 + 2
        assert s3_control.matching(deletes)
        assert store.manifests(dest) == [".aiocheckpoint/manifests/v0000000002.json"]
        assert store.data_keys(dest) == store.referenced(dest)
        same = ".aiocheckpoint/" + store.manifest(dest)["files"]["same"]["object"]
        assert same in kept  # still the first save's object
        assert await restore_all(dest, tmp_path / "out2") == v2
        # The object that saved version 1 guesses version 2, now stale: its early upload
        # is of the one file that differs from version 1, and it is done again.
        v3 = {"same": v1["same"], "changes": b"four"}
        v3_folder = write_tree(tmp_path / "v3", v3)
        await _holding_the_listing(s3_control, partial(first.save, v3_folder), 1)
        assert len(s3_control.matching(data_puts)) == 1 + 1
    assert store.manifests(dest) == [".aiocheckpoint/manifests/v0000000003.json"]
    assert store.data_keys(dest) == store.referenced(dest)
    assert ".aiocheckpoint/" + store.manifest(dest)["files"]["same"]["object"] == same
    assert await restore_all(dest, tmp_path / "out3") == {**v2, **v3}  # a save merges


async def test_cancelling_a_save_while_it_uploads_ahead_leaves_nothing(
    s3_control, s3, bucket, tmp_path
):
    dest = f"s3://{bucket}/cp"
    files = {"small": b"s", "big.bin": os.urandom(11 * MiB)}
    parts = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
    listing = s3_control.hold(_listing_manifests)
    upload_parts = s3_control.hold(match("PUT", param="partNumber"))
    async with AsyncCheckpoint(dest, transfer=parts) as cp:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(cp.save, write_tree(tmp_path / "src", files))
                assert await anyio.to_thread.run_sync(listing.wait_for, 1, 60)
                assert await anyio.to_thread.run_sync(upload_parts.wait_for, 1, 60)
                scope.cancel()
        s3_control.reset()  # the held requests never reach the store
    assert Location("s3", tmp_path, s3, bucket).keys(dest) == []
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


async def test_a_write_goes_up_while_the_manifests_are_listed_and_again_if_the_guess_fails(
    s3_control, s3, bucket, tmp_path
):
    dest = f"s3://{bucket}/cp"
    store = Location("s3", tmp_path, s3, bucket)
    data_puts = match("PUT", path_contains="/.aiocheckpoint/data/")
    async with AsyncCheckpoint(dest) as first:
        await _holding_the_listing(s3_control, partial(first.write, b"weights v1"), 1)
        assert len(s3_control.matching(data_puts)) == 1
    # A new object guesses a new checkpoint; the stream is read again for version 2.
    async with AsyncCheckpoint(dest) as second:
        await _holding_the_listing(s3_control, partial(second.write, b"weights v2"), 1)
        assert len(s3_control.matching(data_puts)) == 2
        # A file object is read again from where it stood, not from its start.
        stream = io.BytesIO(b"skip:weights v3")
        stream.seek(5)
        async with AsyncCheckpoint(dest) as third:
            await third.write(b"weights v2b")  # makes second's guess stale
        await _holding_the_listing(s3_control, partial(second.save, stream), 1)
        assert len(s3_control.matching(data_puts)) == 2
    assert store.manifests(dest) == [".aiocheckpoint/manifests/v0000000004.json"]
    assert store.data_keys(dest) == store.referenced(dest)
    assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": b"weights v3"}
