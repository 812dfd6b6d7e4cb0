"""What a save stores: a path or a stream turned into uploads, and which files the
previous version already holds."""

from __future__ import annotations

import dataclasses
import errno
import io
import logging
import os
import stat
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import anyio.to_thread
from anyio import CapacityLimiter

from . import _manifest as mf
from ._engine import Stored, Upload, batches
from ._io import crc_if_size
from ._tasks import task_group

log = logging.getLogger("aiocheckpoint")

#: The name a stream or ``write()``'s bytes are stored under.
STREAM_NAME = "_dst_cp"

#: A batch of the unchanged-files check ends after this many files or bytes: reading
#: costs far less per file than a request, so batches are bigger than the engine's.
_CHECK_FILES = 64
_CHECK_BYTES = 8 * 1024 * 1024
_CHECK_BUFFER = 1024 * 1024


async def uploads(cp: Any, threads: CapacityLimiter) -> list[Upload]:
    """What saving ``cp`` (a path, or a binary file object) stores.

    :raises TypeError: another type (bytes included: they go to ``write()``), or a text
        file object.
    :raises ValueError: an unreadable file object, or a folder that holds a symlink
        pointing outside it or something that is not a regular file.
    :raises FileNotFoundError: the path does not exist.
    """
    if isinstance(cp, (str, os.PathLike)):
        path = Path(os.fspath(cp))
        found: list[Upload] = await anyio.to_thread.run_sync(scan, path, limiter=threads)
        return found
    if isinstance(cp, io.TextIOBase):
        raise TypeError(f"cannot save text file object {cp!r}: open it in binary mode ('rb')")
    if isinstance(cp, io.IOBase) and hasattr(cp, "read"):
        if not cp.readable():
            raise ValueError(f"cannot save file object {cp!r}: it is not readable")
        return [Upload(STREAM_NAME, cp)]  # type: ignore[arg-type]
    if isinstance(cp, (bytes, bytearray, memoryview)):
        raise TypeError("save() takes a path or a binary file object; to store bytes, use write()")
    raise TypeError(
        f"save() takes a path to a file or folder, or a binary file object, not {type(cp).__name__}"
    )


def scan(root: Path) -> list[Upload]:
    """What saving ``root`` stores: the file itself, or a folder's files, recursively.

    Folders and files named ``.aiocheckpoint`` or starting with ``.aiocheckpoint-restore-``
    are skipped at any depth, with a warning.
    """
    if not os.path.lexists(root):
        raise FileNotFoundError(f"nothing to save: no such file or folder: {root}")
    if not root.is_dir():
        _check_name(root, root.name)
        return [Upload(root.name, root, _regular_size(root))]
    real_root = os.path.realpath(root)
    seen = {real_root}
    check_link = partial(_inside, root=root, real_root=real_root)
    out = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        keep = []
        for name in sorted(dirs):
            path = os.path.join(folder, name)
            if _skipped(path, name):
                continue
            if os.path.islink(path):
                real = check_link(path)
                if real in seen:
                    continue  # a link back up the tree: its files are saved already
                seen.add(real)
            keep.append(name)
        dirs[:] = keep
        for name in sorted(files):
            path = os.path.join(folder, name)
            if _skipped(path, name):
                continue
            if os.path.islink(path):
                check_link(path)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            _check_name(Path(path), rel)
            out.append(Upload(rel, Path(path), _regular_size(Path(path))))
    return out


def _inside(path: str, root: Path, real_root: str) -> str:
    """Where the symlink ``path`` points, inside ``root`` (whose real path is given)."""
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise ValueError(
            f"symlink {path} points outside {root} (to {real}); only links inside the"
            " saved folder can be saved"
        )
    return real


def _skipped(path: str, name: str) -> bool:
    """Whether ``path`` is never saved, with a warning: a checkpoint's metadata (from a
    checkpoint stored inside the saved folder, else copied into every save) or a restore's
    staging folder. Restores never write such names either."""
    if name == mf.META:
        why = "a checkpoint's metadata folder (a checkpoint stored inside the saved folder)"
    elif name.startswith(mf.STAGING):
        why = "the staging folder of a restore under way or interrupted"
    else:
        return False
    log.warning("not saving %s: the name is reserved for %s", path, why)
    return True


def _check_name(path: Path, rel: str) -> None:
    """Refuse a name the checkpoint cannot hold under ``rel``: S3 keys and manifests are
    UTF-8, and every name must fit a local file system when restored."""
    try:
        rel.encode()
    except UnicodeEncodeError:
        raise ValueError(
            f"cannot save {path}: its name is not valid UTF-8 ({os.fsencode(rel)!r})"
        ) from None
    reason = mf.name_too_long(rel) or mf.reserved(rel)
    if reason:
        raise ValueError(f"cannot save {path}: {reason}")


def _regular_size(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ValueError(f"cannot save {path}: it is a broken symlink") from None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise ValueError(f"cannot save {path}: the symlink loops, never reaching a file") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"cannot save {path}: not a regular file or folder")
    if st.st_size > mf.MAX_SIZE:
        raise ValueError(
            f"cannot save {path}: it holds {st.st_size} bytes, more than a checkpoint can"
            f" record for one file ({mf.MAX_SIZE} bytes, S3's limit for one object)"
        )
    return st.st_size


async def changed(
    items: list[Upload], old: Mapping[str, mf.FileEntry], threads: CapacityLimiter
) -> tuple[list[Upload], list[str]]:
    """The uploads whose content ``old`` does not hold at the same path, and the names of
    those it does (size and CRC-32, never the modification time). Streams can be read
    once only: they carry what to compare with into the engine."""
    files = [
        (u, Stored(e.size, e.crc))
        for u in items
        if isinstance(u.source, Path) and (e := old.get(u.name)) is not None and u.size == e.size
    ]
    unknown = [(str(u.source), known) for u, known in files if u.crc is None]
    same = iter(await _unchanged(unknown, threads))
    # a snapshot's CRC-32 was read while copying: nothing to read again
    kept = {u.name for u, known in files if (next(same) if u.crc is None else u.crc == known.crc)}
    rest = [
        dataclasses.replace(u, previous=Stored(e.size, e.crc))
        if not isinstance(u.source, Path) and (e := old.get(u.name)) is not None
        else u
        for u in items
        if u.name not in kept
    ]
    return rest, sorted(kept)


async def _unchanged(files: list[tuple[str, Stored]], threads: CapacityLimiter) -> list[bool]:
    """For each file, whether it holds exactly the bytes described (size and CRC-32).

    Files are read in batches, one worker-thread call per batch, batches in parallel: far
    cheaper per file than a request, and the only read of a file that turns out unchanged.
    """
    result = [False] * len(files)

    def check(batch: list[int]) -> None:
        largest = max(files[i][1].size for i in batch)
        with memoryview(bytearray(min(largest, _CHECK_BUFFER) or 1)) as view:
            for i in batch:
                path, known = files[i]
                result[i] = crc_if_size(path, known.size, view) == known.crc

    sizes = [known.size for _, known in files]
    async with task_group() as tg:
        for batch in batches(sizes, _CHECK_FILES, _CHECK_BYTES):
            tg.start_soon(partial(anyio.to_thread.run_sync, check, batch, limiter=threads))
    return result


def stream_starts(items: list[Upload]) -> list[tuple[BinaryIO, int]] | None:
    """Each stream among ``items`` and the position it starts at; None if one cannot
    seek back there."""
    starts = []
    for u in items:
        if isinstance(u.source, Path):
            continue
        try:
            if not u.source.seekable():
                return None
            starts.append((u.source, u.source.tell()))
        except (AttributeError, OSError, ValueError):
            return None
    return starts


def read_single(folder: Path) -> bytes | None:
    """The bytes of the one file in ``folder``; None if it is empty."""
    entries = list(folder.iterdir())
    if not entries:
        return None
    if len(entries) > 1:
        names = ", ".join(sorted(e.name for e in entries)[:5])
        more = ", ..." if len(entries) > 5 else ""
        raise ValueError(
            f"Expected exactly one checkpoint - found {len(entries)} in {folder}: {names}{more}"
        )
    if not entries[0].is_file():
        raise ValueError(f"Expected exactly one checkpoint file - found folder {entries[0]}")
    return entries[0].read_bytes()
