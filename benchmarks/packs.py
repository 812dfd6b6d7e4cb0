"""Choose the pack defaults (``TransferConfig.pack_size`` and ``pack_threshold``) by
measurement; write the tables to benchmarks/PACKS.md.

    cd /work/wt-packbench   # or the repository root
    PYTHONPATH=src .venv/bin/python benchmarks/packs.py               # everything, ~22 min
    PYTHONPATH=src .venv/bin/python benchmarks/packs.py --quick       # a tiny smoke run
    PYTHONPATH=src .venv/bin/python benchmarks/packs.py --sections local --repeat 5

Three sections, each a grid of cells; a cell is one configuration on one workload:

1. ``size``: pack_threshold 256 KiB, pack_size 1, 2, 4, 8 and 16 MiB, against packing off
   (pack_threshold=0). A pack is never bigger than ``multipart_threshold`` (8 MiB by
   default), so 16 MiB is run twice: as given (it is 8 MiB in effect) and with
   multipart_threshold raised to 16 MiB. Workloads 500 x 64 KiB, 10,000 x 1 KiB and
   bench.py's nested tree (2,000 files, 1 KiB to 4 MiB, skewed small), on the S3 server
   of s3server.py at 0 and 20 ms per request (500 x 64 KiB at 100 ms too).
2. ``threshold``: pack_size 8 MiB, pack_threshold 0, 16 KiB, 64 KiB, 256 KiB, 1 MiB and
   4 MiB, on a mixed tree (100 random files each of 16 KiB, 64 KiB, 256 KiB, 1 MiB and
   4 MiB, sizes shuffled across 10 folders), at 0 and 20 ms.
3. ``local``: 100,000 x 100 B, 2,000 x 64 KiB and the mixed tree saved to, and restored
   from, a local folder, packing on (the defaults) and off, against ``cp -r`` of the
   tree plus an fsync of every file and folder copied (bench.py's ``copy_and_sync``).

Each S3 run: save to a fresh prefix, restore into a fresh folder, compare every file
byte for byte (a difference is a failure: reported, and the exit status is 1), delete the
prefix. Seconds are wall-clock of constructing the SyncCheckpoint, the save (or
restore), and closing it, in this process. Requests are the server's counts of each
HTTP method during the save and during the restore. ``--repeat`` rounds per cell, the
order of the configurations rotated by one between rounds; tables give the median and
min–max of seconds, and the requests (min–max where the rounds differ).
"""

from __future__ import annotations

import argparse
import datetime
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
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import aiobotocore.session  # noqa: F401  (imported before any timer, as the runners do)
import bench  # layout(), write_random(), difference(), copy_and_sync()
import boto3
import s3server

import aiocheckpoint
from aiocheckpoint import SyncCheckpoint, TransferConfig

HERE = Path(__file__).resolve().parent
BUCKET = "packs"
KiB, MiB = 1024, 1024**2
SECTIONS = ("size", "threshold", "local")


def size_text(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} B"


# -- configurations and workloads ---------------------------------------------------------


@dataclass(frozen=True)
class Config:
    label: str
    transfer: TransferConfig | None  # None: cp -r + fsync (local only)


def off() -> Config:
    return Config("off (pack_threshold=0)", TransferConfig(pack_threshold=0))


def size_configs() -> list[Config]:
    out = [off()]
    for mib in (1, 2, 4, 8, 16):
        cfg = TransferConfig(pack_threshold=256 * KiB, pack_size=mib * MiB)
        note = "" if cfg.pack_bytes == mib * MiB else f" (in effect {size_text(cfg.pack_bytes)})"
        out.append(Config(f"pack_size {mib} MiB{note}", cfg))
    big = TransferConfig(pack_threshold=256 * KiB, pack_size=16 * MiB, multipart_threshold=16 * MiB)
    out.append(Config("pack_size 16 MiB, multipart_threshold 16 MiB", big))
    return out


def threshold_configs() -> list[Config]:
    out = [off()]
    for t in (16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB):
        cfg = TransferConfig(pack_threshold=t, pack_size=8 * MiB)
        out.append(Config(f"pack_threshold {size_text(t)}", cfg))
    return out


def local_configs() -> list[Config]:
    return [
        Config("cp -r + fsync", None),
        Config("packs on (defaults)", TransferConfig()),
        Config("packs off", TransferConfig(pack_threshold=0)),
    ]


@dataclass(frozen=True)
class Workload:
    name: str
    files: list[tuple[str, int]]  # (relative path, size)
    about: str

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.files)


def uniform(name: str, count: int, size: int, folders: int) -> Workload:
    width = len(str(count - 1))
    files = [(f"d{i % folders:03d}/f{i:0{width}d}.bin", size) for i in range(count)]
    return Workload(name, files, f"{count:,} x {size_text(size)} in {folders} folders")


def mixed(each: int) -> Workload:
    sizes = [s for s in (16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB) for _ in range(each)]
    random.Random(5).shuffle(sizes)
    files = [(f"d{i % 10}/f{i:03d}.bin", s) for i, s in enumerate(sizes)]
    return Workload(
        "mixed",
        files,
        f"{each} each of 16 KiB, 64 KiB, 256 KiB, 1 MiB, 4 MiB, shuffled over 10 folders",
    )


def from_bench(name: str, quick: bool) -> Workload:
    files, about = bench.layout(name, quick)
    return Workload(name, files, about)


def workloads(quick: bool, huge: bool) -> dict[str, Workload]:
    q = quick
    out = [
        from_bench("many-small", q),  # 500 x 64 KiB
        uniform("tiny-10k", 1000 if q else 10_000, KiB, 10),
        from_bench("nested", q),  # 2,000 files, 1 KiB x 4096^(u^3)
        mixed(5 if q else 100),
        uniform("small-2k", 200 if q else 2000, 64 * KiB, 10),
    ]
    if huge:
        out.append(uniform("tiny-100k", 2000 if q else 100_000, 100, 100))
    return {w.name: w for w in out}


def make(root: Path, workload: Workload) -> Path:
    """Write the files of ``workload`` (random bytes) under ``root``; its folder."""
    folder = root / workload.name
    made: set[Path] = set()
    for path, size in workload.files:
        target = folder / path
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        if size <= 8 * MiB:
            target.write_bytes(os.urandom(size))
        else:
            bench.write_random(target, size)
    return folder


# -- measurements -------------------------------------------------------------------------


class Failed(Exception):
    """A restore differs from its source, or an operation raised."""


@dataclass
class Run:
    save: float
    restore: float
    save_requests: Counter[str] = field(default_factory=Counter)
    restore_requests: Counter[str] = field(default_factory=Counter)
    extra: float | None = None  # local: the cp -r + fsync run of the same round


@dataclass
class Cell:
    runs: list[Run] = field(default_factory=list)
    error: str | None = None


@dataclass
class Grid:
    """One section's cells: (latency or None for local, workload, config label) -> Cell."""

    title: str
    configs: list[Config]
    cells: dict[tuple[float | None, str, str], Cell] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        self.args, self.work, self.stack = args, work, stack
        self.started = time.monotonic()
        self.failures: list[str] = []
        self.verified = 0
        self.folders: dict[str, Path] = {}
        self.server: s3server.Server | None = None
        self.bucket = None

    def say(self, text: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        print(f"[{minutes:3d}:{seconds:02d}] {text}", flush=True)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"FAILED: {message}", file=sys.stderr, flush=True)

    def fresh(self, name: str) -> Path:
        path = self.work / "scratch" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def folder(self, workload: Workload) -> Path:
        if workload.name not in self.folders:
            start = time.monotonic()
            self.folders[workload.name] = make(self.work / "data", workload)
            self.say(f"made {workload.name}: {workload.about} ({time.monotonic() - start:.1f} s)")
        return self.folders[workload.name]

    def drop(self, workload: Workload) -> None:
        """Remove a workload's files once no section needs them (the disk is shared)."""
        folder = self.folders.pop(workload.name, None)
        if folder is not None:
            shutil.rmtree(folder)

    # -- S3 --

    def s3(self) -> s3server.Server:
        """The server (started on first use) with a bucket; clients trust its CA."""
        if self.server is None:
            self.server = self.stack.enter_context(s3server.start(0, self.work / "server"))
            os.environ.update(
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
                AWS_DEFAULT_REGION="us-east-1",
                AWS_EC2_METADATA_DISABLED="true",
                AWS_CONFIG_FILE=os.devnull,
                AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                AWS_CA_BUNDLE=self.server.ca_bundle,
            )
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
                os.environ.pop(name, None)
            s3 = boto3.Session("testing", "testing", region_name="us-east-1").resource(
                "s3", endpoint_url=self.server.endpoint, verify=self.server.ca_bundle
            )
            self.bucket = s3.Bucket(BUCKET)
            self.bucket.create()
            self.warm_up()
        return self.server

    def warm_up(self) -> None:
        """One untimed round trip, so that no cell pays this process's first-use costs."""
        source = self.work / "warm-up"
        source.mkdir()
        for i in range(20):
            (source / f"f{i}.bin").write_bytes(os.urandom(KiB))
        for config in (off(), Config("defaults", TransferConfig())):
            self.s3_run(config, source, f"warm-up/{config.label[:3]}")
        shutil.rmtree(source)

    def s3_run(self, config: Config, source: Path, prefix: str) -> Run:
        server = self.s3()
        assert config.transfer is not None and self.bucket is not None
        url = f"s3://{BUCKET}/{prefix}"
        target = self.fresh("restored")
        try:
            server.reset()
            start = time.perf_counter()
            with SyncCheckpoint(url, transfer=config.transfer, endpoint_url=server.endpoint) as cp:
                cp.save(source)
            save = time.perf_counter() - start
            save_requests = Counter(server.stats()["requests"])
            with tempfile.TemporaryDirectory(dir=self.work) as unused:
                server.reset()
                start = time.perf_counter()
                with SyncCheckpoint(
                    unused, url, transfer=config.transfer, endpoint_url=server.endpoint
                ) as cp:
                    cp.restore(target)
                restore = time.perf_counter() - start
                restore_requests = Counter(server.stats()["requests"])
            problem = bench.difference(source, target)
            if problem is not None:
                raise Failed(f"{prefix}: the restore differs from the source: {problem}")
            self.verified += 1
            return Run(save, restore, save_requests, restore_requests)
        finally:
            shutil.rmtree(target, ignore_errors=True)
            self.bucket.objects.filter(Prefix=prefix + "/").delete()

    # -- local --

    def local_run(self, config: Config, source: Path, name: str) -> Run:
        dest, target = self.fresh("dest"), self.fresh("restored")
        try:
            if config.transfer is None:
                start = time.perf_counter()
                bench.copy_and_sync(source, dest / "copy")
                return Run(time.perf_counter() - start, 0.0)
            start = time.perf_counter()
            with SyncCheckpoint(dest, transfer=config.transfer) as cp:
                cp.save(source)
            save = time.perf_counter() - start
            objects = sum(len(files) for _, _, files in os.walk(dest))
            with tempfile.TemporaryDirectory(dir=self.work) as unused:
                start = time.perf_counter()
                with SyncCheckpoint(unused, dest, transfer=config.transfer) as cp:
                    cp.restore(target)
                restore = time.perf_counter() - start
            problem = bench.difference(source, target)
            if problem is not None:
                raise Failed(f"local {name}, {config.label}: the restore differs: {problem}")
            self.verified += 1
            return Run(save, restore, Counter(files=objects))
        finally:
            shutil.rmtree(dest, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)

    # -- grids --

    def grid(self, grid: Grid, latency: float | None, workload: Workload) -> None:
        """Every config of ``grid`` on ``workload``, ``--repeat`` rounds, rotated."""
        source = self.folder(workload)
        configs = grid.configs
        if latency is not None:
            self.s3().set_latency(latency)
        where = "local" if latency is None else f"{latency:g} ms"
        for c in configs:
            grid.cells.setdefault((latency, workload.name, c.label), Cell())
        for number in range(self.args.repeat):
            turn = number % len(configs)
            for i, config in enumerate(configs[turn:] + configs[:turn]):
                cell = grid.cells[latency, workload.name, config.label]
                if cell.error:
                    continue
                try:
                    if latency is None:
                        run = self.local_run(config, source, workload.name)
                    else:
                        key = f"{grid.title[:4]}/{latency:g}/{workload.name}/{number}-{i}"
                        run = self.s3_run(config, source, key)
                except Exception as exc:  # noqa: BLE001  (a failure is a result; keep going)
                    cell.error = f"{type(exc).__name__}: {exc}"
                    self.fail(f"{where} {workload.name} {config.label}: {cell.error}")
                    continue
                cell.runs.append(run)
                counts = requests_text(run.save_requests) if latency is not None else ""
                self.say(
                    f"{where:>6} {workload.name:<10} {config.label:<45} round {number + 1}: "
                    f"save {run.save:6.2f} s  restore {run.restore:6.2f} s  {counts}"
                )


def requests_text(requests: Counter[str]) -> str:
    return " ".join(f"{k} {v}" for k, v in sorted(requests.items()))


# -- the report ---------------------------------------------------------------------------


def timing(values: list[float]) -> tuple[str, str]:
    if not values:
        return "", ""
    return f"{statistics.median(values):.2f}", f"{min(values):.2f}–{max(values):.2f}"


def count(values: list[int]) -> str:
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def counts(requests: list[Counter[str]]) -> tuple[str, str, str]:
    """PUT, GET, and the other methods (HEAD, POST, DELETE, ...) over the runs."""
    if not requests:
        return "", "", ""
    puts = [r["PUT"] for r in requests]
    gets = [r["GET"] for r in requests]
    other = [sum(v for k, v in r.items() if k not in ("PUT", "GET")) for r in requests]
    return count(puts), count(gets), count(other)


def ratio(value: list[float], base: list[float]) -> str:
    if not value or not base:
        return ""
    return f"{statistics.median(value) / statistics.median(base):.2f}"


def s3_table(grid: Grid, base_label: str) -> list[str]:
    head = [
        "latency",
        "workload",
        "config",
        "save s",
        "min–max",
        "save / off",
        "restore s",
        "min–max",
        "restore / off",
        "save PUT",
        "save GET",
        "save other",
        "restore PUT",
        "restore GET",
        "restore other",
        "runs",
    ]
    lines = [row(head), row(["---"] * len(head))]
    keys = sorted({(lat, w) for lat, w, _ in grid.cells}, key=lambda k: (k[0], order(k[1])))
    for latency, name in keys:
        base = grid.cells.get((latency, name, base_label), Cell()).runs
        for config in grid.configs:
            cell = grid.cells.get((latency, name, config.label))
            if cell is None:
                continue
            runs = cell.runs
            saves, restores = [r.save for r in runs], [r.restore for r in runs]
            lines.append(
                row(
                    [
                        f"{latency:g} ms",
                        name,
                        config.label,
                        *timing(saves),
                        ratio(saves, [r.save for r in base]),
                        *timing(restores),
                        ratio(restores, [r.restore for r in base]),
                        *counts([r.save_requests for r in runs]),
                        *counts([r.restore_requests for r in runs]),
                        str(len(runs)) + (f" ({cell.error})" if cell.error else ""),
                    ]
                )
            )
    return lines


def local_table(grid: Grid) -> list[str]:
    head = [
        "workload",
        "config",
        "save s",
        "min–max",
        "save / cp",
        "restore s",
        "min–max",
        "restore / cp",
        "files at dest",
        "runs",
    ]
    lines = [row(head), row(["---"] * len(head))]
    names = sorted({w for _, w, _ in grid.cells}, key=order)
    for name in names:
        cp = grid.cells.get((None, name, "cp -r + fsync"), Cell()).runs
        cp_s = [r.save for r in cp]
        for config in grid.configs:
            cell = grid.cells.get((None, name, config.label))
            if cell is None:
                continue
            runs = cell.runs
            saves, restores = [r.save for r in runs], [r.restore for r in runs]
            error = f" ({cell.error})" if cell.error else ""
            if config.transfer is None:
                cells = [name, config.label, *timing(saves), "1.00", "", "", "", "", ""]
            else:
                files = count([r.save_requests["files"] for r in runs]) if runs else ""
                cells = [
                    name,
                    config.label,
                    *timing(saves),
                    ratio(saves, cp_s),
                    *timing(restores),
                    ratio(restores, cp_s),
                    files,
                    "",
                ]
            cells[-1] = f"{len(runs)}{error}"
            lines.append(row(cells))
    return lines


ORDER = ["many-small", "tiny-10k", "nested", "mixed", "tiny-100k", "small-2k"]


def order(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render(
    bench_: Bench, grids: dict[str, Grid], used: dict[str, Workload], setup: list[str]
) -> str:
    out = ["# Packs: choosing pack_size and pack_threshold", ""]
    out += [f"- {line}" for line in setup]
    elapsed = (time.monotonic() - bench_.started) / 60
    out += [
        f"- {elapsed:.1f} min; {bench_.verified} restores verified byte for byte; load average "
        f"at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
    ]
    if bench_.failures:
        out += ["## FAILURES", ""] + [f"- {f}" for f in bench_.failures] + [""]
    out += ["## Workloads", "", row(["workload", "files", "MiB", "made of"]), row(["---"] * 4)]
    for w in sorted(used.values(), key=lambda w: order(w.name)):
        out.append(row([w.name, f"{len(w.files):,}", f"{w.bytes / MiB:.1f}", w.about]))
    out.append("")
    notes = {
        "size": (
            "pack_threshold 256 KiB; pack_size varied. Ratios: median / the median of packing "
            "off in the same latency and workload. Requests: counts at the server (min–max "
            "where rounds differ); 'other' is HEAD, POST, DELETE."
        ),
        "threshold": (
            "pack_size 8 MiB; pack_threshold varied, on the mixed tree. Ratios and requests "
            "as above."
        ),
        "local": (
            "Local folder to local folder, under the same temporary folder as the source. "
            "'cp -r + fsync' is one copy (save column only); the ratios divide by its median. "
            "'files at dest': files in the checkpoint folder after the save."
        ),
    }
    titles = {
        "size": "1. pack_size sweep (S3)",
        "threshold": "2. pack_threshold sweep (S3, mixed tree)",
        "local": "3. Local storage",
    }
    for key, grid in grids.items():
        out += [f"## {titles[key]}", "", notes[key], ""]
        out += local_table(grid) if key == "local" else s3_table(grid, off().label)
        out.append("")
    return "\n".join(out)


# -- main ---------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="tiny workloads, one round, 0 and 20 ms")
    add("--repeat", type=int, help="rounds per cell (default 3, --quick 1)")
    add("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    add("--no-100k", action="store_true", help="leave 100,000 x 100 B out of the local section")
    add("--out", type=Path, help="results file (default PACKS.md here; --quick: a temp file)")
    args = parser.parse_args(argv)
    args.sections = args.sections.split(",")
    if set(args.sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(set(args.sections) - set(SECTIONS))}")
    args.repeat = args.repeat or (1 if args.quick else 3)
    quick_out = Path(tempfile.gettempdir(), "aiocheckpoint-packs-quick.md")
    args.out = args.out or (quick_out if args.quick else HERE / "PACKS.md")
    return args


def setup_lines(args: argparse.Namespace) -> list[str]:
    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    d = TransferConfig()
    return [
        f"`{shlex.join(['python', 'benchmarks/packs.py', *sys.argv[1:]])}`, started {started}, "
        f"commit {commit or '?'}, aiocheckpoint from {Path(aiocheckpoint.__file__).parent}",
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
        f"moto {version('moto')} on cheroot {version('cheroot')}, https (s3server.py); load "
        f"average at the start {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"rounds {args.repeat}, configs rotated between rounds; other settings the defaults: "
        f"max_concurrency {d.max_concurrency}, multipart_threshold "
        f"{size_text(d.multipart_threshold)}, part_size {size_text(d.part_size)}, byte budget "
        f"{size_text(d.buffer_bytes)}; defaults under test: pack_threshold "
        f"{size_text(d.pack_threshold)}, pack_size {size_text(d.pack_size)}",
        "seconds: wall-clock of SyncCheckpoint(...), save() or restore(), and close(), in "
        "this process (imports not counted)",
    ]


def plan(
    args: argparse.Namespace, w: dict[str, Workload]
) -> Iterator[tuple[str, Grid, float | None, Workload]]:
    """(section, grid, latency, workload) in the order they run."""
    lat = [0.0, 20.0]
    if "size" in args.sections:
        grid = Grid("size", size_configs())
        for latency in lat + [100.0]:
            for name in ("many-small", "tiny-10k", "nested"):
                if latency == 100 and name != "many-small":
                    continue
                yield "size", grid, latency, w[name]
    if "threshold" in args.sections:
        grid = Grid("threshold", threshold_configs())
        for latency in lat:
            yield "threshold", grid, latency, w["mixed"]
    if "local" in args.sections:
        grid = Grid("local", local_configs())
        for name in ("tiny-100k", "small-2k", "mixed"):
            if name in w:
                yield "local", grid, None, w[name]


def main() -> int:
    args = parse()
    here = Path(aiocheckpoint.__file__).resolve().parent
    if here != HERE.parent / "src" / "aiocheckpoint":
        print(f"warning: aiocheckpoint imported from {here}, not this tree's src", file=sys.stderr)
    all_workloads = workloads(args.quick, huge=not args.no_100k)
    steps = list(plan(args, all_workloads))
    setup = setup_lines(args)
    grids: dict[str, Grid] = {}
    used: dict[str, Workload] = {}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aiocheckpoint-packs-")))
        b = Bench(args, work, stack)
        for i, (section, grid, latency, workload) in enumerate(steps):
            grids.setdefault(section, grid)
            used[workload.name] = workload
            b.grid(grid, latency, workload)
            if all(later[3].name != workload.name for later in steps[i + 1 :]):
                b.drop(workload)
        text = render(b, grids, used, setup)
    args.out.write_text(text + "\n")
    print("\n" + text)
    print(f"\nresults written to {args.out}")
    if b.failures:
        print(f"{len(b.failures)} FAILURES, see {args.out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
