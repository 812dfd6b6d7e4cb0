"""What the library tells, through logging only, and what importing it costs."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from _trees import write_tree

from aiocheckpoint import AsyncCheckpoint

pytestmark = pytest.mark.anyio


async def test_each_commit_logs_one_info_line_and_nothing_is_printed(
    location, tmp_path, caplog, capsys
):
    files = {"a.bin": b"a" * 100, "b/c.bin": b"c" * 23}
    dest = location.new()
    with caplog.at_level(logging.DEBUG, logger="aiocheckpoint"):
        async with AsyncCheckpoint(dest) as cp:
            await cp.save(write_tree(tmp_path / "src", files))
            await cp.write(b"xyz")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos[0].startswith("committed version 1 of ")
    assert "2 files" in infos[0] and "123 bytes" in infos[0]
    assert infos[1].startswith("committed version 2 of ") and "3 files" in infos[1]
    assert len(infos) == 2
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("stored 2 files in " in m and "pack-000001" in m for m in debug)
    assert capsys.readouterr() == ("", "")


def test_import_does_not_load_aiobotocore_until_s3_is_used(tmp_path):
    script = (
        "import sys, aiocheckpoint\n"
        "with aiocheckpoint.SyncCheckpoint(sys.argv[1]) as cp:\n"
        "    cp.write(b'local only')\n"
        "print('aiobotocore' in sys.modules, 'botocore' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "cp")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]
