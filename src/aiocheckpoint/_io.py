"""Writing bytes into files, a few hundred KiB per write(2)."""

from __future__ import annotations

import os

#: Bytes per write(2). Recent Linux page caches allocate folios as big as the write, and
#: on the benchmark's machine writes of 1 MiB and more cost up to a second of system time
#: per 512 MiB, in some runs and not others; writes of 256 KiB never did.
WRITE_SIZE = 256 * 1024


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``fd``."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done : done + WRITE_SIZE], offset + done)
