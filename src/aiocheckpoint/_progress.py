"""Progress of a save, restore or verify: the events a ``progress=`` callback receives, and
the meter that counts an operation's files and bytes and sends them, a few per second."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress event, as received by a ``progress=`` callback.

    The totals are known at the first event. ``bytes_done`` never goes down, never counts
    a byte sent or fetched again after a retry, never passes ``bytes_total``, and equals it
    at the ``finished`` event. A file counts as done once all of its bytes are stored (or
    fetched and checked); an unchanged file that a save does not send again counts at once.
    Totals grow only where more work appears on the way: a stream of unknown length, or
    an operation that starts over on a newer version (the work done so far stays counted).

    A callback that raises fails the operation with its error, except at the ``finished``
    event: the operation is done then (a save, committed), so the error is logged.

    :ivar phase: ``"save"``, ``"restore"`` or ``"verify"``.
    :ivar files_done: files done so far.
    :ivar files_total: files the operation handles.
    :ivar bytes_done: bytes done so far.
    :ivar bytes_total: bytes the operation handles.
    :ivar path: the checkpoint path of a file the last event counted, if any.
    :ivar finished: True for the last event of an operation that succeeded.
    """

    phase: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    path: str | None = None
    finished: bool = False


ProgressCallback = Callable[[Progress], object]
log = logging.getLogger("aiocheckpoint")

#: Seconds between events: a bar redrawn ten times a second looks live and costs nothing.
INTERVAL = 0.1


class Meter:
    """Counts one operation's progress; sends an event to ``callback`` at the start, at
    most every ``INTERVAL`` seconds while bytes move, when all of them have moved, and at
    the end. A callback that
    raises fails the operation with its error, and is not called again.

    An operation that starts over (:meth:`again`) counts its new attempt from zero
    underneath what was reported: the events stand still until the new attempt passes
    that point, so no byte sent twice is counted twice."""

    def __init__(self, phase: str, callback: ProgressCallback | None) -> None:
        self.phase = phase
        self._callback = callback
        self._error: Exception | None = None  # what the callback raised
        self._files = self._files_total = self._bytes = self._bytes_total = 0  # this attempt
        self._floor = (0, 0)  # (files, bytes) reported before this attempt
        self._path: str | None = None
        self._sent = 0.0  # monotonic time of the last event

    def begin(self, files: int, nbytes: int) -> None:
        """Add work before it starts (the first call sends the first event)."""
        self._files_total += files
        self._bytes_total += nbytes
        self._send(force=True)

    def again(self) -> None:
        """The work begun will be done again from the start."""
        self._floor = self._done()
        self._files = self._files_total = self._bytes = self._bytes_total = 0

    def moved(self, nbytes: int, path: str | None = None, *, files: int = 0) -> None:
        """``nbytes`` more are done, and ``files`` more files (the last one ``path``)."""
        self._bytes += nbytes
        self._files += files
        # a stream's length is known only once read
        self._bytes_total = max(self._bytes_total, self._bytes)
        self._files_total = max(self._files_total, self._files)
        if path is not None:
            self._path = path
        # The event that completes the totals always goes out: a bar shows 100% while a
        # save commits, not the share of the last event the pace let through.
        self._send(force=self._files >= self._files_total and self._bytes >= self._bytes_total)

    def finish(self) -> None:
        """The operation succeeded: the last event. What the callback raises now is
        logged, not raised: the operation is done (a save, committed)."""
        if self._error is not None:
            raise self._error
        try:
            self._send(force=True, finished=True)
        except Exception as exc:
            log.warning(
                "the progress callback failed at the end of a %s that succeeded: %r",
                self.phase,
                exc,
            )

    def _done(self) -> tuple[int, int]:
        return max(self._floor[0], self._files), max(self._floor[1], self._bytes)

    def _send(self, *, force: bool = False, finished: bool = False) -> None:
        if self._error is not None:  # raised again wherever the operation goes on
            raise self._error
        callback = self._callback
        if callback is None:
            return
        now = time.monotonic()
        if not force and now - self._sent < INTERVAL:
            return
        self._sent = now
        files, nbytes = self._done()
        if finished:  # everything is done, whatever the totals said
            files_total, bytes_total = files, nbytes
        else:
            files_total = max(self._files_total, files)
            bytes_total = max(self._bytes_total, nbytes)
        event = Progress(self.phase, files, files_total, nbytes, bytes_total, self._path, finished)
        try:
            callback(event)
        except Exception as exc:
            self._error = exc
            raise


def meter(phase: str, callback: ProgressCallback | None) -> Meter:
    """A meter for ``phase``; ``callback`` must be callable or None.

    :raises TypeError: ``callback`` is neither.
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"progress must be a callable or None, not {type(callback).__name__}")
    return Meter(phase, callback)
