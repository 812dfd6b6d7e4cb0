"""Names at the limits of a store: S3 keys take at most 1,024 bytes, checked before
anything is uploaded, and a key the server refuses fails the save with the server's code."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiocheckpoint import StorageError, SyncCheckpoint, TransferConfig

# .aiocheckpoint/data/<10-digit version>-<12 hex>/ comes before every name
FOLDER = len(".aiocheckpoint/data/0000000001-0123456789ab/")
OBJECTS = TransferConfig(pack_threshold=0)  # one object per file


def deep_file(root: Path, length: int) -> str:
    """A file whose path relative to ``root`` is ``length`` bytes, in folders of 200."""
    parts = []
    left = length
    while left > 200:
        parts.append("d" * 199)
        left -= 200
    parts.append("f" * left)
    path = root.joinpath(*parts)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"deep")
    return "/".join(parts)


def test_an_s3_key_over_1024_bytes_is_refused_before_anything_is_uploaded(
    s3, bucket, s3_control, tmp_path
):
    prefix = "run"
    room = 1024 - len(prefix) - 1 - FOLDER
    source = tmp_path / "src"
    deep_file(source, room + 1)
    (source / "small.txt").write_bytes(b"small")
    with SyncCheckpoint(f"s3://{bucket}/{prefix}") as cp:
        with pytest.raises(ValueError, match=f"at most {room} bytes") as info:
            cp.save(source)
        assert str(source / ("d" * 199)) in str(info.value)
        assert f"s3://{bucket}/{prefix}" in str(info.value)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert not s3_control.matching(lambda r: r.method in ("PUT", "POST") and "/run" in r.path)


def test_an_s3_key_of_exactly_1024_bytes_saves_and_restores(s3, bucket, tmp_path):
    prefix = "run"
    room = 1024 - len(prefix) - 1 - FOLDER
    source = tmp_path / "src"
    name = deep_file(source, room)
    dest = f"s3://{bucket}/{prefix}"
    with SyncCheckpoint(dest, transfer=OBJECTS) as cp:  # the file's name is in its key
        cp.save(source)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert max(len(k.encode()) for k in keys) == 1024
    out = tmp_path / "out"
    out.mkdir()
    with SyncCheckpoint(f"s3://{bucket}/other", dest) as cp:
        cp.restore(out)
    assert (out / name).read_bytes() == b"deep"


def test_local_checkpoints_have_no_limit_on_the_whole_path(tmp_path):
    source = tmp_path / "src"
    name = deep_file(source, 2000)
    dest = tmp_path / "cp"
    with SyncCheckpoint(dest) as cp:
        cp.save(source)
    out = tmp_path / "out"
    out.mkdir()
    with SyncCheckpoint(tmp_path / "other", dest) as cp:
        cp.restore(out)
    assert (out / name).read_bytes() == b"deep"


def test_a_key_the_server_refuses_is_a_storage_error_with_its_code(s3, bucket, tmp_path):
    # moto's router answers 404 to a key with a newline; AWS takes it. Either way the
    # save must say what the server said, not that some object is missing.
    dest = f"s3://{bucket}/run"
    with SyncCheckpoint(dest, transfer=OBJECTS) as cp:  # the file's name is in its key
        cp.write(b"version 1")
        source = tmp_path / "src"
        source.mkdir()
        (source / "new\nline.txt").write_bytes(b"refused")
        with pytest.raises(StorageError, match="(?s)PUT .* failed: 404") as info:
            cp.save(source)
        assert not isinstance(info.value, FileNotFoundError)
        assert "line.txt" in str(info.value)
    manifests = s3.list_objects_v2(Bucket=bucket, Prefix="run/.aiocheckpoint/manifests/")
    assert [o["Key"][-16:] for o in manifests["Contents"]] == ["v0000000001.json"]
    with SyncCheckpoint(f"s3://{bucket}/other", dest) as cp:
        assert cp.read() == b"version 1"
