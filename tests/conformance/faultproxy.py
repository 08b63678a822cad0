"""An S3 fault proxy: forwards HTTP requests to a real S3 endpoint (moto_server) and, on
command, fails them for a window of time the way an object store in trouble does.

    proxy = FaultProxy(upstream="http://127.0.0.1:5000")
    proxy.fault(seconds=40, rate=0.8, kinds=("500", "503", "reset"), latency=0.1)
    ...                                   # imagegate's [blobs] endpoint = proxy.endpoint
    proxy.clear()
    proxy.counts                          # {"forwarded": n, "500": n, "503": n, "reset": n}

While a window is open each request is, with probability `rate`, answered with one of
`kinds` instead of being forwarded:
- "500": 500 with S3's `InternalError` XML body;
- "503": 503 with S3's `SlowDown` XML body;
- "reset": the connection is reset (RST, SO_LINGER 0) once the request has been read,
  before anything reaches the store or a byte of answer is sent;
- "drop": the request reaches the store, which does the work, and then the connection is
  reset instead of the answer being sent (the client cannot tell it from "reset").
Every request (failed or forwarded) waits `latency` seconds first. Apart from "drop",
a faulted request never reaches the store.

A store with no room answers with one of `FULL_KINDS` (not among the default kinds):
- "full": 507 with MinIO's `XMinioStorageFull`;
- "quota": 403 with Ceph RGW's `QuotaExceeded` (a bucket or user quota).
`methods` limits a window to requests of those methods (e.g. only the PUTs of parts), and
`path_contains` to those whose path (with its query) holds that text (e.g. `uploadId=`).
Signatures pass untouched: the Host header is kept and moto does not check them.
"""

from __future__ import annotations

import http.client
import io
import random
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("500", "503", "reset", "drop")
FULL_KINDS = ("full", "quota")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
              "upgrade"}
# Written by the proxy's own send_response.
OWN_HEADERS = {"server", "date", "content-length"}

_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "full": (507, "XMinioStorageFull", "Storage backend has reached its minimum free drive threshold."),
    "quota": (403, "QuotaExceeded", "The quota of the bucket is exceeded."),
}


def s3_error_body(code: str, message: str, resource: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{resource}</Resource><RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId>"
            "</Error>").encode()


class FaultProxy:
    def __init__(self, upstream: str, seed: int = 16):
        up = urlsplit(upstream)
        self.upstream = (up.hostname, up.port or 80)
        self.lock = threading.Lock()
        self.window: tuple[float, float, tuple[str, ...], float, float, tuple[str, ...] | None] | None = None
        self.rng = random.Random(seed)
        self.counts: dict[str, int] = {"forwarded": 0, **{k: 0 for k in KINDS + FULL_KINDS}}
        # (monotonic time, method, path, outcome) of every request, for the tests' figures.
        self.log: list[tuple[float, str, str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                proxy._handle(self)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ commands

    def fault(self, seconds: float, rate: float = 1.0, kinds=KINDS, latency: float = 0.0, methods=None,
              path_contains: str | None = None):
        """Open a fault window of `seconds` from now (replacing any open one)."""
        assert set(kinds) <= set(KINDS + FULL_KINDS), kinds
        now = time.monotonic()
        with self.lock:
            self.window = (now, now + seconds, tuple(kinds), rate, latency,
                           None if methods is None else tuple(methods), path_contains)

    def clear(self):
        with self.lock:
            self.window = None

    def active(self) -> bool:
        with self.lock:
            return self.window is not None and time.monotonic() < self.window[1]

    def faults_injected(self) -> int:
        with self.lock:
            return sum(self.counts[k] for k in KINDS + FULL_KINDS)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ the proxy

    def _decide(self, method: str, path: str) -> tuple[str | None, float]:
        """(fault kind or None, latency) for one request."""
        with self.lock:
            w = self.window
            if w is None or time.monotonic() >= w[1]:
                return None, 0.0
            _, _, kinds, rate, latency, methods, path_contains = w
            if methods is not None and method not in methods:
                return None, 0.0
            if path_contains is not None and path_contains not in path:
                return None, 0.0
            if self.rng.random() < rate:
                return self.rng.choice(kinds), latency
            return None, latency

    def _note(self, method: str, path: str, outcome: str):
        with self.lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
            self.log.append((time.monotonic(), method, path, outcome))

    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(h.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += h.rfile.read(size)
                h.rfile.readline()
        length = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(length) if length else b""

    def _handle(self, h: BaseHTTPRequestHandler):
        body = self._read_body(h)
        kind, latency = self._decide(h.command, h.path)
        if latency:
            time.sleep(latency)
        if kind == "drop":
            self._upstream(h, body)
        if kind in ("reset", "drop"):
            self._note(h.command, h.path, kind)
            self._reset(h)
            return
        if kind is not None:
            status, code, message = _ERRORS[kind]
            self._note(h.command, h.path, kind)
            payload = s3_error_body(code, message, h.path.split("?", 1)[0])
            h.send_response(status)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(payload)))
            if kind == "503":
                h.send_header("Retry-After", "1")
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(payload)
            return
        self._forward(h, body)

    @staticmethod
    def _reset(h: BaseHTTPRequestHandler):
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.close_connection = True
        # Nothing may be written after the reset (the handler flushes on return).
        h.wfile = io.BytesIO()
        try:
            h.connection.close()
        except OSError:
            pass

    def _upstream(self, h: BaseHTTPRequestHandler, body: bytes):
        """The store's answer to the request: (response, body)."""
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or h.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp, resp.read()
        finally:
            conn.close()

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes):
        resp, data = self._upstream(h, body)
        self._note(h.command, h.path, "forwarded")
        h.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() not in OWN_HEADERS:
                h.send_header(k, v)
        length = resp.getheader("Content-Length") if h.command == "HEAD" else None
        h.send_header("Content-Length", length if length is not None else str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)
