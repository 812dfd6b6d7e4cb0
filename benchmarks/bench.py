"""Time aiocheckpoint against the tools a user would pick instead, on a local S3 server.

Writes the tables, and the checks against issue 3's targets, to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench.py                 # the full run
    .venv/bin/python benchmarks/bench.py --quick         # a small run, to check it works
    .venv/bin/python benchmarks/bench.py --latencies 20 --workloads shards,many-small \\
        --tools sync,async,s3transfer-32 --repeat 1 --out /tmp/results.md

The server (s3server.py) is moto in a process of its own on 127.0.0.1, over https with a
certificate of its own, each request delayed by the latency under test. Each tool runs as
a runner script in peers/ (the protocol is in peers/_runner.py), peers in virtualenvs of
their own (venvs.py, made on first use in benchmarks/.venvs). For every latency, workload
and tool: upload to a fresh prefix, download to a fresh folder, check every file byte for
byte, empty the bucket. A cell runs in ``--pair-repeat`` (5) rounds: aiocheckpoint's Sync
and Async in every round, taking turns going first (they run the same engine and must be
within 5% of each other, closer than one run varies on this machine), a peer in
``--repeat`` (3) of them, spread from the first round to the last; the tool order rotates
between rounds. So drift in the server's speed hits every tool alike. Then, with
aiocheckpoint only: incremental saves at each latency, memory at ten times the files, local
storage against ``cp -r``, and the cost of a tiny ``write()``.

To keep a full run near 80 minutes on two cores, three rules, all reported:
- a peer (limit included) runs again after its first run only if, in upload or in
  download, it came within ``--rerun-within`` (1.5) x of the fastest first run of that
  cell: a tool 1.5 x slower than the fastest is beyond this machine's noise and cannot be
  the best, so one run tells its ratio; aiocheckpoint always gets every repeat;
- a cell whose first run (upload + download) took more than ``--slow`` (60) seconds is
  not repeated;
- a cell is not run at all when the same tool's first run of that workload at the
  previous, lower latency took more than ``--skip-after`` (90) seconds (more latency only
  adds); its times there are shown as lower bounds.

Needs the test extras (moto): pip install -e '.[test]'. A download that differs from its
source, or a runner that fails, is reported as FAILED and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import datetime
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
from importlib import metadata
from pathlib import Path

import anyio
import boto3
import report
import s3server
import venvs
from report import ASYNC, SYNC, Cell, Op, Results, Tool, Workload

from aiocheckpoint import AsyncCheckpoint, SyncCheckpoint, TransferConfig

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
VENVS = HERE / ".venvs"
BUCKET = "bench"
KiB, MiB, GiB = 1024, 1024**2, 1024**3
TIMEOUT = 30 * 60  # seconds for one runner

TOOLS = [
    Tool("sync", "aiocheckpoint Sync", "aiocheckpoint_sync", None),
    Tool("async", "aiocheckpoint Async", "aiocheckpoint_async", None),
    Tool("boto3-loop", "boto3 loop", "boto3_loop", "boto3"),
    Tool("s3transfer-10", "s3transfer c=10", "s3transfer_manager", "boto3", 10),
    Tool("s3transfer-32", "s3transfer c=32", "s3transfer_manager", "boto3", 32),
    Tool("s3fs", "s3fs", "s3fs_put_get", "s3fs"),
    Tool("obstore", "obstore", "obstore_async", "obstore"),
    Tool("flytekit", "flytekit", "flytekit_checkpoint", "flytekit"),
    Tool("limit", "limit", "limit", None),
]
WORKLOADS = ("one-file", "shards", "many-small", "big", "nested")
QUICK_TOOLS = ("sync", "async", "s3transfer-32")
QUICK_WORKLOADS = ("shards", "many-small", "big")


class Failed(Exception):
    """A runner failed or a download differs from its source."""


# --- workloads ---------------------------------------------------------------------------


def layout(name: str, quick: bool, big: int) -> tuple[list[tuple[str, int]], str]:
    """The (relative path, size) of every file of a workload, and how it is made."""
    if name == "one-file":
        # No S3 target: what every run pays besides its data (process-side setup, client,
        # the tool's own requests), to read the other cells against.
        return [("one.bin", KiB)], "1 x 1 KiB: the fixed cost of a run"
    if name == "shards":
        count, size = (8, 256 * KiB) if quick else (64, 8 * MiB)
        return [(f"shard-{i:03d}.bin", size) for i in range(count)], (
            f"{count} x {size // KiB} KiB" if quick else f"{count} x 8 MiB"
        )
    if name.startswith("many-small"):
        count, size = (50, 16 * KiB) if quick else (500, 64 * KiB)
        if name.endswith("x10"):
            count *= 10
        files = [(f"part-{i % 5}/file-{i:04d}.bin", size) for i in range(count)]
        return files, f"{count} x {size // KiB} KiB in 5 folders"
    if name == "big":
        size = 12 * MiB if quick else big
        return [("model.bin", size)], f"1 x {size / MiB:g} MiB"
    if name == "nested":
        # Skewed like a real checkpoint tree: most files small, a few big ones holding most
        # bytes. Size = low x (high/low)^(u^3), u uniform in [0, 1): median ~2.7 KiB,
        # 90th percentile ~400 KiB; fixed seed, so the same tree every run.
        count, folders, high = (100, 10, 256 * KiB) if quick else (2000, 50, 4 * MiB)
        rng = random.Random(3)
        files = [
            (f"d{(i % folders) % 5}/sub{i % folders:02d}/f{i:04d}.bin", size)
            for i in range(count)
            if (size := int(KiB * (high / KiB) ** (rng.random() ** 3)))
        ]
        return files, (
            f"{count} files in {folders} folders (under 5 top folders), "
            f"1 KiB x ({high // KiB})^(u^3) bytes, u uniform, seed 3"
        )
    raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for start in range(0, size, 8 * MiB):
            f.write(os.urandom(min(8 * MiB, size - start)))


def make_workload(root: Path, name: str, quick: bool, big: int) -> tuple[Workload, Path]:
    files, about = layout(name, quick, big)
    folder = root / name
    for path, size in files:
        write_random(folder / path, size)
    return Workload(name, len(files), sum(size for _, size in files), about), folder


def files_under(folder: Path) -> dict[str, Path]:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            out[path.relative_to(folder).as_posix()] = path
    return out


def difference(source: Path, target: Path) -> str | None:
    """None if ``target`` holds exactly the files of ``source`` with the same bytes."""
    want, got = files_under(source), files_under(target)
    if want.keys() != got.keys():
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        return f"{len(missing)} files missing {missing[:3]}, {len(extra)} extra {extra[:3]}"
    for name, path in want.items():
        if path.stat().st_size != got[name].stat().st_size:
            return f"{name}: size differs"
        with open(path, "rb") as a, open(got[name], "rb") as b:
            while chunk := a.read(8 * MiB):
                if chunk != b.read(len(chunk)):
                    return f"{name}: bytes differ"
    return None


# --- runs --------------------------------------------------------------------------------


class Bench:
    def __init__(
        self, args: argparse.Namespace, work: Path, server: s3server.Server, results: Results
    ) -> None:
        self.args = args
        self.work = work
        self.server = server
        self.results = results
        self.started = time.monotonic()
        self.pythons: dict[str, Path] = {}
        self.folders: dict[str, Path] = {}
        aws = work / "aws"
        aws.mkdir()
        for name in ("config", "credentials"):
            (aws / name).touch()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_"))}
        self.env.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=str(aws / "config"),
            AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"),
            AWS_EC2_METADATA_DISABLED="true",
        )
        self.s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            verify=server.ca_bundle or True,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def say(self, text: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        print(f"[{minutes:3d}:{seconds:02d}] {text}", flush=True)

    def fresh(self, name: str) -> Path:
        path = self.work / "scratch" / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def save_twice(self, prefix: str, first: Path, then: Path) -> tuple[Op, Op]:
        """Save ``first``, then ``then``, with one SyncCheckpoint in one process, as a
        training loop does; the server's counters are the second save's."""
        sync = next(t for t in TOOLS if t.key == SYNC)
        twice = Tool(SYNC, sync.name, "aiocheckpoint_twice", None)
        op = self.transfer(twice, "upload", prefix, first, "--then", str(then))
        line = op.stats.pop("runner")
        return Op(line["seconds"], op.idle_rss, op.peak_rss, {}), Op(
            line["again"], op.idle_rss, op.peak_rss, op.stats
        )

    def transfer(self, tool: Tool, op: str, prefix: str, folder: Path, *extra: str) -> Op:
        """Run ``tool``'s runner for one upload or download; its report and the server's."""
        command = [
            str(self.pythons[tool.key]),
            str(PEERS / f"{tool.script}.py"),
            op,
            *("--endpoint", self.server.endpoint, "--bucket", BUCKET, "--prefix", prefix),
            *("--folder", str(folder)),
            *extra,
        ]
        if self.server.ca_bundle:
            command += ["--ca-bundle", self.server.ca_bundle]
        if tool.concurrency:
            command += ["--concurrency", str(tool.concurrency)]
        self.server.reset()
        try:
            done = subprocess.run(
                command,
                env=self.env,
                cwd=self.work,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            raise Failed(f"{tool.name} {op}: no answer within {TIMEOUT} s") from exc
        if done.returncode != 0:
            tail = " / ".join(done.stderr.strip().splitlines()[-3:])
            raise Failed(f"{tool.name} {op} exited with {done.returncode}: {tail}")
        line = json.loads(done.stdout.strip().splitlines()[-1])
        stats = {**self.server.stats(), "runner": line}
        return Op(line["seconds"], line["idle_rss"], line["peak_rss"], stats, line.get("cpu", 0.0))

    def empty_bucket(self) -> None:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})
        uploads = self.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        for upload in uploads:
            self.s3.abort_multipart_upload(
                Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]
            )

    def check(self, what: str, source: Path, target: Path) -> None:
        problem = difference(source, target)
        if problem is not None:
            raise Failed(f"{what}: the download differs from the source: {problem}")
        self.results.verified += 1

    def round_trip(self, tool: Tool, workload: Workload, prefix: str) -> tuple[Op, Op]:
        source = self.folders[workload.name]
        target = self.fresh("download")
        try:
            up = self.transfer(tool, "upload", prefix, source)
            down = self.transfer(tool, "download", prefix, target)
            self.check(f"{tool.name}, {workload.name}, {prefix}", source, target)
        finally:
            shutil.rmtree(target)
            self.empty_bucket()
        return up, down

    def fail(self, message: str) -> None:
        self.results.failures.append(message)
        print(f"FAILED: {message}", file=sys.stderr, flush=True)

    # --- the grid: latency x workload x tool ---

    def grid(self, latency: float, previous: float | None, workload: Workload) -> None:
        results, tools = self.results, self.results.tools
        rounds = results.pair_repeat
        # Sync and Async run in every round, a peer in ``repeat`` rounds spread from the
        # first to the last: the server's speed drifts by 10% and more over minutes, and
        # a peer's runs should see the same stretch of it as aiocheckpoint's.
        gaps = results.repeat - 1
        peer_runs = {round(i * (rounds - 1) / gaps) if gaps else 0: i for i in range(gaps + 1)}
        for number in range(rounds):
            shift = number * len(tools) // rounds
            order = tools[shift:] + tools[:shift]
            slots = [k for k, t in enumerate(order) if t.key in (SYNC, ASYNC)]
            if len(slots) == 2:  # Sync and Async take turns going first
                pair = sorted((order[k] for k in slots), key=lambda t: t.key != SYNC)
                order[slots[0]], order[slots[1]] = pair if number % 2 == 0 else pair[::-1]
            for tool in order:
                paired = tool.key in (SYNC, ASYNC)
                if not paired and number not in peer_runs:
                    continue
                repeat = number if paired else peer_runs[number]
                cell = results.cells.setdefault((latency, workload.name, tool.key), Cell())
                if repeat == 0 and previous is not None:
                    cell.bound = self.lower_bound((previous, workload.name, tool.key))
                if self.should_run(latency, workload, tool, repeat):
                    self.run_cell(tool, workload, latency, repeat)
        print("\n" + "\n".join(report.cell_table(results, latency, workload)) + "\n", flush=True)

    def run_cell(self, tool: Tool, workload: Workload, latency: float, repeat: int) -> None:
        """One run of ``tool`` in a cell: upload, download, verify; a failure is recorded."""
        cell = self.results.cells[latency, workload.name, tool.key]
        prefix = f"{latency:g}ms/{workload.name}/{tool.key}/{repeat}"
        try:
            up, down = self.round_trip(tool, workload, prefix)
        except Failed as exc:
            cell.error = str(exc)
            self.fail(str(exc))
            return
        cell.up.append(up)
        cell.down.append(down)
        self.say(
            f"{latency:g} ms  {workload.name:<10} {tool.name:<20} run {repeat + 1}: "
            f"up {up.seconds:6.2f} s  down {down.seconds:6.2f} s  verified"
        )

    def should_run(self, latency: float, workload: Workload, tool: Tool, repeat: int) -> bool:
        """Whether the cell runs its run number ``repeat`` (from 0): never if it is skipped or
        failed, again only by the rules of :meth:`rerun`."""
        cell = self.results.cells[latency, workload.name, tool.key]
        if cell.bound is not None or cell.error is not None:
            return False
        return repeat == 0 or self.rerun(latency, workload, tool)

    def rerun(self, latency: float, workload: Workload, tool: Tool) -> bool:
        """Whether a cell that has run once runs again (the rules in the module doc)."""
        results = self.results
        cell = results.cells[latency, workload.name, tool.key]
        if cell.first_seconds() > results.slow:
            return False
        if tool.key in (SYNC, ASYNC):
            return True
        firsts = [
            c
            for t in results.tools
            if (c := results.cells.get((latency, workload.name, t.key))) is not None and c.up
        ]
        for op in ("up", "down"):
            fastest = min(getattr(c, op)[0].seconds for c in firsts)
            if getattr(cell, op)[0].seconds <= self.args.rerun_within * fastest:
                return True
        return False

    def lower_bound(self, key: tuple[float, str, str]) -> tuple[float, float] | None:
        cell = self.results.cells.get(key)
        if cell is None or cell.bound is not None:
            return None if cell is None else cell.bound  # not run there either: same bound
        if cell.up and cell.first_seconds() > self.results.skip_after:
            return min(o.seconds for o in cell.up), min(o.seconds for o in cell.down)
        return None

    # --- aiocheckpoint only ---

    def incremental(self, latency: float, workloads: dict[str, Workload]) -> None:
        """Save twice into one dest: many-small unchanged; shards with one shard changed."""
        sync = next(t for t in TOOLS if t.key == SYNC)
        cases = [
            (name, second, table)
            for name, second, table in (
                ("many-small", "many-small", self.results.resave),
                ("shards", "shards-changed", self.results.change),
            )
            if name in workloads
        ]
        for repeat in range(self.results.repeat):
            for name, second, table in cases:
                if repeat > 0 and name == "shards":
                    continue  # the bytes sent are exact: one run tells them
                prefix = f"{latency:g}ms/incremental/{name}/{repeat}"
                target = self.fresh("download")
                try:
                    first, again = self.save_twice(prefix, self.folders[name], self.folders[second])
                    self.transfer(sync, "download", prefix, target)
                    self.check(f"incremental {name} {prefix}", self.folders[second], target)
                except Failed as exc:
                    self.fail(str(exc))
                    continue
                finally:
                    shutil.rmtree(target)
                    self.empty_bucket()
                table.setdefault(latency, []).append((first, again))
                self.say(
                    f"{latency:g} ms  incremental {name}: first save {first.seconds:.2f} s, "
                    f"second {again.seconds:.2f} s, {again.stats['bytes_in'] / MiB:.2f} MiB sent"
                )

    def scaling(self, latency: float) -> None:
        """many-small with ten times the files, once, with aiocheckpoint Sync."""
        sync = next(t for t in TOOLS if t.key == SYNC)
        workload, self.folders["many-small-x10"] = make_workload(
            self.work / "data", "many-small-x10", self.args.quick, 0
        )
        self.server.set_latency(latency)
        try:
            up, down = self.round_trip(sync, workload, f"{latency:g}ms/many-small-x10")
        except Failed as exc:
            self.fail(str(exc))
            return
        finally:
            shutil.rmtree(self.folders.pop("many-small-x10"))
        self.results.scaling = (latency, workload, up, down)
        self.say(
            f"{latency:g} ms  {workload.name}: up {up.seconds:.2f} s "
            f"({report.mib(up.over_idle)} MiB over idle), down {down.seconds:.2f} s "
            f"({report.mib(down.over_idle)} MiB over idle)"
        )

    def local(self, workload: Workload) -> None:
        """aiocheckpoint local to local against cp -r plus an fsync of everything copied."""
        source = self.folders[workload.name]
        for repeat in range(self.results.repeat):
            copy, dest, target = self.fresh("cp"), self.fresh("dest"), self.fresh("restored")
            cp_first = repeat % 2 == 0  # alternate who goes first
            if cp_first:
                cp = copy_and_sync(source, copy / "copy")
            save = timed(local_save, source, dest)
            if not cp_first:
                cp = copy_and_sync(source, copy / "copy")
            restore = timed(local_restore, dest, target)
            try:
                self.check(f"local {workload.name}", source, target)
            except Failed as exc:
                self.fail(str(exc))
                return
            finally:
                for path in (copy, dest, target):
                    shutil.rmtree(path)
            self.results.local.setdefault(workload.name, []).append((cp, save, restore))
            self.say(
                f"local  {workload.name:<10} cp -r + fsync {cp:.2f} s, save {save:.2f} s, "
                f"restore {restore:.2f} s"
            )


def timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def copy_and_sync(source: Path, target: Path) -> float:
    """Seconds of ``cp -r source target`` and an fsync of every file and folder copied."""
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    for root, _, names in os.walk(target):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - start


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


# --- the report's setup lines ------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    memory = 0
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
        with open("/proc/meminfo") as f:
            memory = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
    except (OSError, StopIteration):
        pass
    return (
        f"Machine: {os.cpu_count()} CPUs ({model}), {memory / 1024**2:.0f} GiB RAM, "
        f"{platform.platform()}, Python {platform.python_version()}"
    )


def project_versions() -> str:
    names = ("aiocheckpoint", "anyio", "aiobotocore", "botocore", "aiohttp")
    return ", ".join(f"{n} {metadata.version(n)}" for n in names)


def setup_lines(args: argparse.Namespace, server: s3server.Server) -> list[str]:
    pairs = (
        f" aiocheckpoint's Sync and Async run {args.pair_repeat} times each, taking turns "
        f"going first, in {args.pair_repeat} rounds; a peer in {args.repeat} of them, spread "
        "from the first to the last, so that drift in the server's speed hits every tool "
        "alike. Sync and Async run the same engine, and one run varies by more than the 5% "
        "allowed between them."
        if args.pair_repeat > args.repeat
        else ""
    )
    scheme = "http" if args.http else "https, with a certificate made for the run"
    config = TransferConfig()
    return [
        machine(),
        f"S3 server (s3server.py): moto {metadata.version('moto')} on cheroot "
        f"{metadata.version('cheroot')} (a thread per request, connections kept alive) in a "
        f"process of its own on 127.0.0.1, {scheme}; each request waits the latency first "
        "(S3's time to first byte). Patched in the server process only "
        "(s3server.py): ranged GETs read only their range (stock moto reads the whole object "
        "for each), and aws-chunked PUT bodies decode in linear time.",
        "Every tool runs as a script in benchmarks/peers/ in a process of its own, peers in "
        "virtualenvs of their own. Times are the script's own: the client's creation "
        "included, interpreter start and imports not. RSS over idle: the process's peak RSS "
        "less its RSS before the transfer, in MiB.",
        f"aiocheckpoint with default settings: max_concurrency {config.max_concurrency}, "
        f"part_size {config.part_size // MiB} MiB, multipart_threshold "
        f"{config.multipart_threshold // MiB} MiB, bytes in transit at most "
        f"{config.buffer_bytes // MiB} MiB.",
        "limit: the same bytes already in memory, 64 requests in flight, 8 MiB parts and "
        "ranges, no checksum computed or checked and no file I/O in the timed part: an "
        "estimate of what the server itself sustains (peers/limit.py), not a hard ceiling: "
        "on two cores the client shares the CPU with the server.",
        f"Each cell: upload to a fresh prefix, download to a fresh folder, verified byte for "
        f"byte, bucket emptied. Median of {args.repeat} (min–max); the tool order rotates "
        f"between rounds.{pairs} / Sync and / Async: the tool's median over "
        "aiocheckpoint's (above 1: slower than aiocheckpoint).",
        "Rules for time (runs = 1 run where one applied): after its first run, a peer (or "
        "limit) runs again only if, in upload or download, it came within "
        f"{args.rerun_within:g} x of the fastest first run of the cell (slower is beyond "
        "this machine's noise: it cannot be the best); a cell whose first run took more "
        f"than {args.slow:g} s runs once; a cell is not run when the same tool's first run "
        f"of that workload at the previous latency took more than {args.skip_after:g} s, "
        "and shows those times as lower bounds (> s).",
        f"Latencies {', '.join(f'{x:g}' for x in args.latencies)} ms. Project "
        f"environment: {project_versions()}.",
    ]


def tool_list(arg: str) -> list[Tool]:
    keys = arg.split(",")
    unknown = set(keys) - {t.key for t in TOOLS}
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown tools {sorted(unknown)}; choose from {', '.join(t.key for t in TOOLS)}"
        )
    return [t for t in TOOLS if t.key in keys]


def workload_names(arg: str) -> list[str]:
    names = arg.split(",")
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    return [n for n in WORKLOADS if n in names]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, no nested tree, 20 ms only, aiocheckpoint and s3transfer c=32, "
        "one run, results to --out or a temporary file",
    )
    parser.add_argument("--latencies", help="ms per request, comma-separated (default 0,20,100)")
    parser.add_argument("--workloads", type=workload_names, help=", ".join(WORKLOADS))
    parser.add_argument("--tools", type=tool_list, help=", ".join(t.key for t in TOOLS))
    parser.add_argument("--repeat", type=int, help="runs per cell, median reported (default 3)")
    parser.add_argument(
        "--pair-repeat",
        type=int,
        help="runs of aiocheckpoint Sync and Async per cell (default 5, at least --repeat)",
    )
    parser.add_argument("--http", action="store_true", help="plain http instead of https")
    parser.add_argument("--big-gib", action="store_true", help="big workload of 1 GiB")
    parser.add_argument("--slow", type=float, default=60, help="s; slower cells run once")
    parser.add_argument(
        "--skip-after", type=float, default=90, help="s; see the rules in the module doc"
    )
    parser.add_argument(
        "--rerun-within",
        type=float,
        default=1.5,
        help="x; after the first run, a peer runs again only if this close to the fastest "
        "(inf: always)",
    )
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    latencies = args.latencies or ("20" if args.quick else "0,20,100")
    args.latencies = sorted(float(x) for x in latencies.split(","))
    args.workloads = args.workloads or list(QUICK_WORKLOADS if args.quick else WORKLOADS)
    if args.tools is None:
        args.tools = [t for t in TOOLS if t.key in QUICK_TOOLS] if args.quick else list(TOOLS)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.pair_repeat = max(args.repeat, args.pair_repeat or (1 if args.quick else 5))
    if args.out is None:
        args.out = (
            Path(tempfile.gettempdir(), "aiocheckpoint-bench-quick.md")
            if args.quick
            else HERE / "RESULTS.md"
        )
    return args


def main() -> int:
    args = parse()
    command = shlex.join(["python", "benchmarks/bench.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="aiocheckpoint-bench-") as tmp:
        work = Path(tmp)
        with s3server.start(args.latencies[0], work / "server", tls=not args.http) as server:
            server.create_bucket(BUCKET)
            config = TransferConfig()
            results = Results(
                command=command,
                started=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                setup=setup_lines(args, server),
                tools=[],
                versions={},
                workloads=[],
                latencies=args.latencies,
                repeat=args.repeat,
                pair_repeat=args.pair_repeat,
                slow=args.slow,
                skip_after=args.skip_after,
                max_concurrency=config.max_concurrency,
                buffer_bytes=config.buffer_bytes,
                part_size=config.part_size,
            )
            bench = Bench(args, work, server, results)
            prepare_tools(bench, args.tools)
            big = (1 if args.big_gib else 0.5) * GiB
            workloads = {}
            for name in args.workloads:
                workload, bench.folders[name] = make_workload(
                    work / "data", name, args.quick, int(big)
                )
                workloads[name] = workload
                bench.say(f"made {report.describe(workload)}: {workload.about}")
            results.workloads = list(workloads.values())
            if "shards" in workloads:
                bench.folders["shards-changed"] = changed_copy(
                    bench.folders["shards"], work / "data" / "shards-changed"
                )
            has_sync = any(t.key == SYNC for t in results.tools)

            previous = None
            for latency in args.latencies:
                server.set_latency(latency)
                for workload in workloads.values():
                    bench.grid(latency, previous, workload)
                if has_sync:
                    bench.incremental(latency, workloads)
                previous = latency
            if has_sync and "many-small" in workloads:
                # At the highest latency both file counts keep max_concurrency requests in
                # flight, and so as many connections open: what is left is the file count.
                bench.scaling(args.latencies[-1])
            for workload in workloads.values():
                bench.local(workload)
            results.tiny_write = tiny_writes(bench.fresh("tiny"))
            bench.say(
                "tiny local write(): SyncCheckpoint "
                f"{results.tiny_write[0] * 1000:.2f} ms, AsyncCheckpoint "
                f"{results.tiny_write[1] * 1000:.2f} ms"
            )
            results.elapsed = time.monotonic() - bench.started

    text = report.render(results)
    args.out.write_text(text)
    print("\n" + "\n".join(report.check_table(report.checks(results))))
    print(f"\nresults written to {args.out} ({results.elapsed / 60:.1f} min)")
    if results.failures:
        print(f"{len(results.failures)} FAILURES, see {args.out}", file=sys.stderr)
        return 1
    return 0


def prepare_tools(bench: Bench, tools: list[Tool]) -> None:
    """Find (or make) each tool's interpreter; a tool whose env fails is reported, not run."""
    for tool in tools:
        try:
            if tool.env is None:
                bench.pythons[tool.key] = Path(sys.executable)
                bench.results.versions[tool.key] = project_versions()
            else:
                bench.pythons[tool.key] = venvs.python_for(tool.env, VENVS)
                found = venvs.versions(tool.env, VENVS)
                bench.results.versions[tool.key] = ", ".join(f"{k} {v}" for k, v in found.items())
        except (OSError, subprocess.CalledProcessError) as exc:
            bench.fail(f"{tool.name}: its virtualenv could not be made: {exc}")
            continue
        bench.results.tools.append(tool)


def changed_copy(shards: Path, target: Path) -> Path:
    """The shards folder with shard 0 rewritten (same size, new bytes); the rest hard links."""
    target.mkdir()
    names = sorted(p.name for p in shards.iterdir())
    for name in names[1:]:
        os.link(shards / name, target / name)
    write_random(target / names[0], (shards / names[0]).stat().st_size)
    return target


if __name__ == "__main__":
    sys.exit(main())
