"""What the versions API returns: plain, frozen records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One committed version.

    :ivar version: its number; each save that commits adds one.
    :ivar created: when it was committed (UTC), None if its manifest does not say.
    :ivar files: how many files it holds.
    :ivar bytes: the sum of their sizes.
    """

    version: int
    created: datetime | None
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One file of a version.

    :ivar path: its path in the checkpoint, ``/``-separated.
    :ivar size: its size in bytes.
    :ivar checksum: ``"crc32:"`` and 8 hex digits.
    """

    path: str
    size: int
    checksum: str


@dataclass(frozen=True, slots=True)
class VersionFiles:
    """A version and its files.

    :ivar version: its number.
    :ivar created: when it was committed (UTC), None if its manifest does not say.
    :ivar files: its files, sorted by path.
    """

    version: int
    created: datetime | None
    files: tuple[FileInfo, ...]


@dataclass(frozen=True, slots=True)
class BadFile:
    """A file that failed verification.

    :ivar path: its path in the checkpoint.
    :ivar object: the URL of the object holding it.
    :ivar reason: what is wrong.
    """

    path: str
    object: str
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of reading back every file of a version.

    :ivar version: the version verified.
    :ivar files: files checked.
    :ivar bytes: bytes they hold.
    :ivar bad: each file missing, short or with the wrong checksum, by path.
    """

    version: int
    files: int
    bytes: int
    bad: tuple[BadFile, ...]

    @property
    def ok(self) -> bool:
        """True when every file checked out."""
        return not self.bad


@dataclass(frozen=True, slots=True)
class Removal:
    """What a prune or garbage collection deleted, or with ``dry_run`` would delete.

    :ivar dry_run: True when nothing was deleted.
    :ivar versions: the versions removed.
    :ivar objects: URLs of the objects deleted (manifests included).
    :ivar bytes: what those objects held.
    :ivar uploads: URLs of the unfinished multipart uploads aborted.
    :ivar running: URLs of the data folders of saves numbered from the newest version
        up that no version names, left alone because they may still be running
        (``gc(no_save_running=True)`` collects them).
    """

    dry_run: bool
    versions: tuple[int, ...]
    objects: tuple[str, ...]
    bytes: int
    uploads: tuple[str, ...]
    running: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Storage used by a checkpoint's location (its ``.aiocheckpoint/`` folder).

    :ivar versions: committed versions.
    :ivar newest: the newest version's number.
    :ivar stored_bytes: bytes of every object stored.
    :ivar live_bytes: bytes of the objects the newest version needs, its manifest included.
    :ivar reclaimable_bytes: bytes that ``prune(1)`` and then ``gc()`` would free.
    :ivar objects: objects stored.
    :ivar unfinished_uploads: multipart uploads begun and never finished (their parts are
        stored, and billed, but not listed as objects).
    """

    versions: int
    newest: int
    stored_bytes: int
    live_bytes: int
    reclaimable_bytes: int
    objects: int
    unfinished_uploads: int
