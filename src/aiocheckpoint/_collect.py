"""Garbage collection: what no kept version needs, and what failed saves left behind."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio

from . import _manifest as mf
from ._catalog import Catalog
from ._engine import Engine
from ._errors import CorruptCheckpointError, StorageError
from ._tasks import task_group
from .storage import ObjectInfo, Storage

log = logging.getLogger("aiocheckpoint")


@dataclass
class Survey:
    """What a save lists while its data goes up: the data folders under
    ``.aiocheckpoint/data/`` (one per save, not one per file) and unfinished multipart
    uploads."""

    folders: list[str]
    unfinished: list[tuple[str, str]]

    @classmethod
    async def take(cls, store: Storage, engine: Engine) -> Survey:
        survey = cls([], [])
        async with task_group() as tg:
            tg.start_soon(survey._list_folders, store, engine)
            tg.start_soon(survey._list_uploads, store, engine)
        return survey

    async def _list_folders(self, store: Storage, engine: Engine) -> None:
        async with engine.permit():
            self.folders = await store.list_dirs(mf.DATA)

    async def _list_uploads(self, store: Storage, engine: Engine) -> None:
        try:
            async with engine.permit():
                self.unfinished = await store.list_uploads(mf.DATA)
        except StorageError as exc:  # e.g. no s3:ListBucketMultipartUploads permission
            log.debug("cannot list unfinished uploads: %s", exc)

    def left_above(self, version: int) -> bool:
        """Whether a save numbered above ``version`` left data or an open upload behind."""
        keys = [*self.folders, *(key for key, _ in self.unfinished)]
        return any((v := mf.data_dir_version(key)) is not None and v > version for key in keys)

    def without(self, folders: list[str]) -> Survey:
        """The survey without the uploads listed in ``folders`` (a save's own, done or
        aborted since)."""
        mine = tuple(f"{mf.META}/{folder}" for folder in folders)
        return Survey(self.folders, [(k, u) for k, u in self.unfinished if not k.startswith(mine)])


#: How long a failed or cancelled save spends deleting what it wrote before it raises:
#: plenty for a server that answers; against one that does not, the error comes sooner.
CLEANUP_SECONDS = 5


async def discard(store: Storage, *prefixes: str, within: float = 30) -> None:
    """Best effort: delete what an uncommitted save wrote under ``prefixes`` (the next
    save would too), for at most ``within`` seconds in all."""
    with anyio.move_on_after(within, shield=True) as scope:
        for prefix in prefixes:
            try:
                await store.delete([o.key for o in await store.list_objects(prefix)])
            except Exception as exc:
                log.warning("could not clean up %s: %s", store.describe(prefix), exc)
    if scope.cancelled_caught:
        log.warning(
            "gave up cleaning up %s after %g s; the next save will",
            ", ".join(store.describe(p) for p in prefixes),
            within,
        )


async def collect(
    store: Storage,
    catalog: Catalog,
    newest: mf.Manifest,
    manifests: list[ObjectInfo],
    survey: Survey,
    keep: int,
    exclusive: bool = True,
) -> None:
    """Keep ``newest`` and the ``keep - 1`` versions before it; delete what no kept version
    needs, and abort unfinished uploads of crashed saves. What to delete comes from the
    manifests dropped now (usually the previous one, already in memory) and the list of
    data folders, so a save does not list every object. Failures only log: the commit
    stands and the next save tries again.

    Without ``exclusive`` (a server that may ignore ``If-None-Match``), another writer of
    the same version may still commit over ``newest``, naming its own data folder and the
    data of the version before: that version is kept too, and saves numbered like
    ``newest`` are left to the next save."""
    upto = newest.version if exclusive else newest.version - 1
    keep = keep if exclusive else keep + 1
    try:
        listed = {
            v: o
            for o in manifests
            if (v := mf.manifest_version(o.key)) is not None and v < newest.version
        }
        older = sorted(listed, reverse=True)
        retained = [newest]
        for v in older[: keep - 1]:
            retained.append(await catalog.read(store, listed[v]))
        dropping = [listed[v] for v in older[keep - 1 :]]
        dropped, unreadable = await _read_dropped(store, catalog, dropping)
        junk, dead = mf.unreferenced(retained, dropped, survey.folders, upto)
        for folder in dead:
            junk += [o.key for o in await store.list_objects(folder)]
        if unreadable:  # what it named is unknown: look at every data object
            everything = (o.key for o in await store.list_objects(mf.DATA))
            junk += mf.garbage(everything, retained, upto)
        junk = sorted(set(junk))
        if junk:
            await store.delete(junk)
            log.debug("removed %d unreferenced objects from %s", len(junk), store.describe())
        # Manifests last: while one is there, what it names is collected again.
        stale = mf.garbage((o.key for o in manifests), retained, upto)
        if stale:
            await store.delete(stale)
        for key, upload_id in survey.unfinished:
            version = mf.data_dir_version(key)
            if version is not None and version <= upto:
                await store.abort_upload(key, upload_id)
                log.debug("aborted unfinished upload of %s", store.describe(key))
    except Exception as exc:
        log.warning("could not remove old versions from %s: %s", store.describe(), exc)


async def _read_dropped(
    store: Storage, catalog: Catalog, infos: list[ObjectInfo]
) -> tuple[list[mf.Manifest], bool]:
    """The manifests to drop, and whether one of them could not be read."""
    dropped = []
    unreadable = False
    for info in infos:
        try:
            dropped.append(await catalog.read(store, info))
        except FileNotFoundError:
            pass  # collected already
        except CorruptCheckpointError:
            unreadable = True
    return dropped, unreadable
