"""Incremental saves: content the newest version already holds is not stored again."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from _s3server import match
from _trees import restore_all, write_tree
from conftest import Location

from aiocheckpoint import AsyncCheckpoint, TransferConfig

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
#: Files over 5 MiB go in parts, so the 11 MiB file below is a multipart upload.
PARTS = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)


def objects(location, dest: str) -> dict[str, str]:
    """Path → data object (and offset, in a pack), in the newest manifest."""
    return {
        path: e["object"] + (f"@{e['offset']}" if "offset" in e else "")
        for path, e in location.manifest(dest)["files"].items()
    }


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, bytes]:
    return {
        "model.bin": os.urandom(11 * MiB),
        "optim/state.bin": os.urandom(200_000),
        "optim/step.txt": b"100",
        "empty": b"",
    }


async def test_resaving_an_unchanged_folder_stores_nothing_again(location, tmp_path, tree):
    dest = location.new()
    src = write_tree(tmp_path / "src", tree)
    async with AsyncCheckpoint(dest, transfer=PARTS) as cp:
        await cp.save(src)
        first = objects(location, dest)
        data_before = location.data_keys(dest)
        await cp.save(src)
    assert location.manifest(dest)["version"] == 1  # nothing changed: nothing committed
    assert objects(location, dest) == first
    assert location.data_keys(dest) == data_before  # nothing new, nothing collected
    assert await restore_all(dest, tmp_path / "out", transfer=PARTS) == tree


async def test_only_changed_files_are_stored_even_when_sizes_and_times_match(
    location, tmp_path, tree
):
    dest = location.new()
    src = write_tree(tmp_path / "src", tree)
    async with AsyncCheckpoint(dest, transfer=PARTS) as cp:
        await cp.save(src)
        first = objects(location, dest)
        # Same sizes, same modification times: only the bytes tell the change.
        changed = {"model.bin": os.urandom(11 * MiB), "optim/step.txt": b"200"}
        for rel, data in changed.items():
            path = src / rel
            stat = path.stat()
            path.write_bytes(data)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        await cp.save(src)
    second = objects(location, dest)
    assert {p for p in second if second[p] != first[p]} == set(changed)
    tree.update(changed)
    assert await restore_all(dest, tmp_path / "out", transfer=PARTS) == tree
    # The unchanged files' objects live in the first save's folder and survive its GC.
    assert location.data_keys(dest) == location.referenced(dest)


async def test_unchanged_s3_files_send_no_data_requests(s3_control, s3, bucket, tmp_path, tree):
    dest = f"s3://{bucket}/cp"
    src = write_tree(tmp_path / "src", tree)
    async with AsyncCheckpoint(dest, transfer=PARTS) as cp:
        await cp.save(src)
        s3_control.reset()
        (src / "optim/step.txt").write_bytes(b"101")
        await cp.save(src)
    data_puts = s3_control.matching(match(path_contains="/.aiocheckpoint/data/"))
    assert [(r.method, r.path.rsplit("/", 1)[1]) for r in data_puts] == [("PUT", "pack-000001")]
    assert not s3_control.matching(match("HEAD"))
    # that pack holds step.txt's 3 bytes and nothing else
    manifest = Location("s3", tmp_path, s3, bucket).manifest(dest)
    step = manifest["files"]["optim/step.txt"]
    assert manifest["packs"][step["object"]] == 3


async def test_write_of_the_same_bytes_stores_nothing_again(location, tmp_path):
    dest = location.new()
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"weights v1")
        first = objects(location, dest)
        await cp.write(b"weights v1")
        assert objects(location, dest) == first
        await cp.write(b"weights v2")  # same length, other bytes
        assert objects(location, dest)["_dst_cp"] != first["_dst_cp"]
        await cp.save(io.BytesIO(b"weights v2"))
    assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": b"weights v2"}


async def test_a_file_saved_under_a_new_name_is_stored_anew(location, tmp_path):
    # Reuse is by path: the same bytes under another name are a new object.
    dest = location.new()
    data = os.urandom(1000)
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "a", {"one.bin": data}))
        await cp.save(write_tree(tmp_path / "b", {"two.bin": data}))
    files = objects(location, dest)
    assert files["one.bin"] != files["two.bin"]
    assert await restore_all(dest, tmp_path / "out") == {"one.bin": data, "two.bin": data}


async def test_an_unchanged_file_kept_across_many_versions_survives_gc(location, tmp_path):
    dest = location.new()
    # frozen.bin is too big for a pack: an object of its own, never stored again
    frozen = b"F" * 300_000
    src = write_tree(tmp_path / "src", {"frozen.bin": frozen, "step": b"0"})
    async with AsyncCheckpoint(dest, keep_versions=2) as cp:
        for step in range(1, 6):
            (src / "step").write_bytes(str(step).encode())
            await cp.save(src)
    manifest = location.manifest(dest)
    assert manifest["version"] == 5
    assert manifest["files"]["frozen.bin"]["object"].startswith("data/0000000001-")
    assert len(location.manifests(dest)) == 2
    assert await restore_all(dest, tmp_path / "out") == {"frozen.bin": frozen, "step": b"5"}


async def test_a_save_does_not_read_back_the_manifest_it_committed(s3_control, bucket, tmp_path):
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"v1")
        s3_control.reset()
        await cp.write(b"v2")
    manifest_gets = s3_control.matching(match("GET", path_contains="/.aiocheckpoint/manifests/v"))
    assert manifest_gets == []
    assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": b"v2"}


async def test_a_dest_rewritten_by_another_process_is_read_again(location, tmp_path):
    # Same version number, other content: only the manifest itself can tell.
    dest = location.new()
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "a", {"mine.bin": b"mine"}))
        for key in location.keys(dest):
            location.delete(dest, key)
        async with AsyncCheckpoint(dest) as other:
            await other.save(write_tree(tmp_path / "b", {"theirs.bin": b"theirs"}))
        assert location.manifest(dest)["version"] == 1
        await cp.write(b"mine again")
    assert await restore_all(dest, tmp_path / "out") == {
        "theirs.bin": b"theirs",
        "_dst_cp": b"mine again",
    }


async def test_a_file_is_compared_with_the_newest_version_not_the_one_it_saved(location, tmp_path):
    # Another writer committed since this object's last save: what this object saved
    # before is no longer what the dest holds, so the same bytes must go up again.
    dest = location.new()
    mine = write_tree(tmp_path / "mine", {"a.bin": b"mine" * 100})
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(mine)
        async with AsyncCheckpoint(dest) as other:
            await other.save(write_tree(tmp_path / "theirs", {"a.bin": b"them" * 100}))
        await cp.save(mine)
    assert location.manifest(dest)["version"] == 3
    assert await restore_all(dest, tmp_path / "out") == {"a.bin": b"mine" * 100}


async def test_a_resave_lists_data_folders_not_every_file(s3_control, bucket, tmp_path):
    dest = f"s3://{bucket}/cp"
    src = write_tree(tmp_path / "src", {f"d{i % 3}/f{i}": b"%d" % i for i in range(40)})
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(src)
        s3_control.reset()
        await cp.save(src)
    made = sorted(
        f"{r.method} {r.path.split('/.aiocheckpoint/', 1)[-1].split('/')[0]} {r.query}"
        for r in s3_control.requests
    )
    # List the manifests, the data folders (not their files) and open uploads, at once;
    # nothing changed, so nothing is committed or deleted.
    assert len(made) == 3, made
    assert [r for r in made if r.startswith("GET ") and "delimiter=%2F" in r] != [], made
    assert [r for r in made if not r.startswith("GET ")] == [], made


async def test_a_save_that_changes_nothing_commits_nothing(location, tmp_path):
    dest = location.new()
    src = write_tree(tmp_path / "src", {"model.bin": os.urandom(5000), "step": b"7"})
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(src)
        before = sorted(location.keys(dest))
        await cp.save(src)
        await cp.save(src / "step")
        assert sorted(location.keys(dest)) == before
        assert location.manifest(dest)["version"] == 1
        (src / "step").write_bytes(b"8")
        await cp.save(src)
    assert location.manifest(dest)["version"] == 2
    assert await restore_all(dest, tmp_path / "out") == {
        "model.bin": (src / "model.bin").read_bytes(),
        "step": b"8",
    }


async def test_lowering_keep_versions_collects_every_dropped_version(location, tmp_path):
    dest = location.new()
    src = tmp_path / "src"
    async with AsyncCheckpoint(dest, keep_versions=3) as cp:
        for step in range(3):
            write_tree(src, {"shared.bin": b"S" * 100, f"only{step}.bin": b"%d" % step})
            await cp.save(src)
    assert len(location.manifests(dest)) == 3
    async with AsyncCheckpoint(dest) as cp:  # keep_versions=1; it never read the others
        await cp.write(b"last")
    assert len(location.manifests(dest)) == 1
    assert location.data_keys(dest) == location.referenced(dest)
    assert await restore_all(dest, tmp_path / "out") == {
        "shared.bin": b"S" * 100,
        "only0.bin": b"0",
        "only1.bin": b"1",
        "only2.bin": b"2",
        "_dst_cp": b"last",
    }


async def test_an_unreadable_old_manifest_is_collected_with_what_it_named(location, tmp_path):
    dest = location.new()
    src = tmp_path / "src"
    objects_only = TransferConfig(pack_threshold=0)  # (packs: see test_packs.py)
    async with AsyncCheckpoint(dest, keep_versions=2, transfer=objects_only) as cp:
        await cp.save(write_tree(src, {"a": b"A", "b": b"B1"}))  # v1: a and b in one folder
        await cp.save(write_tree(src, {"a": b"A", "b": b"B2"}))  # v2 still names v1's a
    first_b = ".aiocheckpoint/" + objects(location, dest)["a"].replace("/a", "/b")
    assert first_b in location.data_keys(dest)
    oldest = location.manifests(dest)[0]
    location.put(dest, oldest, b"not json")
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"three")
    # v1's "b" sits in a folder v3 still uses, and only the unreadable v1 named it.
    assert first_b not in location.data_keys(dest)
    assert len(location.manifests(dest)) == 1
    assert location.data_keys(dest) == location.referenced(dest)
    assert await restore_all(dest, tmp_path / "out") == {"a": b"A", "b": b"B2", "_dst_cp": b"three"}
