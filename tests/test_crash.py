"""A process killed mid-save leaves the last committed checkpoint intact, and the next save
cleans up after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from _s3server import match
from _trees import read_tree, write_tree

from aiocheckpoint import SyncCheckpoint

CHILD = """
import sys
from aiocheckpoint import SyncCheckpoint, TransferConfig

# one request at a time, small files in packs of 64 KiB: many packs, one after another
transfer = TransferConfig(max_concurrency=1, pack_size=64 * 1024)
with SyncCheckpoint(sys.argv[1], transfer=transfer) as cp:
    cp.save(sys.argv[2])
print("committed", flush=True)
"""


def kill_when_new_data_appears(location, dest, before, child) -> None:
    """SIGKILL ``child`` as soon as a data object not in ``before`` exists under ``dest``."""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if location.data_keys(dest) - before:
                os.kill(child.pid, signal.SIGKILL)
                return
            if child.poll() is not None:
                break
            time.sleep(0.001 if location.kind == "local" else 0.02)
        out, err = child.communicate(timeout=30)
        pytest.fail(
            f"the child finished (rc={child.returncode}) before any new data object was seen;"
            f" stdout={out!r} stderr={err[-2000:]!r}"
        )
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)


def test_killed_save_keeps_previous_version_and_next_save_cleans_up(
    location, tmp_path, child_env, request
):
    dest = location.new()
    v1 = {"model.bin": os.urandom(2000), "state/trainer.json": b'{"step": 1}', "empty": b""}
    with SyncCheckpoint(dest) as cp:
        cp.save(write_tree(tmp_path / "v1", v1))
    manifests_v1 = location.manifests(dest)
    data_v1 = location.data_keys(dest)

    if location.kind == "local":
        v2 = {f"d{i % 20}/f{i}.bin": os.urandom(2048) for i in range(3000)}
    else:
        v2 = {f"d{i % 4}/f{i}.bin": os.urandom(2048) for i in range(20)}
        # The commit is the manifest PUT: hold it so the child cannot get past it.
        control = request.getfixturevalue("s3_control")
        control.hold(match("PUT", path_contains="/.aiocheckpoint/manifests/"))
    v2["model.bin"] = b"never committed"
    write_tree(tmp_path / "v2", v2)

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, dest, str(tmp_path / "v2")],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    kill_when_new_data_appears(location, dest, data_v1, child)
    if location.kind == "s3":
        control.reset()

    if location.manifests(dest) != manifests_v1:
        pytest.fail(
            "the child committed its save before it was killed, so this run proves nothing; "
            f"manifests now {location.manifests(dest)}"
        )
    leftovers = location.data_keys(dest) - data_v1
    assert leftovers, "the killed save left nothing behind, so this run proves nothing"
    # a pack (or its temp file), in the save's folder
    assert any("/.aiocheckpoint/" in key for key in leftovers), leftovers

    out = tmp_path / "restored"
    out.mkdir()
    with SyncCheckpoint(location.new(), dest) as cp:
        assert read_tree(cp.restore(out)) == v1

    with SyncCheckpoint(dest) as cp:
        cp.write(b"after the crash")
    assert len(location.manifests(dest)) == 1
    assert location.data_keys(dest) == location.referenced(dest)
    assert not leftovers & location.data_keys(dest)

    out = tmp_path / "after"
    out.mkdir()
    with SyncCheckpoint(location.new(), dest) as cp:
        assert read_tree(cp.restore(out)) == {**v1, "_dst_cp": b"after the crash"}
