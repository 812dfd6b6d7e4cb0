"""A moto S3 server on 127.0.0.1 behind a WSGI middleware that tests steer at runtime.

The middleware records every request, tracks how many are in flight (now and at most),
and can delay or hold requests chosen by a predicate, or strike them with a fault (see
``_faults``): an S3 error, a body cut short, a connection dropped. ``reset()`` clears all
of it, lets held requests go without reaching moto and stalled bodies end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from _faults import CutFault, DisconnectFault, ErrorFault, Fault, drain, error, run_app
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    user_agent: str
    range: str = ""
    expect: str = ""
    if_match: str = ""
    sdk_request: str = ""  # botocore's amz-sdk-request header ("attempt=1"), if sent

    @property
    def by_botocore(self) -> bool:
        return bool(self.sdk_request)

    def has_param(self, name: str) -> bool:
        return any(part.split("=", 1)[0] == name for part in self.query.split("&"))


Predicate = Callable[[Request], bool]


def match(
    method: str | None = None, *, param: str | None = None, path_contains: str | None = None
) -> Predicate:
    """A predicate on method, a query parameter being present, and a path substring."""

    def predicate(request: Request) -> bool:
        return (
            (method is None or request.method == method)
            and (param is None or request.has_param(param))
            and (path_contains is None or path_contains in request.path)
        )

    return predicate


class Watch:
    """Counts the requests matching ``predicate`` in flight, now and at most, and those
    answered (the answer made, on its way back)."""

    def __init__(self, predicate: Predicate) -> None:
        self.predicate = predicate
        self.in_flight = 0
        self.max_in_flight = 0
        self.answered = 0
        self._cond = threading.Condition()

    def wait_answered(self, count: int = 1, timeout: float = 60) -> bool:
        """Block until ``count`` requests are answered; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.answered >= count, timeout)


class Hold:
    """Requests matching ``predicate`` wait here until released (forwarded or dropped)."""

    def __init__(self, predicate: Predicate) -> None:
        self.predicate = predicate
        self.arrived = 0
        self._forward = False
        self._released = threading.Event()
        self._cond = threading.Condition()

    def _wait(self) -> bool:
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()
        self._released.wait()
        return self._forward

    def wait_for(self, count: int = 1, timeout: float = 60) -> bool:
        """Block until ``count`` requests are held; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.arrived >= count, timeout)

    def release(self, *, forward: bool = False) -> None:
        self._forward = forward
        self._released.set()


class Middleware:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._holds: list[Hold] = []
        self.reset()

    def reset(self) -> None:
        with self._lock:
            holds, self._holds = self._holds, []
            for fault in getattr(self, "_faults", ()):
                fault.released.set()
            old_wake = getattr(self, "_wake", None)
            self._wake = threading.Event()
            self.requests: list[Request] = []
            self.in_flight: int = getattr(self, "in_flight", 0)
            self.max_in_flight = 0
            self._delays: list[tuple[Predicate, float]] = []
            self._faults: list[Fault] = []
            self._watches: list[Watch] = []
            #: Like some S3-compatible servers, ignore If-None-Match on PUT.
            self.unconditional = False
            #: Like some servers, ignore Range on GET (send the whole object).
            self.ignore_ranges = False
        if old_wake is not None:
            old_wake.set()
        for hold in holds:
            hold.release(forward=False)

    def delay(self, seconds: float, predicate: Predicate | None = None) -> None:
        with self._lock:
            self._delays.append((predicate or match(), seconds))

    def fail(
        self,
        predicate: Predicate,
        *,
        status: int = 400,
        code: str = "InvalidRequest",
        message: str = "Injected failure",
        **options: Any,
    ) -> Fault:
        """Answer matching requests with an error; with ``applied=True``, only after moto
        has carried the request out (a response lost on the way back). ``options``: those
        of :class:`_faults.Fault` (``times``, ``probability``, ``seed``, ``applied``)."""
        return self._add(ErrorFault(predicate, status, code, message, **options))

    def cut(
        self, predicate: Predicate, *, after: int | None = None, stall: float = 0, **options: Any
    ) -> Fault:
        """Send moto's status and headers, then ``after`` bytes of the body (a random
        share of it if None), then, after ``stall`` seconds of silence (or at ``reset()``),
        close the connection."""
        return self._add(CutFault(predicate, after, stall, **options))

    def disconnect(self, predicate: Predicate, **options: Any) -> Fault:
        """Reset the connection before any response; with ``applied=True``, after moto has
        carried the request out."""
        return self._add(DisconnectFault(predicate, **options))

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def watch(self, predicate: Predicate) -> Watch:
        watch = Watch(predicate)
        with self._lock:
            self._watches.append(watch)
        return watch

    def hold(self, predicate: Predicate) -> Hold:
        hold = Hold(predicate)
        with self._lock:
            self._holds.append(hold)
        return hold

    def matching(self, predicate: Predicate) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if predicate(r)]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            environ.get("HTTP_USER_AGENT", ""),
            environ.get("HTTP_RANGE", ""),
            environ.get("HTTP_EXPECT", ""),
            environ.get("HTTP_IF_MATCH", ""),
            environ.get("HTTP_AMZ_SDK_REQUEST", ""),
        )
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            watches = [w for w in self._watches if w.predicate(request)]
            for w in watches:
                w.in_flight += 1
                w.max_in_flight = max(w.max_in_flight, w.in_flight)
            wake = self._wake
            delay = sum(s for p, s in self._delays if p(request))
            hold = next((h for h in self._holds if h.predicate(request)), None)
            if self.unconditional and request.method == "PUT":
                environ.pop("HTTP_IF_NONE_MATCH", None)
            if self.ignore_ranges and request.method == "GET":
                environ.pop("HTTP_RANGE", None)
            strike = next(
                ((f, point) for f in self._faults if (point := f.strikes(request)) is not None),
                None,
            )
        try:
            if delay:
                wake.wait(delay)
            if hold is not None and not hold._wait():
                drain(environ)
                return error(start_response, 503, "SlowDown", "Dropped by the test")
            if strike is not None:
                return strike[0].respond(self._app, environ, start_response, strike[1])
            return [run_app(self._app, environ, start_response)]
        finally:
            with self._lock:
                self.in_flight -= 1
                for w in watches:
                    w.in_flight -= 1
            for w in watches:
                with w._cond:
                    w.answered += 1
                    w._cond.notify_all()


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class S3Server:
    """moto's S3 on 127.0.0.1 and a free port, served by threads, steered by ``control``."""

    def __init__(self) -> None:
        self.control = Middleware(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            "127.0.0.1",
            0,
            self.control,
            threaded=True,
            request_handler=_QuietHandler,
        )
        self.endpoint_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.control.reset()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
