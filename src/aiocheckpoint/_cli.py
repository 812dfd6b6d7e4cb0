"""The ``aiocheckpoint`` command: parses its arguments, runs a subcommand (``_commands``),
and turns what goes wrong into a line on stderr and an exit status scripts can trust."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from . import __version__, _commands
from ._errors import CheckpointError

EXIT_STATUS = """\
exit status:
  0    success
  1    verify found a file missing or corrupt
  2    bad usage, no checkpoint at URL, or an error (the message names the URL)
  130  interrupted (Ctrl-C)
  141  stdout was closed early (as by `| head`)
"""

URL_HELP = "the checkpoint: a local path, file:// URL or s3://bucket/prefix"

#: What a user can cause (a typo, a missing file, a storage failure): one line, exit 2.
#: Anything else is a bug: exit 2 too (never 1, which scripts read as a failed check),
#: with its traceback.
EXPECTED = (CheckpointError, ValueError, TypeError, OSError, ImportError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (printed already)
        return exc.code if isinstance(exc.code, int) else 2 if exc.code else 0
    with logged(quiet=args.quiet, debug=args.debug):
        try:
            status = int(args.run(_commands.Command(args)))
            sys.stdout.flush()  # a closed pipe raises here, not at exit
            return status
        except KeyboardInterrupt:
            say("interrupted")
            return 130
        except BrokenPipeError:
            # The reader of stdout left (`| head`): stop quietly, as ls and cat do.
            silence_stdout()
            return 141
        except EXPECTED as exc:
            if args.debug:
                traceback.print_exc()
            say(f"error: {one_line(exc)}")
            return 2
        except Exception as exc:
            traceback.print_exc()
            say(f"internal error (please report it): {one_line(exc)}")
            return 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="aiocheckpoint",
        description=textwrap.fill(
            "Look at, check, restore, save and clean up aiocheckpoint checkpoints on local"
            " disk or S3. Results go to stdout; progress, warnings and errors to stderr. S3"
            " credentials and region come from the usual AWS environment."
        ),
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    global_options(top, defaults=True)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(
        name: str, run: Callable[[_commands.Command], int], summary: str, details: str = ""
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=textwrap.fill(f"{summary}. {details}".strip()),
            epilog=EXIT_STATUS,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("url", metavar="URL", help=URL_HELP)
        global_options(sub, defaults=False)
        sub.set_defaults(run=run)
        return sub

    def json_option(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("--json", action="store_true", help=f"print {what} as JSON")

    def version_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--version", metavar="N", type=int, help="the version (default: the newest)"
        )

    sub = command(
        "ls",
        _commands.ls,
        "List the committed versions, oldest first",
        "Each with when it was committed (UTC), its files and their size.",
    )
    json_option(sub, "an array of {version, created, files, bytes}")
    sub = command(
        "inspect",
        _commands.inspect,
        "List the files of a version",
        "Each with its size and CRC-32, sorted by path.",
    )
    version_option(sub)
    json_option(sub, "{version, created, files: [{path, size, checksum}]}")
    sub = command(
        "verify",
        _commands.verify,
        "Read back every file of a version and check it against its CRC-32",
        "Writes nothing. Exit status 1 if a file is missing or corrupt; each such file is"
        " named on stderr.",
    )
    version_option(sub)
    sub = command(
        "restore",
        _commands.restore,
        "Restore a version into a folder",
        "DIR is made if missing.",
    )
    sub.add_argument("dir", metavar="DIR", help="the folder to restore into")
    version_option(sub)
    sub = command(
        "save",
        _commands.save,
        "Save a file or a folder's files as a new version",
        "Saves merge: the new version also holds the files of the newest one that PATH"
        " does not replace. A save that changes nothing commits no new version.",
    )
    sub.add_argument("path", metavar="PATH", help="the file or folder to save")
    sub.add_argument(
        "--keep",
        metavar="N",
        type=int,
        help="versions to keep after the save; older ones are deleted (default: keep all)",
    )
    sub = command(
        "prune",
        _commands.prune,
        "Delete all but the newest versions",
        "Prints each object deleted; with --dry-run, each it would delete.",
    )
    sub.add_argument("--keep", metavar="N", type=int, required=True, help="versions to keep")
    dry_run_option(sub)
    sub = command(
        "gc",
        _commands.gc,
        "Delete what no version needs",
        "Data of saves that never committed, and their unfinished multipart uploads. Saves"
        " numbered from the newest version up may still be running, and are left alone"
        " unless you say none is (--no-save-running).",
    )
    dry_run_option(sub)
    sub.add_argument(
        "--no-save-running",
        action="store_true",
        help="no process saves to URL now: remove the saves from the newest version up too"
        " (where a killed save's data usually is)",
    )
    sub = command(
        "du",
        _commands.du,
        "Show the storage a checkpoint uses",
        "Bytes stored, bytes the newest version needs, bytes that prune --keep 1 and gc"
        " would free, versions, objects and unfinished multipart uploads.",
    )
    json_option(
        sub,
        "an object of {versions, newest, stored_bytes, live_bytes,"
        " reclaimable_bytes, objects, unfinished_uploads}",
    )
    return top


def global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options accepted before the subcommand and after it. After it they have no
    default (SUPPRESS), so that one given before is not reset."""
    group = parser.add_argument_group("global options")

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        default=default(None),
        help="S3 endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or AWS's)",
    )
    group.add_argument(
        "--region",
        default=default(None),
        help="S3 region (default: AWS_REGION, AWS_DEFAULT_REGION or the AWS config)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="no progress bar and no warnings: results and errors only",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="log what aiocheckpoint does to stderr, and show the traceback of an error",
    )


def dry_run_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--dry-run", action="store_true", help="delete nothing; print what would go")


@contextmanager
def logged(*, quiet: bool, debug: bool) -> Iterator[None]:
    """The aiocheckpoint logger's records on stderr, one line each (all of them, with
    tracebacks, with ``debug``), as long as the command runs."""
    logger = logging.getLogger("aiocheckpoint")
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(OneLine())
    saved = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False  # said once, here, even where the root logger has a handler
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class OneLine(logging.Formatter):
    """``aiocheckpoint: warning: <message>`` on one line, without a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return f"aiocheckpoint: {record.levelname.lower()}: {flatten(record.getMessage())}"


def one_line(exc: BaseException) -> str:
    text = flatten(str(exc)) or type(exc).__name__
    others = len(getattr(exc, "errors", ())) - 1
    if others > 0:
        text += f" (and {others} more {'failure' if others == 1 else 'failures'})"
    return text


def flatten(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def say(message: str) -> None:
    print(f"aiocheckpoint: {message}", file=sys.stderr)


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # not a real file (captured in a test, say): nothing will flush it at exit
