"""s3rver, an S3 server written apart from moto (node, from the npm registry), as a second
S3 implementation for the tests. The README's test command installs it into
``tests/s3rver/node_modules`` from the pinned lock file; where node is missing, the tests
that need it are skipped and say why."""

from __future__ import annotations

import json
import select
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "s3rver"

#: The only key pair s3rver accepts.
ACCESS_KEY = SECRET_KEY = "S3RVER"

#: What s3rver lacks that a few checks need (``@pytest.mark.needs(...)``):
#: ``abort`` - AbortMultipartUpload answers MethodNotAllowed: parts stay;
#: ``list_uploads`` - ListMultipartUploads answers NotImplemented;
#: ``conditional`` - If-None-Match: * on PUT is ignored: the second PUT replaces.
LACKS = frozenset({"abort", "list_uploads", "conditional"})


class S3rver:
    """s3rver on 127.0.0.1 and a free port, storing objects under ``directory``."""

    def __init__(self, directory: Path) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.skip("node is not installed: the s3rver backend needs it (see README.md)")
        if not (HERE / "node_modules" / "s3rver").is_dir():
            if shutil.which("npm") is None:  # some distributions package it apart
                pytest.skip("npm is not installed: it installs s3rver (see README.md)")
            pytest.fail(
                "s3rver is not installed: run `npm ci --prefix tests/s3rver` "
                "(the README's test command does)"
            )
        self._process = subprocess.Popen(
            [node, str(HERE / "serve.js"), str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], 60)
        line = self._process.stdout.readline() if ready else ""  # "" if it died first
        if not line:
            self.stop()
            pytest.fail(f"s3rver did not start in 60 s (exit status {self._process.returncode})")
        self.endpoint_url = f"http://127.0.0.1:{json.loads(line)['port']}"

    def stop(self) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()  # it exits when its stdin closes
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
