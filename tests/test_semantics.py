"""What a checkpoint means, the same on local disk and S3, through both front ends."""

# Blocking file work in these async tests is test setup, not library code.

from __future__ import annotations

import contextlib
import io
import os
import random
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from _trees import read_tree, write_tree

from aiocheckpoint import (
    AsyncCheckpoint,
    CheckpointNotFoundError,
    SyncCheckpoint,
    TransferConfig,
)

pytestmark = pytest.mark.anyio
LOCATIONS = ("local", "s3", "s3rver")  # s3rver too: see conftest.pytest_generate_tests

MiB = 1024 * 1024


class _SyncAsAwaitable:
    """A SyncCheckpoint driven with the awaitable calls of AsyncCheckpoint."""

    def __init__(self, cp: SyncCheckpoint) -> None:
        self._cp = cp

    def prev_exists(self) -> bool:
        return self._cp.prev_exists()

    async def restore(self, *args: Any) -> Any:
        return self._cp.restore(*args)

    async def save(self, cp: Any) -> None:
        self._cp.save(cp)

    async def read(self) -> bytes | None:
        return self._cp.read()

    async def write(self, b: Any) -> None:
        self._cp.write(b)


Opener = Callable[..., contextlib.AbstractAsyncContextManager[Any]]


@pytest.fixture(params=["async", "sync"])
def open_cp(request: pytest.FixtureRequest) -> Opener:
    @contextlib.asynccontextmanager
    async def open_(dest: Any, src: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        if request.param == "async":
            async with AsyncCheckpoint(dest, src, **kwargs) as cp:
                yield cp
        else:
            with SyncCheckpoint(dest, src, **kwargs) as cp:
                yield _SyncAsAwaitable(cp)

    return open_


async def restored(open_cp: Opener, location: Any, src: str, into: Path) -> dict[str, bytes]:
    """Everything a brand-new checkpoint object restores from ``src``."""
    into.mkdir(parents=True, exist_ok=True)
    async with open_cp(location.new(), src) as cp:
        path = await cp.restore(into)
    assert isinstance(path, Path)
    assert path.resolve() == into.resolve()
    return read_tree(path)


FILES = {
    "a.txt": b"alpha",
    "sub/deeper/b.bin": bytes(range(256)) * 40,
    "ünïcödé/naïve ✓ file.txt": "grüße".encode(),
    "empty": b"",
}


async def test_prev_exists_reports_whether_a_src_was_given(open_cp, location):
    async with open_cp(location.new()) as cp:
        assert cp.prev_exists() is False
    async with open_cp(location.new(), "") as cp:
        assert cp.prev_exists() is False
    async with open_cp(location.new(), location.new()) as cp:
        assert cp.prev_exists() is True


async def test_without_src_restore_and_read_return_none(open_cp, location, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for src in (None, ""):
        async with open_cp(location.new(), src) as cp:
            assert await cp.restore() is None
            assert await cp.restore(out) is None
            assert await cp.read() is None
    assert list(out.iterdir()) == []


async def test_directory_round_trips_with_nested_unicode_and_empty_files(
    open_cp, location, tmp_path
):
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", FILES))
    assert await restored(open_cp, location, dest, tmp_path / "out") == FILES


async def test_large_file_round_trips_byte_exact(open_cp, location, tmp_path):
    data = random.Random(7).randbytes(12 * MiB + 12345)
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    transfer = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
    dest = location.new()
    async with open_cp(dest, transfer=transfer) as cp:
        await cp.save(big)
    out = tmp_path / "out"
    out.mkdir()
    async with open_cp(location.new(), dest, transfer=transfer) as cp:
        path = await cp.restore(out)
    assert (path / "big.bin").read_bytes() == data
    assert read_tree(path).keys() == {"big.bin"}


async def test_restore_without_path_uses_private_prev_cp_folder_removed_on_close(
    open_cp, location, tmp_path
):
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", FILES))
    async with open_cp(location.new(), dest) as cp:
        path = await cp.restore()
        assert isinstance(path, Path)
        assert path.name == "prev_cp"
        assert read_tree(path) == FILES
    assert not path.exists()


async def test_restore_accepts_str_and_pathlike_directories(open_cp, location, tmp_path, tmpdir):
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", FILES))
    as_str = tmp_path / "as_str"
    as_str.mkdir()
    async with open_cp(location.new(), dest) as cp:
        assert read_tree(await cp.restore(str(as_str))) == FILES
    as_py_path = tmpdir.mkdir("as_py_path")
    async with open_cp(location.new(), dest) as cp:
        path = await cp.restore(as_py_path)
    assert path.resolve() == Path(as_py_path).resolve()
    assert read_tree(path) == FILES


async def test_second_restore_returns_first_path_without_downloading_again(
    open_cp, location, tmp_path
):
    src = location.new()
    async with open_cp(src) as cp:
        await cp.save(write_tree(tmp_path / "v1", {"f": b"v1"}))
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    async with open_cp(location.new(), src) as cp:
        path = await cp.restore(first)
        async with open_cp(src) as writer:
            await writer.save(write_tree(tmp_path / "v2", {"f": b"v2", "g": b"new"}))
        assert await cp.restore(second) == path
        assert await cp.restore() == path
        assert read_tree(path) == {"f": b"v1"}
        assert await cp.read() == b"v1"
    assert list(second.iterdir()) == []


async def test_restore_target_must_be_an_existing_directory(open_cp, location, tmp_path):
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", {"f": b"x"}))
    a_file = tmp_path / "a_file"
    a_file.write_bytes(b"not a folder")
    async with open_cp(location.new(), dest) as cp:
        for bad in (a_file, tmp_path / "does-not-exist", str(a_file)):
            with pytest.raises(
                ValueError, match="Checkpoints can be restored to a directory only."
            ):
                await cp.restore(bad)
        assert a_file.read_bytes() == b"not a folder"
        assert not (tmp_path / "does-not-exist").exists()
        good = tmp_path / "good"
        good.mkdir()
        assert read_tree(await cp.restore(good)) == {"f": b"x"}


async def test_missing_src_raises_not_found_on_every_call(open_cp, location, tmp_path, monkeypatch):
    src = location.new()
    out = tmp_path / "out"
    out.mkdir()
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    async with open_cp(location.new(), src) as cp:
        for _ in range(2):
            with pytest.raises(CheckpointNotFoundError) as info:
                await cp.restore(out)
            assert isinstance(info.value, FileNotFoundError)
            assert src.removeprefix("s3://") in str(info.value)
        with pytest.raises(CheckpointNotFoundError):
            await cp.read()
        with pytest.raises(CheckpointNotFoundError):
            await cp.restore()
        assert list(private_tmp.iterdir()) == []  # failed restores leave no temp folder
        assert list(out.iterdir()) == []
        async with open_cp(src) as writer:
            await writer.write(b"appeared later")
        assert await cp.read() == b"appeared later"


async def test_plain_files_written_by_another_tool_restore_as_is(open_cp, location, tmp_path):
    src = location.new()
    plain = {"model.pt": b"weights", "logs/loss.csv": b"step,loss\n1,0.5\n"}
    for key, data in plain.items():
        location.put(src, key, data)
    assert await restored(open_cp, location, src, tmp_path / "out") == plain
    async with open_cp(location.new(), src) as cp:
        path = await cp.restore()
        assert read_tree(path) == plain


async def test_existing_empty_local_folder_restores_empty(open_cp, location, tmp_path):
    src = tmp_path / "empty_src"
    src.mkdir()
    assert await restored(open_cp, location, str(src), tmp_path / "out") == {}
    async with open_cp(location.new(), src) as cp:
        assert await cp.read() is None


async def test_src_with_only_an_uncommitted_save_is_not_found(open_cp, location, tmp_path):
    src = location.new()
    location.put(src, ".aiocheckpoint/data/0000000001-deadbeef/model.pt", b"half written")
    out = tmp_path / "out"
    out.mkdir()
    async with open_cp(location.new(), src) as cp:
        with pytest.raises(CheckpointNotFoundError) as info:
            await cp.restore(out)
    message = str(info.value).lower()
    assert "interrupted" in message or "never committed" in message, str(info.value)
    assert list(out.iterdir()) == []


async def test_uncommitted_leftovers_beside_plain_files_are_not_restored(
    open_cp, location, tmp_path
):
    src = location.new()
    location.put(src, "model.pt", b"by hand")
    location.put(src, ".aiocheckpoint/data/0000000001-deadbeef/model.pt", b"half written")
    assert await restored(open_cp, location, src, tmp_path / "out") == {"model.pt": b"by hand"}


async def test_save_file_is_stored_under_its_name(open_cp, location, tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\x00\x01\x02")
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.save(f)
        await cp.save(str(f))
    assert await restored(open_cp, location, dest, tmp_path / "out") == {
        "weights.bin": b"\x00\x01\x02"
    }


async def test_save_binary_file_object_is_stored_as_dst_cp(open_cp, location, tmp_path):
    data = random.Random(1).randbytes(300_000)
    f = tmp_path / "stream.bin"
    f.write_bytes(data)
    for make in (lambda: open(f, "rb"), lambda: io.BytesIO(data)):
        dest = location.new()
        async with open_cp(dest) as cp:
            with make() as fileobj:
                await cp.save(fileobj)
        out = tmp_path / f"out-{dest.rsplit('/', 1)[-1]}"
        assert await restored(open_cp, location, dest, out) == {"_dst_cp": data}


async def test_save_non_seekable_stream_of_unknown_length(open_cp, location, tmp_path):
    data = random.Random(2).randbytes(7 * MiB + 1)
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb") as w:
            w.write(data)

    feeder = threading.Thread(target=feed)
    feeder.start()
    dest = location.new()
    transfer = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
    try:
        with open(read_fd, "rb") as stream:
            async with open_cp(dest, transfer=transfer) as cp:
                await cp.save(stream)
    finally:
        feeder.join()
    assert await restored(open_cp, location, dest, tmp_path / "out") == {"_dst_cp": data}


async def test_saves_merge_and_later_paths_replace_earlier(open_cp, location, tmp_path):
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.save(write_tree(tmp_path / "one", {"a": b"1", "b/c": b"2", "b/d": b"3"}))
        f = tmp_path / "e"
        f.write_bytes(b"4")
        await cp.save(f)
    async with open_cp(dest) as cp:
        await cp.save(write_tree(tmp_path / "two", {"a": b"one again", "b/d": b"three again"}))
    assert await restored(open_cp, location, dest, tmp_path / "out") == {
        "a": b"one again",
        "b/c": b"2",
        "b/d": b"three again",
        "e": b"4",
    }


async def test_write_stores_bytes_like_as_dst_cp_replacing(open_cp, location, tmp_path):
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.write(b"first")
        await cp.write(bytearray(b"second"))
    async with open_cp(location.new(), dest) as cp:
        assert await cp.read() == b"second"
    async with open_cp(dest) as cp:
        await cp.write(memoryview(b"third, longer than before"))
    assert await restored(open_cp, location, dest, tmp_path / "out") == {
        "_dst_cp": b"third, longer than before"
    }


async def test_read_none_one_or_too_many(open_cp, location, tmp_path):
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.save(empty_dir)
    async with open_cp(location.new(), dest) as cp:
        assert await cp.read() is None

    one = tmp_path / "one.bin"
    one.write_bytes(b"only me")
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.save(one)
    async with open_cp(location.new(), dest) as cp:
        assert await cp.read() == b"only me"

    async with open_cp(dest) as cp:
        await cp.write(b"second file")
    async with open_cp(location.new(), dest) as cp:
        with pytest.raises(ValueError, match="Expected exactly one checkpoint - found 2"):
            await cp.read()


async def test_metadata_folder_never_shows_in_restores(open_cp, location, tmp_path):
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", {"x": b"1"}))
        await cp.save(write_tree(tmp_path / "src2", {"y": b"2"}))
    assert any(k.startswith(".aiocheckpoint/") for k in location.keys(dest))
    async with open_cp(location.new(), dest) as cp:
        path = await cp.restore()
        assert sorted(p.name for p in path.iterdir()) == ["x", "y"]


async def test_symlink_inside_saved_directory_is_stored_as_its_target(open_cp, location, tmp_path):
    src = write_tree(tmp_path / "src", {"real/data.bin": b"payload"})
    (src / "link.bin").symlink_to(Path("real") / "data.bin")
    dest = location.new()
    async with open_cp(dest) as cp:
        await cp.save(src)
    out = tmp_path / "out"
    assert await restored(open_cp, location, dest, out) == {
        "real/data.bin": b"payload",
        "link.bin": b"payload",
    }
    assert not (out / "link.bin").is_symlink()


async def test_symlink_pointing_outside_saved_directory_is_refused(open_cp, location, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"do not upload")
    src = write_tree(tmp_path / "src", {"ok.txt": b"fine"})
    (src / "escape.txt").symlink_to(outside)
    dest = location.new()
    async with open_cp(dest) as cp:
        with pytest.raises(ValueError, match="escape.txt"):
            await cp.save(src)
    assert all(b"do not upload" != location.read(dest, k) for k in location.keys(dest))


async def test_async_checkpoint_works_without_async_with(location, tmp_path):
    dest = location.new()
    cp = AsyncCheckpoint(dest)
    await cp.write(b"lazy")
    await cp.aclose()
    await cp.aclose()
    reader = AsyncCheckpoint(location.new(), dest)
    try:
        assert await reader.read() == b"lazy"
        path = await reader.restore()
    finally:
        await reader.aclose()
    assert not path.exists()


@pytest.mark.needs("conditional")  # elsewhere one version more is kept: test_unconditional
async def test_old_versions_are_removed_after_commit(open_cp, location, tmp_path):
    dest = location.new()
    async with open_cp(dest) as cp:
        for i in range(3):
            await cp.save(write_tree(tmp_path / f"v{i}", {"same": bytes([i]) * 10, f"f{i}": b"x"}))
    assert len(location.manifests(dest)) == 1
    assert location.manifest(dest)["files"].keys() == {"same", "f0", "f1", "f2"}
    assert location.data_keys(dest) == location.referenced(dest)


async def test_local_destination_forms(open_cp, tmp_path, tmpdir):
    root = tmp_path / "forms"
    forms = [
        str(root / "as_str"),
        root / "as_path",
        tmpdir.join("forms", "as_py_path"),
        (root / "as_url").as_uri(),
    ]
    for i, dest in enumerate(forms):
        async with open_cp(dest) as cp:
            await cp.write(f"form {i}".encode())
        async with open_cp(tmp_path / f"unused{i}", dest) as cp:
            assert await cp.read() == f"form {i}".encode()
    assert (root / "as_url").is_dir()


async def test_s3_bucket_root_as_destination(open_cp, s3, bucket, tmp_path):
    dest = f"s3://{bucket}"
    async with open_cp(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", FILES))
    async with open_cp(f"s3://{bucket}/elsewhere", dest) as cp:
        path = await cp.restore()
        assert read_tree(path) == FILES


def test_saving_a_folder_that_holds_its_own_dest_does_not_save_the_checkpoint(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "model.bin").write_bytes(b"weights")
    dest = work / "checkpoints"
    with SyncCheckpoint(dest) as cp:
        cp.save(work)
        cp.save(work)  # the first save's .aiocheckpoint folder is inside work now
    with SyncCheckpoint(tmp_path / "unused", dest) as cp:
        restored = cp.restore()
        assert restored is not None
        files = sorted(p.relative_to(restored).as_posix() for p in restored.rglob("*"))
    assert files == ["model.bin"]
