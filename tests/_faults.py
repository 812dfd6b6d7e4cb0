"""What the test server does to the requests a fault strikes: answer with an S3 error,
cut the response body short, or drop the connection before any answer.

A fault strikes the requests its predicate matches, at most ``times`` of them, each
with ``probability`` drawn from a generator seeded with ``seed``. Requests arrive from
several threads, so which request draws which number depends on their order; the draws
themselves, and so the share of requests struck, are the seed's.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _s3server import Predicate, Request

App = Callable[..., Iterable[bytes]]

_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message>"
    "<RequestId>injected</RequestId></Error>"
)


class Fault:
    """One rule of the server; ``struck`` counts the requests it acted on."""

    drains = True  # reads the request body moto does not

    def __init__(
        self,
        predicate: Predicate,
        *,
        times: int | None = None,
        probability: float = 1.0,
        seed: int = 0,
        applied: bool = False,
    ) -> None:
        self.predicate = predicate
        self.times = times
        self.probability = probability
        self.applied = applied  # moto carries the request out before the fault acts
        self.struck = 0
        self.released = threading.Event()  # set by the server's reset(): stop waiting
        self._random = random.Random(seed)

    def strikes(self, request: Request) -> float | None:
        """Whether this fault acts on ``request`` (called under the server's lock): None,
        or a number in [0, 1) for where to act, drawn from the seeded generator."""
        if not self.predicate(request) or (self.times is not None and self.struck >= self.times):
            return None
        if self.probability < 1 and self._random.random() >= self.probability:
            return None
        self.struck += 1
        return self._random.random()

    def respond(
        self, app: App, environ: dict[str, Any], start_response: Any, point: float
    ) -> Iterable[bytes]:
        if self.applied:
            run_app(app, environ, lambda *args, **kwargs: None)
        elif self.drains:
            drain(environ)
        return self.act(environ, start_response, point)

    def act(self, environ: dict[str, Any], start_response: Any, point: float) -> Iterable[bytes]:
        raise NotImplementedError


class ErrorFault(Fault):
    """Answer with an S3 error; with ``applied``, a response lost on the way back."""

    def __init__(self, predicate: Predicate, status: int, code: str, message: str, **kw: Any):
        super().__init__(predicate, **kw)
        self.status, self.code, self.message = status, code, message

    def act(self, environ: dict[str, Any], start_response: Any, point: float) -> Iterable[bytes]:
        return error(start_response, self.status, self.code, self.message)


class DisconnectFault(Fault):
    """Reset the connection without an answer; with ``applied``, after moto carried the
    request out (the client cannot tell whether it did)."""

    drains = False  # the unread request body goes with the connection, as on a real reset

    def act(self, environ: dict[str, Any], start_response: Any, point: float) -> Iterable[bytes]:
        start_response("500 Dropped", [("Content-Length", "0")])  # never sent
        return _then_shut(environ, reset=True)


class CutFault(Fault):
    """Send moto's status and headers (the full Content-Length among them), then ``after``
    bytes of the body (a random share of it when None), then, after ``stall`` seconds of
    silence, close the connection."""

    def __init__(self, predicate: Predicate, after: int | None, stall: float, **kw: Any):
        super().__init__(predicate, **kw)
        self.after = after
        self.stall = stall

    def respond(
        self, app: App, environ: dict[str, Any], start_response: Any, point: float
    ) -> Iterable[bytes]:
        captured: list[Any] = []
        body = run_app(
            app, environ, lambda status, headers, *exc: captured.append((status, headers))
        )
        status, headers = captured[0]
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        after = int(point * len(body)) if self.after is None else min(self.after, len(body))
        start_response(status, headers)
        return self._cut(environ, body[:after])

    def _cut(self, environ: dict[str, Any], part: bytes) -> Iterator[bytes]:
        yield part  # even when empty: the status and headers go out with it
        if self.stall:
            self.released.wait(self.stall)
        shut(environ)


def _then_shut(environ: dict[str, Any], *, reset: bool) -> Iterator[bytes]:
    shut(environ, reset=reset)
    yield from ()


def shut(environ: dict[str, Any], *, reset: bool = False) -> None:
    """Close the client's connection: EOF after what was sent, or with ``reset`` an
    abortive close (RST). The server then fails to write on it and lets it go."""
    sock: socket.socket = environ["werkzeug.socket"]
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the client closed it first


def run_app(app: App, environ: dict[str, Any], start_response: Any) -> bytes:
    """The whole response of ``app``."""
    result = app(environ, start_response)
    try:
        return b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def error(start_response: Any, status: int, code: str, message: str) -> list[bytes]:
    body = _ERROR_XML.format(code=code, message=message).encode()
    start_response(
        f"{status} {code}",
        [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
    )
    return [body]


def drain(environ: dict[str, Any]) -> None:
    """Read the request body that moto will not."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        while stream.read(1 << 16):
            pass
        return
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    while remaining > 0:
        chunk = stream.read(min(remaining, 1 << 16))
        if not chunk:
            break
        remaining -= len(chunk)


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return  # closed

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
