"""Progress is live: what DescribeImportImageTasks says follows the import as it
happens, and a cancel acts at once, without turning progress into a write storm.

The source is a loopback origin throttled so that an import lasts a few seconds
(tests/conformance/origin.py, "throttle:<bytes/s>"); the workers keep the default
30 s lease, so that only the progress heartbeat can make the task move between
polls. Nothing asserts a speed: each test counts polls or observed states, with
generous bounds (a poll is a full signed request, never faster than its sleep).
"""

from __future__ import annotations

import json
import time

import pytest

import diskimages as di
from conftest import _start_deployment, unique
from origin import Origin
from tencentcloud.cvm.v20170312 import models

RATE = 1 << 20  # bytes per second of the throttled origin
PHASES = ["FETCHING", "INSPECTING_FORMAT", "CONVERTING", "STORING", "INSPECTING_GUEST", "DONE"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    dep = _start_deployment(tmp_path_factory.mktemp("live"), rate_limits=False,
                            workers="concurrency = 4")
    yield dep
    dep.server.stop()


@pytest.fixture(scope="module")
def origin():
    o = Origin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """A small bootable-looking CentOS 7 disk as qcow2 (a few MiB: a few seconds at RATE)."""
    work = tmp_path_factory.mktemp("livedisk")
    raw = di.linux_disk(work / "source.raw", size_mib=48, data_mib=4)
    return di.convert(raw, work / "disk.qcow2", "qcow2-v3")


def start_import(dep, url: str) -> str:
    req = models.ImportImageRequest()
    req.from_json_string(json.dumps({"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
                                     "ImageUrl": url, "ImageName": unique("live")}))
    return dep.sdk("a").ImportImage(req).ImageId


def task(dep, image_id: str) -> dict:
    resp = dep.common("a").call_json("DescribeImportImageTasks", {"ImageIds": [image_id]})
    (t,) = resp["Response"]["ImportImageTaskSet"]
    return t


def follow(dep, image_id: str, max_polls: int = 1500) -> list[dict]:
    """Every task view until the import ends (poll every 0.1 s)."""
    seen = []
    for _ in range(max_polls):
        t = task(dep, image_id)
        seen.append(t)
        if t["ImageState"] != "IMPORTING":
            return seen
        time.sleep(0.1)
    pytest.fail(f"{image_id} still IMPORTING after {max_polls} polls: {seen[-1]}")


def progress_writes(dep) -> float:
    import urllib.request
    with urllib.request.urlopen(f"http://{dep.server.endpoint}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("imagegate_import_progress_writes_total "):
                return float(line.split()[1])
    pytest.fail("no imagegate_import_progress_writes_total in /metrics")


def test_bytes_and_phases_move_while_the_import_runs(live, origin, disk):
    size = disk.stat().st_size
    image_id = start_import(live, origin.serve("live.qcow2", disk, f"throttle:{RATE}"))
    seen = follow(live, image_id)
    assert seen[-1]["ImageState"] == "NORMAL", seen[-1]
    running = [t for t in seen if t["TaskState"] == "RUNNING"]
    # The byte counter moves while the source arrives: many distinct values
    # strictly between 0 and the whole (the import lasts several seconds at
    # RATE; with progress written only every 10 s there would be one or two).
    partial = {t["BytesFetched"] for t in running if 0 < t["BytesFetched"] < size}
    assert len(partial) >= 3, [(t["Phase"], t["BytesFetched"]) for t in running]
    # The total is known while running, not only at the end.
    assert any(t["BytesTotal"] == size for t in running), running[:3]
    # The converter's counter moves too, and the phases only go forward.
    converted = {t["BytesConverted"] for t in running if t["BytesConverted"]}
    assert len(converted) >= 2, [(t["Phase"], t["BytesConverted"]) for t in running]
    order = [PHASES.index(t["Phase"]) for t in seen if t["Phase"] in PHASES]
    assert order == sorted(order), [t["Phase"] for t in seen]
    assert "CONVERTING" in {t["Phase"] for t in running}, [t["Phase"] for t in seen]
    assert seen[-1]["Phase"] == "DONE" and seen[-1]["Percent"] == 100, seen[-1]


def test_a_finished_import_tells_where_its_time_went(live, origin, disk):
    t0 = time.monotonic()
    image_id = start_import(live, origin.serve("phases.qcow2", disk, f"throttle:{RATE}"))
    seen = follow(live, image_id)
    wall = time.monotonic() - t0
    done = seen[-1]
    assert done["ImageState"] == "NORMAL", done
    # Recorded with the outcome, not before.
    assert all(t["PhaseTimes"] == [] for t in seen if t["TaskState"] != "SUCCEEDED"), seen[0]
    times = done["PhaseTimes"]
    phases = [p["Phase"] for p in times]
    # Every phase the attempt went through, once each, in the order entered.
    assert phases == ["FETCHING", "INSPECTING_FORMAT", "CONVERTING", "STORING",
                      "INSPECTING_GUEST"], times
    assert all(p["Seconds"] >= 0 for p in times), times
    total = sum(p["Seconds"] for p in times)
    # They cover the attempt: the source alone takes size/RATE seconds to arrive
    # (the download runs under every phase), and nothing outlasts the import.
    assert total >= 0.8 * disk.stat().st_size / RATE, times
    assert total <= wall + 0.5, (total, wall)


def test_cancel_is_seen_within_a_few_polls(live, origin, disk):
    image_id = start_import(live, origin.serve("cancel.qcow2", disk, f"throttle:{RATE // 4}"))
    for _ in range(600):
        t = task(live, image_id)
        if t["BytesFetched"] > 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the import never started fetching: {t}")
    live.common("a").call_json("CancelImportImageTask", {"ImageId": image_id})
    # Acting within about a second: seen within 20 polls 0.1 s apart (a
    # heartbeat that wrote every third of the 30 s lease took up to 10 s).
    for polls in range(1, 21):
        t = task(live, image_id)
        if t["TaskState"] != "RUNNING":
            break
        time.sleep(0.1)
    print(f"\ncancel seen after {polls} poll(s) 0.1 s apart")
    assert t["TaskState"] == "CANCELLED", (polls, t)
    assert t["ImageState"] == "IMPORTFAILED" and t["FailureCode"] == "ImportCancelled", t


def test_four_imports_write_progress_at_a_bounded_rate(live, origin, disk):
    before = progress_writes(live)
    t0 = time.monotonic()
    ids = [start_import(live, origin.serve(f"four-{i}.qcow2", disk, f"throttle:{RATE}")) for i in range(4)]
    for image_id in ids:
        assert follow(live, image_id)[-1]["ImageState"] == "NORMAL"
    elapsed = time.monotonic() - t0
    writes = progress_writes(live) - before
    print(f"\nprogress writes: {writes:.0f} in {elapsed:.1f} s for 4 concurrent imports "
          f"({writes / elapsed:.2f}/s, backend {'pg-s3' if live.backend.s3 else 'sqlite'})")
    assert writes > 0
    # At most one write per import per half second, plus the first of each:
    # a bound a slow machine cannot break (it only makes `elapsed` longer).
    assert writes <= 4 * (elapsed / 0.5 + 2), (writes, elapsed)
