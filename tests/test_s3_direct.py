"""Small PUTs sent directly after botocore has sent one, and the way back to botocore."""

from __future__ import annotations

import os

import pytest
from _s3server import match
from _trees import restore_all, write_tree

from aiocheckpoint import AsyncCheckpoint, StorageError

pytestmark = pytest.mark.anyio

DATA_PUT = match("PUT", path_contains="/data/")


def files(tag: str, count: int = 12) -> dict[str, bytes]:
    return {f"{tag}/f{i:02d}.bin": os.urandom(100 + i) for i in range(count)}


async def test_after_one_put_through_botocore_small_puts_go_out_directly(
    s3_control, bucket, tmp_path
):
    dest = f"s3://{bucket}/cp"
    first, second = files("first", 1), files("second")
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "a", first))
        taught = s3_control.matching(DATA_PUT)
        s3_control.reset()
        await cp.save(write_tree(tmp_path / "b", second))
    assert [r.by_botocore for r in taught] == [True]
    puts = s3_control.matching(DATA_PUT)
    assert len(puts) == len(second)
    assert not any(r.by_botocore for r in puts)
    # latest.json is a plain PUT too; the manifest's conditional PUT stays with botocore
    assert [r.by_botocore for r in s3_control.matching(match("PUT", path_contains="latest"))] == [
        False
    ]
    assert all(r.by_botocore for r in s3_control.matching(match("PUT", path_contains="manifests")))
    assert await restore_all(dest, tmp_path / "out") == {**first, **second}


async def test_keys_that_need_escaping_go_out_directly_and_come_back_intact(
    s3_control, s3, bucket, tmp_path
):
    dest = f"s3://{bucket}/run 1/ü+x=y&z~"
    tree = {"first.bin": b"teach"}
    odd = {"a b/ü+x=y&z~'(1).bin": os.urandom(300), "sp ace/%41.bin": os.urandom(7)}
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "a", tree))
        s3_control.reset()
        await cp.save(write_tree(tmp_path / "b", odd))
    puts = s3_control.matching(DATA_PUT)
    assert len(puts) == len(odd) and not any(r.by_botocore for r in puts)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert all(k.startswith("run 1/ü+x=y&z~/") for k in keys)
    assert await restore_all(dest, tmp_path / "out") == {**tree, **odd}


@pytest.mark.parametrize(
    ("status", "code"), [(503, "SlowDown"), (500, "InternalError"), (403, "AccessDenied")]
)
async def test_a_failed_direct_put_is_sent_again_through_botocore(
    s3_control, bucket, tmp_path, status, code
):
    # A server error pauses direct PUTs (botocore's backoff decides for a while); any other
    # answer turns them off. Either way the next save here goes through botocore.
    dest = f"s3://{bucket}/cp"
    first, second, third = files("first", 1), files("second"), files("third", 3)
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "a", first))
        s3_control.reset()
        s3_control.fail(DATA_PUT, status=status, code=code, times=1)
        await cp.save(write_tree(tmp_path / "b", second))
        puts = s3_control.matching(DATA_PUT)
        s3_control.reset()
        await cp.save(write_tree(tmp_path / "c", third))
        later = s3_control.matching(DATA_PUT)
    failed = puts[0]
    assert not failed.by_botocore
    assert [r.by_botocore for r in puts if r.path == failed.path] == [False, True]
    assert len(puts) == len(second) + 1
    assert [r.by_botocore for r in later] == [True] * len(third)
    assert await restore_all(dest, tmp_path / "out") == {**first, **second, **third}


async def test_a_put_refused_both_ways_raises_the_error_naming_the_object(
    s3_control, bucket, tmp_path
):
    dest = f"s3://{bucket}/cp"
    first = files("first", 1)
    async with AsyncCheckpoint(dest) as cp:
        await cp.save(write_tree(tmp_path / "a", first))
        s3_control.fail(DATA_PUT, status=403, code="AccessDenied", message="no writes here")
        with pytest.raises(StorageError) as caught:
            await cp.save(write_tree(tmp_path / "b", files("second", 1)))
    message = str(caught.value)
    assert f"s3://{bucket}/cp/.aiocheckpoint/data/" in message and "second/f00.bin" in message
    assert "AccessDenied" in message and "no writes here" in message
    s3_control.reset()
    assert await restore_all(dest, tmp_path / "out") == first


async def test_a_client_that_signs_payloads_keeps_every_put_with_botocore(
    s3_control, bucket, tmp_path
):
    # A direct PUT would not hash its body, so a config that asks for it keeps botocore.
    from botocore.config import Config

    dest = f"s3://{bucket}/cp"
    first, second = files("first", 1), files("second")
    config = Config(s3={"payload_signing_enabled": True})
    async with AsyncCheckpoint(dest, botocore_config=config) as cp:
        await cp.save(write_tree(tmp_path / "a", first))
        s3_control.reset()
        await cp.save(write_tree(tmp_path / "b", second))
    assert [r.by_botocore for r in s3_control.matching(DATA_PUT)] == [True] * len(second)
    assert await restore_all(dest, tmp_path / "out") == {**first, **second}
