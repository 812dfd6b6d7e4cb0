"""A local S3 server for the benchmarks: moto in a process of its own, behind a middleware.

    with s3server.start(latency_ms=20, workdir=tmp) as server:
        server.create_bucket("bench")
        ...  # clients use server.endpoint, trusting server.ca_bundle
        print(server.stats())

The middleware waits ``latency`` before each request (S3's time to first byte, which a
local server lacks) and counts requests per method, the most in flight at once (from
arrival, the wait included), the bytes of request payloads (Content-Length, or the decoded
length of an aws-chunked body) and of response bodies. It answers its own control paths,
neither delayed nor counted, so any process can use them over HTTP::

    GET /__bench__/stats            the counters and the server's CPU seconds, as JSON
    GET /__bench__/reset            zero them
    GET /__bench__/latency?ms=20    change the delay

By default it serves https with a certificate made for 127.0.0.1 and localhost (real S3 is
https, and botocore skips hashing the payload only over https); ``tls=False`` serves http.
Two patches, in the server process only, take moto's own costs out of the way: ranged
GETs read only their range (``_patch_ranged_get``) and aws-chunked PUT bodies decode in
linear time (``_patch_chunked_put``). The rest of moto's PUT path (an MD5 for the ETag,
bodies spilled to temporary files, parts copied on completion) still costs server CPU.

The server is a "spawn" process, so a script that starts it needs the
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import multiprocessing
import queue
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

CONTROL = "/__bench__/"


class _Meter:
    """The middleware: delays each request and counts it; serves the control paths."""

    def __init__(self, app: Any, latency: float) -> None:
        self.app = app
        self.latency = latency
        self.lock = threading.Lock()
        self.in_flight = 0  # counted from arrival, the delay included
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests: Counter[str] = Counter()
            self.max_in_flight = self.in_flight
            self.bytes_in = 0
            self.bytes_out = 0
            self.cpu = time.process_time()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "max_in_flight": self.max_in_flight,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "cpu": time.process_time() - self.cpu,  # the server's, all its threads
            }

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL):
            return self.control(path.removeprefix(CONTROL), environ, start_response)
        with self.lock:
            self.requests[environ["REQUEST_METHOD"]] += 1
            self.bytes_in += _body_size(environ)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.latency)
            body = self.app(environ, start_response)
        except BaseException:
            self.done(0)
            raise
        return self.count(body)

    def count(self, body: Iterable[bytes]) -> Iterator[bytes]:
        sent = 0
        try:
            for chunk in body:
                sent += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            self.done(sent)

    def done(self, sent: int) -> None:
        with self.lock:
            self.in_flight -= 1
            self.bytes_out += sent

    def control(self, name: str, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        if name == "latency" and "ms" in query:
            self.latency = float(query["ms"][0]) / 1000
        elif name == "reset":
            self.reset()
        elif name != "stats":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown control path\n"]
        body = json.dumps({**self.stats(), "latency_ms": self.latency * 1000}).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


def _body_size(environ: dict[str, Any]) -> int:
    """The size of a request's payload: aws-chunked bodies (botocore over https) have no
    Content-Length but state their decoded size."""
    size = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH") or environ.get("CONTENT_LENGTH")
    return int(size or 0)


def _byte_range(header: str) -> tuple[int, int | None] | None:
    """(first, last or None) of a single ``bytes=first-[last]`` range; None for other forms."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.partition("-")
    if unit.strip() != "bytes" or not dash or "," in spec or not first.strip().isdigit():
        return None
    if last.strip() and not last.strip().isdigit():
        return None
    return int(first), int(last) if last.strip() else None


def _patch_ranged_get() -> None:
    """Make moto serve a ranged GET by reading only the range.

    Stock moto answers every GET through ``S3Response.get_object``, which returns the whole
    stored value (``FakeKey.value`` copies the key's SpooledTemporaryFile under its lock);
    ``key_response`` then slices the range out of the 200 response. Downloading a 512 MiB
    object in 8 MiB ranges so reads 32 GiB. This wrapper handles the common case itself --
    one ``bytes=a-b`` or ``bytes=a-`` range that starts inside the object and is not the
    whole object, no partNumber, no response-* header overrides, no conditional match --
    by seeking in that same buffer under the same lock. It returns 206, which
    ``key_response`` passes through untouched. Any other request takes moto's own path.
    Checksums are left out, as S3 (and moto) do for partial ranges.
    """
    from moto.s3.responses import S3Response

    whole = S3Response.get_object

    def get_object(self: Any) -> Any:
        span = _byte_range(self.headers.get("range") or "")
        overrides = any(name.startswith("response-") for name in self.querystring)
        if span is None or overrides or "partNumber" in self.querystring:
            return whole(self)
        key, not_modified = self._get_key()
        first, last = span
        last = key.size - 1 if last is None else min(last, key.size - 1)
        if not_modified or first > last or (first == 0 and last == key.size - 1):
            return whole(self)
        with key.lock:
            key._value_buffer.seek(first)
            body = key._value_buffer.read(last - first + 1)
        headers = {**self._get_cors_headers_other(), **key.response_dict, **key.metadata}
        if key.version_id != "null":
            headers["x-amz-version-id"] = key.version_id
        headers["Accept-Ranges"] = "bytes"
        headers["content-range"] = f"bytes {first}-{last}/{key.size}"
        headers["content-length"] = str(len(body))
        return 206, headers, body

    S3Response.get_object = get_object  # type: ignore[method-assign]


def _patch_chunked_put() -> None:
    """Make moto decode an ``aws-chunked`` request body in linear time.

    Over https botocore sends PUT bodies as aws-chunked with a trailing checksum
    (STREAMING-UNSIGNED-PAYLOAD-TRAILER), in 1 MiB chunks, and moto's
    ``S3Response._handle_encoded_body`` joins them with ``bytes +=``: a 256 MiB PUT copies
    some 32 GiB and takes 20 s. This decodes the same format into a list and joins once.
    """
    from moto.s3.responses import S3Response

    def decode(self: Any, body: Any) -> bytes:
        if not body:
            return b""
        if isinstance(body, bytes):
            body = io.BytesIO(body)
        chunks = []
        size = int(body.readline().strip(), 16)
        while size > 0:
            chunks.append(body.read(size))
            body.readline()  # the CRLF after the chunk
            size = int(body.readline().strip(), 16)
        return b"".join(chunks)

    S3Response._handle_encoded_body = decode  # type: ignore[method-assign]


def _certificate(workdir: Path) -> tuple[Path, Path, Path]:
    """Write a CA and a server certificate it signs for 127.0.0.1 and localhost.

    Clients trust ca.pem. The server's own certificate is not a CA: rustls (in obstore)
    refuses a certificate marked CA:TRUE as a server's. Returns (ca.pem, server.pem,
    server.key).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiocheckpoint bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _serve(port: Any, latency: float, cert: str | None, key: str | None) -> None:
    """The server process: moto's app behind the meter; puts the port on ``port``.

    cheroot rather than werkzeug's development server: werkzeug closes the connection after
    every response, so each request would pay a new TCP and TLS handshake, where S3 keeps
    connections alive.
    """
    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter
    from moto.server import DomainDispatcherApplication, create_backend_app

    _patch_ranged_get()
    _patch_chunked_put()
    app = _Meter(DomainDispatcherApplication(create_backend_app), latency)
    # A thread per request in flight: more than any client here keeps open (64).
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=128, request_queue_size=256)
    # cheroot keeps at most 10 idle connections by default and closes the rest, so a client
    # with 64 in flight would open a new TLS connection for most requests. S3 keeps them.
    server.keep_alive_conn_limit = None
    if cert is not None:
        server.ssl_adapter = BuiltinSSLAdapter(cert, key)
    server.prepare()
    port.put(server.bind_addr[1])
    server.serve()


class Server:
    """A running server; :func:`start` makes one. A context manager that stops it."""

    def __init__(
        self, process: multiprocessing.process.BaseProcess, endpoint: str, ca_bundle: str | None
    ) -> None:
        self.process = process
        self.endpoint = endpoint
        self.ca_bundle = ca_bundle
        self._context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None

    def _call(self, method: str, path: str) -> bytes:
        request = urllib.request.Request(self.endpoint + path, method=method)
        with urllib.request.urlopen(request, context=self._context, timeout=30) as response:
            return response.read()

    def stats(self) -> dict[str, Any]:
        """Requests per method, the most in flight at once, bytes in and out, since reset."""
        stats = json.loads(self._call("GET", CONTROL + "stats"))
        stats.pop("latency_ms")
        return stats

    def reset(self) -> None:
        """Zero the counters."""
        self._call("GET", CONTROL + "reset")

    def set_latency(self, ms: float) -> None:
        """Wait ``ms`` milliseconds before each request from now on."""
        self._call("GET", f"{CONTROL}latency?ms={ms}")

    def create_bucket(self, name: str) -> None:
        """Create the bucket ``name`` (moto takes unsigned requests; us-east-1)."""
        self._call("PUT", "/" + name)

    def stop(self) -> None:
        """Stop the server process."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(10)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start(latency_ms: float, workdir: Path, tls: bool = True) -> Server:
    """Start the server, delaying each request by ``latency_ms``; its certificate goes in
    ``workdir`` when ``tls``. Returns once it listens.

    :raises RuntimeError: if the server process dies or is not listening within 60 s.
    """
    cert = key = ca_bundle = None
    if tls:
        workdir.mkdir(parents=True, exist_ok=True)
        ca, leaf, private = _certificate(workdir)
        ca_bundle, cert, key = str(ca), str(leaf), str(private)
    ctx = multiprocessing.get_context("spawn")
    port = ctx.Queue()
    process = ctx.Process(
        target=_serve, args=(port, latency_ms / 1000, cert, key), daemon=True, name="s3server"
    )
    process.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            number = port.get(timeout=0.2)
            break
        except queue.Empty:
            if not process.is_alive() or time.monotonic() > deadline:
                process.terminate()
                raise RuntimeError("the S3 server did not start") from None
    scheme = "https" if tls else "http"
    return Server(process, f"{scheme}://127.0.0.1:{number}", ca_bundle)
