"""Crash-safe checkpoints of files, folders and bytes to local disk or S3."""

from ._checkpoint import AsyncCheckpoint
from ._config import TransferConfig
from ._errors import (
    CheckpointClosedError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StorageError,
)
from ._sync import Checkpoint, SyncCheckpoint

for _error in (
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
    "Checkpoint",
    "CheckpointClosedError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "StorageError",
    "SyncCheckpoint",
    "TransferConfig",
    "__version__",
)
