"""The one async protocol every storage backend implements.

Keys are ``/``-separated and relative to the backend's root (a local folder or an S3
prefix). A missing key raises the built-in ``FileNotFoundError``; every other failure is
raised once as ``StorageError`` with the backend's exception as ``__cause__``.

Besides objects as bytes, a backend moves local files: small ones a batch at a time
(``put_files``, ``get_files``: the local backend copies a batch in one worker-thread call,
S3 reads or writes it in one and sends one request per file) and big ones a range at a
time (``get_into``). So the engine never asks which backend it talks to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str = ""  # S3's ETag without quotes (the MD5 of a plain PUT's body); "" locally


@dataclass(frozen=True, slots=True)
class FileCopy:
    """One small file to store from, or fetch into, a local path."""

    key: str
    path: str
    size: int  # what the file holds (put), what the object should hold (get)


class MultipartUpload(Protocol):
    """One object written in parts, visible only after ``complete()``."""

    async def put_part(self, number: int, offset: int, body: BytesIO, crc: int) -> None:
        """Store part ``number`` (1-based): ``body`` holds the bytes from ``offset`` on."""

    async def complete(self) -> None: ...

    async def abort(self) -> None:
        """Discard the parts. Safe to call after a failure at any point."""


class Storage(Protocol):
    #: True where "nothing under the root" means the root does not exist (S3 prefixes);
    #: False where an empty root is a real, empty folder (local).
    empty_means_missing: bool
    #: True where every request waits a network round trip (S3), so that it pays to do
    #: two things at once: a save uploads while it lists the versions, a restore reads
    #: ``latest.json`` while it lists them. False where a listing costs less than that.
    overlaps_listing: bool
    #: The longest key, in UTF-8 bytes relative to the root, the backend takes (S3: 1,024
    #: bytes less the prefix); None where only each name's length is limited (local).
    max_key_bytes: int | None
    #: True where ``put_exclusive`` is exclusive by construction (local: link(2)); None
    #: where the server decides, and some S3-compatible servers ignore ``If-None-Match``.
    exclusive_create: bool | None
    #: Where requests go, for messages: an endpoint URL, or "local disk".
    endpoint: str

    def describe(self, key: str = "") -> str:
        """A URL naming ``key`` for messages, e.g. ``s3://bucket/prefix/key``."""

    async def put(self, key: str, body: BytesIO, crc: int) -> None:
        """Write a whole object from ``body`` (at position 0); ``crc`` is its CRC-32, which
        the server checks."""

    async def put_exclusive(self, key: str, data: bytes) -> None:
        """Create ``key`` only if it does not exist, else raise ``FileExistsError``."""

    async def put_files(self, files: Sequence[FileCopy]) -> list[int]:
        """Store each local file as its key; returns their CRC-32s.

        :raises CheckpointError: a file no longer holds ``size`` bytes.
        """

    async def start_multipart(self, key: str) -> MultipartUpload: ...

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes | bytearray:
        """Read ``length`` bytes from ``start`` (all of it when ``length`` is None)."""

    async def get_files(self, files: Sequence[FileCopy]) -> list[tuple[int, int] | None]:
        """Write each object to its local path (its folder made if missing): for each,
        (bytes, CRC-32), or None for an object that is missing. An object that holds more
        than ``size`` bytes is not written; its size is all that is returned."""

    async def get_into(
        self, key: str, fd: int, start: int, length: int, *, whole: bool = False, at: int = -1
    ) -> tuple[int, int]:
        """Copy ``length`` bytes of the object from ``start`` into the open file ``fd`` at
        ``at`` (-1: at ``start``), holding a bounded piece at a time: (CRC-32, bytes). With
        ``whole``, the object is expected to end there: more bytes are counted, never
        written.
        """

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
