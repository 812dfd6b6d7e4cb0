"""Broken connections, lost responses, 5xx and silent servers: saves and restores through
the public API, against moto with the test server's faults (``_faults``)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import anyio
import pytest
from _faults import silent_endpoint
from _s3server import Request, match
from _trees import read_tree, restore_all, write_tree
from botocore.config import Config
from conftest import Location

from aiocheckpoint import AsyncCheckpoint, StorageError, SyncCheckpoint, TransferConfig

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
#: Files above 5 MiB go in 5 MiB parts and come back as ranged GETs.
PARTS = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
OBJECT_GET = match("GET", path_contains="/.aiocheckpoint/")  # objects, not listings


def tree(seed: int) -> dict[str, bytes]:
    """Small files (fetched a batch at a time), one fetched whole, one in three ranges."""
    rng = random.Random(seed)
    files = {f"small/f{i}.bin": rng.randbytes(rng.randrange(1, 300_000)) for i in range(8)}
    files["whole.bin"] = rng.randbytes(2 * MiB)
    files["big.bin"] = rng.randbytes(11 * MiB)
    return files


def resumed(request: Request) -> bool:
    return request.method == "GET" and bool(request.if_match)


def object_key(s3: object, bucket: str, dest: str, name: str) -> str:
    """The path the server sees for the object holding ``name`` in the newest version."""
    entry = Location("s3", Path(), s3, bucket).manifest(dest)["files"][name]
    return f"/{bucket}/cp/.aiocheckpoint/{entry['object']}"


async def test_restores_survive_bodies_cut_short(s3_control, bucket, tmp_path):
    files = tree(16)
    dest, blob = f"s3://{bucket}/cp", f"s3://{bucket}/blob"
    data = random.Random(17).randbytes(3 * MiB)
    async with AsyncCheckpoint(dest, transfer=PARTS) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    with SyncCheckpoint(blob) as sync_cp:
        sync_cp.write(data)

    cut = s3_control.cut(OBJECT_GET, probability=0.05, seed=16)
    # A resume may be cut too: with botocore's 3 attempts about one body in 8,000 would
    # still fail (0.05 ** 3); with 10 none does in any run of this test.
    patient = Config(retries={"total_max_attempts": 10})
    for i in range(20):
        got = await restore_all(dest, tmp_path / f"out{i}", transfer=PARTS, botocore_config=patient)
        assert got == files, f"restore {i}"
        with SyncCheckpoint(f"s3://{bucket}/unused", blob, botocore_config=patient) as sync_cp:
            assert sync_cp.read() == data, f"read {i}"
    assert cut.struck > 0
    # Each cut body went on with one ranged GET pinned to its ETag, from where it broke.
    assert len(s3_control.matching(resumed)) == cut.struck


@pytest.mark.parametrize("name", ["small/f3.bin", "whole.bin", "big.bin", "manifest"])
async def test_a_body_cut_every_time_fails_after_the_configured_attempts(
    s3_control, s3, bucket, tmp_path, caplog, name
):
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest, transfer=PARTS) as cp:
        await cp.save(write_tree(tmp_path / "src", tree(3)))
    if name == "manifest":
        key = f"/{bucket}/cp/" + Location("s3", tmp_path, s3, bucket).manifests(dest)[-1]
        # latest.json, the manifest's copy, is cut too: else the manifest is not read.
        cut = {key, f"/{bucket}/cp/.aiocheckpoint/latest.json"}
    else:
        key = object_key(s3, bucket, dest, name)
        cut = {key}
    # big.bin: its middle range only, as each range has attempts of its own.
    end = f"-{10 * MiB - 1}" if name == "big.bin" else ""

    def target(r: Request) -> bool:
        return r.method == "GET" and r.path in cut and r.range.endswith(end)

    s3_control.cut(target, after=100)
    config = Config(retries={"total_max_attempts": 3})
    with caplog.at_level(logging.DEBUG, logger="aiocheckpoint"):
        with pytest.raises(StorageError) as info:
            await restore_all(dest, tmp_path / "out", transfer=PARTS, botocore_config=config)
    url = f"s3:/{key}"
    assert url in str(info.value)
    assert "after 3 attempts" in str(info.value)
    assert len(s3_control.matching(lambda r: target(r) and r.path == key)) == 3
    logged = [r.getMessage() for r in caplog.records if url in r.getMessage()]
    assert any("attempt 3 of 3 from byte" in line for line in logged), logged
    assert read_tree(tmp_path / "out") == {}


@pytest.mark.parametrize(
    ("setting", "attempts"),
    [
        ("default", 3),
        ("AWS_MAX_ATTEMPTS=4", 4),
        ("max_attempts=1", 2),  # retries after the first
        ("total_max_attempts=2", 2),
        ("mode=legacy", 5),
    ],
)
async def test_resumes_follow_the_clients_retry_settings(
    s3_control, s3, bucket, tmp_path, monkeypatch, setting, attempts
):
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "src", {"a.bin": bytes(5000)}))
    name, _, value = setting.partition("=")
    config = None
    if name == "AWS_MAX_ATTEMPTS":
        monkeypatch.setenv(name, value)
    elif value:
        config = Config(retries={name: int(value) if value.isdigit() else value})
    cut = match("GET", path_contains=object_key(s3, bucket, dest, "a.bin"))
    s3_control.cut(cut, after=100)
    with pytest.raises(StorageError, match=f"after {attempts} attempts"):
        await restore_all(dest, tmp_path / "out", botocore_config=config)
    assert len(s3_control.matching(cut)) == attempts


async def saved_whole(
    s3: object, bucket: str, tmp_path: Path, seed: int
) -> tuple[str, dict[str, bytes], str]:
    """A checkpoint of ``tree(seed)`` at s3://bucket/cp: its URL, its files, and the path
    the server sees for the object of whole.bin."""
    dest = f"s3://{bucket}/cp"
    files = tree(seed)
    async with AsyncCheckpoint(dest, transfer=PARTS) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    return dest, files, object_key(s3, bucket, dest, "whole.bin")


async def test_a_body_that_stalls_is_resumed_after_the_read_timeout(
    s3_control, s3, bucket, tmp_path
):
    dest, files, key = await saved_whole(s3, bucket, tmp_path, seed=9)
    # The body stops after 1 MiB and the connection stays open, silent (until the test
    # ends): the client's read timeout ends the wait, and the rest comes from a resume.
    s3_control.cut(match("GET", path_contains=key), after=MiB, stall=600, times=1)
    config = Config(read_timeout=3)
    assert await restore_all(dest, tmp_path / "out", botocore_config=config) == files
    assert [r.range for r in s3_control.matching(resumed)] == [f"bytes={MiB}-{2 * MiB - 1}"]


async def test_an_object_replaced_before_the_resume_is_never_spliced(
    s3_control, s3, bucket, tmp_path
):
    dest, files, key = await saved_whole(s3, bucket, tmp_path, seed=5)
    s3_control.cut(match("GET", path_contains=key), after=MiB, times=1)
    resume = s3_control.hold(lambda r: resumed(r) and r.path == key)
    out = tmp_path / "out"
    errors: list[BaseException] = []

    async def restore() -> None:
        try:
            await restore_all(dest, out, transfer=PARTS)
        except StorageError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(restore)
        assert await anyio.to_thread.run_sync(resume.wait_for, 1, 60)
        # Same size, other bytes: only the ETag tells them apart.
        other = bytes(len(files["whole.bin"]))
        await anyio.to_thread.run_sync(
            lambda: s3.put_object(Bucket=bucket, Key=key.split("/", 2)[2], Body=other)
        )
        resume.release(forward=True)
    assert len(errors) == 1
    assert "changed while being read" in str(errors[0])
    assert f"s3:/{key}" in str(errors[0])
    assert read_tree(out) == {}


async def test_a_restore_cancelled_while_resuming_is_cancelled_not_an_error(
    s3_control, s3, bucket, tmp_path
):
    dest = f"s3://{bucket}/cp"
    async with AsyncCheckpoint(dest, transfer=PARTS) as cp:
        await cp.save(write_tree(tmp_path / "src", tree(13)))
    key = object_key(s3, bucket, dest, "whole.bin")
    s3_control.cut(match("GET", path_contains=key), after=MiB, times=1)
    resume = s3_control.hold(lambda r: resumed(r) and r.path == key)
    out = tmp_path / "out"
    out.mkdir()
    async with AsyncCheckpoint(f"s3://{bucket}/unused", dest, transfer=PARTS) as cp:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(cp.restore, out)
                assert await anyio.to_thread.run_sync(resume.wait_for, 1, 60)
                scope.cancel()
    assert scope.cancelled_caught  # no StorageError wrapped around it
    assert read_tree(out) == {}


@pytest.mark.parametrize("applied", [False, True], ids=["reset", "response-lost"])
async def test_uploads_survive_connection_resets(s3_control, s3, bucket, tmp_path, applied):
    # Each kind of PUT loses its connection once before any answer; with ``applied``,
    # after the server stored it. The manifest's PUT is conditional (If-None-Match: *):
    # landed but unanswered, its retry meets itself, and that is still this save's commit.
    dest = f"s3://{bucket}/cp"
    files = tree(7)
    manifest_put = match("PUT", path_contains="/.aiocheckpoint/manifests/")
    faults = [
        s3_control.disconnect(manifest_put, applied=applied, times=1),
        s3_control.disconnect(match("PUT", param="partNumber"), applied=applied, times=1),
        s3_control.disconnect(
            lambda r: r.method == "PUT" and "/.aiocheckpoint/data/" in r.path and not r.query,
            applied=applied,
            times=2,
        ),
    ]
    async with AsyncCheckpoint(dest, transfer=PARTS) as cp:
        await cp.save(write_tree(tmp_path / "src", files))
    assert [f.struck for f in faults] == [1, 1, 2]
    assert len(s3_control.matching(manifest_put)) == 2
    s3_control.reset()
    assert len(Location("s3", tmp_path, s3, bucket).manifests(dest)) == 1
    assert await restore_all(dest, tmp_path / "out") == files


async def test_a_server_that_never_answers_fails_within_the_users_timeouts(s3_server):
    # 3 attempts of 2 s and botocore's backoff (at most 1 + 2 s) per request; a failed save
    # then tries for at most 5 s to delete what it wrote: under 20 s on any machine.
    config = Config(read_timeout=2, retries={"max_attempts": 2})
    with silent_endpoint() as endpoint:
        options = {"endpoint_url": endpoint, "botocore_config": config}
        async with AsyncCheckpoint("s3://silent/cp", "s3://silent/prev", **options) as cp:
            with SyncCheckpoint("s3://silent/cp2", **options) as sync_cp:

                async def save() -> None:
                    with anyio.fail_after(20), pytest.raises(StorageError, match="s3://silent/"):
                        # abandon_on_cancel: a hang fails the test instead
                        await anyio.to_thread.run_sync(sync_cp.write, b"x", abandon_on_cancel=True)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(save)
                    with anyio.fail_after(20), pytest.raises(StorageError, match="s3://silent/"):
                        await cp.restore()


async def test_saves_and_restores_succeed_through_5xx(s3_control, bucket, tmp_path):
    files = tree(11)
    dest = f"s3://{bucket}/cp"
    faults = [
        s3_control.fail(match(), status=500, code="InternalError", probability=0.05, seed=1),
        s3_control.fail(match(), status=503, code="SlowDown", probability=0.05, seed=2),
    ]
    # A request fails three times in a row once in 1,000 (0.1 ** 3), and these cycles
    # send over a hundred: 10 attempts make that never happen.
    patient = Config(retries={"total_max_attempts": 10})
    for i in range(3):
        files[f"cycle{i}.bin"] = random.Random(i).randbytes(1000 * (i + 1))
        async with AsyncCheckpoint(dest, transfer=PARTS, botocore_config=patient) as cp:
            await cp.save(write_tree(tmp_path / f"src{i}", files))
        got = await restore_all(dest, tmp_path / f"out{i}", transfer=PARTS, botocore_config=patient)
        assert got == files
    assert all(f.struck > 0 for f in faults)
