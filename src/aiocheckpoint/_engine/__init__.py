"""The transfer engine: moves many files, and the parts of big ones, under one budget of
request slots and bytes (see ``_permits``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import CapacityLimiter

from .._config import TransferConfig
from .._progress import Meter
from ..storage import Storage
from ._checks import Bad, Checker
from ._downloads import Downloader
from ._items import Download, InPack, Stored, Upload
from ._permits import Limits, batches
from ._uploads import Uploader

__all__ = ("Bad", "Download", "Engine", "InPack", "Stored", "Upload", "batches")


class Engine:
    """Uploads and downloads of one checkpoint object, sharing its limits and threads."""

    def __init__(self, config: TransferConfig, threads: CapacityLimiter) -> None:
        self.config = config
        self.threads = threads
        self.limits = Limits(config)

    @asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """One request slot, for a request made outside the engine (a listing, a
        manifest)."""
        async with self.limits.permit():
            yield

    async def upload(
        self, storage: Storage, prefix: str, items: list[Upload], meter: Meter | None = None
    ) -> list[Stored]:
        """Store every item under ``prefix + item.name``; returns what was stored, in the
        order given. Bytes count into ``meter`` as each request that stored them ends."""
        meter = meter or Meter("", None)
        uploader = Uploader(self.config, self.limits, self.threads, storage, meter, prefix)
        return await uploader.run(items)

    async def download(
        self, storage: Storage, items: list[Download], meter: Meter | None = None
    ) -> None:
        """Fetch every item into its target path, verifying size and CRC-32 where known.
        Bytes count into ``meter`` as each request that fetched them ends."""
        meter = meter or Meter("", None)
        await Downloader(self.config, self.limits, self.threads, storage, meter).run(items)

    async def check(self, storage: Storage, items: list[Download], meter: Meter) -> list[Bad]:
        """Read every item's bytes and compare size and CRC-32, writing nothing (items'
        ``target`` is unused); returns the items that fail, each with the reason."""
        return await Checker(self.config, self.limits, self.threads, storage, meter).run(items)
