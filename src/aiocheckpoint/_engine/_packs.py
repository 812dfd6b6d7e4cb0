"""Packs: many small files stored end to end as one object, and read back by ranges.

Which files go into a pack, how a pack is read and written on disk, and how the files of
one pack that a restore needs are grouped into ranged GETs. No requests here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .._io import read_exactly, write_file
from ._items import Download

#: Files of a pack are read, and written back, this many (and bytes) per worker-thread
#: call, calls of one pack side by side.
THREAD_FILES = 256
THREAD_BYTES = 1024 * 1024
#: Dead bytes between two files a restore needs from one pack are read rather than split
#: into two requests up to this many: a request costs more than 1 MiB of transfer.
GAP = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Piece:
    """One file's bytes in a buffer: the file, where they start, how many, and where
    they start in the file."""

    path: str
    offset: int
    size: int
    at: int = 0


def read_pieces(view: memoryview, pieces: Sequence[Piece]) -> list[int]:
    """Read each file into ``view`` at its offset; their CRC-32s.

    :raises CheckpointError: a file holds fewer bytes than it did when listed.
    """
    return [read_exactly(p.path, p.at, view[p.offset : p.offset + p.size]) for p in pieces]


def write_pieces(view: memoryview, pieces: Sequence[Piece]) -> list[tuple[int, int]]:
    """Create each file from its bytes in ``view``: for each (bytes there, CRC-32). A file
    whose bytes ``view`` does not hold in full is not written."""
    out = []
    for p in pieces:
        there = max(0, min(p.size, len(view) - p.offset))
        if there < p.size:
            out.append((there, 0))
        else:
            out.append((p.size, write_file(p.path, view[p.offset : p.offset + p.size])))
    return out


def runs(items: Sequence[Download], most_bytes: int) -> list[list[Download]]:
    """The files a restore needs from one pack, grouped into ranges: sorted by offset, a
    new range where the dead gap before a file is more than :data:`GAP` or the range
    would hold more than ``most_bytes``."""
    out: list[list[Download]] = []
    start = end = 0
    for item in sorted(items, key=_offset):
        first = _offset(item)
        last = first + item.size
        if not out or first - end > GAP or max(end, last) - start > most_bytes:
            out.append([])
            start, end = first, last
        out[-1].append(item)
        end = max(end, last)
    return out


def span(run: Sequence[Download]) -> tuple[int, int]:
    """The first byte and the length of the range holding every file of ``run``."""
    start = _offset(run[0])
    return start, max(_offset(d) + d.size for d in run) - start


def _offset(item: Download) -> int:
    assert item.offset is not None
    return item.offset
