"""The commit itself: create the manifest exclusively, and learn the outcome even when
the request fails."""

from __future__ import annotations

import io
import logging

import anyio

from . import _manifest as mf
from ._catalog import Catalog
from ._checksum import crc32
from ._collect import discard
from ._errors import CheckpointError
from ._tasks import task_group
from .storage import Storage

log = logging.getLogger("aiocheckpoint")


async def publish(store: Storage, catalog: Catalog, manifest: mf.Manifest, folder: str) -> None:
    """Create the manifest of ``manifest.version``, exclusively; ``folder`` holds the data
    this save wrote.

    Shielded from cancellation: once the data is durable, the outcome must be known,
    committed or not. A failed request may still have landed (a retried PUT then meets
    its own manifest), so on failure look before discarding anything.
    """
    key = mf.manifest_key(manifest.version)
    body = mf.encode(manifest)
    with anyio.CancelScope(shield=True):
        try:
            async with task_group() as tg:
                if store.overlaps_listing:  # for restores, see Catalog.newest
                    tg.start_soon(_copy_to_latest, store, body)
                await store.put_exclusive(key, body)
        except Exception as exc:
            await _recover(store, key, body, folder, manifest.version, exc)
    catalog.remember(store, manifest, body)


async def _copy_to_latest(store: Storage, body: bytes) -> None:
    try:
        await store.put(mf.LATEST, io.BytesIO(body), crc32(body))
    except Exception as exc:  # restores then read the manifest itself
        log.info("could not write %s: %s", store.describe(mf.LATEST), exc)


async def _recover(
    store: Storage, key: str, body: bytes, folder: str, version: int, error: Exception
) -> None:
    """Return if the manifest landed after all; else raise, keeping the data a late
    request might still need unless another writer's manifest is there."""
    try:
        with anyio.fail_after(60):
            current: bytes | bytearray | None = await store.get(key)
    except FileNotFoundError:
        current = None
    except Exception:
        # Unknown outcome: keep the data. If the manifest landed it needs it; if not, the
        # next save collects it.
        raise error from None
    if current == body:
        log.info("commit of %s succeeded although the request failed: %s", key, error)
        return
    if isinstance(error, FileExistsError):  # definitely another writer's
        await discard(store, f"{mf.META}/{folder}")
        raise CheckpointError(
            f"another writer committed version {version} to {store.describe()} while this"
            " save ran; this save was not committed (one writer per checkpoint_dest is"
            " supported)"
        ) from error
    # Not there now, but a request that timed out may still land: keep the data it would
    # need. The next save collects it if it never does.
    raise error
