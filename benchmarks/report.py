"""What bench.py measured, as Markdown: the tables and the checks against issue 3's targets.

Nothing here runs a transfer; bench.py fills a :class:`Results` and calls :func:`render`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024
SYNC, ASYNC, LIMIT, FLYTEKIT = "sync", "async", "limit", "flytekit"
ONE_FILE = "one-file"  # a diagnostic workload: no S3 targets (local ones apply to all)
#: Requests of an unchanged re-save that wait on each other: only its listings, made at
#: once (nothing changed, so nothing is committed or deleted).
RESAVE_ROUND_TRIPS = 1


@dataclass(frozen=True)
class Tool:
    key: str  # what --tools takes
    name: str  # the row label
    script: str  # peers/<script>.py
    env: str | None  # the virtualenv (venvs.py); None: the project's interpreter
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
    idle_rss: int
    peak_rss: int
    stats: dict[str, Any]
    cpu: float = 0.0  # CPU seconds of the runner's process during the transfer

    @property
    def over_idle(self) -> int:
        return self.peak_rss - self.idle_rss

    @property
    def server_cpu(self) -> float:
        return float(self.stats.get("cpu", 0.0))

    def requests(self, method: str) -> int:
        return int(self.stats["requests"].get(method, 0))


@dataclass
class Cell:
    """One tool, one workload, one latency: its runs, or why it has none."""

    up: list[Op] = field(default_factory=list)
    down: list[Op] = field(default_factory=list)
    error: str | None = None
    bound: tuple[float, float] | None = None  # not run: lower bounds of (up, down)

    def runs(self, op: str) -> list[Op]:
        """The runs of one direction: "upload" or "download"."""
        return self.up if op == "upload" else self.down

    def first_seconds(self) -> float:
        return self.up[0].seconds + self.down[0].seconds


@dataclass
class Results:
    command: str
    started: str
    setup: list[str]  # bullet lines: machine, server, method
    tools: list[Tool]
    versions: dict[str, str]  # tool key -> "pkg x.y, ..."
    workloads: list[Workload]
    latencies: list[float]
    repeat: int
    pair_repeat: int  # runs of Sync and Async per cell
    slow: float
    skip_after: float
    max_concurrency: int
    buffer_bytes: int  # aiocheckpoint's default byte budget (bytes in transit)
    part_size: int  # aiocheckpoint's default part size
    cells: dict[tuple[float, str, str], Cell] = field(default_factory=dict)
    # latency -> [(first save, re-save)] of many-small, and of the shards with one changed
    resave: dict[float, list[tuple[Op, Op]]] = field(default_factory=dict)
    change: dict[float, list[tuple[Op, Op]]] = field(default_factory=dict)
    scaling: tuple[float, Workload, Op, Op] | None = None  # latency, the x10 workload, up, down
    # workload -> (cp -r + fsync, save, restore) seconds per repeat
    local: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    tiny_write: tuple[float, float] | None = None  # median seconds: sync, async
    failures: list[str] = field(default_factory=list)
    verified: int = 0
    elapsed: float = 0.0


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def mib(n: float) -> str:
    return f"{n / MiB:.0f}"


def secs(values: list[float]) -> tuple[str, str]:
    return f"{median(values):.2f}", f"{min(values):.2f}–{max(values):.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None else f"{a / b:.2f}x"


def lat(ms: float) -> str:
    return f"{ms:g} ms"


def cell_median(cell: Cell | None, op: str) -> float | None:
    runs = None if cell is None else cell.runs(op)
    return median(o.seconds for o in runs) if runs else None


def cell_cpu(cell: Cell, op: str) -> tuple[float, float]:
    """Median CPU seconds of (the tool's process, the server's) over the cell's runs."""
    runs = cell.runs(op)
    return median(o.cpu for o in runs), median(o.server_cpu for o in runs)


def cell_table(results: Results, latency: float, workload: Workload) -> list[str]:
    """One table: every tool's upload and download of ``workload`` at ``latency``."""
    cells = {t.key: results.cells.get((latency, workload.name, t.key)) for t in results.tools}
    ref = {
        (k, op): cell_median(cells.get(k), op)
        for k in (SYNC, ASYNC)
        for op in ("upload", "download")
    }
    lines = [
        "| tool | upload s | min–max | / Sync | / Async | download s | min–max | / Sync "
        "| / Async | RSS over idle, MiB (up / down) | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tool in results.tools:
        cell = cells[tool.key]
        if cell is None:
            continue
        if cell.error is not None and not cell.up:
            lines.append(f"| {tool.name} | FAILED: {plain(cell.error)} |" + " |" * 9)
            continue
        if cell.bound is not None:
            up, down = cell.bound
            lines.append(
                f"| {tool.name} | > {up:.1f} | not run | {ratio(up, ref[SYNC, 'upload'])} "
                f"| {ratio(up, ref[ASYNC, 'upload'])} | > {down:.1f} | not run "
                f"| {ratio(down, ref[SYNC, 'download'])} | {ratio(down, ref[ASYNC, 'download'])} "
                f"| | not run |"
            )
            continue
        row = [tool.name]
        for op, runs in (("upload", cell.up), ("download", cell.down)):
            m = median(o.seconds for o in runs)
            row += [*secs([o.seconds for o in runs]), ratio(m, ref[SYNC, op])]
            row.append(ratio(m, ref[ASYNC, op]))
        up_rss = median(o.over_idle for o in cell.up)
        down_rss = median(o.over_idle for o in cell.down)
        row.append(f"{mib(up_rss)} / {mib(down_rss)}")
        count = "1 run" if len(cell.up) == 1 < results.repeat else str(len(cell.up))
        row.append(count + (f", then FAILED: {plain(cell.error)}" if cell.error else ""))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def plain(text: str) -> str:
    """``text`` fit for a table cell."""
    return text.replace("|", "/").replace("\n", " ")


def describe(workload: Workload) -> str:
    files = f"{workload.files} file" + ("s" if workload.files != 1 else "")
    return f"{workload.name} ({files}, {workload.size / MiB:.0f} MiB)"


@dataclass(frozen=True)
class Check:
    target: str
    where: str
    measured: str
    bound: str
    ok: bool | None  # None: not measurable in this run


def checks(results: Results) -> list[Check]:
    """Every target of issue 3 this run can judge, computed from its numbers."""
    out: list[Check] = []
    names = {t.key: t.name for t in results.tools}
    ops = ("upload", "download")

    def med(latency: float, workload: str, tool: str, op: str) -> float | None:
        cell = results.cells.get((latency, workload, tool))
        if cell is None or cell.bound is not None:
            return None
        return cell_median(cell, op)

    for latency in results.latencies:
        for w in results.workloads:
            if w.name == ONE_FILE:
                continue  # a diagnostic: the issue sets no S3 target for it
            for op in ops:
                ours = med(latency, w.name, SYNC, op)
                others = {
                    k: m
                    for k in names
                    if k not in (SYNC, ASYNC) and (m := med(latency, w.name, k, op)) is not None
                }
                where = f"{w.name} {op} {lat(latency)}"
                if ours is not None and others:
                    best = min(others, key=lambda k: others[k])
                    ok = ours <= 1.1 * others[best]
                    measured = f"{ours:.2f} s = {ours / others[best]:.2f} x {names[best]}"
                    if not ok:
                        pair = {SYNC: "Sync", best: names[best]}
                        measured += "; " + cpu_story(results, (latency, w.name), op, pair)
                        fixed = fixed_story(results, latency, op, pair)
                        if fixed:
                            measured += "; " + fixed
                    out.append(
                        Check("Sync <= 1.1 x the best peer or limit", where, measured, "1.10 x", ok)
                    )
                theirs = med(latency, w.name, FLYTEKIT, op)
                if w.name in ("many-small", "big") and ours is not None and theirs is not None:
                    out.append(
                        Check(
                            "flytekit beaten >= 1.3 x",
                            where,
                            f"flytekit / Sync = {theirs / ours:.2f}",
                            ">= 1.30",
                            theirs >= 1.3 * ours,
                        )
                    )
                other = med(latency, w.name, ASYNC, op)
                if ours is not None and other is not None:
                    ok = ours <= 1.05 * other
                    measured = f"Sync / Async = {ours / other:.2f}"
                    if not ok:
                        measured += "; " + spread_story(results, (latency, w.name), op)
                    out.append(Check("Sync within 1.05 x of Async", where, measured, "<= 1.05", ok))

    small = next((w for w in results.workloads if w.name == "many-small"), None)
    if small is not None and 100 in results.latencies:
        rounds = math.ceil(small.files / results.max_concurrency)
        for op in ops:
            ours = med(100, small.name, SYNC, op)
            server = med(0, small.name, LIMIT, op)
            if ours is None:
                continue
            if server is None:
                out.append(
                    Check(
                        "many-small at 100 ms <= 1.2 x (rounds x latency + server time)",
                        f"many-small {op}",
                        f"{ours:.2f} s",
                        "needs the limit row at 0 ms",
                        None,
                    )
                )
                continue
            bound = rounds * 0.1 + server
            out.append(
                Check(
                    "many-small at 100 ms <= 1.2 x (rounds x latency + server time)",
                    f"many-small {op}",
                    f"{ours:.2f} s = {ours / bound:.2f} x {bound:.2f} s",
                    f"1.2 x ({rounds} x 0.1 s + {server:.2f} s)",
                    ours <= 1.2 * bound,
                )
            )

    # The bound; the library's own (its byte budget + 64 MiB) is shown beside it.
    bound = results.max_concurrency * results.part_size + 64 * MiB
    own = results.buffer_bytes + 64 * MiB
    for key in (SYNC, ASYNC):
        for op in ops:
            worst = [
                o.over_idle
                for latency in results.latencies
                if (c := results.cells.get((latency, "big", key))) is not None
                for o in c.runs(op)
            ]
            if worst:
                out.append(
                    Check(
                        "memory: big, peak RSS over idle (worst run)",
                        f"{names.get(key, key)} {op}",
                        f"{mib(max(worst))} MiB (byte budget + 64 MiB: {mib(own)} MiB)",
                        f"<= {mib(bound)} MiB",
                        max(worst) <= bound,
                    )
                )
    if results.scaling is not None:
        latency, many, up, down = results.scaling
        cell = results.cells.get((latency, "many-small", SYNC))
        for op, big_op in (("upload", up), ("download", down)):
            runs = [] if cell is None else cell.runs(op)
            if runs:
                few = median(o.over_idle for o in runs)
                spread = max(few, big_op.over_idle) / max(1, min(few, big_op.over_idle))
                total = median(o.peak_rss for o in runs)
                files = small.files if small else "?"
                measured = (
                    f"{mib(few)} MiB at {files} files, "
                    f"{mib(big_op.over_idle)} MiB at {many.files}: {spread:.2f} x "
                    f"(peak RSS {mib(total)} and {mib(big_op.peak_rss)} MiB)"
                )
                if spread > 1.2:
                    # Each open connection holds its own buffers, so RSS follows how many
                    # requests were ever in flight at once (at most max_concurrency).
                    measured += (
                        "; most requests in flight at once: "
                        + ", ".join(str(o.stats.get("max_in_flight", "?")) for o in runs)
                        + f" at {files} files (each run), "
                        f"{big_op.stats.get('max_in_flight', '?')} at {many.files}"
                    )
                out.append(
                    Check(
                        "memory does not grow with file count (RSS over idle)",
                        f"many-small {op} {lat(latency)}",
                        measured,
                        "<= 1.20 x",
                        spread <= 1.2,
                    )
                )

    for latency, pairs in results.resave.items():
        first = median(a.seconds for a, _ in pairs)
        again = median(b.seconds for _, b in pairs)
        ok = first >= 10 * again
        measured = f"{first:.2f} s / {again:.2f} s = {first / again:.1f} x"
        if not ok and latency:
            # Whatever else it does, a re-save waits for its listings of the dest.
            floor = RESAVE_ROUND_TRIPS * latency / 1000
            measured += (
                f"; its {RESAVE_ROUND_TRIPS} round trip(s) of listings take "
                f"{floor:.2f} s at {lat(latency)}, so no re-save here beats "
                f"{first / floor:.1f} x"
            )
        out.append(
            Check(
                "re-saving unchanged many-small >= 10 x faster",
                lat(latency),
                measured,
                ">= 10 x",
                ok,
            )
        )
    shards = next((w for w in results.workloads if w.name == "shards"), None)
    for latency, pairs in results.change.items():
        sent = max(b.stats["bytes_in"] for _, b in pairs)
        count = shards.files if shards else 64
        total = shards.size if shards else 64 * 8 * MiB
        out.append(
            Check(
                f"one of {count} shards changed: bytes uploaded <= 2/{count}",
                lat(latency),
                f"{sent / MiB:.2f} MiB = {count * sent / total:.2f}/{count}",
                f"<= {2 * total / count / MiB:.2f} MiB",
                sent * count <= 2 * total,
            )
        )

    if small is not None:
        heads = [
            o.requests("HEAD")
            for latency in results.latencies
            if (c := results.cells.get((latency, "many-small", SYNC))) is not None
            for o in c.down
        ]
        if heads:
            out.append(
                Check(
                    "restore of many-small: no HEAD per file",
                    "Sync, worst run",
                    f"{max(heads)} HEAD for {small.files} files",
                    f"<= {small.files // 100} (1% of files)",
                    max(heads) <= small.files // 100,
                )
            )

    for name, times in results.local.items():
        cp = median(r[0] for r in times)
        for i, op in ((1, "save"), (2, "restore")):
            ours = median(r[i] for r in times)
            out.append(
                Check(
                    "local: within 2 x of cp -r + fsync",
                    f"{name} {op}",
                    f"{ours:.2f} s / {cp:.2f} s = {ours / cp:.2f} x",
                    "<= 2.00 x",
                    ours <= 2 * cp,
                )
            )
    return out


def cpu_story(results: Results, at: tuple[float, str], op: str, tools: dict[str, str]) -> str:
    """Where the CPU went in one cell for ``tools``: each one's process and the server's
    CPU seconds, and how many of the machine's cores the two kept busy together."""
    parts = []
    for key, name in tools.items():
        cell = results.cells[(*at, key)]
        client, server = cell_cpu(cell, op)
        wall = cell_median(cell, op) or 1.0
        runs = cell.runs(op)
        requests = median(sum(o.stats["requests"].values()) for o in runs)
        per = f", {client / requests * 1000:.1f} ms per request" if requests >= 100 else ""
        parts.append(
            f"{name} {client:.2f} + {server:.2f} CPU s ({(client + server) / wall:.1f} cores "
            f"busy{per})"
        )
    return "client + server: " + ", ".join(parts)


def fixed_story(results: Results, latency: float, op: str, tools: dict[str, str]) -> str:
    """The tools' medians for one file at ``latency``, if measured: what each run pays
    besides its data."""
    parts = []
    for key, name in tools.items():
        cell = results.cells.get((latency, ONE_FILE, key))
        seconds = None if cell is None else cell_median(cell, op)
        if seconds is None:
            return ""
        parts.append(f"{name} {seconds:.2f} s")
    return "one file (the fixed cost of a run): " + ", ".join(parts)


def spread_story(results: Results, at: tuple[float, str], op: str) -> str:
    """The runs of Sync and Async in one cell, min–max: whether the gap is within noise;
    and the median of the ratios of the runs the two made back to back, one per round."""
    runs = {key: [o.seconds for o in results.cells[(*at, key)].runs(op)] for key in (SYNC, ASYNC)}
    (a, b), (c, d) = ((min(runs[key]), max(runs[key])) for key in (SYNC, ASYNC))
    overlap = "overlap" if a <= d and c <= b else "do not overlap"
    paired = median(s / y for s, y in zip(runs[SYNC], runs[ASYNC], strict=False))
    return (
        f"runs: Sync {a:.2f}–{b:.2f} s, Async {c:.2f}–{d:.2f} s ({overlap});"
        f" run by run in the same round, Sync / Async = {paired:.2f} (median)"
    )


def check_table(found: list[Check]) -> list[str]:
    lines = ["| target | cell | measured | bound | result |", "| --- | --- | --- | --- | --- |"]
    for c in found:
        result = "n/a" if c.ok is None else "pass" if c.ok else "**FAIL**"
        lines.append(f"| {c.target} | {c.where} | {c.measured} | {c.bound} | {result} |")
    return lines


def render(results: Results) -> str:
    """The whole RESULTS.md."""
    found = checks(results)
    passed = sum(c.ok is True for c in found)
    failed = sum(c.ok is False for c in found)
    out = [
        "# Benchmark results",
        "",
        f"Run on {results.started} with `{results.command}`; it took "
        f"{results.elapsed / 60:.1f} min.",
        "",
        "## Setup",
        "",
        *[f"- {line}" for line in results.setup],
        "",
        "| tool | runner | virtualenv | versions |",
        "| --- | --- | --- | --- |",
    ]
    for tool in results.tools:
        runner = f"peers/{tool.script}.py" + (
            f" --concurrency {tool.concurrency}" if tool.concurrency else ""
        )
        env = tool.env or "the project's"
        out.append(f"| {tool.name} | `{runner}` | {env} | {results.versions.get(tool.key, '')} |")
    out += ["", "| workload | files | MiB | made of |", "| --- | ---: | ---: | --- |"]
    for w in results.workloads:
        out.append(f"| {w.name} | {w.files} | {w.size / MiB:.0f} | {w.about} |")

    out += ["", "## Verification", ""]
    if results.failures:
        out.append(f"**{len(results.failures)} FAILURES** ({results.verified} downloads matched):")
        out.append("")
        out += [f"- {f}" for f in results.failures]
    else:
        out.append(
            f"All {results.verified} downloads matched their sources byte for byte "
            "(same files, same bytes)."
        )

    out += [
        "",
        "## Targets (issue 3)",
        "",
        f"{passed} pass, {failed} fail, {len(found) - passed - failed} not measurable here. "
        "Defaults are the fast settings by construction: the aiocheckpoint runners pass no "
        "options.",
        "",
        *check_table(found),
        "",
        "How the bounds are computed: best peer, the lowest median of any other tool in the "
        "same cell (the limit row included); many-small at 100 ms, rounds = ceil(files / "
        "max_concurrency) and the server's own time is the limit row's median for "
        "many-small at 0 ms in the same direction (the server serving those requests to a "
        "client that does next to nothing); memory, the peak RSS over the idle process "
        "(imports done, before the transfer), against the issue's bound: max_concurrency x "
        "part_size + 64 MiB with the defaults (aiocheckpoint's tighter default byte budget "
        "plus 64 MiB is shown beside it).",
    ]

    for latency in results.latencies:
        out += ["", f"## S3 at {lat(latency)} per request", ""]
        for w in results.workloads:
            if any((latency, w.name, t.key) in results.cells for t in results.tools):
                out += [f"### {describe(w)}", "", *cell_table(results, latency, w), ""]

    if results.resave or results.change:
        out += [
            "## Incremental saves (aiocheckpoint Sync)",
            "",
            "Re-save: the unchanged many-small folder saved again into the same dest. "
            "Changed shard: the shards folder with shard 0 rewritten (same size, new bytes, "
            "the other 63 hard links to the originals) saved into the dest holding the "
            "original shards; bytes uploaded are the server's count of request payloads. "
            "Both saves are made by one SyncCheckpoint in one process, as a training loop "
            "makes them (peers/aiocheckpoint_twice.py); the first save's time includes "
            "creating the S3 client. Every result was restored and verified. The re-save "
            "is run as often as the grid's cells, the changed shard once.",
            "",
            "| latency | case | first save s | second save s | speedup | bytes uploaded |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for label, table in (("re-save", results.resave), ("changed shard", results.change)):
            for latency, pairs in table.items():
                first = median(a.seconds for a, _ in pairs)
                again = median(b.seconds for _, b in pairs)
                sent = median(b.stats["bytes_in"] for _, b in pairs)
                out.append(
                    f"| {lat(latency)} | {label} | {first:.2f} | {again:.2f} "
                    f"| {first / again:.1f} x | {sent / MiB:.2f} MiB |"
                )
        out.append("")

    if results.scaling is not None:
        latency, many, up, down = results.scaling
        out += [
            "## Memory and file count (aiocheckpoint Sync)",
            "",
            f"{describe(many)} at {lat(latency)}, one run: upload {up.seconds:.2f} s, "
            f"{mib(up.over_idle)} MiB over idle; download {down.seconds:.2f} s, "
            f"{mib(down.over_idle)} MiB over idle; {down.requests('HEAD')} HEAD requests "
            "during the restore. Compare the many-small row at the same latency above. "
            "Measured at the run's highest latency: there a run with more files than "
            "max_concurrency keeps max_concurrency requests in flight, and so opens as many "
            "connections (each holds buffers of its own), whatever its file count; at 0 ms "
            "a 500-file run opens fewer, depending on how fast the server answers.",
            "",
        ]

    if results.local:
        out += [
            "## Local storage",
            "",
            "aiocheckpoint local to local (a fresh dest folder; restore into a fresh folder) "
            "against `cp -r` of the folder followed by an fsync of every copied file and "
            "folder. Medians in seconds.",
            "",
            "| workload | cp -r + fsync | save | save / cp | restore | restore / cp |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, runs in results.local.items():
            cp, save, restore = (median(r[i] for r in runs) for i in range(3))
            out.append(
                f"| {name} | {cp:.2f} | {save:.2f} | {save / cp:.2f} x | {restore:.2f} "
                f"| {restore / cp:.2f} x |"
            )
        out.append("")

    if results.tiny_write is not None:
        sync, asynchronous = results.tiny_write
        out += [
            "## Per-call overhead",
            "",
            'A tiny `write(b"tiny")` on local storage, median of 200 calls after one '
            f"warm-up: SyncCheckpoint {sync * 1000:.2f} ms, AsyncCheckpoint "
            f"{asynchronous * 1000:.2f} ms.",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"
