"""Task groups whose failures come out as one exception, never an ExceptionGroup."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

from ._errors import CheckpointError, CorruptCheckpointError, MissingObjectError

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

T = TypeVar("T")


class Later(Generic[T]):
    """What a task of a task group returns, read once the group has ended."""

    value: T

    async def run(self, func: Callable[..., Awaitable[T]], *args: Any) -> None:
        self.value = await func(*args)


@asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """A task group that raises the first failure of its tasks, with all of them in its
    ``errors`` attribute; cancellation, KeyboardInterrupt and SystemExit come first."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        error = collapse(group)
        error.__suppress_context__ = True
        raise error  # noqa: B904 - keep the error's own __cause__


def collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit, cancellation
            return exc
    corrupt = [e for e in leaves if isinstance(e, CorruptCheckpointError)]
    first: BaseException = leaves[0]
    if len(corrupt) > 1:
        # Several objects gone (e.g. collected by a newer commit) stay a MissingObjectError,
        # which a restore retries from the newest manifest.
        missing = all(isinstance(e, MissingObjectError) for e in corrupt)
        kind = MissingObjectError if missing else CorruptCheckpointError
        first = kind("; ".join(str(e) for e in corrupt))
    if isinstance(first, CheckpointError):
        first.errors = tuple(leaves)
    return first
