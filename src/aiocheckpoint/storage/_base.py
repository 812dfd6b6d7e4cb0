"""The one async protocol every storage backend implements.

Keys are ``/``-separated and relative to the backend's root (a local folder or an S3
prefix). A missing key raises the built-in ``FileNotFoundError``; every other failure is
raised once as ``StorageError`` with the backend's exception as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from io import BytesIO
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str = ""  # S3's ETag without quotes (the MD5 of a plain PUT's body); "" locally


class MultipartUpload(Protocol):
    """One object written in parts, visible only after ``complete()``."""

    async def put_part(self, number: int, offset: int, body: BytesIO, crc: int) -> None:
        """Store part ``number`` (1-based): ``body`` holds the bytes from ``offset`` on."""

    async def complete(self) -> None: ...

    async def abort(self) -> None:
        """Discard the parts. Safe to call after a failure at any point."""


class ObjectReader(Protocol):
    """The body of one GET, read piece by piece."""

    #: How many bytes the response holds.
    size: int

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer when fewer have arrived); ``b""`` at the end."""


class Storage(Protocol):
    #: True where "nothing under the root" means the root does not exist (S3 prefixes);
    #: False where an empty root is a real, empty folder (local).
    empty_means_missing: bool
    #: True for a :class:`BlockingStorage`.
    blocking: bool

    def describe(self, key: str = "") -> str:
        """A URL naming ``key`` for messages, e.g. ``s3://bucket/prefix/key``."""

    async def put(self, key: str, body: BytesIO, crc: int) -> None:
        """Write a whole object from ``body`` (at position 0); ``crc`` is its CRC-32, which
        the server checks."""

    async def put_exclusive(self, key: str, data: bytes) -> None:
        """Create ``key`` only if it does not exist, else raise ``FileExistsError``."""

    async def start_multipart(self, key: str) -> MultipartUpload: ...

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes | bytearray:
        """Read ``length`` bytes from ``start`` (all of it when ``length`` is None)."""

    def reader(
        self, key: str, start: int = 0, length: int | None = None
    ) -> AbstractAsyncContextManager[ObjectReader]:
        """What :meth:`get` reads, as a stream: for bodies too big to hold at once."""

    async def list_objects(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``.

        :raises FileNotFoundError: the root itself does not exist (local only).
        """

    async def list_dirs(self, prefix: str) -> list[str]:
        """The folders directly under ``prefix`` (which ends in "/"), as keys ending in
        "/"; none when ``prefix`` does not exist."""

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete keys; missing keys are not an error."""

    async def list_uploads(self, prefix: str) -> list[tuple[str, str]]:
        """Multipart uploads begun and never completed or aborted: (key, upload id)."""

    async def abort_upload(self, key: str, upload_id: str) -> None: ...

    async def sync(self) -> None:
        """Make every object written so far durable (before a commit)."""

    async def aclose(self) -> None: ...


class BlockingStorage(Storage, Protocol):
    """A backend whose calls are blocking file I/O, run in worker threads (local).

    ``put_blocking`` and ``get_blocking`` do what ``put`` and ``get`` do, in the calling
    worker thread, so that a small file is read and stored in one thread call;
    ``readinto_blocking`` lets a big one be copied through one reused buffer.
    """

    def put_blocking(self, key: str, body: BytesIO, crc: int) -> None: ...

    def get_blocking(self, key: str, start: int = 0, length: int | None = None) -> bytes: ...

    def readinto_blocking(self, key: str, start: int, view: memoryview) -> int:
        """Fill ``view`` with the bytes from ``start`` on; fewer at the end of the object."""
