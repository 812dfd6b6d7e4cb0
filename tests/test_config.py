"""TransferConfig arithmetic and the CRC-32 combination the engine relies on."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import zlib

import pytest

from aiocheckpoint import TransferConfig
from aiocheckpoint._checksum import combine_parts, crc32, to_s3

MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.mark.parametrize("size", [0, 1, 8 * MiB, 80 * GiB, 6 * GiB, 5 * 1024 * GiB])
def test_part_size_never_needs_more_than_10000_parts(size):
    part = TransferConfig().part_size_for(size)
    assert 5 * MiB <= part <= 5 * GiB
    assert -(-size // part) <= 10_000


def test_default_buffer_bound_is_concurrency_times_part_up_to_12_parts():
    cfg = TransferConfig(max_concurrency=4, part_size=8 * MiB, multipart_threshold=16 * MiB)
    assert cfg.buffer_bytes == 4 * 16 * MiB
    assert TransferConfig().buffer_bytes == 96 * MiB  # 64 requests, 12 parts of 8 MiB
    assert TransferConfig(max_concurrency=200, part_size=16 * MiB).buffer_bytes == 192 * MiB
    assert TransferConfig(max_buffer_bytes=123).buffer_bytes == 123


@pytest.mark.parametrize(
    "kwargs",
    [
        {"part_size": 4 * MiB},
        {"part_size": 6 * GiB},
        {"multipart_threshold": 6 * GiB},
        {"max_buffer_bytes": 0},
        {"max_threads": -1},
        {"pack_threshold": -1},
        {"pack_size": 0},
    ],
)
def test_out_of_range_values_name_the_setting(kwargs):
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        TransferConfig(**kwargs)


def test_packing_can_be_turned_off_and_a_pack_is_never_a_multipart_upload():
    assert TransferConfig(pack_threshold=0).packed_below == 0
    small = TransferConfig(multipart_threshold=1 * MiB, pack_size=8 * MiB)
    assert small.pack_bytes == 1 * MiB
    assert small.packed_below <= small.pack_bytes
    with pytest.raises(TypeError, match="pack_threshold must be an int, not str"):
        TransferConfig(pack_threshold="1")  # type: ignore[arg-type]


def test_crc_of_parts_combines_to_crc_of_whole():
    pieces = [os.urandom(n) for n in (0, 1, 1000, 5 * MiB + 3, 17)]
    combined = combine_parts([(zlib.crc32(p), len(p)) for p in pieces])
    assert combined == zlib.crc32(b"".join(pieces))


@pytest.mark.parametrize("size", [0, 1, 15, 64 * 1024 + 7, 3 * MiB + 1])
def test_crc32_is_zlibs_so_older_manifests_still_verify(size):
    data = random.Random(size).randbytes(size)
    assert crc32(data) == zlib.crc32(data)
    assert crc32(data[size // 2 :], crc32(data[: size // 2])) == zlib.crc32(data)
    assert crc32(memoryview(bytearray(data))) == zlib.crc32(data)


def test_s3_checksum_header_form():
    # S3's x-amz-checksum-crc32 is base64 of the big-endian CRC: "123456789" -> cbf43926.
    assert to_s3(zlib.crc32(b"123456789")) == "y/Q5Jg=="


def test_the_checksum_comes_from_isal_where_it_is_installed():
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    from aiocheckpoint import _checksum

    assert _checksum._crc32 is isal_zlib.crc32


def test_without_isal_the_checksum_comes_from_zlib():
    # Platforms without an isal wheel install none; the checksum must not change.
    code = (
        "import sys, zlib\n"
        "sys.modules['isal'] = sys.modules['isal.isal_zlib'] = None\n"
        "from aiocheckpoint import _checksum\n"
        "assert _checksum._crc32 is zlib.crc32\n"
        "print(_checksum.crc32(b'123456789'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 0xCBF43926
