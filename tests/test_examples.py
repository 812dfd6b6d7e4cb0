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


def test_training_loop_starts_fresh_in_an_empty_checkpoint_folder(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    out = run("examples/training_loop.py", "--steps", "5", cwd=tmp_path)
    assert "starting fresh" in out
    assert "done after 5 steps" in out
    assert read_training_state(tmp_path / "checkpoints", tmp_path)[1]["step"] == 5


def test_background_training_resumes_from_its_last_committed_checkpoint(tmp_path: Path) -> None:
    run("examples/training_loop.py", "--steps", "5", cwd=tmp_path)  # its own folder: no clash
    first = run("examples/background_training.py", "--stop-at", "7", cwd=tmp_path)
    assert "starting fresh" in first
    assert "step   5  checkpoint started" in first
    assert "the last checkpoint is version 1" in first  # leaving the block finished it

    second = run("examples/background_training.py", cwd=tmp_path)
    assert "resumed from step 5" in second
    assert "step   6  loss" in second and "step   5  loss" not in second
    assert "the last checkpoint is version 4" in second
    where = tmp_path / "background_checkpoints"
    with SyncCheckpoint(where, where) as checkpoint:
        restored = checkpoint.restore()
        assert json.loads((restored / "trainer.json").read_text())["step"] == 20

    straight = tmp_path / "straight"
    straight.mkdir()
    done = run("examples/background_training.py", "elsewhere", cwd=straight)
    assert done.splitlines()[-1] == second.splitlines()[-1]  # the same final weights


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


def test_s3_example_says_what_to_install_when_moto_is_missing(tmp_path: Path) -> None:
    script = ROOT / "examples" / "s3_example.py"
    as_if_missing = (
        "import runpy, sys; sys.modules['moto'] = sys.modules['moto.server'] = None;"
        f" sys.argv = ['s3_example.py']; runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", as_if_missing],
        cwd=tmp_path,
        env=without_s3_endpoint(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "pip install boto3 'moto[server]'" in result.stderr
    assert "Traceback" not in result.stderr


def quick(script: str, tmp_path: Path) -> str:
    """Run a benchmark with ``--quick``; the results it wrote. It makes no virtualenv."""
    results = tmp_path / "results.md"
    venvs = ROOT / "benchmarks" / ".venvs"
    had_venvs = venvs.exists()
    out = run(script, "--quick", "--out", str(results), cwd=tmp_path, env=without_s3_endpoint())
    assert f"results written to {results}" in out
    assert had_venvs or not venvs.exists()
    return results.read_text()


def test_benchmark_quick_times_and_verifies_every_tool(tmp_path: Path) -> None:
    text = quick("benchmarks/bench.py", tmp_path)
    assert "FAILED" not in text
    tools = ["aiocheckpoint Sync", "aiocheckpoint Async", "boto3 loop", "s3transfer c=32"]
    for tool in tools:  # the peers need no virtualenv: boto3 and s3transfer come with moto
        assert re.search(rf"^\| {tool} \| `peers/\w+\.py` \| \d* \| project env: ", text, re.M)
    assert not re.search(r"^\| (s3fs|obstore|flytekit) \|", text, re.M)
    workloads = ["one-file", "shards", "many-small", "big", "nested"]
    verified = re.search(r"^(\d+) downloads verified byte for byte", text, re.M)
    assert verified and int(verified[1]) >= len(workloads) * len(tools)
    timed = r"\d+\.\d\d \| \d+\.\d\d–\d+\.\d\d \| \d+\.\d\d"  # median | min–max | / Sync
    for workload in workloads:
        for tool in tools:  # upload, then download
            row = rf"^\| {workload} \| {tool} \| {timed} \| {timed} \|"
            assert re.search(row, text, re.M), (workload, tool)
    assert "| many-small-x10 | 500 |" in text  # ten times the small files
    assert re.search(r"^\| sync \| re-save \| 20 ms \| [\d.]+ \| [\d.]+ \| 0\.00 \|$", text, re.M)
    assert re.search(r"^\| nested \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", text, re.M)  # local
    assert re.search(r"^\| \d+\.\d\d \| \d+\.\d\d \|$", text, re.M)  # tiny write()
    # many tiny files: packed, a few PUTs and GETs; the same on local disk; one changed
    assert re.search(r"^\| sync \| 20 ms \| [\d.]+ \| [\d.]+ \| [1-5] \| [1-5] \|$", text, re.M)
    assert re.search(r"^\| tiny-local \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", text, re.M)
    assert re.search(
        r"^\| sync \| changed small \| 20 ms \| [\d.]+ \| [\d.]+ \| 0\.\d\d \|$", text, re.M
    )


def test_background_benchmark_quick_times_every_mode(tmp_path: Path) -> None:
    venvs = ROOT / "benchmarks" / ".venvs"
    flytekit = (venvs / "flytekit" / "bench-requirements.txt").exists()  # used if it exists
    text = quick("benchmarks/background.py", tmp_path)
    assert "FAILURES" not in text
    blocked = r"\d+\.\d{3} \| \d+\.\d{3}–\d+\.\d{3} \| \d+\.\d{3}"  # median | min–max | / T
    total = r"\d+\.\d\d \| \d+\.\d\d–\d+\.\d\d \| \d+\.\d\d"  # median | min–max | / none
    for interval in ("1 x T", "2 x T"):
        none = rf"^\| {interval} \| none \|  \|  \|  \| {total} \| 0 \| 1 \|$"  # no blocked
        assert re.search(none, text, re.M), interval
        for mode in ["save", "start_save"] + ["flytekit"] * flytekit:
            row = rf"^\| {interval} \| {mode} \| {blocked} \| {total} \| 4 \| 1 \|$"
            assert re.search(row, text, re.M), (interval, mode)
    assert ("| flytekit |" in text) == flytekit
    assert re.search(r"^- PASS: restore check: 4 of 4 aiocheckpoint loops restored", text, re.M)
    for kind in "abc":
        cells = r"\d+\.\d{3} \| \d+\.\d{3}–\d+\.\d{3}"  # median | min–max
        row = rf"^\| \({kind}\) [^|]+ \| {cells} \| {cells} \| 2 \|$"  # seconds, CPU, runs
        assert re.search(row, text, re.M), kind
    assert re.search(r"^- staging disk used when start_save returned: 8\.0 MiB", text, re.M)
    assert "files left in the staging folder once the save ended: 0" in text
