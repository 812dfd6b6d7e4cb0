"""Caller mistakes, bad configuration and broken storage raise the documented errors."""

# Blocking file work in these async tests is test setup, not library code.

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import sys
from pathlib import Path

import anyio
import pytest
from _s3server import match
from aiobotocore.config import AioConfig

from aiocheckpoint import (
    AsyncCheckpoint,
    CheckpointClosedError,
    CheckpointError,
    StorageError,
    SyncCheckpoint,
    TransferConfig,
)

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
CLASSES = [AsyncCheckpoint, SyncCheckpoint]


@pytest.mark.parametrize("cls", CLASSES)
def test_unknown_scheme_is_refused_at_construction(cls, tmp_path):
    for args in [("gs://bucket/cp",), (str(tmp_path), "gs://bucket/cp")]:
        with pytest.raises(ValueError, match="gs"):
            cls(*args)
    with pytest.raises(ValueError, match="ftp"):
        cls("ftp://host/cp")


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("url", ["s3://", "s3:///prefix"])
def test_s3_url_without_bucket_is_refused(cls, url, tmp_path):
    with pytest.raises(ValueError):
        cls(url)
    with pytest.raises(ValueError):
        cls(str(tmp_path), url)


def test_transfer_config_is_validated_frozen_and_keyword_only():
    config = TransferConfig()
    assert config.max_concurrency == 64
    assert config.multipart_threshold == 8 * MiB
    assert config.part_size == 8 * MiB
    assert config.max_buffer_bytes is None
    for field in ("max_concurrency", "multipart_threshold", "part_size", "max_buffer_bytes"):
        for bad in (0, -1):
            with pytest.raises(ValueError, match=field):
                TransferConfig(**{field: bad})
    with pytest.raises(ValueError):
        TransferConfig(part_size=5 * MiB - 1)
    assert TransferConfig(part_size=5 * MiB).part_size == 5 * MiB
    with pytest.raises(TypeError):
        TransferConfig(4)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_concurrency = 1  # type: ignore[misc]


@pytest.mark.parametrize("cls", CLASSES)
def test_transfer_must_be_a_transfer_config(cls, tmp_path):
    with pytest.raises(TypeError, match="TransferConfig"):
        cls(str(tmp_path), transfer={"max_concurrency": 4})


@pytest.mark.parametrize("cls", CLASSES)
def test_keep_versions_below_one_is_refused(cls, tmp_path):
    with pytest.raises(ValueError, match="keep_versions"):
        cls(str(tmp_path), keep_versions=0)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"keep_versions": "2"}, "keep_versions"),
        ({"keep_versions": True}, "keep_versions"),
        ({"keep_versions": 1.0}, "keep_versions"),
        ({"endpoint_url": 9000}, "endpoint_url"),
        ({"region_name": b"us-east-1"}, "region_name"),
        ({"botocore_config": {"read_timeout": 2}}, "botocore_config"),
        ({"transfer": TransferConfig}, "TransferConfig"),
    ],
)
def test_constructor_arguments_of_the_wrong_type_raise_type_error(cls, kwargs, named, tmp_path):
    with pytest.raises(TypeError, match=named):
        cls(str(tmp_path), **kwargs)
    with pytest.raises(TypeError, match="checkpoint_dest"):
        cls(42)
    with pytest.raises(TypeError, match="checkpoint_src"):
        cls(str(tmp_path), 42)


@pytest.mark.parametrize("field", ["max_concurrency", "part_size", "max_buffer_bytes"])
@pytest.mark.parametrize("bad", ["8", 8.0, True])
def test_transfer_settings_of_the_wrong_type_raise_type_error(field, bad):
    with pytest.raises(TypeError, match=field):
        TransferConfig(**{field: bad})


@pytest.fixture(params=["async", "sync"])
def api(request):
    return request.param


async def call(cp, method: str, *args):
    if isinstance(cp, SyncCheckpoint):
        return getattr(cp, method)(*args)
    return await getattr(cp, method)(*args)


def make(api: str, *args, **kwargs):
    return (AsyncCheckpoint if api == "async" else SyncCheckpoint)(*args, **kwargs)


async def close(cp) -> None:
    if isinstance(cp, SyncCheckpoint):
        cp.close()
    else:
        await cp.aclose()


async def test_caller_mistakes_raise_builtin_errors_and_change_nothing(api, location, tmp_path):
    src = location.new()
    seed = make(api, src)
    await call(seed, "write", b"previous")
    await close(seed)

    dest = location.new()
    cp = make(api, dest, src)
    try:
        a_file = tmp_path / "a_file"
        a_file.write_bytes(b"x")
        with pytest.raises(ValueError, match="directory"):
            await call(cp, "restore", a_file)

        missing = tmp_path / "no" / "such-file.bin"
        with pytest.raises(FileNotFoundError) as info:
            await call(cp, "save", missing)
        assert str(missing) in str(info.value)
        with pytest.raises(FileNotFoundError, match="such-file.bin"):
            await call(cp, "save", str(missing))

        for wrong in (123, None, [str(a_file)]):
            with pytest.raises(TypeError, match=type(wrong).__name__):
                await call(cp, "save", wrong)
        for raw in (b"raw bytes", bytearray(b"raw"), memoryview(b"raw")):
            with pytest.raises(TypeError, match=r"use write\(\)"):
                await call(cp, "save", raw)
        with open(a_file) as text_file:
            with pytest.raises(TypeError, match="TextIOWrapper"):
                await call(cp, "save", text_file)
        with open(a_file, "ab") as write_only:
            with pytest.raises(ValueError, match="not readable"):
                await call(cp, "save", write_only)

        for wrong in ("not bytes", 42, None):
            with pytest.raises(TypeError, match=type(wrong).__name__):
                await call(cp, "write", wrong)
        with pytest.raises(TypeError, match="int"):
            await call(cp, "restore", 42)

        assert location.manifests(dest) == []
        await call(cp, "write", b"still usable")
        assert await call(cp, "read") == b"previous"
    finally:
        await close(cp)
    reader = make(api, location.new(), dest)
    try:
        assert await call(reader, "read") == b"still usable"
    finally:
        await close(reader)


async def test_async_use_after_close_raises(location, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    cp = AsyncCheckpoint(location.new(), location.new())
    await cp.write(b"x")
    await cp.aclose()
    await cp.aclose()
    for method, args in [("restore", ()), ("save", (f,)), ("read", ()), ("write", (b"y",))]:
        with pytest.raises(CheckpointClosedError):
            await getattr(cp, method)(*args)


async def test_missing_bucket_is_a_storage_error_naming_it(s3_server, api, tmp_path):
    name = "no-such-bucket-for-aiocheckpoint"
    cp = make(api, f"s3://{name}/cp", f"s3://{name}/prev")
    try:
        with pytest.raises(StorageError) as info:
            await call(cp, "write", b"data")
        assert name in str(info.value)
        assert "NoSuchBucket" in str(info.value)
        assert info.value.__cause__ is not None

        # A typo in the bucket must not look like "no checkpoint yet, start fresh".
        with pytest.raises(StorageError) as info:
            await call(cp, "restore")
        assert name in str(info.value)
    finally:
        await close(cp)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_endpoint_is_a_storage_error_naming_the_bucket(s3_server, api):
    config = AioConfig(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1})
    cp = make(
        api,
        "s3://unreachable-bucket/cp",
        "s3://unreachable-bucket/prev",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        botocore_config=config,
    )
    try:
        with anyio.fail_after(30):
            with pytest.raises(StorageError, match="unreachable-bucket") as info:
                await call(cp, "write", b"data")
            assert info.value.__cause__ is not None
            with pytest.raises(StorageError, match="unreachable-bucket"):
                await call(cp, "restore")
    finally:
        await close(cp)


async def test_many_failing_uploads_raise_one_storage_error(s3_control, bucket, api, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(os.urandom(100))
    s3_control.fail(match("PUT", path_contains="/.aiocheckpoint/data/"), code="AccessDenied")
    cp = make(api, f"s3://{bucket}/cp", transfer=TransferConfig(max_concurrency=10))
    try:
        with pytest.raises(StorageError) as info:
            await call(cp, "save", src)
        assert isinstance(info.value, CheckpointError)
        message = str(info.value)
        assert "AccessDenied" in message
        assert f"s3://{bucket}/cp/.aiocheckpoint/data/" in message
        assert len(info.value.errors) >= 1
    finally:
        await close(cp)


async def test_restore_into_a_file_path_is_a_value_error(location, tmp_path):
    dest = location.new()
    async with AsyncCheckpoint(dest) as cp:
        await cp.write(b"x")
    target = Path(tmp_path / "file.txt")
    target.write_bytes(b"keep me")
    async with AsyncCheckpoint(location.new(), dest) as cp:
        with pytest.raises(ValueError, match="Checkpoints can be restored to a directory only."):
            await cp.restore(path=target)
    assert target.read_bytes() == b"keep me"


def test_async_checkpoint_used_from_a_second_event_loop_says_so(tmp_path):
    cp = AsyncCheckpoint(tmp_path / "cp")
    asyncio.run(cp.write(b"first loop"))
    with pytest.raises(CheckpointError, match="another event loop"):
        asyncio.run(cp.write(b"second loop"))


async def test_restore_onto_a_folder_in_the_way_names_it(location, tmp_path):
    src = location.new()
    async with AsyncCheckpoint(src) as cp:
        await cp.write(b"blob")
    out = tmp_path / "out"
    (out / "_dst_cp").mkdir(parents=True)  # a folder where the file should go
    (out / "_dst_cp" / "keep.txt").write_text("mine")
    async with AsyncCheckpoint(location.new(), src) as cp:
        with pytest.raises(CheckpointError, match="_dst_cp"):
            await cp.restore(out)
    assert (out / "_dst_cp" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["_dst_cp"]  # no staging folder left


@pytest.mark.parametrize("cls", CLASSES)
def test_s3_without_the_s3_extra_says_what_to_install(cls, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "aiobotocore", None)  # as if not installed
    for args in [("s3://bucket/run",), (str(tmp_path), "s3://bucket/prev")]:
        with pytest.raises(ImportError, match=r"pip install 'aiocheckpoint\[s3\]'"):
            cls(*args)
    with SyncCheckpoint(str(tmp_path / "local")) as cp:  # local storage needs no extra
        cp.write(b"local")
    assert (tmp_path / "local" / ".aiocheckpoint").is_dir()
