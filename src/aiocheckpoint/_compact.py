"""Compaction: which small files a save stores again, so that packs stay full.

A pack loses live bytes each time one of its files changes, and each save that changes a
few files makes a small pack of its own. Left alone, a long run of saves would fill the
storage with dead bytes and split a restore over many small requests. So a save that
stores anything also stores again, into its own new packs, the live files of

- every pack that is more dead than live, so storage stays under twice the live bytes;
- when the packs (and small objects of their own) would be more than twice as many as a
  fresh save of the same files makes, every one holding less than half a full pack, so a
  restore needs at most about twice the requests of a fresh checkpoint.

A file of the save is read again from the caller's file. A file the save does not have
(an earlier save's, kept by the merge) is copied out of its pack, at most a full pack's
worth per save, so that such a file never keeps a mostly dead pack alive for good.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import _manifest as mf
from ._engine import Upload


@dataclass(frozen=True)
class Refill:
    again: set[str]  # files of the save (unchanged since the base) to store again
    copied: list[str]  # files only the base has, to copy out of their packs and store


def refill(
    base: mf.Manifest,
    items: Sequence[Upload],
    sent: Sequence[Upload],
    kept: Sequence[str],
    small: int,
    full: int,
) -> Refill:
    """What to store again, ``items`` being the save's files, ``sent`` those it stores
    anyway, ``kept`` those unchanged since ``base``, ``small`` the largest file packed (0:
    none) and ``full`` a full pack's bytes."""
    if not small or not sent:
        return Refill(set(), [])
    gone = {u.name for u in sent}
    units: dict[str, list[str]] = {}  # pack or small object: the names still pointing in
    for name, entry in base.files.items():
        if name not in gone and (entry.offset is not None or entry.size <= small):
            units.setdefault(entry.object, []).append(name)
    live = {obj: sum(base.files[n].size for n in names) for obj, names in units.items()}
    sparse = [obj for obj in units if obj in base.packs and live[obj] * 2 < base.packs[obj]]

    changed = sum(u.size for u in sent if isinstance(u.source, Path) and u.size <= small)
    packed = changed + sum(live[obj] for obj in sparse)
    count = len(units) - len(sparse) + -(-packed // full)
    fresh = -(-(sum(live.values()) + changed) // full)
    chosen = set(sparse)
    if count > 2 * max(fresh, 1):
        chosen.update(obj for obj in units if live[obj] * 2 < full)
    emptiest = sorted(chosen, key=lambda obj: live[obj])
    return _split(base, items, kept, [units[obj] for obj in emptiest], full)


def _split(
    base: mf.Manifest,
    items: Sequence[Upload],
    kept: Sequence[str],
    chosen: Iterable[list[str]],
    full: int,
) -> Refill:
    """The names of the ``chosen`` units (emptiest first), split into those the save
    reads again and those copied out of storage: a unit whose copies would pass ``full``
    bytes in all waits for a later save."""
    here = set(kept)
    survive: set[str] | None = None  # the base's names a merge with the save keeps
    again: set[str] = set()
    copied: list[str] = []
    room = full
    for names in chosen:
        away = [n for n in names if n not in here]
        if away and survive is None:
            placeholder = mf.FileEntry("", 0, "")
            survive = set(mf.merge(base.files, {u.name: placeholder for u in items}))
        if survive is not None and not survive.issuperset(away):
            continue  # it holds a file the merge drops: left for a later save
        cost = sum(base.files[n].size for n in away)
        if cost > room:
            continue
        room -= cost
        again.update(n for n in names if n in here)
        copied += away
    return Refill(again, copied)
