"""AsyncCheckpoint: the public API and its lifecycle. Each operation is a room of its own
(``_commit``, ``_restore``); this class opens storage, checks state and delegates."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import EventLoopToken, current_token

from . import _scan
from ._admin import Admin
from ._background import AsyncPendingSave, Background, report_lost
from ._catalog import Catalog
from ._commit import Save
from ._config import TransferConfig, check_positive
from ._engine import Engine, Upload
from ._errors import CheckpointClosedError, CheckpointError
from ._folders import Folders, PathLike
from ._progress import Meter, ProgressCallback, meter
from ._restore import restore_into
from ._snapshot import Snapshot, copied_bytes, snapshot
from ._upload import check_key_lengths
from .storage import (
    Location,
    S3Options,
    Storage,
    Storages,
    check_available,
    check_botocore_config,
    parse_location,
)


class AsyncCheckpoint(Admin):
    """A checkpoint to ``await``: restore the previous one, save new versions, and look
    after the versions at ``checkpoint_dest`` (:meth:`versions` to :meth:`usage`).

    Use it on one event loop: on any other, every method raises :class:`CheckpointError`.

    :param checkpoint_dest: where saves go: a local path, ``file://`` URL or ``s3://bucket/prefix``.
    :param checkpoint_src: the previous checkpoint to restore (same forms); None or ``""``: none.
    :param transfer: concurrency, part sizes and memory bound.
    :param keep_versions: committed versions kept at ``checkpoint_dest`` after a save, 1 or more.
    :param endpoint_url: S3 endpoint (default: ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, AWS).
    :param region_name: S3 region (default: the botocore chain, e.g. ``AWS_REGION``).
    :param botocore_config: a ``botocore.config.Config`` merged over the defaults (dict
        options such as ``s3`` and ``retries`` key by key).
    :param progress: the default ``progress=`` callback of saves, restores and verifies.
    :raises TypeError: an argument of the wrong type.
    :raises ValueError: an unsupported URL scheme, an ``s3://`` URL without a bucket, or
        ``keep_versions`` below 1.
    :raises RuntimeError: an ``s3://`` location made or used under trio (S3 needs asyncio).
    :raises ImportError: an ``s3://`` location without the ``s3`` extra installed.
    """

    SRC_LOCAL_FOLDER = "prev_cp"
    """The name of the private folder :meth:`restore` downloads into by default."""
    TMP_DST_PATH = _scan.STREAM_NAME
    """The name a file object or bytes are stored under in the checkpoint: ``_dst_cp``."""

    def __init__(
        self,
        checkpoint_dest: PathLike,
        checkpoint_src: PathLike | None = None,
        *,
        transfer: TransferConfig | None = None,
        keep_versions: int = 1,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        botocore_config: Any = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self._dest = parse_location(checkpoint_dest, "checkpoint_dest")
        no_src = checkpoint_src is None or (isinstance(checkpoint_src, str) and not checkpoint_src)
        self._src = None if no_src else parse_location(checkpoint_src, "checkpoint_src")  # type: ignore[arg-type]
        if transfer is None:
            transfer = TransferConfig()
        elif not isinstance(transfer, TransferConfig):
            raise TypeError(f"transfer must be a TransferConfig, not {type(transfer).__name__}")
        check_positive("keep_versions", keep_versions)
        for name, value in (("endpoint_url", endpoint_url), ("region_name", region_name)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
        check_botocore_config(botocore_config)
        meter("", progress)  # a wrong type is refused now
        self._progress = progress
        self._keep = keep_versions
        self._threads = CapacityLimiter(transfer.max_threads)
        self._engine = Engine(transfer, self._threads)
        self._catalog = Catalog(self._engine)
        # A streamed GET holds at most 4 MiB, or the whole byte budget if less.
        piece = min(S3Options.piece, transfer.buffer_bytes)
        s3 = S3Options(endpoint_url, region_name, botocore_config, transfer.max_concurrency, piece)
        self._storages = Storages(s3, self._threads)
        self._opened: dict[Location, Storage] = {}
        self._open_lock = anyio.Lock()
        self._save_lock = anyio.Lock()
        self._restore_lock = anyio.Lock()
        self._restored = Folders(self.SRC_LOCAL_FOLDER, self._threads)
        self._closed = False
        self._loop: EventLoopToken | None = None
        self._background = Background(str(self._dest), self._threads)
        for location in (self._dest, self._src):
            if location is not None:
                check_available(location)
        self._check_loop_kind()  # made under trio: say so now, not at first use

    def __repr__(self) -> str:
        src = str(self._src) if self._src else None
        return f"{type(self).__name__}(checkpoint_dest={str(self._dest)!r}, checkpoint_src={src!r})"

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> AsyncCheckpoint:
        await self._storage(self._dest)
        if self._src is not None:
            await self._storage(self._src)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        """Close; a pending background save is finished first, and its error raised (see
        :meth:`aclose`). When the block ends with an exception, that exception goes on, and
        a failure of the pending save is logged at ERROR and added to it as a note."""
        try:
            await self.aclose()
        except Exception as error:
            if exc[1] is None:
                raise
            report_lost(error, exc[1], str(self._dest))

    async def aclose(self) -> None:
        """Finish the pending background save, close the storage clients and remove the
        private restore folder. Idempotent. Cancelled while the save is pending, it
        cancels the save (nothing is committed) and logs its error, if it had one.

        :raises Exception: the pending save's error, unless already reported.
        """
        if self._closed:
            return
        self._closed = True
        error = None
        try:
            async with self._save_lock:
                error = await self._background.settle(raising=False)
        finally:
            with anyio.CancelScope(shield=True):
                await self._background.abandon()  # when cancelled before it was settled
                # Let saves and restores under way (from other threads, or tasks) finish first.
                async with self._save_lock, self._restore_lock:
                    pass
                self._opened.clear()
                await self._storages.aclose()
                await self._restored.remove()
        if error is not None:
            raise error

    def _check_closed(self) -> None:
        if self._closed:
            raise CheckpointClosedError(f"{self!r} is closed")

    def _check_open(self) -> None:
        """Not closed, and on the event loop it first ran on."""
        self._check_closed()
        loop = current_token()
        if self._loop is None:
            self._check_loop_kind()
            self._loop = loop
        elif loop != self._loop:
            # Its client, locks and limiters belong to the loop it first ran on.
            raise CheckpointError(
                f"{self!r} was first used on another event loop; create one"
                " AsyncCheckpoint per event loop (or use SyncCheckpoint)"
            )

    def _check_loop_kind(self) -> None:
        """S3 needs asyncio: aiobotocore runs on asyncio only."""
        if _running_loop() != "other":
            return
        for location in (self._dest, self._src):
            if location is not None and location.scheme == "s3":
                raise RuntimeError(
                    f"AsyncCheckpoint on {location} uses S3, which needs the asyncio event"
                    " loop (aiobotocore runs on asyncio only); under trio, use"
                    " SyncCheckpoint or a local path"
                )

    async def _storage(self, location: Location) -> Storage:
        self._check_open()
        async with self._open_lock:
            if location not in self._opened:
                self._opened[location] = await self._storages.open(location)
            return self._opened[location]

    async def _thread(self, func: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)

    # -- the checkpoint API ----------------------------------------------------

    def prev_exists(self) -> bool:
        """Whether a previous checkpoint was given (no I/O: :meth:`restore` finds it).

        :return: True if ``checkpoint_src`` was given.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        self._check_closed()
        return self._src is not None

    async def restore(
        self,
        path: PathLike | None = None,
        *,
        version: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Path | None:
        """Download the previous checkpoint (``checkpoint_src``) into ``path``. Only the first
        call for a version downloads; later calls return the first call's folder.

        :param path: an existing directory, or None for a private temp folder
            (``<tmp>/prev_cp``, or ``<tmp>/prev_cp-v<N>`` for a version) removed on close.
        :param version: a committed version of ``checkpoint_src`` to restore instead of the newest.
        :param progress: called with :class:`Progress` events of phase ``"restore"``
            (default: the constructor's ``progress``).
        :return: the folder, or None when there is no previous checkpoint.
        :raises TypeError: ``path``, ``version`` or ``progress`` is of the wrong type.
        :raises ValueError: ``path`` is not an existing directory, or holds another version
            this object restored; ``version`` is below 1, or given with no ``checkpoint_src``.
        :raises CheckpointNotFoundError: the source holds no checkpoint, or no such version.
        :raises CorruptCheckpointError: a file is missing or does not match the manifest.
        :raises StorageError: the storage failed.
        :raises CheckpointError: a name too long for ``path``'s file system, or a file in the way.
        :raises OSError: writing into ``path`` failed.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"restore() takes a path or None, not {type(path).__name__}")
        if version is not None:
            check_positive("version", version)
        watch = self._watch("restore", progress)
        self._check_open()
        if self._src is None:
            if version is not None:
                raise ValueError(
                    f"restore(version={version}) of {self!r}: there is no checkpoint_src to"
                    " restore from (the versions API lists checkpoint_dest)"
                )
            return None
        async with self._restore_lock:
            store = await self._storage(self._src)

            async def restore(target: Path) -> None:
                await restore_into(store, self._engine, self._catalog, target, version, watch)

            return await self._restored.get(path, version, restore)

    async def save(
        self, cp: PathLike | BinaryIO | io.IOBase, *, progress: ProgressCallback | None = None
    ) -> None:
        """Save a file, a folder's contents or a binary file object, as a new version.

        The new version holds everything saved before plus ``cp``; a path saved again
        replaces its earlier content. If that is what the newest version already holds,
        nothing is committed. A file is stored under its name, a folder's files
        under their paths relative to it, a file object as ``_dst_cp``.

        :param cp: a path to a file or folder, or a binary file object (read from where it is).
        :param progress: called with :class:`Progress` events of phase ``"save"``
            (default: the constructor's ``progress``).
        :return: None, once the new version is committed (or found unchanged).
        :raises TypeError: ``cp`` is neither a path nor a binary file object (bytes go
            to :meth:`write`), or ``progress`` is not callable.
        :raises ValueError: ``cp`` is a file object that cannot be read, or a folder holds
            a symlink that points outside it, a symlink loop, or something that is not a
            regular file; or a name is too long for the destination.
        :raises FileNotFoundError: ``cp`` does not exist.
        :raises OSError: reading ``cp`` failed.
        :raises CheckpointError: another writer committed to the same dest meanwhile, a file
            changed while it was read, or an earlier background save's error, not yet reported.
        :raises CorruptCheckpointError: the newest manifest at the dest is not valid.
        :raises StorageError: the storage failed.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        watch = self._watch("save", progress)
        self._check_open()
        await self._save(await _scan.uploads(cp, self._threads), watch)

    async def write(self, b: bytes | bytearray | memoryview) -> None:
        """Store ``b`` as ``_dst_cp`` in a new version, replacing any earlier ``_dst_cp``
        (nothing is committed if the newest version already holds these bytes there).
        The constructor's ``progress`` sees it as a save.

        :param b: the bytes to store.
        :return: None, once committed, as for :meth:`save`.
        :raises TypeError: ``b`` is not bytes-like.
        :raises CheckpointError: another writer committed meanwhile, or a background save's error.
        :raises CorruptCheckpointError: the newest manifest at the dest is not valid.
        :raises StorageError: the storage failed.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        if not isinstance(b, (bytes, bytearray, memoryview)):
            raise TypeError(f"write() takes bytes, bytearray or memoryview, not {type(b).__name__}")
        self._check_open()
        await self._save([Upload(self.TMP_DST_PATH, copied_bytes(b))], self._watch("save", None))

    async def read(
        self, *, version: int | None = None, progress: ProgressCallback | None = None
    ) -> bytes | None:
        """Restore (as :meth:`restore` with no ``path``), then read the one file there.

        :param version: as for :meth:`restore`.
        :param progress: as for :meth:`restore`.
        :return: the file's bytes; None without a ``checkpoint_src``, or if it holds no file.
        :raises ValueError: the checkpoint holds more than one file, or a folder.
        :raises CheckpointNotFoundError: as :meth:`restore` raises it; so are its other errors.
        """
        path = await self.restore(version=version, progress=progress)
        if path is None:
            return None
        return await self._thread(_scan.read_single, path)  # type: ignore[no-any-return]

    async def _save(self, items: list[Upload], watch: Meter) -> None:
        async with self._save_lock:
            await self._background.settle()
            store = await self._storage(self._dest)
            await Save(store, self._engine, self._catalog, self._keep, items, watch).run()

    # -- background saves --------------------------------------------------------

    async def start_save(
        self, cp: PathLike | BinaryIO | io.IOBase, *, progress: ProgressCallback | None = None
    ) -> AsyncPendingSave:
        """:meth:`save` in the background: returns once ``cp`` is snapshotted, while the
        upload and commit go on. The caller may then change or delete the files.

        The save runs as a task of its own on this event loop; close the checkpoint
        (``async with``, or :meth:`aclose`) to have it finished. One background save at a
        time: a save while one is pending waits for it first.

        :param cp: as for :meth:`save`.
        :param progress: as for :meth:`save`; called from the task that runs the save.
        :return: the handle to wait for, or cancel, the save.
        :raises CheckpointError: the previous background save failed and nothing reported
            it yet (this call then did nothing), the staging folder is full, or a file changed.
        :raises TypeError: as :meth:`save` raises it for ``cp``; so are ``ValueError``,
            ``FileNotFoundError`` and ``OSError``.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        watch = self._watch("save", progress)
        self._check_open()
        async with self._save_lock:
            await self._background.settle()
            items = await _scan.uploads(cp, self._threads)
            store = await self._storage(self._dest)
            check_key_lengths(store, items)
            snap = await snapshot(items, self._engine.config, self._threads)
            return self._start(store, snap, watch)

    async def start_write(self, b: bytes | bytearray | memoryview) -> AsyncPendingSave:
        """:meth:`write` in the background: ``bytes`` are stored as given, anything else
        is copied first. See :meth:`start_save`.

        :param b: the bytes to store.
        :return: the handle to wait for, or cancel, the save.
        :raises TypeError: ``b`` is not bytes-like.
        :raises CheckpointError: as :meth:`start_save` raises it.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        if not isinstance(b, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"start_write() takes bytes, bytearray or memoryview, not {type(b).__name__}"
            )
        self._check_open()
        async with self._save_lock:
            await self._background.settle()
            store = await self._storage(self._dest)
            snap = Snapshot([Upload(self.TMP_DST_PATH, copied_bytes(b))], None)
            return self._start(store, snap, self._watch("save", None))

    def _start(self, store: Storage, snap: Snapshot, watch: Meter) -> AsyncPendingSave:
        save = Save(store, self._engine, self._catalog, self._keep, snap.items, watch)
        return self._background.start(save, snap)


def _running_loop() -> str:
    """ "asyncio", "other" (trio) or "none": which event loop runs in this thread."""
    try:
        current_token()
    except RuntimeError:
        return "none"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "other"
    return "asyncio"
