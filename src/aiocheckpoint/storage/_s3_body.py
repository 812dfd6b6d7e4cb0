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
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError

from .._errors import StorageError

if TYPE_CHECKING:
    from ._s3 import S3Storage

log = logging.getLogger("aiocheckpoint")

#: What reading a body raises when the connection breaks: aiohttp's ClientPayloadError
#: (EOF before Content-Length), botocore's ResponseStreamingError and ReadTimeoutError
#: (both HTTPClientError), IncompleteReadError, and OS-level resets and timeouts.
_BROKEN = (aiohttp.ClientError, HTTPClientError, IncompleteReadError, OSError, asyncio.TimeoutError)

#: botocore's standard mode waits rand(0, 1) * min(0.05 * 2 ** (retry - 1), 20) s before a
#: retry that is not throttled: the same here, capped lower.
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
    """A GET's body of ``size`` bytes from ``start`` on; its read errors name the object.

    The resume logic runs only when a read raises, so an unbroken body costs what
    aiobotocore's does.
    """

    def __init__(self, store: S3Storage, key: str, response: dict[str, Any], start: int) -> None:
        self._store = store
        self._key = key
        self._body = response["Body"]
        self._etag = response.get("ETag")
        self._start = start
        self._got = 0  # bytes handed out so far
        self._attempt = 1
        self.size = int(response["ContentLength"])

    def close(self) -> None:
        """Release the connection (the pool gets it back if the body was read to the end)."""
        self._body.close()

    async def read_pieces(self, limit: int) -> list[bytes]:
        """Up to ``limit`` bytes, as they arrived; none at the end."""
        pieces: list[bytes] = []
        n = 0
        while n < limit and self._got < self.size:
            try:
                data = await self._body.read(limit - n)
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

    async def _resume(self, exc: Exception) -> None:
        """Continue from the first byte not yet handed out, or raise why not."""
        store, key = self._store, self._key
        if not isinstance(exc, _BROKEN) or not self._etag:
            raise store.error("GET", key, exc) from exc
        url = store.describe(key)
        if self._attempt >= store.attempts:
            raise StorageError(
                f"S3 GET {url} failed after {self._attempt} attempts: {exc!r}"
            ) from exc
        self.close()
        self._attempt += 1
        offset = self._start + self._got
        log.debug(
            "resuming GET of %s at byte %d (attempt %d of %d) after %r",
            url, offset, self._attempt, store.attempts, exc,
        )  # fmt: skip
        await anyio.sleep(backoff(self._attempt - 1))
        end = self._start + self.size - 1
        try:
            response = await store.client.get_object(
                Bucket=store.bucket,
                Key=store.full_key(key),
                Range=f"bytes={offset}-{end}",
                IfMatch=self._etag,  # never splice another object's bytes onto these
            )
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code"))
            if code in ("PreconditionFailed", "412"):
                raise StorageError(
                    f"{url} changed while being read (its ETag is no longer {self._etag});"
                    " the download was not resumed"
                ) from error
            raise store.error("GET", key, error) from error
        except Exception as error:
            raise store.error("GET", key, error) from error
        self._body = response["Body"]
        if int(response["ContentLength"]) != self.size - self._got:
            raise StorageError(
                f"S3 GET {url}: asked for bytes {offset}-{end}, got"
                f" {response['ContentLength']} bytes; the download was not resumed"
            )
