"""Blocking file I/O shared by the engine and the storage backends: run in worker threads."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from ._checksum import crc32
from ._errors import CheckpointError

#: Bytes per write(2). Recent Linux page caches allocate folios as big as the write, and
#: on the benchmark's machine writes of 1 MiB and more cost up to a second of system time
#: per 512 MiB, in some runs and not others; writes of 256 KiB never did.
WRITE_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes read for one request: a BytesIO at position 0 that owns its buffer."""

    body: io.BytesIO
    size: int
    crc: int


def fill(readinto: Callable[[memoryview], int | None], view: memoryview) -> int:
    """Fill ``view`` from ``readinto`` until it is full or the source ends; the count."""
    got = 0
    while got < len(view):
        n = readinto(view[got:])
        if not n:
            break
        got += n
    return got


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``fd``."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done : done + WRITE_SIZE], offset + done)


def new_body(length: int) -> io.BytesIO:
    """A BytesIO that owns a buffer of ``length`` bytes, for :func:`read_into_body`.

    HTTP sends a BytesIO that owns its buffer in chunks without copying it; ``bytes``
    would be copied whole once more by aiohttp, and a ``bytearray`` into the socket's
    buffer. Made and freed in one thread where possible: memory taken in one thread and
    given back in another makes glibc's per-thread arenas grow with the number of files.
    """
    body = io.BytesIO()
    if length:
        body.seek(length - 1)
        body.write(b"\0")  # grows the buffer once, to its final size
        body.seek(0)
    return body


def read_into_body(
    readinto: Callable[[memoryview], int | None], length: int, body: io.BytesIO | None = None
) -> Chunk:
    """Read up to ``length`` bytes into ``body`` (default: a new one), and the CRC-32."""
    if body is None:
        body = new_body(length)
    with body.getbuffer() as view:
        got = fill(readinto, view[:length])
        crc = crc32(view[:got])
    body.truncate(got)
    body.seek(0)
    return Chunk(body, got, crc)


def read_at(path: str, offset: int, length: int, body: io.BytesIO | None = None) -> Chunk:
    """``length`` bytes of the file ``path`` from ``offset``; fewer means it changed."""
    if body is None:
        body = new_body(length)
    with body.getbuffer() as view:
        crc = read_exactly(path, offset, view[:length])
    body.truncate(length)
    body.seek(0)
    return Chunk(body, length, crc)


def read_exactly(path: str, offset: int, view: memoryview) -> int:
    """Fill ``view`` from the file ``path`` at ``offset``: the CRC-32 of those bytes.

    :raises CheckpointError: the file holds fewer: it changed since it was listed.
    """
    with open(path, "rb", buffering=0) as f:
        if offset:
            f.seek(offset)
        got = fill(f.readinto, view)
    if got != len(view):
        raise CheckpointError(
            f"{path} changed while being saved (expected {len(view)} bytes, read {got})"
        )
    return crc32(view)


def read_stream(stream: BinaryIO, length: int) -> Chunk:
    """Up to ``length`` bytes of a binary file object, from where it stands."""
    if hasattr(stream, "readinto"):
        return read_into_body(stream.readinto, length)
    chunks = []
    left = length
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        if not isinstance(chunk, (bytes, bytearray)):
            raise TypeError(f"the file object returned {type(chunk).__name__}, not bytes")
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    return Chunk(io.BytesIO(data), len(data), crc32(data))


def write_file(path: str, data: bytes | bytearray | memoryview) -> int:
    """Create ``path`` (and its folder) holding ``data``; returns its CRC-32."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite_all(fd, data, 0)
    finally:
        os.close(fd)
    return crc32(data)


def open_target(path: str, size: int) -> int:
    """Open ``path`` for writing (creating its folder), sized ``size``: its descriptor.

    :raises CheckpointError: the file system cannot hold a file of ``size`` bytes.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if size:
            os.ftruncate(fd, size)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EFBIG, errno.EINVAL):
            raise
        raise CheckpointError(
            f"cannot restore {path}: its file system cannot hold a file of {size} bytes"
            f" ({exc.strerror})"
        ) from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def crc_if_size(path: str, size: int, view: memoryview) -> int | None:
    """The CRC-32 of ``path`` if it holds ``size`` bytes, else None (also when gone);
    ``view`` is the buffer to read through."""
    crc = got = 0
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(view):
                got += n
                if got > size:
                    return None
                crc = crc32(view[:n], crc)
    except FileNotFoundError:
        return None  # the upload then reports it
    return crc if got == size else None
