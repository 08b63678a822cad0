"""An independent Tencent Cloud API 3.0 client for hostile and malformed requests.

Written from tests/../shared/reference/tencent-cvm-image-api.md §1–§3, not from the
SDK, so that the server is checked against a second implementation of the
signatures. It talks HTTP/1.1 over a plain socket so that every byte the
official clients would never send (a verbatim `Host: http://…`, a PUT, a
10 MB body, a missing header) can be sent on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

SERVICE = "cvm"
VERSION = "2017-03-12"


# --------------------------------------------------------------------------- signing


def _hmac256(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def utc_date(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def tc3_signature(
    secret_key: str,
    *,
    method: str,
    host: str,
    content_type: str,
    query: str,
    payload: bytes,
    timestamp: int,
    date: str | None = None,
    service: str = SERVICE,
    signed_extra: list[tuple[str, str]] | None = None,
) -> str:
    """TC3-HMAC-SHA256 over content-type;host, as reference §2 describes, and over
    `signed_extra` (lower-case name, value as sent; sorted) when given."""
    date = date or utc_date(timestamp)
    extra = sorted(signed_extra or [])
    canonical_request = "\n".join(
        [
            method,
            "/",
            query,
            f"content-type:{content_type}\nhost:{host}\n" + "".join(f"{n}:{v}\n" for n, v in extra),
            ";".join(["content-type", "host"] + [n for n, _ in extra]),
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    string_to_sign = "\n".join(
        [
            "TC3-HMAC-SHA256",
            str(timestamp),
            f"{date}/{service}/tc3_request",
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    k_date = _hmac256(("TC3" + secret_key).encode("utf-8"), date)
    k_service = _hmac256(k_date, service)
    k_signing = _hmac256(k_service, "tc3_request")
    return hmac.new(k_signing, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def v1_string_to_sign(method: str, host: str, params: dict[str, str]) -> str:
    """Legacy signature: sorted raw (not URL-encoded) k=v pairs, Signature excluded."""
    pairs = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "Signature")
    return f"{method}{host}/?{pairs}"


def v1_signature(secret_key: str, method: str, host: str, params: dict[str, str], algo: str) -> str:
    digest = {"HmacSHA1": hashlib.sha1, "HmacSHA256": hashlib.sha256}[algo]
    msg = v1_string_to_sign(method, host, params).encode("utf-8")
    return base64.b64encode(hmac.new(secret_key.encode("utf-8"), msg, digest).digest()).decode()


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    """Flatten nested parameters the way reference §1 describes (ImageIds.0, Filters.0.Values.1)."""
    out: dict[str, str] = {}

    def walk(key: str, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{key}.{k}" if key else k, v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{key}.{i}" if key else str(i), v)
        elif value is None:
            return
        else:
            out[key] = str(value)  # Python style: True/False, as the SDK sends them

    walk(prefix, params)
    return out


def form_encode(params: dict[str, str]) -> str:
    """application/x-www-form-urlencoded in insertion order (quote_plus semantics)."""
    return urlencode(list(params.items()))


# --------------------------------------------------------------------------- transport


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; the last value wins
    header_list: list[tuple[str, str]]
    body: bytes
    _json: object = field(default=None, repr=False)

    @property
    def json(self):
        if self._json is None:
            self._json = json.loads(self.body)
        return self._json

    @property
    def response(self) -> dict:
        return self.json["Response"]

    @property
    def error_code(self) -> str | None:
        err = self.response.get("Error")
        return err["Code"] if err else None

    @property
    def error_message(self) -> str | None:
        err = self.response.get("Error")
        return err["Message"] if err else None


def _recv_response(sock: socket.socket) -> RawResponse:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before the response headers: {buf!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("iso-8859-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    header_list = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        header_list.append((name.strip().lower(), value.strip()))
    headers = dict(header_list)
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed inside the response body")
            rest += chunk
        body = rest[:n]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += sock.recv(65536)
            body += rest[:size]
            rest = rest[size + 2 :]
            if size == 0:
                break
    else:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        body = rest
    return RawResponse(status, headers, header_list, body)


def send_raw(addr: tuple[str, int], method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"",
             timeout: float = 30.0) -> RawResponse:
    """Send exactly these bytes (plus Content-Length when there is a body) and read one response."""
    lines = [f"{method} {target} HTTP/1.1"]
    names = {k.lower() for k, _ in headers}
    for k, v in headers:
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT"):
        if "content-length" not in names:
            lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(data)
        # A large body is sent in pieces; a server that answers early and stops
        # reading may refuse the rest, which is fine as long as it answered.
        send_error = None
        view = memoryview(body)
        try:
            while view:
                n = sock.send(view[: 1 << 20])
                view = view[n:]
        except (BrokenPipeError, ConnectionResetError) as e:
            send_error = e
        # No shutdown(SHUT_WR) here: an HTTP/1 server may treat the half-close as the
        # client going away (hyper does, by default), and real clients never do it.
        try:
            return _recv_response(sock)
        except (ConnectionError, OSError) as e:
            raise ConnectionError(f"no response (send error: {send_error!r}): {e!r}") from e


# --------------------------------------------------------------------------- high level


_SIGNED: dict[tuple, tuple] = {}


def fresh_timestamp(signed: tuple, target: tuple) -> int:
    """The current second, or an earlier one still inside the signature window.

    A TC3 signature covers the body, host and content type but not X-TC-Action or
    X-TC-Region, and the server binds an accepted signature to the action and region it
    came with. Two different requests with the same body in the same second would share
    a signature, so the later one is signed a second earlier (and so on).
    """
    ts = int(time.time())
    for back in range(120):
        seen = _SIGNED.get((signed, ts - back))
        if seen is None or seen == target:
            _SIGNED[(signed, ts - back)] = target
            return ts - back
    return ts


class RawClient:
    """Builds signed requests by hand. Every knob can be turned to make them wrong."""

    def __init__(self, port: int, secret_id: str, secret_key: str, region: str = "ap-guangzhou"):
        self.port = port
        self.addr = ("127.0.0.1", port)
        self.host = f"127.0.0.1:{port}"
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.region = region

    # --- TC3 POST JSON (the SDK's and tccli's default)
    def tc3_post(
        self,
        action: str | None,
        params=None,
        *,
        body: bytes | None = None,
        region: str | None = "",
        version: str | None = VERSION,
        language: str | None = None,
        host: str | None = None,
        timestamp: int | None = None,
        date: str | None = None,
        service: str = SERVICE,
        secret_id: str | None = None,
        secret_key: str | None = None,
        authorization: str | None = "",
        tamper_signature: bool = False,
        content_type: str = "application/json",
        method: str = "POST",
        extra_headers: list[tuple[str, str]] | None = None,
        content_length: int | None = None,
        sign_action_region: bool = False,
    ) -> RawResponse:
        """`sign_action_region` signs X-TC-Action and X-TC-Region too (the console does;
        the SDKs sign only content-type and host)."""
        if body is None:
            body = json.dumps({} if params is None else params).encode("utf-8")
        host = self.host if host is None else host
        sid = self.secret_id if secret_id is None else secret_id
        ts = timestamp if timestamp is not None else fresh_timestamp(
            (sid, method, host, content_type, body), (action, self.region if region == "" else region))
        skey = self.secret_key if secret_key is None else secret_key
        date = date or utc_date(ts)
        region_value = self.region if region == "" else region
        signed_extra = ([("x-tc-action", action or ""), ("x-tc-region", region_value or "")]
                        if sign_action_region else [])
        sig = tc3_signature(skey, method=method, host=host, content_type=content_type, query="", payload=body,
                            timestamp=ts, date=date, service=service, signed_extra=signed_extra)
        if tamper_signature:
            sig = sig[:-1] + ("0" if sig[-1] != "0" else "1")
        if authorization == "":
            names = ";".join(["content-type", "host"] + [n for n, _ in signed_extra])
            authorization = (f"TC3-HMAC-SHA256 Credential={sid}/{date}/{service}/tc3_request, "
                             f"SignedHeaders={names}, Signature={sig}")
        headers = [("Host", host), ("Content-Type", content_type)]
        if authorization is not None:
            headers.append(("Authorization", authorization))
        if action is not None:
            headers.append(("X-TC-Action", action))
        if version is not None:
            headers.append(("X-TC-Version", version))
        headers.append(("X-TC-Timestamp", str(ts)))
        region = self.region if region == "" else region
        if region is not None:
            headers.append(("X-TC-Region", region))
        if language is not None:
            headers.append(("X-TC-Language", language))
        if content_length is not None:
            headers.append(("Content-Length", str(content_length)))
        headers += extra_headers or []
        return send_raw(self.addr, method, "/", headers, body)

    # --- TC3 GET (query signed as sent)
    def tc3_get(self, action: str, params: dict, *, region: str | None = "", language: str | None = None,
                host: str | None = None) -> RawResponse:
        query = form_encode(flatten(params))
        host = self.host if host is None else host
        ts = int(time.time())
        ct = "application/x-www-form-urlencoded"
        sig = tc3_signature(self.secret_key, method="GET", host=host, content_type=ct, query=query, payload=b"",
                            timestamp=ts)
        headers = [
            ("Host", host),
            ("Content-Type", ct),
            ("Authorization", f"TC3-HMAC-SHA256 Credential={self.secret_id}/{utc_date(ts)}/cvm/tc3_request, "
                              f"SignedHeaders=content-type;host, Signature={sig}"),
            ("X-TC-Action", action),
            ("X-TC-Version", VERSION),
            ("X-TC-Timestamp", str(ts)),
        ]
        region = self.region if region == "" else region
        if region is not None:
            headers.append(("X-TC-Region", region))
        if language is not None:
            headers.append(("X-TC-Language", language))
        return send_raw(self.addr, "GET", "/?" + query, headers)

    # --- legacy v1 (HmacSHA1 / HmacSHA256), GET query or POST form
    def v1_params(self, action: str, params: dict, *, algo: str = "HmacSHA256", method: str = "GET",
                  region: str | None = "", timestamp: int | None = None, secret_id: str | None = None,
                  secret_key: str | None = None, flat: dict[str, str] | None = None,
                  language: str | None = None) -> dict[str, str]:
        p = dict(flat) if flat is not None else flatten(params)
        p["Action"] = action
        p["Version"] = VERSION
        region = self.region if region == "" else region
        if region is not None:
            p["Region"] = region
        p["Timestamp"] = str(int(time.time()) if timestamp is None else timestamp)
        p["Nonce"] = str(random.randint(1, 2**31 - 1))
        p["SecretId"] = self.secret_id if secret_id is None else secret_id
        p["SignatureMethod"] = algo
        if language is not None:
            p["Language"] = language
        p["Signature"] = v1_signature(self.secret_key if secret_key is None else secret_key, method, self.host, p,
                                      algo)
        return p

    def v1_get(self, action: str, params: dict | None = None, **kw) -> RawResponse:
        p = self.v1_params(action, params or {}, method="GET", **kw)
        return send_raw(self.addr, "GET", "/?" + form_encode(p), [("Host", self.host)])

    def v1_post(self, action: str, params: dict | None = None, **kw) -> RawResponse:
        p = self.v1_params(action, params or {}, method="POST", **kw)
        return send_raw(self.addr, "POST", "/",
                        [("Host", self.host), ("Content-Type", "application/x-www-form-urlencoded")],
                        form_encode(p).encode("utf-8"))

    def v1_get_query(self, query_without_auth: str, decoded: dict[str, str], *, algo: str = "HmacSHA256",
                     region: str = "ap-guangzhou") -> RawResponse:
        """GET with a hand-written query (kept byte for byte) plus the legacy common parameters.

        `decoded` are the same parameters as the server will decode them; the v1 signature
        is over the decoded (raw) values, sorted.
        """
        common = {
            "Version": VERSION,
            "Region": region,
            "Timestamp": str(int(time.time())),
            "Nonce": str(random.randint(1, 2**31 - 1)),
            "SecretId": self.secret_id,
            "SignatureMethod": algo,
        }
        all_params = dict(decoded)
        all_params.update(common)
        sig = v1_signature(self.secret_key, "GET", self.host, all_params, algo)
        query = query_without_auth + "&" + form_encode(common) + "&Signature=" + quote(sig, safe="")
        return send_raw(self.addr, "GET", "/?" + query, [("Host", self.host)])


def is_request_id(value) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False
