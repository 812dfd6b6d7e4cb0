"""Requests the test server holds: wait until enough pile up, then let them go."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable

import anyio
from _s3server import Hold, Middleware, Predicate


async def held_while(
    hold: Hold, count: int, func: Callable[..., Awaitable[object]], *args: object
) -> int:
    """Run ``func(*args)`` while the server holds the requests ``hold`` matches: once
    ``count`` are held (see :func:`held_at_once`), let them go and ``func`` finish; how
    many were held."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(func, *args)
        try:
            return await held_at_once(hold, count)
        finally:
            hold.release(forward=True)


async def held_at_once(hold: Hold, count: int) -> int:
    """Wait until the server holds ``count`` requests (that proves ``count`` overlap; it
    fails after 60 s), then how many it holds: one beyond ``count`` is a finding. The
    tests' watches check the upper bound over the whole run."""
    arrived = await anyio.to_thread.run_sync(hold.wait_for, count, 60)
    assert arrived, f"only {hold.arrived} of {count} requests were ever in flight at once"
    return hold.arrived


async def cancelled_while_held(
    control: Middleware,
    predicate: Predicate,
    count: int,
    func: Callable[..., Awaitable[object]],
    *args: object,
) -> None:
    """Three times: run ``func(*args)`` and cancel it once the server holds exactly
    ``count`` requests ``predicate`` matches. Then reset the server: the held requests
    never reach the store."""
    for _ in range(3):
        control.reset()
        hold = control.hold(predicate)
        async with anyio.create_task_group() as tg:
            tg.start_soon(func, *args)
            assert await held_at_once(hold, count) == count
            tg.cancel_scope.cancel()
    control.reset()


def interrupted_when_held(
    hold: Hold, args: list[str], env: dict[str, str], *, by_child: bool = False
) -> tuple[str, str, int]:
    """Run ``python -c *args`` and, once the server holds one of its requests, send it
    SIGINT (Ctrl-C); with ``by_child``, write a line to its stdin instead, for it to send
    the signal itself when it is ready. Its stdout, stderr and exit code."""
    child = subprocess.Popen(
        [sys.executable, "-c", *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert hold.wait_for(1, timeout=120), "the child never sent the request held"
        if by_child:
            out, err = child.communicate("go\n", timeout=120)
        else:
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    return out, err, child.returncode
