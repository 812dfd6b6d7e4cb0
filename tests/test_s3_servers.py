"""Where S3 servers differ (moto keeps close to AWS; s3rver, like many S3-compatible
servers, lacks a few things), and what the library makes of each difference. Neither
checks a PUT's x-amz-checksum-crc32 as AWS does; the manifest's CRC-32 of each file
still catches a corrupt object at restore and verify (test_corruption)."""

from __future__ import annotations

import random
import time

import pytest
from _trees import restore_all_sync, write_tree

from aiocheckpoint import Progress, StorageError, SyncCheckpoint, TransferConfig

LOCATIONS = ("s3", "s3rver")  # see conftest.pytest_generate_tests
MiB = 1024 * 1024


def test_versions_prune_and_gc_work_where_uploads_cannot_be_listed(location, tmp_path, caplog):
    dest = location.new()
    with SyncCheckpoint(dest, keep_versions=3) as cp:
        for i in range(3):
            cp.save(write_tree(tmp_path / f"v{i}", {"w.bin": bytes([i]) * 1000}))
        assert [v.version for v in cp.versions()] == [1, 2, 3]
        assert cp.prune(1).versions == (1, 2)
        assert cp.gc().objects == ()
        usage = cp.usage()
    assert (usage.versions, usage.newest, usage.unfinished_uploads) == (1, 3, 0)
    assert restore_all_sync(dest, tmp_path / "out") == {"w.bin": bytes([2]) * 1000}
    # s3rver answers ListMultipartUploads with NotImplemented: said, not hidden
    said = "cannot list unfinished uploads" in caplog.text
    assert said == (location.kind == "s3rver")
    if said:
        assert "NotImplemented" in caplog.text


def test_a_failed_save_where_uploads_cannot_be_aborted_keeps_its_own_error(
    location, tmp_path, caplog
):
    dest = location.new()
    big = {"big.bin": random.Random(7).randbytes(12 * MiB)}
    small_parts = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)

    def stop(event: Progress) -> None:
        if not event.bytes_done:
            time.sleep(0.2)  # so that the pace lets the next event, a part's, through
        elif not event.files_done:  # a part is stored, the upload still open
            raise RuntimeError("stopped by the test")

    with SyncCheckpoint(dest, dest, transfer=small_parts) as cp:
        cp.write(b"the last good version")
        with pytest.raises(RuntimeError, match="stopped by the test"):
            cp.save(write_tree(tmp_path / "big", big), progress=stop)
        assert cp.read() == b"the last good version"
        cp.save(write_tree(tmp_path / "big", big))
    assert restore_all_sync(dest, tmp_path / "out") == {"_dst_cp": b"the last good version", **big}
    # s3rver refuses AbortMultipartUpload (MethodNotAllowed): its parts stay, and it says so
    said = "could not abort multipart upload" in caplog.text
    assert said == (location.kind == "s3rver")


def test_a_server_that_ignores_ranges_never_gives_wrong_bytes(s3_control, bucket, tmp_path):
    dest = f"s3://{bucket}/ranges"
    big = {"big.bin": random.Random(8).randbytes(12 * MiB)}
    small_parts = TransferConfig(multipart_threshold=5 * MiB, part_size=5 * MiB)
    with SyncCheckpoint(dest, transfer=small_parts) as cp:
        cp.save(write_tree(tmp_path / "big", big))
    s3_control.ignore_ranges = True  # the whole object, whatever part is asked for
    out = tmp_path / "out"
    out.mkdir()
    with SyncCheckpoint(tmp_path / "unused", dest, transfer=small_parts) as cp:
        # the parts after the first, in whichever order their answers come
        parts = "(5242880|10485760)"
        with pytest.raises(StorageError, match=f"asked for bytes from {parts}, got the whole"):
            cp.restore(out)
    assert list(out.iterdir()) == []  # nothing half written
