from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from _s3rver import ACCESS_KEY, LACKS, SECRET_KEY, S3rver
from _s3server import Middleware, S3Server

_server: S3Server | None = None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pytest.MonkeyPatch]:
    """No AWS setting of the machine reaches the tests: test keys, one region, empty
    config files. The S3 servers add their endpoint."""
    aws_dir = tmp_path_factory.mktemp("aws-config")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                mp.delenv(name)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(aws_dir / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_dir / "credentials"))
        yield mp


@pytest.fixture(scope="session")
def s3_server(aws_env: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """moto, the default endpoint of the session (``AWS_ENDPOINT_URL``)."""
    global _server
    server = S3Server()
    server.start()
    aws_env.setenv("AWS_ENDPOINT_URL", server.endpoint_url)
    _server = server
    try:
        yield server
    finally:
        _server = None
        server.stop()


@pytest.fixture(scope="session")
def s3rver_server(
    aws_env: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3rver]:
    server = S3rver(tmp_path_factory.mktemp("s3rver"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3rver(s3rver_server: S3rver, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client of s3rver; the checkpoints this test opens talk to s3rver too."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3rver_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    return boto3.session.Session().client(
        "s3", endpoint_url=s3rver_server.endpoint_url, region_name="us-east-1"
    )


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
    with _new_bucket(s3, s3_control.reset) as name:
        yield name


@pytest.fixture
def s3rver_bucket(s3rver: Any) -> Iterator[str]:
    with _new_bucket(s3rver, uploads=False) as name:  # it cannot list uploads
        yield name


@contextlib.contextmanager
def _new_bucket(s3: Any, reset: Any = None, *, uploads: bool = True) -> Iterator[str]:
    """A fresh bucket, emptied and deleted afterwards (once ``reset`` let held requests
    go)."""
    name = f"test-{uuid.uuid4().hex[:24]}"
    s3.create_bucket(Bucket=name)
    yield name
    if reset is not None:
        reset()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    if uploads:
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``location`` is local and moto, and s3rver too in modules that list it in their
    ``LOCATIONS``."""
    if "location" in metafunc.fixturenames:
        kinds = getattr(metafunc.module, "LOCATIONS", ("local", "s3"))
        metafunc.parametrize("location", kinds, indirect=True)


@pytest.fixture
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    """Where the test's checkpoints go: local disk, moto or s3rver. A test marked
    ``needs(feature)`` with a feature s3rver lacks must fail there (strict xfail): the
    difference is checked."""
    kind = request.param
    if kind == "local":
        return Location("local", tmp_path / "store")
    if kind == "s3rver":
        lacking = {f for m in request.node.iter_markers("needs") for f in m.args} & LACKS
        if lacking:
            reason = f"s3rver lacks {', '.join(sorted(lacking))}"
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
        client, bucket = request.getfixturevalue("s3rver"), "s3rver_bucket"
    else:
        client, bucket = request.getfixturevalue("s3"), "bucket"
    return Location(kind, tmp_path, s3=client, bucket=request.getfixturevalue(bucket))


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for a child Python that imports the same aiocheckpoint as the tests."""
    import aiocheckpoint

    package_root = str(Path(aiocheckpoint.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env
