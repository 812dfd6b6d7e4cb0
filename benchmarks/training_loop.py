"""One training loop of background.py, in a process of its own (flytekit's in its
virtualenv). Each step computes for ``--step`` seconds (``time.sleep``, standing in for GPU
time); after every ``--every`` steps, ``--checkpoints`` times, it checkpoints ``--folder``
to ``--dest`` by ``--mode``:

- ``none``: no checkpoint at all (the baseline);
- ``save``: aiocheckpoint's ``SyncCheckpoint.save``;
- ``start_save``: ``SyncCheckpoint.start_save``, never waited for explicitly: the object
  is closed after the last step, and that wait counts in the total;
- ``flytekit``: ``flytekit.core.checkpointer.SyncCheckpoint(checkpoint_dest=...).save``.

The loop runs ``--every`` more steps after the last checkpoint. Before each checkpoint
(``none`` too) every file in the folder gets the step number in its first 8 bytes, so a
checkpoint uploads every file again. Credentials, the CA bundle and flytekit's FLYTE_AWS_*
settings come from the environment. Prints one JSON line: the seconds spent inside each
checkpoint call, the loop's total seconds (the checkpoint object made before it starts)
and the version each call's handle reports (start_save). Only the standard library is
imported at the top: the mode's library is imported before the timer.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def touch(folder: Path, step: int) -> None:
    """Change every file of ``folder`` in place, cheaply: ``step`` in its first 8 bytes."""
    for path in sorted(folder.iterdir()):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, struct.pack("<Q", step), 0)
        finally:
            os.close(fd)


def checkpointer(args: argparse.Namespace) -> tuple[Callable[[Path], Any], Callable[[], Any]]:
    """The call a checkpoint makes, and the one that ends the loop."""
    if args.mode == "none":
        return lambda folder: None, lambda: None
    if args.mode == "flytekit":
        from flytekit.core.checkpointer import SyncCheckpoint as FlyteCheckpoint

        return FlyteCheckpoint(checkpoint_dest=args.dest).save, lambda: None
    import aiobotocore.session  # noqa: F401  (imported before the timer, as the runners do)

    from aiocheckpoint import SyncCheckpoint

    checkpoint = SyncCheckpoint(args.dest, endpoint_url=args.endpoint)
    return getattr(checkpoint, args.mode), checkpoint.close


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["none", "save", "start_save", "flytekit"])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--dest", required=True, help="s3://bucket/prefix")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--step", type=float, required=True, help="seconds of compute a step")
    parser.add_argument("--every", type=int, default=10, help="steps per checkpoint")
    parser.add_argument("--checkpoints", type=int, default=5)
    args = parser.parse_args()
    save, close = checkpointer(args)
    blocked, returned = [], []
    start = time.perf_counter()
    for step in range(1, args.every * (args.checkpoints + 1) + 1):
        time.sleep(args.step)
        if step % args.every == 0 and step // args.every <= args.checkpoints:
            touch(args.folder, step)
            began = time.perf_counter()
            returned.append(save(args.folder))
            blocked.append(time.perf_counter() - began)
    close()
    total = time.perf_counter() - start
    versions = [getattr(handle, "version", None) for handle in returned]
    print(json.dumps({"blocked": blocked, "total": total, "versions": versions}), flush=True)


if __name__ == "__main__":
    main()
