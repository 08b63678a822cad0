"""The operator's signals of a real `imagegate serve`: /healthz, /readyz, /metrics,
JSON logs (one line per request, one per import phase, never a secret), and a
graceful SIGTERM in the middle of an import that a restart resumes from its spool.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

import diskimages as di
from conftest import _start_deployment, make_accounts, unique
from origin import Origin
from tcraw import tc3_signature, utc_date
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cvm.v20170312 import cvm_client, models


@pytest.fixture(scope="module")
def origin():
    o = Origin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """A small bootable-looking CentOS 7 disk (raw) and its qcow2 form."""
    work = tmp_path_factory.mktemp("opsdisk")
    raw = di.linux_disk(work / "source.raw")
    return raw, di.convert(raw, work / "disk.qcow2", "qcow2-v3")


def http_get(dep, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://{dep.server.endpoint}{path}", timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def metrics(dep) -> dict[str, float]:
    status, ctype, text = http_get(dep, "/metrics")
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP ", "# TYPE ")), line
            continue
        series, _, value = line.rpartition(" ")
        out[series] = float(value)
    return out


def start_import(dep, url: str, name: str | None = None) -> str:
    req = models.ImportImageRequest()
    req.from_json_string(json.dumps({"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
                                     "ImageUrl": url, "ImageName": name or unique("ops")}))
    return dep.sdk("a").ImportImage(req).ImageId


def task(dep, image_id: str) -> dict:
    resp = dep.common("a").call_json("DescribeImportImageTasks", {"ImageIds": [image_id]})
    tasks = resp["Response"]["ImportImageTaskSet"]
    assert len(tasks) == 1, resp
    return tasks[0]


def wait_done(dep, image_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = task(dep, image_id)
        if t["ImageState"] != "IMPORTING":
            return t
        time.sleep(0.2)
    pytest.fail(f"{image_id} still IMPORTING after {timeout}s: {task(dep, image_id)}")


def json_lines(dep) -> list[dict]:
    out = []
    for line in dep.server.log_path.read_text(errors="replace").splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line is JSON in this format
    return out


def test_healthz_readyz_and_a_failing_readyz(tmp_path):
    dep = _start_deployment(tmp_path, rate_limits=False)
    try:
        assert http_get(dep, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
        status, ctype, body = http_get(dep, "/readyz")
        assert (status, ctype) == (200, "application/json"), body
        ready = json.loads(body)
        assert ready["status"] == "ready" and ready["failed"] == []
        assert {k for k, v in ready["checks"].items() if v["ok"]} == {"catalog", "migrations", "blobs"}
        if dep.backend.s3:
            return  # the local store's folder is what the rest of the test takes away
        images = dep.workdir / "data" / "images"
        images.rename(dep.workdir / "images.moved")
        try:
            time.sleep(1.1)  # /readyz is computed at most once a second
            status, _, body = http_get(dep, "/readyz")
            assert status == 503, body
            assert json.loads(body)["failed"] == ["blobs"]
            assert http_get(dep, "/healthz")[0] == 200
        finally:
            (dep.workdir / "images.moved").rename(images)
        time.sleep(1.1)
        assert http_get(dep, "/readyz")[0] == 200
    finally:
        dep.server.stop()


def test_json_logs_and_metrics_after_calls_and_an_import(tmp_path, origin, disk):
    raw, qcow2 = disk
    accounts = make_accounts()
    dep = _start_deployment(tmp_path, rate_limits=False, accounts=accounts,
                            extra='[log]\nformat = "json"\nlevel = "info"',
                            workers="concurrency = 2\nlease_seconds = 3")
    try:
        acc = accounts["a"]
        described = dep.sdk("a").DescribeImages(models.DescribeImagesRequest())
        # A wrong key: refused, and logged as such, with the SecretId but no key.
        bad = cvm_client.CvmClient(credential.Credential(acc.secret_id, "not-the-key-" + acc.secret_key[:4]),
                                   "ap-guangzhou",
                                   ClientProfile(httpProfile=HttpProfile(protocol="http",
                                                                         endpoint=dep.server.endpoint)))
        with pytest.raises(TencentCloudSDKException) as e:
            bad.DescribeImages(models.DescribeImagesRequest())
        assert e.value.code == "AuthFailure.SignatureFailure"

        url = origin.serve(f"ops-{unique()}.qcow2", qcow2, "ok")
        image_id = start_import(dep, url)
        t = wait_done(dep, image_id)
        assert t["ImageState"] == "NORMAL", t
        time.sleep(0.5)  # the outcome is counted right after it is recorded

        m = metrics(dep)
        assert m['imagegate_imports_total{state="NORMAL",code=""}'] == 1
        assert m['imagegate_requests_total{action="DescribeImages",code="Success"}'] >= 1
        assert m['imagegate_requests_total{action="DescribeImages",code="AuthFailure.SignatureFailure"}'] == 1
        assert m['imagegate_requests_total{action="ImportImage",code="Success"}'] == 1
        assert m['imagegate_request_duration_seconds_count{action="ImportImage"}'] == 1
        assert m['imagegate_import_duration_seconds_count{state="NORMAL"}'] == 1
        assert m["imagegate_import_bytes_fetched_total"] == qcow2.stat().st_size
        assert m["imagegate_import_bytes_written_total"] > 0
        assert m["imagegate_import_leases_held"] == 0
        assert m["imagegate_import_queue_depth"] == 0

        lines = json_lines(dep)
        text = dep.server.log_path.read_text()
        for account in accounts.values():
            assert account.secret_key not in text
        assert "Signature=" not in text and "TC3-HMAC-SHA256" not in text

        requests = [ln["fields"] for ln in lines if ln["fields"].get("message") == "request"]
        mine = [f for f in requests if f.get("request_id") == described.RequestId]
        assert len(mine) == 1, requests[:5]
        f = mine[0]
        assert f["action"] == "DescribeImages"
        assert f["code"] == "Success"
        assert f["uin"] == acc.uin
        assert f["secret_id"] == acc.secret_id
        assert isinstance(f["latency_ms"], (int, float)) and f["latency_ms"] >= 0
        refused = [f for f in requests if f.get("request_id") == e.value.requestId]
        assert len(refused) == 1 and refused[0]["code"] == "AuthFailure.SignatureFailure", refused

        phases = [ln["fields"] for ln in lines
                  if ln["fields"].get("message") == "import phase" and ln["fields"].get("image_id") == image_id]
        assert [p["phase"] for p in phases] == ["FETCHING", "INSPECTING_FORMAT", "CONVERTING", "STORING",
                                                "INSPECTING_GUEST"], phases
        assert all(isinstance(p["bytes_fetched"], int) for p in phases)
        assert phases[-1]["bytes_fetched"] > 0
    finally:
        dep.server.stop()


def test_sigterm_mid_import_hands_it_back_and_a_restart_resumes_it(tmp_path, origin, disk):
    """SIGTERM while an import downloads: prompt exit 0, job QUEUED again with its spool; the
    next start resumes it with a ranged request and it ends NORMAL on its first counted attempt."""
    raw, _ = disk
    dep = _start_deployment(tmp_path, rate_limits=False, workers="concurrency = 1\nlease_seconds = 2")
    name = f"ops-slow-{unique()}.raw"
    try:
        url = origin.serve(name, raw, "slow")  # ~5 MiB/s: 96 MiB takes ~20 s
        image_id = start_import(dep, url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and task(dep, image_id)["BytesFetched"] < 4 << 20:
            time.sleep(0.1)
        t = task(dep, image_id)
        assert 4 << 20 <= t["BytesFetched"] < raw.stat().st_size, t
        assert metrics(dep)["imagegate_import_leases_held"] == 1

        stopped = time.monotonic()
        dep.server.proc.send_signal(signal.SIGTERM)
        code = dep.server.proc.wait(timeout=15)
        took = time.monotonic() - stopped
        assert code == 0, code
        assert took < 10, f"SIGTERM took {took:.1f}s"
        log = dep.server.log_path.read_text()
        assert "import handed back to the queue" in log, log[-3000:]
        spool = dep.workdir / "data" / "scratch" / image_id
        assert spool.is_dir() and any(p.is_file() and p.stat().st_size > 0 for p in spool.rglob("*")), \
            list(spool.rglob("*"))

        before_restart = len(origin.requests)
        origin.routes[name] = (raw, "ok")
        dep.server.start()
        t = wait_done(dep, image_id)
        assert t["ImageState"] == "NORMAL", t
        # The handed-back attempt does not count against the job.
        assert t["Attempts"] == 1, t
        assert t["Sha256"] == di.sha256(raw)
        resumed = [rng for method, n, rng in origin.requests[before_restart:] if n == name and method == "GET"]
        starts = [int(m.group(1)) for r in resumed if r and (m := re.fullmatch(r"bytes=(\d+)-", r))]
        assert starts and starts[0] > 0, f"the restart did not resume the spool: {resumed}"
        assert not spool.exists()  # the finished import cleans its scratch space
    finally:
        dep.server.stop()


def test_sigterm_finishes_requests_in_flight_and_does_not_wait_forever(tmp_path):
    """After SIGTERM: no new connections; a request already arriving is answered; a client
    stalled mid-request is given up on after the grace period (10 s), and the exit is 0."""
    dep = _start_deployment(tmp_path, rate_limits=False)
    acc = dep.accounts["a"]
    body = b"{}"
    ts = int(time.time())
    host = dep.server.endpoint
    sig = tc3_signature(acc.secret_key, method="POST", host=host, content_type="application/json",
                        query="", payload=body, timestamp=ts)
    auth = (f"TC3-HMAC-SHA256 Credential={acc.secret_id}/{utc_date(ts)}/cvm/tc3_request, "
            f"SignedHeaders=content-type;host, Signature={sig}")
    head = (f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"X-TC-Action: DescribeImageQuota\r\nX-TC-Version: 2017-03-12\r\nX-TC-Region: ap-guangzhou\r\n"
            f"X-TC-Timestamp: {ts}\r\nAuthorization: {auth}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    try:
        short = socket.create_connection(("127.0.0.1", dep.port))
        short.sendall(head + body[:1])
        stalled = socket.create_connection(("127.0.0.1", dep.port))
        stalled.sendall(head + body[:1])
        time.sleep(0.3)
        stopped = time.monotonic()
        dep.server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", dep.port), timeout=2).close()
        short.sendall(body[1:])
        reply = b""
        short.settimeout(10)
        while chunk := short.recv(65536):
            reply += chunk
        status, _, rest = reply.partition(b"\r\n")
        assert status == b"HTTP/1.1 200 OK", reply
        answer = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        assert "Error" not in answer["Response"], answer
        assert answer["Response"]["ImageNumQuota"] == acc.quota
        code = dep.server.proc.wait(timeout=20)
        took = time.monotonic() - stopped
        assert code == 0
        assert 9 <= took < 15, f"exited {took:.1f}s after SIGTERM with a stalled request open"
        stalled.close()
    finally:
        dep.server.stop()
