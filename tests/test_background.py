"""Background saves: start_save / start_write return once the source is snapshotted; the
save then commits in call order, and its error reaches the caller exactly once."""

from __future__ import annotations

import io
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import anyio
import pytest
from _holds import held_at_once, interrupted_when_held
from _s3server import match
from _trees import read_tree, restore_all, write_tree
from _trees import restore_all_sync as restore_sync

from aiocheckpoint import (
    AsyncCheckpoint,
    AsyncPendingSave,
    CheckpointError,
    PendingSave,
    StorageError,
    SyncCheckpoint,
    TransferConfig,
)

MiB = 1024 * 1024
PUT = match("PUT")
PART = match("PUT", param="partNumber")


@pytest.fixture
def staging(tmp_path, monkeypatch):
    """The temp folder snapshots go to; calling it lists the snapshots left there."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))

    def left() -> list[str]:
        return [p.name for p in folder.iterdir() if p.name.startswith("aiocheckpoint-snapshot-")]

    return left


def model(root: Path, seed: int) -> dict[str, bytes]:
    """A small, a medium (one PUT) and a big (multipart) file, and a folder."""
    rng = random.Random(seed)
    files = {
        "small.bin": rng.randbytes(100 * 1024),
        "medium.bin": rng.randbytes(MiB),
        "big.bin": rng.randbytes(12 * MiB),
        "sub/a.txt": f"seed {seed}".encode(),
    }
    write_tree(root, files)
    return files


def vandalize(root: Path) -> None:
    """What a training loop does to its files next: rewrite in place, truncate, delete."""
    with open(root / "big.bin", "r+b") as f:  # the same inode, as torch.save does
        f.write(b"\0" * MiB)
    with open(root / "medium.bin", "r+b") as f:
        f.truncate(10)
    (root / "small.bin").unlink()
    (root / "sub" / "a.txt").write_bytes(b"changed")


def test_the_snapshot_is_what_commits_while_the_server_holds_every_put(
    s3_control, bucket, tmp_path, staging
):
    dest = f"s3://{bucket}/cp"
    files = model(tmp_path / "model", 1)
    hold = s3_control.hold(PUT)
    with SyncCheckpoint(dest) as cp:
        handle = cp.start_save(tmp_path / "model")
        assert isinstance(handle, PendingSave)
        assert hold.wait_for(1), "the upload never started"
        vandalize(tmp_path / "model")
        assert not handle.done() and handle.version is None
        with pytest.raises(TimeoutError):
            handle.wait(timeout=0.05)  # the save goes on
        hold.release(forward=True)
        handle.wait()
        assert handle.done() and handle.version == 1 and handle.exception() is None
    assert staging() == []
    assert restore_sync(dest, tmp_path / "out") == files


def test_local_snapshot_survives_rewrites_and_deletes(tmp_path, staging):
    dest = str(tmp_path / "cp")
    files = model(tmp_path / "model", 2)
    with SyncCheckpoint(dest) as cp:
        handle = cp.start_save(tmp_path / "model")
        vandalize(tmp_path / "model")
        handle.wait()
        assert handle.version == 1
    assert staging() == []
    assert restore_sync(dest, tmp_path / "out") == files


def test_bytes_like_and_file_objects_are_copied_at_return(location, tmp_path, staging):
    data = bytearray(b"state one" * 1000)
    dest = location.new()
    with SyncCheckpoint(dest, keep_versions=3) as cp:
        first = cp.start_write(data)
        data[:5] = b"XXXXX"
        first.wait()
        view = memoryview(data)
        second = cp.start_write(view)
        view[:5] = b"YYYYY"
        second.wait()
        stream = io.BytesIO(b"from a stream")
        third = cp.start_save(stream)
        stream.seek(0)
        stream.write(b"overwritten!!")
        third.wait()
    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert staging() == []
    assert restore_sync(dest, tmp_path / "out") == {"_dst_cp": b"from a stream"}


def test_two_background_saves_and_a_save_commit_in_call_order(location, tmp_path):
    dest = location.new()
    one = write_tree(tmp_path / "one", {"f.txt": b"one"})
    two = write_tree(tmp_path / "two", {"f.txt": b"two", "g.txt": b"g"})
    with SyncCheckpoint(dest, keep_versions=3) as cp:
        first = cp.start_save(one)
        second = cp.start_save(two)  # waits for the first
        assert first.done()
        cp.write(b"three")  # waits for the second
        assert second.done()
    assert (first.version, second.version) == (1, 2)
    assert [m[-15:] for m in location.manifests(dest)] == [
        "0000000001.json",
        "0000000002.json",
        "0000000003.json",
    ]
    assert restore_sync(dest, tmp_path / "out") == {
        "f.txt": b"two",
        "g.txt": b"g",
        "_dst_cp": b"three",
    }


def test_nothing_changed_commits_nothing_and_has_no_version(location, tmp_path):
    dest = location.new()
    folder = write_tree(tmp_path / "m", {"f.txt": b"same"})
    with SyncCheckpoint(dest) as cp:
        cp.save(folder)
        handle = cp.start_save(folder)
        handle.wait()
    assert handle.done() and handle.version is None and not handle.cancelled()
    assert len(location.manifests(dest)) == 1


def test_keep_versions_counts_only_committed_versions(s3_control, bucket, tmp_path):
    dest = f"s3://{bucket}/cp"
    with SyncCheckpoint(dest, keep_versions=1) as cp:
        cp.write(b"version 1")
        hold = s3_control.hold(PUT)
        handle = cp.start_write(b"version 2")
        assert hold.wait_for(1)
        # the upload is under way: version 1 is still the checkpoint, whole
        assert restore_sync(dest, tmp_path / "during") == {"_dst_cp": b"version 1"}
        hold.release(forward=True)
        handle.wait()
    assert restore_sync(dest, tmp_path / "after") == {"_dst_cp": b"version 2"}


# -- errors: raised exactly once ------------------------------------------------------


def failing_puts(s3_control):
    return s3_control.fail(PUT, status=403, code="AccessDenied", message="no writes today")


def ended(handle: PendingSave) -> None:
    """Wait for the save to end without taking its error (done() reports nothing)."""
    deadline = time.monotonic() + 60
    while not handle.done():
        assert time.monotonic() < deadline, "the save never ended"
        time.sleep(0.01)


def test_an_error_raised_by_wait_is_not_raised_again(s3_control, bucket, tmp_path, staging):
    dest = f"s3://{bucket}/cp"
    model(tmp_path / "m", 3)
    folder = tmp_path / "m"
    with SyncCheckpoint(dest) as cp:
        failing_puts(s3_control)
        handle = cp.start_save(folder)
        with pytest.raises(StorageError, match="AccessDenied") as info:
            handle.wait()
        assert handle.exception() is info.value and handle.version is None
        s3_control.reset()
        cp.write(b"next")  # not raised again
    assert staging() == []
    assert restore_sync(dest, tmp_path / "out") == {"_dst_cp": b"next"}


def test_an_error_not_waited_for_is_raised_by_the_next_save_which_does_nothing(
    s3_control, bucket, tmp_path
):
    dest = f"s3://{bucket}/cp"
    with SyncCheckpoint(dest) as cp:
        cp.write(b"version 1")
        failing_puts(s3_control)
        handle = cp.start_write(b"lost")
        ended(handle)
        cp_error = None
        s3_control.reset()
        try:
            cp.write(b"not saved: the call raises the earlier error instead")
        except StorageError as exc:
            cp_error = exc
        assert cp_error is not None and "AccessDenied" in str(cp_error)
        assert handle.exception() is cp_error
        assert restore_sync(dest, tmp_path / "mid") == {"_dst_cp": b"version 1"}
        cp.write(b"version 2")  # raised once: now saves go on
    assert restore_sync(dest, tmp_path / "out") == {"_dst_cp": b"version 2"}


def test_an_error_never_waited_for_is_raised_by_close_once(s3_control, bucket, staging):
    dest = f"s3://{bucket}/cp"
    cp = SyncCheckpoint(dest)
    failing_puts(s3_control)
    handle = cp.start_write(b"lost")
    with pytest.raises(StorageError, match="AccessDenied"):
        cp.close()
    cp.close()  # once
    assert handle.done() and staging() == []
    with pytest.raises(StorageError):
        handle.wait()  # the handle itself still tells, to whoever asks it


def test_an_error_polled_with_exception_is_not_raised_by_close(s3_control, bucket):
    cp = SyncCheckpoint(f"s3://{bucket}/cp")
    failing_puts(s3_control)
    handle = cp.start_write(b"lost")
    ended(handle)
    assert isinstance(handle.exception(), StorageError)
    cp.close()


def test_leaving_with_on_an_exception_finishes_the_save_and_keeps_that_exception(
    s3_control, bucket, tmp_path, caplog
):
    dest = f"s3://{bucket}/cp"
    with caplog.at_level(logging.ERROR, logger="aiocheckpoint"):
        with pytest.raises(ValueError, match="training diverged") as info:
            with SyncCheckpoint(dest) as cp:
                failing_puts(s3_control)
                cp.start_write(b"lost")
                raise ValueError("training diverged")
    if sys.version_info >= (3, 11):
        assert any(dest in note for note in info.value.__notes__), info.value.__notes__
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and dest in errors[0].getMessage()

    s3_control.reset()
    with pytest.raises(ValueError):
        with SyncCheckpoint(dest) as cp:
            cp.start_write(b"saved although the block failed after it")
            raise ValueError("later")
    assert restore_sync(dest, tmp_path / "out") == {
        "_dst_cp": b"saved although the block failed after it"
    }


def test_a_snapshot_changed_before_upload_is_never_committed(s3_control, bucket, tmp_path, staging):
    dest = f"s3://{bucket}/cp"
    write_tree(tmp_path / "m", {"f.bin": b"a" * (15 * MiB)})
    # one 5 MiB part in flight at a time: the later ones are read after the change
    transfer = TransferConfig(
        multipart_threshold=5 * MiB, part_size=5 * MiB, max_buffer_bytes=5 * MiB
    )
    with SyncCheckpoint(dest, transfer=transfer) as cp:
        cp.write(b"version 1")
        hold = s3_control.hold(PART)
        handle = cp.start_save(tmp_path / "m")
        assert hold.wait_for(1)
        (snap,) = staging()
        for copy in (tmp_path / "tmp" / snap).iterdir():
            copy.write_bytes(b"b" * (15 * MiB))
        hold.release(forward=True)
        with pytest.raises(CheckpointError, match="f.bin: its snapshot"):
            handle.wait()
    assert restore_sync(dest, tmp_path / "out") == {"_dst_cp": b"version 1"}


# -- cancel and Ctrl-C -------------------------------------------------------------


def test_cancel_leaves_the_previous_version_and_no_open_upload(
    s3_control, s3, bucket, tmp_path, staging
):
    dest = f"s3://{bucket}/cp"
    model(tmp_path / "m", 4)
    with SyncCheckpoint(dest) as cp:
        cp.write(b"version 1")
        hold = s3_control.hold(PART)
        handle = cp.start_save(tmp_path / "m")
        assert hold.wait_for(1), "no part was ever sent"
        assert handle.cancel() is True
        assert handle.done() and handle.cancelled() and handle.version is None
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
        assert staging() == []
        handle.wait()  # cancelled: nothing to raise
        assert handle.cancel() is False
        s3_control.reset()
        cp.write(b"version 2")  # the object goes on
    assert restore_sync(dest, tmp_path / "out") == {"_dst_cp": b"version 2"}


CTRL_C_CHILD = """
import os, signal, sys, threading, time
from aiocheckpoint import SyncCheckpoint

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
main = threading.main_thread().ident


def ctrl_c_inside_wait():
    sys.stdin.readline()  # the test server holds a part now
    while True:  # until the main thread blocks inside PendingSave.wait(): then Ctrl-C
        frame, names = sys._current_frames()[main], []
        while frame is not None:
            names.append((frame.f_code.co_name, os.path.basename(frame.f_code.co_filename)))
            frame = frame.f_back
        if names[0][0] == "wait" and ("wait", "_pending.py") in names and "result" in str(names):
            os.kill(os.getpid(), signal.SIGINT)
            return
        time.sleep(0.01)


cp = SyncCheckpoint(sys.argv[1])
handle = cp.start_save(sys.argv[2])
threading.Thread(target=ctrl_c_inside_wait, daemon=True).start()
try:
    handle.wait()
    print("saved", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", handle.cancelled(), flush=True)
cp.close()
"""


def test_ctrl_c_during_wait_cancels_the_save(s3_control, s3, bucket, tmp_path, child_env):
    dest = f"s3://{bucket}/cp"
    with SyncCheckpoint(dest) as cp:
        cp.write(b"version 1")
    model(tmp_path / "m", 5)
    hold = s3_control.hold(PART)
    args = [CTRL_C_CHILD, dest, str(tmp_path / "m")]
    out, err, code = interrupted_when_held(hold, args, child_env, by_child=True)
    assert out.split() == ["KeyboardInterrupt", "True"], (out, err[-3000:])
    assert code == 0, err[-3000:]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    s3_control.reset()
    assert restore_sync(dest, tmp_path / "out") == {"_dst_cp": b"version 1"}


# -- exit, threads, the async handle ------------------------------------------------

EXIT_CHILD = """
import sys
from aiocheckpoint import SyncCheckpoint

cp = SyncCheckpoint(sys.argv[1])  # never closed, never waited for
cp.start_save(sys.argv[2])
"""


def child(
    script: str, args: list[str], env: dict[str, str], *, clean: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a child Python; with ``clean``, it must exit 0 saying nothing."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120
    )
    if clean:
        assert done.returncode == 0 and not done.stderr, done.stderr[-3000:]
    return done


def exit_without_waiting(dest: str, tmp_path: Path, env: dict[str, str]) -> dict[str, bytes]:
    files = model(tmp_path / "m", 6)
    env["TMPDIR"] = str(tmp_path / "tmp")
    child(EXIT_CHILD, [dest, str(tmp_path / "m")], env)
    return files


def test_a_process_that_exits_without_waiting_has_committed(tmp_path, child_env, staging):
    dest = str(tmp_path / "cp")
    files = exit_without_waiting(dest, tmp_path, child_env)
    assert staging() == []
    assert restore_sync(dest, tmp_path / "out") == files


def test_a_process_that_exits_without_waiting_has_committed_to_s3(bucket, tmp_path, staging):
    dest = f"s3://{bucket}/cp"
    import aiocheckpoint

    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(aiocheckpoint.__file__).resolve().parents[1])
    # by host name: the save must finish before the executors that resolve it stop
    env["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL"].replace("127.0.0.1", "localhost")
    files = exit_without_waiting(dest, tmp_path, env)
    assert staging() == []
    assert restore_sync(dest, tmp_path / "out") == files


def test_a_save_failing_at_exit_is_logged_with_the_dest(s3_control, bucket, child_env):
    dest = f"s3://{bucket}/cp"
    failing_puts(s3_control)
    script = "import sys; from aiocheckpoint import SyncCheckpoint\n"
    script += "SyncCheckpoint(sys.argv[1]).start_write(b'lost')\n"
    done = child(script, [dest], child_env, clean=False)
    assert f"background save to {dest} failed" in done.stderr, done.stderr[-3000:]
    assert "AccessDenied" in done.stderr


def test_threads_start_saves_on_one_object_and_wait_from_others(location, tmp_path):
    dest = location.new()
    handles: list[PendingSave] = []
    lock = threading.Lock()

    def start(n: int) -> None:
        folder = write_tree(tmp_path / f"t{n}", {f"t{n}.txt": f"thread {n}".encode()})
        handle = cp.start_save(folder)
        with lock:
            handles.append(handle)

    with SyncCheckpoint(dest, keep_versions=8) as cp:
        threads = [threading.Thread(target=start, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        waiters = [threading.Thread(target=h.wait) for h in handles]
        for t in waiters:
            t.start()
        for t in waiters:
            t.join(120)
    assert sorted(h.version for h in handles) == [1, 2, 3, 4, 5, 6]
    expected = {f"t{n}.txt": f"thread {n}".encode() for n in range(6)}
    assert restore_sync(dest, tmp_path / "out") == expected


@pytest.mark.anyio
async def test_async_start_save_and_its_handle(location, tmp_path, staging):
    dest = location.new()
    files = model(tmp_path / "m", 7)
    async with AsyncCheckpoint(dest) as cp:
        handle = await cp.start_save(tmp_path / "m")
        assert isinstance(handle, AsyncPendingSave)
        vandalize(tmp_path / "m")
        await handle.wait()
        assert handle.done() and handle.version == 1
        second = await cp.start_write(b"blob")
    assert second.done() and second.version == 2  # leaving the block finished it
    assert staging() == []
    assert await restore_all(dest, tmp_path / "out") == {**files, "_dst_cp": b"blob"}


@pytest.mark.anyio
async def test_async_start_save_without_async_with_is_finished_by_aclose(tmp_path, staging):
    cp = AsyncCheckpoint(str(tmp_path / "cp"))
    write_tree(tmp_path / "m", {"f": b"x"})
    handle = await cp.start_save(tmp_path / "m")
    await cp.aclose()
    assert handle.done() and handle.version == 1
    await handle.wait(timeout=0)  # ended: no time needed
    assert staging() == []


@pytest.mark.anyio
async def test_cancelling_an_async_with_block_cancels_its_save_cleanly(
    s3_control, s3, bucket, tmp_path, staging
):
    dest = f"s3://{bucket}/cp"
    model(tmp_path / "m", 8)
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"version 1")
    hold = s3_control.hold(PART)

    async def body() -> None:
        async with AsyncCheckpoint(dest) as cp:
            await cp.start_save(tmp_path / "m")
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(body)
        await held_at_once(hold, 1)
        tg.cancel_scope.cancel()
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert staging() == []
    s3_control.reset()
    assert await restore_all(dest, tmp_path / "out") == {"_dst_cp": b"version 1"}


@pytest.mark.anyio
async def test_a_failure_nobody_saw_is_logged_when_the_block_is_cancelled(
    s3_control, bucket, caplog
):
    dest = f"s3://{bucket}/cp"
    failing_puts(s3_control)
    with caplog.at_level(logging.ERROR, logger="aiocheckpoint"):
        with anyio.CancelScope() as scope:
            async with AsyncCheckpoint(dest) as cp:
                handle = await cp.start_write(b"lost")
                with anyio.fail_after(60):
                    while not handle.done():  # noqa: ASYNC110 - ended, its error not taken
                        await anyio.sleep(0.01)
                scope.cancel()
                await anyio.sleep_forever()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and dest in errors[0] and "AccessDenied" in errors[0], errors


def test_a_forked_child_cannot_wait_for_the_parents_save(s3_control, bucket, tmp_path):
    dest = f"s3://{bucket}/cp"
    hold = s3_control.hold(PUT)
    with SyncCheckpoint(dest) as cp:
        handle = cp.start_write(b"from the parent")
        assert hold.wait_for(1)
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads running
            pid = os.fork()
        if pid == 0:  # the child: report what waiting and cancelling did, then leave
            said = []
            for call in (lambda: handle.wait(timeout=5), handle.cancel):
                try:
                    call()
                    said.append("returned")
                except CheckpointError as exc:
                    said.append(str(exc))
            os.write(write_end, "\n".join(said).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            said = pipe.read().decode().split("\n")
        os.waitpid(pid, 0)
        hold.release(forward=True)
        handle.wait()
    assert len(said) == 2 and all("forked from it" in line for line in said), said
    assert handle.version == 1


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_async_background_save_under_trio(tmp_path):
    dest = str(tmp_path / "cp")
    write_tree(tmp_path / "m", {"f.txt": b"under trio"})
    async with AsyncCheckpoint(dest) as cp:
        handle = await cp.start_save(tmp_path / "m")
        with anyio.fail_after(60):
            await handle.wait()
        assert handle.version == 1
        late = await cp.start_write(b"x")
        assert late.cancel() is True
        await late.wait()
        assert late.cancelled() and late.version is None
    assert read_tree(tmp_path / "m") == {"f.txt": b"under trio"}
    assert await restore_all(dest, tmp_path / "out") == {"f.txt": b"under trio"}


def test_small_files_are_packed_from_their_snapshot(location, tmp_path):
    dest = location.new()
    files = {f"d{n % 3}/f{n}.txt": os.urandom(n * 7) for n in range(300)}
    write_tree(tmp_path / "m", files)
    with SyncCheckpoint(dest, transfer=TransferConfig(pack_size=64 * 1024)) as cp:
        cp.start_save(tmp_path / "m").wait()
        cp.start_save(tmp_path / "m").wait()  # unchanged, by the snapshot's CRC-32s
    assert len(location.manifests(dest)) == 1
    packs = {e["object"] for e in location.manifest(dest)["files"].values()}
    assert 1 < len(packs) < 20
    assert restore_sync(dest, tmp_path / "out") == files


def test_a_file_bigger_than_one_copy_range_is_snapshotted_whole(tmp_path, staging):
    dest = str(tmp_path / "cp")
    big = tmp_path / "m" / "big.bin"
    big.parent.mkdir()
    data = bytes(range(256)) * (65 * MiB // 256) + b"tail"  # over the 64 MiB of one range
    big.write_bytes(data)
    with SyncCheckpoint(dest) as cp:
        handle = cp.start_save(big.parent)
        with open(big, "r+b") as f:
            f.seek(64 * MiB)
            f.write(b"changed in the second range")
        handle.wait()
    assert staging() == []
    assert restore_sync(dest, tmp_path / "out") == {"big.bin": data}


GC_ON_LOOP_CHILD = """
import gc, sys
from aiocheckpoint import SyncCheckpoint

gc.disable()


class Trainer:
    pass


trainer = Trainer()
trainer.checkpoint = SyncCheckpoint(sys.argv[1])
trainer.me = trainer  # a reference cycle: only the cycle collector frees it
trainer.checkpoint.start_save(sys.argv[2])  # the handle dropped
portal = trainer.checkpoint._loop.portal
del trainer
portal.call(gc.collect)  # the collector happens to run on the checkpoint's own loop thread
"""


def test_a_checkpoint_collected_on_its_loop_thread_still_commits(tmp_path, child_env):
    dest = str(tmp_path / "cp")
    files = {"f.bin": os.urandom(MiB)}
    write_tree(tmp_path / "m", files)
    child(GC_ON_LOOP_CHILD, [dest, str(tmp_path / "m")], child_env)
    assert restore_sync(dest, tmp_path / "out") == files
