from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from _s3server import Middleware, S3Server

_server: S3Server | None = None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    global _server
    aws_dir = tmp_path_factory.mktemp("aws-config")
    server = S3Server()
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                mp.delenv(name)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", server.endpoint_url)
        mp.setenv("AWS_CONFIG_FILE", str(aws_dir / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_dir / "credentials"))
        _server = server
        try:
            yield server
        finally:
            _server = None
            server.stop()


@pytest.fixture(autouse=True)
def _fresh_server_state() -> Iterator[None]:
    if _server is not None:
        _server.control.reset()
    yield
    if _server is not None:
        _server.control.reset()


@pytest.fixture
def s3_control(s3_server: S3Server) -> Middleware:
    """Counters, delays, holds and injected failures of the S3 server."""
    return s3_server.control


@pytest.fixture(scope="session")
def s3(s3_server: S3Server) -> Any:
    """A plain boto3 client for looking at and tampering with the server's state."""
    return boto3.session.Session().client(
        "s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1"
    )


@pytest.fixture
def bucket(s3: Any, s3_control: Middleware) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:24]}"
    s3.create_bucket(Bucket=name)
    yield name
    s3_control.reset()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    s3.delete_bucket(Bucket=name)


class Location:
    """Where checkpoints go in one test, and direct access to what lands there."""

    def __init__(self, kind: str, root: Path, s3: Any = None, bucket: str = "") -> None:
        self.kind = kind
        self._root = root
        self._s3 = s3
        self.bucket = bucket

    def new(self) -> str:
        """A fresh, empty checkpoint URL (local: a path that does not exist yet)."""
        name = f"cp-{uuid.uuid4().hex[:10]}"
        if self.kind == "local":
            return str(self._root / name)
        return f"s3://{self.bucket}/{name}"

    def _prefix(self, url: str) -> str:
        return url[len(f"s3://{self.bucket}/") :].rstrip("/") + "/"

    def keys(self, url: str) -> list[str]:
        """Relative keys of every file or object under ``url``."""
        if self.kind == "local":
            root = Path(url)
            if not root.exists():
                return []
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        prefix = self._prefix(url)
        keys = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            keys += [obj["Key"][len(prefix) :] for obj in page.get("Contents", [])]
        return sorted(keys)

    def read(self, url: str, key: str) -> bytes:
        if self.kind == "local":
            return (Path(url) / key).read_bytes()
        body = self._s3.get_object(Bucket=self.bucket, Key=self._prefix(url) + key)["Body"]
        return body.read()

    def put(self, url: str, key: str, data: bytes) -> None:
        if self.kind == "local":
            path = Path(url) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self._s3.put_object(Bucket=self.bucket, Key=self._prefix(url) + key, Body=data)

    def delete(self, url: str, key: str) -> None:
        if self.kind == "local":
            (Path(url) / key).unlink()
        else:
            self._s3.delete_object(Bucket=self.bucket, Key=self._prefix(url) + key)

    def manifests(self, url: str) -> list[str]:
        return [k for k in self.keys(url) if k.startswith(".aiocheckpoint/manifests/")]

    def manifest(self, url: str) -> dict[str, Any]:
        """The newest committed manifest, parsed."""
        manifests = self.manifests(url)
        assert manifests, f"no manifest under {url}"
        return json.loads(self.read(url, manifests[-1]))

    def data_keys(self, url: str) -> set[str]:
        return {k for k in self.keys(url) if k.startswith(".aiocheckpoint/data/")}

    def referenced(self, url: str) -> set[str]:
        """Keys of the data objects the newest manifest points at."""
        files = self.manifest(url)["files"]
        return {".aiocheckpoint/" + entry["object"] for entry in files.values()}


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "local":
        return Location("local", tmp_path / "store")
    return Location(
        "s3",
        tmp_path,
        s3=request.getfixturevalue("s3"),
        bucket=request.getfixturevalue("bucket"),
    )


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for a child Python that imports the same aiocheckpoint as the tests."""
    import aiocheckpoint

    package_root = str(Path(aiocheckpoint.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env
