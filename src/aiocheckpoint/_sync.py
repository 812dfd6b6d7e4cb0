"""Checkpoint (the blocking interface) and SyncCheckpoint, which runs AsyncCheckpoint on a
private event loop. No checkpoint logic lives here: each method is one delegation."""

from __future__ import annotations

import abc
import io
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._background import AsyncPendingSave, report_lost
from ._checkpoint import AsyncCheckpoint
from ._config import TransferConfig
from ._errors import CheckpointClosedError, CheckpointError
from ._folders import PathLike
from ._pending import LIVE, PendingSave, arm_exit_hook, close_quietly, wait
from ._progress import ProgressCallback
from ._reports import Removal, Usage, VerifyReport, VersionFiles, VersionInfo

T = TypeVar("T")
log = logging.getLogger("aiocheckpoint")


class Checkpoint(abc.ABC):
    """The blocking checkpoint interface (as in flytekit's ``checkpointer``), for code that
    takes any checkpoint. :class:`SyncCheckpoint` implements it; what each method raises is
    the implementation's (see SyncCheckpoint's)."""

    @abc.abstractmethod
    def prev_exists(self) -> bool:
        """Whether there is a previous checkpoint.

        :return: True if one was given.
        """

    @abc.abstractmethod
    def restore(self, path: PathLike | None = None) -> Path | None:
        """Download the previous checkpoint.

        :param path: an existing directory, or None for a private temp folder.
        :return: the folder, or None when there is no previous checkpoint.
        """

    @abc.abstractmethod
    def save(self, cp: PathLike | BinaryIO | io.IOBase) -> None:
        """Save a file, a folder's contents or a binary file object, as a new version.

        :param cp: the path, or the file object.
        """

    @abc.abstractmethod
    def read(self) -> bytes | None:
        """Restore the previous checkpoint and read its one file.

        :return: the file's bytes; None if there is no previous checkpoint, or it is empty.
        """

    @abc.abstractmethod
    def write(self, b: bytes | bytearray | memoryview) -> None:
        """Save ``b`` as a new version.

        :param b: the bytes to store.
        """


class _Loop:
    """A daemon thread running an event loop with a portal into it, and one
    AsyncCheckpoint opened on that loop.

    The thread runs the loop itself rather than through ``start_blocking_portal``: that
    context manager, dropped in a forked child (where the thread does not exist), would
    wait forever for the thread to stop the loop. This object holds nothing that does.
    """

    def __init__(self, make: Callable[[], AsyncCheckpoint]) -> None:
        self.pid = os.getpid()
        ready: Future[BlockingPortal] = Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), daemon=True, name="aiocheckpoint"
        )
        self._thread.start()
        self.portal = ready.result()
        try:
            self.checkpoint = self.portal.call(make)
            self._cm = self.portal.wrap_async_context_manager(self.checkpoint)
            self._cm.__enter__()
        except BaseException:
            self._stop()
            raise
        self.closed = False
        self._lock = threading.Lock()
        self.pending: AsyncPendingSave | None = None  # the last background save started
        LIVE.add(self)
        arm_exit_hook()  # now: during shutdown, registering is refused

    @classmethod
    def _main(cls, ready: Future[BlockingPortal]) -> None:
        try:
            anyio.run(cls._serve, ready, backend="asyncio")  # aiohttp needs asyncio
        except BaseException as exc:
            if not ready.done():  # the loop never started: say why, instead of waiting
                ready.set_exception(exc)
            raise

    @staticmethod
    async def _serve(ready: Future[BlockingPortal]) -> None:
        async with BlockingPortal() as portal:
            ready.set_result(portal)
            await portal.sleep_until_stopped()

    def _stop(self) -> None:
        try:
            self.portal.call(self.portal.stop)
        except RuntimeError:
            pass  # stopped already, or called on the loop thread itself
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def close(self) -> None:
        """Finish the pending background save (Ctrl-C cancels it), close the checkpoint,
        stop the loop. Raises the save's error if nothing reported it."""
        if os.getpid() != self.pid:
            return  # a forked child: this loop's thread lives in the parent only
        if threading.current_thread() is self._thread:
            # Collected on the loop thread itself (a reference cycle), which cannot wait
            # for its own loop: close from a thread of its own, which exit waits for.
            closer = threading.Thread(target=close_quietly, args=(self,), daemon=False)
            closer.start()  # not a daemon, as threads made on this one would be
            return
        with self._lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.run(self.checkpoint.aclose)
        finally:
            try:
                self._cm.__exit__(None, None, None)
            except RuntimeError:
                pass  # the portal is gone: nothing left to exit
            finally:
                self._stop()

    def finish_pending(self) -> None:
        """At exit: finish the pending background save, logging a failure at ERROR."""
        handle = self.pending
        if handle is None or handle.done() or self.closed or os.getpid() != self.pid:
            return
        log.info("finishing the background save to %s before exit", handle.dest)
        try:
            wait(self, handle, None)
        except Exception as exc:
            log.error("background save to %s failed: %s", handle.dest, exc, exc_info=exc)
        except KeyboardInterrupt:  # Ctrl-C at exit: wait() cancelled the save
            log.error("background save to %s cancelled at exit by Ctrl-C", handle.dest)

    async def start(self, method: Callable[..., Any], arg: Any) -> AsyncPendingSave:
        """``AsyncCheckpoint.start_save`` or ``start_write``, remembering the handle on the
        loop, so that ``pending`` is the newest whatever thread returns first."""
        handle: AsyncPendingSave = await method(self.checkpoint, arg)
        self.pending = handle
        return handle

    def run(self, func: Callable[[], Coroutine[Any, Any, T]]) -> T:
        done = threading.Event()

        async def call() -> T:
            try:
                return await func()
            finally:
                done.set()

        try:
            future = self.portal.start_task_soon(call)
        except RuntimeError as exc:  # closed by another thread since the caller checked
            raise CheckpointClosedError("the checkpoint was closed") from exc
        try:
            return future.result()
        except KeyboardInterrupt:
            # Ctrl-C: cancel the transfer, wait for its cleanup (aborts, temp files), re-raise.
            future.cancel()
            done.wait(60)
            raise


class SyncCheckpoint(Checkpoint):
    """A blocking checkpoint for plain scripts: ``AsyncCheckpoint`` on a private loop.

    Thread-safe: any number of threads may call one object; saves are committed in
    order. Works when called from a thread that runs its own event loop. Close it (or use
    ``with``) to release connections and the private restore folder; a forgotten close
    happens at interpreter exit. A process forked from the one that created it cannot use
    it (its loop thread is not there): create the object in the child. Its methods then
    raise :class:`CheckpointError` (``close()`` does nothing).

    The methods are those of :class:`AsyncCheckpoint`, blocking, with :meth:`close` for
    ``aclose()``; so are the parameters:

    :param checkpoint_dest: where saves go: a local path, ``file://`` URL or ``s3://bucket/prefix``.
    :param checkpoint_src: the previous checkpoint to restore (same forms); None or ``""``: none.
    :param transfer: concurrency, part sizes and memory bound.
    :param keep_versions: committed versions kept at ``checkpoint_dest`` after a save, 1 or more.
    :param endpoint_url: S3 endpoint (default: ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, AWS).
    :param region_name: S3 region (default: the botocore chain, e.g. ``AWS_REGION``).
    :param botocore_config: a ``botocore.config.Config`` merged over the defaults (dict
        options such as ``s3`` and ``retries`` key by key).
    :param progress: the default ``progress=`` callback of saves, restores and verifies,
        called from the checkpoint's loop thread.
    :raises TypeError: an argument of the wrong type.
    :raises ValueError: an unsupported URL scheme, an ``s3://`` URL without a bucket, or
        ``keep_versions`` below 1.
    :raises ImportError: an ``s3://`` location without the ``s3`` extra installed.
    """

    SRC_LOCAL_FOLDER = AsyncCheckpoint.SRC_LOCAL_FOLDER
    TMP_DST_PATH = AsyncCheckpoint.TMP_DST_PATH

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
        make = partial(
            AsyncCheckpoint,
            checkpoint_dest,
            checkpoint_src,
            transfer=transfer,
            keep_versions=keep_versions,
            endpoint_url=endpoint_url,
            region_name=region_name,
            botocore_config=botocore_config,
            progress=progress,
        )
        # made on the private loop (asyncio), whatever loop the caller's thread runs;
        # an argument error stops the loop thread and is raised here
        self._loop = _Loop(make)
        self._closed = False
        # A forgotten close() runs when the object is collected or at exit. The loop thread
        # is a daemon (so are the worker threads it starts): exit waits only for a pending
        # background save, through the exit hook (_pending.arm_exit_hook).
        self._finalizer = weakref.finalize(self, close_quietly, self._loop)

    def _run(self, method: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Run ``AsyncCheckpoint.method(*args, **kwargs)`` on the private loop."""
        self._check_usable()
        return self._loop.run(partial(method, self._loop.checkpoint, *args, **kwargs))

    def _check_usable(self) -> None:
        if self._closed:
            raise CheckpointClosedError(f"{self!r} is closed")
        if self._loop.pid != os.getpid():
            raise CheckpointError(
                f"{self!r} was created in process {self._loop.pid} and cannot be used in"
                f" process {os.getpid()}, forked from it: create the checkpoint object in the"
                " process that uses it"
            )

    def __repr__(self) -> str:
        return repr(self._loop.checkpoint).replace("AsyncCheckpoint", "SyncCheckpoint", 1)

    def __enter__(self) -> SyncCheckpoint:
        return self

    def __exit__(self, *exc: Any) -> None:
        """Close; a pending background save is finished first (Ctrl-C cancels it), and its
        error raised (see :meth:`close`). When the block ends with an exception, that
        exception goes on, and a failure of the pending save is logged at ERROR and added to
        it as a note."""
        try:
            self.close()
        except Exception as error:
            if exc[1] is None:
                raise
            pending = self._loop.pending  # the only error close() raises is its save's
            report_lost(error, exc[1], pending.dest if pending else repr(self))

    def close(self) -> None:
        """Finish the pending background save, then close the storage clients, the
        private loop and the restore folder. Idempotent.

        :raises Exception: the pending save's error, unless already reported.
        """
        self._closed = True
        self._finalizer.detach()
        self._loop.close()

    def prev_exists(self) -> bool:
        self._check_usable()
        return self._loop.checkpoint.prev_exists()

    def restore(
        self,
        path: PathLike | None = None,
        *,
        version: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Path | None:
        return self._run(AsyncCheckpoint.restore, path, version=version, progress=progress)

    def save(
        self, cp: PathLike | BinaryIO | io.IOBase, *, progress: ProgressCallback | None = None
    ) -> None:
        return self._run(AsyncCheckpoint.save, cp, progress=progress)

    def read(
        self, *, version: int | None = None, progress: ProgressCallback | None = None
    ) -> bytes | None:
        return self._run(AsyncCheckpoint.read, version=version, progress=progress)

    def write(self, b: bytes | bytearray | memoryview) -> None:
        return self._run(AsyncCheckpoint.write, b)

    def start_save(
        self, cp: PathLike | BinaryIO | io.IOBase, *, progress: ProgressCallback | None = None
    ) -> PendingSave:
        """:meth:`save` in the background: returns once ``cp`` is snapshotted, while the
        upload and commit go on; the caller may then change or delete the files. One
        background save at a time: a save while one is pending waits for it first.

        :param cp: as for :meth:`save`.
        :param progress: as for :meth:`save`; called from the checkpoint's loop thread.
        :return: the handle to wait for, or cancel, the save.
        :raises CheckpointError: the previous background save failed and nothing reported
            it yet (this call then did nothing), the staging folder is full, or a file changed.
        :raises TypeError: as :meth:`save` raises it for ``cp``; so are ``ValueError``,
            ``FileNotFoundError`` and ``OSError``.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        return self._start(partial(AsyncCheckpoint.start_save, progress=progress), cp)

    def start_write(self, b: bytes | bytearray | memoryview) -> PendingSave:
        """:meth:`write` in the background: ``bytes`` are stored as given, anything else
        is copied first. See :meth:`start_save`.

        :param b: the bytes to store.
        :return: the handle to wait for, or cancel, the save.
        :raises TypeError: ``b`` is not bytes-like.
        :raises CheckpointError: as :meth:`start_save` raises it.
        :raises CheckpointClosedError: the checkpoint is closed.
        """
        return self._start(AsyncCheckpoint.start_write, b)

    def _start(self, method: Callable[..., Any], arg: Any) -> PendingSave:
        self._check_usable()
        handle = self._loop.run(partial(self._loop.start, method, arg))
        return PendingSave(self, self._loop, handle)

    # -- the versions at checkpoint_dest (see AsyncCheckpoint's) ------------------

    def versions(self) -> list[VersionInfo]:
        return self._run(AsyncCheckpoint.versions)

    def inspect(self, version: int | None = None) -> VersionFiles:
        return self._run(AsyncCheckpoint.inspect, version)

    def verify(
        self, version: int | None = None, *, progress: ProgressCallback | None = None
    ) -> VerifyReport:
        return self._run(AsyncCheckpoint.verify, version, progress=progress)

    def prune(self, keep: int, *, dry_run: bool = False) -> Removal:
        return self._run(AsyncCheckpoint.prune, keep, dry_run=dry_run)

    def gc(self, *, dry_run: bool = False, no_save_running: bool = False) -> Removal:
        return self._run(AsyncCheckpoint.gc, dry_run=dry_run, no_save_running=no_save_running)

    def usage(self) -> Usage:
        return self._run(AsyncCheckpoint.usage)


for _name in (
    *("prev_exists", "restore", "save", "read", "write"),
    *("versions", "inspect", "verify", "prune", "gc", "usage"),
):
    getattr(SyncCheckpoint, _name).__doc__ = getattr(AsyncCheckpoint, _name).__doc__
del _name
