"""Run each example and the quick benchmark as a user would, and check what they leave behind."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from aiocheckpoint import SyncCheckpoint

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``script`` from the repository in ``cwd``; return its stdout."""
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def without_s3_endpoint() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        env.pop(name, None)
    return env


def read_training_state(location: Path, tmp_path: Path) -> tuple[dict, dict, list[str]]:
    """Restore the training checkpoint at ``location``; return model, trainer and log lines."""
    folder = tmp_path / "inspect"
    folder.mkdir()
    with SyncCheckpoint(location, location) as checkpoint:
        checkpoint.restore(folder)
    model = json.loads((folder / "model.json").read_text())
    trainer = json.loads((folder / "trainer.json").read_text())
    log = (folder / "logs" / "loss.csv").read_text().splitlines()
    return model, trainer, log


def test_training_loop_resumes_after_preemption(tmp_path: Path) -> None:
    first = run("examples/training_loop.py", "--stop-at", "7", cwd=tmp_path)
    assert "starting fresh" in first
    assert "step   5  saved checkpoint" in first
    assert "step   7  stopping early" in first
    assert "done" not in first

    second = run("examples/training_loop.py", cwd=tmp_path)
    assert "resumed from step 5" in second
    assert "step   5" not in second
    assert "step   6  loss" in second
    assert "done after 20 steps" in second

    model, trainer, log = read_training_state(tmp_path / "checkpoints", tmp_path)
    assert trainer["step"] == 20
    # The log was restored with the model, so steps 6 and 7 are not written twice.
    assert [line.split(",")[0] for line in log] == ["step"] + [str(s) for s in range(1, 21)]

    # An interrupted run ends where an uninterrupted one does.
    straight = tmp_path / "straight"
    straight.mkdir()
    run("examples/training_loop.py", "elsewhere", cwd=straight)
    assert read_training_state(straight / "elsewhere", straight)[0] == model


def test_async_pipeline_restores_every_shard(tmp_path: Path) -> None:
    out = run("examples/async_pipeline.py", cwd=tmp_path)
    assert "verified 8 shards" in out

    restored = tmp_path / "restored"
    index = json.loads((restored / "index.json").read_text())
    assert len(index) == 8
    for name, digest in index.items():
        assert hashlib.sha256((restored / name).read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in (restored / "shards").iterdir()) == [
        f"shard-{i:03d}.jsonl" for i in range(8)
    ]


def test_s3_example_round_trips_a_folder(tmp_path: Path) -> None:
    out = run("examples/s3_example.py", cwd=tmp_path, env=without_s3_endpoint())
    assert "started a moto S3 server" in out
    assert "stopped the moto server" in out

    source, restored = tmp_path / "s3_example" / "source", tmp_path / "s3_example" / "restored"
    files = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    assert len(files) == 4
    match, mismatch, errors = filecmp.cmpfiles(source, restored, files, shallow=False)
    assert (mismatch, errors) == ([], [])


def test_benchmark_quick_times_and_verifies_every_tool(tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    out = run(
        "benchmarks/bench.py",
        "--quick",
        "--out",
        str(results),
        cwd=tmp_path,
        env=without_s3_endpoint(),
    )
    assert f"results written to {results}" in out
    text = results.read_text()
    assert "FAILURES" not in text
    assert re.search(r"All \d+ downloads matched their sources byte for byte", text)
    sections = {part.split(" ", 1)[0]: part for part in text.split("\n### ")[1:]}
    assert set(sections) == {"shards", "many-small", "big"}
    for section in sections.values():
        for tool in ("aiocheckpoint Sync", "aiocheckpoint Async", "s3transfer c=32"):
            # a timed row: median upload seconds, then the min-max range
            assert re.search(rf"^\| {tool} \| \d+\.\d\d \| \d", section, re.M), section
    assert "## Targets (issue 3)" in text
    assert re.search(r"SyncCheckpoint \d+\.\d\d ms, AsyncCheckpoint \d+\.\d\d ms", text)
