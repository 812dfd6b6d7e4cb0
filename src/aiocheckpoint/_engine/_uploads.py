"""Uploads: files a batch at a time or in parts, and streams in parts, under permits."""

from __future__ import annotations

import logging
import sys
from itertools import accumulate
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from anyio import CapacityLimiter
from anyio.abc import TaskStatus

from .._checksum import combine_parts, crc32
from .._config import MAX_PART_SIZE, MAX_PARTS, TransferConfig
from .._errors import CheckpointError
from .._io import new_body, read_at, read_stream
from .._manifest import PACKS
from .._progress import Meter
from .._tasks import task_group
from ..storage import FileCopy, MultipartUpload, Storage
from ._items import InPack, Stored, Upload
from ._packs import THREAD_BYTES, THREAD_FILES, Piece, read_pieces
from ._permits import SMALL, Limits, batches
from ._worker import Worker

log = logging.getLogger("aiocheckpoint")

#: A stream of unknown length grows its parts every 1,000 parts so 10,000 parts hold
#: 55,000 x part_size bytes (440 GiB at 8 MiB).
_STREAM_GROWTH = 1000

Parts = dict[int, tuple[int, int]]  # part number: (CRC-32, bytes)


class Uploader(Worker):
    """Stores the items of one upload under ``prefix``; :meth:`run` returns what was
    stored, in the order given."""

    def __init__(
        self,
        config: TransferConfig,
        limits: Limits,
        threads: CapacityLimiter,
        storage: Storage,
        meter: Meter,
        prefix: str,
    ) -> None:
        super().__init__(config, limits, threads, storage, meter)
        self._prefix = prefix

    async def run(self, items: list[Upload]) -> list[Stored]:
        results: list[Stored | None] = [None] * len(items)
        whole = self._config.multipart_threshold
        small = min(SMALL, whole)
        most = self._config.packed_below
        packed = [
            i for i, u in enumerate(items) if most and isinstance(u.source, Path) and u.size <= most
        ]
        rest = sorted(set(range(len(items))).difference(packed))
        assert not any(items[i].offset for i in rest), "a file in a staging file goes in a pack"
        sizes = [
            u.size if isinstance(u.source, Path) and u.size <= small else None
            for u in (items[i] for i in rest)
        ]
        async with task_group() as tg:
            # a pack holds any number of files, up to pack_bytes (a bigger one alone)
            packs = batches([items[i].size for i in packed], sys.maxsize, self._config.pack_bytes)
            for number, pack in enumerate(packs, start=1):
                where = [packed[j] for j in pack]
                name = f"{PACKS}{number:06d}"
                await tg.start(self._pack, name, [items[i] for i in where], where, results)
            for batch in self._limits.batches(sizes):  # in the order given
                where = [rest[j] for j in batch]
                first = items[where[0]]
                if not isinstance(first.source, Path):  # a save has one stream at most
                    tg.start_soon(self._stream, first, where[0], results)
                elif first.size <= whole:
                    await tg.start(self._files, [items[i] for i in where], where, results)
                else:
                    await tg.start(self._parts, first, where[0], results)
        stored = [r for r in results if r is not None]
        assert len(stored) == len(items), "an upload ended without a result or an error"
        for u, s in zip(items, stored, strict=True):
            if u.crc is not None and not s.unchanged and s.crc != u.crc:
                raise CheckpointError(
                    f"{u.name}: its snapshot {u.source} changed before it was stored"
                )
        return stored

    def _key(self, item: Upload) -> str:
        return self._prefix + item.name

    async def _files(
        self,
        batch: list[Upload],
        where: list[int],
        results: list[Stored | None],
        *,
        task_status: TaskStatus[None],
    ) -> None:
        """Files stored whole, a batch in one call of the backend."""
        copies = [FileCopy(self._key(u), str(u.source), u.size) for u in batch]
        async with self._limits.permit(len(batch), sum(u.size for u in batch)):
            task_status.started()
            crcs = await self._storage.put_files(copies)
        for i, item, crc in zip(where, batch, crcs, strict=True):
            results[i] = Stored(item.size, crc)
            self._stored(item)
        self._meter.moved(sum(u.size for u in batch), batch[-1].name, files=len(batch))

    async def _pack(
        self,
        name: str,
        batch: list[Upload],
        where: list[int],
        results: list[Stored | None],
        *,
        task_status: TaskStatus[None],
    ) -> None:
        """Small files end to end in one object, read a group per worker-thread call,
        groups side by side, then stored with one PUT."""
        offsets = list(accumulate((u.size for u in batch), initial=0))
        starts = zip(batch, offsets[:-1], strict=True)
        pieces = [Piece(str(u.source), at, u.size, u.offset) for u, at in starts]
        total = offsets[-1]
        crcs = [0] * len(pieces)
        async with self._limits.permit(1, total):
            task_status.started()
            body = new_body(total)
            with body.getbuffer() as view:
                async with task_group() as tg:
                    for group in batches([u.size for u in batch], THREAD_FILES, THREAD_BYTES):
                        tg.start_soon(self._read_group, view, pieces, group, crcs)
                crc = await self._thread(crc32, view)
            await self._storage.put(self._prefix + name, body, crc)
        for i, item, piece, file_crc in zip(where, batch, pieces, crcs, strict=True):
            results[i] = Stored(item.size, file_crc, pack=InPack(name, piece.offset, total))
        self._meter.moved(total, batch[-1].name, files=len(batch))
        log.debug("stored %d files in %s", len(batch), self._storage.describe(self._prefix + name))

    async def _read_group(
        self, view: memoryview, pieces: list[Piece], group: list[int], crcs: list[int]
    ) -> None:
        got = await self._thread(read_pieces, view, [pieces[i] for i in group])
        for i, crc in zip(group, got, strict=True):
            crcs[i] = crc

    async def _parts(
        self,
        item: Upload,
        i: int,
        results: list[Stored | None],
        *,
        task_status: TaskStatus[None],
    ) -> None:
        """A file bigger than ``multipart_threshold``: a multipart upload, each part under
        a permit of its own."""
        assert isinstance(item.source, Path)
        path, size = str(item.source), item.size
        part = self._config.part_size_for(size)
        parts: Parts = {}
        upload = None
        try:
            async with self._limits.permit():
                task_status.started()
                upload = await _start_multipart(self._storage, self._key(item))
            async with task_group() as tg:
                for number, offset in enumerate(range(0, size, part), start=1):
                    length = min(part, size - offset)
                    args = (upload, path, number, offset, length, parts, item.name)
                    await tg.start(self._file_part, *args)
            await self._complete(upload)
        except BaseException:
            await _abort(upload)
            raise
        results[i] = Stored(size, combine_parts([parts[n] for n in sorted(parts)]))
        self._stored(item)
        self._meter.moved(0, item.name, files=1)

    async def _file_part(
        self,
        upload: MultipartUpload,
        path: str,
        number: int,
        offset: int,
        length: int,
        parts: Parts,
        name: str,
        *,
        task_status: TaskStatus[None],
    ) -> None:
        async with self._limits.permit(1, length):
            task_status.started()
            chunk = await self._thread(read_at, path, offset, length, new_body(length))
            await upload.put_part(number, offset, chunk.body, chunk.crc)
        parts[number] = (chunk.crc, length)
        self._meter.moved(length, name)

    async def _stream(self, item: Upload, i: int, results: list[Stored | None]) -> None:
        """A binary stream read front to back, never all of it in memory: one PUT if it
        ends within the first part, else a multipart upload. Each part is read under its
        own permit, one after another, and sent while the next one is read."""
        parts: Parts = {}
        started = _Started()
        try:
            async with task_group() as tg:
                first = await tg.start(self._first_part, item, parts, started)
                if isinstance(first, Stored):
                    results[i] = first
                    return
                upload = first
                number, offset = 2, parts[1][1]
                while True:
                    grown = self._config.part_size * (1 + (number - 1) // _STREAM_GROWTH)
                    length = min(grown, MAX_PART_SIZE)
                    args = (upload, item, number, offset, length, parts)
                    got = await tg.start(self._stream_part, *args)
                    if not got:
                        break
                    number, offset = number + 1, offset + got
            await self._complete(upload)
        except BaseException:
            await _abort(started.upload)
            raise
        results[i] = Stored(offset, combine_parts([parts[n] for n in sorted(parts)]))
        self._stored(item)
        self._meter.moved(0, item.name, files=1)

    async def _first_part(
        self,
        item: Upload,
        parts: Parts,
        started: _Started,
        *,
        task_status: TaskStatus[Stored | MultipartUpload],
    ) -> None:
        """Read the first part: the whole stream (stored with one PUT, unless it is what
        ``item.previous`` holds), or part 1 of a multipart upload it starts (and records
        in ``started`` at once, for the caller to abort even if it never learns it)."""
        part = self._config.part_size
        stream: Any = item.source
        async with self._limits.permit(1, part):
            chunk = await self._thread(read_stream, stream, part)
            if chunk.size < part:
                stored = Stored(chunk.size, chunk.crc)
                if item.previous == stored:
                    log.debug("%s is unchanged (%d bytes); not stored again", item.name, chunk.size)
                    stored = Stored(chunk.size, chunk.crc, unchanged=True)
                else:
                    await self._storage.put(self._key(item), chunk.body, chunk.crc)
                    self._stored(item)
                self._meter.moved(chunk.size, item.name, files=1)
                task_status.started(stored)
                return
            upload = started.upload = await _start_multipart(self._storage, self._key(item))
            parts[1] = (chunk.crc, chunk.size)
            task_status.started(upload)
            await upload.put_part(1, 0, chunk.body, chunk.crc)
        self._meter.moved(chunk.size, item.name)

    async def _stream_part(
        self,
        upload: MultipartUpload,
        item: Upload,
        number: int,
        offset: int,
        length: int,
        parts: Parts,
        *,
        task_status: TaskStatus[int],
    ) -> None:
        stream: BinaryIO = item.source  # type: ignore[assignment]
        async with self._limits.permit(1, length):
            chunk = await self._thread(read_stream, stream, length)
            if chunk.size and number > MAX_PARTS:
                raise CheckpointError(
                    f"{item.name}: the stream is longer than {MAX_PARTS} parts allow"
                    f" ({offset} bytes so far); save it as a file instead"
                )
            task_status.started(chunk.size)
            if chunk.size:
                await upload.put_part(number, offset, chunk.body, chunk.crc)
                parts[number] = (chunk.crc, chunk.size)
        self._meter.moved(chunk.size, item.name)

    async def _complete(self, upload: MultipartUpload) -> None:
        async with self._limits.permit():
            await upload.complete()

    def _stored(self, item: Upload) -> None:
        key = self._key(item)
        log.debug("stored %s as %s", item.name, self._storage.describe(key))


class _Started:
    """The multipart upload a stream's first part started, if any."""

    upload: MultipartUpload | None = None


async def _start_multipart(storage: Storage, key: str) -> MultipartUpload:
    # Shielded: cancelled mid-request, the upload would exist with an id never learned.
    # The caller's next await sees the cancellation and aborts it.
    with anyio.CancelScope(shield=True):
        upload = await storage.start_multipart(key)
    return upload


async def _abort(upload: MultipartUpload | None) -> None:
    if upload is None:
        return
    # Shielded: a cancelled save must still abort, or its parts linger (and bill).
    with anyio.move_on_after(30, shield=True):
        try:
            await upload.abort()
        except Exception as exc:
            log.warning("could not abort multipart upload: %s", exc)
