"""What the uploads, downloads and checks of one engine call share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from .._config import TransferConfig
from .._progress import Meter
from ..storage import Storage
from ._permits import Limits

T = TypeVar("T")


class Worker:
    """The engine's settings, permits and worker threads, one storage, and the meter its
    bytes count into."""

    def __init__(
        self,
        config: TransferConfig,
        limits: Limits,
        threads: CapacityLimiter,
        storage: Storage,
        meter: Meter,
    ) -> None:
        self._config = config
        self._limits = limits
        self._threads = threads
        self._storage = storage
        self._meter = meter

    async def _thread(self, func: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)

    @property
    def _range_bytes(self) -> int:
        """The most bytes one ranged GET of a pack asks for."""
        config = self._config
        return min(max(config.part_size, config.pack_bytes), config.buffer_bytes)
