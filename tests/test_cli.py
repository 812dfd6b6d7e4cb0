"""The aiocheckpoint command, run as a child process against a local folder and the S3
server; and the progress bars of aiocheckpoint.bars, driven by real saves and restores."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _holds import interrupted_when_held
from _s3server import match
from _trees import read_tree, write_tree

import aiocheckpoint
from aiocheckpoint import SyncCheckpoint, bars
from aiocheckpoint._cli import main

if TYPE_CHECKING:
    from conftest import Location

COMMANDS = ("ls", "inspect", "verify", "restore", "save", "prune", "gc", "du")

# weights.bin is bigger than the pack threshold: an object of its own.
V1 = {
    "weights.bin": bytes(range(256)) * 1200,
    "step.json": b'{"step": 1}',
    "sub/notes.txt": b"first",
}
V2 = {"step.json": b'{"step": 2}', "extra.bin": b"x" * 5000}
V3 = {"step.json": b'{"step": 3}'}


def run(env: dict[str, str], *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
    """``python -m aiocheckpoint *args``, which must exit with ``status``."""
    done = subprocess.run(
        [sys.executable, "-m", "aiocheckpoint", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == status, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@dataclass
class Site:
    """A checkpoint URL, the environment a child needs to reach it, and its storage."""

    url: str
    env: dict[str, str]
    store: Location

    def keys(self) -> set[str]:
        return set(self.store.keys(self.url))

    def key(self, url: str) -> str:
        """The key under the checkpoint of an object URL the command printed."""
        prefix = self.url.rstrip("/") + "/"
        assert url.startswith(prefix), url
        return url[len(prefix) :]

    def save(self, tmp_path: Path, *trees: dict[str, bytes]) -> list[dict[str, bytes]]:
        """Save each tree as a version (all kept); what each version holds."""
        held: dict[str, bytes] = {}
        versions = []
        with SyncCheckpoint(self.url, keep_versions=len(trees)) as cp:
            for i, tree in enumerate(trees):
                cp.save(write_tree(tmp_path / f"src{i}", tree))
                held = {**held, **tree}  # saves merge
                versions.append(held)
        return versions


@pytest.fixture
def site(location: Location, request: pytest.FixtureRequest) -> Site:
    # child_env after location: the S3 server's AWS_* settings are in os.environ by then
    env: dict[str, str] = request.getfixturevalue("child_env")
    if location.kind == "local":
        return Site(location.new(), env, location)
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env.get(name) == os.environ[name], f"the child would miss {name}"
    return Site(f"s3://{location.bucket}/some/prefix", env, location)


def crc(data: bytes) -> str:
    return f"crc32:{zlib.crc32(data):08x}"


def lines(text: str) -> list[str]:
    return text.splitlines()


# -- help and usage --------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: aiocheckpoint {command} ")
    for option in ("URL", "--endpoint-url", "--region", "--quiet", "--debug", "exit status"):
        assert option in out


def test_help_lists_every_command(child_env):
    out = run(child_env, "--help").stdout
    assert out.startswith("usage: aiocheckpoint ")
    for command in COMMANDS:
        assert f"\n    {command} " in out


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nope"],
        ["prune", "cp"],
        ["inspect", "cp", "--version", "x"],
        ["ls"],
        ["ls", "cp", "-z"],
    ],
)
def test_usage_errors_exit_2(args, capsys):
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert lines(err)[0].startswith("usage: aiocheckpoint")
    assert lines(err)[-1].startswith("aiocheckpoint") and ": error: " in lines(err)[-1]


def test_the_console_script_runs_main(site, tmp_path, capsys):
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"aiocheckpoint": "aiocheckpoint._cli:main"}
    site.save(tmp_path, V1)
    # the script generated for the entry point does sys.exit(main())
    assert main(["ls", site.url, "--json"]) == 0
    assert [v["version"] for v in json.loads(capsys.readouterr().out)] == [1]
    assert main(["inspect", site.url, "--version", "7"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(lines(err)) == 1 and err.startswith("aiocheckpoint: error: ")


# -- what the commands print -----------------------------------------------------------


def test_save_then_ls_inspect_and_du(site, tmp_path):
    out = run(site.env, "save", site.url, str(write_tree(tmp_path / "a", V1)), "--keep", "3")
    assert "version 1 " in out.stdout and out.stderr == ""  # no terminal: no bar
    out = run(site.env, "save", site.url, str(write_tree(tmp_path / "b", V2)), "--keep", "3")
    assert "version 2 " in out.stdout and out.stderr == ""
    v2 = {**V1, **V2}

    listed = json.loads(run(site.env, "ls", site.url, "--json").stdout)
    assert [set(v) for v in listed] == [{"version", "created", "files", "bytes"}] * 2
    assert [(v["version"], v["files"], v["bytes"]) for v in listed] == [
        (1, len(V1), sum(map(len, V1.values()))),
        (2, len(v2), sum(map(len, v2.values()))),
    ]
    for v in listed:
        created = datetime.fromisoformat(v["created"])
        assert v["created"].endswith("+00:00") and created.utcoffset() == timedelta(0)
    table = lines(run(site.env, "ls", site.url).stdout)
    assert table[0].split() == ["version", "created", "(UTC)", "files", "size"]
    assert [row.split()[0] for row in table[1:]] == ["1", "2"]

    shown = json.loads(run(site.env, "inspect", site.url, "--json").stdout)
    assert shown["version"] == 2
    assert shown["files"] == [
        {"path": path, "size": len(data), "checksum": crc(data)}
        for path, data in sorted(v2.items())
    ]
    shown = json.loads(run(site.env, "inspect", site.url, "--version", "1", "--json").stdout)
    assert shown["version"] == 1 and [f["path"] for f in shown["files"]] == sorted(V1)
    human = lines(run(site.env, "inspect", site.url).stdout)
    assert human[0].startswith(f"version 2 of {site.url}, created ")
    assert [row.split()[-1] for row in human[2:]] == sorted(v2)
    assert crc(V1["weights.bin"]) in human[-1]

    usage = json.loads(run(site.env, "du", site.url, "--json").stdout)
    assert set(usage) == {
        "versions",
        "newest",
        "stored_bytes",
        "live_bytes",
        "reclaimable_bytes",
        "objects",
        "unfinished_uploads",
    }
    assert (usage["versions"], usage["newest"], usage["unfinished_uploads"]) == (2, 2, 0)
    assert usage["live_bytes"] >= sum(map(len, v2.values()))
    assert 0 < usage["reclaimable_bytes"] <= usage["stored_bytes"] - usage["live_bytes"]
    assert usage["objects"] == len([k for k in site.keys() if k.startswith(".aiocheckpoint/")])
    human = run(site.env, "du", site.url).stdout
    for word in ("stored", "live", "reclaimable", "versions", "unfinished uploads"):
        assert word in human


def test_restore_makes_the_folder_and_restores_each_version(site, tmp_path):
    v1, v2 = site.save(tmp_path, V1, V2)
    into = tmp_path / "new" / "folder"
    out = run(site.env, "restore", site.url, str(into)).stdout
    assert str(into) in out and out.count("\n") == 1
    assert read_tree(into) == v2
    run(site.env, "restore", site.url, str(tmp_path / "old"), "--version", "1")
    assert read_tree(tmp_path / "old") == v1


def test_save_prints_the_version_that_holds_it(site, tmp_path):
    src = write_tree(tmp_path / "a", V1)
    assert "version 1 holds it" in run(site.env, "save", site.url, str(src)).stdout
    # nothing changed: no new version, and the command says which one holds it
    assert "version 1 holds it" in run(site.env, "save", site.url, str(src)).stdout
    assert [v["version"] for v in json.loads(run(site.env, "ls", site.url, "--json").stdout)] == [1]
    # without --keep, a save by hand deletes no version
    more = write_tree(tmp_path / "b", V2)
    assert "version 2 holds it" in run(site.env, "save", site.url, str(more)).stdout
    assert [v["version"] for v in json.loads(run(site.env, "ls", site.url, "--json").stdout)] == [
        1,
        2,
    ]


def test_a_failed_restore_leaves_no_folder_it_made(site, tmp_path):
    site.save(tmp_path, V1)
    into = tmp_path / "new" / "into"
    done = run(site.env, "restore", site.url, str(into), "--version", "7", status=2)
    assert "no version 7" in done.stderr
    assert not into.exists()


@pytest.mark.parametrize("how", ["overwrite", "delete"])
def test_verify_names_a_file_whose_object_is_corrupt_or_gone(site, tmp_path, how):
    site.save(tmp_path, V1)
    out = run(site.env, "verify", site.url)
    assert lines(out.stdout)[0].startswith("ok: version 1 ") and len(lines(out.stdout)) == 1
    assert out.stderr == ""

    key = ".aiocheckpoint/" + site.store.manifest(site.url)["files"]["weights.bin"]["object"]
    if how == "overwrite":
        data = site.store.read(site.url, key)
        site.store.put(site.url, key, bytes(b ^ 0xFF for b in data))
    else:
        site.store.delete(site.url, key)
    keys = site.keys()
    out = run(site.env, "verify", site.url, status=1)
    assert lines(out.stdout)[0].startswith("FAILED: version 1 ")
    (bad,) = lines(out.stderr)
    assert "weights.bin" in bad and f"{site.url}/{key}" in bad
    assert site.keys() == keys  # verify writes nothing


def test_prune_dry_run_deletes_nothing_and_prune_deletes_what_it_listed(site, tmp_path):
    *_, v3 = site.save(tmp_path, V1, V2, V3)
    before = site.keys()
    out = run(site.env, "prune", site.url, "--keep", "1", "--dry-run").stdout
    *listed, summary = lines(out)
    assert summary.startswith("would remove versions 1, 2: ")
    assert all(line.startswith("would delete ") for line in listed)
    would = {site.key(line.removeprefix("would delete ")) for line in listed}
    assert {".aiocheckpoint/manifests/v0000000001.json"} < would <= before
    assert site.keys() == before

    out = run(site.env, "prune", site.url, "--keep", "1").stdout
    *listed, summary = lines(out)
    assert summary.startswith("removed versions 1, 2: ")
    assert {site.key(line.removeprefix("deleted ")) for line in listed} == would
    assert site.keys() == before - would
    assert [v["version"] for v in json.loads(run(site.env, "ls", site.url, "--json").stdout)] == [3]
    run(site.env, "restore", site.url, str(tmp_path / "out"))
    assert read_tree(tmp_path / "out") == v3
    assert lines(run(site.env, "prune", site.url, "--keep", "1").stdout) == ["nothing to remove"]


def test_gc_removes_a_killed_saves_leftovers_and_nothing_else(site, tmp_path, request):
    versions = site.save(tmp_path, V1, V2)
    dead = ".aiocheckpoint/data/0000000001-deadbeef0000/x.bin"  # below the newest, unnamed
    in_flight = ".aiocheckpoint/data/0000000003-feedface0000/y.bin"  # a save under way?
    site.store.put(site.url, dead, b"left by a killed save")
    site.store.put(site.url, in_flight, b"maybe still being saved")
    uploads = Uploads(request, site) if site.store.kind == "s3" else None
    if uploads:
        uploads.start(".aiocheckpoint/data/0000000001-abcdef012345/big.bin")
        uploads.start(".aiocheckpoint/data/0000000003-feedface0000/big.bin")
    before = site.keys()
    expected = [f"would delete {site.url}/{dead}"]
    if uploads:
        expected.append(f"would abort upload {site.url}/{uploads.keys[0]}")
    *listed, summary = lines(run(site.env, "gc", site.url, "--dry-run").stdout)
    assert listed == expected and summary.startswith("would remove 1 object ")
    assert site.keys() == before
    if uploads:
        assert uploads.open() == set(uploads.keys)

    done = run(site.env, "gc", site.url)
    *listed, summary = lines(done.stdout)
    assert listed == [
        line.replace("would delete", "deleted").replace("would abort", "aborted")
        for line in expected
    ]
    assert summary.startswith("removed 1 object ")
    folder = in_flight.rsplit("/", 1)[0]
    assert f"left {site.url}/{folder}" in done.stderr
    assert "a save numbered from the newest version up, which may still be running" in done.stderr
    assert site.keys() == before - {dead}
    if uploads:
        assert uploads.open() == {uploads.keys[1]}

    # told that no save runs, it takes what the save above the newest version left
    *listed, summary = lines(run(site.env, "gc", site.url, "--no-save-running").stdout)
    assert listed[0] == f"deleted {site.url}/{in_flight}"
    assert site.keys() == before - {dead, in_flight}
    if uploads:
        assert listed[1:] == [f"aborted upload {site.url}/{uploads.keys[1]}"]
        assert uploads.open() == set()
    for number, held in enumerate(versions, 1):
        into = tmp_path / f"v{number}"
        run(site.env, "restore", site.url, str(into), "--version", str(number))
        assert read_tree(into) == held


class Uploads:
    """Multipart uploads opened with boto3 under the checkpoint, as a killed save leaves."""

    def __init__(self, request: pytest.FixtureRequest, site: Site) -> None:
        self.s3: Any = request.getfixturevalue("s3")
        self.bucket = site.store.bucket
        self.prefix = site.url.removeprefix(f"s3://{self.bucket}/") + "/"
        self.keys: list[str] = []

    def start(self, key: str) -> None:
        self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.prefix + key)
        self.keys.append(key)

    def open(self) -> set[str]:
        found = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return {u["Key"].removeprefix(self.prefix) for u in found}


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [False, True], ids=["missing", "empty"])
def test_a_location_without_a_checkpoint_is_exit_2(site, tmp_path, make):
    if make and site.store.kind == "s3":
        parent, name = site.url.rsplit("/", 1)
        site.store.put(parent, f"{name}ed.txt", b"beside the prefix, not under it")
    elif make:
        Path(site.url).mkdir(parents=True)
    commands = [["ls"], ["inspect"], ["verify"], ["du"], ["prune", "--keep", "1"], ["gc"]]
    if not (make and site.store.kind == "local"):
        # (an empty local folder is a plain folder of no files, restored as such)
        commands.append(["restore", str(tmp_path / "out")])
    for args in commands:
        err = run(site.env, args[0], site.url, *args[1:], status=2).stderr
        (line,) = lines(err)
        assert line.startswith("aiocheckpoint: error: ") and "no checkpoint" in line, args
        assert site.url in line, args


def test_a_bad_url_is_one_line_and_debug_shows_the_traceback(child_env):
    err = run(child_env, "ls", "gs://bucket/cp", status=2).stderr
    (line,) = lines(err)
    assert line.startswith("aiocheckpoint: error: ") and "'gs'" in line
    err = run(child_env, "--debug", "ls", "gs://bucket/cp", status=2).stderr
    assert err.startswith("Traceback (most recent call last):") and "ValueError" in err
    assert lines(err)[-1] == line


def test_a_missing_version_is_exit_2(site, tmp_path):
    site.save(tmp_path, V1)
    for command in ("inspect", "verify"):
        err = run(site.env, command, site.url, "--version", "9", status=2).stderr
        (line,) = lines(err)
        assert line.startswith("aiocheckpoint: error: ") and "9" in line


def test_a_reader_that_leaves_stops_the_command_quietly(tmp_path, child_env):
    url = str(tmp_path / "cp")
    with SyncCheckpoint(url) as cp:
        cp.save(write_tree(tmp_path / "a", V1))
    reader, writer = os.pipe()
    os.close(reader)  # as `| head` does once it has read enough
    try:
        done = subprocess.run(
            [sys.executable, "-m", "aiocheckpoint", "inspect", url],
            env=child_env,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (141, "")


def test_ctrl_c_is_exit_130_in_one_line(bucket, s3_control, child_env):
    url = f"s3://{bucket}/cp"
    hold = s3_control.hold(match("GET", param="list-type"))
    script = "import sys; from aiocheckpoint._cli import main; sys.exit(main())"
    out, err, status = interrupted_when_held(hold, [script, "ls", url], child_env)
    assert (out, err, status) == ("", "aiocheckpoint: interrupted\n", 130)


# -- global options, logging, the bar ---------------------------------------------------


def test_global_options_before_or_after_the_command(bucket, child_env, tmp_path):
    url = f"s3://{bucket}/cp"
    env = dict(child_env)
    endpoint = env.pop("AWS_ENDPOINT_URL")
    src = str(write_tree(tmp_path / "a", V1))
    run(env, "--endpoint-url", endpoint, "--region", "us-east-1", "save", url, src)
    run(env, "save", url, src, "--endpoint-url", endpoint, "--region", "us-east-1")
    out = run(env, "--region", "us-east-1", "ls", url, "--json", "--endpoint-url", endpoint)
    assert [v["version"] for v in json.loads(out.stdout)] == [1]


def test_warnings_are_one_line_each_and_quiet_leaves_results_only(tmp_path, child_env):
    url = str(tmp_path / "cp")
    # a name a save skips, with a warning
    src = str(write_tree(tmp_path / "a", {**V1, ".aiocheckpoint-restore-x/y": b"skipped"}))
    out = run(child_env, "save", url, src)
    (warning,) = lines(out.stderr)
    assert warning.startswith("aiocheckpoint: warning: not saving ")
    assert "version 1 holds it" in out.stdout
    for args in (
        ["--quiet", "save", url, src],
        ["save", url, src, "-q"],
        ["verify", url, "--quiet"],
        ["--quiet", "restore", url, str(tmp_path / "out")],
        ["ls", url, "--quiet"],
    ):
        out = run(child_env, *args)
        assert out.stderr == "" and len(lines(out.stdout)) >= 1, args
    assert read_tree(tmp_path / "out") == V1


def test_debug_logs_what_the_library_does(tmp_path, child_env):
    src = str(write_tree(tmp_path / "a", V1))
    err = run(child_env, "save", str(tmp_path / "cp"), src, "--debug").stderr
    assert " INFO aiocheckpoint: committed version 1 of " in err


def run_on_terminal(env: dict[str, str], *args: str) -> tuple[str, str]:
    """``python -m aiocheckpoint *args`` with stderr on a terminal: stdout, the terminal's
    output."""
    parent, child_end = pty.openpty()
    # 24 rows of 100 columns: tqdm draws nothing on a terminal 0 columns wide
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with subprocess.Popen(
        [sys.executable, "-m", "aiocheckpoint", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=child_end,
    ) as child:
        os.close(child_end)
        shown = b""
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert child.stdout is not None
        out = child.stdout.read()
        assert child.wait(timeout=120) == 0, shown
    os.close(parent)
    return out.decode(), shown.decode(errors="replace")


def test_a_bar_on_a_terminal_unless_quiet(tmp_path, child_env):
    url = str(tmp_path / "cp")
    src = str(write_tree(tmp_path / "a", V1))
    out, shown = run_on_terminal(child_env, "save", url, src)
    assert "version 1 holds it" in out
    (final,) = final_tqdm_lines(shown)
    assert final.startswith("save: 100%|") and f"{len(V1)}/{len(V1)} files]" in final
    out, shown = run_on_terminal(child_env, "restore", url, str(tmp_path / "out"))
    (final,) = final_tqdm_lines(shown)
    assert final.startswith("restore: 100%|")
    out, shown = run_on_terminal(child_env, "verify", url, "--quiet")
    assert out.startswith("ok: ") and shown == ""


# -- aiocheckpoint.bars -----------------------------------------------------------------


def final_tqdm_lines(text: str) -> list[str]:
    """What tqdm bars left on each line, once redrawn for the last time."""
    rows = text.replace("\r\n", "\n").split("\n")
    return [row.split("\r")[-1] for row in rows if row.strip("\r")]


def test_tqdm_bars_reach_the_total_of_a_save_and_a_restore(tmp_path):
    shown = io.StringIO()
    bar = bars.tqdm(file=shown)
    dest = str(tmp_path / "cp")
    with SyncCheckpoint(dest, dest) as cp:
        cp.save(write_tree(tmp_path / "a", V1), progress=bar)
        (tmp_path / "out").mkdir()
        cp.restore(tmp_path / "out", progress=bar)
        cp.verify(progress=bar)
    save, restore, verify = final_tqdm_lines(shown.getvalue())
    total = len(V1["weights.bin"]) + 11 + 5
    for line, phase in ((save, "save"), (restore, "restore"), (verify, "verify")):
        assert line.startswith(f"{phase}: 100%|") and "3/3 files]" in line
        done, of = line.split("| ", 1)[1].split(" ", 1)[0].split("/")
        assert done == of == f"{total / 1024:.0f}k"


def test_rich_bars_reach_the_total_of_a_save_and_a_restore(tmp_path):
    from rich.console import Console

    shown = io.StringIO()
    bar = bars.rich(console=Console(file=shown, width=120))
    dest = str(tmp_path / "cp")
    with SyncCheckpoint(dest, dest) as cp:
        cp.save(write_tree(tmp_path / "a", V1), progress=bar)
        (tmp_path / "out").mkdir()
        cp.restore(tmp_path / "out", progress=bar)
    total = len(V1["weights.bin"]) + 11 + 5
    kib = f"{total / 1024:.1f}"
    save, restore = lines(shown.getvalue())
    for line, phase in ((save, "save"), (restore, "restore")):
        assert line.startswith(f"{phase} ") and f"{kib}/{kib} KiB" in line and "3/3 files" in line


class Recorder:
    """A stand-in for tqdm.tqdm that records what a bar was told."""

    made: list[Recorder] = []

    def __init__(self, total: int, **options: Any) -> None:
        self.total, self.options, self.n = total, options, 0
        self.postfix = ""
        self.closed = False
        Recorder.made.append(self)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def update(self, n: int) -> None:
        assert n >= 0 and not self.closed
        self.n += n

    def close(self) -> None:
        self.closed = True


def test_one_adapter_draws_a_bar_per_operation(monkeypatch):
    monkeypatch.setattr(Recorder, "made", [])
    bar = bars.tqdm(tqdm_class=Recorder, leave=False)
    event = aiocheckpoint.Progress
    bar(event("save", 0, 2, 0, 100))
    bar(event("save", 1, 2, 60, 120))  # the total grew
    bar(event("save", 2, 2, 120, 120, finished=True))
    bar(event("restore", 0, 2, 0, 120))
    bar(event("restore", 1, 2, 50, 120))  # failed: no finished event
    bar(event("restore", 0, 2, 0, 120))  # the next restore
    bar.close()
    first, failed, again = Recorder.made
    assert (first.n, first.total, first.postfix, first.closed) == (120, 120, "2/2 files", True)
    assert first.options == {
        "unit": "B",
        "unit_scale": True,
        "unit_divisor": 1024,
        "desc": "save",
        "leave": False,
    }
    assert (failed.n, failed.closed, failed.options["desc"]) == (50, True, "restore")
    assert (again.n, again.closed) == (0, True)


def test_bars_are_imported_only_when_made(child_env):
    script = (
        "import sys, aiocheckpoint, aiocheckpoint.bars, aiocheckpoint._cli\n"
        "print(sorted(m for m in ('tqdm', 'rich') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=child_env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "[]\n", "")


def test_a_missing_bar_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "rich", None)
    with pytest.raises(ImportError, match=r"pip install 'aiocheckpoint\[tqdm\]'"):
        bars.tqdm()
    with pytest.raises(ImportError, match=r"pip install 'aiocheckpoint\[rich\]'"):
        bars.rich()
