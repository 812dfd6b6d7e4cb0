"""CRC-32 (the zlib/S3 ``CRC32`` polynomial) of pieces computed apart, then combined."""

from __future__ import annotations

import base64
import zlib

_POLY = 0xEDB88320


def _gf2_times(mat: list[int], vec: int) -> int:
    total = 0
    i = 0
    while vec:
        if vec & 1:
            total ^= mat[i]
        vec >>= 1
        i += 1
    return total


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's method)."""
    if len2 <= 0:
        return crc1
    # Operator for one zero bit, then squared up to shift crc1 past len2 zero bytes.
    odd = [_POLY] + [1 << n for n in range(31)]
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def combine_parts(parts: list[tuple[int, int]]) -> int:
    """CRC-32 of the concatenation of ``(crc, length)`` pieces, in order."""
    crc = 0
    for part_crc, length in parts:
        crc = crc32_combine(crc, part_crc, length)
    return crc


def crc32(data: bytes | memoryview, value: int = 0) -> int:
    return zlib.crc32(data, value)


def to_text(crc: int) -> str:
    """The manifest form: ``crc32:0a1b2c3d``."""
    return f"crc32:{crc:08x}"


def to_s3(crc: int) -> str:
    """The form of S3's ``x-amz-checksum-crc32`` header: base64 of 4 big-endian bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")
