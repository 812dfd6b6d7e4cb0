"""Time aiocheckpoint against the tools a user would pick instead, and against a previous
version of itself, on a local S3 server; write plain tables to benchmarks/RESULTS.md, and
draw them (chart.py, if matplotlib is installed) into docs/img/benchmark.svg.

    .venv/bin/python benchmarks/bench.py                      # every tool, every workload
    .venv/bin/python benchmarks/bench.py --quick              # a small smoke run (the tests)
    .venv/bin/python benchmarks/bench.py --tools sync,base --base ebd67a9 --out /tmp/vs.md

The chart goes next to the committed one only with the committed results: with ``--out
/tmp/vs.md`` it is /tmp/vs.svg, and ``--chart PATH`` puts it anywhere.

The server is s3server.py. Each tool is a runner script in peers/ (protocol: _runner.py) in
a process of its own: peers in virtualenvs made on first use under benchmarks/.venvs
(venvs.py); aiocheckpoint and limit with the project's interpreter, and base too, with the
src of a git worktree of ``--base REF`` (made in a temporary folder) first on PYTHONPATH.
An aiocheckpoint run that imported another copy of it than its own fails. ``--quick`` and
``--no-venvs`` make no virtualenv: they run the peers the project's environment imports.

A cell (latency, workload, tool): upload to a fresh prefix, download to a fresh folder,
compare every file byte for byte, empty the bucket; ``--repeat`` rounds, the tool order
rotated between rounds so drift hits every tool alike. A cell whose first run takes over
``--slow`` s runs once, and its tool skips that workload at higher latencies. Then, for Sync
and base: incremental saves at each latency, ten times the small files at the highest; for
Sync in this process: local storage against ``cp -r`` plus fsyncs, and a tiny ``write()``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import boto3
import report
import s3server
import venvs
from report import BASE, SYNC, Cell, Op, Results, Tool, Workload

import aiocheckpoint
from aiocheckpoint import AsyncCheckpoint, SyncCheckpoint, TransferConfig

# The targets, and the only place they are written: key -> (bound, what is measured).
# report.checks measures each for Sync (the current version) wherever it applies, in every
# workload but one-file (which shows the fixed cost of a run); a check fails above its bound.
TARGETS = {
    "peer": (1.10, "Sync / the best peer or limit, medians"),
    "async": (1.05, "Sync / Async, medians"),
    "flytekit": (1 / 1.3, "Sync / flytekit, medians, many-small and big"),
    "rounds": (1.2, "many-small at 100 ms / (ceil(files / 64) x 0.1 s + limit at 0 ms)"),
    "memory": (576, "big, Sync and Async: peak RSS over idle, MiB (64 x 8 MiB + 64 MiB)"),
    "scaling": (1.2, "RSS over idle: ten times the small files / many-small"),
    "resave": (0.1, "unchanged many-small: re-save / first save"),
    "changed": (2, "one of the shards changed: bytes sent / one shard"),
    "head": (0.01, "many-small restore: HEAD requests / files"),
    "local": (2, "local save or restore / cp -r + fsync"),
    "packs-small": (1 / 3, "many-small: Sync / obstore, medians"),
    "packs-nested": (1 / 1.5, "nested: Sync / obstore, medians"),
    "tiny-seconds": (3, "10,000 x 1 KiB at 20 ms: Sync save or restore, median seconds"),
    "tiny-puts": (20, "10,000 x 1 KiB at 20 ms: PUT requests of a Sync save"),
    "local-tiny": (1, "100,000 x 100 B on local disk: save / cp -r + fsync"),
    "changed-small": (1, "one small file of nested changed: bytes sent again / pack_size"),
}

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "docs" / "img" / "benchmark.svg"  # drawn from RESULTS.md here
BUCKET = "bench"
KiB, MiB = 1024, 1024**2
TIMEOUT = 30 * 60  # seconds for one runner
PROJECT = ["aiocheckpoint", "anyio", "aiobotocore", "botocore", "aiohttp"]
TOOLS = [
    Tool(SYNC, "aiocheckpoint Sync", "aiocheckpoint_sync", None),
    Tool("async", "aiocheckpoint Async", "aiocheckpoint_async", None),
    Tool(BASE, "aiocheckpoint base", "aiocheckpoint_sync", None),
    Tool("boto3-loop", "boto3 loop", "boto3_loop", "boto3"),
    Tool("s3transfer-10", "s3transfer c=10", "s3transfer_manager", "boto3", 10),
    Tool("s3transfer-32", "s3transfer c=32", "s3transfer_manager", "boto3", 32),
    Tool("s3fs", "s3fs", "s3fs_put_get", "s3fs"),
    Tool("obstore", "obstore", "obstore_async", "obstore"),
    Tool("flytekit", "flytekit", "flytekit_checkpoint", "flytekit"),
    Tool("limit", "limit", "limit", None),
]
WORKLOADS = ("one-file", "shards", "many-small", "big", "nested")


class Failed(Exception):
    """A runner failed or a download differs from its source."""


def layout(name: str, quick: bool) -> tuple[list[tuple[str, int]], str]:
    """The (relative path, size) of every file of a workload, and how it is made."""
    if name == "one-file":
        return [("one.bin", KiB)], "1 KiB: the fixed cost of a run"
    if name == "shards":
        count, size = (8, 256 * KiB) if quick else (64, 8 * MiB)
        return [(f"shard-{i:03d}.bin", size) for i in range(count)], f"{count} x {size} bytes"
    if name == "tiny":
        count = 200 if quick else 10_000
        files = [(f"d{i % 10}/t{i:05d}.bin", KiB) for i in range(count)]
        return files, f"{count} x 1 KiB in 10 folders (S3 at 20 ms, Sync and base only)"
    if name == "tiny-local":
        count = 1000 if quick else 100_000
        files = [(f"d{i % 100}/t{i:06d}.bin", 100) for i in range(count)]
        return files, f"{count} x 100 B in 100 folders (local disk only)"
    if name.startswith("many-small"):
        count, size = (50, 16 * KiB) if quick else (500, 64 * KiB)
        count *= 10 if name.endswith("x10") else 1
        files = [(f"part-{i % 5}/file-{i:04d}.bin", size) for i in range(count)]
        return files, f"{count} x {size} bytes in 5 folders"
    if name == "big":
        size = 12 * MiB if quick else 512 * MiB
        return [("model.bin", size)], f"1 x {size} bytes"
    # nested, skewed like a real checkpoint: 1 KiB x (high / 1 KiB)^(u^3), u uniform in [0, 1)
    count, folders, high = (100, 10, 256 * KiB) if quick else (2000, 50, 4 * MiB)
    rng = random.Random(3)
    sizes = [int(KiB * (high / KiB) ** (rng.random() ** 3)) for _ in range(count)]
    files = [(f"d{i % 5}/sub{i % folders:02d}/f{i:04d}.bin", s) for i, s in enumerate(sizes)]
    return files, f"{count} files in {folders} folders, 1 KiB x {high // KiB}^(u^3), seed 3"


def linked(source: Path, target: Path, folders: dict[str, Path]) -> None:
    """``target``: hard links to the files of ``source``, but its smallest one rewritten."""
    files = sorted((p for p in source.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    for path in files[1:]:
        (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target / path.relative_to(source))
    write_random(target / files[0].relative_to(source), files[0].stat().st_size)
    folders[target.name] = target


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for start in range(0, size, 8 * MiB):
            f.write(os.urandom(min(8 * MiB, size - start)))


def make_workload(root: Path, name: str, quick: bool) -> tuple[Workload, Path]:
    files, about = layout(name, quick)
    for path, size in files:
        write_random(root / name / path, size)
    return Workload(name, len(files), sum(size for _, size in files), about), root / name


def difference(source: Path, target: Path) -> str | None:
    """None if ``target`` holds exactly the files of ``source``, byte for byte."""
    want, got = (
        {p.relative_to(d): p for p in d.rglob("*") if p.is_file()} for d in (source, target)
    )
    if want.keys() != got.keys():
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        return f"{len(missing)} files missing {missing[:3]}, {len(extra)} extra {extra[:3]}"
    for name, path in want.items():
        with open(path, "rb") as a, open(got[name], "rb") as b:
            while chunk := a.read(8 * MiB):
                if chunk != b.read(len(chunk)):
                    return f"{name}: bytes differ"
            if b.read(1):
                return f"{name}: longer than its source"
    return None


def op(line: dict[str, Any], stats: dict[str, Any], key: str = "seconds") -> Op:
    return Op(line[key], line["peak_rss"] - line["idle_rss"], stats)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, server: s3server.Server) -> None:
        self.args, self.work, self.server = args, work, server
        self.started = time.monotonic()
        self.folders: dict[str, Path] = {}
        self.pythons: dict[str, tuple[str, dict[str, str]]] = {}  # tool -> interpreter, env
        self.imports: dict[str, Path] = {}  # tool -> the aiocheckpoint package it must import
        self.too_slow: set[tuple[str, str]] = set()  # (workload, tool) skipped from now on
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_"))}
        self.env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        self.env.update(AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        self.env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        s3 = boto3.Session("testing", "testing", region_name="us-east-1").resource(
            "s3", endpoint_url=server.endpoint, verify=server.ca_bundle
        )
        self.bucket = s3.Bucket(BUCKET)
        self.bucket.create()
        command = shlex.join(["python", "benchmarks/bench.py", *sys.argv[1:]])
        started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        self.results = Results(command, started, setup_lines(args), args.latencies)
        self.results.max_concurrency = TransferConfig().max_concurrency

    def say(self, text: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        print(f"[{minutes:3d}:{seconds:02d}] {text}", flush=True)

    def fail(self, message: str) -> None:
        self.results.failures.append(message)
        print(f"FAILED: {message}", file=sys.stderr, flush=True)

    def fresh(self, name: str) -> Path:
        path = self.work / "scratch" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def prepare(self, tools: list[Tool], base: tuple[Path, str] | None) -> None:
        """Find (or make) each tool's interpreter; a tool that has none is left out."""
        for tool in tools:
            python, env, where = sys.executable, self.env, "project env"
            if tool.key == BASE and base is not None:
                env = {**self.env, "PYTHONPATH": str(base[0])}
                where = f"project env, src of {base[1]}"
            elif tool.env is not None and self.args.no_venvs:
                if importlib.util.find_spec(tool.env) is None:
                    self.say(f"{tool.name}: left out, the project's env lacks {tool.env}")
                    continue
            elif tool.env is not None:
                try:
                    python = str(venvs.python_for(tool.env, HERE / ".venvs"))
                except (OSError, subprocess.CalledProcessError) as exc:
                    self.fail(f"{tool.name}: its virtualenv could not be made: {exc}")
                    continue
                where = f"virtualenv {tool.env}"
            self.pythons[tool.key] = python, env
            found = venvs.versions(python, PROJECT if tool.env is None else venvs.ENVS[tool.env][1])
            self.results.versions[tool.key] = f"{where}: {found}"
            if tool.key in (SYNC, "async"):
                self.imports[tool.key] = Path(aiocheckpoint.__file__).parent
            elif tool.key == BASE and base is not None:
                self.imports[tool.key] = base[0] / "aiocheckpoint"
            self.results.tools.append(tool)

    def run(
        self, tool: Tool, verb: str, prefix: str, folder: Path, *extra: str, script: str = ""
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run ``tool``'s runner once: its JSON line and the server's counters."""
        python, env = self.pythons[tool.key]
        command = [python, str(HERE / "peers" / f"{script or tool.script}.py"), verb]
        command += ["--endpoint", self.server.endpoint, "--ca-bundle", self.server.ca_bundle]
        command += ["--bucket", BUCKET, "--prefix", prefix, "--folder", str(folder), *extra]
        if tool.concurrency:
            command += ["--concurrency", str(tool.concurrency)]
        self.server.reset()
        try:
            done = subprocess.run(
                command, env=env, cwd=self.work, capture_output=True, text=True, timeout=TIMEOUT
            )
        except subprocess.TimeoutExpired as exc:
            raise Failed(f"{tool.name} {verb}: no answer within {TIMEOUT} s") from exc
        if done.returncode != 0:
            tail = " / ".join(done.stderr.strip().splitlines()[-3:])
            raise Failed(f"{tool.name} {verb} exited with {done.returncode}: {tail}")
        line = json.loads(done.stdout.strip().splitlines()[-1])
        want = self.imports.get(tool.key)
        if want is not None and Path(line.get("aiocheckpoint", "")).parent != want:
            raise Failed(f"{tool.name} imported {line.get('aiocheckpoint')}, not {want}")
        return line, self.server.stats()

    def round_trip(
        self, tool: Tool, prefix: str, source: Path, then: Path | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], Op]:
        """Upload ``source`` (then ``then`` over it, by the same checkpoint), download into a
        fresh folder, verify, empty the bucket: the upload's line and counters, the download."""
        target = self.fresh("download")
        more = ("--then", str(then)) if then else ()
        try:
            script = "aiocheckpoint_twice" if then else ""
            line, stats = self.run(tool, "upload", prefix, source, *more, script=script)
            down = op(*self.run(tool, "download", prefix, target))
            problem = difference(then or source, target)
            if problem is not None:
                raise Failed(f"{tool.name}, {prefix}: the download differs: {problem}")
            self.results.verified += 1
        finally:
            shutil.rmtree(target)
            self.bucket.objects.all().delete()
            for upload in self.bucket.multipart_uploads.all():
                upload.abort()
        return line, stats, down

    def grid(self, latency: float, workload: Workload) -> None:
        """Every tool's cell of ``workload`` at ``latency``, in rounds."""
        cells, tools, slow = self.results.cells, self.results.tools, self.args.slow
        for tool in tools:
            cell = cells.setdefault((latency, workload.name, tool.key), Cell())
            if (workload.name, tool.key) in self.too_slow:
                cell.error = f"skipped: over {slow:g} s at a lower latency"
        for number in range(self.args.repeat):
            for tool in tools[number % len(tools) :] + tools[: number % len(tools)]:
                cell = cells[latency, workload.name, tool.key]
                if cell.error or cell.first_seconds() > slow:
                    continue
                prefix = f"{latency:g}ms/{workload.name}/{tool.key}/{number}"
                try:
                    up, stats, down = self.round_trip(tool, prefix, self.folders[workload.name])
                except Failed as exc:
                    cell.error = f"FAILED: {exc}"
                    self.fail(str(exc))
                    continue
                cell.up.append(op(up, stats))
                cell.down.append(down)
                self.say(
                    f"{latency:g} ms  {workload.name:<10} {tool.name:<20} run {number + 1}: "
                    f"up {up['seconds']:6.2f} s  down {down.seconds:6.2f} s  verified"
                )
                if cell.first_seconds() > slow:
                    self.too_slow.add((workload.name, tool.key))

    def incremental(self, latency: float, ours: list[Tool]) -> None:
        """Two saves into one dest by one checkpoint: many-small unchanged, and the shards
        with one shard changed (in the first round only: the bytes sent are exact)."""
        cases = [("re-save", "many-small", "many-small"), ("changed shard", "shards", "changed")]
        cases += [("changed small", "nested", "nested-changed")]
        for number in range(self.args.repeat):
            for tool in ours:
                for case, first, then in cases:
                    if first not in self.folders or (number and case.startswith("changed")):
                        continue
                    prefix = f"{latency:g}ms/incremental/{tool.key}/{first}/{number}"
                    try:
                        line, stats, _ = self.round_trip(
                            tool, prefix, self.folders[first], self.folders[then]
                        )
                    except Failed as exc:
                        self.fail(str(exc))
                        continue
                    pair = op(line, {}), op(line, stats, "again")
                    self.results.incremental.setdefault((tool.key, case, latency), []).append(pair)
                    self.say(
                        f"{latency:g} ms  {tool.name} {case}: {line['seconds']:.2f} s, then "
                        f"{line['again']:.2f} s, {stats['bytes_in'] / MiB:.2f} MiB sent"
                    )

    def scaling(self, latency: float, ours: list[Tool]) -> None:
        """many-small with ten times the files, once per tool, at ``latency``."""
        workload, folder = make_workload(self.work / "data", "many-small-x10", self.args.quick)
        self.server.set_latency(latency)
        for tool in ours:
            try:
                line, stats, down = self.round_trip(tool, f"x10/{tool.key}", folder)
            except Failed as exc:
                self.fail(str(exc))
                continue
            self.results.scaling[tool.key] = latency, workload, op(line, stats), down
            self.say(f"{latency:g} ms  {workload.name} {tool.name}: verified")
        shutil.rmtree(folder)

    def tiny(self, latency: float, ours: list[Tool]) -> None:
        """10,000 files of 1 KiB at ``latency``: ``--repeat`` rounds of Sync, one of base."""
        workload, folder = make_workload(self.work / "data", "tiny", self.args.quick)
        self.results.tiny_workload = workload
        self.server.set_latency(latency)
        for number in range(self.args.repeat):
            for tool in ours if number == 0 else [t for t in ours if t.key == SYNC]:
                try:
                    line, stats, down = self.round_trip(tool, f"tiny/{tool.key}/{number}", folder)
                except Failed as exc:
                    self.fail(str(exc))
                    continue
                up = op(line, stats)
                self.results.tiny.setdefault(tool.key, []).append((latency, up, down))
                self.say(
                    f"{latency:g} ms  {workload.name} {tool.name}: {up.seconds:.2f} s up "
                    f"({up.stats['requests'].get('PUT', 0)} PUT), {down.seconds:.2f} s down"
                )
        shutil.rmtree(folder)

    def local(self, workload: Workload) -> None:
        """aiocheckpoint local to local against cp -r plus an fsync of everything copied
        (tiny-local: plus one sync(2), as the issue that set its target measured it)."""
        source = self.folders[workload.name]
        baseline = copy_then_sync if workload.name == "tiny-local" else copy_and_sync
        for number in range(self.args.repeat):
            copy, dest, target = self.fresh("cp"), self.fresh("dest"), self.fresh("restored")
            cp_first = number % 2 == 0  # who goes first alternates
            cp = timed(baseline, source, copy / "copy") if cp_first else 0.0
            save = timed(local_save, source, dest)
            cp = cp if cp_first else timed(baseline, source, copy / "copy")
            restore = timed(local_restore, dest, target)
            problem = difference(source, target)
            if problem is not None:
                self.fail(f"local {workload.name}: the restore differs: {problem}")
                return
            self.results.verified += 1
            self.results.local.setdefault(workload.name, []).append((cp, save, restore))
        self.say(f"local  {workload.name}: done")


def timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def copy_and_sync(source: Path, target: Path) -> None:
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    for path in [target, *target.rglob("*")]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def copy_then_sync(source: Path, target: Path) -> None:
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    os.sync()


def local_save(source: Path, dest: Path) -> None:
    with SyncCheckpoint(dest) as checkpoint:
        checkpoint.save(source)


def local_restore(dest: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory() as unused, SyncCheckpoint(unused, dest) as checkpoint:
        checkpoint.restore(target)


def tiny_writes(folder: Path, count: int = 200) -> tuple[float, float]:
    """Median seconds of ``write(b"tiny")`` on local storage: sync, then async."""
    with SyncCheckpoint(folder / "sync") as cp:
        cp.write(b"warm")
        sync = [timed(cp.write, b"tiny") for _ in range(count)]

    async def run() -> list[float]:
        times = []
        async with AsyncCheckpoint(folder / "async") as cp:
            await cp.write(b"warm")
            for _ in range(count):
                start = time.perf_counter()
                await cp.write(b"tiny")
                times.append(time.perf_counter() - start)
        return times

    return statistics.median(sync), statistics.median(anyio.run(run))


def base_worktree(ref: str, where: Path, stack: ExitStack) -> tuple[Path, str]:
    """A git worktree of ``ref`` at ``where``, removed when ``stack`` closes: its src folder
    and ``"REF (commit)"``."""
    git = ["git", "-C", str(HERE)]
    rev = [*git, "rev-parse", "--verify", f"{ref}^{{commit}}"]
    commit = subprocess.run(rev, check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([*git, "worktree", "add", "--detach", "--quiet", str(where), commit], check=True)
    stack.callback(subprocess.run, [*git, "worktree", "remove", "--force", str(where)])
    if not (where / "src" / "aiocheckpoint").is_dir():
        raise SystemExit(f"--base {ref}: no src/aiocheckpoint in that commit")
    return where / "src", f"{ref} ({commit[:12]})"


def setup_lines(args: argparse.Namespace) -> list[str]:
    config = TransferConfig()
    return [
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
        f"moto {version('moto')} on cheroot {version('cheroot')}, https",
        f"latencies {', '.join(f'{x:g}' for x in args.latencies)} ms, rounds {args.repeat}, "
        f"--slow {args.slow:g} s; aiocheckpoint defaults: max_concurrency "
        f"{config.max_concurrency}, part_size {config.part_size // MiB} MiB",
        "seconds: the runner's own (client creation included, interpreter start and imports "
        "not); RSS over idle: peak RSS less RSS before the transfer",
    ]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    keys = [t.key for t in TOOLS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="small sizes, 20 ms, one round, --no-venvs")
    add("--latencies", help="ms per request, comma-separated (default 0,20,100)")
    add("--workloads", help=f"comma-separated: {', '.join(WORKLOADS)} (default all)")
    add("--tools", help=f"comma-separated: {', '.join(keys)} (default all but base)")
    add("--base", metavar="REF", help="the git ref the base tool runs (adds base to --tools)")
    add("--repeat", type=int, help="rounds per cell (default 3, --quick 1)")
    add("--slow", type=float, default=60, help="seconds; see the module doc (default 60)")
    add("--no-venvs", action="store_true", help="run only the peers the project's env imports")
    add("--out", type=Path, help="results file (default RESULTS.md here, --quick: a temp file)")
    add("--chart", type=Path, help="chart SVG (default: docs/img/benchmark.svg, or --out as .svg)")
    args = parser.parse_args(argv)
    latencies = args.latencies or ("20" if args.quick else "0,20,100")
    args.latencies = sorted(float(x) for x in latencies.split(","))
    args.no_venvs = args.no_venvs or args.quick
    args.workloads = (args.workloads or ",".join(WORKLOADS)).split(",")
    tools = (args.tools or ",".join(k for k in keys if k != BASE)).split(",")
    tools += [BASE] if args.base and BASE not in tools else []
    for asked, known in ((args.workloads, WORKLOADS), (tools, keys)):
        if set(asked) - set(known):
            parser.error(f"unknown {sorted(set(asked) - set(known))}; choose from {known}")
    if BASE in tools and not args.base:
        parser.error("the base tool needs --base REF")
    args.tools = [t for t in TOOLS if t.key in tools]
    args.repeat = args.repeat or (1 if args.quick else 3)
    quick_out = Path(tempfile.gettempdir(), "aiocheckpoint-bench-quick.md")
    args.out = args.out or (quick_out if args.quick else HERE / "RESULTS.md")
    # Only the committed results redraw the committed chart, so the two never disagree.
    beside = args.out.with_suffix(".svg" if args.out.suffix != ".svg" else ".chart.svg")
    args.chart = args.chart or (CHART if args.out.resolve() == HERE / "RESULTS.md" else beside)
    return args


def write_chart(results: Path, out: Path, latencies: list[float]) -> None:
    """Draw ``results`` into ``out`` at 20 ms (or the lowest latency measured). Without
    matplotlib, or with nothing to draw, one line says so: the results are written already."""
    if importlib.util.find_spec("matplotlib") is None:
        print("chart skipped: matplotlib is not installed (pip install -e '.[bench]')")
        return
    import chart  # here, not above: it imports matplotlib

    try:
        chart.draw(chart.read(results), 20 if 20 in latencies else latencies[0], out)
    except ValueError as exc:
        print(f"chart skipped: {exc}")
        return
    print(f"chart written to {out}")


def main() -> int:
    args = parse()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aiocheckpoint-")))
        server = stack.enter_context(s3server.start(0, work / "server"))
        bench = Bench(args, work, server)
        results = bench.results
        base = None
        if any(t.key == BASE for t in args.tools):
            base = base_worktree(args.base, work / "base", stack)
        bench.prepare(args.tools, base)
        for name in args.workloads:
            workload, bench.folders[name] = make_workload(work / "data", name, args.quick)
            results.workloads.append(workload)
        if "nested" in bench.folders:  # nested with its smallest file rewritten
            linked(bench.folders["nested"], work / "data" / "nested-changed", bench.folders)
        if "shards" in bench.folders:  # the shards, the first rewritten, the rest hard links
            shards = sorted(bench.folders["shards"].iterdir())
            changed = bench.folders["changed"] = work / "data" / "changed"
            changed.mkdir()
            for path in shards[1:]:
                os.link(path, changed / path.name)
            write_random(changed / shards[0].name, shards[0].stat().st_size)
        ours = [t for t in results.tools if t.key in (SYNC, BASE)]
        for latency in args.latencies:
            server.set_latency(latency)
            for workload in results.workloads:
                bench.grid(latency, workload)
            bench.incremental(latency, ours)
        if ours and "many-small" in bench.folders:
            bench.scaling(args.latencies[-1], ours)
        if ours and "many-small" in bench.folders:
            bench.tiny(20 if 20 in args.latencies else args.latencies[0], ours)
        if any(t.key == SYNC for t in results.tools):
            for workload in results.workloads:
                bench.local(workload)
            tiny, bench.folders["tiny-local"] = make_workload(
                work / "data", "tiny-local", args.quick
            )
            results.local_workloads.append(tiny)
            bench.local(tiny)
            results.tiny_write = tiny_writes(bench.fresh("tiny"))
        results.elapsed = time.monotonic() - bench.started
    args.out.write_text(report.render(results, TARGETS))
    for check in report.checks(results, TARGETS):
        bound, about = TARGETS[check.target]
        if check.value > bound:
            print(f"target failed: {check.where}: {about} = {check.value:.3g} > {bound:.3g}")
    print(f"\nresults written to {args.out} ({results.elapsed / 60:.1f} min)")
    write_chart(args.out, args.chart, args.latencies)
    if results.failures:
        print(f"{len(results.failures)} FAILURES, see {args.out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
