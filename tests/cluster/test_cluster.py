"""Scale-out on loopback (issue 5): two API nodes and a worker on one PostgreSQL catalog
and one S3 bucket (moto_server).

- Name uniqueness and quota hold across nodes under concurrent requests to both.
- 12 imports spread over both API nodes, from a loopback origin that trickles bodies;
  the `worker` process is SIGKILLed while it holds imports mid-flight; the serving node's
  workers take them over once their leases expire. Every image ends NORMAL with a blob
  that `qemu-img compare` finds identical to its source; the catalog and the bucket agree
  exactly (no orphan, no missing blob, no incomplete multipart upload); AttemptSet names
  the node of every attempt.

Runs in scripts/test's pg-s3 pass; skipped (with the reason) without PostgreSQL and S3.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import cluster as cl
from cluster import di, igconf

pytestmark = pytest.mark.skipif(cl.backend_available() is not None, reason=str(cl.backend_available()))

IMPORTS = 12
LEASE_SECONDS = 3


@pytest.fixture(scope="module")
def origin():
    o = cl.Origin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """front: `serve --no-workers`; back: `serve` (API + 2 workers); worker: `worker` (2 workers)."""
    c = cl.Cluster(tmp_path_factory.mktemp("cluster"), lease_seconds=LEASE_SECONDS, concurrency=2)
    try:
        # Started at once on an empty database: the migrations must serialise themselves.
        roles = [("front", "serve --no-workers"), ("back", "serve"), ("worker", "worker")]
        with ThreadPoolExecutor(3) as pool:
            c.front, c.back, c.worker = pool.map(lambda nr: c.add(*nr), roles)
        yield c
    finally:
        c.stop()
        c.drop()


def _attempt(dep, account, name, url, description=None):
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
    try:
        return "ok", cl.import_image(dep, url, name, account, description)
    except TencentCloudSDKException as e:
        return e.code, None


def test_one_name_from_both_nodes_exactly_one_wins(cluster):
    apis = [cluster.api(cluster.front), cluster.api(cluster.back)]
    acc = cluster.accounts["racer"]
    name = igconf.unique("xnode")
    url = igconf.cos_url(acc.app_id, key=f"missing-{name}.qcow2")
    with ThreadPoolExecutor(20) as pool:
        # Each attempt is a request of its own (its own description): twenty identical
        # bodies signed in one second would be one request sent twenty times, which a
        # node answers once and replays (README, "A signature is bound...").
        results = list(pool.map(lambda i: _attempt(apis[i % 2], "racer", name, url, f"attempt {i}"), range(20)))
    codes = [c for c, _ in results]
    assert codes.count("ok") == 1, codes
    assert set(codes) - {"ok"} == {"InvalidImageName.Duplicate"}, codes
    for dep in apis:
        assert [i["ImageName"] for i in cl.images(dep, "racer")].count(name) == 1


def test_quota_holds_across_nodes(cluster):
    apis = [cluster.api(cluster.front), cluster.api(cluster.back)]
    acc = cluster.accounts["racer2"]  # quota 4
    url = igconf.cos_url(acc.app_id, key="missing-quota.qcow2")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: _attempt(apis[i % 2], "racer2", igconf.unique("q"), url), range(16)))
    codes = [c for c, _ in results]
    assert codes.count("ok") == acc.quota, codes
    assert set(codes) - {"ok"} == {"ImageQuotaLimitExceeded"}, codes
    for dep in apis:
        assert len(cl.images(dep, "racer2")) == acc.quota


def test_killed_worker_is_taken_over_and_storage_stays_exact(cluster, origin, tmp_path):
    raw, disk = cl.source_disk(tmp_path)
    apis = [cluster.api(cluster.front), cluster.api(cluster.back)]
    ids = []
    for i in range(IMPORTS):
        url = origin.serve(f"c{i}.qcow2", disk, "slow")
        ids.append(cl.import_image(apis[i % 2], url, igconf.unique(f"cl{i}")))
    front = apis[0]

    # Wait until the worker process holds imports mid-flight: bytes fetched and a
    # multipart upload begun in the bucket.
    victim = cluster.worker
    deadline = time.monotonic() + 60
    held = []
    while time.monotonic() < deadline and not held:
        uploading = set(cluster.backend.uploads())
        held = [i for i, t in cl.tasks(front, ids).items()
                if victim.owns(t["Node"]) and t["TaskState"] == "RUNNING" and (t["BytesFetched"] or 0) > 0
                and f"{i}.qcow2" in uploading]
        time.sleep(0.1)
    assert held, f"the worker never held an import mid-flight: {cl.tasks(front, ids)}"
    victim.kill()
    killed_at = time.monotonic()
    # The dead attempts' uploads are left in the bucket, for the next attempt to abort.
    assert {f"{i}.qcow2" for i in held} <= set(cluster.backend.uploads())

    # Taken over by the other worker node once the lease expires.
    resumed = {}
    deadline = killed_at + LEASE_SECONDS + 60
    while time.monotonic() < deadline and len(resumed) < len(held):
        ts = cl.tasks(front, held)
        for i in held:
            if i not in resumed and cluster.back.owns(ts[i]["Node"]):
                resumed[i] = time.monotonic() - killed_at
        time.sleep(0.05)
    assert set(resumed) == set(held), cl.tasks(front, held)
    print(f"\nworker death -> job resumed elsewhere: {min(resumed.values()):.2f}s first, "
          f"{max(resumed.values()):.2f}s last (lease {LEASE_SECONDS}s, {len(held)} jobs)")
    # No one takes a job before its lease has run out.
    assert min(resumed.values()) >= LEASE_SECONDS - 1.0, resumed

    for name in list(origin.routes):
        if name.startswith("c"):
            origin.routes[name] = (disk, "ok")
    ts = cl.wait_settled(front, ids, timeout=300)
    for i in ids:
        assert ts[i]["TaskState"] == "SUCCEEDED" and ts[i]["ImageState"] == "NORMAL", ts[i]
        assert ts[i]["Sha256"] == di.sha256(disk), ts[i]

    # AttemptSet: every attempt names its node; the killed ones ran on both worker nodes.
    workers = {cluster.back.pid, cluster.worker.pid}
    for i in ids:
        attempts = ts[i]["AttemptSet"]
        assert attempts and all(a["Node"] for a in attempts), ts[i]
        assert {int(a["Node"].split(":")[1]) for a in attempts} <= workers, attempts
        assert cluster.back.owns(attempts[-1]["Node"]) or cluster.worker.owns(attempts[-1]["Node"])
    for i in held:
        nodes = [a["Node"] for a in ts[i]["AttemptSet"]]
        assert len(nodes) >= 2 and victim.owns(nodes[0]) and cluster.back.owns(nodes[-1]), ts[i]

    # Every blob is identical to its source.
    for i in ids:
        path = tmp_path / f"{i}.qcow2"
        assert cluster.backend.fetch(f"{i}.qcow2", path), f"no blob for {i}"
        chk = di.check(path)
        assert chk.returncode == 0, chk.stdout + chk.stderr
        cmp = di.compare(raw, path)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        path.unlink()

    # The catalog and the bucket agree exactly, across every account.
    normal = set()
    for account in cluster.accounts:
        for img in cl.images(front, account):
            assert img["ImageState"] != "IMPORTING", img
            if img["ImageState"] == "NORMAL":
                normal.add(img["ImageId"])
    assert normal >= set(ids)
    assert cluster.backend.keys() == sorted(f"{i}.qcow2" for i in normal)
    assert cluster.backend.uploads() == [], "incomplete multipart uploads left in the bucket"
