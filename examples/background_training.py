"""A training loop that checkpoints in the background: each save uploads while the next
steps run, and a rerun resumes from the newest committed checkpoint.

    python examples/background_training.py                # 20 steps, a checkpoint every 5
    python examples/background_training.py --stop-at 7    # stops after step 7
    python examples/background_training.py                # resumes from step 5

Needs only aiocheckpoint itself (``pip install .``): checkpoints go to
./background_checkpoints on local disk; give an ``s3://bucket/prefix`` to use S3.

The "model" is four shards of 64-bit weights, trained toward a target by gradient steps
whose noise is seeded by the step number, so a resumed run ends with exactly the weights
of one that never stopped. ``start_save`` returns as soon as the shards are snapshotted:
the next step may overwrite them at once. A second ``start_save`` (or leaving the ``with``
block) first waits for the one before, and raises its error if it failed.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from array import array
from pathlib import Path

from aiocheckpoint import CheckpointNotFoundError, PendingSave, SyncCheckpoint

SHARDS = 4
WEIGHTS = 32_768  # per shard: 256 KiB


def load(run: Path) -> tuple[int, list[array]]:
    """The step reached and the weight shards, from ``run`` (fresh ones if it is empty)."""
    if not (run / "trainer.json").exists():
        return 0, [array("d", [0.0]) * WEIGHTS for _ in range(SHARDS)]
    shards = []
    for n in range(SHARDS):
        shard = array("d")
        shard.frombytes((run / f"shard-{n}.bin").read_bytes())
        shards.append(shard)
    return json.loads((run / "trainer.json").read_text())["step"], shards


def store(run: Path, step: int, shards: list[array]) -> None:
    """Write the state to ``run``, overwriting the files in place (as torch.save does)."""
    for n, shard in enumerate(shards):
        with open(run / f"shard-{n}.bin", "wb") as f:
            f.write(shard.tobytes())
    (run / "trainer.json").write_text(json.dumps({"step": step}))


def train_step(shards: list[array], step: int) -> float:
    """One step toward the target weights 1.0, with noise seeded by ``step``; the loss."""
    rng = random.Random(step)
    loss = 0.0
    for shard in shards:
        noise = rng.uniform(-0.01, 0.01)
        for i in range(0, len(shard), 64):  # a strided update keeps the example quick
            error = shard[i] - 1.0
            shard[i] -= 0.1 * error + noise
            loss += error * error
    return loss / (SHARDS * WEIGHTS // 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoints",
        nargs="?",
        default="background_checkpoints",
        help="where checkpoints live (default: ./background_checkpoints)",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--stop-at", type=int, help="stop after this step")
    args = parser.parse_args()

    with (
        SyncCheckpoint(args.checkpoints, args.checkpoints) as checkpoint,
        tempfile.TemporaryDirectory() as tmp,
    ):
        run = Path(tmp)
        try:
            checkpoint.restore(run)
        except CheckpointNotFoundError:
            pass  # nothing committed there yet
        start, shards = load(run)
        print(f"resumed from step {start}" if start else "starting fresh")
        pending: PendingSave | None = None
        step = start
        for step in range(start + 1, args.steps + 1):
            loss = train_step(shards, step)
            print(f"step {step:3d}  loss {loss:.6f}")
            if step % args.save_every == 0 or step == args.steps:
                store(run, step, shards)
                began = time.perf_counter()
                if pending is not None and pending.done() and pending.version:
                    print(f"step {step:3d}  the previous checkpoint is version {pending.version}")
                pending = checkpoint.start_save(run)  # waits for the one before, if running
                blocked = time.perf_counter() - began
                print(f"step {step:3d}  checkpoint started (training blocked {blocked:.3f} s)")
            if step == args.stop_at:
                print(f"step {step:3d}  stopping early")
                break
        # Leaving the block finishes the pending save; wait() here would do the same and
        # raise its error, if any.
    if pending is not None:
        print(f"the last checkpoint is version {pending.version}")
    if step == args.steps:
        trained = shards[0][::64]
        print(f"done after {args.steps} steps: mean weight {sum(trained) / len(trained):.6f}")


if __name__ == "__main__":
    main()
