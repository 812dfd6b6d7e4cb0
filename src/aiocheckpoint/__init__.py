"""Crash-safe checkpoints of files, folders and bytes to local disk or S3."""

from ._background import AsyncPendingSave
from ._checkpoint import AsyncCheckpoint
from ._config import TransferConfig
from ._errors import (
    CheckpointClosedError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StorageError,
)
from ._pending import PendingSave
from ._sync import Checkpoint, SyncCheckpoint

for _error in (
    AsyncPendingSave,
    PendingSave,
    CheckpointClosedError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StorageError,
):
    _error.__module__ = __name__

del _error

__version__ = "0.1.0"

__all__ = (
    "AsyncCheckpoint",
    "AsyncPendingSave",
    "Checkpoint",
    "CheckpointClosedError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "PendingSave",
    "StorageError",
    "SyncCheckpoint",
    "TransferConfig",
    "__version__",
)
