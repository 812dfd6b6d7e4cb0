"""A toy training loop that checkpoints every few steps and resumes when rerun.

    python examples/training_loop.py                # trains to step 20, saving every 5
    python examples/training_loop.py --stop-at 7    # dies after step 7, like a preempted job
    python examples/training_loop.py                # resumes from the save at step 5

Needs only aiocheckpoint itself (``pip install .``): checkpoints go to local disk.

The "model" fits y = 3x + 2 by gradient descent. Its state is a few files in a
folder: model.json, trainer.json and logs/loss.csv. Each step draws its data from
a generator seeded by the step number, so a resumed run ends with exactly the
same weights as one that was never interrupted.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from aiocheckpoint import CheckpointNotFoundError, SyncCheckpoint


def fresh_state(run: Path) -> None:
    """Write the state of an untrained model into ``run``."""
    (run / "logs").mkdir(parents=True, exist_ok=True)
    (run / "model.json").write_text(json.dumps({"w": 0.0, "b": 0.0}))
    (run / "trainer.json").write_text(json.dumps({"step": 0, "lr": 0.1}))
    (run / "logs" / "loss.csv").write_text("step,loss\n")


def train_step(run: Path, step: int) -> float:
    """Run one step of gradient descent on a fresh batch; return the batch loss."""
    model = json.loads((run / "model.json").read_text())
    trainer = json.loads((run / "trainer.json").read_text())
    rng = random.Random(step)
    xs = [rng.uniform(-1, 1) for _ in range(32)]
    errors = [model["w"] * x + model["b"] - (3 * x + 2) for x in xs]
    loss = sum(e * e for e in errors) / len(xs)
    grad_w = 2 * sum(e * x for e, x in zip(errors, xs, strict=True)) / len(xs)
    grad_b = 2 * sum(errors) / len(xs)
    model["w"] -= trainer["lr"] * grad_w
    model["b"] -= trainer["lr"] * grad_b
    trainer["step"] = step
    (run / "model.json").write_text(json.dumps(model))
    (run / "trainer.json").write_text(json.dumps(trainer))
    with open(run / "logs" / "loss.csv", "a") as log:
        log.write(f"{step},{loss:.6f}\n")
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoints",
        nargs="?",
        default="checkpoints",
        help="where checkpoints live (default: ./checkpoints)",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--stop-at", type=int, help="stop without saving after this step")
    args = parser.parse_args()

    # The same location is both where we resume from and where we save to.
    with (
        SyncCheckpoint(args.checkpoints, args.checkpoints) as checkpoint,
        tempfile.TemporaryDirectory() as tmp,
    ):
        run = Path(tmp)
        try:
            checkpoint.restore(run)
        except CheckpointNotFoundError:
            pass  # nothing saved there yet
        if not (run / "trainer.json").exists():  # also a folder that exists but is empty
            print(f"no checkpoint in {args.checkpoints}, starting fresh")
            fresh_state(run)
        start = json.loads((run / "trainer.json").read_text())["step"]
        if start:
            print(f"resumed from step {start}")

        for step in range(start + 1, args.steps + 1):
            loss = train_step(run, step)
            print(f"step {step:3d}  loss {loss:.4f}")
            if step % args.save_every == 0 or step == args.steps:
                checkpoint.save(run)
                print(f"step {step:3d}  saved checkpoint")
            if step == args.stop_at:
                print(f"step {step:3d}  stopping early (simulated preemption)")
                return

        model = json.loads((run / "model.json").read_text())
        print(f"done after {args.steps} steps: w={model['w']:.4f} b={model['b']:.4f}")


if __name__ == "__main__":
    main()
