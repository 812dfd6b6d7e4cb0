"""Two saves into one dest with one SyncCheckpoint, as a training loop makes them.

    python peers/aiocheckpoint_twice.py upload --folder FIRST --then SECOND --endpoint ...

Saves FIRST, then SECOND, into ``s3://B/P`` with the same checkpoint object, and prints one
JSON line: the seconds of each save and the process's RSS (see _runner.py). Between the two
it zeroes the server's counters, so what the server counts after this script is the second
save's alone.
"""

from __future__ import annotations

import json
import resource
import ssl
import sys
import time
import urllib.request
from pathlib import Path

import aiobotocore.session  # noqa: F401  (imported before the timer, as in the other runners)
from _runner import imported, parse, rss, trust

from aiocheckpoint import SyncCheckpoint


def reset_counters(endpoint: str, ca_bundle: str | None) -> None:
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None
    with urllib.request.urlopen(f"{endpoint}/__bench__/reset", context=context, timeout=30):
        pass


def main() -> None:
    argv = sys.argv[1:]
    at = argv.index("--then")
    then = Path(argv[at + 1])
    del argv[at : at + 2]
    args = parse(argv)
    trust(args)
    idle = rss()
    start = time.perf_counter()
    with SyncCheckpoint(f"s3://{args.bucket}/{args.prefix}", endpoint_url=args.endpoint) as cp:
        cp.save(args.folder)
        first = time.perf_counter() - start
        reset_counters(args.endpoint, args.ca_bundle)
        start = time.perf_counter()
        cp.save(then)
        again = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    line = {"seconds": first, "again": again, "idle_rss": idle, "peak_rss": peak, **imported()}
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
