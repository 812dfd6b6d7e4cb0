"""The versions API of AsyncCheckpoint: what operators ask of the location it saves to.
Each method opens the storage and delegates to ``_versions``."""

from __future__ import annotations

from . import _manifest as mf
from ._catalog import Catalog
from ._config import check_positive
from ._engine import Engine
from ._progress import Meter, ProgressCallback, meter
from ._reports import Removal, Usage, VerifyReport, VersionFiles, VersionInfo
from ._versions import Inventory, chosen, files_of, remove, verify, versions
from .storage import Location, Storage


class Admin:
    """Listing, inspecting, verifying, pruning and collecting the versions at
    ``checkpoint_dest``."""

    _dest: Location
    _engine: Engine
    _catalog: Catalog
    _progress: ProgressCallback | None

    async def _storage(self, location: Location) -> Storage:
        raise NotImplementedError

    def _watch(self, phase: str, progress: ProgressCallback | None) -> Meter:
        """A meter of ``phase`` for ``progress``, or the constructor's callback."""
        return meter(phase, self._progress if progress is None else progress)

    async def versions(self) -> list[VersionInfo]:
        """The committed versions at ``checkpoint_dest``, oldest first (each manifest is
        read once).

        :return: one :class:`VersionInfo` per version; empty when there is no checkpoint.
        :raises CorruptCheckpointError: a manifest cannot be read.
        :raises StorageError: the storage failed.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        store = await self._storage(self._dest)
        return await versions(store, self._engine, self._catalog)

    async def inspect(self, version: int | None = None) -> VersionFiles:
        """The files of a version at ``checkpoint_dest``.

        :param version: the version's number; None for the newest.
        :return: the version, with each file's path, size and checksum, by path.
        :raises TypeError: ``version`` is not an int.
        :raises ValueError: ``version`` is below 1.
        :raises CheckpointNotFoundError: no checkpoint, or no such version.
        :raises CorruptCheckpointError: its manifest cannot be read.
        :raises StorageError: the storage failed.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        _check_version(version)
        store = await self._storage(self._dest)
        return files_of(await chosen(store, self._catalog, version))

    async def verify(
        self, version: int | None = None, *, progress: ProgressCallback | None = None
    ) -> VerifyReport:
        """Read back every file of a version at ``checkpoint_dest`` and check its size and
        CRC-32. Writes nothing anywhere.

        :param version: the version's number; None for the newest.
        :param progress: called with :class:`Progress` events of phase ``"verify"``
            (default: the constructor's ``progress``).
        :return: the report: every bad file with what is wrong (``report.ok`` when none).
        :raises TypeError: ``version`` is not an int, or ``progress`` is not callable.
        :raises ValueError: ``version`` is below 1.
        :raises CheckpointNotFoundError: no checkpoint, or no such version.
        :raises CorruptCheckpointError: its manifest cannot be read (a bad file is reported,
            not raised).
        :raises StorageError: the storage failed.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        _check_version(version)
        watch = self._watch("verify", progress)
        store = await self._storage(self._dest)
        manifest = await chosen(store, self._catalog, version)
        return await verify(store, self._engine, manifest, watch)

    async def prune(self, keep: int, *, dry_run: bool = False) -> Removal:
        """Keep the newest ``keep`` versions at ``checkpoint_dest``; delete the others
        and the data only they name (not the leftovers of crashed saves: see :meth:`gc`).

        :param keep: how many versions to keep, at least 1.
        :param dry_run: delete nothing, only say what would go.
        :return: what was deleted (or would be).
        :raises TypeError: ``keep`` is not an int.
        :raises ValueError: ``keep`` is below 1.
        :raises CheckpointNotFoundError: no checkpoint.
        :raises CorruptCheckpointError: a version to keep has a manifest that cannot be
            read (nothing is deleted).
        :raises StorageError: the storage failed.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        check_positive("keep", keep)
        store = await self._storage(self._dest)
        inventory = await Inventory.take(store, self._engine, self._catalog)
        dropped, keys = inventory.prune(keep)
        return await remove(store, inventory, dropped, keys, [], dry_run=dry_run)

    async def gc(self, *, dry_run: bool = False, no_save_running: bool = False) -> Removal:
        """Delete what saves that never committed left at ``checkpoint_dest``: data
        folders no version names, unfinished multipart uploads, temp files of commits.
        Nothing any version names is touched, nor, by default, what saves numbered from
        the newest version up wrote: they may still be running, or (on a server that
        ignores ``If-None-Match``) commit over the newest (see ``Removal.running``).

        :param dry_run: delete nothing, only say what would go.
        :param no_save_running: you know that no process saves to this location now:
            collect those saves too (a killed save's leftovers are usually there). A
            save that is running after all fails, or, if it was
            about to commit, commits a version that cannot be restored.
        :return: what was deleted (or would be).
        :raises CheckpointNotFoundError: no checkpoint.
        :raises CorruptCheckpointError: a manifest cannot be read (nothing is deleted).
        :raises StorageError: the storage failed.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        store = await self._storage(self._dest)
        inventory = await Inventory.take(store, self._engine, self._catalog)
        versions = sorted([*inventory.manifests, *inventory.unreadable])
        upto = mf.LAST_VERSION if no_save_running else None
        keys = inventory.garbage(versions, upto)
        uploads = inventory.crashed_uploads(upto)
        running = [] if no_save_running else inventory.running()
        return await remove(store, inventory, [], keys, uploads, dry_run=dry_run, running=running)

    async def usage(self) -> Usage:
        """What ``checkpoint_dest`` stores, what its newest version needs, and what
        ``prune(1)`` then ``gc()`` would free, in bytes.

        :return: the sums, and the counts of versions, objects and unfinished uploads.
        :raises CheckpointNotFoundError: no checkpoint.
        :raises CorruptCheckpointError: the newest manifest cannot be read.
        :raises StorageError: the storage failed.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        store = await self._storage(self._dest)
        return (await Inventory.take(store, self._engine, self._catalog)).usage()


def _check_version(version: int | None) -> None:
    if version is not None:
        check_positive("version", version)
