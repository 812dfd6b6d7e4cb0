"""Background saves: the handle of a save that goes on after ``start_save`` returned, and
the rule that its error reaches the caller exactly once.

The save runs as a task of its own on the caller's event loop (asyncio's ``create_task``,
trio's system task): not in a task group, which ``async with`` would have to enter and
leave in one task, and which a checkpoint used without ``async with`` would not have.
``aclose()`` waits for it, or cancels it when cancelled itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio import CapacityLimiter

from ._commit import Save
from ._snapshot import Snapshot

log = logging.getLogger("aiocheckpoint")


class SaveRun:
    """A background save's task and outcome (internal: the public view is
    :class:`AsyncPendingSave`)."""

    def __init__(self, save: Save, snapshot: Snapshot, dest: str) -> None:
        self._save: Save | None = save  # dropped once it ends, with the bytes it holds
        self._version: int | None = None
        self.dest = dest
        self._snapshot = snapshot
        self.scope = anyio.CancelScope()
        self._finished = anyio.Event()
        self.done = False
        self.completed = False  # the save itself returned: nothing left to cancel
        self.error: Exception | None = None
        self.reported = False  # the error reached the caller: not raised again

    @property
    def version(self) -> int | None:
        return self._save.committed if self._save is not None else self._version

    async def run(self, threads: CapacityLimiter) -> None:
        """The save itself. Never raises its error: that goes to the caller through the
        handle or the checkpoint's next call."""
        save = self._save
        assert save is not None
        try:
            with self.scope:
                await save.run()
                self.completed = True
        except Exception as exc:
            self.error = exc
            log.debug("background save to %s failed: %r", self.dest, exc)
        finally:
            self._version, self._save = save.committed, None
            await self._snapshot.remove(threads)
            self.done = True
            self._finished.set()

    async def ended(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the save has ended, raising nothing of its own."""
        if self.done:
            return
        with anyio.fail_after(timeout):
            await self._finished.wait()

    def cancel(self) -> bool:
        if self.done or self.completed or self._save is None or self._save.committing:
            return False
        self.scope.cancel()
        return True

    async def stop(self) -> None:
        """Cancel, and wait for the cleanup."""
        self.cancel()
        with anyio.CancelScope(shield=True):
            await self._finished.wait()

    def unreported(self) -> Exception | None:
        """The error, once: for the next save, ``close()`` or exit to raise or log."""
        if self.error is None or self.reported:
            return None
        self.reported = True
        return self.error


class AsyncPendingSave:
    """A save going on in the background of an :class:`AsyncCheckpoint`, returned by
    :meth:`~AsyncCheckpoint.start_save` and :meth:`~AsyncCheckpoint.start_write` (not made
    directly).

    Use it on the event loop of the checkpoint that made it.
    """

    def __init__(self, run: SaveRun) -> None:
        self._run = run

    def __repr__(self) -> str:
        run = self._run
        state = "running"
        if run.done:
            state = "failed" if run.error else "cancelled" if self.cancelled() else "done"
        return f"<{type(self).__name__} to {run.dest!r}: {state}, version={self.version}>"

    @property
    def dest(self) -> str:
        """Where the save goes: the checkpoint's ``checkpoint_dest``."""
        return self._run.dest

    @property
    def version(self) -> int | None:
        """The version committed; None before, and when nothing changed (or nothing
        was committed)."""
        return self._run.version

    def done(self) -> bool:
        """Whether the save has ended.

        :return: True once it committed, failed or was cancelled.
        """
        return self._run.done

    def cancelled(self) -> bool:
        """Whether the save was stopped before it committed.

        :return: True if :meth:`cancel`, or closing the checkpoint while cancelled, stopped it.
        """
        run = self._run
        return run.done and not run.completed and run.error is None and run.version is None

    def exception(self) -> Exception | None:
        """The save's error. Returning it counts as reporting it: the checkpoint does not
        raise it again.

        :return: the error; None while the save runs, after it succeeded, or when cancelled.
        """
        run = self._run
        if not run.done:
            return None
        if run.error is not None:
            run.reported = True
        return run.error

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - as futures
        """Wait until the save has ended (a cancelled one included).

        :param timeout: seconds to wait at most; None: no limit.
        :raises TimeoutError: the timeout passed first; the save goes on.
        :raises Exception: the save's error (each call raises it).
        """
        await self._run.ended(timeout)
        if self._run.error is not None:
            self._run.reported = True
            raise self._run.error

    def cancel(self) -> bool:
        """Stop the save: nothing is committed, its uploads are aborted and its staging
        space freed; ``await wait()`` to let that cleanup finish.

        :return: False if the save had already ended, or was committing (then it goes
            on: too late to stop).
        """
        return self._run.cancel()


class Background:
    """The one background save of a checkpoint object."""

    def __init__(self, dest: str, threads: CapacityLimiter) -> None:
        self._dest = dest
        self._threads = threads
        self._pending: SaveRun | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # asyncio keeps weak references only

    def start(self, save: Save, snap: Snapshot) -> AsyncPendingSave:
        self._pending = SaveRun(save, snap, self._dest)
        self._spawn(self._pending.run, self._threads)
        return AsyncPendingSave(self._pending)

    def _spawn(self, func: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio: the only other loop anyio runs on
            import trio

            trio.lowlevel.spawn_system_task(func, *args)
            return
        task = loop.create_task(func(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, *, raising: bool = True) -> Exception | None:
        """Wait for the pending save; raise (or return) its error if nothing reported it
        yet. Cancelled meanwhile, cancel the save too."""
        pending = self._pending
        if pending is None:
            return None
        try:
            await pending.ended()
        except BaseException:
            await pending.stop()
            raise
        self._pending = None
        error = pending.unreported()
        if error is not None and raising:
            raise error
        return error

    async def abandon(self) -> None:
        """Closing while cancelled (or failing): stop the pending save and wait for its
        cleanup; an error nobody saw is logged, as nothing can raise it now."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        await pending.stop()
        error = pending.unreported()
        if error is not None:
            log.error("background save to %s failed: %s", self._dest, error, exc_info=error)


def report_lost(error: Exception, during: BaseException, dest: str) -> None:
    """A background save failed while its checkpoint was closed because of ``during``:
    that exception goes on, so say this one at ERROR and note it there."""
    log.error("background save to %s failed: %s", dest, error, exc_info=error)
    if hasattr(during, "add_note"):  # Python 3.11+
        during.add_note(f"(a background save to {dest} failed too: {error!r})")
