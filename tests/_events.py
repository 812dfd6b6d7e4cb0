"""A progress callback for tests that keeps every event and checks the rules they obey."""

from __future__ import annotations

import time

from aiocheckpoint import Progress

#: The events a second the library sends at most, with room for the first and last.
PER_SECOND = 10


class Events(list[Progress]):
    """A progress callback that keeps every event, and when each came."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def __call__(self, event: Progress) -> None:
        self.append(event)
        self.times.append(time.monotonic())

    def check(self, phase: str, files: dict[str, bytes], *, exact: bool = True) -> None:
        """The rules: totals at the first event (with ``exact``: the files' own), nothing
        going down or past its total, and the last event the only finished one, with
        everything done."""
        assert self, "no events"
        first, last = self[0], self[-1]
        assert all(e.phase == phase for e in self)
        assert (first.files_done, first.bytes_done) == (0, 0)
        if exact:
            assert (first.files_total, first.bytes_total) == (
                len(files),
                sum(map(len, files.values())),
            )
        for before, after in zip(self, self[1:], strict=False):
            assert after.bytes_done >= before.bytes_done and after.files_done >= before.files_done
            assert after.bytes_total >= before.bytes_total or not exact
        if exact:  # the totals of the first event hold to the end
            assert {(e.files_total, e.bytes_total) for e in self} == {
                (first.files_total, first.bytes_total)
            }
        for e in self:
            assert 0 <= e.bytes_done <= e.bytes_total and 0 <= e.files_done <= e.files_total
            assert e.path is None or e.path in files
        assert [e.finished for e in self] == [False] * (len(self) - 1) + [True]
        if files:  # before the end (a save's commit), an event showed everything moved
            assert len(self) >= 2
            before = self[-2]
            assert (before.files_done, before.bytes_done) == (len(files), last.bytes_done)
        assert (last.files_done, last.files_total) == (len(files),) * 2
        assert last.bytes_done == last.bytes_total == sum(map(len, files.values()))

    def at_most_paced(self) -> None:
        """No more events than a few a second allow, however long it took."""
        seconds = self.times[-1] - self.times[0]
        assert len(self) <= 3 + PER_SECOND * seconds * 1.5, (len(self), seconds)
