"""A server that ignores If-None-Match on PUT, as some S3-compatible servers do (the test
server drops the header before moto sees it): racing writers may both report success, but
the dest always restores to the whole of one of them, and the library says what it found."""

from __future__ import annotations

import io
import logging
import threading
from typing import Any

import anyio
import pytest
from _s3server import Request
from _trees import restore_all, restore_all_sync, write_tree

from aiocheckpoint import AsyncCheckpoint, CheckpointError, Progress, SyncCheckpoint


def first_manifest_put() -> object:
    """A predicate matching the first manifest PUT only: the one to hold."""
    seen = []

    def predicate(request: Request) -> bool:
        if request.method == "PUT" and "/.aiocheckpoint/manifests/" in request.path:
            seen.append(request)
            return len(seen) == 1
        return False

    return predicate


async def race(s3_control, dest, tmp_path, name, held_tree, other_tree):
    """Two new objects save at once; the first one's commit is held until the second has
    finished (committed and collected), then lands last. What each save raised."""
    hold = s3_control.hold(first_manifest_put())
    outcome: dict[str, BaseException | None] = {}

    async def save(cp: AsyncCheckpoint, tree: dict[str, bytes], key: str) -> None:
        try:
            await cp.save(write_tree(tmp_path / f"{name}-{key}", tree))
            outcome[key] = None
        except CheckpointError as exc:
            outcome[key] = exc

    async with AsyncCheckpoint(dest) as held, AsyncCheckpoint(dest) as other:
        async with anyio.create_task_group() as tg:
            tg.start_soon(save, held, held_tree, "held")
            assert await anyio.to_thread.run_sync(hold.wait_for, 1, 60)
            await save(other, other_tree, "other")
            hold.release(forward=True)
    return outcome


@pytest.mark.anyio
@pytest.mark.parametrize("start", ["new dest", "dest holding a version"])
async def test_racing_writers_lose_no_data_where_if_none_match_is_ignored(
    s3_control, bucket, tmp_path, caplog, start
):
    s3_control.unconditional = True
    caplog.set_level(logging.WARNING, logger="aiocheckpoint")
    for i in range(12):
        dest = f"s3://{bucket}/race{i}"
        base = {"x.bin": b"x0" * 1000, "y.bin": b"y0" * 1000, "big.bin": b"b" * 300_000}
        if start != "new dest":
            async with AsyncCheckpoint(dest) as cp:
                await cp.save(write_tree(tmp_path / f"base{i}", base))
        else:
            base = {}
        # each replaces a file the other keeps: collecting the version before would
        # delete what the last commit names
        held_tree = {"x.bin": b"x-held %d" % i, "big.bin": b"h" * 300_000}
        other_tree = {"y.bin": b"y-other %d" % i}
        outcome = await race(s3_control, dest, tmp_path, f"r{i}", held_tree, other_tree)
        assert outcome == {"other": None, "held": None}  # both report success
        got = await restore_all(dest, tmp_path / f"out{i}")
        assert got == {**base, **held_tree}  # the commit that landed last, whole
    assert "ignores If-None-Match on PUT" in caplog.text
    assert "the S3 server at http://127.0.0.1:" in caplog.text


@pytest.mark.anyio
async def test_where_if_none_match_is_honoured_the_loser_is_told(s3_control, bucket, tmp_path):
    dest = f"s3://{bucket}/race"
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "base", {"x.bin": b"x0", "y.bin": b"y0"}))
    outcome = await race(
        s3_control, dest, tmp_path, "r", {"x.bin": b"x-held"}, {"y.bin": b"y-other"}
    )
    assert outcome["other"] is None
    assert "another writer committed version 2" in str(outcome["held"])
    assert await restore_all(dest, tmp_path / "out") == {"x.bin": b"x0", "y.bin": b"y-other"}


class Unseekable(io.RawIOBase):
    """A stream that cannot seek back, as a pipe: a save of it uploads only once it has
    listed the versions (it cannot upload early on a guess and start over)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._data.readinto(buffer)


def paused_race(dest, tmp_path, name, held_bytes, other_tree):
    """The same race on any server, paused through the public API: the held save (of a
    stream, stored as ``_dst_cp``) waits in its progress callback, once its data is
    stored and before its commit, until the other save has finished (committed and
    collected). What each save raised."""
    stored, go = threading.Event(), threading.Event()
    outcome: dict[str, BaseException | None] = {}

    def pause(event: Progress) -> None:
        everything = (event.files_done, event.bytes_done) == (event.files_total, event.bytes_total)
        if event.files_total and everything and not event.finished:
            stored.set()
            go.wait(60)

    def save(key: str, what: Any, progress: Any = None) -> None:
        try:
            with SyncCheckpoint(dest, progress=progress) as cp:
                cp.save(what)
            outcome[key] = None
        except CheckpointError as exc:
            outcome[key] = exc

    held = threading.Thread(target=save, args=("held", Unseekable(held_bytes), pause))
    held.start()
    try:
        assert stored.wait(60), "the held save never stored its data"
        save("other", write_tree(tmp_path / f"{name}-other", other_tree))
    finally:
        go.set()
        held.join(60)
    assert not held.is_alive(), "the held save did not end"
    return outcome


@pytest.mark.parametrize("start", ["new dest", "dest holding a version"])
def test_racing_writers_on_s3rver_lose_no_data(s3rver, s3rver_bucket, tmp_path, caplog, start):
    caplog.set_level(logging.WARNING, logger="aiocheckpoint")
    for i in range(12):
        dest = f"s3://{s3rver_bucket}/race{i}"
        base = {}
        if start != "new dest":
            base = {"_dst_cp": b"d0" * 1000, "y.bin": b"y0" * 1000, "big.bin": b"b" * 300_000}
            with SyncCheckpoint(dest) as cp:
                cp.save(write_tree(tmp_path / f"base{i}", base))
        # each replaces a file the other keeps
        held, other_tree = b"held %d" % i, {"y.bin": b"y-other %d" % i}
        outcome = paused_race(dest, tmp_path, f"r{i}", held, other_tree)
        assert outcome == {"other": None, "held": None}  # s3rver lets both commit
        got = restore_all_sync(dest, tmp_path / f"out{i}")
        assert got == {**base, "_dst_cp": held}  # the commit that landed last, whole
    assert "ignores If-None-Match on PUT" in caplog.text
    assert f"the S3 server at {s3rver.meta.endpoint_url}" in caplog.text


@pytest.mark.parametrize("start", ["new dest", "dest holding a version"])
def test_the_same_race_on_moto_tells_the_loser(s3_server, bucket, tmp_path, start):
    for i in range(3):
        dest = f"s3://{bucket}/race{i}"
        base: dict[str, bytes] = {}
        if start != "new dest":
            base = {"_dst_cp": b"d0", "y.bin": b"y0"}
            with SyncCheckpoint(dest) as cp:
                cp.save(write_tree(tmp_path / f"base{i}", base))
        version = 2 if base else 1
        other_tree = {"y.bin": b"y-other %d" % i}
        outcome = paused_race(dest, tmp_path, f"r{i}", b"held", other_tree)
        assert outcome["other"] is None
        assert f"another writer committed version {version}" in str(outcome["held"])
        assert restore_all_sync(dest, tmp_path / f"out{i}") == {**base, **other_tree}
