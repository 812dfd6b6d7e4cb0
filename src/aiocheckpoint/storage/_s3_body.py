"""A GET's body that survives a broken connection: the rest comes from a ranged GET of
the very object the first response came from (``If-Match`` its ETag), as many times as
the client's retry settings allow."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
from botocore.exceptions import HTTPClientError, IncompleteReadError

from .._errors import StorageError

if TYPE_CHECKING:
    from ._s3 import S3Storage

log = logging.getLogger("aiocheckpoint")

#: What reading a body raises when the connection breaks: aiohttp's ClientPayloadError
#: (EOF before Content-Length), botocore's ResponseStreamingError and ReadTimeoutError
#: (both HTTPClientError), IncompleteReadError, and OS-level resets and timeouts.
_BROKEN = (aiohttp.ClientError, HTTPClientError, IncompleteReadError, OSError, asyncio.TimeoutError)

#: botocore's standard mode waits rand(0, 1) * min(2 ** (retry - 1), 20) s before a retry;
#: its coming retries scale that by 0.05 for errors that are not throttling, as a broken
#: connection is not: so does this, capped lower.
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 5.0


def total_attempts(config: Any) -> int:
    """The attempts botocore makes at one request, given the client's ``meta.config``.

    botocore resolves ``retries={"max_attempts": n}`` (retries after the first: n + 1 in
    all), ``retries={"total_max_attempts": n}``, ``AWS_MAX_ATTEMPTS`` and the profile's
    ``max_attempts`` into ``retries["total_max_attempts"]`` when it creates the client;
    without any of them it makes 3 (standard and adaptive modes) or 5 (legacy).
    """
    retries = getattr(config, "retries", None) or {}
    if "total_max_attempts" in retries:
        n = retries["total_max_attempts"]
    elif "max_attempts" in retries:
        n = retries["max_attempts"] + 1
    else:
        n = 5 if retries.get("mode", "legacy") == "legacy" else 3
    return max(1, int(n))


def backoff(retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first)."""
    return random.random() * min(_BACKOFF_BASE * 2.0 ** (retry - 1), _BACKOFF_CAP)


class Body:
    """A GET's body from byte ``start`` on (``length`` bytes, or to the end); its read
    errors name the object. :meth:`open` sends the GET; :meth:`close` always follows.

    The resume logic runs only when a read raises, so an unbroken body costs what
    aiobotocore's does.
    """

    def __init__(self, store: S3Storage, key: str, start: int, length: int | None) -> None:
        self._store = store
        self._key = key
        self._start = start
        self._length = length
        self._body: Any = None
        self._etag: str | None = None
        self._got = 0  # bytes handed out so far
        self._attempt = 1
        self.size = 0

    async def open(self) -> None:
        extra = {}
        if self._start or self._length is not None:
            end = "" if self._length is None else str(self._start + self._length - 1)
            extra["Range"] = f"bytes={self._start}-{end}"
        response = await self._get(**extra)
        self._etag = response.get("ETag")
        self.size = int(response["ContentLength"])
        if extra and not self._from_start(response):
            self.close()
            raise StorageError(
                f"S3 GET {self._store.describe(self._key)}: asked for bytes from"
                f" {self._start}, got {response.get('ContentRange') or 'the whole object'}"
            )
        if self._length is not None and self.size > self._length:
            # More than the range, from its first byte on (s3rver answers "bytes=0-0" with
            # the whole object): the bytes asked for are the first ones.
            log.debug("GET of %s: %d bytes for a range of %d", self._key, self.size, self._length)
            self.size = self._length

    def _from_start(self, response: dict[str, Any]) -> bool:
        """Whether the body begins at the byte asked for."""
        content_range = response.get("ContentRange")  # "bytes 0-10/11"
        if not content_range:
            return self._start == 0  # the whole object
        first = content_range.removeprefix("bytes ").split("-", 1)[0]
        return first.isdigit() and int(first) == self._start

    def close(self) -> None:
        """Release the connection (the pool gets it back if the body was read to the end)."""
        if self._body is not None:
            self._body.close()

    async def read_pieces(self, limit: int) -> list[bytes]:
        """Up to ``limit`` bytes, as they arrived; none at the end."""
        pieces: list[bytes] = []
        n = 0
        while n < limit and self._got < self.size:
            try:
                data = await self._body.read(min(limit - n, self.size - self._got))
            except Exception as exc:
                await self._resume(exc)
                continue
            if not data:
                break  # aiobotocore raises for a short body; this is a safety net
            pieces.append(data)
            n += len(data)
            self._got += len(data)
        return pieces

    async def read_all(self) -> bytearray:
        """The whole body in one buffer of its Content-Length, filled chunk by chunk,
        instead of joining the chunks at the end (which holds the body twice)."""
        data = bytearray(self.size)
        with memoryview(data) as view:
            while self._got < self.size:
                try:
                    n = await self._body.readinto(view[self._got :])
                except Exception as exc:
                    await self._resume(exc)
                    continue
                if not n:
                    break  # a safety net, as in read_pieces
                self._got += n
        if self._got < self.size:
            del data[self._got :]
        return data

    async def _get(self, **extra: str) -> dict[str, Any]:
        """A GET of the object, its body in ``_body``."""
        store, key = self._store, self._key
        while True:
            try:
                response = await store.client.get_object(
                    Bucket=store.bucket, Key=store.full_key(key), **extra
                )
                break
            except aiohttp.ClientError as exc:
                # An error response whose body broke off: aiobotocore reads that body
                # outside botocore's retries. (What botocore raises, it has retried.)
                await self._next_attempt(exc)
            except Exception as exc:
                raise store.error("GET", key, exc) from exc
        self._body = response["Body"]
        return response  # type: ignore[no-any-return]

    async def _next_attempt(self, exc: Exception) -> None:
        """Count one more attempt and wait before it, or raise if none is left."""
        url = self._store.describe(self._key)
        if self._attempt >= self._store.attempts:
            raise StorageError(
                f"S3 GET {url} failed after {self._attempt} attempts: {exc!r}"
            ) from exc
        self._attempt += 1
        log.debug(
            "GET of %s: attempt %d of %d from byte %d after %r",
            url, self._attempt, self._store.attempts, self._start + self._got, exc,
        )  # fmt: skip
        await anyio.sleep(backoff(self._attempt - 1))

    async def _resume(self, exc: Exception) -> None:
        """Continue from the first byte not yet handed out, or raise why not."""
        store, key = self._store, self._key
        if not isinstance(exc, _BROKEN) or not self._etag:
            raise store.error("GET", key, exc) from exc
        self.close()
        await self._next_attempt(exc)
        offset = self._start + self._got
        end = self._start + self.size - 1
        try:
            # If-Match: never splice another object's bytes onto these.
            response = await self._get(Range=f"bytes={offset}-{end}", IfMatch=self._etag)
        except FileExistsError as error:  # what store.error makes of a 412
            raise StorageError(
                f"{store.describe(key)} changed while being read (its ETag is no longer"
                f" {self._etag}); the download was not resumed"
            ) from error.__cause__
        if int(response["ContentLength"]) != self.size - self._got:
            raise StorageError(
                f"S3 GET {store.describe(key)}: asked for bytes {offset}-{end}, got"
                f" {response['ContentLength']}; the download was not resumed"
            )
