"""The fan-out engine: moves many files, and the parts of big ones, under one budget.

Every request (a whole-object PUT/GET, a part, a range) takes a slot of one semaphore of
``max_concurrency`` slots, and every byte it holds in memory (an upload) or has asked for
and not yet written (a download) is counted against one byte budget. Work is spawned
only when a slot is free: a sliding window, never a wave.

A spawned task owns the slot it was handed and releases it in a ``finally`` that begins
before its first ``await``; anyio runs a new task up to its first ``await`` even when its
group is already cancelled, so a slot handed over is always given back.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

import anyio
import anyio.to_thread
from anyio import CapacityLimiter
from anyio.abc import TaskGroup

from ._checksum import combine_parts, crc32
from ._config import MAX_PART_SIZE, MAX_PARTS, TransferConfig
from ._errors import CheckpointError, CorruptCheckpointError
from ._io import fill, pwrite_all
from .storage import BlockingStorage, MultipartUpload, ObjectReader, Storage

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("aiocheckpoint")
T = TypeVar("T")

#: A stream of unknown length grows its parts every 1,000 parts so 10,000 parts hold
#: 55,000 x part_size bytes (440 GiB at 8 MiB).
_STREAM_GROWTH = 1000

#: A body bigger than this is written to disk as it arrives (see ``_WRITE_PIECE``), not
#: read whole first. Read whole, each body filled fresh memory as big as itself, which
#: made restores of 8 MiB objects 1.3-1.8x slower than s3fs on the benchmark.
_PIECE = 1024 * 1024

#: A streamed GET hands what arrived to its writing thread up to this much at a time (or
#: the whole byte budget, if smaller), so it holds at most this much. Its range counts
#: whole against the byte budget until it is written, so bigger hand-offs cost no memory
#: beyond the budget; they cost fewer thread hand-offs than 1 MiB ones (restores of 8 MiB
#: objects about 5% faster).
_WRITE_PIECE = 4 * _PIECE


@dataclass(frozen=True, slots=True)
class Upload:
    """One thing to store: a file path, or a binary stream."""

    name: str  # the relative path in the checkpoint; the key is a prefix plus this
    source: Path | BinaryIO
    size: int = -1  # known for paths
    #: For a stream: what the previous version holds at this name. A stream that turns
    #: out to be that content (same size and CRC-32) is not stored again. (Files are
    #: checked before they reach the engine, see :meth:`Engine.unchanged`.)
    previous: Stored | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    size: int
    crc: int
    unchanged: bool = False  # the same as ``Upload.previous``: nothing was stored


@dataclass(frozen=True, slots=True)
class Download:
    key: str
    name: str
    target: str  # a path; not a Path, which costs twice the memory (5,000 files: 1 MiB)
    size: int
    crc: int | None  # expected; None when nothing is known (plain files)


class MissingObjectError(CorruptCheckpointError):
    """A manifest names an object that is gone."""


class ByteBudget:
    """Counts bytes in transit; ``acquire`` waits while the budget is spent."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiters: list[anyio.Event] = []

    async def acquire(self, n: int) -> int:
        n = min(n, self.total)  # one request larger than the budget runs alone
        while self.used + n > self.total:
            event = anyio.Event()
            self._waiters.append(event)
            await event.wait()
        self.used += n
        return n

    def release(self, n: int) -> None:
        self.used -= n
        waiters, self._waiters = self._waiters, []
        for event in waiters:
            event.set()


@asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """A task group whose failures come out as one exception, never an ExceptionGroup."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        error = collapse(group)
        error.__suppress_context__ = True
        raise error  # noqa: B904 - keep the error's own __cause__


def collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit, cancellation
            return exc
    corrupt = [e for e in leaves if isinstance(e, CorruptCheckpointError)]
    first: BaseException = leaves[0]
    if len(corrupt) > 1:
        # Several objects gone (e.g. collected by a newer commit) stay a MissingObjectError,
        # which a restore retries from the newest manifest.
        missing = all(isinstance(e, MissingObjectError) for e in corrupt)
        kind = MissingObjectError if missing else CorruptCheckpointError
        first = kind("; ".join(str(e) for e in corrupt))
    if isinstance(first, CheckpointError):
        first.errors = tuple(leaves)
    return first


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes read for one request: a BytesIO at position 0 that owns its buffer."""

    body: io.BytesIO
    size: int
    crc: int


def new_body(length: int) -> io.BytesIO:
    """A BytesIO that owns a buffer of ``length`` bytes, for :func:`_fill`.

    Made on the event loop's thread, where it is also freed after its request: memory
    taken in one thread and given back in another makes glibc's per-thread arenas grow
    with the number of files. (Batches for a blocking backend make and free theirs in
    one worker thread instead.)
    """
    body = io.BytesIO()
    if length:
        body.seek(length - 1)
        body.write(b"\0")  # grows the buffer once, to its final size
        body.seek(0)
    return body


def _fill(
    readinto: Callable[[memoryview], int | None], length: int, body: io.BytesIO | None = None
) -> Chunk:
    """Read up to ``length`` bytes into ``body`` (default: a new one), and the CRC-32.

    HTTP sends a BytesIO that owns its buffer in chunks without copying it; ``bytes``
    would be copied whole once more by aiohttp, and a ``bytearray`` into the socket's
    buffer.
    """
    if body is None:
        body = new_body(length)
    with body.getbuffer() as view:
        got = fill(readinto, view[:length])
        crc = crc32(view[:got])
    body.truncate(got)
    body.seek(0)
    return Chunk(body, got, crc)


def _read_at(path: Path, offset: int, length: int, body: io.BytesIO | None = None) -> Chunk:
    """``length`` bytes of ``path`` from ``offset``; fewer means the file changed."""
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        chunk = _fill(f.readinto, length, body)
    if chunk.size != length:
        raise CheckpointError(
            f"{path} changed while being saved (expected {length} bytes, read {chunk.size})"
        )
    return chunk


def _read_stream(stream: BinaryIO, length: int) -> Chunk:
    if hasattr(stream, "readinto"):
        return _fill(stream.readinto, length)
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


_EMPTY = Chunk(io.BytesIO(), 0, 0)


_HASH_BUFFER = 1024 * 1024
#: Small files saved to or restored from local storage go in batches, one worker-thread
#: call each; a batch ends after this many bytes or files (fewer when there are fewer
#: files than threads to share them).
_BATCH_BYTES_BLOCKING = 2 * 1024 * 1024
_BATCH_FILES_BLOCKING = 16
#: A batch of :meth:`Engine.unchanged` ends after this many bytes or files.
_BATCH_BYTES = 8 * 1024 * 1024
_BATCH_FILES = 64


#: Small files saved to a network backend are read in batches, one worker-thread call
#: each, and then sent one request per file: a thread hand-off costs about as much client
#: CPU as reading 64 KiB. A batch holds at most this many files and ``_PIECE`` bytes, and
#: at most an eighth of the request slots and of the byte budget, so that the window of
#: requests in flight still slides a few files at a time.
_READ_BATCH_FILES = 8


def _read_batches(
    items: list[Upload], small: dict[int, int], config: TransferConfig
) -> list[list[int]]:
    """The indices of ``items`` in the order given, consecutive ``small`` ones (index:
    bytes) in batches for :meth:`Engine._read_and_put`, every other one alone."""
    most = max(1, min(_READ_BATCH_FILES, config.max_concurrency // 8))
    most_bytes = min(_PIECE, config.buffer_bytes // 8)
    batches: list[list[int]] = []
    filled = most_bytes + 1  # the next small file starts a batch
    for i in range(len(items)):
        size = small.get(i)
        if size is None:
            batches.append([i])
            filled = most_bytes + 1
            continue
        if filled + size > most_bytes or len(batches[-1]) >= most:
            batches.append([])
            filled = 0
        batches[-1].append(i)
        filled += size
    return batches


def _crc_if_size(path: Path, size: int, view: memoryview) -> int | None:
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


def _write_at(fd: int, offset: int, data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Write ``data`` at ``offset``; returns ``crc`` extended over it."""
    pwrite_all(fd, data, offset)
    return crc32(data, crc)


def _write_pieces(fd: int, offset: int, pieces: list[bytes], crc: int) -> int:
    for piece in pieces:
        crc = _write_at(fd, offset, piece, crc)
        offset += len(piece)
    return crc


def _make_folders(paths: list[str]) -> None:
    for folder in {os.path.dirname(path) for path in paths}:
        os.makedirs(folder, exist_ok=True)


def _write_file(path: str, data: bytes | bytearray) -> int:
    """Create ``path`` holding ``data``; returns its CRC-32."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return _write_at(fd, 0, data)
    finally:
        os.close(fd)


def _missing(storage: Storage, item: Download) -> MissingObjectError:
    return MissingObjectError(f"{item.name}: object {storage.describe(item.key)} is missing")


def _check_length(storage: Storage, item: Download, got: int, expected: int) -> None:
    if got > expected:
        raise CorruptCheckpointError(
            f"{item.name}: expected {item.size} bytes, {storage.describe(item.key)} holds more"
        )


def _copy_object(storage: Storage, item: Download) -> tuple[int, int]:
    """Read a whole object of a blocking backend and write it to its target: (size, CRC)."""
    try:
        data = cast(BlockingStorage, storage).get_blocking(item.key)
    except FileNotFoundError as exc:
        raise _missing(storage, item) from exc
    _check_length(storage, item, len(data), item.size)
    return len(data), _write_file(item.target, data)


def _copy_range(
    storage: Storage, item: Download, fd: int, offset: int, length: int, whole: bool
) -> tuple[int, int]:
    """Copy ``length`` bytes from ``offset`` of an object of a blocking backend into ``fd``
    through one buffer: (CRC-32, bytes). ``whole``: also check the object ends there."""
    blocking = cast(BlockingStorage, storage)
    crc = got = 0
    try:
        with memoryview(bytearray(min(length, _PIECE) or 1)) as view:
            while got < length:
                n = blocking.readinto_blocking(
                    item.key, offset + got, view[: min(len(view), length - got)]
                )
                if not n:
                    break
                crc = _write_at(fd, offset + got, view[:n], crc)
                got += n
            if whole and got == length:
                extra = blocking.readinto_blocking(item.key, offset + got, view[:1])
                _check_length(storage, item, got + extra, length)
    except FileNotFoundError as exc:
        raise _missing(storage, item) from exc
    return crc, got


def _open_target(path: str, size: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if size:
            os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Engine:
    def __init__(self, config: TransferConfig, threads: CapacityLimiter) -> None:
        self.config = config
        self._slots = anyio.Semaphore(config.max_concurrency)
        self._budget = ByteBudget(config.buffer_bytes)
        self._piece = min(_WRITE_PIECE, config.buffer_bytes)  # what one GET holds at most
        self._threads = threads

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one request slot, for a request made outside the engine."""
        async with self._slots:
            yield

    async def _acquire_slots(self, n: int) -> None:
        got = 0
        try:
            for _ in range(n):
                await self._slots.acquire()
                got += 1
        except BaseException:
            for _ in range(got):
                self._slots.release()
            raise

    async def _thread(self, func: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)

    # -- uploads -------------------------------------------------------------

    async def unchanged(self, files: list[tuple[Path, Stored]]) -> list[bool]:
        """For each file, whether it holds exactly the bytes described (size and CRC-32).

        Files are read in batches of a few MiB, one worker-thread call per batch, batches
        in parallel: far cheaper per file than a request, and the only read of a file
        that turns out unchanged.
        """
        if not files:
            return []
        result = [False] * len(files)
        batches: list[list[int]] = [[]]
        held = 0
        for i, (_, known) in enumerate(files):
            if held >= _BATCH_BYTES or len(batches[-1]) >= _BATCH_FILES:
                batches.append([])
                held = 0
            batches[-1].append(i)
            held += known.size

        def check(batch: list[int]) -> None:
            largest = max(files[i][1].size for i in batch)
            with memoryview(bytearray(min(largest, _HASH_BUFFER) or 1)) as view:
                for i in batch:
                    path, known = files[i]
                    result[i] = _crc_if_size(path, known.size, view) == known.crc

        async with task_group() as tg:
            for batch in batches:
                tg.start_soon(self._thread, check, batch)
        return result

    async def upload(self, storage: Storage, prefix: str, items: list[Upload]) -> list[Stored]:
        """Store every item under ``prefix + item.name``; returns what was stored, in the
        order given."""
        results: list[Stored | None] = [None] * len(items)

        async def run(i: int, item: Upload) -> None:
            results[i] = await self._upload_one(storage, prefix + item.name, item)

        async def run_batch(batch: list[int]) -> None:
            stored = await self._put_batch(storage, prefix, [items[i] for i in batch])
            for i, done in zip(batch, stored, strict=True):
                results[i] = done

        small = {
            i: item.size
            for i, item in enumerate(items)
            if isinstance(item.source, Path)
            and item.size <= self.config.multipart_threshold
            and (storage.blocking or item.size <= _PIECE)
        }
        async with task_group() as tg:
            if storage.blocking:
                for batch in self._batches(small):
                    await self._slots.acquire()  # handed to the task, as below
                    tg.start_soon(run_batch, batch)
                for i, item in enumerate(items):
                    if i not in small:
                        await self._slots.acquire()  # handed to the task: its first request
                        tg.start_soon(run, i, item)
            else:
                for batch in _read_batches(items, small, self.config):  # in the order given
                    if batch[0] not in small:
                        await self._slots.acquire()  # handed to the task: its first request
                        tg.start_soon(run, batch[0], items[batch[0]])
                    else:
                        await self._acquire_slots(len(batch))  # one per file, to the task
                        tg.start_soon(
                            self._read_and_put, storage, prefix, items, batch, results, tg
                        )
        return [r for r in results if r is not None]

    def _batches(self, sizes: dict[int, int]) -> list[list[int]]:
        """The indices of ``sizes`` (index: bytes) in batches spread over the worker
        threads: for a blocking backend, one worker-thread call per batch. A batch ends at
        ``_BATCH_FILES_BLOCKING`` files, or with the file that brings it to
        ``_BATCH_BYTES_BLOCKING`` bytes."""
        per_thread = -(-len(sizes) // int(self._threads.total_tokens))
        most = max(1, min(_BATCH_FILES_BLOCKING, per_thread))
        batches: list[list[int]] = []
        filled = _BATCH_BYTES_BLOCKING
        for i, size in sizes.items():
            if filled >= _BATCH_BYTES_BLOCKING or len(batches[-1]) >= most:
                batches.append([])
                filled = 0
            batches[-1].append(i)
            filled += size
        return batches

    async def _put_batch(self, storage: Storage, prefix: str, batch: list[Upload]) -> list[Stored]:
        """Read and store small files to a blocking backend one after another in one
        worker-thread call: one hand-off per batch, not per file. Runs holding one slot,
        which it releases, and memory for the largest file; each file's buffer is made
        and freed in the worker thread, so glibc reuses that thread's arena."""
        blocking = cast(BlockingStorage, storage)

        def store() -> list[Stored]:
            out = []
            for item in batch:
                path = cast(Path, item.source)
                chunk = _read_at(path, 0, item.size)
                blocking.put_blocking(prefix + item.name, chunk.body, chunk.crc)
                out.append(Stored(chunk.size, chunk.crc))
            return out

        stored = await self._batch_call(max(item.size for item in batch), store)
        for item in batch:
            key = prefix + item.name
            log.debug("stored %s (%d bytes) as %s", item.name, item.size, storage.describe(key))
        return stored

    async def _read_and_put(
        self,
        storage: Storage,
        prefix: str,
        items: list[Upload],
        batch: list[int],
        results: list[Stored | None],
        tg: TaskGroup,
    ) -> None:
        """Read a batch of small files in one worker-thread call, then PUT each as a task
        of its own in ``tg``. Runs holding one slot per file of the batch; each PUT
        releases its file's slot and budget, and what no PUT took is released here."""
        handed = 0
        held: list[int] = []
        try:
            # all at once: a batch holding part of its bytes could wait on another forever
            left = await self._budget.acquire(sum(items[i].size for i in batch))
            for i in batch:  # each PUT gives back its share (the whole, unless clipped)
                held.append(min(items[i].size, left))
                left -= held[-1]
            bodies = [new_body(items[i].size) for i in batch]  # see new_body()

            def read() -> list[Chunk]:
                return [
                    _read_at(cast(Path, items[i].source), 0, items[i].size, body)
                    for i, body in zip(batch, bodies, strict=True)
                ]

            chunks = await self._thread(read)
            for i, chunk, bytes_held in zip(batch, chunks, held, strict=True):
                tg.start_soon(self._put_read, storage, prefix, items[i].name, chunk, bytes_held)
                results[i] = Stored(chunk.size, chunk.crc)
                handed += 1
        finally:
            self._budget.release(sum(held[handed:]))
            for _ in batch[handed:]:
                self._slots.release()

    async def _put_read(
        self, storage: Storage, prefix: str, name: str, chunk: Chunk, held: int
    ) -> None:
        """PUT one small file read by :meth:`_read_and_put`; releases its slot and budget."""
        try:
            await storage.put(prefix + name, chunk.body, chunk.crc)
        finally:
            self._budget.release(held)
            self._slots.release()
        log.debug("stored %s (%d bytes) as %s", name, chunk.size, storage.describe(prefix + name))

    async def _upload_one(self, storage: Storage, key: str, item: Upload) -> Stored:
        """Runs holding one slot, which it releases after its first request."""
        if not isinstance(item.source, Path):
            stored = await self._upload_stream(storage, key, item)
        elif item.size > self.config.multipart_threshold:
            stored = await self._upload_parts(storage, key, item)
        else:
            try:
                stored = await self._put_small(storage, key, item)
            finally:
                self._slots.release()
        if stored.unchanged:
            log.debug("%s is unchanged (%d bytes); not stored again", item.name, stored.size)
        else:
            log.debug("stored %s (%d bytes) as %s", item.name, stored.size, storage.describe(key))
        return stored

    async def _put_small(self, storage: Storage, key: str, item: Upload) -> Stored:
        assert isinstance(item.source, Path)
        path, size = item.source, item.size

        def read(body: io.BytesIO) -> tuple[Chunk, Stored | None]:
            chunk = _read_at(path, 0, size, body)
            if storage.blocking:  # store it from this thread too
                cast(BlockingStorage, storage).put_blocking(key, chunk.body, chunk.crc)
                return chunk, Stored(chunk.size, chunk.crc)
            return chunk, None

        held = await self._budget.acquire(size)
        try:
            chunk, stored = await self._thread(read, new_body(size))
            if stored is None:
                await storage.put(key, chunk.body, chunk.crc)
                stored = Stored(chunk.size, chunk.crc)
            return stored
        finally:
            self._budget.release(held)

    async def _upload_parts(self, storage: Storage, key: str, item: Upload) -> Stored:
        assert isinstance(item.source, Path)
        path, size = item.source, item.size
        part = self.config.part_size_for(size)
        try:
            upload = await self._start_multipart(storage, key)
        finally:
            self._slots.release()
        parts: dict[int, tuple[int, int]] = {}

        async def put_part(number: int, offset: int, length: int) -> None:
            try:
                held = await self._budget.acquire(length)
                try:
                    chunk = await self._thread(_read_at, path, offset, length, new_body(length))
                    await upload.put_part(number, offset, chunk.body, chunk.crc)
                    parts[number] = (chunk.crc, length)
                finally:
                    self._budget.release(held)
            finally:
                self._slots.release()

        async def send() -> None:
            async with task_group() as tg:
                for number, offset in enumerate(range(0, size, part), start=1):
                    await self._slots.acquire()
                    tg.start_soon(put_part, number, offset, min(part, size - offset))

        await self._finish_multipart(upload, send)
        return Stored(size, combine_parts([parts[n] for n in sorted(parts)]))

    async def _start_multipart(self, storage: Storage, key: str) -> MultipartUpload:
        # Shielded: cancelled mid-request, the upload would exist with an id never learned.
        # The caller's next await sees the cancellation and aborts it.
        with anyio.CancelScope(shield=True):
            upload = await storage.start_multipart(key)
        return upload

    async def _finish_multipart(
        self, upload: MultipartUpload, send: Callable[[], Awaitable[None]]
    ) -> None:
        """Run ``send`` then complete; abort on any failure or cancellation."""
        try:
            await send()
            async with self._slots:
                await upload.complete()
        except BaseException:
            # Shielded: a cancelled save must still abort, or its parts linger (and bill).
            with anyio.move_on_after(30, shield=True):
                try:
                    await upload.abort()
                except Exception as exc:
                    log.warning("could not abort multipart upload: %s", exc)
            raise

    async def _upload_stream(self, storage: Storage, key: str, item: Upload) -> Stored:
        """Store a binary stream read front to back; never all of it in memory.

        Runs holding one slot. Each part owns a slot and its bytes until it is sent.
        """
        name, stream = item.name, item.source
        assert not isinstance(stream, Path)
        part = self.config.part_size
        parts: dict[int, tuple[int, int]] = {}
        total = 0
        held = 0
        handed = False  # once the first chunk's slot and bytes belong to a part task
        first = _EMPTY

        async def put_part(number: int, offset: int, chunk: Chunk, held: int) -> None:
            try:
                await upload.put_part(number, offset, chunk.body, chunk.crc)
                parts[number] = (chunk.crc, chunk.size)
            finally:
                self._budget.release(held)
                self._slots.release()

        async def next_chunk(length: int) -> tuple[Chunk, int]:
            await self._slots.acquire()
            held = 0
            try:
                held = await self._budget.acquire(length)
                chunk = await self._thread(_read_stream, stream, length)
            except BaseException:
                self._budget.release(held)
                self._slots.release()
                raise
            if not chunk.size:
                self._budget.release(held)
                self._slots.release()
            return chunk, held

        async def send() -> None:
            nonlocal total, handed, first
            chunk, chunk_held = first, held
            first = _EMPTY
            number = 1
            async with task_group() as tg:
                while chunk.size:
                    tg.start_soon(put_part, number, total, chunk, chunk_held)
                    handed = True
                    total += chunk.size
                    number += 1
                    chunk = _EMPTY
                    length = min(part * (1 + (number - 1) // _STREAM_GROWTH), MAX_PART_SIZE)
                    chunk, chunk_held = await next_chunk(length)
                    if chunk.size and number > MAX_PARTS:
                        self._budget.release(chunk_held)
                        self._slots.release()
                        raise CheckpointError(
                            f"{name}: the stream is longer than {MAX_PARTS} parts allow"
                            f" ({total} bytes so far); save it as a file instead"
                        )

        try:
            held = await self._budget.acquire(part)
            first = await self._thread(_read_stream, stream, part)
            if first.size < part:
                if item.previous == Stored(first.size, first.crc):
                    return Stored(first.size, first.crc, unchanged=True)
                await storage.put(key, first.body, first.crc)
                return Stored(first.size, first.crc)
            upload = await self._start_multipart(storage, key)
            await self._finish_multipart(upload, send)
        finally:
            if not handed:
                self._budget.release(held)
                self._slots.release()
        return Stored(total, combine_parts([parts[n] for n in sorted(parts)]))

    # -- downloads -----------------------------------------------------------

    async def download(self, storage: Storage, items: list[Download]) -> None:
        """Fetch every item into its target path, verifying size and CRC-32 where known."""
        await self._thread(_make_folders, [item.target for item in items])
        small = {
            i: item.size for i, item in enumerate(items) if storage.blocking and item.size <= _PIECE
        }
        async with task_group() as tg:
            for batch in self._batches(small):
                await self._slots.acquire()
                tg.start_soon(self._copy_batch, storage, [items[i] for i in batch])
            for i, item in enumerate(items):
                if i not in small:
                    await self._slots.acquire()
                    tg.start_soon(self._download_one, storage, item)

    async def _copy_batch(self, storage: Storage, batch: list[Download]) -> None:
        """Copy small objects of a blocking backend to their targets one after another in
        one worker-thread call, verifying each. Runs holding one slot, which it releases,
        and memory for the largest object. A missing or corrupt object does not stop the
        rest: the error names every one, as one task per object would."""

        def copy() -> None:
            bad: list[CorruptCheckpointError] = []
            for item in batch:
                try:
                    size, crc = _copy_object(storage, item)
                    self._verify(storage, item, size, crc)
                except CorruptCheckpointError as exc:
                    bad.append(exc)
            if len(bad) == 1:
                raise bad[0]
            if bad:
                raise BaseExceptionGroup("objects missing or corrupt", bad)  # see collapse()

        await self._batch_call(max(item.size for item in batch), copy)

    async def _batch_call(self, largest: int, func: Callable[[], T]) -> T:
        """Run a batch's ``func`` in a worker thread holding budget for its ``largest``
        file, then release the slot the batch was handed."""
        try:
            held = await self._budget.acquire(largest)
            try:
                return await self._thread(func)
            finally:
                self._budget.release(held)
        finally:
            self._slots.release()

    async def _download_one(self, storage: Storage, item: Download) -> None:
        """Runs holding one slot, which it releases after its first request."""
        if item.size <= _PIECE:  # one GET, written in one thread call
            try:
                held = await self._budget.acquire(item.size)
                try:
                    if storage.blocking:
                        size, crc = await self._thread(_copy_object, storage, item)
                    else:
                        data = await self._get(storage, item)
                        size, crc = len(data), await self._thread(_write_file, item.target, data)
                finally:
                    self._budget.release(held)
            finally:
                self._slots.release()
            self._verify(storage, item, size, crc)
            return
        whole = item.size <= self.config.multipart_threshold  # one GET, else ranges
        try:
            fd = await self._thread(_open_target, item.target, item.size)
        except BaseException:
            self._slots.release()
            raise
        if not whole:
            self._slots.release()  # each range takes a slot of its own
        pieces: dict[int, tuple[int, int]] = {}
        try:
            if whole:
                try:
                    pieces[0] = await self._stream(storage, item, fd, 0, None)
                finally:
                    self._slots.release()
            else:
                part = self.config.part_size_for(item.size)
                async with task_group() as tg:
                    for offset in range(0, item.size, part):
                        await self._slots.acquire()
                        n = min(part, item.size - offset)
                        tg.start_soon(self._get_range, storage, item, fd, offset, n, pieces)
        finally:
            with anyio.CancelScope(shield=True):
                await self._thread(os.close, fd)
        crc = combine_parts([pieces[o] for o in sorted(pieces)])
        self._verify(storage, item, sum(length for _, length in pieces.values()), crc)

    def _verify(self, storage: Storage, item: Download, size: int, crc: int) -> None:
        if size != item.size:
            raise CorruptCheckpointError(
                f"{item.name}: expected {item.size} bytes, got {size}"
                f" from {storage.describe(item.key)}"
            )
        if item.crc is not None and crc != item.crc:
            raise CorruptCheckpointError(
                f"{item.name}: checksum mismatch (expected crc32 {item.crc:08x}, got {crc:08x})"
                f" in {storage.describe(item.key)}"
            )
        log.debug("fetched %s (%d bytes) from %s", item.name, size, storage.describe(item.key))

    async def _get(self, storage: Storage, item: Download) -> bytes | bytearray:
        """GET the whole object; at most the bytes expected."""
        try:
            data = await storage.get(item.key)
        except FileNotFoundError as exc:
            raise _missing(storage, item) from exc
        _check_length(storage, item, len(data), item.size)
        return data

    async def _get_range(
        self,
        storage: Storage,
        item: Download,
        fd: int,
        offset: int,
        length: int,
        pieces: dict[int, tuple[int, int]],
    ) -> None:
        """GET one range into place; runs holding a slot, which it releases."""
        try:
            pieces[offset] = await self._stream(storage, item, fd, offset, length)
        finally:
            self._slots.release()

    async def _stream(
        self, storage: Storage, item: Download, fd: int, offset: int, length: int | None
    ) -> tuple[int, int]:
        """Copy the object, or ``length`` bytes of it from ``offset``, into ``fd`` at
        ``offset`` as it arrives, holding at most one piece: (CRC-32, bytes). The budget
        counts every byte asked for until the copy ends, which bounds the big bodies in
        flight at once."""
        expected = item.size if length is None else length
        held = await self._budget.acquire(expected)
        try:
            if storage.blocking:
                whole = length is None
                return await self._thread(_copy_range, storage, item, fd, offset, expected, whole)
            crc = got = 0
            try:
                async with storage.reader(item.key, offset, length) as body:
                    _check_length(storage, item, body.size, expected)
                    while pieces := await _next_piece(body, self._piece):
                        n = sum(len(p) for p in pieces)
                        _check_length(storage, item, got + n, expected)
                        crc = await self._thread(_write_pieces, fd, offset + got, pieces, crc)
                        got += n
            except FileNotFoundError as exc:
                raise _missing(storage, item) from exc
            return crc, got
        finally:
            self._budget.release(held)


async def _next_piece(body: ObjectReader, limit: int) -> list[bytes]:
    """Up to ``limit`` bytes of ``body``, as they arrived; none at its end."""
    pieces: list[bytes] = []
    n = 0
    while n < limit and (data := await body.read(limit - n)):
        pieces.append(data)
        n += len(data)
    return pieces


def as_stream(data: bytes | bytearray | memoryview) -> BinaryIO:
    return io.BytesIO(bytes(data))
