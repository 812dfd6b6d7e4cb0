"""Draw bench.py's results as one picture: save and restore seconds per workload, at one
latency, for aiocheckpoint (Sync) and the peers, from the tables of a RESULTS.md.

    python benchmarks/chart.py                                  # RESULTS.md here, 20 ms
    python benchmarks/chart.py /tmp/vs.md -o /tmp/vs.svg --latency 100

Bars are medians, whiskers min–max. "aiocheckpoint Async" and "aiocheckpoint base" are left
out: Async is within a few percent of Sync everywhere, and base (a previous version) has its
own table in RESULTS.md; their bars would only crowd the peers'. "limit" is a dashed line
over each workload, not a bar: no user would pick it, but it shows the server's pace for one
request per file from a client that does nothing else, the yardstick for the peers.

The SVG is deterministic (fixed hash salt, no date): drawing the same results again with
the same matplotlib gives the same file. Needs matplotlib (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
CHART = HERE.parent / "docs" / "img" / "benchmark.svg"
SYNC = "aiocheckpoint Sync"
LIMIT = "limit"
LEFT_OUT = {"aiocheckpoint Async", "aiocheckpoint base"}
OPS = (("up", "Save (upload)"), ("down", "Restore (download)"))
# Okabe-Ito, which colour-blind readers can tell apart; aiocheckpoint gets the strongest.
COLOURS = {SYNC: "#0072B2", "s3fs": "#E69F00", "obstore": "#009E73", "flytekit": "#CC79A7"}
MORE_COLOURS = ["#56B4E9", "#D55E00", "#F0E442", "#999999"]  # other peers, in table order
HALO = {"facecolor": "white", "edgecolor": "none", "pad": 0.6}  # a label over the limit line
LOG_SPREAD = 20  # slowest max / fastest min above which seconds go on a log scale


@dataclass(frozen=True)
class Timing:
    median: float
    low: float
    high: float


@dataclass
class Latency:
    """One "## S3 at N ms per request" table: (workload, tool) -> {"up"/"down": Timing}."""

    ms: float
    workloads: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], dict[str, Timing]] = field(default_factory=dict)
    runs: set[str] = field(default_factory=set)  # the "runs" column: "3", "1 skipped: ..."


@dataclass
class Report:
    latencies: dict[float, Latency] = field(default_factory=dict)
    about: dict[str, str] = field(default_factory=dict)  # workload -> "64 x 8 MiB"
    when: str = ""  # the run's date
    setup: str = ""  # "moto 5.2.6 on the same machine, 2 CPUs shared by client and server"


def tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every Markdown table of ``text``: the heading above it, its header, its rows."""
    found: list[tuple[str, list[str], list[list[str]]]] = []
    heading, rows = "", None
    for line in [*text.splitlines(), ""]:
        if line.startswith("## "):
            heading = line[3:].strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip()[1:-1].split("|")]
            if rows is None:
                rows = [cells]
            elif not all(set(c) <= set("-: ") for c in cells):  # not the --- line
                rows.append(cells)
        elif rows is not None:
            found.append((heading, rows[0], rows[1:]))
            rows = None
    return found


def timing(median: str, span: str) -> Timing | None:
    """A median and a "low–high" cell; None if the cell is blank (failed or skipped)."""
    if not median:
        return None
    low, high = re.split(r"[–-]", span)
    return Timing(float(median), float(low), float(high))


def size(count: int, nbytes: int) -> str:
    """``"64 × 8 MiB"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{count:,} × {nbytes / scale:g} {unit}"
    return f"{count:,} × {nbytes} B"


def describe(files: str, mib: str, made_of: str) -> str:
    """A short x-axis caption of a workload from its row in the workloads table."""
    if m := re.match(r"(\d+) x (\d+) bytes", made_of):
        return size(int(m[1]), int(m[2]))
    if m := re.match(r"(\d+ [KMG]?i?B)\b", made_of):  # one-file: "1 KiB: the fixed cost"
        return f"{int(files):,} × {m[1]}"
    return f"{int(files):,} files, {mib} MiB"


def read(path: Path) -> Report:
    text = path.read_text(encoding="utf-8")
    report = Report()
    if m := re.search(r"run on (\d{4}-\d\d-\d\d)", text):
        report.when = m[1]
    if m := re.search(r"^- (\d+ CPUs?),.*?; (moto [\w.]+)", text, re.M):
        report.setup = f"{m[2]} on the same machine, {m[1]} shared by client and server"
    for heading, head, rows in tables(text):
        if head[:4] == ["workload", "files", "MiB", "made of"]:
            report.about = {r[0]: describe(r[1], r[2], r[3]) for r in rows}
        m = re.fullmatch(r"S3 at ([\d.]+) ms per request", heading)
        if m is None:
            continue
        table = report.latencies[float(m[1])] = Latency(float(m[1]))
        col = {name: head.index(name) for name in ("workload", "tool", "up s", "down s", "runs")}
        for row in rows:
            workload, tool = row[col["workload"]], row[col["tool"]]
            table.workloads += [workload] if workload not in table.workloads else []
            table.tools += [tool] if tool not in table.tools else []
            table.runs.add(row[col["runs"]])
            ops = {op: timing(row[col[f"{op} s"]], row[col[f"{op} s"] + 1]) for op, _ in OPS}
            table.cells[workload, tool] = {op: t for op, t in ops.items() if t is not None}
    return report


def seconds(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def captions(report: Report, table: Latency) -> tuple[str, str]:
    """The title, and the caption under the plot: what a bar is, and where it was measured."""
    title = f"Checkpoint save and restore on S3 at {table.ms:g} ms per request"
    runs = {r.split()[0] for r in table.runs}
    counted = f"median of {runs.pop()} runs" if len(runs) == 1 else "median of the runs"
    counted = "one run" if counted == "median of 1 runs" else f"{counted}, whiskers: min–max"
    where = ", ".join(x for x in (report.setup, report.when and f"run {report.when}") if x)
    caption = f"Bars: {counted}; lower is better."
    return title, f"{caption}\n{where}".strip()


def draw(report: Report, latency: float, out: Path) -> Path:
    """Draw ``report`` at ``latency`` into ``out`` (SVG, or whatever its suffix says)."""
    if latency not in report.latencies:
        have = ", ".join(f"{x:g}" for x in report.latencies) or "none"
        raise ValueError(f"no table at {latency:g} ms per request (there are: {have})")
    table = report.latencies[latency]
    tools = [SYNC] if SYNC in table.tools else []
    tools += [t for t in table.tools if t not in LEFT_OUT | {SYNC, LIMIT}]
    if not tools:
        raise ValueError(f"no tool to draw at {latency:g} ms")
    extra = iter(MORE_COLOURS)
    colours = {t: COLOURS.get(t) or next(extra, "#999999") for t in tools}
    drawn = [t for (_, tool), c in table.cells.items() if tool in tools for t in c.values()]
    if not drawn:
        raise ValueError(f"no timings at {latency:g} ms")
    low, high = min(t.low for t in drawn), max(t.high for t in drawn)
    log = low > 0 and high / low > LOG_SPREAD

    params = {"svg.hashsalt": "aiocheckpoint-benchmark", "font.size": 10}
    with matplotlib.rc_context(params):
        fig = Figure(figsize=(8, 7.4), layout="constrained", facecolor="white")
        axes = fig.subplots(2, 1, sharex=True, sharey=True)
        # Scale and limits first: a "no result" label sits on the bottom of the axis.
        axes[0].set_xlim(-0.5, len(table.workloads) - 0.5)
        if log:
            axes[0].set_yscale("log")
            axes[0].set_ylim(low / 1.6, high * 2.6)  # room above the whiskers for the labels
            axes[0].yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            axes[0].yaxis.set_minor_formatter(NullFormatter())
        else:
            axes[0].set_ylim(0, high * 1.15)
        axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        for ax, (op, name) in zip(axes, OPS, strict=True):
            bars(ax, table, tools, colours, op, log)
            ax.set_title(name, loc="left", fontsize=11, fontweight="bold")
            ax.set_ylabel("seconds" + (" (log scale)" if log else ""))
        labels = [f"{w}\n{report.about.get(w, '')}".strip() for w in table.workloads]
        axes[1].set_xticks(range(len(table.workloads)), labels)
        title, caption = captions(report, table)
        handles, names = axes[0].get_legend_handles_labels()
        order = sorted(range(len(names)), key=lambda i: names[i].startswith(LIMIT))  # bars 1st
        handles, names = [handles[i] for i in order], [names[i] for i in order]
        # The title is the legend's: constrained layout overlaps a suptitle with a legend
        # outside the axes, but makes room for one legend with its title.
        for rows in (1, 2, 3):  # more rows while a row is wider than the figure
            ncol = math.ceil(len(names) / rows)
            legend = fig.legend(
                handles,
                names,
                frameon=False,
                loc="outside upper center",
                ncol=ncol,
                handlelength=1.6,
                columnspacing=1.2,
                title=title,
                title_fontproperties={"size": 13, "weight": "bold"},
            )
            fig.draw_without_rendering()
            if legend.get_window_extent().width < fig.bbox.width * 0.98 or rows == 3:
                break
            legend.remove()
        fig.supxlabel(caption, fontsize=8, color="#555555")
        out.parent.mkdir(parents=True, exist_ok=True)
        # No date in the file, so the same results draw the same bytes.
        metadata = {"Date": None} if out.suffix == ".svg" else None
        fig.savefig(out, metadata=metadata, facecolor="white")
    return out


def bars(
    ax: Axes, table: Latency, tools: list[str], colours: dict[str, str], op: str, log: bool
) -> None:
    """One panel: a group of bars per workload, a dashed line where limit is."""
    width = 0.84 / len(tools)
    for i, tool in enumerate(tools):
        for x, workload in enumerate(table.workloads):
            t = table.cells.get((workload, tool), {}).get(op)
            at = x - 0.42 + width * (i + 0.5)
            if t is None:  # failed, skipped as too slow, or not run: say so where it would be
                bottom = ax.get_ylim()[0] if log else 0
                ax.text(at, bottom, " no result", rotation=90, ha="center", va="bottom", fontsize=7)
                continue
            error = [[t.median - t.low], [t.high - t.median]]
            ax.bar(
                at,
                t.median,
                width * 0.92,
                color=colours[tool],
                zorder=2,
                label=tool if x == 0 else None,
                yerr=error,
                capsize=2,
                error_kw={"elinewidth": 0.8, "capthick": 0.8, "ecolor": "#333333"},
            )
            ax.text(
                at,
                t.high * (1.06 if log else 1.0),
                seconds(t.median),
                ha="center",
                va="bottom",
                fontsize=7.5,
                rotation=90 if len(tools) > 4 else 0,
                zorder=4,
                bbox=HALO,
            )
    for x, workload in enumerate(table.workloads):
        t = table.cells.get((workload, LIMIT), {}).get(op)
        if t is not None:
            label = "limit (per-file requests from memory)" if x == 0 else None
            ax.hlines(
                t.median,
                x - 0.45,
                x + 0.45,
                colors="#444444",
                linestyles=(0, (4, 2)),
                linewidth=1,
                zorder=3,
                label=label,
            )
    ax.grid(axis="y", which="major", color="#dddddd", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS, help="a RESULTS.md")
    parser.add_argument("-o", "--out", type=Path, default=CHART, help=f"default {CHART}")
    parser.add_argument("--latency", type=float, default=20, help="ms per request (20)")
    args = parser.parse_args(argv)
    try:
        print(draw(read(args.results), args.latency, args.out))
    except ValueError as exc:
        print(f"{args.results}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
