"""Compaction: which unchanged small files a save stores again, so that packs stay full.

A pack loses live bytes each time one of its files changes, and each save that changes a
few files makes a small pack of its own. Left alone, a long run of saves would fill the
storage with dead bytes and split a restore over many small requests. So a save that
stores anything also stores again, into its own new packs, the live files of

- every pack that is more dead than live, so storage stays under twice the live bytes;
- when the packs (and small objects of their own) would be more than twice as many as a
  fresh save of the same files makes, every one holding less than half a full pack, so a
  restore needs at most about twice the requests of a fresh checkpoint.

Only the files of this save can be stored again (read from the caller's files): a pack
that names a file only an older save had stays as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    units: dict[str, list[str]] = {}  # pack or small object: the names still pointing in
    for name, entry in base.files.items():
        if name not in gone and (entry.offset is not None or entry.size <= small):
            units.setdefault(entry.object, []).append(name)
    live = {obj: sum(base.files[n].size for n in names) for obj, names in units.items()}
    here = set(kept)
    movable = [obj for obj, names in units.items() if here.issuperset(names)]
    again = [obj for obj in movable if obj in base.packs and live[obj] * 2 < base.packs[obj]]

    changed = sum(u.size for u in sent if isinstance(u.source, Path) and u.size <= small)
    packed = changed + sum(live[obj] for obj in again)
    count = len(units) - len(again) + -(-packed // full)
    fresh = -(-(sum(live.values()) + changed) // full)
    if count > 2 * max(fresh, 1):
        again += [obj for obj in movable if live[obj] * 2 < full and obj not in again]
    return {name for obj in again for name in units[obj]}
