"""The benchmark's picture: drawn from the results, it names what it shows, and the
committed docs/img/benchmark.svg shows what the committed benchmarks/RESULTS.md holds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
COMMITTED = ROOT / "docs" / "img" / "benchmark.svg"
WORKLOADS = ["one-file", "shards", "many-small", "big", "nested"]


def draw(out: Path, *more: str) -> subprocess.CompletedProcess[str]:
    script = ROOT / "benchmarks" / "chart.py"
    command = [sys.executable, str(script), str(RESULTS), "-o", str(out), *more]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def texts(svg: Path) -> set[str]:
    """The figure's texts: matplotlib writes each as a comment before its glyph paths."""
    return set(re.findall(r"<!-- (.*?) -->", svg.read_text(encoding="utf-8")))


def test_the_chart_names_the_latency_every_workload_and_tool(tmp_path):
    out = tmp_path / "benchmark.svg"
    done = draw(out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    seen = texts(out)
    assert "Checkpoint save and restore on S3 at 20 ms per request" in seen
    assert {"Save (upload)", "Restore (download)"} <= seen
    assert set(WORKLOADS) <= seen
    assert {"aiocheckpoint Sync", "s3fs", "obstore", "flytekit"} <= seen
    # medians of RESULTS.md at 20 ms: many-small up, Sync 0.32 s and s3fs 1.88 s; big up, s3fs
    assert {"0.32", "1.88", "12.2"} <= seen


def test_the_same_results_draw_the_same_bytes(tmp_path):
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    assert draw(first).returncode == 0 and draw(second).returncode == 0
    assert first.read_bytes() == second.read_bytes()


def test_the_committed_chart_shows_the_committed_results(tmp_path):
    # every label and number; the glyphs may differ between matplotlib versions
    out = tmp_path / "benchmark.svg"
    assert draw(out).returncode == 0
    assert texts(out) == texts(COMMITTED), "redraw it: python benchmarks/chart.py"


def test_a_latency_not_measured_is_one_line_and_no_file(tmp_path):
    out = tmp_path / "benchmark.svg"
    done = draw(out, "--latency", "5")
    assert done.returncode == 1
    assert "no table at 5 ms per request (there are: 0, 20, 100)" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
