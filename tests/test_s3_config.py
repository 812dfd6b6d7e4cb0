"""S3 settings come from the standard AWS places, or from explicit options."""

from __future__ import annotations

import os

import pytest
from _trees import restore_all, write_tree

from aiocheckpoint import AsyncCheckpoint, TransferConfig

MiB = 1024 * 1024

pytestmark = pytest.mark.anyio


async def test_endpoint_from_aws_endpoint_url_s3(s3_server, bucket, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    async with AsyncCheckpoint(f"s3://{bucket}/cp") as cp:
        await cp.write(b"via AWS_ENDPOINT_URL_S3")
    assert await restore_all(f"s3://{bucket}/cp", tmp_path / "out") == {
        "_dst_cp": b"via AWS_ENDPOINT_URL_S3"
    }


async def test_explicit_endpoint_and_region_win_over_the_environment(
    s3_server, bucket, tmp_path, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    dest = f"s3://{bucket}/cp"
    options = {"endpoint_url": s3_server.endpoint_url, "region_name": "eu-west-1"}
    async with AsyncCheckpoint(dest, **options) as cp:
        await cp.write(b"explicit")
    assert await restore_all(dest, tmp_path / "out", **options) == {"_dst_cp": b"explicit"}


async def test_small_puts_send_their_body_without_waiting_for_100_continue(
    s3_control, bucket, tmp_path
):
    # Waiting for the server's "100 Continue" costs every PUT one more round trip; a big
    # body still waits for it, to learn why the server refuses it before sending it.
    tree = {"small.txt": b"tiny", "sub/big.bin": os.urandom(11 * MiB)}
    dest = f"s3://{bucket}/cp"
    parts = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
    async with AsyncCheckpoint(dest, transfer=parts) as cp:
        await cp.save(write_tree(tmp_path / "src", tree))
    puts = [
        r
        for r in s3_control.requests
        if r.method == "PUT" and "/cp/" in r.path and not r.path.endswith("/.aiocheckpoint/probe")
    ]
    # the small file, three parts of the big one (5, 5 and 1 MiB), the manifest, its copy
    # (and, beside them, the empty PUTs that learn whether If-None-Match is honoured)
    assert len(puts) == 6
    waited = sorted(r.query for r in puts if r.expect == "100-continue")
    assert [q.split("partNumber=")[1].split("&")[0] for q in waited] == ["1", "2"]
    assert await restore_all(dest, tmp_path / "out") == tree


async def test_a_users_botocore_config_merges_dict_options_key_by_key(s3_server):
    # Config.merge replaces a whole dict option: s3={"addressing_style": "path"} alone
    # would drop aiocheckpoint's payload_signing_enabled=False, and retries its mode.
    from anyio import CapacityLimiter
    from botocore.config import Config

    from aiocheckpoint.storage import S3Options, Storages, parse_location

    user = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 7})
    storages = Storages(S3Options(botocore_config=user), CapacityLimiter(1))
    try:
        store = await storages.open(parse_location("s3://some-bucket/cp", "test"))
        config = store.client.meta.config
        assert config.s3 == {"payload_signing_enabled": False, "addressing_style": "path"}
        assert config.retries == {"mode": "standard", "total_max_attempts": 8}
    finally:
        await storages.aclose()
