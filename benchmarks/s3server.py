"""A local S3 server for the benchmarks: moto in a process of its own, behind a middleware.

    with s3server.start(latency_ms=20, workdir=tmp) as server:
        ...  # clients use server.endpoint, trusting server.ca_bundle; server.stats()

The middleware waits the latency before each request (S3's time to first byte, which a
local server lacks) and counts requests per method and the bytes of request payloads. Its
own paths, neither delayed nor counted: ``/__bench__/stats``, ``/__bench__/reset`` and
``/__bench__/latency?ms=20``. It serves https with a certificate made for 127.0.0.1 (real
S3 is https, and botocore skips hashing payloads only over https) through cheroot, which
keeps connections alive as S3 does (werkzeug closes each). Two patches, in the server
process only, take moto's own costs out of the way: ranged GETs read only their range, and
aws-chunked PUT bodies decode in linear time. The server is a "spawn" process.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import json
import multiprocessing
import queue
import re
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

CONTROL = "/__bench__/"


class _Meter:
    """The middleware: delays each request and counts it; serves the control paths."""

    def __init__(self, app: Any, latency: float) -> None:
        self.app = app
        self.latency = latency
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests: Counter[str] = Counter()
            self.bytes_in = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(CONTROL):
            # aws-chunked bodies (botocore over https) state their decoded size
            size = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH") or environ.get("CONTENT_LENGTH")
            with self.lock:
                self.requests[environ["REQUEST_METHOD"]] += 1
                self.bytes_in += int(size or 0)
            time.sleep(self.latency)
            return self.app(environ, start_response)
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        if path == CONTROL + "latency":
            self.latency = float(query["ms"][0]) / 1000
        elif path == CONTROL + "reset":
            self.reset()
        with self.lock:
            body = json.dumps({"requests": self.requests, "bytes_in": self.bytes_in}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]


def _patch_moto() -> None:
    """Two of moto's costs that would dominate some cells. A ranged GET copies the whole
    object and slices it (a 512 MiB object read in 8 MiB ranges reads 32 GiB): here one
    ``bytes=a-[b]`` range, with no partNumber, response-* override or conditional match,
    seeks in the key's buffer under its lock; anything else takes moto's path. An
    aws-chunked PUT body is joined with ``bytes +=`` (quadratic): here, once from a list."""
    from moto.s3.responses import S3Response

    whole = S3Response.get_object

    def get_object(self: Any) -> Any:
        span = re.fullmatch(r"bytes=(\d+)-(\d*)", (self.headers.get("range") or "").strip())
        overrides = any(q == "partNumber" or q.startswith("response-") for q in self.querystring)
        if span is None or overrides:
            return whole(self)
        key, not_modified = self._get_key()
        start, end = int(span[1]), min(int(span[2] or key.size - 1), key.size - 1)
        if not_modified or start > end or (start == 0 and end == key.size - 1):
            return whole(self)
        with key.lock:
            key._value_buffer.seek(start)
            body = key._value_buffer.read(end - start + 1)
        headers = {**self._get_cors_headers_other(), **key.response_dict, **key.metadata}
        if key.version_id != "null":
            headers["x-amz-version-id"] = key.version_id
        headers["Accept-Ranges"] = "bytes"
        headers["content-range"] = f"bytes {start}-{end}/{key.size}"
        headers["content-length"] = str(len(body))
        return 206, headers, body

    def decode(self: Any, body: Any) -> bytes:
        if not body:
            return b""
        if isinstance(body, bytes):
            body = io.BytesIO(body)
        chunks = []
        while (size := int(body.readline().strip(), 16)) > 0:
            chunks.append(body.read(size))
            body.readline()  # the CRLF after the chunk
        return b"".join(chunks)

    S3Response.get_object = get_object  # type: ignore[method-assign]
    S3Response._handle_encoded_body = decode  # type: ignore[method-assign]


def _certificate(workdir: Path) -> tuple[str, str, str]:
    """Write a CA and a server certificate it signs for 127.0.0.1; return the paths of
    (ca.pem, server.pem, server.key). The server's is not a CA (rustls, in obstore, refuses
    one as a server's); key identifiers and usages are what strict verifiers ask for."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
    names = [x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n)]) for n in ("CA", "localhost")]
    certs: list[Any] = []
    for i, (key, name) in enumerate(zip(keys, names, strict=True)):
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(names[0])
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=i == 0, path_length=None), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(keys[0].public_key()), False
            )
        )
        if i == 0:  # key_cert_sign and crl_sign only
            cert = cert.add_extension(x509.KeyUsage(*[False] * 5, True, True, False, False), True)
        else:
            address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            cert = cert.add_extension(x509.SubjectAlternativeName([address]), False)
            cert = cert.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
            )
        certs.append(cert.sign(keys[0], hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    paths[0].write_bytes(certs[0].public_bytes(pem))
    paths[1].write_bytes(certs[1].public_bytes(pem))
    private = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    paths[2].write_bytes(keys[1].private_bytes(pem, *private))
    return str(paths[0]), str(paths[1]), str(paths[2])


def _serve(port: Any, latency: float, cert: str, key: str) -> None:
    """The server process: moto's app behind the meter; puts its port on ``port``."""
    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter
    from moto.server import DomainDispatcherApplication, create_backend_app

    _patch_moto()
    app = _Meter(DomainDispatcherApplication(create_backend_app), latency)
    # A thread per request in flight: more than any client here keeps open (64).
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=128, request_queue_size=256)
    server.keep_alive_conn_limit = None  # cheroot's default closes all but 10 idle ones
    server.ssl_adapter = BuiltinSSLAdapter(cert, key)
    server.prepare()
    port.put(server.bind_addr[1])
    server.serve()


class Server:
    """A running server, as :func:`start` yields it."""

    def __init__(self, endpoint: str, ca_bundle: str) -> None:
        self.endpoint = endpoint
        self.ca_bundle = ca_bundle
        self._context = ssl.create_default_context(cafile=ca_bundle)

    def _call(self, path: str) -> bytes:
        url = self.endpoint + path
        with urllib.request.urlopen(url, context=self._context, timeout=30) as response:
            return response.read()

    def stats(self) -> dict[str, Any]:
        """Requests per method and bytes of request payloads since the last reset."""
        return json.loads(self._call(CONTROL + "stats"))

    def reset(self) -> None:
        self._call(CONTROL + "reset")

    def set_latency(self, ms: float) -> None:
        self._call(f"{CONTROL}latency?ms={ms}")


@contextlib.contextmanager
def start(latency_ms: float, workdir: Path) -> Iterator[Server]:
    """Run the server, its certificate in ``workdir``, while the context lasts.

    :raises RuntimeError: if it is not listening within 60 s.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ca_bundle, cert, key = _certificate(workdir)
    ctx = multiprocessing.get_context("spawn")
    port = ctx.Queue()
    process = ctx.Process(target=_serve, args=(port, latency_ms / 1000, cert, key), daemon=True)
    process.start()
    try:
        number = port.get(timeout=60)
    except queue.Empty:
        raise RuntimeError("the S3 server did not start") from None
    try:
        yield Server(f"https://127.0.0.1:{number}", ca_bundle)
    finally:
        process.terminate()
        process.join(10)
