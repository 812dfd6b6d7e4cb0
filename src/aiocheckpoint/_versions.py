"""The versions at a location, for operators: list them, look inside one, verify one,
prune old ones, collect what crashed saves left, and add up the bytes.

Pruning and collecting work from an inventory: one listing of ``.aiocheckpoint/``, the
open multipart uploads, and every manifest. What they delete follows the rules a save's
own collection does (``_collect``): data of saves numbered from the newest version up
may belong to a save in flight (or, where the server ignores ``If-None-Match``, to one
committing over the newest) and is left alone unless the caller says none runs, nothing a
kept manifest names is touched, and data goes before the manifests that name it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from . import _manifest as mf
from ._catalog import Catalog
from ._engine import Download, Engine
from ._errors import CheckpointNotFoundError, CorruptCheckpointError, StorageError
from ._progress import Meter
from ._reports import BadFile, FileInfo, Removal, Usage, VerifyReport, VersionFiles, VersionInfo
from ._tasks import task_group
from .storage import ObjectInfo, Storage

log = logging.getLogger("aiocheckpoint")


async def versions(store: Storage, engine: Engine, catalog: Catalog) -> list[VersionInfo]:
    """The committed versions, oldest first; none when there is no checkpoint."""
    try:
        async with engine.permit():
            listing = await store.list_objects(mf.MANIFESTS)
    except FileNotFoundError:
        return []
    manifests, unreadable = await _read_all(store, engine, catalog, listing)
    if unreadable:
        raise CorruptCheckpointError("; ".join(unreadable.values()))
    return [
        VersionInfo(
            m.version, _when(m.created), len(m.files), sum(e.size for e in m.files.values())
        )
        for _, m in sorted(manifests.items())
    ]


async def chosen(store: Storage, catalog: Catalog, version: int | None) -> mf.Manifest:
    """The manifest of ``version``, or of the newest version when None.

    :raises CheckpointNotFoundError: no checkpoint, or no such version.
    """
    if version is not None:
        return await catalog.version(store, version)
    try:
        newest, _ = await catalog.newest(store)
    except FileNotFoundError:
        newest = None
    if newest is None:
        raise CheckpointNotFoundError(f"no checkpoint at {store.describe()}: no committed version")
    return newest


def files_of(manifest: mf.Manifest) -> VersionFiles:
    files = tuple(FileInfo(p, e.size, e.checksum) for p, e in sorted(manifest.files.items()))
    return VersionFiles(manifest.version, _when(manifest.created), files)


async def verify(
    store: Storage, engine: Engine, manifest: mf.Manifest, meter: Meter
) -> VerifyReport:
    """Read back every file of ``manifest``; missing objects and wrong sizes show in the
    listing of ``data/``, wrong bytes in the CRC-32 of what is read."""
    meter.begin(len(manifest.files), sum(e.size for e in manifest.files.values()))
    async with engine.permit():
        sizes = {o.key: o.size for o in await store.list_objects(mf.DATA)}
    bad: list[BadFile] = []
    reads: list[Download] = []
    for path, e in sorted(manifest.files.items()):
        key = f"{mf.META}/{e.object}"
        held = sizes.get(key)
        reason = ""
        if held is None:
            reason = "the object is missing"
        elif e.offset is None and held != e.size:
            reason = f"expected {e.size} bytes, the object holds {held}"
        elif e.offset is not None and e.offset + e.size > held:
            reason = f"bytes {e.offset} to {e.offset + e.size} lie past its pack's {held}"
        if reason:
            bad.append(BadFile(path, store.describe(key), reason))
            meter.moved(e.size, path, files=1)
        else:
            reads.append(Download(key, path, "", e.size, e.crc, e.offset))
    for item, reason in await engine.check(store, reads, meter):
        bad.append(BadFile(item.name, store.describe(item.key), reason))
    meter.finish()
    total = sum(e.size for e in manifest.files.values())
    bad.sort(key=lambda b: b.path)
    return VerifyReport(manifest.version, len(manifest.files), total, tuple(bad))


@dataclass
class Inventory:
    """Everything under ``.aiocheckpoint/`` at one moment: objects with their sizes, the
    manifests (by version), those that cannot be read (version: why), open uploads."""

    objects: dict[str, int]
    manifests: dict[int, mf.Manifest]
    unreadable: dict[int, str]
    uploads: list[tuple[str, str]]

    @classmethod
    async def take(cls, store: Storage, engine: Engine, catalog: Catalog) -> Inventory:
        """:raises CheckpointNotFoundError: no committed version is there."""
        inventory = cls({}, {}, {}, [])
        try:
            async with task_group() as tg:
                tg.start_soon(inventory._list_uploads, store, engine)
                async with engine.permit():
                    listing = await store.list_objects(f"{mf.META}/")
        except FileNotFoundError:
            listing = []
        inventory.objects = {o.key: o.size for o in listing}
        manifests = [o for o in listing if mf.manifest_version(o.key) is not None]
        found, unreadable = await _read_all(store, engine, catalog, manifests)
        inventory.manifests, inventory.unreadable = found, unreadable
        if not found and not unreadable:
            raise CheckpointNotFoundError(
                f"no checkpoint at {store.describe()}: no committed version"
            )
        return inventory

    async def _list_uploads(self, store: Storage, engine: Engine) -> None:
        try:
            async with engine.permit():
                self.uploads = await store.list_uploads(mf.DATA)
        except StorageError as exc:  # e.g. no s3:ListBucketMultipartUploads permission
            log.warning("cannot list unfinished uploads at %s: %s", store.describe(), exc)

    @property
    def newest(self) -> int:
        return max([*self.manifests, *self.unreadable])

    def prune(self, keep: int) -> tuple[list[int], list[str]]:
        """The versions to drop to keep the newest ``keep``, and the keys only they need
        (their manifests last)."""
        numbers = sorted([*self.manifests, *self.unreadable])
        kept, dropped = numbers[-keep:], numbers[:-keep]
        self._refuse_unreadable(kept, "prune")
        live = _named(self.manifests[v] for v in kept)
        named = _named(self.manifests[v] for v in dropped if v in self.manifests) - live
        data = sorted(k for k in named if k in self.objects)
        return dropped, data + [mf.manifest_key(v) for v in dropped]

    @property
    def settled(self) -> int:
        """Saves numbered up to this one have ended: above the newest version a save may
        be running, and at it another writer's may still land where the server ignores
        ``If-None-Match``."""
        return self.newest - 1

    def garbage(self, kept: list[int], upto: int | None = None) -> list[str]:
        """Keys that none of the versions ``kept`` needs, of saves numbered up to
        ``upto`` (default: :attr:`settled`): data and manifests older than them, temp
        files of commits."""
        self._refuse_unreadable(kept, "collect garbage")
        retained = [self.manifests[v] for v in kept]
        keys = mf.garbage(self.objects, retained, self.settled if upto is None else upto)
        return sorted(keys, key=lambda k: (k.startswith(mf.MANIFESTS), k))

    def crashed_uploads(self, upto: int | None = None) -> list[tuple[str, str]]:
        """Open multipart uploads of saves numbered up to ``upto`` (default:
        :attr:`settled`)."""
        upto = self.settled if upto is None else upto
        return [
            (key, upload_id)
            for key, upload_id in self.uploads
            if (v := mf.data_dir_version(key)) is not None and v <= upto
        ]

    def running(self) -> list[str]:
        """The data folders (keys ending in "/") of saves numbered above
        :attr:`settled` that no version names, which may still be running."""
        named = {_folder_of(k) for k in _named(self.manifests.values())}
        keys = [*self.objects, *(key for key, _ in self.uploads)]
        folders = {
            _folder_of(key)
            for key in keys
            if (v := mf.data_dir_version(key)) is not None and v > self.settled
        }
        return sorted(folders - named)

    def usage(self) -> Usage:
        newest = self.newest
        self._refuse_unreadable([newest], "add up")
        live = {f"{mf.META}/{obj}" for obj in self.manifests[newest].objects()}
        live |= {mf.manifest_key(newest), mf.LATEST}
        _, pruned = self.prune(1)
        reclaimable = set(pruned) | set(self.garbage([newest]))
        return Usage(
            len(self.manifests) + len(self.unreadable),
            newest,
            sum(self.objects.values()),
            sum(self.objects.get(k, 0) for k in live),
            sum(self.objects.get(k, 0) for k in reclaimable),
            len(self.objects),
            len(self.uploads),
        )

    def _refuse_unreadable(self, kept: list[int], what: str) -> None:
        bad = [self.unreadable[v] for v in kept if v in self.unreadable]
        if bad:
            raise CorruptCheckpointError(
                f"cannot {what}: {bad[0]}; what that version names is unknown, so nothing"
                " is deleted"
            )


async def remove(
    store: Storage,
    inventory: Inventory,
    versions: list[int],
    keys: list[str],
    uploads: list[tuple[str, str]],
    *,
    dry_run: bool,
    running: Sequence[str] = (),
) -> Removal:
    """Delete ``keys`` (data before manifests: while a manifest is there, what it names is
    collected again) and abort ``uploads``, unless ``dry_run``."""
    if not dry_run:
        data = [k for k in keys if not k.startswith(mf.MANIFESTS)]
        manifests = [k for k in keys if k.startswith(mf.MANIFESTS)]
        for batch in (data, manifests):
            if batch:
                await store.delete(batch)
        for key, upload_id in uploads:
            await store.abort_upload(key, upload_id)
        log.info(
            "removed %d objects and %d unfinished uploads from %s",
            len(keys),
            len(uploads),
            store.describe(),
        )
    return Removal(
        dry_run,
        tuple(versions),
        tuple(store.describe(k) for k in keys),
        sum(inventory.objects.get(k, 0) for k in keys),
        tuple(store.describe(key) for key, _ in uploads),
        tuple(store.describe(folder) for folder in running),
    )


async def _read_all(
    store: Storage, engine: Engine, catalog: Catalog, listing: list[ObjectInfo]
) -> tuple[dict[int, mf.Manifest], dict[int, str]]:
    """The listed manifests, side by side: (version: manifest), and (version: why it
    cannot be read). One deleted since the listing is left out."""
    found: dict[int, mf.Manifest] = {}
    unreadable: dict[int, str] = {}

    async def read(info: ObjectInfo, version: int) -> None:
        try:
            async with engine.permit():
                found[version] = await catalog.read(store, info)
        except FileNotFoundError:
            pass  # pruned since the listing
        except CorruptCheckpointError as exc:
            unreadable[version] = str(exc)

    async with task_group() as tg:
        for info in listing:
            version = mf.manifest_version(info.key)
            if version is not None:
                tg.start_soon(read, info, version)
    return found, unreadable


def _named(manifests: Iterable[mf.Manifest]) -> set[str]:
    """The keys of the data objects ``manifests`` name."""
    return {f"{mf.META}/{obj}" for m in manifests for obj in m.objects()}


def _folder_of(key: str) -> str:
    """The data folder holding ``key``, as a key ending in "/"."""
    return mf.DATA + key[len(mf.DATA) :].split("/", 1)[0] + "/"


def _when(created: str) -> datetime | None:
    try:
        return datetime.fromisoformat(created)
    except ValueError:
        return None
