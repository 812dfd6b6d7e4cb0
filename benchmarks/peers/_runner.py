"""The protocol every benchmark runner script follows.

Each tool has one script in this folder, run in a virtualenv of its own (so its pins don't
fight aiocheckpoint's) as::

    python peers/<tool>.py upload   --endpoint URL --bucket B --prefix P --folder SRC
    python peers/<tool>.py download --endpoint URL --bucket B --prefix P --folder DST

``upload`` stores every file under SRC (recursively) below ``s3://B/P/``; ``download``
fetches what the same tool uploaded there into the empty folder DST, recreating the tree.
Credentials come from the environment (AWS_ACCESS_KEY_ID, ...); ``--ca-bundle`` is the
PEM of the server's self-signed certificate when the endpoint is https. The script prints
one JSON line: the seconds of the transfer (client creation included, interpreter start
and imports not), the CPU seconds the process spent in it (all its threads, user and
system), the process's RSS before it and at its peak, in bytes, and the file of the
aiocheckpoint package it imported, if any.

Only the standard library here: this file runs in every tool's virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("op", choices=["upload", "download"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True, help="key prefix, no trailing slash")
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--ca-bundle", default=None, help="PEM to trust for https")
    parser.add_argument("--concurrency", type=int, default=None, help="for tools that take one")
    return parser.parse_args(argv)


def trust(args: argparse.Namespace) -> None:
    """Trust the server's certificate the way botocore-based clients read it."""
    if args.ca_bundle:
        os.environ["AWS_CA_BUNDLE"] = args.ca_bundle


def rss() -> int:
    """The resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def files_under(folder: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every file under ``folder``, sorted."""
    out = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            out.append((path.relative_to(folder).as_posix(), path))
    return sorted(out)


def imported() -> dict[str, str]:
    """Which aiocheckpoint this process imported, if any: the benchmark checks it."""
    module = sys.modules.get("aiocheckpoint")
    return {} if module is None else {"aiocheckpoint": str(module.__file__)}


def run(
    upload: Callable[[argparse.Namespace], None], download: Callable[[argparse.Namespace], None]
) -> None:
    """Parse the arguments, time the operation, print the JSON line."""
    args = parse()
    idle = rss()
    cpu = time.process_time()
    start = time.perf_counter()
    (upload if args.op == "upload" else download)(args)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    line = {"seconds": seconds, "cpu": cpu, "idle_rss": idle, "peak_rss": peak}
    line.update(imported())
    print(json.dumps(line), flush=True)
