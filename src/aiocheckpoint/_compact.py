"""Compaction: which unchanged small files a save stores again, so that packs stay full.

A pack loses live bytes each time one of its files changes, and a save that changes a few
files makes a small new pack. Left alone, a long run of saves would fill the storage with
dead bytes and split a restore over many small requests. So a save that stores anything
also stores again the files of every pack (or small object of its own) whose live bytes
are under half a full pack, into its own new packs. Then every pack a save leaves behind
holds at least half a full pack of live bytes, except at most one of its own: storage
stays under twice the live bytes, and a restore needs at most twice the requests of a
checkpoint saved fresh. A pack is rewritten only when every live file of it is part of
this save (read from the caller's files); one that names files only an older save had
stays as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import _manifest as mf
from ._engine import Upload


def refill(
    base: mf.Manifest, sent: Sequence[Upload], kept: Sequence[str], small: int, full: int
) -> set[str]:
    """The names among ``kept`` (unchanged since ``base``) to store again, ``sent`` being
    what the save stores anyway, ``small`` the largest file packed (0: none) and ``full``
    a full pack's bytes."""
    if not small:
        return set()
    gone = {u.name for u in sent}
    live: dict[str, list[str]] = {}  # pack or small object: the names still pointing in
    for name, entry in base.files.items():
        if name not in gone and (entry.offset is not None or entry.size <= small):
            live.setdefault(entry.object, []).append(name)
    here = set(kept)
    again: set[str] = set()
    for names in live.values():
        if sum(base.files[n].size for n in names) * 2 < full and here.issuperset(names):
            again.update(names)
    return again
