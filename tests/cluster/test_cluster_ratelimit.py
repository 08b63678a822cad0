"""Rate limits across nodes (issue 16): two API nodes on one PostgreSQL catalog share
each account's buckets (`rate_limits.scope = "cluster"`, the default), so an account
gets the documented rate from the cluster, not from each node; with `scope = "node"`
each node keeps its own (the contrast, and what the key promises).

The action is DescribeImageSharePermission (10 requests per second) with no ImageId:
the limiter runs before the parameters are decoded, so each request is either refused
with RequestLimitExceeded or admitted and then refused with MissingParameter, without
touching a catalog table. A read-only action, so identical bodies in one second are fine
(see the signature binding in the README).

The bounds grow with the measured time (a token bucket of 10 refills 10 per second), so
a slow machine cannot fail them; they fail when the cluster admits more than one
account's rate. Runs in scripts/test's pg-s3 pass; skipped without PostgreSQL and S3.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

import cluster as cl

pytestmark = pytest.mark.skipif(cl.backend_available() is not None, reason=str(cl.backend_available()))

ACTION = "DescribeImageSharePermission"
RATE = 10
THREADS = 5


def _start(workdir, scope):
    c = cl.Cluster(workdir, rate_limits=True, rate_limit_scope=scope)
    with ThreadPoolExecutor(2) as pool:
        c.one, c.two = pool.map(lambda name: c.add(name, "serve --no-workers"), ["one", "two"])
    return c


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    c = _start(tmp_path_factory.mktemp("rl-cluster"), "cluster")
    try:
        yield c
    finally:
        c.stop()
        c.drop()


@pytest.fixture(scope="module")
def per_node(tmp_path_factory):
    c = _start(tmp_path_factory.mktemp("rl-node"), "node")
    try:
        yield c
    finally:
        c.stop()
        c.drop()


def _send(client) -> str:
    try:
        client.call_json(ACTION, {})
        return "no error"
    except TencentCloudSDKException as e:
        return e.code


def _burst(dep, account: str, n: int) -> list[str]:
    """`n` requests from THREADS threads (a client each) to one node, as fast as they go."""
    clients = [dep.common(account) for _ in range(THREADS)]
    with ThreadPoolExecutor(THREADS) as pool:
        parts = pool.map(lambda c: [_send(c) for _ in range(n // THREADS)], clients)
    codes = [code for part in parts for code in part]
    assert set(codes) <= {"MissingParameter", "RequestLimitExceeded"}, set(codes)
    return codes


def _admitted(codes: list[str]) -> int:
    return sum(c != "RequestLimitExceeded" for c in codes)


def _one_node_then_the_other(c, account: str) -> tuple[int, int, float]:
    one, two = c.api(c.one), c.api(c.two)
    t0 = time.monotonic()
    on_one = _admitted(_burst(one, account, 20))
    on_two = _admitted(_burst(two, account, 20))
    return on_one, on_two, time.monotonic() - t0


def test_a_burst_on_one_node_leaves_nothing_on_the_other(shared):
    """Node one takes the account's whole burst; node two, whose own bucket is full, is
    refused all but what refilled meanwhile."""
    on_one, on_two, elapsed = _one_node_then_the_other(shared, "a")
    ceiling = RATE * (1 + elapsed)
    print(f"\nshared: {on_one} + {on_two} admitted in {elapsed:.2f}s (at most {ceiling:.1f})")
    assert on_one >= RATE, on_one
    assert on_one + on_two <= ceiling + 1, (on_one, on_two, elapsed)


def test_node_scope_gives_each_node_its_own_bucket(per_node):
    on_one, on_two, elapsed = _one_node_then_the_other(per_node, "a")
    print(f"\nper node: {on_one} + {on_two} admitted in {elapsed:.2f}s")
    assert on_one >= RATE and on_two >= RATE, (on_one, on_two)


def test_both_nodes_at_once_admit_the_documented_rate(shared):
    """Eight threads, four per node, for two seconds: the cluster admits the account's
    rate (the first second's burst and the refill), no more and not much less."""
    deps = [shared.api(shared.one), shared.api(shared.two)]
    clients = [deps[i % 2].common("b") for i in range(8)]
    stop = threading.Event()

    def run(client):
        codes = []
        while not stop.is_set():
            codes.append(_send(client))
        return codes

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(clients)) as pool:
        futures = [pool.submit(run, c) for c in clients]
        time.sleep(2)
        stop.set()
        codes = [code for f in futures for code in f.result()]
    elapsed = time.monotonic() - t0
    admitted = _admitted(codes)
    ceiling = RATE * (1 + elapsed)
    print(f"\nshared, both nodes: {admitted} of {len(codes)} admitted in {elapsed:.2f}s "
          f"(at most {ceiling:.1f})")
    assert set(codes) <= {"MissingParameter", "RequestLimitExceeded"}, set(codes)
    assert len(codes) > 2 * ceiling, "the load did not exceed the rate: nothing was tested"
    assert admitted <= ceiling + 1, (admitted, elapsed)
    assert admitted >= 0.8 * RATE * elapsed, (admitted, elapsed)
