"""CRC-32 (the zlib/S3 ``CRC32`` polynomial) of pieces computed apart, then combined."""

from __future__ import annotations

import base64
from functools import lru_cache

try:  # ISA-L's CRC-32: the same checksum as zlib's, several times faster on big buffers
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - a platform without an isal wheel
    from zlib import crc32 as _crc32

_POLY = 0xEDB88320


def _gf2_times(mat: list[int] | tuple[int, ...], vec: int) -> int:
    total = 0
    i = 0
    while vec:
        if vec & 1:
            total ^= mat[i]
        vec >>= 1
        i += 1
    return total


def _compose(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The operator ``a`` after ``b``."""
    return tuple(_gf2_times(a, col) for col in b)


_ONE_BIT = tuple([_POLY] + [1 << n for n in range(31)])
_ONE_BYTE = _ONE_BIT
for _ in range(3):
    _ONE_BYTE = _compose(_ONE_BYTE, _ONE_BYTE)


@lru_cache(maxsize=64)
def _shift(length: int) -> tuple[int, ...]:
    """The operator that appends ``length`` zero bytes to a CRC (parts repeat lengths)."""
    result = tuple(1 << n for n in range(32))
    op = _ONE_BYTE
    while length:
        if length & 1:
            result = _compose(op, result)
        length >>= 1
        if length:
            op = _compose(op, op)
    return result


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's method)."""
    if len2 <= 0:
        return crc1
    return _gf2_times(_shift(len2), crc1) ^ crc2


def combine_parts(parts: list[tuple[int, int]]) -> int:
    """CRC-32 of the concatenation of ``(crc, length)`` pieces, in order."""
    if not parts:
        return 0
    crc = parts[0][0]
    for part_crc, length in parts[1:]:
        crc = crc32_combine(crc, part_crc, length)
    return crc


def crc32(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """The CRC-32 of ``data``, continuing from ``value`` (as ``zlib.crc32``)."""
    return _crc32(data, value)


def to_text(crc: int) -> str:
    """The manifest form: ``crc32:0a1b2c3d``."""
    return f"crc32:{crc:08x}"


def to_s3(crc: int) -> str:
    """The form of S3's ``x-amz-checksum-crc32`` header: base64 of 4 big-endian bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")
