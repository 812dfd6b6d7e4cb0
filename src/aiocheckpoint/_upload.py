"""A save's upload step: store what changed since a version, under a fresh data folder.

:class:`EarlyUpload` does it before the listing of versions is back, as a guess that the
newest version this object knows is still the newest.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
from anyio.abc import TaskGroup

from . import _manifest as mf
from ._checksum import to_text
from ._compact import refill
from ._engine import Download, Engine, Stored, Upload
from ._errors import CorruptCheckpointError
from ._progress import Meter
from ._scan import changed
from .storage import Storage

log = logging.getLogger("aiocheckpoint")


@dataclass(frozen=True)
class Uploaded:
    folder: str  # the data folder, relative to .aiocheckpoint/
    sent: list[Upload]  # what went to the engine, and what it stored for each
    stored: list[Stored]
    kept: list[str]  # names whose content the base version already holds

    def entries(self, old: Mapping[str, mf.FileEntry]) -> dict[str, mf.FileEntry]:
        """The manifest entries of everything this save stores, ``old`` being the base."""
        new = {name: old[name] for name in self.kept}
        for u, done in zip(self.sent, self.stored, strict=True):
            if done.unchanged:
                new[u.name] = old[u.name]
            elif done.pack is None:
                new[u.name] = mf.FileEntry(self.folder + u.name, done.size, to_text(done.crc))
            else:
                pack = self.folder + done.pack.name
                crc = to_text(done.crc)
                new[u.name] = mf.FileEntry(pack, done.size, crc, done.pack.offset)
        return new

    def packs(self) -> dict[str, int]:
        """The packs this save stored, each with its size."""
        return {
            self.folder + done.pack.name: done.pack.pack_size
            for done in self.stored
            if done.pack is not None
        }


def check_key_lengths(store: Storage, items: list[Upload]) -> None:
    """Refuse, before anything is uploaded, a name whose key ``store`` cannot take.

    :raises ValueError: naming the file and the limit.
    """
    room = store.max_key_bytes
    if room is None:
        return
    folder = len(f"{mf.META}/{new_folder(1)}".encode())  # as long until version 10^10
    for u in items:
        size = folder + len(u.name.encode())
        if size > room:
            raise ValueError(
                f"cannot save {u.source if isinstance(u.source, Path) else u.name}: its name"
                f" is {len(u.name.encode())} bytes, and at {store.describe()} a name of at"
                f" most {room - folder} bytes fits in the longest key the store takes"
            )


def new_folder(version: int) -> str:
    return mf.data_dir(version, uuid.uuid4().hex[:12])


async def upload_changes(
    engine: Engine,
    store: Storage,
    folder: str,
    items: list[Upload],
    base: mf.Manifest | None,
    meter: Meter,
) -> Uploaded:
    """Store under ``folder`` the items whose content ``base`` does not hold, and the
    small files whose packs are too empty to keep (see ``_compact``). Unchanged files
    count into ``meter`` as done at once."""
    prefix = f"{mf.META}/{folder}"
    sent, kept = await changed(items, base.files if base else {}, engine.threads)
    config = engine.config
    plan = refill(base, items, sent, kept, config.packed_below, config.pack_bytes) if base else None
    if plan is not None and plan.again:
        log.debug("storing %d unchanged small files again, in new packs", len(plan.again))
        chosen = {u.name: u for u in sent} | {u.name: u for u in items if u.name in plan.again}
        sent = [chosen[u.name] for u in items if u.name in chosen]  # in the order given
        kept = [name for name in kept if name not in plan.again]
    if base is None or plan is None or not plan.copied:
        _begin(meter, items, kept, [])
        return Uploaded(folder, sent, await engine.upload(store, prefix, sent, meter), kept)
    spare = Path(await anyio.to_thread.run_sync(tempfile.mkdtemp, None, "aiocheckpoint-"))
    try:
        copies = await _copy_out(engine, store, base, plan.copied, spare)
        _begin(meter, items, kept, copies)
        sent += copies
        return Uploaded(folder, sent, await engine.upload(store, prefix, sent, meter), kept)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, spare, True)


def _begin(meter: Meter, items: list[Upload], kept: list[str], copies: list[Upload]) -> None:
    """The first event, once the plan is whole: every item and compaction copy in the
    totals, the files the base holds already done."""
    work = [*items, *copies]
    meter.begin(len(work), sum(max(u.size, 0) for u in work))
    sizes = {u.name: max(u.size, 0) for u in items}
    meter.moved(sum(sizes[name] for name in kept), kept[-1] if kept else None, files=len(kept))


async def _copy_out(
    engine: Engine, store: Storage, base: mf.Manifest, names: list[str], spare: Path
) -> list[Upload]:
    """The files ``names`` of ``base``, fetched (and checked) into the folder ``spare``
    to be stored again; none if one cannot be: compaction can wait."""
    files = [(name, base.files[name]) for name in names]
    downloads = [
        Download(f"{mf.META}/{e.object}", name, str(spare / name), e.size, e.crc, e.offset)
        for name, e in files
    ]
    try:
        await engine.download(store, downloads)
    except CorruptCheckpointError as exc:
        log.warning("not compacting packs of %s this time: %s", store.describe(), exc)
        return []
    log.debug("copied %d files out of their packs, to store again", len(files))
    return [Upload(name, spare / name, e.size) for name, e in files]


class EarlyUpload:
    """Uploads a save's files at once, into the folder of the version after ``guess``
    (the newest version this object knows; None: a new checkpoint), leaving out what that
    version holds. The listing then says whether the guess holds: if so, :meth:`result`
    is the upload step; if not, :meth:`abandon` cancels it, and its folder is deleted
    after the commit (a cancelled request may land late). A stream is read again from
    where it started, so a save with one that cannot seek makes no early upload.
    """

    def __init__(
        self,
        engine: Engine,
        store: Storage,
        items: list[Upload],
        guess: mf.Manifest | None,
        starts: list[tuple[BinaryIO, int]],
        meter: Meter,
    ) -> None:
        self.guess = guess
        self._meter = meter
        self.folder = new_folder((guess.version if guess else 0) + 1)
        self._engine = engine
        self._store = store
        self._items = items
        self._starts = starts
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._outcome: Uploaded | Exception | None = None

    def start(self, tg: TaskGroup) -> None:
        tg.start_soon(self._run)

    async def _run(self) -> None:
        try:
            with self._scope:
                self._outcome = await upload_changes(
                    self._engine, self._store, self.folder, self._items, self.guess, self._meter
                )
        except Exception as exc:  # raised only if the guess holds
            self._outcome = exc
        finally:
            self._done.set()

    def holds(self, base: mf.Manifest | None) -> bool:
        """Whether the listed newest version is the one guessed (equal, not only the same
        object: SSE-KMS ETags are not MD5s)."""
        return base == self.guess

    async def result(self) -> Uploaded:
        await self._done.wait()
        if isinstance(self._outcome, Exception):
            raise self._outcome
        assert self._outcome is not None
        return self._outcome

    async def abandon(self) -> None:
        """Cancel the upload and rewind the streams, to be read again."""
        self._scope.cancel()
        await self._done.wait()
        self._meter.again()
        for stream, start in self._starts:
            stream.seek(start)
        log.debug(
            "%s changed since this object last saw it: uploading again",
            self._store.describe(mf.MANIFESTS),
        )
