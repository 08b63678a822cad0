"""Concurrency (uniqueness and quota held by the database) and rate limits."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.retry import StandardRetryer
from tencentcloud.cvm.v20170312 import models

from conftest import cos_url, describe, filt, import_request, unique


def _attempt(client, req):
    try:
        return "ok", client.ImportImage(req).ImageId
    except TencentCloudSDKException as e:
        return e.code, None


def test_same_name_from_20_threads_exactly_one_wins(gate):
    acc = gate.accounts["racer"]
    name = unique("race")
    clients = [gate.sdk("racer") for _ in range(20)]
    reqs = [import_request(ImageName=name, ImageUrl=cos_url(acc.app_id)) for _ in range(20)]
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda cr: _attempt(*cr), zip(clients, reqs)))
    codes = [c for c, _ in results]
    assert codes.count("ok") == 1, codes
    assert set(codes) - {"ok"} == {"InvalidImageName.Duplicate"}, codes
    r = describe(gate.sdk("racer"), Filters=[filt("image-name", name)])
    assert r.TotalCount == 1
    assert r.ImageSet[0].ImageId == next(i for c, i in results if c == "ok")


def test_quota_never_exceeded_under_concurrency(gate):
    acc = gate.accounts["racer2"]
    clients = [gate.sdk("racer2") for _ in range(16)]
    reqs = [import_request(ImageUrl=cos_url(acc.app_id)) for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda cr: _attempt(*cr), zip(clients, reqs)))
    codes = [c for c, _ in results]
    assert codes.count("ok") == acc.quota, codes
    assert set(codes) - {"ok"} == {"ImageQuotaLimitExceeded"}, codes
    assert describe(gate.sdk("racer2"), Limit=100).TotalCount == acc.quota


# --------------------------------------------------------------------------- rate limits


def _burst(dep, account, n, call):
    clients = [dep.sdk(account) for _ in range(8)]

    def one(i):
        try:
            call(clients[i % len(clients)])
            return "ok"
        except TencentCloudSDKException as e:
            return e.code

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(n)))
    return codes, time.monotonic() - t0


def _describe(c):
    return c.DescribeImages(models.DescribeImagesRequest())


def test_rate_limit_per_account_and_action(limited_gate):
    """DescribeImages is documented at 40 requests/s: a burst of 150 must be cut."""
    codes, elapsed = _burst(limited_gate, "a", 150, _describe)
    limited = codes.count("RequestLimitExceeded")
    assert set(codes) <= {"ok", "RequestLimitExceeded"}, set(codes)
    assert limited >= 1, f"150 DescribeImages in {elapsed:.2f}s, none limited"
    # The documented rate is honoured: at least 40 pass in the first second.
    assert codes.count("ok") >= 40, codes.count("ok")
    assert codes.count("ok") <= 40 * (elapsed + 1) + 40, (codes.count("ok"), elapsed)
    # Another action of the same account is not limited by the first one's budget ...
    limited_gate.sdk("a").DescribeImageQuota(models.DescribeImageQuotaRequest())
    # ... nor is another account.
    _describe(limited_gate.sdk("b"))


def test_import_image_rate_is_10_per_second(limited_gate):
    acc = limited_gate.accounts["lister"]

    def dry(c):
        c.ImportImage(import_request(ImageUrl=cos_url(acc.app_id), DryRun=True))

    codes, elapsed = _burst(limited_gate, "lister", 40, dry)
    assert codes.count("RequestLimitExceeded") >= 1, (codes, elapsed)
    assert codes.count("ok") >= 10, codes


def test_sdk_standard_retryer_recovers(limited_gate):
    """The SDK's StandardRetryer treats the server's RequestLimitExceeded as retryable,
    backs off and then succeeds; without a retryer the error reaches the caller."""
    plain = limited_gate.sdk("b")
    limited = None
    for _ in range(300):
        try:
            _describe(plain)
        except TencentCloudSDKException as e:
            limited = e
            break
    assert limited is not None and limited.code == "RequestLimitExceeded", limited
    assert StandardRetryer.should_retry(None, limited)

    retries = []

    class Recording(StandardRetryer):
        def on_retry(self, n, sleep, resp, err):
            retries.append(err.get_code())

    client = limited_gate.sdk("b", retryer=Recording(max_attempts=4, backoff_fn=lambda n: 1.0))
    _burst(limited_gate, "b", 100, _describe)
    resp = _describe(client)  # limited at first (most likely), then retried after 1 s
    assert resp.RequestId
    assert set(retries) <= {"RequestLimitExceeded"}, retries


def test_rate_limit_switch_off(gate):
    """The main server runs with `[rate_limits] enabled = false`: a large burst is never cut."""
    codes, _ = _burst(gate, "b", 150, _describe)
    assert set(codes) == {"ok"}, set(codes)
