"""A hostile file system: symlinks in the restore folder, long names, symlink loops,
impossible sizes and names reserved for the library's own folders."""

# Blocking file work in these async tests is test setup, not library code.

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _trees import read_tree, restore_all, write_tree
from test_corruption import commit_by_hand

from aiocheckpoint import (
    AsyncCheckpoint,
    CheckpointError,
    CorruptCheckpointError,
    SyncCheckpoint,
    TransferConfig,
)

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)


def snapshot(root: Path) -> dict[str, object]:
    """Everything under ``root``, links not followed: bytes, link targets, folders."""
    out: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = "folder"
            else:
                out[rel] = path.read_bytes()
    return out


async def save(dest: str, src: Path, **kwargs: object) -> str:
    async with AsyncCheckpoint(dest, transfer=TRANSFER, **kwargs) as cp:
        await cp.save(src)
    return dest


async def restore(src: str, into: Path) -> Path:
    async with AsyncCheckpoint(str(into) + "-unused", src, transfer=TRANSFER) as cp:
        restored = await cp.restore(into)
    assert restored is not None
    return restored


# A restore writes only inside its folder.

SAVED = {
    "top.txt": b"top",
    "file_over_dir_link": b"a file where a link to a folder was",
    "dangling_file": b"a file where a dangling link was",
    "sub/b.txt": b"new b",
    "sub/big.bin": bytes(range(256)) * (2 * MiB // 256),  # one GET, not a batch
    "dangling/x.txt": b"under a dangling link",
    "file_link/y.txt": b"under a link to a file",
    "a/b/c/d.txt": b"deep",
    "a/real/e.txt": b"a file where a link to an outside file was",
    "a/real/inside/f.txt": b"under a link to a folder inside the target",
}


def plant(box: Path) -> tuple[Path, Path]:
    """Outside files and folders beside ``box/target``, and links to them in it."""
    outside = write_tree(box / "outside", {"sub/b.txt": b"old b", "c/d.txt": b"old d"})
    secret = box / "secret.txt"
    secret.write_bytes(b"outside file")
    target = box / "target"
    (target / "a" / "real").mkdir(parents=True)
    (target / "a" / "real" / "inside_dest").mkdir()
    links = {
        "top.txt": secret,
        "file_over_dir_link": outside,
        "dangling_file": box / "nowhere",
        "sub": outside / "sub",
        "dangling": box / "nowhere" / "deeper",
        "file_link": secret,
        "a/b": outside,
        "a/real/e.txt": secret,
        "a/real/inside": Path("inside_dest"),
        "untouched": outside,
    }
    for rel, to in links.items():
        (target / rel).symlink_to(to)
    return target, outside


async def test_a_restore_replaces_symlinks_in_its_way_and_writes_nothing_outside(
    location, tmp_path, caplog
):
    dest = await save(location.new(), write_tree(tmp_path / "src", SAVED))
    box = tmp_path / "box"
    target, outside = plant(box)
    before = {k: v for k, v in snapshot(box).items() if not k.startswith("target")}
    with caplog.at_level(logging.WARNING, logger="aiocheckpoint"):
        assert await restore(dest, target) == target
    after = {k: v for k, v in snapshot(box).items() if not k.startswith("target")}
    assert after == before
    got = snapshot(target)
    assert {k: v for k, v in got.items() if isinstance(v, bytes)} == SAVED
    assert got["untouched"] == ("link", str(outside))
    assert got["a/real/inside_dest"] == "folder"
    assert not [k for k, v in got.items() if isinstance(v, tuple) and k != "untouched"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for rel, to in [
        ("sub", outside / "sub"),
        ("dangling", box / "nowhere" / "deeper"),
        ("file_link", box / "secret.txt"),
        ("a/b", outside),
        ("a/real/inside", "inside_dest"),
    ]:
        assert any(f"{target / rel} (pointing to {to})" in m for m in warned), rel
    assert len(warned) == 5


async def test_a_restore_folder_that_is_a_symlink_is_followed(tmp_path):
    dest = await save(str(tmp_path / "dest"), write_tree(tmp_path / "src", {"a/b": b"1"}))
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "chosen").symlink_to(real)
    await restore(dest, tmp_path / "chosen")
    assert read_tree(real) == {"a/b": b"1"}
    assert (tmp_path / "chosen").is_symlink()


async def test_a_file_where_a_restored_folder_goes_is_an_error_naming_it(tmp_path):
    dest = await save(str(tmp_path / "dest"), write_tree(tmp_path / "src", {"a/b": b"1"}))
    target = write_tree(tmp_path / "target", {"a": b"in the way"})
    with pytest.raises(CheckpointError, match="a file is in the way: '.*target/a'"):
        await restore(dest, target)
    assert snapshot(target) == {"a": b"in the way"}


# Long names.

LONG = {
    "a" * 255: b"ascii",
    "é" * 127 + "x": b"two bytes each",
    "日" * 85: b"three bytes each",
    "sub/" + "b" * 255: b"nested",
    "c" * 251 + ".bin": bytes(range(256)) * (6 * MiB // 256),  # a multipart upload
}


async def test_names_of_255_bytes_are_saved_and_restored(location, tmp_path):
    assert {len(name.rsplit("/", 1)[-1].encode()) for name in LONG} == {255}
    dest = await save(location.new(), write_tree(tmp_path / "src", LONG))
    await save(dest, write_tree(tmp_path / "src", {**LONG, "a" * 255: b"changed"}))
    assert await restore_all(dest, tmp_path / "out") == {**LONG, "a" * 255: b"changed"}


async def test_temp_files_of_a_crashed_local_save_are_collected(tmp_path):
    dest = await save(str(tmp_path / "dest"), write_tree(tmp_path / "src", {"a": b"1"}))
    meta = tmp_path / "dest" / ".aiocheckpoint"
    leftovers = [meta / "manifests" / ".tmp-0123456789ab"]
    leftovers.append(meta / "data" / "0000000002-0123456789ab" / "sub" / ".tmp-0123456789ab")
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    await save(dest, write_tree(tmp_path / "src", {"a": b"2"}))
    assert not [p for p in leftovers if p.exists()]
    assert await restore_all(dest, tmp_path / "out") == {"a": b"2"}


async def test_a_key_too_long_for_the_restore_folder_is_refused_naming_it(s3, bucket, tmp_path):
    long_key = f"plain/sub/{'k' * 300}"
    for key in ("plain/ok.txt", long_key):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointError, match=f"s3://{bucket}/{long_key}.*300 bytes") as info:
        await restore(f"s3://{bucket}/plain", out)
    assert not isinstance(info.value, CorruptCheckpointError)  # intact; too long here only
    assert list(out.iterdir()) == []


async def test_a_manifest_name_too_long_for_the_restore_folder_is_refused(location, tmp_path):
    dest = await save(location.new(), write_tree(tmp_path / "src", {"a": b"1"}))
    files = location.manifest(dest)["files"]
    commit_by_hand(location, dest, {**files, "d" * 256: files["a"]})
    (tmp_path / "out").mkdir()
    with pytest.raises(CheckpointError, match="'ddd.*256 bytes long, more than 255"):
        await restore(dest, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


async def test_a_name_that_is_not_utf8_is_refused_at_save_naming_it(tmp_path):
    src = write_tree(tmp_path / "src", {"ok": b"1"})
    try:
        open(os.path.join(os.fsencode(src), b"bad\xff"), "wb").close()
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    with pytest.raises(ValueError, match=r"bad.*not valid UTF-8 \(b'bad\\xff'\)"):
        await save(str(tmp_path / "dest"), src)
    assert not (tmp_path / "dest" / ".aiocheckpoint" / "manifests").exists()


# Symlink loops and impossible sizes.

LIMITED = """
import resource, signal, sys
from aiocheckpoint import SyncCheckpoint

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
try:
    {}
except Exception as exc:
    print(type(exc).__name__, exc)
"""
SAVE = LIMITED.format("with SyncCheckpoint(sys.argv[1]) as cp: cp.save(sys.argv[2])")
RESTORE = LIMITED.format(
    "with SyncCheckpoint(sys.argv[1] + '-unused', sys.argv[1]) as cp: cp.restore(sys.argv[2])"
)


def in_child(script: str, env: dict[str, str], *args: str) -> str:
    """What ``script`` prints, run in a child Python whose files stop at 1 MiB."""
    child = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    return child.stdout


@pytest.mark.parametrize(
    ("links", "named"),
    [
        ({"loop": "loop"}, "loop"),
        ({"a": "b", "b": "a"}, "a"),
        ({"sub/a": "b", "sub/b": "a"}, "sub/a"),
        ({"through": "loop/inner", "loop": "loop"}, "loop"),
    ],
)
async def test_a_symlink_loop_is_refused_naming_the_link(tmp_path, links, named):
    src = write_tree(tmp_path / "src", {"ok.txt": b"fine", "sub/ok.txt": b"fine"})
    for rel, to in links.items():
        (src / rel).symlink_to(to)
    with pytest.raises(ValueError, match=f"cannot save {src / named}: the symlink loops"):
        await save(str(tmp_path / "dest"), src)


async def test_a_symlink_loop_as_the_saved_path_is_refused(tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(ValueError, match="loop: the symlink loops"):
        await save(str(tmp_path / "dest"), tmp_path / "loop")


def test_a_file_bigger_than_a_checkpoint_can_record_is_refused(tmp_path, child_env):
    src = write_tree(tmp_path / "src", {"ok.txt": b"fine"})
    try:
        with open(src / "huge.bin", "wb") as f:
            f.truncate(5 * 1024**4 + 1)  # sparse: takes no space
    except OSError:
        pytest.skip("this file system cannot hold a sparse 5 TiB file")
    # In a child whose writes stop at 1 MiB: were the file read, it would fill the disk.
    out = in_child(SAVE, child_env, str(tmp_path / "dest"), str(src))
    assert out.startswith("ValueError cannot save ")
    assert "huge.bin: it holds 5497558138881 bytes" in out


@pytest.mark.parametrize("size", [10**15, 5 * 1024**4 + 1, -1, True, 1.5, "2"])
async def test_a_manifest_with_an_impossible_size_is_refused(location, tmp_path, size):
    dest = await save(location.new(), write_tree(tmp_path / "src", {"a": b"12"}))
    files = location.manifest(dest)["files"]
    key = commit_by_hand(location, dest, {**files, "b": {**files["a"], "size": size}})
    (tmp_path / "out").mkdir()
    with pytest.raises(CorruptCheckpointError, match=f"{key}.* 'b' \\(.*size") as info:
        await restore(dest, tmp_path / "out")
    assert key in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_file_bigger_than_the_restore_folder_allows_is_an_error_naming_it(tmp_path, child_env):
    dest = str(tmp_path / "dest")
    with SyncCheckpoint(dest) as cp:
        cp.save(write_tree(tmp_path / "src", {"sub/big.bin": b"x" * (3 * MiB)}))
    (tmp_path / "out").mkdir()
    out = in_child(RESTORE, child_env, dest, str(tmp_path / "out"))
    assert out.startswith("CheckpointError cannot restore ")
    assert "sub/big.bin: its file system cannot hold a file of 3145728 bytes" in out
    assert list((tmp_path / "out").iterdir()) == []


# Names reserved for the library's own folders.


async def test_reserved_names_are_skipped_when_saving_with_a_warning_each(tmp_path, caplog):
    src = write_tree(
        tmp_path / "src",
        {
            "keep.txt": b"1",
            "sub/keep.txt": b"2",
            ".aiocheckpoint/manifests/v0000000001.json": b"{}",
            "sub/.aiocheckpoint/data/x": b"3",
            "sub/.aiocheckpoint-restore-0123456789ab/half.bin": b"4",
            "deep/er/.aiocheckpoint": b"a file of that name",
        },
    )
    dest = str(tmp_path / "dest")
    with caplog.at_level(logging.WARNING, logger="aiocheckpoint"):
        await save(dest, src)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for rel in [
        ".aiocheckpoint",
        "sub/.aiocheckpoint",
        "sub/.aiocheckpoint-restore-0123456789ab",
        "deep/er/.aiocheckpoint",
    ]:
        assert any(m.startswith(f"not saving {src / rel}: the name is reserved") for m in warned)
    assert len(warned) == 4
    assert await restore_all(dest, tmp_path / "out") == {"keep.txt": b"1", "sub/keep.txt": b"2"}


async def test_a_single_file_with_a_reserved_name_is_refused(tmp_path):
    write_tree(tmp_path / "src", {".aiocheckpoint": b"x"})
    with pytest.raises(ValueError, match=r"\.aiocheckpoint: '\.aiocheckpoint' is reserved"):
        await save(str(tmp_path / "dest"), tmp_path / "src" / ".aiocheckpoint")


@pytest.mark.parametrize(
    "evil",
    [
        ".aiocheckpoint/manifests/v0000000009.json",
        "sub/.aiocheckpoint/x",
        "sub/.aiocheckpoint",
        ".aiocheckpoint-restore-0123456789ab/x",
    ],
)
async def test_a_manifest_naming_a_reserved_path_is_refused(location, tmp_path, evil):
    dest = await save(location.new(), write_tree(tmp_path / "src", {"a": b"1"}))
    files = location.manifest(dest)["files"]
    key = commit_by_hand(location, dest, {**files, evil: files["a"]})
    (tmp_path / "out").mkdir()
    with pytest.raises(CorruptCheckpointError, match="is reserved") as info:
        await restore(dest, tmp_path / "out")
    assert key in str(info.value) and repr(evil) in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []


async def test_a_plain_prefix_restores_without_reserved_paths(s3, bucket, tmp_path, caplog):
    for key in (
        "plain/ok.txt",
        "plain/run1/.aiocheckpoint/manifests/v0000000001.json",
        "plain/.aiocheckpoint-restore-0123456789ab/half.bin",
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    with caplog.at_level(logging.WARNING, logger="aiocheckpoint"):
        assert await restore_all(f"s3://{bucket}/plain", tmp_path / "out") == {"ok.txt": b"x"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "not restoring 2 files" in warned[0]
    assert "run1/.aiocheckpoint/manifests/v0000000001.json" in warned[0]
