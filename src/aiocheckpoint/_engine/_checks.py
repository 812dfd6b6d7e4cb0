"""Checks: read objects back and compare each file's size and CRC-32, writing nothing."""

from __future__ import annotations

from typing import TypeVar

from anyio.abc import TaskStatus

from .._checksum import combine_parts, crc32
from .._tasks import task_group
from ._items import Download
from ._packs import runs, span
from ._worker import Worker

T = TypeVar("T")

#: A file that fails its check, and why.
Bad = tuple[Download, str]


class Checker(Worker):
    """Reads the bytes of items (``Download`` with no use for ``target``) a range at a
    time under the engine's permits, and reports each item that is missing, short or
    whose CRC-32 differs."""

    async def run(self, items: list[Download]) -> list[Bad]:
        bad: list[Bad] = []
        packs: dict[str, list[Download]] = {}
        for item in items:
            if item.offset is not None:
                packs.setdefault(item.key, []).append(item)
        async with task_group() as tg:
            for pack in packs.values():
                for run in runs(pack, self._range_bytes):
                    await tg.start(self._run, run, bad)
            for item in items:
                if item.offset is None:
                    await tg.start(self._object, item, bad)
        return bad

    async def _run(
        self, run: list[Download], bad: list[Bad], *, task_status: TaskStatus[None]
    ) -> None:
        """Files of one pack: one ranged GET, each file's slice checked."""
        start, length = span(run)
        async with self._limits.permit(1, length):
            task_status.started()
            try:
                data = await self._storage.get(run[0].key, start, length) if length else b""
            except FileNotFoundError:
                bad += [(item, "the object is missing") for item in run]
                data = None
            if data is not None:
                got = await self._thread(_slices, data, [(d.offset or 0) - start for d in run], run)
                bad += [(d, reason) for d, reason in zip(run, got, strict=True) if reason]
        self._meter.moved(sum(d.size for d in run), run[-1].name, files=len(run))

    async def _object(
        self, item: Download, bad: list[Bad], *, task_status: TaskStatus[None]
    ) -> None:
        """A whole object, in ranges side by side."""
        part = self._config.part_size_for(item.size)
        pieces: dict[int, tuple[int, int]] = {}
        try:
            async with task_group() as tg:
                for offset in range(0, item.size, part):
                    length = min(part, item.size - offset)
                    await tg.start(self._range, item, offset, length, pieces)
                    if not offset:
                        task_status.started()
                if not item.size:
                    task_status.started()
        except FileNotFoundError:
            bad.append((item, "the object is missing"))
        else:
            got = sum(n for _, n in pieces.values())
            crc = combine_parts([pieces[o] for o in sorted(pieces)])
            reason = _compare(item, got, crc)
            if reason:
                bad.append((item, reason))
        self._meter.moved(0, item.name, files=1)

    async def _range(
        self,
        item: Download,
        offset: int,
        length: int,
        pieces: dict[int, tuple[int, int]],
        *,
        task_status: TaskStatus[None],
    ) -> None:
        async with self._limits.permit(1, length):
            task_status.started()
            data = await self._storage.get(item.key, offset, length)
            pieces[offset] = (await self._thread(crc32, data), len(data))
        self._meter.moved(length, item.name)


def _slices(data: bytes | bytearray, starts: list[int], items: list[Download]) -> list[str]:
    """For each file of a pack range: why its slice of ``data`` fails, or ""."""
    out = []
    with memoryview(data) as view:
        for at, item in zip(starts, items, strict=True):
            piece = view[at : at + item.size]
            out.append(_compare(item, len(piece), crc32(piece)))
    return out


def _compare(item: Download, size: int, crc: int) -> str:
    if size < item.size:
        return f"expected {item.size} bytes, the object holds {size}"
    if item.crc is not None and crc != item.crc:
        return f"checksum mismatch: expected crc32 {item.crc:08x}, got {crc:08x}"
    return ""
