"""Hostile clients against a real `imagegate serve` (issue 16): slow and half-open
connections, oversized bodies, a signature turned into another request, re-sends,
legacy v1 nonces, TLS with the Python SDK, and the operator's listener (also in a
`worker`-only process).

The deployment here has small `[net]` numbers so that the clocks run out within the
test: a 2 s header timeout, a 3 s body timeout and a cap of 64 connections.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import (Server, _start_deployment, bindir_binary, do_import, image_by_id, settled_image, unique,
                      write_config, make_accounts)
from tcraw import RawResponse, _recv_response, send_raw, v1_signature, form_encode, tc3_signature, utc_date
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cvm.v20170312 import cvm_client, models

NET = """ops_listen = "127.0.0.1:0"
[net]
header_read_timeout_secs = 2
body_read_timeout_secs = 3
idle_timeout_secs = 5
max_connections = 64
"""

OPS_READY = re.compile(r"^imagegate ops listening on (\S+)\s*$")


@pytest.fixture(scope="module")
def net_gate(tmp_path_factory):
    dep = _start_deployment(tmp_path_factory.mktemp("netgate"), rate_limits=False, extra=NET)
    yield dep
    dep.server.stop()


def ops_address(server: Server) -> str:
    for line in server.output:
        m = OPS_READY.match(line)
        if m:
            return m.group(1)
    raise AssertionError(f"no ops listening line in {server.output}")


def get(address: str, path: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True once the server has closed `sock` (EOF or reset), waiting at most `within`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, OSError):
                return True
            if not data:
                return True
    return False


# --------------------------------------------------------------------------- slow clients


def test_half_open_flood_never_stops_the_api(net_gate):
    """300 connections that send half a request header, against a cap of 64: /healthz
    and the SDK keep answering, and every flood connection is closed by the server."""
    host, port = "127.0.0.1", net_gate.port
    flood = []
    for _ in range(300):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: applic")
        flood.append(s)
    try:
        for _ in range(5):
            status, body = get(net_gate.server.endpoint, "/healthz")
            assert (status, body) == (200, "ok\n")
            resp = net_gate.sdk("a").DescribeImageQuota(models.DescribeImageQuotaRequest())
            assert resp.ImageNumQuota > 0
        # Every half-open connection is closed: evicted at the cap or timed out (2 s).
        still_open = [s for s in flood if not closed_by_peer(s, 15)]
        assert not still_open, f"{len(still_open)} of 300 half-open connections still open"
    finally:
        for s in flood:
            s.close()


def test_idle_connection_is_closed_after_the_idle_timeout(net_gate):
    s = socket.create_connection(("127.0.0.1", net_gate.port), timeout=10)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = _recv_response(s)
        assert resp.status == 200
        # Keep-alive: the connection stays for the next request, then is closed (5 s).
        assert closed_by_peer(s, 20)
    finally:
        s.close()


def test_slow_body_gets_an_answer_not_a_hung_handler(net_gate):
    """A body that stops half-way is answered (InvalidRequest) after the body timeout."""
    raw = net_gate.raw("a")
    host = raw.host
    ts = int(time.time())
    body = b'{"ImageIds": ["img-00000000"]}'
    sig = tc3_signature(raw.secret_key, method="POST", host=host, content_type="application/json", query="",
                        payload=body, timestamp=ts, date=utc_date(ts), service="cvm")
    head = (f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: TC3-HMAC-SHA256 Credential={raw.secret_id}/{utc_date(ts)}/cvm/tc3_request, "
            f"SignedHeaders=content-type;host, Signature={sig}\r\n"
            f"X-TC-Action: DescribeImages\r\nX-TC-Version: 2017-03-12\r\nX-TC-Timestamp: {ts}\r\n"
            f"X-TC-Region: ap-guangzhou\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(raw.addr, timeout=30) as s:
        s.sendall(head + body[:10])
        resp = _recv_response(s)
    assert resp.status == 200
    assert resp.error_code == "InvalidRequest", resp.body


# --------------------------------------------------------------------------- oversized bodies


def test_dozen_max_size_bodies_from_an_unknown_key_cost_no_memory(net_gate):
    """Twelve concurrent 10 MiB TC3 bodies under a made-up SecretId: each is answered
    SecretIdNotFound from its header, and the server's RSS stays flat."""
    pid = net_gate.server.proc.pid
    before = rss_kib(pid)
    body = b'{"ImageName": "' + b"x" * (10 * 1024 * 1024 - 40) + b'"}'
    answers: list[RawResponse | Exception] = []

    def one():
        raw = net_gate.raw("a")
        try:
            answers.append(raw.tc3_post("ModifyImageAttribute", body=body, secret_id="AKIDunknown0000000000000000"))
        except Exception as e:  # noqa: BLE001 - recorded and asserted below
            answers.append(e)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = rss_kib(pid)
    print(f"RSS before {before} KiB, after 12 x 10 MiB bodies from an unknown key {after} KiB "
          f"(+{after - before} KiB; the bodies total {12 * len(body) // 1024} KiB)")
    codes = [a.error_code if isinstance(a, RawResponse) else repr(a) for a in answers]
    assert codes == ["AuthFailure.SecretIdNotFound"] * 12, codes
    assert after - before < 40 * 1024, f"RSS grew by {after - before} KiB"


def test_form_with_too_many_pairs_is_refused_before_the_tree(net_gate):
    raw = net_gate.raw("a")
    body = ("&".join(f"k{i}=v" for i in range(20000))).encode()
    r = send_raw(raw.addr, "POST", "/", [("Host", raw.host), ("Content-Type", "application/x-www-form-urlencoded")],
                 body)
    assert r.error_code == "InvalidParameter", r.body
    assert "10000" in r.error_message


# --------------------------------------------------------------------------- signature binding


def unused_second() -> int:
    """A timestamp well inside the window that no SDK call of this test used: the
    helpers poll the same image with the SDK (same body) in the current seconds."""
    return int(time.time()) - 200


def signed_copy(raw, action: str, params: dict, ts: int, region: str = "ap-guangzhou") -> RawResponse:
    """The same signed body and timestamp, sent with `action` and `region`."""
    return raw.tc3_post(action, params, timestamp=ts, region=region)


def test_a_signature_cannot_become_a_mutating_request(net_gate):
    """A captured DescribeImages re-sent later as DeleteImages (same body, same signature)
    is refused, in any region; a mutating request keeps its region; read-only targets run.
    Each raw request comes on a new connection, signed 200 s ago: a captured copy."""
    raw = net_gate.raw("a")
    image_id = settled_image(net_gate, "a")
    ts = unused_second()
    params = {"ImageIds": [image_id]}
    first = signed_copy(raw, "DescribeImages", params, ts)
    assert first.error_code is None, first.body
    assert first.response["TotalCount"] == 1
    for action, region in [("DeleteImages", "ap-guangzhou"), ("DeleteImages", "ap-shanghai")]:
        swapped = signed_copy(raw, action, params, ts, region)
        assert swapped.error_code == "AuthFailure.SignatureFailure", (action, region, swapped.body)
    # The image is still there.
    again = signed_copy(raw, "DescribeImages", params, ts)
    assert again.error_code is None and again.response["TotalCount"] == 1
    assert again.response["RequestId"] != first.response["RequestId"]
    # Read-only targets change nothing and run (SDKs polling two actions send such pairs).
    tasks = signed_copy(raw, "DescribeImportImageTasks", params, ts)
    assert tasks.error_code is None, tasks.body
    # A mutating request is bound to its region.
    dry = {"ImageIds": [image_id], "DryRun": True}
    assert signed_copy(raw, "DeleteImages", dry, ts + 1).error_code is None
    moved = signed_copy(raw, "DeleteImages", dry, ts + 1, "ap-shanghai")
    assert moved.error_code == "AuthFailure.SignatureFailure", moved.body
    assert image_by_id(net_gate.sdk("a"), image_id).ImageId == image_id


def test_a_client_that_signs_action_and_region_is_never_refused_for_sharing_a_second(net_gate):
    """Signing X-TC-Action and X-TC-Region (as the console does) makes every action's
    signature its own: DescribeImages then DeleteImages of one image, same body, same
    second, both run; the signature still cannot be moved to another region."""
    raw = net_gate.raw("a")
    image_id = settled_image(net_gate, "a")
    ts = unused_second()
    params = {"ImageIds": [image_id]}
    seen = raw.tc3_post("DescribeImages", params, timestamp=ts, sign_action_region=True)
    assert seen.error_code is None and seen.response["TotalCount"] == 1, seen.body
    gone = raw.tc3_post("DeleteImages", params, timestamp=ts, sign_action_region=True)
    assert gone.error_code is None, gone.body
    after = raw.tc3_post("DescribeImages", params, timestamp=ts + 1, sign_action_region=True)
    assert after.error_code is None and after.response["TotalCount"] == 0, after.body
    # The signed region is checked like any signed header: the Authorization signed for
    # ap-guangzhou, sent with X-TC-Region ap-shanghai, is refused.
    body = json.dumps(params).encode()
    date = utc_date(ts + 2)
    sig = tc3_signature(raw.secret_key, method="POST", host=raw.host, content_type="application/json", query="",
                        payload=body, timestamp=ts + 2, date=date,
                        signed_extra=[("x-tc-action", "DescribeImages"), ("x-tc-region", "ap-guangzhou")])
    auth = (f"TC3-HMAC-SHA256 Credential={raw.secret_id}/{date}/cvm/tc3_request, "
            f"SignedHeaders=content-type;host;x-tc-action;x-tc-region, Signature={sig}")
    moved = raw.tc3_post("DescribeImages", body=body, timestamp=ts + 2, region="ap-shanghai", authorization=auth)
    assert moved.error_code == "AuthFailure.SignatureFailure", moved.body
    kept = raw.tc3_post("DescribeImages", body=body, timestamp=ts + 2, authorization=auth)
    assert kept.error_code is None, kept.body


def test_identical_resend_of_a_mutating_request_gets_the_first_answer(net_gate):
    raw = net_gate.raw("a")
    image_id = settled_image(net_gate, "a")
    ts = unused_second()
    params = {"ImageIds": [image_id]}
    first = signed_copy(raw, "DeleteImages", params, ts)
    assert first.error_code is None, first.body
    again = signed_copy(raw, "DeleteImages", params, ts)
    # Byte for byte the first answer (same RequestId), not InvalidImageId.NotFound.
    assert again.body == first.body
    # A new request (new signature) sees the image gone.
    gone = raw.tc3_post("DeleteImages", params, timestamp=ts + 1)
    assert gone.error_code == "InvalidImageId.NotFound", gone.body


def describe_then_delete_in_one_second(reader: cvm_client.CvmClient, deleter: cvm_client.CvmClient,
                                       image_id: str) -> tuple[TencentCloudSDKException | None, bool]:
    """DescribeImages then DeleteImages of `image_id`, both signed by the SDK in one second
    (byte-identical bodies: one signature), starting just after a second begins. The
    delete's error, if any, and whether the pair did fall in one second."""
    time.sleep(1.02 - time.time() % 1)
    started = time.time()
    req = models.DescribeImagesRequest()
    req.ImageIds = [image_id]
    assert reader.DescribeImages(req).TotalCount == 1
    delete = models.DeleteImagesRequest()
    delete.ImageIds = [image_id]
    try:
        deleter.DeleteImages(delete)
        error = None
    except TencentCloudSDKException as e:
        error = e
    return error, int(time.time()) == int(started)


def test_sdk_describe_then_delete_in_one_second_runs_on_one_or_two_connections(net_gate):
    """Terraform's refresh then destroy, or any client reading an image just before it
    deletes it: the two calls share a signature when they fall in one second. On the
    client's own kept-alive connection the delete is the client's next call and runs; from
    a second client (a new connection, as tccli's process per call makes) it comes at once
    and runs too. The same signature turned into a delete later is a captured request:
    `test_a_signature_cannot_become_a_mutating_request` is refused. A pair that straddled
    two seconds (a slow moment) proves nothing about a shared signature: it is tried
    again, with a new image, up to three times."""
    sdk = net_gate.sdk("a")
    gone = models.DescribeImagesRequest()
    for reader, deleter in [(sdk, sdk), (net_gate.sdk("a"), net_gate.sdk("a"))]:
        for _ in range(3):
            image_id = settled_image(net_gate, "a")
            error, one_second = describe_then_delete_in_one_second(reader, deleter, image_id)
            assert error is None, error
            gone.ImageIds = [image_id]
            time.sleep(1.1)
            assert sdk.DescribeImages(gone).TotalCount == 0
            if one_second:
                break
        else:
            pytest.fail("three DescribeImages + DeleteImages pairs each straddled a second: a slow machine")


def test_sdk_calls_a_second_apart(net_gate):
    """The SDK signs each call with the current second. DescribeImages and DeleteImages
    of one image send byte-identical bodies, so they share a signature within one second
    (see above); a second apart they are different requests on any connection."""
    sdk = net_gate.sdk("a")
    image_id = settled_image(net_gate, "a")
    assert image_by_id(sdk, image_id).ImageId == image_id
    time.sleep(1.1)
    req = models.DeleteImagesRequest()
    req.ImageIds = [image_id]
    sdk.DeleteImages(req)
    # The SDK signs with the current second: a second later the same call is a new
    # request (within the same second it would be an identical re-send and get the
    # first answer back).
    time.sleep(1.1)
    with pytest.raises(TencentCloudSDKException) as e:
        sdk.DeleteImages(req)
    assert e.value.get_code() == "InvalidImageId.NotFound"


def v1_query(raw, action: str, flat: dict[str, str], nonce: int, ts: int) -> str:
    p = dict(flat)
    p.update({"Action": action, "Version": "2017-03-12", "Region": "ap-guangzhou", "Timestamp": str(ts),
              "Nonce": str(nonce), "SecretId": raw.secret_id, "SignatureMethod": "HmacSHA256"})
    p["Signature"] = v1_signature(raw.secret_key, "GET", raw.host, p, "HmacSHA256")
    return "/?" + form_encode(p)


def test_v1_nonce_binds_like_a_signature(net_gate):
    raw = net_gate.raw("a")
    ts = int(time.time())
    nonce = int.from_bytes(os.urandom(4), "big") + 1
    q = v1_query(raw, "DescribeImages", {"Limit": "1"}, nonce, ts)
    first = send_raw(raw.addr, "GET", q, [("Host", raw.host)])
    assert first.error_code is None, first.body
    # The identical read-only request again: runs again.
    again = send_raw(raw.addr, "GET", q, [("Host", raw.host)])
    assert again.error_code is None, again.body
    # Another request under the same Nonce (validly signed): refused.
    other = send_raw(raw.addr, "GET", v1_query(raw, "DescribeImages", {"Limit": "2"}, nonce, ts),
                     [("Host", raw.host)])
    assert other.error_code == "AuthFailure.SignatureFailure", other.body
    other = send_raw(raw.addr, "GET", v1_query(raw, "DescribeImageQuota", {}, nonce, ts), [("Host", raw.host)])
    assert other.error_code == "AuthFailure.SignatureFailure", other.body


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_gate(tmp_path_factory):
    work = tmp_path_factory.mktemp("tls")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    extra = f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    dep = _start_deployment(work, rate_limits=False, extra=extra)
    dep.cert = cert
    yield dep
    dep.server.stop()


def test_tls_with_the_python_sdk(tls_gate):
    acc = tls_gate.accounts["a"]
    http = HttpProfile(protocol="https", endpoint=tls_gate.server.endpoint, reqTimeout=30,
                       certification=str(tls_gate.cert))
    sdk = cvm_client.CvmClient(credential.Credential(acc.secret_id, acc.secret_key), "ap-guangzhou",
                               ClientProfile(httpProfile=http))
    assert sdk.DescribeImageQuota(models.DescribeImageQuotaRequest()).ImageNumQuota > 0
    image_id = do_import(sdk, ImageName=unique())
    assert image_by_id(sdk, image_id).ImageId == image_id
    # Plain HTTP to the TLS listener gets no API answer.
    with socket.create_connection(("127.0.0.1", tls_gate.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            data = s.recv(4096)
        except (ConnectionResetError, OSError):
            pass
    assert b"ok" not in data


# --------------------------------------------------------------------------- operations


def test_ops_listener_serves_readyz_and_metrics(net_gate):
    ops = ops_address(net_gate.server)
    status, body = get(ops, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready", body
    status, text = get(ops, "/metrics")
    assert status == 200 and "imagegate_requests_total" in text
    assert get(ops, "/healthz") == (200, "ok\n")
    # The API listener keeps /healthz only.
    assert get(net_gate.server.endpoint, "/healthz") == (200, "ok\n")
    assert get(net_gate.server.endpoint, "/readyz")[0] == 404
    assert get(net_gate.server.endpoint, "/metrics")[0] == 404


def test_worker_only_process_serves_ops(net_gate, tmp_path):
    """`imagegate worker` on the same catalog, with its own ops_listen."""
    config = tmp_path / "worker.toml"
    text = net_gate.server.config.read_text()
    config.write_text(text)
    proc = subprocess.Popen([bindir_binary(), "worker", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "worker.log", "ab"), stdin=subprocess.DEVNULL)
    try:
        address = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and address is None:
            line = proc.stdout.readline().decode()
            if not line:
                break
            m = OPS_READY.match(line.strip())
            if m:
                address = m.group(1)
        assert address, (tmp_path / "worker.log").read_text()[-2000:]
        status, body = get(address, "/readyz")
        assert status == 200, body
        status, text = get(address, "/metrics")
        assert status == 200 and "imagegate_" in text
    finally:
        proc.terminate()
        proc.wait(20)
