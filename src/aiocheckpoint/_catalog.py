"""The versions at a location: the listing of manifests, the newest one, and the manifests
this checkpoint object already read or committed."""

from __future__ import annotations

import hashlib
import logging

from . import _manifest as mf
from ._engine import Engine
from ._errors import CheckpointError, CheckpointNotFoundError
from ._tasks import task_group
from .storage import ObjectInfo, Storage

log = logging.getLogger("aiocheckpoint")


def md5(body: bytes | bytearray) -> str:
    """What S3 reports as the ETag of a plain PUT of ``body``."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


class Catalog:
    """Manifests by URL, as this object last read or wrote them: (MD5 of the body, the
    manifest). On S3 a listing's ETag is that MD5, so a manifest seen before costs no
    second read."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._known: dict[str, tuple[str, mf.Manifest]] = {}
        self._exclusive: dict[str, bool] = {}  # by location: does the server honour it?

    def exclusive(self, store: Storage) -> bool | None:
        """Whether an exclusive create at ``store`` is exclusive: by construction, or as
        this object's first commit there found out; None while unknown."""
        if store.exclusive_create is not None:
            return store.exclusive_create
        return self._exclusive.get(store.describe())

    def learn_exclusive(self, store: Storage, honoured: bool) -> None:
        self._exclusive[store.describe()] = honoured

    def remember(self, store: Storage, manifest: mf.Manifest, body: bytes) -> None:
        """A manifest this object just committed."""
        self._known[store.describe(mf.manifest_key(manifest.version))] = (md5(body), manifest)

    def known_newest(self, store: Storage) -> mf.Manifest | None:
        """The newest manifest of ``store`` this object read or committed, if any."""
        prefix = store.describe(mf.MANIFESTS)
        known = [m for url, (_, m) in self._known.items() if url.startswith(prefix)]
        return max(known, key=lambda m: m.version, default=None)

    async def newest(
        self, store: Storage, *, peek: bool = False
    ) -> tuple[mf.Manifest | None, list[ObjectInfo]]:
        """The newest committed manifest (or None), and the listing of ``manifests/`` it
        was found in. Raises FileNotFoundError for a missing local root.

        With ``peek`` and a backend that ``overlaps_listing``, ``latest.json`` is read
        while the listing runs: when it is the listed newest manifest, that manifest costs
        no second request in sequence.
        """
        peeked: bytes | bytearray | None = None
        for _ in range(3):
            if peek and store.overlaps_listing:
                peek = False
                async with task_group() as tg:
                    latest = _Latest(self._engine, store)
                    tg.start_soon(latest.read)
                    listing = await store.list_objects(mf.MANIFESTS)
                peeked = latest.body
            else:
                listing = await store.list_objects(mf.MANIFESTS)
            self._forget_unlisted(store, listing)
            versions = [v for o in listing if (v := mf.manifest_version(o.key)) is not None]
            if not versions:
                return None, listing
            key = mf.manifest_key(max(versions))
            info = next(o for o in listing if o.key == key)
            try:
                return await self.read(store, info, peeked), listing
            except FileNotFoundError:
                peeked = None  # collected by a newer commit meanwhile: list again
        raise CheckpointError(f"manifests at {store.describe()} keep changing; try again")

    def _forget_unlisted(self, store: Storage, listing: list[ObjectInfo]) -> None:
        listed = {store.describe(o.key) for o in listing}
        prefix = store.describe(mf.MANIFESTS)
        for url in [u for u in self._known if u.startswith(prefix) and u not in listed]:
            del self._known[url]  # collected since

    async def version(self, store: Storage, version: int) -> mf.Manifest:
        """The manifest of committed version ``version``.

        :raises CheckpointNotFoundError: there is no such version.
        """
        key = mf.manifest_key(version)
        try:
            return await self.read(store, ObjectInfo(key, 0))
        except FileNotFoundError as exc:
            raise CheckpointNotFoundError(
                f"no version {version} at {store.describe()}: {store.describe(key)} does not exist"
            ) from exc

    async def read(
        self, store: Storage, info: ObjectInfo, peeked: bytes | bytearray | None = None
    ) -> mf.Manifest:
        """A listed manifest. The copy this object read or wrote is used when the listing
        shows that very object (S3: the ETag of a plain PUT is the MD5 of its body), and
        so is ``peeked`` (the body of ``latest.json``) when it is that very object."""
        url = store.describe(info.key)
        known = self._known.get(url)
        if known is not None and info.etag and info.etag == known[0]:
            return known[1]
        if peeked is not None and info.etag and info.etag == md5(peeked):
            body = peeked
        else:
            body = await store.get(info.key)
        manifest = mf.decode(body, url)
        self._known[url] = (md5(body), manifest)
        return manifest


class _Latest:
    """A read of ``latest.json`` that never fails: without it, the manifest is read."""

    def __init__(self, engine: Engine, store: Storage) -> None:
        self._engine = engine
        self._store = store
        self.body: bytes | bytearray | None = None

    async def read(self) -> None:
        try:
            async with self._engine.permit():
                self.body = await self._store.get(mf.LATEST)
        except Exception as exc:  # e.g. written by an older aiocheckpoint: no copy
            log.debug("no usable %s: %s", self._store.describe(mf.LATEST), exc)
