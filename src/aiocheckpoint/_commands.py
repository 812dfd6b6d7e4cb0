"""The subcommands of the ``aiocheckpoint`` command: each calls the public API once or
twice and prints what it returns. Results go to stdout, bad files to stderr."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import bars
from ._errors import CheckpointNotFoundError
from ._sync import SyncCheckpoint

if TYPE_CHECKING:
    from . import Removal


class Command:
    """One run of a subcommand: its arguments, and the checkpoint and bar they ask for."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url: str = args.url

    def checkpoint(self, *, src: bool = False, **options: Any) -> SyncCheckpoint:
        """The checkpoint at the URL (as the source too, with ``src``)."""
        return SyncCheckpoint(
            self.url,
            self.url if src else None,
            endpoint_url=self.args.endpoint_url,
            region_name=self.args.region,
            **options,
        )

    @contextmanager
    def bar(self) -> Iterator[bars.ProgressBar | None]:
        """A tqdm bar on stderr when it is a terminal, unless ``--quiet``; else None."""
        bar = None
        if not self.args.quiet and sys.stderr.isatty():
            try:
                bar = bars.tqdm(file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass  # no tqdm: no bar
        try:
            yield bar
        finally:
            if bar is not None:
                bar.close()  # an operation that failed leaves its bar open

    def no_checkpoint(self) -> CheckpointNotFoundError:
        return CheckpointNotFoundError(f"no checkpoint at {self.url}")


def ls(cmd: Command) -> int:
    with cmd.checkpoint() as cp:
        versions = cp.versions()
    if not versions:
        raise cmd.no_checkpoint()
    if cmd.args.json:
        dump(
            [
                {
                    "version": v.version,
                    "created": iso(v.created),
                    "files": v.files,
                    "bytes": v.bytes,
                }
                for v in versions
            ]
        )
    else:
        rows = [(str(v.version), when(v.created), str(v.files), size(v.bytes)) for v in versions]
        table(("version", "created (UTC)", "files", "size"), rows, left={1})
    return 0


def inspect(cmd: Command) -> int:
    with cmd.checkpoint() as cp:
        held = cp.inspect(cmd.args.version)
    if cmd.args.json:
        files = [{"path": f.path, "size": f.size, "checksum": f.checksum} for f in held.files]
        dump({"version": held.version, "created": iso(held.created), "files": files})
        return 0
    total = sum(f.size for f in held.files)
    print(
        f"version {held.version} of {cmd.url}, created {when(held.created)} UTC:"
        f" {count(len(held.files), 'file')}, {size(total)}"
    )
    rows = [(size(f.size), f.checksum, f.path) for f in held.files]
    table(("size", "checksum", "path"), rows, left={1, 2})
    return 0


def verify(cmd: Command) -> int:
    with cmd.checkpoint() as cp, cmd.bar() as bar:
        report = cp.verify(cmd.args.version, progress=bar)
    checked = f"{count(report.files, 'file')}, {size(report.bytes)}"
    if report.ok:
        print(f"ok: version {report.version} of {cmd.url}: {checked} checked")
        return 0
    for bad in report.bad:
        print(f"aiocheckpoint: bad file {bad.path}: {bad.reason} ({bad.object})", file=sys.stderr)
    print(
        f"FAILED: version {report.version} of {cmd.url}: {len(report.bad)} bad of {checked} checked"
    )
    return 1


def restore(cmd: Command) -> int:
    target = Path(cmd.args.dir)
    with cmd.checkpoint(src=True) as cp, cmd.bar() as bar:
        made = not target.exists()
        target.mkdir(parents=True, exist_ok=True)  # once the URL is known to be valid
        try:
            cp.restore(target, version=cmd.args.version, progress=bar)
        except BaseException:
            if made:  # a failed restore leaves the folder as it was: not there
                target.rmdir()
            raise
    which = "" if cmd.args.version is None else f" version {cmd.args.version}"
    print(f"restored {cmd.url}{which} into {target}")
    return 0


def save(cmd: Command) -> int:
    # Every version is kept unless --keep says otherwise: a save by hand deletes nothing.
    with cmd.checkpoint(keep_versions=cmd.args.keep or sys.maxsize) as cp:
        with cmd.bar() as bar:
            cp.save(cmd.args.path, progress=bar)
        held = cp.inspect()
    total = sum(f.size for f in held.files)
    print(
        f"saved {cmd.args.path} to {cmd.url}: version {held.version} holds it"
        f" ({count(len(held.files), 'file')}, {size(total)} in all)"
    )
    return 0


def prune(cmd: Command) -> int:
    with cmd.checkpoint() as cp:
        removal = cp.prune(cmd.args.keep, dry_run=cmd.args.dry_run)
    removed(removal)
    return 0


def gc(cmd: Command) -> int:
    with cmd.checkpoint() as cp:
        removal = cp.gc(dry_run=cmd.args.dry_run, no_save_running=cmd.args.no_save_running)
    removed(removal)
    for url in () if cmd.args.quiet else removal.running:
        note(
            f"left {url}: a save numbered from the newest version up, which may still be running"
            " (--no-save-running removes it)"
        )
    return 0


def du(cmd: Command) -> int:
    with cmd.checkpoint() as cp:
        usage = cp.usage()
    if not usage.versions:
        raise cmd.no_checkpoint()
    if cmd.args.json:
        dump(dataclasses.asdict(usage))
        return 0
    rows = [
        ("stored", size(usage.stored_bytes), f"in {count(usage.objects, 'object')}"),
        ("live", size(usage.live_bytes), f"in version {usage.newest}, the newest"),
        ("reclaimable", size(usage.reclaimable_bytes), "by prune --keep 1 and gc"),
        ("versions", str(usage.versions), ""),
        ("unfinished uploads", str(usage.unfinished_uploads), ""),
    ]
    table(None, rows, left={0, 2})
    return 0


def removed(removal: Removal) -> None:
    """Each object and upload removed (or, in a dry run, that would be), then a summary."""
    would = removal.dry_run
    for url in removal.objects:
        print(f"{'would delete' if would else 'deleted'} {url}")
    for url in removal.uploads:
        print(f"{'would abort' if would else 'aborted'} upload {url}")
    if not (removal.objects or removal.uploads):
        print("nothing to remove")
        return
    what = f"{count(len(removal.objects), 'object')} ({size(removal.bytes)})"
    if removal.versions:
        numbers = ", ".join(map(str, removal.versions))
        what = f"{'version' if len(removal.versions) == 1 else 'versions'} {numbers}: {what}"
    if removal.uploads:
        what += f", {count(len(removal.uploads), 'unfinished upload')}"
    print(f"{'would remove' if would else 'removed'} {what}")


def note(message: str) -> None:
    print(f"aiocheckpoint: {message}", file=sys.stderr)


def dump(value: object) -> None:
    print(json.dumps(value, indent=2))


def iso(created: datetime | None) -> str | None:
    """ISO 8601 in UTC to the second, ``+00:00`` (which every Python's ``fromisoformat``
    reads, unlike ``Z`` before 3.11)."""
    if created is None:
        return None
    return created.astimezone(timezone.utc).isoformat(timespec="seconds")


def when(created: datetime | None) -> str:
    if created is None:
        return "-"
    return created.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def size(n: int) -> str:
    """``n`` bytes for people, in powers of 1024."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    value, power = float(n), 0
    while value >= 1024 and power < len(units) - 1:
        value /= 1024
        power += 1
    return f"{n} B" if power == 0 else f"{value:.1f} {units[power]}"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], *, left: set[int]) -> None:
    """Columns aligned: those in ``left`` to the left, the rest (numbers) to the right; the
    last column is not padded."""
    lines = ([header] if header else []) + list(rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        cells[-1] = cells[-1].rstrip()
        print("  ".join(cells).rstrip())
