"""The virtualenvs the peer runners run in, one per tool, so their pins don't fight.

    python = venvs.python_for("s3fs", Path("benchmarks/.venvs"))
    versions = venvs.versions("s3fs", Path("benchmarks/.venvs"))

An env is made once and reused; it is made again when its requirement list changes (the
list is kept in a marker file inside it). Run as a script, it makes every env:
``python benchmarks/venvs.py [ROOT]``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

# env name -> what pip installs
REQUIREMENTS: dict[str, list[str]] = {
    "boto3": ["boto3"],
    "s3fs": ["s3fs"],
    "obstore": ["obstore"],
    "flytekit": ["flytekit"],
}

# env name -> the packages whose versions go in the results
KEY_PACKAGES: dict[str, list[str]] = {
    "boto3": ["boto3", "botocore", "s3transfer"],
    "s3fs": ["s3fs", "fsspec", "aiobotocore", "botocore"],
    "obstore": ["obstore"],
    "flytekit": ["flytekit", "s3fs", "fsspec", "aiobotocore", "botocore"],
}

MARKER = "bench-requirements.txt"


def _python(path: Path) -> Path:
    return path / "bin" / "python"


def python_for(env: str, root: Path) -> Path:
    """The python of the virtualenv ``root/env``, made (or remade) first if needed.

    :raises KeyError: for an env not in ``REQUIREMENTS``.
    :raises subprocess.CalledProcessError: if pip fails.
    """
    wanted = "\n".join(REQUIREMENTS[env]) + "\n"
    path = root / env
    marker = path / MARKER
    if marker.exists() and marker.read_text() == wanted:
        return _python(path)
    if path.exists():
        shutil.rmtree(path)
    print(f"making the {env} virtualenv in {path} ...", file=sys.stderr, flush=True)
    venv.EnvBuilder(with_pip=True).create(path)
    pip = [str(_python(path)), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", *REQUIREMENTS[env]], check=True)
    marker.write_text(wanted)  # last, so a failed install is retried next time
    return _python(path)


def versions(env: str, root: Path) -> dict[str, str]:
    """The installed versions of the env's key packages, as pip lists them."""
    out = subprocess.run(
        [str(python_for(env, root)), "-m", "pip", "list", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    installed = {item["name"].lower(): item["version"] for item in json.loads(out)}
    return {name: installed[name] for name in KEY_PACKAGES[env] if name in installed}


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / ".venvs"
    for name in REQUIREMENTS:
        python_for(name, root)
        print(name, versions(name, root))
