"""Background saves: the handle of a save that goes on after ``start_save`` returned, and
the rule that its error reaches the caller exactly once."""

from __future__ import annotations

import logging

import anyio
from anyio import CapacityLimiter
from anyio.abc import TaskGroup

from ._commit import Save
from ._snapshot import Snapshot

log = logging.getLogger("aiocheckpoint")


class SaveRun:
    """A background save's task and outcome (internal: the public view is
    :class:`AsyncPendingSave`)."""

    def __init__(self, save: Save, snapshot: Snapshot, dest: str) -> None:
        self.save = save
        self.dest = dest
        self._snapshot = snapshot
        self.scope = anyio.CancelScope()
        self._finished = anyio.Event()
        self.done = False
        self.error: Exception | None = None
        self.reported = False  # the error reached the caller: not raised again

    async def run(self, threads: CapacityLimiter) -> None:
        """The save itself, a task of the checkpoint's task group. Never raises its
        error: that goes to the caller through the handle or the next call."""
        try:
            with self.scope:
                await self.save.run()
        except Exception as exc:
            self.error = exc
            log.debug("background save to %s failed: %r", self.dest, exc)
        finally:
            await self._snapshot.remove(threads)
            self.done = True
            self._finished.set()

    async def ended(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the save has ended, raising nothing of its own."""
        with anyio.fail_after(timeout):
            await self._finished.wait()

    def cancel(self) -> bool:
        if self.done or self.save.committing:
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
    :meth:`~AsyncCheckpoint.start_save` and :meth:`~AsyncCheckpoint.start_write`.

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
        return self._run.save.committed

    def done(self) -> bool:
        """Whether the save has ended: committed, failed or cancelled."""
        return self._run.done

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` stopped the save before it committed."""
        run = self._run
        return run.done and run.scope.cancel_called and run.error is None

    def exception(self) -> Exception | None:
        """The save's error; None while it runs, after it succeeded, or when cancelled.
        Returning the error counts as reporting it: the checkpoint does not raise it
        again."""
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
    """The one background save of a checkpoint object, and the task group it runs in."""

    def __init__(self, dest: str, threads: CapacityLimiter) -> None:
        self._dest = dest
        self._threads = threads
        self.tasks: TaskGroup | None = None  # set inside ``async with``
        self._pending: SaveRun | None = None

    def check(self, owner: object) -> None:
        """:raises RuntimeError: not inside ``async with``: no task group to run in."""
        if self.tasks is None:
            raise RuntimeError(
                f"{owner!r}: background saves run inside 'async with AsyncCheckpoint(...)'"
            )

    def start(self, save: Save, snap: Snapshot) -> AsyncPendingSave:
        assert self.tasks is not None, "check() first"
        self._pending = SaveRun(save, snap, self._dest)
        self.tasks.start_soon(self._pending.run, self._threads)
        return AsyncPendingSave(self._pending)

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


def report_lost(error: Exception, during: BaseException, dest: str) -> None:
    """A background save failed while its checkpoint was closed because of ``during``:
    that exception goes on, so say this one at ERROR and note it there."""
    log.error("background save to %s failed: %s", dest, error, exc_info=error)
    if hasattr(during, "add_note"):  # Python 3.11+
        during.add_note(f"(a background save to {dest} failed too: {error!r})")
