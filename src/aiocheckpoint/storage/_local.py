"""Local filesystem backend: every call runs in a worker thread, never on the event loop."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from .._checksum import crc32
from .._errors import StorageError
from .._io import fill, pwrite_all, read_at, write_file
from .._manifest import check_relpath
from ._base import FileCopy, ObjectInfo

T = TypeVar("T")

#: A big object is copied to its file through one buffer of this size.
_COPY_BUFFER = 1024 * 1024


def _tmp_name(path: Path) -> Path:
    """A temp file beside ``path``: ".tmp-" (what garbage collection looks for in
    ``manifests/``; a data folder with temp files is collected whole), then a short name
    of ``path``'s if it has one (a manifest's, which says which version commits), so a
    name of up to NAME_MAX bytes can be stored."""
    name = path.name if len(path.name) <= 32 else ""
    return path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{name}")


def _raise(error: OSError) -> None:
    if not isinstance(error, FileNotFoundError):  # a folder removed while listing is fine
        raise error


def _open_unbuffered(path: Path) -> io.FileIO:
    return open(path, "rb", buffering=0)  # noqa: SIM115 (the caller closes it)


def _read_head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:
        return  # removed since (the leftovers of a discarded save): nothing to make durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    empty_means_missing = False
    overlaps_listing = False
    max_key_bytes: int | None = None
    exclusive_create: bool | None = True
    endpoint = "local disk"

    def __init__(self, root: Path, limiter: CapacityLimiter) -> None:
        self.root = root
        self._limiter = limiter
        self._dirty: set[Path] = set()  # folders whose entries changed since the last sync()

    def describe(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def _path(self, key: str) -> Path:
        reason = check_relpath(key)
        if reason:
            raise StorageError(f"refusing key {key!r} under {self.root}: {reason}")
        return self.root / key

    async def run(self, key: str, func: Callable[[], T]) -> T:
        """Run ``func`` in a worker thread, its errors named after ``key``."""
        return await anyio.to_thread.run_sync(self._mapped, key, func, limiter=self._limiter)

    def _mapped(self, key: str, func: Callable[[], T]) -> T:
        """Run ``func``, its errors named after ``key``."""
        try:
            return func()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"no such file: {self.describe(key)}") from exc
        except OSError as exc:
            raise StorageError(f"local storage failed on {self.describe(key)}: {exc}") from exc

    def _makedirs(self, folder: Path) -> None:
        missing = []
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise
            self._dirty.add(path.parent)

    def _write_new(self, path: Path, data: bytes | memoryview) -> Path:
        """Write ``data`` to a fresh temp file beside ``path``, fsynced; return its name."""
        self._makedirs(path.parent)
        tmp = _tmp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            pwrite_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    async def put(self, key: str, body: BytesIO, crc: int) -> None:
        path = self._path(key)

        def write() -> None:
            with body.getbuffer() as view:
                self._store(path, view)

        await self.run(key, write)

    def _store(self, path: Path, data: bytes | memoryview) -> None:
        os.replace(self._write_new(path, data), path)
        self.mark_dirty(path.parent)

    def mark_dirty(self, folder: Path) -> None:
        """``folder``'s entries changed: fsync it before the next commit."""
        self._dirty.add(folder)

    async def put_files(self, files: Sequence[FileCopy]) -> list[int]:
        """Read and store the files one after another in one worker-thread call: one
        hand-off per batch, not per file. Each file's buffer is made and freed in that
        thread, so glibc reuses the thread's arena."""
        paths = [self._path(f.key) for f in files]

        def store() -> list[int]:
            crcs = []
            for f, path in zip(files, paths, strict=True):
                chunk = read_at(f.path, 0, f.size)  # the caller's file: its errors name it
                with chunk.body.getbuffer() as view:
                    self._mapped(f.key, partial(self._store, path, view))
                crcs.append(chunk.crc)
            return crcs

        return await anyio.to_thread.run_sync(store, limiter=self._limiter)

    async def put_exclusive(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def create() -> None:
            tmp = self._write_new(path, data)
            try:
                os.link(tmp, path)  # fails if path exists: an atomic exclusive create
            finally:
                os.unlink(tmp)
            dirty, self._dirty = self._dirty | {path.parent}, set()
            for folder in dirty:
                _fsync_dir(folder)

        try:
            await anyio.to_thread.run_sync(create, limiter=self._limiter)
        except FileExistsError:
            raise
        except OSError as exc:
            raise StorageError(f"local storage failed on {self.describe(key)}: {exc}") from exc

    async def start_multipart(self, key: str) -> LocalMultipart:
        path = self._path(key)

        def start() -> LocalMultipart:
            self._makedirs(path.parent)
            tmp = _tmp_name(path)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            return LocalMultipart(self, key, path, tmp, fd)

        return await self.run(key, start)

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes | bytearray:
        path = self._path(key)

        def read() -> bytes:
            with open(path, "rb") as f:
                if start:
                    f.seek(start)
                return f.read() if length is None else f.read(length)

        return await self.run(key, read)

    async def get_files(self, files: Sequence[FileCopy]) -> list[tuple[int, int] | None]:
        """Copy the objects to their files one after another in one worker-thread call."""
        paths = [self._path(f.key) for f in files]

        def copy() -> list[tuple[int, int] | None]:
            out: list[tuple[int, int] | None] = []
            for f, path in zip(files, paths, strict=True):
                try:
                    data = self._mapped(f.key, partial(_read_head, path, f.size + 1))
                except FileNotFoundError:
                    out.append(None)
                    continue
                # the caller's file: its errors name it
                out.append((len(data), 0 if len(data) > f.size else write_file(f.path, data)))
            return out

        return await anyio.to_thread.run_sync(copy, limiter=self._limiter)

    async def get_into(
        self, key: str, fd: int, start: int, length: int, *, whole: bool = False, at: int = -1
    ) -> tuple[int, int]:
        path = self._path(key)
        first = start if at < 0 else at

        def copy() -> tuple[int, int]:
            crc = got = 0
            opened = self._mapped(key, partial(_open_unbuffered, path))
            with opened as f, memoryview(bytearray(min(length, _COPY_BUFFER) or 1)) as view:
                f.seek(start)
                while got < length:
                    n = fill(f.readinto, view[: min(len(view), length - got)])
                    if not n:
                        break
                    crc = crc32(view[:n], crc)
                    pwrite_all(fd, view[:n], first + got)
                    got += n
                if whole and got == length:
                    got += len(f.read(1))
            return crc, got

        return await anyio.to_thread.run_sync(copy, limiter=self._limiter)

    async def list_objects(self, prefix: str = "") -> list[ObjectInfo]:
        top = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root

        def walk() -> list[ObjectInfo]:
            if not self.root.is_dir():
                if self.root.exists():
                    raise FileNotFoundError(f"{self.root} is not a directory")
                raise FileNotFoundError(f"no such directory: {self.root}")
            out = []
            for folder, _, names in os.walk(top, onerror=_raise):
                for name in names:
                    path = Path(folder, name)
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        try:
                            out.append(ObjectInfo(key, path.stat().st_size))
                        except FileNotFoundError:
                            continue  # removed while listing, or a dangling symlink
            out.sort(key=lambda info: info.key)
            return out

        return await self.run(prefix, walk)

    async def list_dirs(self, prefix: str) -> list[str]:
        folder = self._path(prefix.rstrip("/"))

        def scan() -> list[str]:
            try:
                with os.scandir(folder) as entries:
                    names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                return []
            return sorted(f"{prefix}{name}/" for name in names)

        return await self.run(prefix, scan)

    async def delete(self, keys: Sequence[str]) -> None:
        paths = [self._path(key) for key in keys]

        def remove() -> None:
            folders = set()
            for path in paths:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                folders.add(path.parent)
            # Drop folders left empty, deepest first, never the root.
            for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
                while folder != self.root and self.root in folder.parents:
                    try:
                        folder.rmdir()
                    except OSError:
                        break
                    folder = folder.parent

        await self.run(keys[0] if keys else "", remove)

    async def list_uploads(self, prefix: str) -> list[tuple[str, str]]:
        return []  # an unfinished local upload is a temp file, listed and collected as one

    async def abort_upload(self, key: str, upload_id: str) -> None:
        pass

    async def sync(self) -> None:
        dirty, self._dirty = self._dirty, set()

        def flush() -> None:
            for folder in dirty:
                _fsync_dir(folder)

        await self.run("", flush)

    async def aclose(self) -> None:
        pass


class LocalMultipart:
    """Parts written in place into one temp file, renamed into place on completion."""

    def __init__(self, store: LocalStorage, key: str, path: Path, tmp: Path, fd: int) -> None:
        self._store = store
        self._key = key
        self._path = path
        self._tmp = tmp
        self._fd = fd

    async def put_part(self, number: int, offset: int, body: BytesIO, crc: int) -> None:
        def write() -> None:
            with body.getbuffer() as view:
                pwrite_all(self._fd, view, offset)

        await self._store.run(self._key, write)

    async def complete(self) -> None:
        def finish() -> None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self._tmp, self._path)
            self._store.mark_dirty(self._path.parent)

        await self._store.run(self._key, finish)

    async def abort(self) -> None:
        def discard() -> None:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._tmp.unlink(missing_ok=True)

        await self._store.run(self._key, discard)
