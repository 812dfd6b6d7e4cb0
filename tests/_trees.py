"""Folders of files in tests: write one, read one back, restore a checkpoint into one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiocheckpoint import AsyncCheckpoint, SyncCheckpoint


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def restore_all(src: str, into: Path, **kwargs: Any) -> dict[str, bytes]:
    """Restore ``src`` with a new checkpoint object (whose own dest stays unused)."""
    into.mkdir()
    async with AsyncCheckpoint(src.rstrip("/") + "-unused", src, **kwargs) as cp:
        restored = await cp.restore(into)
        assert restored is not None
        return read_tree(restored)


def restore_all_sync(src: str, into: Path) -> dict[str, bytes]:
    into.mkdir()
    with SyncCheckpoint(src.rstrip("/") + "-unused", src) as cp:
        restored = cp.restore(into)
        assert restored is not None
        return read_tree(restored)
