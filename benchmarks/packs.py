"""Choose the pack defaults (``TransferConfig.pack_size`` and ``pack_threshold``) by
measurement; write the tables to benchmarks/PACKS.md. From the repository root:

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
3. ``local``: the mixed tree, 100,000 x 100 B and 2,000 x 64 KiB saved to, and restored
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
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import aiobotocore.session  # noqa: F401  (imported before any timer, as the runners do)
import bench  # layout(), write_random(), difference(), copy_and_sync(), timed(), Failed
import boto3
import s3server
from report import ratio, table, timing

import aiocheckpoint
from aiocheckpoint import SyncCheckpoint, TransferConfig

HERE = Path(__file__).resolve().parent
BUCKET = "packs"
KiB, MiB = 1024, 1024**2
SECTIONS = {  # --sections key: heading, note, the (latency, workload) run in order (None: local)
    "size": (
        "1. pack_size sweep (S3)",
        "pack_threshold 256 KiB; pack_size varied. Ratios: median / the median of packing "
        "off in the same latency and workload. Requests: counts at the server (min–max "
        "where rounds differ); 'other' is HEAD, POST, DELETE.",
        [(ms, name) for ms in (0, 20) for name in ("many-small", "tiny-10k", "nested")]
        + [(100, "many-small")],
    ),
    "threshold": (
        "2. pack_threshold sweep (S3, mixed tree)",
        "pack_size 8 MiB; pack_threshold varied, on the mixed tree. Ratios and requests as above.",
        [(0, "mixed"), (20, "mixed")],
    ),
    "local": (
        "3. Local storage",
        "Local folder to local folder, under the same temporary folder as the source. "
        "'cp -r + fsync' is one copy (save column only); the ratios divide by its median. "
        "'files at dest': files in the checkpoint folder after the save.",
        [(None, "mixed"), (None, "tiny-100k"), (None, "small-2k")],
    ),
}


def size_text(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} B"


@dataclass(frozen=True)
class Config:
    label: str
    transfer: TransferConfig | None  # None: cp -r + fsync (local only)


def configs(section: str) -> list[Config]:
    """The configurations of a section; its ratios divide by the first."""
    if section == "local":
        return [
            Config("cp -r + fsync", None),
            Config("packs on (defaults)", TransferConfig()),
            Config("packs off", TransferConfig(pack_threshold=0)),
        ]
    out = [Config("off (pack_threshold=0)", TransferConfig(pack_threshold=0))]
    if section == "threshold":
        for t in (16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB):
            cfg = TransferConfig(pack_threshold=t, pack_size=8 * MiB)
            out.append(Config(f"pack_threshold {size_text(t)}", cfg))
        return out
    for mib in (1, 2, 4, 8, 16):
        cfg = TransferConfig(pack_threshold=256 * KiB, pack_size=mib * MiB)
        note = "" if cfg.pack_bytes == mib * MiB else f" (in effect {size_text(cfg.pack_bytes)})"
        out.append(Config(f"pack_size {mib} MiB{note}", cfg))
    big = TransferConfig(pack_threshold=256 * KiB, pack_size=16 * MiB, multipart_threshold=16 * MiB)
    return [*out, Config("pack_size 16 MiB, multipart_threshold 16 MiB", big)]


Layout = tuple[list[tuple[str, int]], str]  # as bench.layout(): (path, size) of each file, about


def uniform(count: int, size: int, folders: int) -> Layout:
    width = len(str(count - 1))
    files = [(f"d{i % folders:03d}/f{i:0{width}d}.bin", size) for i in range(count)]
    return files, f"{count:,} x {size_text(size)} in {folders} folders"


def workloads(quick: bool, huge: bool) -> dict[str, Layout]:
    q, each = quick, 5 if quick else 100
    sizes = [s for s in (16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB) for _ in range(each)]
    random.Random(5).shuffle(sizes)
    mixed = [(f"d{i % 10}/f{i:03d}.bin", s) for i, s in enumerate(sizes)]
    about = f"{each} each of 16 KiB, 64 KiB, 256 KiB, 1 MiB, 4 MiB, shuffled over 10 folders"
    out = {
        "many-small": bench.layout("many-small", q),  # 500 x 64 KiB
        "tiny-10k": uniform(1000 if q else 10_000, KiB, 10),
        "nested": bench.layout("nested", q),  # 2,000 files, 1 KiB x 4096^(u^3)
        "mixed": (mixed, about),
        "small-2k": uniform(200 if q else 2000, 64 * KiB, 10),
    }
    if huge:
        out["tiny-100k"] = uniform(2000 if q else 100_000, 100, 100)
    return out


@dataclass
class Run:
    save: float
    restore: float
    save_requests: Counter[str] = field(default_factory=Counter)
    restore_requests: Counter[str] = field(default_factory=Counter)
    files: int = 0  # local: files in the checkpoint folder after the save


@dataclass
class Grid:
    """One section's runs and errors, each keyed (latency, workload, config label)."""

    section: str
    configs: list[Config]
    runs: dict[tuple[int | None, str, str], list[Run]] = field(default_factory=dict)
    errors: dict[tuple[int | None, str, str], str] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        self.args, self.work, self.stack = args, work, stack
        self.started, self.verified = time.monotonic(), 0
        self.failures: list[str] = []
        self.server: s3server.Server | None = None
        self.bucket = None

    # bench.Bench's: print a line after the elapsed time; empty a scratch folder
    say = bench.Bench.say
    fresh = bench.Bench.fresh

    def s3(self) -> s3server.Server:
        """The server (started on first use) with a bucket; clients trust its CA."""
        if self.server is None:
            server = self.server = self.stack.enter_context(s3server.start(0, self.work / "server"))
            os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
            os.environ.update(AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
            os.environ.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
            os.environ.update(AWS_CA_BUNDLE=server.ca_bundle)
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
                os.environ.pop(name, None)
            session = boto3.Session("testing", "testing", region_name="us-east-1")
            s3 = session.resource("s3", endpoint_url=server.endpoint, verify=server.ca_bundle)
            self.bucket = s3.Bucket(BUCKET)
            self.bucket.create()
            # untimed round trips, so that no cell pays this process's first-use costs
            source = self.work / "warm-up"
            for i in range(20):
                bench.write_random(source / f"f{i}.bin", KiB)
            for transfer in (TransferConfig(pack_threshold=0), TransferConfig()):
                self.run(Config("warm-up", transfer), source, f"warm-up/{transfer.pack_threshold}")
            shutil.rmtree(source)
        return self.server

    def run(self, config: Config, source: Path, prefix: str | None) -> Run:
        """Save ``source`` to S3 under ``prefix`` (None: to a local folder), restore it into
        a fresh folder, verify. A timer spans SyncCheckpoint(...), save or restore, close()."""
        server = self.s3() if prefix else None
        dest: str | Path = f"s3://{BUCKET}/{prefix}" if prefix else self.fresh("dest")
        target, unused = self.fresh("restored"), self.fresh("unused")
        options = {"transfer": config.transfer, "endpoint_url": server.endpoint if server else None}
        try:
            if config.transfer is None:
                return Run(bench.timed(bench.copy_and_sync, source, Path(dest, "copy")), 0.0)
            run = Run(0.0, 0.0)
            if server:
                server.reset()
            start = time.perf_counter()
            with SyncCheckpoint(dest, **options) as cp:
                cp.save(source)
            run.save = time.perf_counter() - start
            if server:
                run.save_requests = Counter(server.stats()["requests"])
                server.reset()
            else:
                run.files = sum(len(files) for _, _, files in os.walk(dest))
            start = time.perf_counter()
            with SyncCheckpoint(unused, dest, **options) as cp:
                cp.restore(target)
            run.restore = time.perf_counter() - start
            if server:
                run.restore_requests = Counter(server.stats()["requests"])
            problem = bench.difference(source, target)
            if problem is not None:
                raise bench.Failed(f"{dest}: the restore differs from the source: {problem}")
            self.verified += 1
            return run
        finally:
            shutil.rmtree(target, ignore_errors=True)
            if server:
                self.bucket.objects.filter(Prefix=f"{prefix}/").delete()
            else:
                shutil.rmtree(dest, ignore_errors=True)

    def grid(self, grid: Grid, latency: int | None, name: str, layout: Layout) -> None:
        """Every config of ``grid`` on a workload, ``--repeat`` rounds, rotated."""
        source = self.work / "data" / name
        if not source.exists():
            start = time.monotonic()
            for path, size in layout[0]:
                bench.write_random(source / path, size)
            self.say(f"made {name}: {layout[1]} ({time.monotonic() - start:.1f} s)")
        if latency is not None:
            self.s3().set_latency(latency)
        where, configs = "local" if latency is None else f"{latency} ms", grid.configs
        for number in range(self.args.repeat):
            turn = number % len(configs)
            for i, config in enumerate(configs[turn:] + configs[:turn]):
                key = (latency, name, config.label)
                runs = grid.runs.setdefault(key, [])
                if key in grid.errors:
                    continue
                prefix = f"{grid.section[:4]}/{latency}/{name}/{number}-{i}"
                try:
                    run = self.run(config, source, None if latency is None else prefix)
                except Exception as exc:  # noqa: BLE001  (a failure is a result; keep going)
                    grid.errors[key] = f"{type(exc).__name__}: {exc}"
                    self.failures.append(f"{where} {name} {config.label}: {grid.errors[key]}")
                    print(f"FAILED: {self.failures[-1]}", file=sys.stderr, flush=True)
                    continue
                runs.append(run)
                counts = " ".join(f"{k} {v}" for k, v in sorted(run.save_requests.items()))
                self.say(
                    f"{where:>6} {name:<10} {config.label:<45} round {number + 1}: "
                    f"save {run.save:6.2f} s  restore {run.restore:6.2f} s  {counts}"
                )


def count(values: list[int]) -> str:
    """One number, or min–max where the runs differ; blank without runs."""
    if not values:
        return ""
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def grid_table(grid: Grid) -> list[str]:
    """A row per cell, in run order; ratios to the first config (off, or cp -r + fsync)."""
    local, base_label = grid.section == "local", grid.configs[0].label
    short = "cp" if local else "off"
    head = ["workload", "config", "save s", "min–max", f"save / {short}", "restore s", "min–max"]
    head += [f"restore / {short}"]
    kinds = [f"{op} {kind}" for op in ("save", "restore") for kind in ("PUT", "GET", "other")]
    head = [*head, "files at dest"] if local else ["latency", *head, *kinds]
    rows = []
    for key, runs in grid.runs.items():  # the first round ran the configs in order
        latency, name, label = key
        base = grid.runs[latency, name, base_label]
        copy = local and label == base_label  # cp -r + fsync: a save only
        saves, restores = [r.save for r in runs], [] if copy else [r.restore for r in runs]
        row = [] if local else [f"{latency} ms"]
        row += [name, label, *timing(saves), ratio(saves, [r.save for r in base])]
        row += [*timing(restores), ratio(restores, [r.save if local else r.restore for r in base])]
        if local:
            row.append("" if copy else count([r.files for r in runs]))
        else:  # PUT, GET, and the other methods (HEAD, POST, DELETE, ...)
            for requests in ([r.save_requests for r in runs], [r.restore_requests for r in runs]):
                row += [count([r["PUT"] for r in requests]), count([r["GET"] for r in requests])]
                row.append(count([sum(r.values()) - r["PUT"] - r["GET"] for r in requests]))
        error = f" ({grid.errors[key]})" if key in grid.errors else ""
        rows.append([*row, f"{len(runs)}{error}"])
    return table([*head, "runs"], rows)


def render(b: Bench, grids: list[Grid], used: dict[str, Layout], setup: list[str]) -> str:
    elapsed = (time.monotonic() - b.started) / 60
    out = ["# Packs: choosing pack_size and pack_threshold", "", *(f"- {x}" for x in setup)]
    out += [
        f"- {elapsed:.1f} min; {b.verified} restores verified byte for byte; load average "
        f"at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    ]
    if b.failures:
        out += ["", "## FAILURES", ""] + [f"- {f}" for f in b.failures]
    rows = [
        [name, f"{len(files):,}", f"{sum(size for _, size in files) / MiB:.1f}", about]
        for name, (files, about) in used.items()
    ]
    out += ["", "## Workloads", "", *table(["workload", "files", "MiB", "made of"], rows), ""]
    for grid in grids:
        heading, note, _ = SECTIONS[grid.section]
        out += [f"## {heading}", "", note, "", *grid_table(grid), ""]
    return "\n".join(out)


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
    git = ["git", "-C", str(HERE), "rev-parse", "--short=12", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    d = TransferConfig()
    return [
        f"`{shlex.join(['python', 'benchmarks/packs.py', *sys.argv[1:]])}`, started {started}, "
        f"commit {commit or '?'}",
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


def main() -> int:
    args = parse()
    here = Path(aiocheckpoint.__file__).resolve().parent
    if here != HERE.parent / "src" / "aiocheckpoint":
        print(f"warning: aiocheckpoint imported from {here}, not this tree's src", file=sys.stderr)
    grids = [Grid(key, configs(key)) for key in SECTIONS if key in args.sections]
    w = workloads(args.quick, huge=not args.no_100k)
    steps = [(g, ms, name) for g in grids for ms, name in SECTIONS[g.section][2] if name in w]
    setup = setup_lines(args)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aiocheckpoint-packs-")))
        b = Bench(args, work, stack)
        for i, (grid, latency, name) in enumerate(steps):
            b.grid(grid, latency, name, w[name])
            if all(later != name for _, _, later in steps[i + 1 :]):
                shutil.rmtree(work / "data" / name)  # the disk is shared
        text = render(b, grids, {name: w[name] for _, _, name in steps}, setup)
    args.out.write_text(text + "\n")
    print(f"\n{text}\n\nresults written to {args.out}")
    if b.failures:
        print(f"{len(b.failures)} FAILURES, see {args.out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
