"""Storage backends and the registry that maps a URL to one.

A new backend is one module, one row in ``Storages.open``, one test fixture parameter.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from anyio import CapacityLimiter

from ._base import FileCopy, MultipartUpload, ObjectInfo, Storage
from ._local import LocalStorage

__all__ = (
    "FileCopy",
    "Location",
    "MultipartUpload",
    "ObjectInfo",
    "Storage",
    "Storages",
    "check_available",
    "check_botocore_config",
    "parse_location",
)

_data_loader: Any = None  # botocore's model loader, shared by the S3 clients of this process


@dataclass(frozen=True)
class Location:
    scheme: str  # "file" or "s3"
    path: str  # local: an absolute path; s3: the bucket
    prefix: str = ""  # s3 only

    def __str__(self) -> str:
        return self.path if self.scheme == "file" else f"s3://{self.path}/{self.prefix}"


def parse_location(value: str | os.PathLike[str], what: str) -> Location:
    """Parse a local path, ``file://`` URL or ``s3://bucket/prefix``; no I/O.

    :raises ValueError: unknown scheme, or an ``s3://`` URL without a bucket.
    :raises TypeError: ``value`` is neither a string nor path-like.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or os.PathLike, not {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a text path, not {type(text).__name__}")
    if "://" not in text:
        return Location("file", os.path.abspath(os.path.expanduser(text)))
    url = urlsplit(text)
    scheme = url.scheme.lower()
    if scheme == "file":
        if url.netloc not in ("", "localhost"):
            raise ValueError(f"{what} {text!r}: file:// URLs on another host are not supported")
        return Location("file", os.path.abspath(unquote(url.path)))
    if scheme == "s3":
        if not url.netloc:
            raise ValueError(f"{what} {text!r} has no bucket: expected s3://bucket/prefix")
        return Location("s3", url.netloc, url.path.strip("/"))
    raise ValueError(
        f"{what} {text!r} has unsupported scheme {url.scheme!r}; supported: "
        "a local path, file://, s3://"
    )


def check_available(location: Location) -> None:
    """Raise ``ImportError`` saying what to install if ``location``'s backend cannot load."""
    if location.scheme != "s3":
        return
    try:
        import aiobotocore  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"{location} needs the s3 extra: pip install 'aiocheckpoint[s3]'"
        ) from exc


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None = None
    region_name: str | None = None
    botocore_config: Any = None
    max_pool_connections: int = 10
    piece: int = 4 * 1024 * 1024  # what one streamed GET holds in memory at most


class Storages:
    """Opens backends for locations, sharing one client per kind; closes them all."""

    def __init__(self, s3: S3Options, threads: CapacityLimiter) -> None:
        self._s3_options = s3
        self._threads = threads
        self._stack = AsyncExitStack()
        self._s3_client: Any = None

    async def open(self, location: Location) -> Storage:
        if location.scheme == "file":
            return LocalStorage(Path(location.path), self._threads)
        from ._s3 import S3Storage, no_expect_continue  # check_available() said it loads

        if self._s3_client is None:
            self._s3_client = await self._stack.enter_async_context(self._s3_client_context())
            self._s3_client.meta.events.register_last("before-call.s3", no_expect_continue)
        opts = self._s3_options
        return S3Storage(self._s3_client, location.path, location.prefix, self._threads, opts.piece)

    def _s3_client_context(self) -> Any:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        opts = self._s3_options
        session = get_session()
        # Each session would parse botocore's S3 model again (~50 ms); the loader only
        # caches read-only data, so one serves every session of the process.
        global _data_loader
        if _data_loader is None:
            _data_loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _data_loader)
        # Standard retries unless AWS_RETRY_MODE / the profile asks for adaptive; the number
        # of attempts stays botocore's (3, or AWS_MAX_ATTEMPTS / the profile's).
        mode = session.get_config_variable("retry_mode")
        config = AioConfig(
            retries={"mode": "standard" if mode in (None, "legacy") else mode},
            connect_timeout=10,
            read_timeout=60,
            # aiocheckpoint verifies CRC-32 itself while reading; don't hash twice.
            response_checksum_validation="when_required",
            # Every body carries its CRC-32 header, which S3 checks. Over https botocore then
            # skips the SHA-256 of the payload already; over http (MinIO, moto) it would
            # hash every part on the event loop.
            s3={"payload_signing_enabled": False},
            # The parameters are built here, not by users: checking each request's against
            # the model is CPU on the event loop that buys nothing.
            parameter_validation=False,
        )
        if opts.botocore_config is not None:
            config = merge_config(config, opts.botocore_config)
        pool = max(opts.max_pool_connections, config.max_pool_connections or 0)
        config = config.merge(AioConfig(max_pool_connections=pool))
        return session.create_client(
            "s3", endpoint_url=opts.endpoint_url, region_name=opts.region_name, config=config
        )

    async def aclose(self) -> None:
        self._s3_client = None
        await self._stack.aclose()


#: Options of botocore's ``Config`` that hold a dict: merged key by key, so that a user's
#: ``s3={"addressing_style": "path"}`` keeps the other ``s3`` settings.
_DICT_OPTIONS = ("s3", "retries", "proxies_config")


def merge_config(ours: Any, theirs: Any) -> Any:
    """``theirs`` (a botocore ``Config``) over ``ours``; dict options merged key by key."""
    merged = ours.merge(theirs)
    for name in _DICT_OPTIONS:
        mine, given = getattr(ours, name, None), getattr(theirs, name, None)
        if isinstance(mine, dict) and isinstance(given, dict):
            merged = merged.merge(type(ours)(**{name: {**mine, **given}}))
    return merged


def check_botocore_config(config: Any) -> None:
    if config is None:
        return
    try:
        from botocore.config import Config

        ok = isinstance(config, Config)
    except ImportError:  # no botocore: whatever it is, it is not its Config
        ok = False
    if not ok:
        raise TypeError(
            f"botocore_config must be a botocore.config.Config, not {type(config).__name__}"
        )
