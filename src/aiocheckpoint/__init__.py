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
from ._progress import Progress
from ._reports import BadFile, FileInfo, Removal, Usage, VerifyReport, VersionFiles, VersionInfo
from ._sync import Checkpoint, SyncCheckpoint

for _public in (
    AsyncPendingSave,
    PendingSave,
    Progress,
    BadFile,
    FileInfo,
    Removal,
    Usage,
    VerifyReport,
    VersionFiles,
    VersionInfo,
    CheckpointClosedError,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StorageError,
):
    _public.__module__ = __name__

del _public

__version__ = "0.1.0"

__all__ = (
    "AsyncCheckpoint",
    "AsyncPendingSave",
    "BadFile",
    "FileInfo",
    "Removal",
    "Usage",
    "VerifyReport",
    "VersionFiles",
    "VersionInfo",
    "Progress",
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
