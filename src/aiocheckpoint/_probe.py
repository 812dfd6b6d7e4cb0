"""Whether the server honours ``If-None-Match`` on PUT, learned beside a save's first
listing and uploads, so that the answer is there by its commit and costs no time."""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskGroup

from . import _manifest as mf
from ._catalog import Catalog
from ._collect import CLEANUP_SECONDS
from ._engine import Engine
from .storage import Storage

log = logging.getLogger("aiocheckpoint")


class Probe:
    """Learns, once per checkpoint object and location, what ``Catalog.exclusive`` says."""

    def __init__(self, store: Storage, engine: Engine, catalog: Catalog) -> None:
        self._store = store
        self._engine = engine
        self._catalog = catalog
        self._answered = anyio.Event()
        self._started = False

    def start(self, tg: TaskGroup) -> None:
        """Run in ``tg`` if this object does not know the answer yet."""
        if self._catalog.exclusive(self._store) is None:
            self._started = True
            tg.start_soon(self._run)

    async def _run(self) -> None:
        """Create ``.aiocheckpoint/probe`` exclusively until the server refuses (it is
        there already: one request) or has accepted twice (it ignores the header)."""
        store = self._store
        try:
            for _ in range(2):
                async with self._engine.permit():
                    await store.put_exclusive(mf.PROBE, b"")
            self._catalog.learn_exclusive(store, False)
            self._warn()
        except FileExistsError:
            self._catalog.learn_exclusive(store, True)
        except Exception as exc:  # unknown: this save collects as if it were not honoured
            log.debug("could not learn whether %s honours If-None-Match: %s", store.endpoint, exc)
        finally:
            self._answered.set()

    async def undo(self) -> None:
        """The save failed: delete the probe it may have created, so that a failed first
        save leaves nothing behind (a later save creates it again)."""
        if not self._started:
            return
        with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
            try:
                await self._store.delete([mf.PROBE])
            except Exception as exc:
                log.debug("could not delete %s: %s", self._store.describe(mf.PROBE), exc)

    async def answer(self) -> bool:
        """Whether the commit was exclusive for sure (unknown counts as not)."""
        if self._started:
            await self._answered.wait()
        return self._catalog.exclusive(self._store) is True

    def _warn(self) -> None:
        log.warning(
            "the S3 server at %s ignores If-None-Match on PUT (it let an object be created"
            " twice): there, two processes saving to %s at once are not detected and may"
            " both report success; the checkpoint is then the one whose commit landed last."
            " No data is lost: saves keep one version more than keep_versions until the next.",
            self._store.endpoint,
            self._store.describe(),
        )
