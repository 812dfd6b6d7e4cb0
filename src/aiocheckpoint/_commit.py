"""A save: list the versions, upload what changed, publish the manifest, collect."""

from __future__ import annotations

import logging
import time

import anyio.lowlevel

from . import _manifest as mf
from ._catalog import Catalog
from ._collect import CLEANUP_SECONDS, Survey, collect, discard
from ._engine import Engine, Upload
from ._probe import Probe
from ._progress import Meter
from ._publish import publish
from ._scan import stream_starts
from ._tasks import Later, task_group
from ._upload import EarlyUpload, Uploaded, check_key_lengths, new_folder, upload_changes
from .storage import ObjectInfo, Storage

log = logging.getLogger("aiocheckpoint")


class Save:
    """One save of ``items`` to ``store``, as a new version (see the commit protocol in
    docs/format.md: steps 1 to 5)."""

    def __init__(
        self,
        store: Storage,
        engine: Engine,
        catalog: Catalog,
        keep: int,
        items: list[Upload],
        meter: Meter | None = None,
    ) -> None:
        self._meter = meter or Meter("save", None)
        self._store = store
        self._engine = engine
        self._catalog = catalog
        self._keep = keep
        self._items = items
        self._folders: list[str] = []  # every data folder this save wrote into
        self.committing = False  # past the last point where cancelling stops the commit
        self.committed: int | None = None  # the version committed
        self._started = time.monotonic()
        self._probe = Probe(store, engine, catalog)

    async def run(self) -> None:
        check_key_lengths(self._store, self._items)
        try:
            async with task_group() as side:  # beside the whole save, the answer by collect
                self._probe.start(side)
                await self._run()
        except BaseException:
            if self.committed is None:
                await self._probe.undo()
            raise

    async def _run(self) -> None:
        early = self._early_upload()
        try:
            async with task_group() as tg:
                survey = Later[Survey]()
                tg.start_soon(survey.run, Survey.take, self._store, self._engine)
                if early is not None:
                    self._folders.append(early.folder)
                    early.start(tg)
                base, manifests = await self._newest()
                uploaded = await self._upload(early, base)
                await self._store.sync()
            listed = survey.value
            await anyio.lowlevel.checkpoint_if_cancelled()
            self.committing = True  # no await before the commit: cancel() now comes too late
        except BaseException:
            folders = [f"{mf.META}/{folder}" for folder in self._folders]
            await discard(self._store, *folders, within=CLEANUP_SECONDS)
            raise
        try:
            await self._commit(base, manifests, uploaded, listed.without(self._folders))
            self._meter.finish()
        finally:
            if early is not None and uploaded.folder != early.folder:
                # deleted last: a request cancelled in flight may land late
                await discard(self._store, f"{mf.META}/{early.folder}")

    def _early_upload(self) -> EarlyUpload | None:
        """Over the network, files go up while the versions are listed."""
        starts = stream_starts(self._items)
        if not self._store.overlaps_listing or starts is None:
            return None
        guess = self._catalog.known_newest(self._store)
        return EarlyUpload(self._engine, self._store, self._items, guess, starts, self._meter)

    async def _newest(self) -> tuple[mf.Manifest | None, list[ObjectInfo]]:
        try:
            async with self._engine.permit():  # asked for before the uploads
                return await self._catalog.newest(self._store)
        except FileNotFoundError:
            return None, []  # a new local folder

    async def _upload(self, early: EarlyUpload | None, base: mf.Manifest | None) -> Uploaded:
        if early is not None:
            if early.holds(base):
                return await early.result()
            await early.abandon()
        folder = new_folder((base.version if base else 0) + 1)
        self._folders.append(folder)
        return await upload_changes(
            self._engine, self._store, folder, self._items, base, self._meter
        )

    async def _commit(
        self,
        base: mf.Manifest | None,
        manifests: list[ObjectInfo],
        uploaded: Uploaded,
        survey: Survey,
    ) -> None:
        store = self._store
        old = base.files if base else {}
        files = mf.merge(old, uploaded.entries(old))
        if base is not None and files == dict(old) and not survey.left_above(base.version):
            # Version N already is this checkpoint: committing a copy of it would cost two
            # requests in sequence (commit, delete N) and change nothing. (What a crashed
            # save left above N is collected only by a commit above it.)
            exclusive = await self._probe.answer()
            await collect(store, self._catalog, base, manifests, survey, self._keep, exclusive)
            log.info(
                "nothing changed since version %d of %s: %d files, nothing committed (%.2fs)",
                base.version,
                store.describe(),
                len(files),
                time.monotonic() - self._started,
            )
            return
        sizes = {**(base.packs if base else {}), **uploaded.packs()}
        manifest = mf.Manifest(
            (base.version if base else 0) + 1, files, packs=mf.packs_of(files, sizes)
        )
        await publish(store, self._catalog, manifest, uploaded.folder)
        self.committed = manifest.version
        exclusive = await self._probe.answer()
        await collect(store, self._catalog, manifest, manifests, survey, self._keep, exclusive)
        sent = [s for s in uploaded.stored if not s.unchanged]
        log.info(
            "committed version %d of %s: %d files (%d saved now, %d bytes; %d unchanged) in %.2fs",
            manifest.version,
            store.describe(),
            len(manifest.files),
            len(sent),
            sum(s.size for s in sent),
            len(self._items) - len(sent),
            time.monotonic() - self._started,
        )
