"""The folders a checkpoint object restored into: one per version, each downloaded once,
the private ones in a temp folder of the object's own, removed on close."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
from anyio import CapacityLimiter

PathLike = str | os.PathLike[str]
T = TypeVar("T")


class Folders:
    """What ``restore()`` returned for each version (None: the newest)."""

    def __init__(self, private_name: str, threads: CapacityLimiter) -> None:
        self._name = private_name
        self._threads = threads
        self._done: dict[int | None, Path] = {}
        self._tmpdir: Path | None = None

    async def get(
        self,
        path: PathLike | None,
        version: int | None,
        restore: Callable[[Path], Awaitable[None]],
    ) -> Path:
        """The folder of ``version``: the one restored before, or ``path`` (an existing
        folder; None: a private one) once ``restore`` has filled it."""
        if version in self._done:
            return self._done[version]
        if path is not None:
            target = Path(os.fspath(path))
            self._check_unmixed(target, version)
            if not await self._thread(target.is_dir):
                raise ValueError(
                    "Checkpoints can be restored to a directory only."
                    f" {target} is not an existing directory."
                )
            await restore(target)
        else:
            target = await self._private(version, restore)
        self._done[version] = target
        return target

    async def _private(
        self, version: int | None, restore: Callable[[Path], Awaitable[None]]
    ) -> Path:
        made = self._tmpdir is None
        if self._tmpdir is None:
            self._tmpdir = Path(await self._thread(tempfile.mkdtemp, None, "aiocheckpoint-"))
        target = self._tmpdir / (self._name + ("" if version is None else f"-v{version}"))
        try:
            await self._thread(target.mkdir)
            await restore(target)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._thread(shutil.rmtree, self._tmpdir if made else target, True)
            if made:
                self._tmpdir = None
            raise
        return target

    def _check_unmixed(self, target: Path, version: int | None) -> None:
        """Refuse to restore ``version`` into a folder that holds another one."""
        there = [v for v, folder in self._done.items() if folder == target]
        if there:
            held = "the newest version" if there[0] is None else f"version {there[0]}"
            wanted = "the newest version" if version is None else f"version {version}"
            raise ValueError(
                f"{target} already holds {held}, restored by this checkpoint object;"
                f" restore {wanted} into another folder"
            )

    async def remove(self) -> None:
        """Remove the private folders (at close)."""
        if self._tmpdir is not None:
            await self._thread(shutil.rmtree, self._tmpdir, True)
            self._tmpdir = None

    async def _thread(self, func: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)
