"""AsyncCheckpoint: the one class that awaits. Everything else delegates to it."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import EventLoopToken, current_token

from . import _manifest as mf
from ._checksum import crc32, to_text
from ._config import TransferConfig
from ._errors import (
    CheckpointClosedError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StorageError,
)
from ._transfer import (
    Download,
    Engine,
    MissingObjectError,
    Stored,
    Upload,
    as_stream,
    task_group,
)
from .storage import Location, ObjectInfo, S3Options, Storage, Storages, parse_location

log = logging.getLogger("aiocheckpoint")

PathLike = str | os.PathLike[str]

_STAGING = ".aiocheckpoint-restore-"


class AsyncCheckpoint:
    """A checkpoint to ``await``: restore the previous one, save new versions.

    :param checkpoint_dest: where saves go: a local path, ``file://`` URL or
        ``s3://bucket/prefix``.
    :param checkpoint_src: the previous checkpoint to restore from (same forms), or
        None / ``""`` for none.
    :param transfer: concurrency, part sizes and memory bound.
    :param keep_versions: committed versions kept at ``checkpoint_dest`` after a save.
    :param endpoint_url: S3 endpoint (default: ``AWS_ENDPOINT_URL_S3`` /
        ``AWS_ENDPOINT_URL`` / AWS).
    :param region_name: S3 region (default: the botocore chain, e.g. ``AWS_REGION``).
    :param botocore_config: a ``botocore.config.Config`` merged over the defaults.
    :raises ValueError: an unsupported URL scheme or a bad option.
    """

    SRC_LOCAL_FOLDER = "prev_cp"
    TMP_DST_PATH = "_dst_cp"

    def __init__(
        self,
        checkpoint_dest: PathLike,
        checkpoint_src: PathLike | None = None,
        *,
        transfer: TransferConfig | None = None,
        keep_versions: int = 1,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        botocore_config: Any = None,
    ) -> None:
        self._args = (checkpoint_dest, checkpoint_src)
        self._kwargs: dict[str, Any] = dict(
            transfer=transfer,
            keep_versions=keep_versions,
            endpoint_url=endpoint_url,
            region_name=region_name,
            botocore_config=botocore_config,
        )
        self._dest = parse_location(checkpoint_dest, "checkpoint_dest")
        no_src = checkpoint_src is None or (isinstance(checkpoint_src, str) and not checkpoint_src)
        self._src = None if no_src else parse_location(checkpoint_src, "checkpoint_src")  # type: ignore[arg-type]
        if transfer is None:
            transfer = TransferConfig()
        elif not isinstance(transfer, TransferConfig):
            raise TypeError(f"transfer must be a TransferConfig, not {type(transfer).__name__}")
        if (
            not isinstance(keep_versions, int)
            or isinstance(keep_versions, bool)
            or keep_versions < 1
        ):
            raise ValueError(f"keep_versions must be a positive integer, got {keep_versions!r}")
        self._keep = keep_versions
        threads = CapacityLimiter(transfer.max_threads)
        self._threads = threads
        self._engine = Engine(transfer, threads)
        s3 = S3Options(endpoint_url, region_name, botocore_config, transfer.max_concurrency)
        self._storages = Storages(s3, threads)
        self._opened: dict[Location, Storage] = {}
        self._open_lock = anyio.Lock()
        self._save_lock = anyio.Lock()
        self._restore_lock = anyio.Lock()
        self._restored: Path | None = None
        self._tmpdir: Path | None = None
        self._closed = False
        self._loop: EventLoopToken | None = None
        #: Manifests this object read or committed, by URL: (MD5 of the body, manifest).
        self._manifests: dict[str, tuple[str, mf.Manifest]] = {}

    def __repr__(self) -> str:
        src = str(self._src) if self._src else None
        return f"{type(self).__name__}(checkpoint_dest={str(self._dest)!r}, checkpoint_src={src!r})"

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> AsyncCheckpoint:
        await self._storage(self._dest)
        if self._src is not None:
            await self._storage(self._src)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the storage clients and remove the private restore folder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            # Let saves and restores under way (from other threads, or tasks) finish first.
            async with self._save_lock, self._restore_lock:
                pass
            self._opened.clear()
            await self._storages.aclose()
            if self._tmpdir is not None:
                await self._thread(shutil.rmtree, self._tmpdir, True)
                self._tmpdir = None

    def _check_closed(self) -> None:
        if self._closed:
            raise CheckpointClosedError(f"{self!r} is closed")

    def _check_open(self) -> None:
        """Not closed, and on the event loop it first ran on."""
        self._check_closed()
        loop = current_token()
        if self._loop is None:
            self._loop = loop
        elif loop != self._loop:
            # Its client, locks and limiters belong to the loop it first ran on.
            raise CheckpointError(
                f"{self!r} was first used on another event loop; create one"
                " AsyncCheckpoint per event loop (or use SyncCheckpoint)"
            )

    async def _storage(self, location: Location) -> Storage:
        self._check_open()
        async with self._open_lock:
            if location not in self._opened:
                self._opened[location] = await self._storages.open(location)
            return self._opened[location]

    async def _thread(self, func: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)

    def _forked(self) -> AsyncCheckpoint:
        """A fresh copy for a forked child process, keeping what was already restored."""
        clone = type(self)(*self._args, **self._kwargs)
        clone._restored = self._restored  # the parent owns (and removes) its temp folder
        return clone

    # -- the checkpoint API ----------------------------------------------------

    def prev_exists(self) -> bool:
        """True if a previous checkpoint (``checkpoint_src``) was given. No I/O."""
        self._check_closed()
        return self._src is not None

    async def restore(self, path: PathLike | None = None) -> Path | None:
        """Download the previous checkpoint into ``path`` and return it.

        Only the first call downloads; later calls return the first call's folder.

        :param path: an existing directory, or None for a private temp folder
            (``<tmp>/prev_cp``) removed on close.
        :return: the folder, or None when there is no previous checkpoint.
        :raises ValueError: ``path`` is not an existing directory.
        :raises CheckpointNotFoundError: the source holds no checkpoint.
        :raises CorruptCheckpointError: a file is missing or does not match the manifest.
        """
        self._check_open()
        if self._src is None:
            return None
        async with self._restore_lock:
            if self._restored is not None:
                return self._restored
            owned = path is None
            if path is None:
                self._tmpdir = Path(await self._thread(tempfile.mkdtemp, None, "aiocheckpoint-"))
                target = self._tmpdir / self.SRC_LOCAL_FOLDER
                await self._thread(target.mkdir)
            else:
                target = Path(os.fspath(path))
                if not await self._thread(target.is_dir):
                    raise ValueError(
                        "Checkpoints can be restored to a directory only."
                        f" {target} is not an existing directory."
                    )
            try:
                await self._restore_into(await self._storage(self._src), target)
            except BaseException:
                if owned and self._tmpdir is not None:
                    with anyio.CancelScope(shield=True):
                        await self._thread(shutil.rmtree, self._tmpdir, True)
                    self._tmpdir = None
                raise
            self._restored = target
            return target

    async def save(self, cp: PathLike | BinaryIO | io.IOBase) -> None:
        """Save a file, a folder's contents or a binary file object, as a new version.

        The new version holds everything saved before plus ``cp``; a path saved again
        replaces its earlier content. If that is what the newest version already holds,
        nothing is committed. A file is stored under its name, a folder's files
        under their paths relative to it, a file object as ``_dst_cp``.

        :raises ValueError: ``cp`` is of another type, or a folder holds a symlink that
            points outside it, or something that is not a regular file.
        :raises FileNotFoundError: ``cp`` does not exist.
        :raises CheckpointError: another writer committed to the same dest meanwhile.
        """
        self._check_open()
        if isinstance(cp, (str, os.PathLike)):
            uploads = await self._thread(_scan, Path(os.fspath(cp)))
        elif isinstance(cp, io.IOBase) and hasattr(cp, "read"):
            if isinstance(cp, io.TextIOBase):
                raise ValueError(
                    f"cannot save text file object {cp!r}: open it in binary mode ('rb')"
                )
            if not cp.readable():
                raise ValueError(f"cannot save file object {cp!r}: it is not readable")
            uploads = [Upload(self.TMP_DST_PATH, cp)]  # type: ignore[arg-type]
        else:
            raise ValueError(
                f"Unsupported checkpoint type {type(cp).__name__}: expected a path to a file"
                " or folder, or a binary file object"
            )
        await self._commit(uploads)

    async def write(self, b: bytes | bytearray | memoryview) -> None:
        """Store ``b`` as ``_dst_cp`` in a new version, replacing any earlier ``_dst_cp``
        (nothing is committed if the newest version already holds these bytes there).

        :raises TypeError: ``b`` is not bytes-like.
        """
        if not isinstance(b, (bytes, bytearray, memoryview)):
            raise TypeError(f"write() takes bytes, bytearray or memoryview, not {type(b).__name__}")
        self._check_open()
        await self._commit([Upload(self.TMP_DST_PATH, as_stream(b))])

    async def read(self) -> bytes | None:
        """Restore, then return the one file's bytes (None if the checkpoint is empty).

        :raises ValueError: the checkpoint holds more than one file.
        """
        path = await self.restore()
        if path is None:
            return None
        return await self._thread(_read_single, path)  # type: ignore[no-any-return]

    # -- restore ---------------------------------------------------------------

    async def _restore_into(self, store: Storage, target: Path) -> None:
        manifest, items = await self._plan_restore(store)
        try:
            await self._fetch(store, items, target)
        except MissingObjectError:
            if manifest is None:
                raise
            newer, items = await self._plan_restore(store)
            if newer is None or newer.version == manifest.version:
                raise
            log.info(
                "version %d of %s was replaced by %d during restore; restoring that",
                manifest.version,
                store.describe(),
                newer.version,
            )
            await self._fetch(store, items, target)

    async def _plan_restore(
        self, store: Storage
    ) -> tuple[mf.Manifest | None, list[tuple[str, str, int, int | None]]]:
        """What to fetch: (name, key, size, crc) per file, from the newest manifest or
        from the plain files under the source."""
        try:
            manifest, _ = await self._newest(store, peek=True)
        except FileNotFoundError as exc:
            raise CheckpointNotFoundError(f"no checkpoint at {store.describe()}: {exc}") from exc
        if manifest is not None:
            return manifest, [
                (name, f"{mf.META}/{e.object}", e.size, e.crc) for name, e in manifest.files.items()
            ]
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
        return None, [(o.key, o.key, o.size, None) for o in plain]

    async def _fetch(
        self, store: Storage, items: list[tuple[str, str, int, int | None]], target: Path
    ) -> None:
        """Download into a staging folder inside ``target``, then move into place, so a
        failed restore leaves nothing behind."""
        staging = target / f"{_STAGING}{uuid.uuid4().hex[:12]}"
        await self._thread(staging.mkdir)
        try:
            folder = str(staging)
            downloads = [
                Download(key, name, os.path.join(folder, name), n, crc)
                for name, key, n, crc in items
            ]
            await self._engine.download(store, downloads)
            await self._thread(_move_into, staging, target, [d.name for d in downloads])
        finally:
            with anyio.CancelScope(shield=True):
                await self._thread(shutil.rmtree, staging, True)

    # -- save ------------------------------------------------------------------

    async def _newest(
        self, store: Storage, peek: bool = False
    ) -> tuple[mf.Manifest | None, list[ObjectInfo]]:
        """The newest committed manifest (or None), and the listing of ``manifests/`` it
        was found in. Raises FileNotFoundError for a missing local root.

        With ``peek``, ``latest.json`` is read while the listing runs: when it is the
        listed newest manifest, that manifest costs no second request in sequence.
        """
        latest: list[bytes | bytearray] = []

        async def read_latest() -> None:
            try:
                async with self._engine.slot():
                    latest.append(await store.get(mf.LATEST))
            except Exception as exc:  # e.g. written by an older aiocheckpoint: no copy
                log.debug("no usable %s: %s", store.describe(mf.LATEST), exc)

        for attempt in range(3):
            async with task_group() as tg:
                if peek and attempt == 0 and not store.blocking:
                    tg.start_soon(read_latest)
                listing = await store.list_objects(mf.MANIFESTS)
            listed = {store.describe(o.key) for o in listing}
            prefix = store.describe(mf.MANIFESTS)
            for url in [u for u in self._manifests if u.startswith(prefix) and u not in listed]:
                del self._manifests[url]  # collected since
            newest = max(_manifest_versions(listing), default=0)
            if not newest:
                return None, listing
            key = mf.manifest_key(newest)
            try:
                info = next(o for o in listing if o.key == key)
                peeked = latest.pop() if latest else None
                return await self._read_manifest(store, info, peeked), listing
            except FileNotFoundError:
                continue  # collected by a newer commit meanwhile: list again
        raise CheckpointError(f"manifests at {store.describe()} keep changing; try again")

    def _known_newest(self, store: Storage) -> mf.Manifest | None:
        """The newest manifest of ``store`` this object read or committed, if any."""
        prefix = store.describe(mf.MANIFESTS)
        known = [m for url, (_, m) in self._manifests.items() if url.startswith(prefix)]
        return max(known, key=lambda m: m.version, default=None)

    async def _read_manifest(
        self, store: Storage, info: ObjectInfo, peeked: bytes | bytearray | None = None
    ) -> mf.Manifest:
        """A listed manifest. The copy this object read or wrote is used when the listing
        shows that very object (S3: the ETag of a plain PUT is the MD5 of its body), and
        so is ``peeked`` (the body of ``latest.json``) when it is that very object."""
        url = store.describe(info.key)
        known = self._manifests.get(url)
        if known is not None and info.etag and info.etag == known[0]:
            return known[1]
        if peeked is not None and info.etag and info.etag == _md5(peeked):
            body = peeked
        else:
            body = await store.get(info.key)
        manifest = mf.decode(body, url)
        self._manifests[url] = (_md5(body), manifest)
        return manifest

    async def _commit(self, uploads: list[Upload]) -> None:
        async with self._save_lock:
            store = await self._storage(self._dest)
            started = time.monotonic()
            surveyed: list[tuple[list[str], list[tuple[str, str]]]] = []
            folders: list[str] = []  # every data folder this save wrote into
            abandoned = ""  # the one its early upload went to, if the guess was wrong

            # Over the network, files go up at once, before the listing of manifests is
            # back: into the folder of the version after the newest this object knows (a
            # new checkpoint if none), leaving out what that version holds. The listing
            # then says whether the guess holds; if not, that upload is cancelled and
            # deleted, and the save starts over from what is there. A stream is read again
            # from where it started, so one that cannot seek waits for the listing.
            guess = None if store.blocking else self._known_newest(store)
            starts = _stream_starts(uploads)
            speculate = not store.blocking and starts is not None
            ahead_scope = anyio.CancelScope()
            ahead_done = anyio.Event()
            ahead: list[tuple[list[Upload], list[str], list[Stored]] | Exception] = []

            async def survey() -> None:
                surveyed.append(await self._survey(store))

            async def upload_ahead(folder: str) -> None:
                try:
                    with ahead_scope:
                        todo, kept = await self._changed(uploads, guess.files if guess else {})
                        stored = await self._engine.upload(store, f"{mf.META}/{folder}", todo)
                        ahead.append((todo, kept, stored))
                except Exception as exc:  # only raised if the guess holds
                    ahead.append(exc)
                finally:
                    ahead_done.set()

            try:
                # What garbage collection will need is listed while the data goes up.
                async with task_group() as tg:
                    tg.start_soon(survey)
                    if speculate:
                        version = (guess.version if guess else 0) + 1
                        folders.append(mf.data_dir(version, uuid.uuid4().hex[:12]))
                        tg.start_soon(upload_ahead, folders[0])
                    try:
                        async with self._engine.slot():  # asked for before the uploads
                            base, manifests = await self._newest(store)
                    except FileNotFoundError:
                        base, manifests = None, []  # a new local folder
                    version = (base.version if base else 0) + 1
                    old = base.files if base else {}
                    if speculate and base == guess:  # equal, not only the same object
                        await ahead_done.wait()
                        if isinstance(ahead[0], Exception):
                            raise ahead[0]
                        folder = folders[0]
                        uploads, kept, stored = ahead[0]
                    else:
                        if speculate:
                            ahead_scope.cancel()
                            await ahead_done.wait()
                            abandoned = folders[0]
                            for stream, start in starts or ():
                                stream.seek(start)  # to be read again
                            log.debug(
                                "%s changed since this object last saw it: uploading again",
                                store.describe(mf.MANIFESTS),
                            )
                        folder = mf.data_dir(version, uuid.uuid4().hex[:12])
                        folders.append(folder)
                        uploads, kept = await self._changed(uploads, old)
                        stored = await self._engine.upload(store, f"{mf.META}/{folder}", uploads)
                    await store.sync()
            except BaseException:
                for wrote in folders:
                    await self._discard(store, f"{mf.META}/{wrote}")
                raise
            try:
                dirs, unfinished = surveyed[0]
                new = {name: old[name] for name in kept}
                for u, done in zip(uploads, stored, strict=True):
                    if done.unchanged:
                        new[u.name] = old[u.name]
                    else:
                        new[u.name] = mf.FileEntry(folder + u.name, done.size, to_text(done.crc))
                files = mf.merge(old, new)
                if (
                    base is not None
                    and files == dict(old)
                    and not _left_above(base.version, dirs, unfinished)
                ):
                    # Version N already is this checkpoint: committing a copy of it would cost
                    # two requests in sequence (commit, delete N) and change nothing. (What a
                    # crashed save left above N is collected only by a commit above it.)
                    await self._collect_garbage(store, base, manifests, dirs, unfinished)
                    log.info(
                        "nothing changed since version %d of %s: %d files, nothing committed"
                        " (%.2fs)",
                        base.version,
                        store.describe(),
                        len(files),
                        time.monotonic() - started,
                    )
                    return
                manifest = mf.Manifest(version, files)
                await self._publish(store, manifest, folder)
                # Uploads listed while this save ran may be its own, done or aborted since.
                mine = tuple(f"{mf.META}/{wrote}" for wrote in folders)
                unfinished = [(k, upload) for k, upload in unfinished if not k.startswith(mine)]
                await self._collect_garbage(store, manifest, manifests, dirs, unfinished)
                sent = [s for s in stored if not s.unchanged]
                log.info(
                    "committed version %d of %s: %d files (%d saved now, %d bytes; %d unchanged)"
                    " in %.2fs",
                    version,
                    store.describe(),
                    len(manifest.files),
                    len(sent),
                    sum(s.size for s in sent),
                    len(new) - len(sent),
                    time.monotonic() - started,
                )
            finally:
                if abandoned:  # deleted last: a cancelled request may land late
                    await self._discard(store, f"{mf.META}/{abandoned}")

    async def _changed(
        self, uploads: list[Upload], old: Mapping[str, mf.FileEntry]
    ) -> tuple[list[Upload], list[str]]:
        """The uploads whose content the previous version does not hold at the same path,
        and the names of those it does (size and CRC-32, never the modification time).
        Streams can be read once only: they carry what to compare with into the engine."""
        files = [
            (u.name, u.source, Stored(e.size, e.crc))
            for u in uploads
            if isinstance(u.source, Path)
            and (e := old.get(u.name)) is not None
            and u.size == e.size
        ]
        same = await self._engine.unchanged([(path, known) for _, path, known in files])
        kept = {name for (name, _, _), unchanged in zip(files, same, strict=True) if unchanged}
        rest = [
            dataclasses.replace(u, previous=Stored(e.size, e.crc))
            if not isinstance(u.source, Path) and (e := old.get(u.name)) is not None
            else u
            for u in uploads
            if u.name not in kept
        ]
        return rest, sorted(kept)

    async def _survey(self, store: Storage) -> tuple[list[str], list[tuple[str, str]]]:
        """The data folders under ``.aiocheckpoint/data/`` (one per save, not one per
        file), and unfinished uploads, listed at once."""
        dirs: list[str] = []
        unfinished: list[tuple[str, str]] = []

        async def folders() -> None:
            async with self._engine.slot():
                dirs.extend(await store.list_dirs(mf.DATA))

        async def uploads() -> None:
            try:
                async with self._engine.slot():
                    unfinished.extend(await store.list_uploads(mf.DATA))
            except StorageError as exc:  # e.g. no s3:ListBucketMultipartUploads permission
                log.debug("cannot list unfinished uploads: %s", exc)

        async with task_group() as tg:
            tg.start_soon(folders)
            tg.start_soon(uploads)
        return dirs, unfinished

    async def _publish(self, store: Storage, manifest: mf.Manifest, folder: str) -> None:
        """Commit: create the manifest, exclusively.

        Shielded from cancellation: once the data is durable, the outcome must be known,
        committed or not. A failed request may still have landed (a retried PUT then
        meets its own manifest), so on failure look before discarding anything.
        """
        key = mf.manifest_key(manifest.version)
        body = mf.encode(manifest)

        async def copy_to_latest() -> None:
            try:
                await store.put(mf.LATEST, io.BytesIO(body), crc32(body))
            except Exception as exc:  # restores then read the manifest itself
                log.info("could not write %s: %s", store.describe(mf.LATEST), exc)

        with anyio.CancelScope(shield=True):
            try:
                async with task_group() as tg:
                    if not store.blocking:  # for restores over the network, see _manifest
                        tg.start_soon(copy_to_latest)
                    await store.put_exclusive(key, body)
                self._manifests[store.describe(key)] = (_md5(body), manifest)
                return
            except Exception as exc:
                error = exc
            try:
                with anyio.fail_after(60):
                    current: bytes | bytearray | None = await store.get(key)
            except FileNotFoundError:
                current = None
            except Exception:
                # Unknown outcome: keep the data. If the manifest landed it needs it; if
                # not, the next save collects it.
                raise error from None
            if current == body:
                log.info("commit of %s succeeded although the request failed: %s", key, error)
                return
            if isinstance(error, FileExistsError):  # definitely another writer's
                await self._discard(store, f"{mf.META}/{folder}")
                raise _conflict(store, manifest.version) from error
            # Not there now, but a request that timed out may still land: keep the data it
            # would need. The next save collects it if it never does.
            raise error

    async def _discard(self, store: Storage, prefix: str) -> None:
        """Best effort: delete what an uncommitted save wrote (the next save would too)."""
        with anyio.move_on_after(30, shield=True):
            try:
                await store.delete([o.key for o in await store.list_objects(prefix)])
            except Exception as exc:
                log.warning("could not clean up %s: %s", store.describe(prefix), exc)

    async def _collect_garbage(
        self,
        store: Storage,
        manifest: mf.Manifest,
        manifests: list[ObjectInfo],
        dirs: list[str],
        unfinished: list[tuple[str, str]],
    ) -> None:
        """Delete what no retained version needs, and abort unfinished uploads of crashed
        saves. What to delete comes from the manifests dropped now (usually the previous
        one, already in memory) and the list of data folders, so a save does not list every
        object. Failures only log: the commit stands and the next save tries again."""
        try:
            listed = {
                v: o
                for o in manifests
                if (v := mf.manifest_version(o.key)) is not None and v < manifest.version
            }
            older = sorted(listed, reverse=True)
            retained = [manifest]
            for v in older[: self._keep - 1]:
                retained.append(await self._read_manifest(store, listed[v]))
            dropped = []
            unreadable = False
            for v in older[self._keep - 1 :]:
                try:
                    dropped.append(await self._read_manifest(store, listed[v]))
                except FileNotFoundError:
                    pass  # collected already
                except CorruptCheckpointError:
                    unreadable = True
            junk, dead = mf.unreferenced(retained, dropped, dirs, manifest.version)
            for folder in dead:
                junk += [o.key for o in await store.list_objects(folder)]
            if unreadable:  # what it named is unknown: look at every data object
                everything = (o.key for o in await store.list_objects(mf.DATA))
                junk += mf.garbage(everything, retained, manifest.version)
            junk = sorted(set(junk))
            if junk:
                await store.delete(junk)
                log.debug("removed %d unreferenced objects from %s", len(junk), store.describe())
            # Manifests last: while one is there, what it names is collected again.
            stale = mf.garbage((o.key for o in manifests), retained, manifest.version)
            if stale:
                await store.delete(stale)
            for key, upload_id in unfinished:
                version = mf.data_dir_version(key)
                if version is not None and version <= manifest.version:
                    await store.abort_upload(key, upload_id)
                    log.debug("aborted unfinished upload of %s", store.describe(key))
        except Exception as exc:
            log.warning("could not remove old versions from %s: %s", store.describe(), exc)


def _md5(body: bytes | bytearray) -> str:
    """What S3 reports as the ETag of a plain PUT of ``body``."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def _stream_starts(uploads: list[Upload]) -> list[tuple[BinaryIO, int]] | None:
    """Each stream among ``uploads`` and the position it starts at; None if one cannot
    seek back there."""
    starts = []
    for u in uploads:
        if isinstance(u.source, Path):
            continue
        try:
            if not u.source.seekable():
                return None
            starts.append((u.source, u.source.tell()))
        except (AttributeError, OSError, ValueError):
            return None
    return starts


def _left_above(version: int, dirs: list[str], unfinished: list[tuple[str, str]]) -> bool:
    """Whether a save numbered above ``version`` left data or an open upload behind."""
    keys = [*dirs, *(key for key, _ in unfinished)]
    return any((v := mf.data_dir_version(key)) is not None and v > version for key in keys)


def _manifest_versions(listing: list[ObjectInfo]) -> list[int]:
    return [v for o in listing if (v := mf.manifest_version(o.key)) is not None]


def _conflict(store: Storage, version: int) -> CheckpointError:
    return CheckpointError(
        f"another writer committed version {version} to {store.describe()} while this save"
        " ran; this save was not committed (one writer per checkpoint_dest is supported)"
    )


def _scan(root: Path) -> list[Upload]:
    """What saving ``root`` stores: the file itself, or a folder's files, recursively."""
    if not os.path.lexists(root):
        raise FileNotFoundError(f"checkpoint source does not exist: {root}")
    if not root.is_dir():
        size = _regular_size(root, root)
        return [Upload(root.name, root, size)]
    real_root = os.path.realpath(root)
    seen = {real_root}

    def check_link(path: str) -> str:
        real = os.path.realpath(path)
        if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
            raise ValueError(
                f"symlink {path} points outside {root} (to {real}); only links inside the"
                " saved folder can be saved"
            )
        return real

    out = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        keep = []
        for name in sorted(dirs):
            path = os.path.join(folder, name)
            if name == mf.META or name.startswith(_STAGING):
                continue  # a checkpoint stored inside the folder, or a restore under way
            if os.path.islink(path):
                real = check_link(path)
                if real in seen:
                    continue  # a link back up the tree: its files are saved already
                seen.add(real)
            keep.append(name)
        dirs[:] = keep
        for name in sorted(files):
            path = os.path.join(folder, name)
            if os.path.islink(path):
                check_link(path)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            out.append(Upload(rel, Path(path), _regular_size(Path(path), root)))
    return out


def _regular_size(path: Path, root: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ValueError(f"cannot save {path}: it is a broken symlink") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"cannot save {path}: not a regular file or folder")
    return st.st_size


def _move_into(staging: Path, target: Path, names: list[str]) -> None:
    for name in names:
        final = target / name
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, final)
        except OSError as exc:  # e.g. a folder of the same name is in the way
            raise CheckpointError(f"cannot restore {name} to {final}: {exc}") from exc


def _read_single(folder: Path) -> bytes | None:
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
