"""What the engine moves: uploads (a file or a stream), what was stored, downloads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True, slots=True)
class InPack:
    """Where a file was stored in a pack: the pack's name under the upload's prefix, the
    file's first byte there, and the pack's size."""

    name: str
    offset: int
    pack_size: int


@dataclass(frozen=True, slots=True)
class Stored:
    size: int
    crc: int
    unchanged: bool = False  # the same as ``Upload.previous``: nothing was stored
    pack: InPack | None = None  # None: stored as the object prefix + name


@dataclass(frozen=True, slots=True)
class Upload:
    """One thing to store: a file path, or a binary stream."""

    name: str  # the relative path in the checkpoint; the key is a prefix plus this
    source: Path | BinaryIO
    size: int = -1  # known for paths
    #: For a stream: what the previous version holds at this name. A stream that turns
    #: out to be that content (same size and CRC-32) is not stored again. (Files are
    #: checked before they reach the engine.)
    previous: Stored | None = None
    #: For a file snapshotted by a background save: its CRC-32, read while copying (the
    #: unchanged-files check then reads nothing), and where its bytes start in
    #: ``source`` (small files share one staging file; such an item always goes in a pack).
    crc: int | None = None
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Download:
    key: str
    name: str
    target: str  # a path; not a Path, which costs twice the memory (5,000 files: 1 MiB)
    size: int
    crc: int | None  # expected; None when nothing is known (plain files)
    offset: int | None = None  # where the file starts in ``key``, a pack; None: all of it
