"""Small PUTs sent the way botocore sent the first one, without its per-request work.

With many small files the client's CPU per request decides the speed. A ``put_object``
spends about 0.8 ms of it on work that gives the same result for every small PUT to a
bucket: resolving the endpoint, building the user agent, emitting some thirty events,
parsing the reply. ``DirectPut`` watches one PUT that botocore carried out, checks that it
can send the same request itself (same URL but for the key, SigV4 with the same region,
the same signed headers, an unsigned payload), then signs each later PUT with botocore's
``S3SigV4Auth`` and the session's credentials and sends it through the client's own HTTP
session (its pool, TLS and proxy settings).

Only a plain 200 counts. Anything else -- an error status, a redirect, a dropped
connection -- makes the caller send that PUT through botocore, which retries, follows
redirects and names the error as usual, and turns this path off: for a while after a
server or connection error, for good after any other answer.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from io import BytesIO
from typing import Any
from urllib.parse import quote

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

log = logging.getLogger("aiocheckpoint")

#: After a server or connection error, PUTs go through botocore (and its backoff) this long.
PAUSE = 10.0

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=[^/]+/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?Signature=[0-9a-f]+"
)
# What this module sends, and what botocore may add that it need not repeat.
_SIGNED = {"host", "x-amz-checksum-crc32", "x-amz-content-sha256", "x-amz-date"}
_UNSIGNED = {"authorization", "content-length", "user-agent", "expect"}
_PER_REQUEST = {"amz-sdk-invocation-id", "amz-sdk-request"}

_sent: ContextVar[list[Any] | None] = ContextVar("aiocheckpoint_sent", default=None)


def record_put(request: Any, **kwargs: Any) -> None:
    """``before-send.s3.PutObject`` handler: keep the request a watched PUT sends."""
    sent = _sent.get()
    if sent is not None:
        sent.append(request)


class DirectPut:
    """Sends small PUTs to one bucket directly once it has seen botocore send one."""

    def __init__(self, client: Any, credentials: Any) -> None:
        self._client = client
        self._credentials = credentials
        self._http: Any = getattr(getattr(client, "_endpoint", None), "http_session", None)
        self._base: str | None = None  # the URL of a PUT, up to the key
        self._region = self._service = self._user_agent = ""
        self._off = credentials is None or not hasattr(self._http, "send")
        self._paused_until = 0.0

    @property
    def ready(self) -> bool:
        return self._base is not None and not self._off and time.monotonic() >= self._paused_until

    @contextmanager
    def watch(self, key: str) -> Iterator[None]:
        """Around a botocore PUT of ``key`` (the full key): learn from it if it succeeds."""
        if self._base is not None or self._off:
            yield
            return
        sent: list[Any] = []
        token = _sent.set(sent)
        try:
            yield
        finally:
            _sent.reset(token)
        if sent and self._base is None:
            self._learn(key, sent[-1])

    def _learn(self, key: str, request: Any) -> None:
        headers = {str(k).lower(): _text(v) for k, v in request.headers.items()}
        auth = _AUTH.fullmatch(headers.get("authorization", ""))
        quoted = quote(key, safe="/~")
        url = str(request.url)
        signed = set(auth["signed"].split(";")) if auth else set()
        allowed = _SIGNED | {"x-amz-security-token"}
        if (
            auth is None
            or not url.endswith("/" + quoted)
            or signed - allowed
            or set(headers) - allowed - _UNSIGNED - _PER_REQUEST
            or headers.get("x-amz-content-sha256") != "UNSIGNED-PAYLOAD"
        ):
            log.debug("small PUTs go through botocore: cannot repeat %s %s", url, sorted(headers))
            self._off = True
            return
        self._region, self._service = auth["region"], auth["service"]
        self._user_agent = headers.get("user-agent", "")
        self._base = url[: -len(quoted)]

    async def put(self, key: str, body: BytesIO, size: int, checksum: str) -> bool:
        """PUT ``body`` (``size`` bytes from its position) at ``key``; False if the caller
        must send it.

        The body is back at its position when this returns False.
        """
        assert self._base is not None
        credentials = await self._credentials.get_frozen_credentials()
        start = body.tell()
        url = self._base + quote(key, safe="/~")
        request = AWSRequest(
            "PUT",
            url,
            headers={
                "x-amz-checksum-crc32": checksum,
                "User-Agent": self._user_agent,
                "Content-Length": str(size),
            },
            data=body,
        )
        # The client's config decides, as for botocore's own PUTs, that the payload is
        # not hashed (the CRC-32 header covers it).
        request.context["client_config"] = self._client.meta.config
        S3SigV4Auth(credentials, self._service, self._region).add_auth(request)
        try:
            response = await self._http.send(request.prepare())
        except Exception as exc:
            return self._failed(url, body, start, f"{type(exc).__name__}: {exc}", server=True)
        status = response.status_code
        echoed = response.headers.get("x-amz-checksum-crc32", checksum)
        if status != 200 or echoed != checksum:
            return self._failed(url, body, start, f"HTTP {status}", server=status >= 500)
        return True

    def _failed(self, url: str, body: BytesIO, start: int, why: str, *, server: bool) -> bool:
        if server:
            self._paused_until = time.monotonic() + PAUSE
        else:
            self._off = True
        log.debug(
            "direct PUT %s failed (%s); sending it through botocore, direct PUTs %s",
            url,
            why,
            f"paused for {PAUSE:g} s" if server else "off",
        )
        body.seek(start)
        return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
