"""The virtualenvs the peer runners run in, one per library, so their pins don't fight.

An env is made on first use under ``root`` and made again when its requirements change
(they are kept in a marker file inside it). Only the full benchmark calls this; ``--quick``
runs only what the project's own environment can import.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

# env name -> (what pip installs, the packages whose versions the results show)
ENVS: dict[str, tuple[list[str], list[str]]] = {
    "boto3": (["boto3"], ["boto3", "botocore", "s3transfer"]),
    "s3fs": (["s3fs"], ["s3fs", "aiobotocore", "botocore"]),
    "obstore": (["obstore"], ["obstore"]),
    "flytekit": (["flytekit"], ["flytekit", "s3fs", "botocore"]),
}
MARKER = "bench-requirements.txt"


def python_for(env: str, root: Path) -> Path:
    """The python of the virtualenv ``root/env``, made (or remade) first if needed.

    :raises subprocess.CalledProcessError: if pip fails.
    """
    wanted = "\n".join(ENVS[env][0]) + "\n"
    path = root / env
    python = path / "bin" / "python"
    if (path / MARKER).exists() and (path / MARKER).read_text() == wanted:
        return python
    shutil.rmtree(path, ignore_errors=True)
    print(f"making the {env} virtualenv in {path} ...", file=sys.stderr, flush=True)
    venv.EnvBuilder(with_pip=True).create(path)
    pip = [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check", "install"]
    subprocess.run([*pip, *ENVS[env][0]], check=True)
    (path / MARKER).write_text(wanted)  # last, so a failed install is retried next time
    return python


def versions(python: Path | str, names: list[str]) -> str:
    """``"name x.y, ..."`` of ``names`` as ``python`` has them installed; "" if one lacks."""
    script = "import importlib.metadata as m, sys\n"
    script += "print(*(f'{n} {m.version(n)}' for n in sys.argv[1:]), sep=', ')"
    out = subprocess.run([str(python), "-c", script, *names], capture_output=True, text=True)
    return out.stdout.strip()
