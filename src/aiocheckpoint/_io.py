"""File I/O helpers shared by the engine and local storage."""

from __future__ import annotations

import os
from collections.abc import Callable

#: Bytes per write(2). Recent Linux page caches allocate folios as big as the write, and
#: on the benchmark's machine writes of 1 MiB and more cost up to a second of system time
#: per 512 MiB, in some runs and not others; writes of 256 KiB never did.
WRITE_SIZE = 256 * 1024


def fill(readinto: Callable[[memoryview], int | None], view: memoryview) -> int:
    """Fill ``view`` from ``readinto`` until it is full or the source ends; the count."""
    got = 0
    while got < len(view):
        n = readinto(view[got:])
        if not n:
            break
        got += n
    return got


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``fd``."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done : done + WRITE_SIZE], offset + done)
