"""Permits: a request slot and the bytes it holds, taken and given back as one.

Every request (a whole-object PUT or GET, a part, a range) runs under a permit of one
semaphore of ``max_concurrency`` slots, and every byte it holds in memory (an upload) or
has asked for and not yet written (a download) is counted against one byte budget. A
permit is a context manager, entered and left by the task that does the work, so it is
given back exactly once, also when that task is cancelled. A task that starts work waits
(``TaskGroup.start``) until the new task holds its permit: a sliding window, never a wave.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio

from .._config import TransferConfig

#: Files up to this size are moved a batch at a time (see :func:`batches`).
SMALL = 1024 * 1024
#: A batch holds at most this many files, and at most an eighth of the request slots and
#: of the byte budget, so that the window of requests in flight still slides a few files
#: at a time. A thread hand-off costs about as much client CPU as reading 64 KiB.
BATCH_FILES = 8


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


class Limits:
    """The request slots and the byte budget that every operation of one checkpoint
    object shares."""

    def __init__(self, config: TransferConfig) -> None:
        self.slots = anyio.Semaphore(config.max_concurrency)
        self.budget = ByteBudget(config.buffer_bytes)
        self.batch_files = max(1, min(BATCH_FILES, config.max_concurrency // 8))
        self.batch_bytes = min(SMALL, config.buffer_bytes // 8)

    @asynccontextmanager
    async def permit(self, slots: int = 1, nbytes: int = 0) -> AsyncIterator[None]:
        """Hold ``slots`` request slots and ``nbytes`` of the budget (taken at once: a
        batch holding part of its bytes could wait on another forever)."""
        taken = held = 0
        try:
            for _ in range(slots):
                await self.slots.acquire()
                taken += 1
            held = await self.budget.acquire(nbytes) if nbytes else 0
            yield
        finally:
            if held:
                self.budget.release(held)
            for _ in range(taken):
                self.slots.release()

    def batches(self, sizes: Sequence[int | None]) -> list[list[int]]:
        """Upload and download batches: see :func:`batches`."""
        return batches(sizes, self.batch_files, self.batch_bytes)


def batches(sizes: Sequence[int | None], most_files: int, most_bytes: int) -> list[list[int]]:
    """The indices of ``sizes`` in the order given: consecutive ones with a size in
    batches of at most ``most_files`` files and ``most_bytes`` bytes (a bigger one
    alone), those whose size is None each alone."""
    out: list[list[int]] = []
    filled = most_bytes + 1  # the next sized one starts a batch
    for i, size in enumerate(sizes):
        if size is None:
            out.append([i])
            filled = most_bytes + 1
            continue
        if filled + size > most_bytes or len(out[-1]) >= most_files:
            out.append([])
            filled = 0
        out[-1].append(i)
        filled += size
    return out
