"""Snapshots for background saves: a private copy of everything a save stores, taken
before ``start_save`` returns, so the caller may change its files at once.

Copies go to a staging folder in the temp folder (``TMPDIR``): a reflink clone where the
file system makes one, else a copy whose CRC-32 is computed on the way, so the upload's
unchanged-files check reads nothing again. Small files (those that go into packs) are
copied a group at a time into one staging file per group. ``benchmarks/background.py``
measured copying against reading into memory; docs/background.md gives the numbers.
"""

from __future__ import annotations

import errno
import io
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from anyio import CapacityLimiter

from ._checksum import combine_parts, crc32
from ._config import TransferConfig
from ._engine import Upload, batches
from ._engine._packs import THREAD_BYTES, THREAD_FILES, Piece, read_pieces
from ._errors import CheckpointError
from ._io import fill, pwrite_all, write_file
from ._tasks import task_group

PREFIX = "aiocheckpoint-snapshot-"
#: A big file is copied this many bytes per worker-thread call, calls side by side.
RANGE = 64 * 1024 * 1024
_BUFFER = 1024 * 1024
#: ioctl(FICLONE): Python 3.12 names it; before, its value where it is known to be this.
_FICLONE = (
    getattr(__import__("fcntl"), "FICLONE", 0x40049409)
    if platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")
    else None
)


@dataclass
class Snapshot:
    """What a background save stores: ``items`` read from the staging ``folder``."""

    items: list[Upload]
    folder: Path | None  # None: nothing was copied (bytes)

    async def remove(self, threads: CapacityLimiter) -> None:
        """Free the staging space. Shielded: however the save ended, it goes."""
        if self.folder is None:
            return
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, self.folder, True, limiter=threads)
        self.folder = None


async def snapshot(
    items: list[Upload], config: TransferConfig, threads: CapacityLimiter
) -> Snapshot:
    """Copy every file and stream of ``items`` into a new staging folder.

    :raises CheckpointError: the staging folder's file system is full.
    :raises FileNotFoundError: a file is gone.
    """
    folder = Path(await anyio.to_thread.run_sync(partial(tempfile.mkdtemp, prefix=PREFIX)))
    copy = _Copier(folder, threads)
    staged = list(items)
    most = config.packed_below
    small = [
        i for i, u in enumerate(items) if isinstance(u.source, Path) and most and u.size <= most
    ]
    bundled = set(small)
    whole = [
        i
        for i, u in enumerate(items)
        if isinstance(u.source, Path) and i not in bundled and u.size <= RANGE
    ]
    try:
        async with task_group() as tg:
            groups = batches([items[i].size for i in small], THREAD_FILES, THREAD_BYTES)
            for n, group in enumerate(groups):
                tg.start_soon(copy.bundle, n, [small[j] for j in group], staged)
            for group in batches([items[i].size for i in whole], THREAD_FILES, RANGE):
                tg.start_soon(copy.files, [whole[j] for j in group], staged)
            for i, u in enumerate(items):
                if not isinstance(u.source, Path):
                    tg.start_soon(copy.stream, i, staged)
                elif u.size > RANGE:
                    tg.start_soon(copy.ranges, i, staged)
    except BaseException as exc:
        await Snapshot([], folder).remove(threads)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(
                f"no room to snapshot the files in {folder} ({exc.strerror}): a background"
                " save copies what it stores there first; set TMPDIR to a folder with room"
            ) from exc
        raise
    return Snapshot(staged, folder)


class _Copier:
    """Copies into ``folder``, a worker-thread call at a time."""

    def __init__(self, folder: Path, threads: CapacityLimiter) -> None:
        self._folder = folder
        self._threads = threads
        self._clones = _FICLONE is not None  # False once the file system refused one

    async def _thread(self, func: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)

    async def bundle(self, n: int, where: list[int], staged: list[Upload]) -> None:
        """Small files, end to end in one staging file."""
        target = str(self._folder / f"b{n}")
        pieces, at = [], 0
        for i in where:
            pieces.append(Piece(str(staged[i].source), at, staged[i].size))
            at += staged[i].size

        def copy() -> list[int]:
            with memoryview(bytearray(at)) as view:
                crcs = read_pieces(view, pieces)
                write_file(target, view)
            return crcs

        crcs = await self._thread(copy)
        for i, piece, crc in zip(where, pieces, crcs, strict=True):
            staged[i] = replace(staged[i], source=Path(target), crc=crc, offset=piece.offset)

    async def files(self, where: list[int], staged: list[Upload]) -> None:
        """Files of at most :data:`RANGE` bytes, each to a staging file of its own, in one
        worker-thread call."""
        jobs = [(str(staged[i].source), str(self._folder / f"f{i}"), staged[i].size) for i in where]
        crcs = await self._thread(self._copy_files, jobs)
        for i, (_, target, _), crc in zip(where, jobs, crcs, strict=True):
            staged[i] = replace(staged[i], source=Path(target), crc=crc)

    def _copy_files(self, jobs: list[tuple[str, str, int]]) -> list[int]:
        with memoryview(bytearray(_BUFFER)) as buffer:
            return [self._copy_file(*job, buffer) for job in jobs]

    def _copy_file(self, source: str, target: str, size: int, buffer: memoryview) -> int:
        """A clone if the file system makes one, else a copy; the CRC-32 of the bytes."""
        if self._clones and self._clone(source, target, size):
            return _read_range(source, 0, size, None, source, buffer)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            return _read_range(source, 0, size, partial(pwrite_all, fd), source, buffer)
        finally:
            os.close(fd)

    async def ranges(self, i: int, staged: list[Upload]) -> None:
        """A big file: a clone, or a copy by ranges side by side."""
        source, size = str(staged[i].source), staged[i].size
        target = str(self._folder / f"f{i}")
        cloned = self._clones and await self._thread(self._clone, source, target, size)
        if not cloned:
            await self._thread(_create, target, size)
        crcs: list[tuple[int, int]] = [(0, 0)] * -(-size // RANGE)
        work = _crc_range if cloned else _copy_range
        async with task_group() as tg:
            for n, start in enumerate(range(0, size, RANGE)):
                length = min(RANGE, size - start)
                tg.start_soon(self._range, work, source, target, start, length, crcs, n)
        staged[i] = replace(staged[i], source=Path(target), crc=combine_parts(crcs))

    async def _range(
        self,
        work: Any,
        source: str,
        target: str,
        start: int,
        length: int,
        crcs: list[tuple[int, int]],
        n: int,
    ) -> None:
        crcs[n] = (await self._thread(work, source, target, start, length), length)

    def _clone(self, source: str, target: str, size: int) -> bool:
        import fcntl

        with open(source, "rb") as src, open(target, "wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), _FICLONE or 0, src.fileno())
            except OSError:  # not this file system (or not across two): copy instead
                self._clones = False
                return False
            dst.truncate(size)  # as a copy would be, if the file grew since it was listed
            return True

    async def stream(self, i: int, staged: list[Upload]) -> None:
        """A file object, read from where it stands to its end."""
        stream: BinaryIO = staged[i].source  # type: ignore[assignment]
        target = str(self._folder / f"s{i}")
        size, crc = await self._thread(_copy_stream, stream, target)
        staged[i] = replace(staged[i], source=Path(target), size=size, crc=crc)


def _create(path: str, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _copy_range(source: str, target: str, start: int, length: int) -> int:
    """Copy ``length`` bytes at ``start``; their CRC-32."""
    fd = os.open(target, os.O_WRONLY)
    try:
        return _read_range(source, start, length, partial(pwrite_all, fd), source)
    finally:
        os.close(fd)


def _crc_range(source: str, target: str, start: int, length: int) -> int:
    """The CRC-32 of ``length`` bytes at ``start`` of a file just cloned: read from the
    source, whose pages are in memory where the clone's are not. Had it changed since, the
    upload would find the clone's CRC-32 different, and fail."""
    return _read_range(source, start, length, None, source)


def _read_range(
    path: str, start: int, length: int, write: Any, source: str, buf: memoryview | None = None
) -> int:
    """Read ``length`` bytes of ``path`` at ``start`` through ``buf`` (default: a new
    one), handing each bufferful to ``write`` (with its offset); their CRC-32.

    :raises CheckpointError: the file ``source`` is shorter than when it was listed.
    """
    if buf is None:
        buf = memoryview(bytearray(min(length, _BUFFER)))
    crc = 0
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        for at in range(start, start + length, len(buf)):
            view = buf[: min(len(buf), start + length - at)]
            if fill(f.readinto, view) != len(view):
                raise CheckpointError(f"{source} changed while being snapshotted (it is shorter)")
            crc = crc32(view, crc)
            if write is not None:
                write(view, at)
    return crc


def _copy_stream(stream: BinaryIO, target: str) -> tuple[int, int]:
    size = crc = 0
    with open(target, "wb", buffering=0) as out, memoryview(bytearray(_BUFFER)) as buffer:
        while True:
            got = _read(stream, buffer)
            if not got:
                return size, crc
            crc = crc32(buffer[:got], crc)
            out.write(buffer[:got])
            size += got


def _read(stream: Any, buffer: memoryview) -> int:
    if hasattr(stream, "readinto"):
        return fill(stream.readinto, buffer)
    data = stream.read(len(buffer))
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"the file object returned {type(data).__name__}, not bytes")
    buffer[: len(data)] = data
    return len(data)


def copied_bytes(b: bytes | bytearray | memoryview) -> io.BytesIO:
    """``write()``'s bytes as a stream: ``bytes`` as they are (immutable), anything else
    copied, since the caller may change it once the call returns (``start_write``)."""
    return io.BytesIO(b if isinstance(b, bytes) else bytes(b))
