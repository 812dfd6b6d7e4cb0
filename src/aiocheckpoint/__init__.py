"""Crash-safe checkpoints of files, folders and bytes to local disk or S3."""

from ._async import AsyncCheckpoint
from ._config import TransferConfig
from ._errors import (
    CheckpointClosedError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StorageError,
)
from ._sync import Checkpoint, SyncCheckpoint

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
