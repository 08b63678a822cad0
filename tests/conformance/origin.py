"""A loopback HTTP origin for import tests, with Range support and faults.

Each served name maps to a file and a behaviour:
- "ok": Content-Length, ETag, Range (`bytes=N-` and `bytes=N-M`, 206) like any object store;
- "drop": the first response stops after half the body (the client must resume);
- "lie": Content-Length promises more bytes than are sent, then closes;
- "stall": headers, the first 64 KiB, then silence (a resume gets headers only);
- "norange": ignores Range and always answers 200 with the whole body;
- "slow": the body trickles (256 KiB every 50 ms), for crash tests;
- "throttle:<bytes/s>": the body arrives at that rate, in 64 KiB pieces;
- "forbidden": 403;
- "redirect:<url>": 302 to another URL.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Origin:
    def __init__(self):
        self.routes: dict[str, tuple[Path | None, str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.dropped: set[str] = set()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.handle_get(head=True)

            def do_GET(self):
                self.handle_get(head=False)

            def handle_get(self, head: bool):
                name = self.path.lstrip("/").split("?", 1)[0]
                rng = self.headers.get("Range")
                origin.requests.append((self.command, name, rng))
                route = origin.routes.get(name)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, behaviour = route
                if behaviour.startswith("redirect:"):
                    self.send_response(302)
                    self.send_header("Location", behaviour.split(":", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if behaviour == "forbidden":
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = path.stat().st_size
                etag = f'"{size:x}-{int(path.stat().st_mtime_ns):x}"'
                start, end = 0, size
                ranged = bool(rng) and behaviour != "norange" and rng.startswith("bytes=")
                if ranged:
                    first, _, last = rng[6:].partition("-")
                    start = int(first)
                    if last:
                        end = min(size, int(last) + 1)
                length = end - start
                if ranged and (start, end) != (0, size):
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                else:
                    self.send_response(200)
                promised = length + (4096 if behaviour == "lie" else 0)
                self.send_header("Content-Length", str(promised))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", etag)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if head:
                    return
                with open(path, "rb") as f:
                    f.seek(start)
                    sent = 0
                    cut = None
                    if behaviour == "drop" and name not in origin.dropped and start == 0:
                        origin.dropped.add(name)
                        cut = length // 2
                    if behaviour == "stall":
                        # The first 64 KiB and the tail (which footers need), then
                        # silence; a resumed request gets its headers only, so the
                        # client sees no progress at all and gives up.
                        if start >= size - 64 * 1024:
                            cut = length
                        elif start == 0:
                            cut = min(length, 64 * 1024)
                        else:
                            cut = 0
                    rate = int(behaviour.split(":", 1)[1]) if behaviour.startswith("throttle:") else 0
                    piece = 64 * 1024 if rate else 256 * 1024
                    while True:
                        want = min(piece, length - sent)
                        if cut is not None:
                            want = min(want, cut - sent)
                        if want <= 0:
                            break
                        chunk = f.read(want)
                        if not chunk:
                            break
                        try:
                            self.wfile.write(chunk)
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        sent += len(chunk)
                        if behaviour == "slow":
                            time.sleep(0.05)
                        if rate:
                            time.sleep(len(chunk) / rate)
                    if behaviour == "stall":
                        self.wfile.flush()
                        time.sleep(30)
                    if cut is not None or behaviour == "lie":
                        self.wfile.flush()
                        try:
                            self.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, name: str, path: Path | None, behaviour: str = "ok") -> str:
        self.routes[name] = (path, behaviour)
        return self.url(name)

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
