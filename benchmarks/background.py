"""Measure background saves (``SyncCheckpoint.start_save``): how long a training loop is
blocked per checkpoint, and what the snapshot costs; write benchmarks/BACKGROUND.md.

    PYTHONPATH=src .venv/bin/python benchmarks/background.py             # ~15 min
    PYTHONPATH=src .venv/bin/python benchmarks/background.py --quick     # a smoke run
    PYTHONPATH=src .venv/bin/python benchmarks/background.py --staging /mnt/xfs/tmp

1. Training loop (S3 server of s3server.py, 20 ms per request; 64 x 8 MiB shards): T is
   a foreground save's time; training_loop.py, a process per loop, runs each mode with T
   and 2 x T of compute between checkpoints; each aiocheckpoint loop's checkpoint is then
   restored and compared with the shards byte for byte (untimed).
2. Snapshot cost per GiB (128 x 8 MiB files in the page cache): start_save to a local
   dest returning, against reading the files into fresh memory, and reading alone, each
   plus CRC-32. ``--staging DIR`` puts the files and the staging folder (TMPDIR) there,
   so that a file system with reflinks (XFS) can clone. BACKGROUND.md says the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from statistics import median
from typing import TypeVar
from unittest.mock import patch

import aiobotocore.session  # noqa: F401  (imported before any timer, as the runners do)
import boto3
import s3server
import venvs
from bench import Failed, difference, timed, write_random
from report import table
from training_loop import touch

import aiocheckpoint
from aiocheckpoint import SyncCheckpoint
from aiocheckpoint._checksum import crc32

HERE = Path(__file__).resolve().parent
BUCKET = "background"
KiB, MiB, GiB = 1024, 1024**2, 1024**3
LATENCY = 20  # ms per request
MODES = ("none", "save", "start_save", "flytekit")
FACTORS = (1, 2)  # compute between checkpoints, in T
BLOCKED_BOUND = 0.25  # start_save blocked per checkpoint / T
TOTAL_BOUND = 1.1  # start_save total / none total, at 2 x T
TIMEOUT = 30 * 60
LABELS = [
    "(a) start_save returning: copy into the staging folder + CRC-32",
    "(b) read into fresh memory (a bytearray per file) + CRC-32",
    "(c) read + CRC-32 only (the floor)",
]
Python = tuple[str, dict[str, str], str]  # interpreter, environment, what it has
T = TypeVar("T")


@dataclass
class Loop:
    blocked: list[float]
    total: float
    sent: int  # bytes of request payloads the server received


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    started: float = field(default_factory=time.monotonic)
    loops: dict[tuple[int, str], list[Loop]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    verified: int = 0
    seconds: dict[str, list[float]] = field(default_factory=dict)  # part 2: s/GiB per kind
    cpu: dict[str, list[float]] = field(default_factory=dict)  # part 2: CPU s/GiB per kind
    staging: list[int] = field(default_factory=list)  # bytes allocated when start_save returned
    left: list[int] = field(default_factory=list)  # files in the staging folder after the save
    rss: list[int] = field(default_factory=list)  # peak RSS growth during start_save

    def say(self, text: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        print(f"[{minutes:3d}:{seconds:02d}] {text}", flush=True)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        print(f"FAILED: {text}", file=sys.stderr, flush=True)

    def blocked(self, factor: int, mode: str) -> list[float]:
        return [x for loop in self.loops.get((factor, mode), []) for x in loop.blocked]

    def totals(self, factor: int, mode: str) -> list[float]:
        return [loop.total for loop in self.loops.get((factor, mode), [])]


def environment(server: s3server.Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update(AWS_CA_BUNDLE=server.ca_bundle, FLYTE_AWS_ENDPOINT=server.endpoint)
    env.update(FLYTE_AWS_ACCESS_KEY_ID="testing", FLYTE_AWS_SECRET_ACCESS_KEY="testing")
    return env


def interpreters(b: Bench, env: dict[str, str]) -> dict[str, Python]:
    """mode -> its python; flytekit's virtualenv is made if need be (--quick: not)."""
    ours = venvs.versions(sys.executable, ["aiocheckpoint", "aiobotocore", "botocore"])
    out = {mode: (sys.executable, env, f"project env: {ours}") for mode in MODES[:3]}
    root = HERE / ".venvs"
    if b.args.quick and not (root / "flytekit" / venvs.MARKER).exists():
        b.say("flytekit: left out, no virtualenv (--quick makes none)")
        return out
    try:
        python = str(venvs.python_for("flytekit", root))
    except (OSError, subprocess.CalledProcessError) as exc:
        b.fail(f"flytekit: its virtualenv could not be made: {exc}")
        return out
    found = venvs.versions(python, venvs.ENVS["flytekit"][1])
    flyte_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    out["flytekit"] = python, flyte_env, f"virtualenv flytekit: {found}"
    return out


def calibrate(b: Bench, server: s3server.Server, shards: Path) -> float:
    """T: the median seconds of a foreground save of the shards, all changed before each."""
    times = []
    with SyncCheckpoint(f"s3://{BUCKET}/calibrate", endpoint_url=server.endpoint) as cp:
        for run in range(3):
            touch(shards, 1_000_000 + run)
            times.append(timed(cp.save, shards))
    b.say(f"T = {median(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)})")
    return median(times)


def run_loop(
    b: Bench, server: s3server.Server, python: Python, mode: str, prefix: str, step: float
) -> Loop:
    """One loop in its process; for aiocheckpoint, then restore and compare (untimed)."""
    shards = b.work / "shards"
    command = [python[0], str(HERE / "training_loop.py"), "--mode", mode, "--folder", str(shards)]
    command += ["--dest", f"s3://{BUCKET}/{prefix}", "--endpoint", server.endpoint]
    command += ["--step", f"{step:.6f}", "--every", "10", "--checkpoints", str(b.args.checkpoints)]
    server.reset()
    try:
        done = subprocess.run(
            command, env=python[1], capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise Failed(f"{prefix}: no answer within {TIMEOUT} s") from exc
    if done.returncode != 0:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])
        raise Failed(f"{prefix} exited with {done.returncode}: {tail}")
    line = json.loads(done.stdout.strip().splitlines()[-1])
    loop = Loop(line["blocked"], line["total"], server.stats()["bytes_in"])
    if mode == "start_save" and len(set(line["versions"]) - {None}) != b.args.checkpoints:
        raise Failed(f"{prefix}: the handles report versions {line['versions']}")
    if mode in ("save", "start_save"):
        target, unused = b.work / "restored", b.work / "unused"
        for folder in (target, unused):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        src = f"s3://{BUCKET}/{prefix}"
        with SyncCheckpoint(unused, src, endpoint_url=server.endpoint) as cp:
            cp.restore(target)
        problem = difference(shards, target)
        if problem is not None:
            raise Failed(f"{prefix}: the restore differs from the shards: {problem}")
        b.verified += 1
    return loop


def training(b: Bench, server: s3server.Server) -> tuple[float, dict[str, str]]:
    """Part 1: T, and the loops of every mode and interval; what each mode ran in."""
    env = environment(server)
    os.environ.update(env)  # for the calibration and the restores in this process
    bucket = boto3.resource("s3", endpoint_url=server.endpoint).Bucket(BUCKET)
    bucket.create()
    pythons = interpreters(b, env)
    modes = [m for m in MODES if m in pythons]
    t = calibrate(b, server, b.work / "shards")
    bucket.objects.all().delete()
    for number in range(b.args.rounds):
        for factor in FACTORS:
            turn = number % len(modes)
            for mode in modes[turn:] + modes[:turn]:
                prefix = f"loop/{factor}T/{mode}/{number}"
                try:
                    loop = run_loop(b, server, pythons[mode], mode, prefix, factor * t / 10)
                except Failed as exc:
                    b.fail(str(exc))
                    continue
                finally:
                    bucket.objects.filter(Prefix=f"{prefix}/").delete()
                b.loops.setdefault((factor, mode), []).append(loop)
                most = f"{max(loop.blocked):.3f}" if loop.blocked else "-"
                b.say(
                    f"round {number + 1} {factor} x T {mode:<10} total {loop.total:6.2f} s, "
                    f"blocked at most {most} s, {loop.sent / MiB:.0f} MiB sent"
                )
    return t, {mode: pythons[mode][2] for mode in modes}


def memory(name: str) -> int:
    """VmRSS (now) or VmHWM (the peak since /proc/self/clear_refs was last reset), bytes."""
    return int(re.findall(rf"{name}:\s+(\d+) kB", Path("/proc/self/status").read_text())[0]) * KiB


def allocated(folder: Path) -> tuple[int, int]:
    """(bytes allocated, files) under ``folder``."""
    paths = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in paths), len(paths)


def clock(fn: Callable[..., T], *args: object) -> tuple[float, float, T]:
    """Wall-clock and CPU seconds (every thread of this process) of ``fn(*args)``, and
    what it returned (freed by the caller, outside the measurement)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def snapshot_run(b: Bench, files: Path, staging: Path, dest: Path) -> tuple[float, float]:
    """(a): ``start_save`` returning; staging space and RSS noted; the save is waited for
    (untimed) before the next run."""
    shutil.rmtree(dest, ignore_errors=True)
    # tempfile reads TMPDIR once, so its cached folder is set too
    with (
        patch.dict(os.environ, TMPDIR=str(staging)),
        patch.object(tempfile, "tempdir", str(staging)),
    ):
        with SyncCheckpoint(dest) as cp:
            before = memory("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM = VmRSS from here
            wall, cpu, handle = clock(cp.start_save, files)
            b.rss.append(memory("VmHWM") - before)
            b.staging.append(allocated(staging)[0])
            handle.wait()
    b.left.append(allocated(staging)[1])
    return wall, cpu


def read_into_memory(paths: list[Path]) -> list[bytearray]:
    """(b): every file in a fresh bytearray, with its CRC-32."""
    held = []
    for path in paths:
        buffer = bytearray(path.stat().st_size)
        with open(path, "rb", buffering=0) as f:
            if f.readinto(buffer) != len(buffer):  # one read(2) reads a file this small
                raise Failed(f"{path}: a short read")
        crc32(buffer)
        held.append(buffer)
    return held


def read_and_crc(paths: list[Path]) -> None:
    """(c): every file read through one buffer, CRC-32 on the way: the floor."""
    with memoryview(bytearray(8 * MiB)) as view:
        for path in paths:
            crc = 0
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(view):
                    crc = crc32(view[:n], crc)


def snapshot_cost(b: Bench) -> str:
    """Part 2; returns where the staging folder was."""
    a = b.args
    base = Path(tempfile.mkdtemp(prefix="aiocheckpoint-bg-", dir=a.staging))
    try:
        files, staging = base / "files", base / "staging"
        staging.mkdir()
        for i in range(a.files):
            write_random(files / f"f{i:03d}.bin", a.file_size)
        paths = sorted(files.iterdir())
        read_and_crc(paths)  # into the page cache
        kinds = {
            "a": lambda: snapshot_run(b, files, staging, base / "dest"),
            "b": lambda: clock(read_into_memory, paths)[:2],
            "c": lambda: clock(read_and_crc, paths)[:2],
        }
        for number in range(a.snapshot_runs):
            for kind in list(kinds)[number % 3 :] + list(kinds)[: number % 3]:
                wall, cpu = kinds[kind]()
                b.seconds.setdefault(kind, []).append(wall * GiB / (a.files * a.file_size))
                b.cpu.setdefault(kind, []).append(cpu * GiB / (a.files * a.file_size))
            each = ", ".join(f"({k}) {b.seconds[k][-1]:.3f}" for k in kinds)
            b.say(f"snapshot run {number + 1}: {each} s/GiB")
        # findmnt names ext4 (stat -f says "ext2/ext3", their shared magic number)
        mount = ["findmnt", "-n", "-o", "FSTYPE", "--target", str(staging)]
        kind = subprocess.run(mount, capture_output=True, text=True).stdout.strip() or "?"
        return f"{'--staging DIR' if a.staging else 'the default temp folder'} ({kind})"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def timing(values: list[float], digits: int = 2) -> list[str]:
    """Median and min–max, or two blanks."""
    if not values:
        return ["", ""]
    return [f"{median(values):.{digits}f}", f"{min(values):.{digits}f}–{max(values):.{digits}f}"]


def header() -> list[str]:
    git = ["git", "-C", str(HERE), "rev-parse", "--short=12", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    return [
        f"`{shlex.join(['python', 'benchmarks/background.py', *sys.argv[1:]])}`, started "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, commit {commit or '?'}",
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
        f"moto {version('moto')} on cheroot {version('cheroot')}, https (s3server.py) at "
        f"{LATENCY} ms per request; load average at the start "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def loop_table(b: Bench, t: float) -> list[str]:
    rows = []
    for factor in FACTORS:
        none = b.totals(factor, "none")
        for mode in MODES:
            loops, blocked, totals = b.loops.get((factor, mode)), [], b.totals(factor, mode)
            if not loops:
                continue
            if mode != "none":
                blocked = b.blocked(factor, mode)
            per = median(loop.sent for loop in loops) / b.args.checkpoints / MiB
            row = [f"{factor} x T", mode, *timing(blocked, 3)]
            row += [f"{median(blocked) / t:.3f}" if blocked else "", *timing(totals)]
            row += [f"{median(totals) / median(none):.2f}" if none else "", f"{per:.0f}"]
            rows.append([*row, len(loops)])
    head = ["interval", "mode", "blocked s / checkpoint", "min–max", "blocked / T", "total s"]
    return table([*head, "min–max", "total / none", "MiB sent", "loops"], rows)


def checks(b: Bench, t: float) -> list[str]:
    out = []
    for factor in FACTORS:
        if blocked := b.blocked(factor, "start_save"):
            value, bound = median(blocked), BLOCKED_BOUND * t
            out.append(
                f"- {'PASS' if value <= bound else 'FAIL'}: start_save blocked per checkpoint "
                f"at {factor} x T: {value:.3f} s <= {BLOCKED_BOUND} x T = {bound:.3f} s"
            )
    for factor in (2, 1):
        ours, none = b.totals(factor, "start_save"), b.totals(factor, "none")
        if ours and none:
            value = median(ours) / median(none)
            verdict = "INFO" if factor == 1 else "PASS" if value <= TOTAL_BOUND else "FAIL"
            limit = " (no bound)" if factor == 1 else f" <= {TOTAL_BOUND}"
            what = f"start_save total / none total at {factor} x T"
            out.append(f"- {verdict}: {what}: {value:.2f}{limit}")
    loops = sum(len(b.loops.get((f, m), [])) for f in FACTORS for m in ("save", "start_save"))
    passed = b.verified == loops > 0 and not b.failures
    out.append(
        f"- {'PASS' if passed else 'FAIL'}: restore check: {b.verified} of {loops} "
        "aiocheckpoint loops restored to their last state byte for byte"
    )
    return out


def render(b: Bench, t: float, ran: dict[str, str], where: str, head: list[str]) -> str:
    a, size = b.args, b.args.files * b.args.file_size
    out = ["# Background saves: start_save", "", *(f"- {line}" for line in head)]
    out += [f"- {mode}: {about}" for mode, about in ran.items()]
    out += [
        f"- {(time.monotonic() - b.started) / 60:.1f} min; load average at the end "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    ]
    if b.failures:
        out += ["", "## FAILURES", "", *(f"- {f}" for f in b.failures)]
    out += ["", "## 1. Training loop", ""]
    out += [
        f"Model state: {a.shards} x {a.shard_size // MiB} MiB random shards; before each "
        "checkpoint every shard gets the step number in its first 8 bytes, so every "
        f"checkpoint uploads all of them. T = {t:.2f} s, the median of 3 foreground "
        f"aiocheckpoint saves of the shards. {a.checkpoints} checkpoints per loop, 10 steps of "
        f"`time.sleep(interval / 10)` between them and after the last; rounds: {a.rounds}, "
        "the mode order rotated. Blocked: seconds inside the save / start_save call, median "
        "and min–max over every checkpoint of every round. Total: the loop's seconds, the "
        "checkpoint's close included (for start_save: the wait for the last save); the "
        "checkpoint object is made before the loop starts. MiB sent: request payloads at "
        "the server, per checkpoint.",
        "",
        *loop_table(b, t),
        "",
        "## 2. Snapshot cost per GiB",
        "",
        f"{a.files} x {a.file_size // MiB} MiB files ({size / GiB:.2f} GiB) in the page cache; "
        f"staging folder: {where}. Seconds per GiB, median and min–max of {a.snapshot_runs} "
        "runs, the order of the three rotated between runs. (b) and (c) run in one thread; "
        "start_save copies in its worker threads. CPU: this process's CPU time, every "
        "thread, over the same span.",
        "",
    ]
    rows = []
    for label, kind in zip(LABELS, "abc", strict=True):
        runs, cpu = b.seconds.get(kind, []), b.cpu.get(kind, [])
        rows.append([label, *timing(runs, 3), *timing(cpu, 3), len(runs)])
    out += table(["measurement", "s / GiB", "min–max", "CPU s / GiB", "min–max", "runs"], rows)
    if b.staging:
        out += [
            "",
            f"- staging disk used when start_save returned: {max(b.staging) / MiB:.1f} MiB "
            f"(most of {len(b.staging)} runs) for {size / MiB:.1f} MiB of files; files left in "
            f"the staging folder once the save ended: {max(b.left)}",
            f"- peak RSS growth of the process during start_save: median "
            f"{median(b.rss) / MiB:.1f} MiB, most {max(b.rss) / MiB:.1f} MiB (VmHWM, reset "
            "before each call, less the RSS before it)",
        ]
    return "\n".join([*out, "", "## Checks", "", *checks(b, t)]) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="4 x 1 MiB shards, 2 checkpoints, one round")
    add("--staging", type=Path, help="folder for part 2's files and staging (TMPDIR)")
    add("--out", type=Path, help="results file (default BACKGROUND.md here; --quick: none)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.shards, args.shard_size = (4, MiB) if quick else (64, 8 * MiB)
    args.checkpoints, args.rounds = (2, 1) if quick else (5, 3)
    args.files, args.file_size, args.snapshot_runs = (8, MiB, 2) if quick else (128, 8 * MiB, 5)
    if args.out is None and not quick:
        args.out = HERE / "BACKGROUND.md"
    return args


def main() -> int:
    args = parse()
    head = header()
    if Path(aiocheckpoint.__file__).resolve().parent != HERE.parent / "src" / "aiocheckpoint":
        print(f"warning: aiocheckpoint imported from {aiocheckpoint.__file__}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="aiocheckpoint-bg-") as name:
        work = Path(name)
        b = Bench(args, work)
        for i in range(args.shards):
            write_random(work / "shards" / f"shard-{i:03d}.bin", args.shard_size)
        with s3server.start(LATENCY, work / "server") as server:
            t, ran = training(b, server)
        text = render(b, t, ran, snapshot_cost(b), head)
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
        print(f"results written to {args.out}")
    if b.failures:
        print(f"{len(b.failures)} FAILURES", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
