"""A restore: the newest manifest (or the plain files at the source), downloaded into a
staging folder inside the target, verified, then moved into place.

Nothing outside the target is written: the staging folder is new, and the folders on the
way to each file are entered one at a time without following symlinks (the target itself
may be one: the caller chose it)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import uuid
from pathlib import Path

import anyio
import anyio.to_thread

from . import _manifest as mf
from ._catalog import Catalog
from ._engine import Download, Engine
from ._errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    MissingObjectError,
)
from ._progress import Meter
from .storage import Storage

log = logging.getLogger("aiocheckpoint")

# name, key, size, CRC-32 (None: plain files), offset in a pack (None: the whole object)
Item = tuple[str, str, int, "int | None", "int | None"]


async def restore_into(
    store: Storage,
    engine: Engine,
    catalog: Catalog,
    target: Path,
    version: int | None = None,
    meter: Meter | None = None,
) -> None:
    """Restore ``version`` (None: the newest) at ``store`` into the folder ``target``. If
    an object of the newest vanished because a newer version was committed meanwhile,
    restore that one."""
    meter = meter or Meter("restore", None)
    if version is not None:
        chosen = await catalog.version(store, version)
        await _fetch(store, engine, _items(chosen), target, meter)
    else:
        await _newest_into(store, engine, catalog, target, meter)
    meter.finish()


async def _newest_into(
    store: Storage, engine: Engine, catalog: Catalog, target: Path, meter: Meter
) -> None:
    manifest, items = await _plan(store, catalog)
    try:
        await _fetch(store, engine, items, target, meter)
    except MissingObjectError:
        if manifest is None:
            raise
        newer, items = await _plan(store, catalog)
        if newer is None or newer.version == manifest.version:
            raise
        log.info(
            "version %d of %s was replaced by %d during restore; restoring that",
            manifest.version,
            store.describe(),
            newer.version,
        )
        meter.again()
        await _fetch(store, engine, items, target, meter)


def _items(manifest: mf.Manifest) -> list[Item]:
    return [
        (name, f"{mf.META}/{e.object}", e.size, e.crc, e.offset)
        for name, e in manifest.files.items()
    ]


async def _plan(store: Storage, catalog: Catalog) -> tuple[mf.Manifest | None, list[Item]]:
    """What to fetch, from the newest manifest or from the plain files at the source."""
    try:
        manifest, _ = await catalog.newest(store, peek=True)
    except FileNotFoundError as exc:
        raise CheckpointNotFoundError(f"no checkpoint at {store.describe()}: {exc}") from exc
    if manifest is not None:
        return manifest, _items(manifest)
    everything = await store.list_objects()
    # Keys ending in "/" (or the prefix itself) are folder markers, not files.
    plain = [
        o
        for o in everything
        if o.key and not o.key.endswith("/") and not o.key.startswith(mf.META + "/")
    ]
    bad = [f"{o.key!r} ({reason})" for o in plain if (reason := mf.check_relpath(o.key))]
    if bad:
        raise CorruptCheckpointError(
            f"{store.describe()} holds files that cannot be restored safely: {', '.join(bad)}"
        )
    skipped = [o.key for o in plain if mf.reserved(o.key)]
    if skipped:  # e.g. checkpoints stored under the prefix: a save would skip them too
        log.warning(
            "not restoring %d files of %s whose paths hold a name reserved for"
            " aiocheckpoint's own folders: %s",
            len(skipped),
            store.describe(),
            ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""),
        )
        plain = [o for o in plain if not mf.reserved(o.key)]
    both = mf.file_and_folder(o.key for o in plain)
    if both:
        raise CorruptCheckpointError(
            f"{store.describe()} holds {both[0]!r} both as a file and as a folder"
            f" ({store.describe(both[0])} and keys under it); no restore can make both"
        )
    if not plain and any(o.key.startswith(mf.META + "/") for o in everything):
        raise CheckpointNotFoundError(
            f"no checkpoint at {store.describe()}: it holds only the leftovers of an"
            " interrupted save that never committed"
        )
    if not plain and store.empty_means_missing:
        raise CheckpointNotFoundError(f"no checkpoint at {store.describe()}: nothing is there")
    return None, [(o.key, o.key, o.size, None, None) for o in plain]


async def _fetch(
    store: Storage, engine: Engine, items: list[Item], target: Path, meter: Meter
) -> None:
    """Download into a staging folder inside ``target``, then move into place, so a
    failed restore leaves nothing behind."""
    meter.begin(len(items), sum(size for _, _, size, _, _ in items))
    staging = target / f"{mf.STAGING}{uuid.uuid4().hex[:12]}"
    await anyio.to_thread.run_sync(_start, store, items, staging, limiter=engine.threads)
    try:
        folder = str(staging)
        downloads = [
            Download(key, name, os.path.join(folder, name), n, crc, offset)
            for name, key, n, crc, offset in items
        ]
        await engine.download(store, downloads, meter)
        names = [d.name for d in downloads]
        await anyio.to_thread.run_sync(_move_into, staging, target, names, limiter=engine.threads)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, staging, True, limiter=engine.threads)


def _start(store: Storage, items: list[Item], staging: Path) -> None:
    """Refuse names the target's file system cannot hold before anything is downloaded,
    then make the staging folder (mkdir never follows a symlink in its way)."""
    try:
        limit = os.pathconf(staging.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = mf.MAX_NAME
    too_long = [
        (key, reason)
        for name, key, *_ in items
        if limit > 0 and (reason := mf.name_too_long(name, limit))
    ]
    if too_long:
        key, reason = too_long[0]
        more = f" (and {len(too_long) - 1} more)" if len(too_long) > 1 else ""
        raise CheckpointError(
            f"cannot restore {store.describe(key)} into {staging.parent}: {reason}, the"
            f" longest name its file system allows{more}"
        )
    staging.mkdir()


_FOLDER = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


def _move_into(staging: Path, target: Path, names: list[str]) -> None:
    """Move each file of ``staging`` to the same path under ``target``. A folder that is
    not in ``target`` yet moves whole, with one rename (a restore into an empty folder
    makes a rename per top folder, not per file). A file's own name is replaced by
    rename(2), a symlink there included (not what it points to)."""
    folders = _Folders(target)
    moved: set[str] = set()  # folders moved whole
    present: set[str] = set()  # folders already in the target
    try:
        for name in sorted(names, key=lambda n: n.split("/")):  # a folder's files together
            *parents, base = name.split("/")
            try:
                if _moved_whole(staging, folders, parents, moved, present):
                    continue
                if moved and not os.path.lexists(staging / name):
                    continue  # moved with a folder whose name differs only in case
                os.replace(staging / name, base, dst_dir_fd=folders.open(parents))
            except OSError as exc:  # e.g. a folder of the same name is in the way
                raise CheckpointError(f"cannot restore {name} to {target / name}: {exc}") from exc
    finally:
        folders.close()


def _moved_whole(
    staging: Path, folders: _Folders, parents: list[str], moved: set[str], present: set[str]
) -> bool:
    """Whether a folder on the way to a file (``parents``) has been, or now is, moved
    whole from ``staging``: the first one missing from the target, if any."""
    for depth in range(1, len(parents) + 1):
        folder = "/".join(parents[:depth])
        if folder in moved:
            return True
        if folder in present:
            continue
        parent = folders.open(parents[: depth - 1])
        try:
            os.lstat(parents[depth - 1], dir_fd=parent)
        except FileNotFoundError:
            try:
                os.rename(staging / folder, parents[depth - 1], dst_dir_fd=parent)
            except OSError:  # made meanwhile: move its files one by one
                present.add(folder)
                continue
            moved.add(folder)
            return True
        present.add(folder)  # (a symlink or a file there: left to _Folders.open)
    return False


class _Folders:
    """Descriptors of ``target`` and of the folders down to the one opened last, each
    opened in its parent without following symlinks; a folder's files in a row open it
    once."""

    def __init__(self, target: Path) -> None:
        self._target = target
        self._fds = [os.open(target, _FOLDER)]
        self._parts: list[str] = []

    def open(self, parts: list[str]) -> int:
        """The descriptor of the folder ``parts`` under the target, made if missing."""
        same = 0
        while same < min(len(parts), len(self._parts)) and parts[same] == self._parts[same]:
            same += 1
        while len(self._parts) > same:
            os.close(self._fds.pop())
            self._parts.pop()
        for part in parts[same:]:
            path = self._target.joinpath(*self._parts, part)
            self._fds.append(_enter(self._fds[-1], part, path))
            self._parts.append(part)
        return self._fds[-1]

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


def _enter(parent: int, name: str, path: Path) -> int:
    """Open the folder ``name`` (``path``) in the folder ``parent``, made if missing. A
    symlink there is replaced by a real folder, as GNU tar does: what it points to is
    left alone."""
    try:
        return os.open(name, _FOLDER | os.O_NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            raise  # a folder after all: e.g. no permission to open it
        if not stat.S_ISLNK(mode):
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(path)) from None
        link = os.readlink(name, dir_fd=parent)
        os.unlink(name, dir_fd=parent)
        log.warning(
            "replaced the symlink %s (pointing to %s) with a folder: a restore writes only"
            " inside its folder",
            path,
            link,
        )
    os.mkdir(name, dir_fd=parent)
    return os.open(name, _FOLDER | os.O_NOFOLLOW, dir_fd=parent)
