"""The handle of a SyncCheckpoint's background save, and the exit hook that finishes a
pending one before the interpreter stops its executors."""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook first, so ours runs before it
import logging
import os
import threading
import weakref
from functools import partial
from typing import TYPE_CHECKING

import anyio

from ._background import AsyncPendingSave
from ._errors import CheckpointError

if TYPE_CHECKING:
    from ._sync import SyncCheckpoint, _Loop

log = logging.getLogger("aiocheckpoint")


class PendingSave:
    """A save going on in the background of a :class:`SyncCheckpoint`, returned by
    :meth:`~SyncCheckpoint.start_save` and :meth:`~SyncCheckpoint.start_write` (not made
    directly). Any thread may use it; a process forked from the one that made it cannot
    wait for it or cancel it."""

    def __init__(self, owner: SyncCheckpoint, loop: _Loop, handle: AsyncPendingSave) -> None:
        self._owner = owner  # the checkpoint stays open while a handle to its save lives
        self._loop = loop
        self._handle = handle

    def __repr__(self) -> str:
        return repr(self._handle).replace("AsyncPendingSave", "PendingSave", 1)

    @property
    def dest(self) -> str:
        """Where the save goes: the checkpoint's ``checkpoint_dest``."""
        return self._handle.dest

    @property
    def version(self) -> int | None:
        """The version committed; None before, and when nothing changed (or nothing
        was committed)."""
        return self._handle.version

    def done(self) -> bool:
        """Whether the save has ended.

        :return: True once it committed, failed or was cancelled.
        """
        return self._handle.done()

    def cancelled(self) -> bool:
        """Whether the save was stopped before it committed.

        :return: True if :meth:`cancel`, or Ctrl-C during :meth:`wait` or the checkpoint's
            close, stopped it.
        """
        return self._handle.cancelled()

    def exception(self) -> Exception | None:
        """The save's error. Returning it counts as reporting it: the checkpoint does not
        raise it again.

        :return: the error; None while the save runs, after it succeeded, or when cancelled.
        """
        return self._handle.exception()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the save has ended (a cancelled one included). Ctrl-C cancels it.

        :param timeout: seconds to wait at most; None: no limit.
        :raises TimeoutError: the timeout passed first; the save goes on.
        :raises Exception: the save's error (each call raises it).
        :raises CheckpointError: called in a process forked from the one that made it.
        """
        wait(self._loop, self._handle, timeout)

    def cancel(self) -> bool:
        """Stop the save and wait for its cleanup: nothing is committed, its uploads are
        aborted, its staging space is freed.

        :return: False if the save had already ended, or was committing (then it goes
            on: too late to stop).
        :raises CheckpointError: called in a process forked from the one that made it.
        """
        if self._handle.done():
            return False
        _check_process(self._loop, self._handle)
        return self._loop.run(partial(_cancel, self._handle))


def wait(loop: _Loop, handle: AsyncPendingSave, timeout: float | None) -> None:
    """Wait for ``handle`` from a thread that is not the loop's; Ctrl-C cancels the save."""
    if not handle.done():
        _check_process(loop, handle)
        try:
            loop.run(partial(handle.wait, timeout))
            return
        except KeyboardInterrupt:
            loop.run(partial(_cancel, handle))
            raise
    error = handle.exception()  # ended: the loop may be closed since
    if error is not None:
        raise error


def _check_process(loop: _Loop, handle: AsyncPendingSave) -> None:
    if loop.pid != os.getpid():
        raise CheckpointError(
            f"{handle!r} runs in process {loop.pid}; process {os.getpid()}, forked from it,"
            " cannot wait for it or cancel it"
        )


async def _cancel(handle: AsyncPendingSave) -> bool:
    if not handle.cancel():
        return False
    with anyio.CancelScope(shield=True):
        try:
            await handle.wait()
        except Exception as exc:  # it failed as it was stopped: it committed nothing
            log.warning("background save to %s, cancelled, had failed: %s", handle.dest, exc)
    return True


def close_quietly(loop: _Loop) -> None:
    """A SyncCheckpoint never closed, at garbage collection or exit."""
    try:
        loop.close()
    except Exception as exc:
        dest = loop.pending.dest if loop.pending else repr(loop.checkpoint)
        log.error("background save to %s failed: %s", dest, exc, exc_info=exc)


#: Every loop alive, for the exit hook.
LIVE: weakref.WeakSet[_Loop] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hooked = False


def arm_exit_hook() -> None:
    """Have pending background saves finish at exit, before concurrent.futures' own exit
    hook stops every executor (asyncio's default one resolves host names): ``atexit``
    would be too late for that. ``threading._register_atexit`` is the stdlib's only way
    in, and runs hooks newest first (``concurrent.futures.thread`` is imported above)."""
    global _hooked
    with _hook_lock:
        if not _hooked:
            register = getattr(threading, "_register_atexit", atexit.register)
            register(_finish_at_exit)
            _hooked = True


def _finish_at_exit() -> None:
    for loop in list(LIVE):
        loop.finish_pending()
