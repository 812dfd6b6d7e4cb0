"""Progress events of saves, restores and verifies, through the public API: totals first,
never down, never past the total, retries counted once, a few events a second, and a
callback that raises failing the operation cleanly."""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable

import pytest
from _events import Events
from _s3server import match
from _trees import read_tree, write_tree
from botocore.config import Config

from aiocheckpoint import AsyncCheckpoint, Progress, SyncCheckpoint, TransferConfig

MiB = 1024 * 1024
#: Above 5 MiB in 5 MiB parts (ranged GETs back), up to 64 KiB in packs.
PARTS = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)


def model(seed: int = 0) -> dict[str, bytes]:
    """Packed small files, a file sent whole, and one sent in three parts."""
    rng = random.Random(seed)
    files = {f"layers/l{i}.bin": rng.randbytes(rng.randrange(1, 60_000)) for i in range(20)}
    files["whole.bin"] = rng.randbytes(2 * MiB)
    files["big.bin"] = rng.randbytes(12 * MiB)
    return files


def test_save_restore_and_verify_report_by_the_rules(location, tmp_path):
    files = model()
    dest = location.new()
    saved, restored, verified = Events(), Events(), Events()
    with SyncCheckpoint(dest, dest, transfer=PARTS) as cp:
        cp.save(write_tree(tmp_path / "src", files), progress=saved)
        out = tmp_path / "out"
        out.mkdir()
        cp.restore(out, progress=restored)
        assert cp.verify(progress=verified).ok
    assert read_tree(out) == files
    saved.check("save", files)
    restored.check("restore", files)
    verified.check("verify", files)
    for events in (saved, restored, verified):
        events.at_most_paced()


def test_events_come_a_few_a_second_not_one_per_piece(tmp_path):
    # 3,000 files and 96 MiB in 5 MiB parts: many pieces, a few dozen events
    files = {f"f{i:04d}": bytes([i % 256]) * 100 for i in range(3000)}
    files["big.bin"] = random.Random(3).randbytes(96 * MiB)
    small_parts = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
    events = Events()
    with SyncCheckpoint(tmp_path / "cp", tmp_path / "cp", transfer=small_parts) as cp:
        cp.save(write_tree(tmp_path / "src", files), progress=events)
        events.check("save", files)
        events.at_most_paced()
        restored = Events()
        out = tmp_path / "out"
        out.mkdir()
        cp.restore(out, progress=restored)
    restored.check("restore", files)
    restored.at_most_paced()
    assert len(events) < 3000 / 10 and len(restored) < 3000 / 10


def test_retried_requests_count_once(s3_control, bucket, tmp_path):
    files = model(1)
    dest = f"s3://{bucket}/cp"
    faults = [
        # parts and whole objects lost on the way back after the server stored them
        s3_control.disconnect(
            match("PUT", path_contains="/.aiocheckpoint/data/"), applied=True, times=3
        ),
        s3_control.fail(match("PUT"), status=500, code="InternalError", times=2),
        # bodies cut short, then resumed from where they broke
        s3_control.cut(match("GET", path_contains="/.aiocheckpoint/data/"), times=4),
    ]
    patient = Config(retries={"total_max_attempts": 10})
    saved, restored = Events(), Events()
    with SyncCheckpoint(dest, dest, transfer=PARTS, botocore_config=patient) as cp:
        cp.save(write_tree(tmp_path / "src", files), progress=saved)
        out = tmp_path / "out"
        out.mkdir()
        cp.restore(out, progress=restored)
    assert [f.struck for f in faults] == [3, 2, 4]
    assert read_tree(out) == files
    saved.check("save", files)
    restored.check("restore", files)


def test_unchanged_files_count_as_done_at_once(location, tmp_path):
    files = model(2)
    dest = location.new()
    src = write_tree(tmp_path / "src", files)
    again = Events()
    with SyncCheckpoint(dest) as cp:
        cp.save(src)
        cp.save(src, progress=again)
        assert [v.version for v in cp.versions()] == [1]  # nothing changed: no commit
    again.check("save", files)
    assert again[1].bytes_done == again[1].bytes_total  # all of it at once


def test_a_save_that_starts_over_keeps_what_it_counted(bucket, tmp_path, caplog):
    # The first object saves, a second commits over it, the first saves again: its
    # uploads began on the version it knew and start over on the newer one.
    dest = f"s3://{bucket}/cp"
    files = model(4)
    src = write_tree(tmp_path / "src", files)
    events = Events()
    with SyncCheckpoint(dest, transfer=PARTS) as first:
        first.save(src)
        with SyncCheckpoint(dest) as second:
            second.write(b"meanwhile")
        (src / "big.bin").write_bytes(random.Random(5).randbytes(12 * MiB))
        caplog.set_level(logging.DEBUG, logger="aiocheckpoint")
        first.save(src, progress=events)
        assert "uploading again" in caplog.text
        assert [v.version for v in first.versions()] == [3]
    changed = {**files, "big.bin": (src / "big.bin").read_bytes()}
    events.check("save", changed, exact=False)
    assert events[0].bytes_total == sum(map(len, changed.values()))


def test_a_stream_of_unknown_length_grows_the_total(tmp_path):
    data = random.Random(6).randbytes(11 * MiB)
    events = Events()
    with SyncCheckpoint(tmp_path / "cp", tmp_path / "cp", transfer=PARTS) as cp:
        cp.save(io.BufferedReader(io.BytesIO(data)), progress=events)  # type: ignore[arg-type]
        assert cp.read() == data
    events.check("save", {SyncCheckpoint.TMP_DST_PATH: data}, exact=False)


class Stop(Exception):
    pass


class Raising(Events):
    """A callback that records every event and raises at the first ``when`` accepts."""

    def __init__(self, when: Callable[[Progress], bool]) -> None:
        super().__init__()
        self.when = when

    def __call__(self, event: Progress) -> None:
        super().__call__(event)
        if self.when(event):
            raise Stop(f"stopped at {event.bytes_done}")


def test_a_callback_that_raises_fails_the_save_cleanly(location, s3_control, s3, tmp_path):
    dest = location.new()
    with SyncCheckpoint(dest, dest, transfer=PARTS) as cp:
        cp.save(write_tree(tmp_path / "v1", {"a.bin": b"first"}))
        keys = location.keys(dest)
        events = Raising(lambda e: True)  # at the first event
        if location.kind == "s3":  # parts take long enough for an event between them
            s3_control.delay(0.3, match("PUT", param="partNumber"))
            events = Raising(lambda e: e.bytes_done > 0)
        with pytest.raises(Stop, match="stopped at"):
            cp.save(write_tree(tmp_path / "v2", model(7)), progress=events)
        assert not events[-1].finished
        assert (events[-1].bytes_done > 0) == (location.kind == "s3")
        assert location.keys(dest) == keys  # nothing of the failed save is left
        if location.kind == "s3":
            assert not s3.list_multipart_uploads(Bucket=location.bucket).get("Uploads")
        assert cp.read() == b"first"


def test_a_callback_that_raises_fails_a_save_that_started_over(bucket, tmp_path):
    # A new object saving over a version uploads at once, guessing a new checkpoint,
    # then starts over on the version it lists: the callback's error is not lost with
    # the first attempt.
    dest = f"s3://{bucket}/cp"
    with SyncCheckpoint(dest) as cp:
        cp.write(b"first")
    events = Raising(lambda e: True)
    with SyncCheckpoint(dest, dest, transfer=PARTS) as cp:
        with pytest.raises(Stop):
            cp.save(write_tree(tmp_path / "v2", model(10)), progress=events)
        assert len(events) == 1  # never called again
        assert [v.version for v in cp.versions()] == [1]
        assert cp.read() == b"first"


def test_a_callback_that_raises_at_the_last_event_is_logged(location, tmp_path, caplog):
    dest = location.new()
    files = model(11)
    with SyncCheckpoint(dest) as cp:
        cp.save(write_tree(tmp_path / "src", files), progress=Raising(lambda e: e.finished))
        assert [v.version for v in cp.versions()] == [1]  # the save succeeded
    assert "the progress callback failed at the end of a save that succeeded" in caplog.text
    assert "Stop('stopped at" in caplog.text


def test_a_callback_that_raises_fails_restore_and_background_save(tmp_path):
    files = model(8)
    dest = tmp_path / "cp"
    with SyncCheckpoint(dest, dest, transfer=PARTS) as cp:
        cp.save(write_tree(tmp_path / "src", files))
        out = tmp_path / "out"
        out.mkdir()

        def refuse(event: Progress) -> None:
            raise Stop("no")

        with pytest.raises(Stop):
            cp.restore(out, progress=refuse)
        assert list(out.iterdir()) == []  # no staging folder, no file
        pending = cp.start_save(write_tree(tmp_path / "src2", {"x": b"y"}), progress=refuse)
        with pytest.raises(Stop):
            pending.wait()
        assert [v.version for v in cp.versions()] == [1]
        with pytest.raises(Stop):
            cp.verify(progress=refuse)


def test_the_constructors_progress_is_the_default(tmp_path):
    events = Events()
    with SyncCheckpoint(tmp_path / "cp", tmp_path / "cp", progress=events) as cp:
        cp.write(b"x" * 1000)
        assert cp.read() == b"x" * 1000
        assert [e.phase for e in events if e.finished] == ["save", "restore"]
        with pytest.raises(TypeError, match="progress must be a callable"):
            cp.save(tmp_path, progress="bar")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="progress must be a callable"):
        SyncCheckpoint(tmp_path / "cp", progress=1)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_operations_report_on_the_callers_loop(location, tmp_path):
    files = model(9)
    dest = location.new()
    saved, background, verified = Events(), Events(), Events()
    async with AsyncCheckpoint(dest, transfer=PARTS) as cp:
        await cp.save(write_tree(tmp_path / "src", files), progress=saved)
        changed = {**files, "whole.bin": b"changed"}
        pending = await cp.start_save(write_tree(tmp_path / "src2", changed), progress=background)
        await pending.wait()
        assert (await cp.verify(progress=verified)).ok
    saved.check("save", files)
    background.check("save", changed)
    verified.check("verify", changed)
