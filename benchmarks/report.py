"""What bench.py measured, as Markdown tables, and the checks against its TARGETS.

Nothing here runs a transfer; bench.py fills a :class:`Results` and calls :func:`render`.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024
SYNC, ASYNC, BASE, LIMIT, FLYTEKIT = "sync", "async", "base", "limit", "flytekit"
OBSTORE = "obstore"
OPS = ("upload", "download")


@dataclass(frozen=True)
class Tool:
    key: str  # what --tools takes
    name: str  # the row label
    script: str  # peers/<script>.py
    env: str | None  # its virtualenv, and the module it imports; None: the project's
    concurrency: int | None = None


@dataclass(frozen=True)
class Workload:
    name: str
    files: int
    size: int  # bytes in all
    about: str


@dataclass(frozen=True)
class Op:
    """One upload or download as its runner reported it, with the server's counters."""

    seconds: float
    rss: int  # peak RSS over the idle process's
    stats: dict[str, Any]  # the server's: requests per method, bytes_in


@dataclass
class Cell:
    """One tool, one workload, one latency: its runs, and why it has no more."""

    up: list[Op] = field(default_factory=list)
    down: list[Op] = field(default_factory=list)
    error: str | None = None  # a failure, or why it was skipped

    def first_seconds(self) -> float:
        return self.up[0].seconds + self.down[0].seconds if self.up else 0.0


@dataclass
class Results:
    command: str
    started: str
    setup: list[str]  # bullet lines: machine, server, settings
    latencies: list[float]
    max_concurrency: int = 64  # aiocheckpoint's default
    tools: list[Tool] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)  # tool -> where it runs, versions
    workloads: list[Workload] = field(default_factory=list)
    cells: dict[tuple[float, str, str], Cell] = field(default_factory=dict)
    # (tool, "re-save" or "changed shard", latency) -> [(first save, second save)]
    incremental: dict[tuple[str, str, float], list[tuple[Op, Op]]] = field(default_factory=dict)
    scaling: dict[str, tuple[float, Workload, Op, Op]] = field(default_factory=dict)
    local: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    local_workloads: list[Workload] = field(default_factory=list)  # measured locally only
    # tool -> [(latency, upload, download)] of 10,000 x 1 KiB
    tiny: dict[str, list[tuple[float, Op, Op]]] = field(default_factory=dict)
    tiny_workload: Workload | None = None
    tiny_write: tuple[float, float] | None = None  # median seconds: sync, async
    failures: list[str] = field(default_factory=list)
    verified: int = 0
    elapsed: float = 0.0

    def runs(self, latency: float, workload: str, tool: str, op: str) -> list[Op]:
        cell = self.cells.get((latency, workload, tool))
        return [] if cell is None else cell.up if op == "upload" else cell.down

    def seconds(self, latency: float, workload: str, tool: str, op: str) -> list[float]:
        return [o.seconds for o in self.runs(latency, workload, tool, op)]


def med(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def timing(values: list[float]) -> list[str]:
    """Median and min–max, or two blanks."""
    return [f"{med(values):.2f}", f"{min(values):.2f}–{max(values):.2f}"] if values else ["", ""]


def ratio(a: list[float], b: list[float]) -> str:
    return f"{med(a) / med(b):.2f}" if a and b else ""


def table(head: list[str], rows: Iterable[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return lines + ["| " + " | ".join(str(x).replace("|", "/") for x in row) + " |" for row in rows]


@dataclass(frozen=True)
class Check:
    target: str
    where: str
    value: float
    numbers: str  # what the value is made of


def checks(results: Results, targets: dict[str, tuple[float, str]]) -> list[Check]:
    """Every target this run can judge, for the current aiocheckpoint (not the base)."""
    out: list[Check] = []
    names = {t.key: t.name for t in results.tools}
    sizes = {w.name: w for w in results.workloads if w.name != "one-file"}  # no targets

    def vs(target: str, where: str, ours: list[float], key: str, theirs: list[float]) -> None:
        if ours and theirs:
            numbers = "Sync {} s ({}), {} {} s ({})".format(
                *timing(ours), names[key], *timing(theirs)
            )
            out.append(Check(target, where, med(ours) / med(theirs), numbers))

    for latency, workload, op in itertools.product(results.latencies, sizes, OPS):
        where = f"{workload} {op} {latency:g} ms"
        s = {k: results.seconds(latency, workload, k, op) for k in names}
        ours = s.get(SYNC, [])
        if peers := [k for k in names if s[k] and k not in (SYNC, ASYNC, BASE)]:
            best = min(peers, key=lambda k: med(s[k]))
            vs("peer", where, ours, best, s[best])
        vs("async", where, ours, ASYNC, s.get(ASYNC, []))
        if workload in ("many-small", "big"):
            vs("flytekit", where, ours, FLYTEKIT, s.get(FLYTEKIT, []))
        if workload in ("many-small", "nested"):
            target = "packs-small" if workload == "many-small" else "packs-nested"
            vs(target, where, ours, OBSTORE, s.get(OBSTORE, []))
        server = results.seconds(0, workload, LIMIT, op)
        if ours and server and workload == "many-small" and latency == 100:
            rounds = math.ceil(sizes[workload].files / results.max_concurrency)
            bound = rounds * 0.1 + med(server)
            numbers = f"Sync {med(ours):.2f} s, {rounds} x 0.1 s + limit {med(server):.2f} s"
            out.append(Check("rounds", where, med(ours) / bound, numbers))
        for key in (SYNC, ASYNC) if workload == "big" else ():
            if rss := [o.rss / MiB for o in results.runs(latency, workload, key, op)]:
                out.append(Check("memory", f"{names[key]} {where}", max(rss), "worst run"))
        if ours and workload == "many-small" and op == "download":
            heads = max(
                o.stats["requests"].get("HEAD", 0)
                for o in results.runs(latency, workload, SYNC, op)
            )
            out.append(Check("head", where, heads / sizes[workload].files, f"{heads} HEAD"))
    if SYNC in results.scaling:
        latency, many, up, down = results.scaling[SYNC]
        for op, big in zip(OPS, (up, down), strict=True):
            if few := [o.rss for o in results.runs(latency, "many-small", SYNC, op)]:
                numbers = f"{big.rss / MiB:.0f} MiB / {med(few) / MiB:.0f} MiB"
                out.append(
                    Check("scaling", f"{op} {latency:g} ms", big.rss / max(med(few), 1), numbers)
                )
    for (key, case, latency), pairs in results.incremental.items():
        first, again = med(a.seconds for a, _ in pairs), med(b.seconds for _, b in pairs)
        sent = max(b.stats["bytes_in"] for _, b in pairs)
        if key == SYNC and case == "re-save":
            numbers = f"{again:.2f} s / {first:.2f} s"
            out.append(Check("resave", f"{latency:g} ms", again / first, numbers))
        elif key == SYNC and case == "changed small":
            pack = 8 * MiB  # aiocheckpoint's default pack_size
            out.append(Check("changed-small", f"{latency:g} ms", sent / pack, f"{sent} bytes"))
        elif key == SYNC and "shards" in sizes:
            shard = sizes["shards"].size / sizes["shards"].files
            out.append(Check("changed", f"{latency:g} ms", sent / shard, f"{sent / MiB:.2f} MiB"))
    for name, times in results.local.items():
        for i, op in ((1, "save"), (2, "restore")) if name != "one-file" else ():
            ours, cp = med(t[i] for t in times), med(t[0] for t in times)
            target = "local-tiny" if name == "tiny-local" and op == "save" else "local"
            out.append(Check(target, f"{name} {op}", ours / cp, f"{ours:.3f} s / {cp:.3f} s"))
    for latency, up, _ in results.tiny.get(SYNC, []):
        where = f"tiny {latency:g} ms"
        puts = up.stats["requests"].get("PUT", 0)
        out.append(Check("tiny-puts", where, puts, f"{puts} PUT"))
    if runs := results.tiny.get(SYNC):
        for i, op in ((1, "upload"), (2, "download")):
            secs = [run[i].seconds for run in runs]  # type: ignore[union-attr]
            where = f"tiny {op} {runs[0][0]:g} ms"
            out.append(Check("tiny-seconds", where, med(secs), "{} s ({})".format(*timing(secs))))
    return out


def render(results: Results, targets: dict[str, tuple[float, str]]) -> str:
    """The whole RESULTS.md."""
    found = checks(results, targets)
    failed = [c for c in found if c.value > targets[c.target][0]]
    out = [
        "# Benchmark results",
        "",
        f"`{results.command}`, run on {results.started}, {results.elapsed / 60:.1f} min.",
        "",
        *[f"- {line}" for line in results.setup],
        "",
    ]
    rows = [
        [t.name, f"`peers/{t.script}.py`", t.concurrency or "", results.versions.get(t.key, "")]
        for t in results.tools
    ]
    out += table(["tool", "runner", "--concurrency", "runs in"], rows) + [""]
    extra = [*results.local_workloads, *filter(None, [results.tiny_workload])]
    rows = [[w.name, w.files, f"{w.size / MiB:.0f}", w.about] for w in results.workloads + extra]
    out += table(["workload", "files", "MiB", "made of"], rows)

    out += ["", "## Verification", "", f"{results.verified} downloads verified byte for byte."]
    out += ["", *[f"- FAILED: {f}" for f in results.failures]] if results.failures else []

    out += ["", "## Targets", "", "Each check: measured / bound <= 1.", ""]
    count, bad = Counter(c.target for c in found), Counter(c.target for c in failed)
    rows = [[about, f"{bound:.3g}", count[k], bad[k]] for k, (bound, about) in targets.items()]
    out += table(["target", "bound", "checks", "failed"], rows)
    if failed:
        out += ["", "Failed:", ""]
        for c in failed:
            about, bound = targets[c.target][1], targets[c.target][0]
            out.append(f"- {c.where}: {about} = {c.value:.3g} > {bound:.3g} ({c.numbers})")

    names = {t.key for t in results.tools}
    if {SYNC, BASE} <= names:
        rows = []
        for latency in results.latencies:
            for w in results.workloads:
                row = [f"{latency:g} ms", w.name]
                for op in OPS:
                    now, then = (results.seconds(latency, w.name, k, op) for k in (SYNC, BASE))
                    row += [*timing(now), *timing(then), ratio(now, then)]
                rows.append(row)
        head = ["latency", "workload"]
        for op in ("up", "down"):
            head += [f"{op} Sync s", "min–max", f"{op} base s", "min–max", f"{op} Sync / base"]
        out += ["", "## Sync against base (current / previous version)", "", *table(head, rows)]

    for latency in results.latencies:
        rows = []
        for w in results.workloads:
            for t in results.tools:
                cell = results.cells.get((latency, w.name, t.key))
                if cell is None:
                    continue
                row = [w.name, t.name]
                for op in OPS:
                    s = results.seconds(latency, w.name, t.key, op)
                    row += [*timing(s), ratio(s, results.seconds(latency, w.name, SYNC, op))]
                rss = [f"{med(o.rss for o in r) / MiB:.0f}" for r in (cell.up, cell.down) if r]
                rows.append(row + [" / ".join(rss), f"{len(cell.up)} {cell.error or ''}".strip()])
        head = ["workload", "tool", "up s", "min–max", "up / Sync", "down s", "min–max"]
        head += ["down / Sync", "RSS over idle MiB, up / down", "runs"]
        out += ["", f"## S3 at {latency:g} ms per request", "", *table(head, rows)]

    if results.incremental:
        rows = [
            [key, case, f"{latency:g} ms"]
            + [f"{med(pair[i].seconds for pair in pairs):.2f}" for i in (0, 1)]
            + [f"{med(b.stats['bytes_in'] for _, b in pairs) / MiB:.2f}"]
            for (key, case, latency), pairs in sorted(results.incremental.items())
        ]
        head = ["tool", "case", "latency", "first save s", "second save s", "MiB sent"]
        out += ["", "## Incremental saves", "", *table(head, rows)]
    if results.scaling:
        rows = [
            [key, w.name, w.files, f"{latency:g} ms", f"{up.seconds:.2f}", f"{down.seconds:.2f}"]
            + [f"{up.rss / MiB:.0f} / {down.rss / MiB:.0f}", down.stats["requests"].get("HEAD", 0)]
            for key, (latency, w, up, down) in results.scaling.items()
        ]
        head = ["tool", "workload", "files", "latency", "up s", "down s", "RSS MiB up / down"]
        out += ["", "## Ten times the small files", "", *table(head + ["HEAD"], rows)]
    if results.tiny:
        rows = [
            [key, f"{latency:g} ms", f"{up.seconds:.2f}", f"{down.seconds:.2f}"]
            + [up.stats["requests"].get("PUT", 0), down.stats["requests"].get("GET", 0)]
            for key, runs in results.tiny.items()
            for latency, up, down in runs
        ]
        head = ["tool", "latency", "save s", "restore s", "PUT (save)", "GET (restore)"]
        out += ["", "## 10,000 files of 1 KiB, each run", "", *table(head, rows)]
    if results.local:
        rows = []
        for name, times in results.local.items():
            cp, save, restore = (med(t[i] for t in times) for i in range(3))
            rows.append([name, *(f"{x:.3f}" for x in (cp, save, restore))])
            rows[-1] += [f"{save / cp:.2f}", f"{restore / cp:.2f}"]
        head = ["workload", "cp -r + fsync s", "save s", "restore s", "save / cp", "restore / cp"]
        out += ["", "## Local storage (medians)", "", *table(head, rows)]
        out += ["", "tiny-local's cp column is `cp -r` then one `sync`, not an fsync per file."]
    if results.tiny_write is not None:
        ms = [f"{x * 1000:.2f}" for x in results.tiny_write]
        head = ["SyncCheckpoint ms", "AsyncCheckpoint ms"]
        out += ["", "## Tiny write() on local storage, median of 200", "", *table(head, [ms])]
    return "\n".join(out) + "\n"
