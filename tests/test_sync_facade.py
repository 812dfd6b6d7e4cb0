"""The blocking SyncCheckpoint: threads, running loops, Ctrl-C, exit and fork."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import pytest
from _holds import interrupted_when_held
from _s3server import match
from _trees import read_tree
from _trees import restore_all_sync as restore_all
from conftest import Location

from aiocheckpoint import (
    AsyncCheckpoint,
    AsyncPendingSave,
    Checkpoint,
    CheckpointClosedError,
    CheckpointError,
    PendingSave,
    SyncCheckpoint,
)

MiB = 1024 * 1024


def test_every_async_coroutine_has_a_sync_twin_with_the_same_signature():
    coroutines = {
        name
        for name, member in inspect.getmembers(AsyncCheckpoint)
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    }
    assert {"restore", "save", "read", "write", "start_save", "start_write"} <= coroutines
    for name in coroutines - {"aclose"}:
        sync = getattr(SyncCheckpoint, name, None)
        assert sync is not None, f"SyncCheckpoint has no {name}()"
        assert not inspect.iscoroutinefunction(sync)
        want = inspect.signature(getattr(AsyncCheckpoint, name))
        if want.return_annotation == "AsyncPendingSave":  # each returns its own handle
            want = want.replace(return_annotation="PendingSave")
        assert inspect.signature(sync) == want, name
    for method in ("wait", "done", "exception", "cancel", "cancelled"):
        handle = inspect.signature(getattr(AsyncPendingSave, method))
        assert inspect.signature(getattr(PendingSave, method)) == handle, method
    assert inspect.signature(SyncCheckpoint.prev_exists) == inspect.signature(
        AsyncCheckpoint.prev_exists
    )
    assert inspect.signature(SyncCheckpoint.__init__) == inspect.signature(AsyncCheckpoint.__init__)


def test_class_shape():
    assert issubclass(SyncCheckpoint, Checkpoint)
    with pytest.raises(TypeError):
        Checkpoint()
    assert SyncCheckpoint.SRC_LOCAL_FOLDER == "prev_cp"
    assert SyncCheckpoint.TMP_DST_PATH == "_dst_cp"


def test_works_when_called_inside_a_running_event_loop(location, tmp_path):
    dest = location.new()
    (tmp_path / "f.txt").write_bytes(b"from inside a loop")

    async def main() -> tuple[bytes | None, dict[str, bytes]]:
        with SyncCheckpoint(dest) as cp:
            cp.save(tmp_path / "f.txt")
        with SyncCheckpoint(location.new(), dest) as cp:
            return cp.read(), read_tree(cp.restore())

    data, tree = asyncio.run(main())
    assert data == b"from inside a loop"
    assert tree == {"f.txt": b"from inside a loop"}


def test_threads_saving_into_one_checkpoint_all_land(location, tmp_path):
    dest = location.new()
    files = {}
    for i in range(8):
        files[f"t{i}.bin"] = os.urandom(1000 + i)
        (tmp_path / f"t{i}.bin").write_bytes(files[f"t{i}.bin"])
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    with SyncCheckpoint(dest) as cp:

        def work(i: int) -> None:
            try:
                barrier.wait()
                cp.save(tmp_path / f"t{i}.bin")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert restore_all(dest, tmp_path / "out") == files


def test_close_is_idempotent_and_use_after_close_raises(location, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    cp = SyncCheckpoint(location.new(), location.new())
    cp.write(b"before close")
    cp.close()
    cp.close()
    calls = [
        lambda: cp.restore(),
        lambda: cp.restore(tmp_path),
        lambda: cp.save(f),
        lambda: cp.read(),
        lambda: cp.write(b"after close"),
    ]
    for call in calls:
        with pytest.raises(CheckpointClosedError) as info:
            call()
        assert isinstance(info.value, RuntimeError)
    with SyncCheckpoint(location.new()) as cp:
        pass
    with pytest.raises(CheckpointClosedError):
        cp.write(b"after with")


CTRL_C_CHILD = """
import signal
import sys
from aiocheckpoint import SyncCheckpoint, TransferConfig

# Ctrl-C raises KeyboardInterrupt as in a terminal, also when the tests run as a background
# job, whose children start with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

transfer = TransferConfig(multipart_threshold=5 * 2**20, part_size=5 * 2**20)
try:
    with SyncCheckpoint(sys.argv[1], transfer=transfer) as cp:
        cp.save(sys.argv[2])
    print("saved", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
"""


def test_ctrl_c_during_blocking_save_aborts_cleanly(s3_control, s3, bucket, tmp_path, child_env):
    dest = f"s3://{bucket}/cp"
    with SyncCheckpoint(dest) as cp:
        cp.write(b"version 1")
    big = tmp_path / "big.bin"
    big.write_bytes(random.Random(5).randbytes(12 * MiB))
    hold = s3_control.hold(match("PUT", param="partNumber"))

    out, err, code = interrupted_when_held(hold, [CTRL_C_CHILD, dest, str(big)], child_env)
    assert out.strip() == "KeyboardInterrupt", (out, err[-3000:])
    assert code == 0, err[-3000:]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    s3_control.reset()
    assert restore_all(dest, tmp_path / "out") == {"_dst_cp": b"version 1"}


FORGOTTEN_CLOSE_CHILD = """
import sys
from aiocheckpoint import SyncCheckpoint

cp = SyncCheckpoint(sys.argv[1], sys.argv[1])
cp.write(b"no close")
print(cp.restore(), flush=True)
"""


def test_forgotten_close_does_not_hang_exit(bucket, tmp_path, child_env):
    dest = f"s3://{bucket}/cp"
    done = subprocess.run(
        [sys.executable, "-c", FORGOTTEN_CLOSE_CHILD, dest],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    private_folder = Path(done.stdout.strip())
    assert private_folder.name == "prev_cp"
    assert not private_folder.exists(), "the private restore folder outlived the process"
    assert restore_all(dest, tmp_path / "out") == {"_dst_cp": b"no close"}


def _in_forked_child(cp: SyncCheckpoint, dest: str, src: str, tmp_path: Path) -> str:
    try:
        try:
            cp.prev_exists()
            return "the parent's object answered prev_exists() in the child"
        except CheckpointError:
            pass
        try:
            cp.save(tmp_path / "child.txt")
            return "the parent's object saved in the child"
        except CheckpointError as exc:
            refused = str(exc)
        del cp
        gc.collect()  # dropping the parent's object in the child must not hang
        with SyncCheckpoint(dest, src) as own:
            out = tmp_path / "child_out"
            out.mkdir()
            restored = read_tree(own.restore(out))
            (tmp_path / "child.txt").write_bytes(b"from the child")
            own.save(tmp_path / "child.txt")
        return f"refused: {refused}\nworks {sorted(restored)}"
    except BaseException:
        return "crashed " + traceback.format_exc()


def test_a_forked_child_is_told_to_create_its_own_checkpoint_and_that_one_works(location, tmp_path):
    src, dest = location.new(), location.new()
    with SyncCheckpoint(src) as first:
        first.write(b"from the parent")
    cp = SyncCheckpoint(dest, src)
    try:
        cp.write(b"parent saved before fork")
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads running
            pid = os.fork()
        if pid == 0:
            os.close(read_end)
            code = 0
            try:
                os.write(write_end, _in_forked_child(cp, dest, src, tmp_path).encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        deadline = time.monotonic() + 60
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung using the parent's SyncCheckpoint")
            time.sleep(0.05)
        with os.fdopen(read_end, "rb") as pipe:
            report = pipe.read().decode()

        refused, works = report.split("\n")
        assert "create the checkpoint object in the process that uses it" in refused, report
        assert works == "works ['_dst_cp']", report
        assert restore_all(dest, tmp_path / "from_child") == {
            "_dst_cp": b"parent saved before fork",
            "child.txt": b"from the child",
        }
        cp.write(b"parent still works after fork")
        assert cp.read() == b"from the parent"
    finally:
        cp.close()
    assert restore_all(dest, tmp_path / "final")["_dst_cp"] == b"parent still works after fork"


def test_close_from_another_thread_lets_a_save_under_way_finish(s3_control, s3, bucket, tmp_path):
    # The server holds the save's PUT; close() is called from another thread meanwhile.
    # Once the PUT is let go the save commits, and close() returns only after that.
    dest = f"s3://{bucket}/cp"
    store = Location("s3", tmp_path, s3, bucket)
    cp = SyncCheckpoint(dest)
    hold = s3_control.hold(match("PUT", path_contains="/.aiocheckpoint/data/"))
    errors: list[BaseException] = []
    closed = threading.Event()
    committed_when_closed: list[bool] = []

    def save() -> None:
        try:
            cp.write(b"saved while closing")
        except BaseException as exc:
            errors.append(exc)

    def close() -> None:
        cp.close()
        committed_when_closed.append(bool(store.manifests(dest)))
        closed.set()

    saver = threading.Thread(target=save)
    saver.start()
    try:
        assert hold.wait_for(1, timeout=60), "the save never sent its PUT"
        closer = threading.Thread(target=close)
        closer.start()
        # close() has begun once the checkpoint refuses new calls (read() returns None
        # until then: there is no source to restore).
        deadline = time.monotonic() + 60
        while True:
            try:
                assert cp.read() is None
            except CheckpointClosedError:
                break
            assert time.monotonic() < deadline, "close() never began"
            time.sleep(0.01)
        # (that close() waits for the save is proven below: the save committed first)
        assert not closed.is_set(), "close() returned while the save's PUT was held"
    finally:
        hold.release(forward=True)
    saver.join(60)
    closer.join(60)
    assert not saver.is_alive() and not closer.is_alive(), "hung after the PUT was let go"
    assert errors == []
    assert committed_when_closed == [True], "close() returned before the save committed"
    with pytest.raises(CheckpointClosedError):
        cp.write(b"after close")
    assert restore_all(dest, tmp_path / "out") == {"_dst_cp": b"saved while closing"}
