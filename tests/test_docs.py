"""Every example in the docs runs, and the docs build without a warning.

A page's examples run in order, in a fresh folder that holds ``model_dir/`` (two small
files), with S3 on the test server and an empty bucket ``my-bucket``:

- ```` ```python ```` blocks run in one namespace per page, as a reader would paste them;
- ```` ```console ```` blocks run each ``$ command`` in a shell (the project's scripts
  first on the PATH) and expect exit status 0, or N where the line ends ``# exit N``. The
  lines shown under a command are its output (stdout and stderr), compared in any order
  with times and data folders' random names masked, ``/home/me`` standing for the folder
  it runs in; a command with no lines under it, or a line ``...``, is not compared;
- other blocks (``sh`` for install lines, ``text`` for output) are shown, not run.

Where a page names MinIO's usual address, ``http://localhost:9000``, the runner points it
at the test server.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = ("python", "console")
MINIO = "http://localhost:9000"
FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```\s*$", re.M | re.S)  # indented too
EXIT = re.compile(r"\s+# exit (\d+)$")
TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?")
HEX = re.compile(r"(?<=-)[0-9a-f]{12}\b")  # a save's data folder: 0000000001-636ce67dbea7
HOME = "/home/me"  # the folder the examples run in, as the pages show it


def blocks(page: Path) -> list[tuple[str, str, int]]:
    """The page's fenced blocks: (language, code, line number)."""
    text = page.read_text()
    return [
        (m.group(2), textwrap.dedent(m.group(3)), text.count("\n", 0, m.start()) + 2)
        for m in FENCE.finditer(text)
    ]


def runnable(page: Path) -> bool:
    return any(lang in RUN for lang, _, _ in blocks(page))


@pytest.fixture
def my_bucket(s3: Any, s3_server: Any) -> Any:
    s3.create_bucket(Bucket="my-bucket")
    yield "my-bucket"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="my-bucket"):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket="my-bucket", Delete={"Objects": keys})
    for upload in s3.list_multipart_uploads(Bucket="my-bucket").get("Uploads", []):
        s3.abort_multipart_upload(
            Bucket="my-bucket", Key=upload["Key"], UploadId=upload["UploadId"]
        )
    s3.delete_bucket(Bucket="my-bucket")


@pytest.mark.parametrize(
    "page", [p for p in PAGES if runnable(p)], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_the_examples_of_a_page_run(page, my_bucket, s3_server, tmp_path, monkeypatch):
    (tmp_path / "model_dir").mkdir()
    (tmp_path / "model_dir" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "model_dir" / "config.json").write_text('{"layers": 4}\n')
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    namespace: dict[str, Any] = {"__name__": "__main__"}
    handlers = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM)}
    try:  # a page may set a signal handler, as a script would
        for lang, code, line in blocks(page):
            code = code.replace(MINIO, s3_server.endpoint_url)
            run(lang, code, where(page, line), env, namespace)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def where(page: Path, line: int) -> str:
    return f"{page.relative_to(ROOT)}:{line}"


def run(lang: str, code: str, where: str, env: dict[str, str], namespace: dict[str, Any]) -> None:
    if lang == "python":
        exec(compile(code, where, "exec"), namespace)
    elif lang == "console":
        for command, shown in commands(code):
            expected = EXIT.search(command)
            done = subprocess.run(
                command, shell=True, env=env, capture_output=True, text=True, timeout=300
            )
            want = int(expected.group(1)) if expected else 0
            assert done.returncode == want, (where, command, done.stdout, done.stderr)
            if any(shown) and "..." not in shown:  # none or "...": output not shown
                got = (done.stdout + done.stderr).replace(os.getcwd(), HOME).splitlines()
                assert masked(got) == masked(shown), (where, command)


def commands(code: str) -> list[tuple[str, list[str]]]:
    """Each ``$ command`` of a console block, and the lines shown after it."""
    out: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def masked(lines: list[str]) -> list[str]:
    """The lines, sorted (stdout and stderr interleave), with what differs between runs
    (times, random folder names) masked and trailing blanks dropped."""
    lines = [TIME.sub("<time>", HEX.sub("<hex>", line)).rstrip() for line in lines]
    return sorted(line for line in lines if line)


def test_the_docs_build_with_no_warnings(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[docs]' (the test command does)")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "reference" / "index.html").is_file()
