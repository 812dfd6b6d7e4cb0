"""Downloads: small objects a batch at a time, big ones whole or in ranges, verified."""

from __future__ import annotations

import logging
import os
import sys
from typing import TypeVar

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from .._checksum import combine_parts
from .._errors import CorruptCheckpointError, MissingObjectError
from .._io import open_target
from .._tasks import task_group
from ..storage import FileCopy
from ._items import Download
from ._packs import THREAD_BYTES, THREAD_FILES, Piece, runs, span, write_pieces
from ._permits import SMALL, batches
from ._worker import Worker

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("aiocheckpoint")
T = TypeVar("T")


class Downloader(Worker):
    """Fetches items into their target paths, verifying size and CRC-32 where known."""

    async def run(self, items: list[Download]) -> None:
        packs: dict[str, list[Download]] = {}  # files of a pack, but big ones go alone
        for item in items:
            if item.offset is not None and item.size <= SMALL:
                packs.setdefault(item.key, []).append(item)
        items = [item for item in items if item.offset is None or item.size > SMALL]
        sizes = [item.size if item.size <= SMALL else None for item in items]
        async with task_group() as tg:
            for pack in packs.values():
                for run in runs(pack, self._range_bytes):
                    await tg.start(self._pack_range, run)
            for batch in self._limits.batches(sizes):
                first = items[batch[0]]
                if first.size <= SMALL:
                    await tg.start(self._small, [items[i] for i in batch])
                elif first.size <= self._config.multipart_threshold:
                    await tg.start(self._whole, first)
                else:
                    await tg.start(self._ranges, first)

    async def _small(self, batch: list[Download], *, task_status: TaskStatus[None]) -> None:
        """A batch in one call of the backend."""
        copies = [FileCopy(item.key, item.target, item.size) for item in batch]
        async with self._limits.permit(len(batch), sum(item.size for item in batch)):
            task_status.started()
            got = await self._storage.get_files(copies)
        self._verify_all(batch, got)
        self._meter.moved(sum(item.size for item in batch), batch[-1].name, files=len(batch))

    async def _pack_range(self, run: list[Download], *, task_status: TaskStatus[None]) -> None:
        """The files of one range of a pack: one GET, then written a group per
        worker-thread call, groups side by side."""
        start, length = span(run)
        pieces = [Piece(d.target, (d.offset or 0) - start, d.size) for d in run]
        got: list[tuple[int, int] | None] = [None] * len(run)
        async with self._limits.permit(1, length):
            task_status.started()
            try:  # (a run of empty files needs no request)
                data = await self._storage.get(run[0].key, start, length) if length else b""
            except FileNotFoundError as exc:
                raise self._missing(run[0]) from exc
            with memoryview(data) as view:
                async with task_group() as tg:
                    for group in batches([d.size for d in run], THREAD_FILES, THREAD_BYTES):
                        tg.start_soon(self._write_group, view, pieces, group, got)
        self._verify_all(run, got)
        self._meter.moved(sum(d.size for d in run), run[-1].name, files=len(run))

    async def _write_group(
        self,
        view: memoryview,
        pieces: list[Piece],
        group: list[int],
        got: list[tuple[int, int] | None],
    ) -> None:
        written = await self._thread(write_pieces, view, [pieces[i] for i in group])
        for i, result in zip(group, written, strict=True):
            got[i] = result

    def _verify_all(self, items: list[Download], got: list[tuple[int, int] | None]) -> None:
        """Check each item against (bytes, CRC-32) got for it (None: missing). One that
        fails does not hide the rest: the error names every one, as one task per object
        would."""
        bad: list[CorruptCheckpointError] = []
        for item, result in zip(items, got, strict=True):
            try:
                if result is None:
                    raise self._missing(item)
                self._verify(item, *result)
            except CorruptCheckpointError as exc:
                bad.append(exc)
        if len(bad) == 1:
            raise bad[0]
        if bad:
            raise BaseExceptionGroup("objects missing or corrupt", bad)  # see collapse()

    async def _whole(self, item: Download, *, task_status: TaskStatus[None]) -> None:
        """One GET, written as it arrives."""
        async with self._limits.permit(1, item.size):
            task_status.started()
            fd = await self._thread(open_target, item.target, item.size)
            try:
                crc, got = await self._get_into(item, fd, 0, item.size, whole=True)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._thread(os.close, fd)
        self._verify(item, got, crc)
        self._meter.moved(item.size, item.name, files=1)

    async def _ranges(self, item: Download, *, task_status: TaskStatus[None]) -> None:
        """Concurrent ranged GETs, each under a permit of its own."""
        part = self._config.part_size_for(item.size)
        fd = await self._thread(open_target, item.target, item.size)
        pieces: dict[int, tuple[int, int]] = {}
        try:
            async with task_group() as tg:
                for offset in range(0, item.size, part):
                    length = min(part, item.size - offset)
                    await tg.start(self._range, item, fd, offset, length, pieces)
                    if not offset:
                        task_status.started()  # the next file waits for this one's first
        finally:
            with anyio.CancelScope(shield=True):
                await self._thread(os.close, fd)
        crc = combine_parts([pieces[o] for o in sorted(pieces)])
        self._verify(item, sum(length for _, length in pieces.values()), crc)
        self._meter.moved(0, item.name, files=1)

    async def _range(
        self,
        item: Download,
        fd: int,
        offset: int,
        length: int,
        pieces: dict[int, tuple[int, int]],
        *,
        task_status: TaskStatus[None],
    ) -> None:
        async with self._limits.permit(1, length):
            task_status.started()
            pieces[offset] = await self._get_into(item, fd, offset, length)
        self._meter.moved(length, item.name)

    async def _get_into(
        self, item: Download, fd: int, offset: int, length: int, *, whole: bool = False
    ) -> tuple[int, int]:
        base = item.offset or 0  # a big file in a pack: a range of it, never the whole
        try:
            return await self._storage.get_into(
                item.key, fd, base + offset, length, whole=whole and item.offset is None, at=offset
            )
        except FileNotFoundError as exc:
            raise self._missing(item) from exc

    def _missing(self, item: Download) -> MissingObjectError:
        url = self._storage.describe(item.key)
        return MissingObjectError(f"{item.name}: object {url} is missing")

    def _verify(self, item: Download, size: int, crc: int) -> None:
        if size == item.size and (item.crc is None or crc == item.crc):
            if log.isEnabledFor(logging.DEBUG):  # a URL per file costs, for many files
                log.debug("fetched %s (%d bytes) from %s", item.name, size, self._where(item))
            return
        url = self._where(item)
        if size > item.size:
            raise CorruptCheckpointError(
                f"{item.name}: expected {item.size} bytes, {url} holds more"
            )
        if size < item.size:
            raise CorruptCheckpointError(
                f"{item.name}: expected {item.size} bytes, got {size} from {url}"
            )
        raise CorruptCheckpointError(
            f"{item.name}: checksum mismatch (expected crc32 {item.crc:08x}, got {crc:08x})"
            f" in {url}"
        )

    def _where(self, item: Download) -> str:
        url = self._storage.describe(item.key)
        return url if item.offset is None else f"{url} at offset {item.offset}"
