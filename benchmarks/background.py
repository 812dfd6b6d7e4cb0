"""Measure background saves (``SyncCheckpoint.start_save``): how long a training loop is
blocked per checkpoint, and what the snapshot costs; write benchmarks/BACKGROUND.md.

    PYTHONPATH=src .venv/bin/python benchmarks/background.py             # ~15 min
    PYTHONPATH=src .venv/bin/python benchmarks/background.py --quick     # a smoke run
    PYTHONPATH=src .venv/bin/python benchmarks/background.py --staging /mnt/xfs/tmp

1. Training loop, on the S3 server of s3server.py at 20 ms per request. The model state is
   64 x 8 MiB random shards in a folder. First T = the median of 3 foreground
   ``SyncCheckpoint.save`` of the shards (every shard changed before each). Then
   training_loop.py runs, a process per loop, in each mode (none, save, start_save,
   flytekit) with T and 2 x T of compute between checkpoints (10 steps of ``time.sleep``),
   5 checkpoints and one more interval after the last, each loop to a fresh prefix; 3
   rounds, the mode order rotated between rounds. After each aiocheckpoint loop (untimed)
   its checkpoint is restored into a fresh folder and compared with the shards byte for
   byte.
2. Snapshot cost per GiB: 128 x 8 MiB files in the page cache; (a) ``start_save`` of them
   to a local dest returning (the copy into the staging folder, CRC-32 on the way); (b)
   reading them into fresh memory, a bytearray per file, plus CRC-32; (c) reading plus
   CRC-32 alone, the floor. 5 runs each, order rotated. With ``--staging DIR`` the files
   and the staging folder (TMPDIR) are under DIR, so a file system that clones (XFS with
   reflink) can.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

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
    seconds: dict[str, list[float]] = field(default_factory=dict)  # part 2, per measurement
    staging: list[int] = field(default_factory=list)  # bytes allocated when start_save returned
    left: list[int] = field(default_factory=list)  # files in the staging folder after the save
    rss: list[int] = field(default_factory=list)  # peak RSS growth during start_save

    def say(self, text: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        print(f"[{minutes:3d}:{seconds:02d}] {text}", flush=True)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        print(f"FAILED: {text}", file=sys.stderr, flush=True)


def environment(server: s3server.Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update(AWS_CA_BUNDLE=server.ca_bundle, FLYTE_AWS_ENDPOINT=server.endpoint)
    env.update(FLYTE_AWS_ACCESS_KEY_ID="testing", FLYTE_AWS_SECRET_ACCESS_KEY="testing")
    return env


def interpreters(b: Bench, env: dict[str, str]) -> dict[str, tuple[str, dict[str, str], str]]:
    """mode -> (python, environment, what it runs); flytekit's virtualenv is made if need
    be, but --quick only uses one that exists."""
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
    """T: the median seconds of a foreground save of the shards, each changed before."""
    times = []
    with SyncCheckpoint(f"s3://{BUCKET}/calibrate", endpoint_url=server.endpoint) as cp:
        for run in range(3):
            touch(shards, 1_000_000 + run)
            times.append(timed(cp.save, shards))
    b.say(f"T = {statistics.median(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)})")
    return statistics.median(times)


def run_loop(
    b: Bench, server: s3server.Server, how: tuple[str, dict[str, str], str], mode: str,
    prefix: str, shards: Path, step: float,
) -> Loop:  # fmt: skip
    python, env, _ = how
    command = [python, str(HERE / "training_loop.py"), "--mode", mode, "--folder", str(shards)]
    command += ["--dest", f"s3://{BUCKET}/{prefix}", "--endpoint", server.endpoint]
    command += ["--step", f"{step:.6f}", "--every", "10", "--checkpoints", str(b.args.checkpoints)]
    server.reset()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise Failed(f"{mode}: no answer within {TIMEOUT} s") from exc
    if done.returncode != 0:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])
        raise Failed(f"{mode} exited with {done.returncode}: {tail}")
    line = json.loads(done.stdout.strip().splitlines()[-1])
    loop = Loop(line["blocked"], line["total"], server.stats()["bytes_in"])
    if mode == "start_save" and len(set(line["versions"]) - {None}) != b.args.checkpoints:
        raise Failed(f"{prefix}: the handles report versions {line['versions']}")
    if mode in ("save", "start_save"):  # untimed: the checkpoint holds the last state
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


def training(b: Bench, server: s3server.Server, shards: Path) -> tuple[float, dict[str, str]]:
    """Part 1: T, and the loops of every mode and interval; what each mode ran in."""
    env = environment(server)
    os.environ.update(env)  # for the calibration and the restores in this process
    bucket = boto3.resource("s3", endpoint_url=server.endpoint).Bucket(BUCKET)
    bucket.create()
    pythons = interpreters(b, env)
    modes = [m for m in MODES if m in pythons]
    t = calibrate(b, server, shards)
    bucket.objects.all().delete()
    for number in range(b.args.rounds):
        for factor in FACTORS:
            turn = number % len(modes)
            for mode in modes[turn:] + modes[:turn]:
                prefix = f"loop/{factor}T/{mode}/{number}"
                try:
                    loop = run_loop(b, server, pythons[mode], mode, prefix, shards, factor * t / 10)
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


def timing(values: list[float], digits: int = 2) -> list[str]:
    """Median and min–max, or two blanks."""
    if not values:
        return ["", ""]
    low, mid, high = min(values), statistics.median(values), max(values)
    return [f"{mid:.{digits}f}", f"{low:.{digits}f}–{high:.{digits}f}"]


def reset_peak() -> bool:
    """Reset the process's peak RSS (VmHWM); False where Linux does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """VmHWM: the peak RSS since the last reset_peak(), in bytes."""
    found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(found[1]) * KiB if found else 0


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def allocated(folder: Path) -> tuple[int, int]:
    """(bytes allocated, files) under ``folder``."""
    paths = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in paths), len(paths)


def snapshot_run(b: Bench, files: Path, staging: Path, dest: Path) -> float:
    """(a): seconds of ``start_save`` returning; staging space and RSS noted; the save
    is waited for (untimed) before the next run."""
    shutil.rmtree(dest, ignore_errors=True)
    old, old_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = str(staging)  # the library asks tempfile
    try:
        with SyncCheckpoint(dest) as cp:
            before, exact = rss(), reset_peak()
            start = time.perf_counter()
            handle = cp.start_save(files)
            seconds = time.perf_counter() - start
            b.rss.append((peak_rss() if exact else rss()) - before)
            b.staging.append(allocated(staging)[0])
            handle.wait()
        b.left.append(allocated(staging)[1])
    finally:
        tempfile.tempdir = old
        if old_env is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = old_env
    return seconds


def read_into_memory(paths: list[Path]) -> list[bytearray]:
    """(b): every file in a fresh bytearray, with its CRC-32."""
    held = []
    for path in paths:
        buffer = bytearray(path.stat().st_size)
        with open(path, "rb", buffering=0) as f, memoryview(buffer) as view:
            got = 0
            while got < len(view) and (n := f.readinto(view[got:])):
                got += n
        crc32(buffer)
        held.append(buffer)
    return held


def read_and_crc(paths: list[Path]) -> None:
    """(c): read every file through one buffer, CRC-32 on the way: the floor."""
    with memoryview(bytearray(8 * MiB)) as view:
        for path in paths:
            crc = 0
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(view):
                    crc = crc32(view[:n], crc)


def snapshot_cost(b: Bench) -> tuple[str, int]:
    """Part 2; returns where the staging folder was, and the bytes of the files."""
    count, size = (8, MiB) if b.args.quick else (128, 8 * MiB)
    base = Path(tempfile.mkdtemp(prefix="aiocheckpoint-bg-", dir=b.args.staging))
    try:
        files, staging = base / "files", base / "staging"
        staging.mkdir()
        for i in range(count):
            write_random(files / f"f{i:03d}.bin", size)
        paths = sorted(files.iterdir())
        read_and_crc(paths)  # into the page cache
        kinds = {
            "a": lambda: snapshot_run(b, files, staging, base / "dest"),
            "b": lambda: timed(read_into_memory, paths),
            "c": lambda: timed(read_and_crc, paths),
        }
        for number in range(b.args.snapshot_runs):
            order = list(kinds)[number % 3 :] + list(kinds)[: number % 3]
            for kind in order:
                seconds = kinds[kind]()
                b.seconds.setdefault(kind, []).append(seconds / (count * size / GiB))
            b.say(f"snapshot run {number + 1}: " + ", ".join(
                f"({k}) {b.seconds[k][-1]:.3f} s/GiB" for k in kinds))  # fmt: skip
        kind = subprocess.run(["stat", "-f", "-c", "%T", str(staging)], capture_output=True, text=True)
        where = "--staging DIR" if b.args.staging else "the default temp folder"
        return f"{where}, file system {kind.stdout.strip() or '?'}", count * size
    finally:
        shutil.rmtree(base, ignore_errors=True)


def header(args: argparse.Namespace) -> list[str]:
    git = ["git", "-C", str(HERE), "rev-parse", "--short=12", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    return [
        f"`{shlex.join(['python', 'benchmarks/background.py', *sys.argv[1:]])}`, started "
        f"{started}, commit {commit or '?'}",
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
        f"moto {version('moto')} on cheroot {version('cheroot')}, https (s3server.py) at "
        f"{LATENCY} ms per request; load average at the start "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def render(b: Bench, t: float, ran: dict[str, str], where: str, size: int, head: list[str]) -> str:
    a = b.args
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
        f"checkpoint every shard gets the step number in its first 8 bytes (so every "
        f"checkpoint uploads all of them). T = {t:.2f} s, the median of 3 foreground "
        f"aiocheckpoint saves of the shards. {a.checkpoints} checkpoints per loop, 10 steps of "
        f"`time.sleep(interval / 10)` between them and after the last; rounds: {a.rounds}, "
        "the mode order rotated. Blocked: the seconds inside the save / start_save call, median "
        "and min–max over every checkpoint of every round. Total: the loop's seconds, "
        "closing the checkpoint included (for start_save, the wait for the last save); the "
        "checkpoint object is made before the loop starts. MiB sent: request payloads at "
        "the server, per checkpoint.",
        "",
    ]
    rows, none = [], {f: b.loops.get((f, "none"), []) for f in FACTORS}
    for factor in FACTORS:
        for mode in MODES:
            loops = b.loops.get((factor, mode))
            if not loops:
                continue
            blocked = [x for loop in loops for x in loop.blocked] if mode != "none" else []
            totals = [loop.total for loop in loops]
            base = [loop.total for loop in none[factor]]
            per = statistics.median(loop.sent for loop in loops) / a.checkpoints / MiB
            rows.append([
                f"{factor} x T", mode, *timing(blocked, 3),
                f"{statistics.median(blocked) / t:.3f}" if blocked else "",
                *timing(totals),
                f"{statistics.median(totals) / statistics.median(base):.2f}" if base else "",
                f"{per:.0f}", len(loops),
            ])  # fmt: skip
    head = ["interval", "mode", "blocked s / checkpoint", "min–max", "blocked / T"]
    out += table([*head, "total s", "min–max", "total / none", "MiB sent", "loops"], rows)
    out += ["", "## 2. Snapshot cost per GiB", ""]
    out += [
        f"{size // (a.snapshot_size)} x {a.snapshot_size // MiB} MiB files "
        f"({size / GiB:.2f} GiB) in the page cache; staging folder: {where}. Seconds per GiB, "
        f"median and min–max of {a.snapshot_runs} runs; the three measurements' order rotated "
        "between runs. (b) and (c) run in one thread.",
        "",
    ]
    labels = {
        "a": "(a) start_save returning: copy into the staging folder + CRC-32",
        "b": "(b) read into fresh memory (a bytearray per file) + CRC-32",
        "c": "(c) read + CRC-32 only (the floor)",
    }
    rows = [[label, *timing(b.seconds.get(k, []), 3), len(b.seconds.get(k, []))]
            for k, label in labels.items()]  # fmt: skip
    out += table(["measurement", "s / GiB", "min–max", "runs"], rows)
    if b.staging:
        out += [
            "",
            f"- staging disk used when start_save returned: {max(b.staging) / MiB:.1f} MiB "
            f"(most of {len(b.staging)} runs) for {size / MiB:.1f} MiB of files; files left in "
            f"the staging folder once the save ended: {max(b.left)}",
            f"- peak RSS growth of the process during start_save: median "
            f"{statistics.median(b.rss) / MiB:.1f} MiB, most {max(b.rss) / MiB:.1f} MiB "
            "(VmHWM, reset before each call, less RSS before it)",
        ]
    out += ["", "## Checks", ""]
    for factor in FACTORS:
        blocked = [x for loop in b.loops.get((factor, "start_save"), []) for x in loop.blocked]
        if blocked:
            value, bound = statistics.median(blocked), BLOCKED_BOUND * t
            out.append(
                f"- {'PASS' if value <= bound else 'FAIL'}: start_save blocked per checkpoint "
                f"at {factor} x T: {value:.3f} s <= {BLOCKED_BOUND} x T = {bound:.3f} s"
            )
    for factor in sorted(FACTORS, reverse=True):
        ours, base = b.loops.get((factor, "start_save")), none[factor]
        if ours and base:
            value = statistics.median(x.total for x in ours) / statistics.median(
                x.total for x in base)  # fmt: skip
            verdict = ("PASS" if value <= TOTAL_BOUND else "FAIL") if factor == 2 else "INFO"
            bound = f" <= {TOTAL_BOUND}" if factor == 2 else " (no bound)"
            out.append(f"- {verdict}: start_save total / none total at {factor} x T: "
                       f"{value:.2f}{bound}")  # fmt: skip
    loops = sum(len(b.loops.get((f, m), [])) for f in FACTORS for m in ("save", "start_save"))
    restore = "PASS" if b.verified == loops and loops and not b.failures else "FAIL"
    out.append(f"- {restore}: restore check: {b.verified} of {loops} aiocheckpoint loops "
               "restored to their last state byte for byte")  # fmt: skip
    return "\n".join(out) + "\n"


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
    args.snapshot_size, args.snapshot_runs = (MiB, 2) if quick else (8 * MiB, 5)
    if args.out is None and not quick:
        args.out = HERE / "BACKGROUND.md"
    return args


def main() -> int:
    args = parse()
    head = header(args)
    if Path(aiocheckpoint.__file__).resolve().parent != HERE.parent / "src" / "aiocheckpoint":
        print(f"warning: aiocheckpoint imported from {aiocheckpoint.__file__}", file=sys.stderr)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aiocheckpoint-bg-")))
        b = Bench(args, work)
        shards = work / "shards"
        for i in range(args.shards):
            write_random(shards / f"shard-{i:03d}.bin", args.shard_size)
        with s3server.start(LATENCY, work / "server") as server:
            t, ran = training(b, server, shards)
        where, size = snapshot_cost(b)
        text = render(b, t, ran, where, size, head)
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
