"""A hostile file system: symlinks in the restore folder, long names, symlink loops,
impossible sizes and names reserved for the library's own folders."""

# Blocking file work in these async tests is test setup, not library code.

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from _trees import read_tree, write_tree

from aiocheckpoint import (
    AsyncCheckpoint,
    CheckpointError,
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
