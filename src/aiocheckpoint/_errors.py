"""The errors aiocheckpoint raises.

::

    CheckpointError
     ├── CheckpointNotFoundError   (also FileNotFoundError)
     ├── CorruptCheckpointError
     ├── CheckpointClosedError     (also RuntimeError)
     └── StorageError              (the backend's error is ``__cause__``)

Caller mistakes stay ``ValueError`` / ``TypeError``; a missing input path stays
``FileNotFoundError``.
"""

from __future__ import annotations


class CheckpointError(Exception):
    """Root of every error aiocheckpoint raises about a checkpoint.

    :ivar errors: when several transfers of one operation failed, each one's error; else
        empty. The exception raised is the first of them, or sums up several corrupt ones.
    """

    errors: tuple[BaseException, ...] = ()


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The source checkpoint does not exist (or holds only an interrupted save)."""


class CorruptCheckpointError(CheckpointError):
    """A committed checkpoint does not match its manifest, or the manifest is invalid."""


class CheckpointClosedError(CheckpointError, RuntimeError):
    """The checkpoint object was used after ``close()`` / ``aclose()``."""


class StorageError(CheckpointError):
    """The storage backend failed; the original exception is ``__cause__``."""


class MissingObjectError(CorruptCheckpointError):
    """A manifest names an object that is gone (internal: a restore then retries from the
    newest manifest)."""
