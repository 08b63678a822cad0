#!/usr/bin/env python3
"""Soak run: mixed API load plus a stream of imports with faults, against one
real `imagegate serve`, sampling the server's RSS, open file descriptors and
disk usage, and checking at the end that nothing was lost and nothing grew.

Not part of the test suite (it runs for many minutes): `scripts/soak`.

What runs at once, for `--minutes`:
- `--load-threads` clients of the official Python SDK calling DescribeImages
  (by id, by filter, paged), DescribeImageQuota, DescribeImportImageOs,
  DescribeImportImageTasks and ModifyImageAttribute;
- an import driver submitting `--imports` imports spread over the first 80%
  of the run, at most `--parallel` in flight; each picks a source behaviour from the mix below, and
  each image is deleted once settled (so quota and disk stay bounded):
    ok 55%       a good qcow2 from the origin
    drop 15%     the connection breaks half way (the import must resume)
    slow 10%     a slow origin (the import must wait, not fail)
    raw 10%      a good raw disk
    truncated 10% a damaged qcow2 (must fail with a precise code)
- a sampler recording the server's RSS, fds and data_dir size every 10 s.

Verdict (exit 1 if any fails):
- every good import ended NORMAL and every damaged one IMPORTFAILED; none
  still IMPORTING at the end; no API call failed with InternalError;
- RSS and fds flat: the median of the last quarter of the samples is at most
  the median of the second quarter (after warm-up) plus a margin
  (RSS +25% or +32 MiB, fds +16);
- disk back within 64 MiB of where it started once every image is deleted.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "conformance"))

import diskimages  # noqa: E402
from conftest import Deployment, Server, make_accounts, write_config, unique, describe, filt, next_second  # noqa: E402
from origin import Origin  # noqa: E402
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException  # noqa: E402
from tencentcloud.cvm.v20170312 import models  # noqa: E402

MIX = [("ok", 55), ("drop", 15), ("slow", 10), ("raw", 10), ("truncated", 10)]
MiB = 1 << 20


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = Counter()
        self.errors = Counter()
        self.outcomes = Counter()
        self.wrong: list[str] = []

    def call(self, name: str, fn):
        try:
            out = fn()
            with self.lock:
                self.calls[name] += 1
            return out
        except TencentCloudSDKException as e:
            with self.lock:
                self.calls[name] += 1
                self.errors[f"{name}:{e.code}"] += 1
            return None


def build_sources(work: Path) -> dict[str, Path]:
    raw = diskimages.linux_disk(work / "disk.raw", size_mib=96, data_mib=24)
    good = diskimages.convert(raw, work / "disk.qcow2", "qcow2-v3")
    bad = diskimages.truncated(good, work / "bad.qcow2", keep=good.stat().st_size // 2)
    return {"ok": good, "drop": good, "slow": good, "raw": raw, "truncated": bad}


def sample(pid: int, data_dir: Path) -> tuple[float, int, int]:
    rss_kib = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    du = subprocess.run(["du", "-sk", str(data_dir)], capture_output=True, text=True).stdout.split()
    return rss_kib / 1024, fds, int(du[0]) * 1024 if du else 0


def load_worker(gate: Deployment, stats: Stats, stop: threading.Event, ids: list[str]):
    sdk = gate.sdk("a")
    rng = random.Random()
    while not stop.is_set():
        pick = rng.randrange(6)
        if pick == 0:
            stats.call("DescribeImages", lambda: describe(sdk, Limit=20, Offset=rng.randrange(3) * 20))
        elif pick == 1:
            stats.call("DescribeImages/filter", lambda: describe(sdk, Filters=[filt("image-type", "PRIVATE_IMAGE")]))
        elif pick == 2 and ids:
            stats.call("DescribeImages/id", lambda: describe(sdk, ImageIds=[rng.choice(ids)]))
        elif pick == 3:
            stats.call("DescribeImageQuota", lambda: sdk.DescribeImageQuota(models.DescribeImageQuotaRequest()))
        elif pick == 4:
            stats.call("DescribeImportImageOs", lambda: sdk.DescribeImportImageOs(models.DescribeImportImageOsRequest()))
        elif ids:
            req = models.ModifyImageAttributeRequest()
            req.ImageId = rng.choice(ids)
            req.ImageDescription = f"soak {time.time():.0f}"
            stats.call("ModifyImageAttribute", lambda: sdk.ModifyImageAttribute(req))
        time.sleep(0.02)


def import_driver(gate, origin, sources, stats, args, ids, stop):
    sdk = gate.sdk("a")
    rng = random.Random(7)
    names, weights = zip(*MIX)
    in_flight: dict[str, str] = {}
    submitted = 0
    started = time.monotonic()
    # Imports are spread over the first 80% of the run, not fired at once.
    pace = args.minutes * 60 * 0.8 / max(1, args.imports)
    while not stop.is_set() and (submitted < args.imports or in_flight):
        while (submitted < args.imports and len(in_flight) < args.parallel
               and time.monotonic() - started >= submitted * pace):
            kind = rng.choices(names, weights)[0]
            # One route per import: `drop` breaks only the first connection of a name.
            name = f"{kind}-{submitted}"
            behaviour = {"drop": "drop", "slow": "slow"}.get(kind, "ok")
            url = origin.serve(name, sources[kind], behaviour)
            req = models.ImportImageRequest()
            for k, v in {"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
                         "ImageUrl": url, "ImageName": unique("soak")}.items():
                setattr(req, k, v)
            resp = stats.call("ImportImage", lambda: sdk.ImportImage(req))
            submitted += 1
            if resp is not None:
                in_flight[resp.ImageId] = kind
                ids.append(resp.ImageId)
        for image_id, kind in list(in_flight.items()):
            r = stats.call("DescribeImages/poll", lambda: describe(sdk, ImageIds=[image_id]))
            if r is None or not r.ImageSet or r.ImageSet[0].ImageState == "IMPORTING":
                continue
            state = r.ImageSet[0].ImageState
            want = "IMPORTFAILED" if kind == "truncated" else "NORMAL"
            with stats.lock:
                stats.outcomes[f"{kind}:{state}"] += 1
                if state != want:
                    stats.wrong.append(f"{image_id} ({kind}) ended {state}, expected {want}")
            del in_flight[image_id]
            ids.remove(image_id)
            d = models.DeleteImagesRequest()
            d.ImageIds = [image_id]
            # The poll above sent the same body: signed in the same second, a delete
            # would be refused as a signature turned into another action (README).
            next_second()
            stats.call("DeleteImages", lambda: sdk.DeleteImages(d))
        time.sleep(0.5)
    # Submitting is over; keep the load running until the time is up.
    while not stop.is_set() and time.monotonic() - started < args.minutes * 60:
        time.sleep(1)
    with stats.lock:
        for image_id, kind in in_flight.items():
            stats.wrong.append(f"{image_id} ({kind}) still IMPORTING at the end")


def flat(values: list[float], margin_rel: float, margin_abs: float) -> tuple[bool, float, float]:
    q = max(1, len(values) // 4)
    early = statistics.median(values[q:2 * q]) if len(values) >= 4 else values[0]
    late = statistics.median(values[-q:])
    return late <= max(early * (1 + margin_rel), early + margin_abs), early, late


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--imports", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--load-threads", type=int, default=4)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imagegate-soak-"))
    print(f"soak: {args.minutes} min, {args.imports} imports ({args.parallel} at once), "
          f"{args.load_threads} load threads; work dir {work}", flush=True)
    sources = build_sources(work)
    origin = Origin()
    accounts = make_accounts()  # `a` has room for 500 images; settled ones are deleted
    (work / "cos").mkdir()
    config = work / "imagegate.toml"
    write_config(config, work / "data", accounts.values(), rate_limits=False, cos_root=work / "cos")
    server = Server(config, work / "server.log").start()
    gate = Deployment(server, accounts, work)
    stats = Stats()
    stop = threading.Event()
    ids: list[str] = []
    samples: list[tuple[float, float, int, int]] = []
    t0 = time.monotonic()
    samples.append((0.0, *sample(server.proc.pid, work / "data")))
    threads = [threading.Thread(target=load_worker, args=(gate, stats, stop, ids), daemon=True)
               for _ in range(args.load_threads)]
    driver = threading.Thread(target=import_driver, args=(gate, origin, sources, stats, args, ids, stop), daemon=True)
    for t in threads + [driver]:
        t.start()
    try:
        while time.monotonic() - t0 < args.minutes * 60 and server.proc.poll() is None:
            time.sleep(10)
            samples.append((time.monotonic() - t0, *sample(server.proc.pid, work / "data")))
            s = samples[-1]
            print(f"{s[0]:7.0f}s  rss {s[1]:7.1f} MiB  fds {s[2]:4d}  disk {s[3] / MiB:8.1f} MiB  "
                  f"imports done {sum(stats.outcomes.values()):4d}  calls {sum(stats.calls.values()):7d}", flush=True)
    finally:
        stop.set()
        driver.join(timeout=120)
        for t in threads:
            t.join(timeout=30)
    alive = server.proc.poll() is None
    # Everything deleted: the disk must come back to where it started.
    time.sleep(5)
    end = sample(server.proc.pid, work / "data") if alive else (0, 0, 0)
    server.stop()
    origin.close()

    failures = list(stats.wrong)
    if not alive:
        failures.append("the server died")
    internal = {k: v for k, v in stats.errors.items() if "InternalError" in k}
    if internal:
        failures.append(f"InternalError answers: {internal}")
    ok_rss, rss_early, rss_late = flat([s[1] for s in samples], 0.25, 32)
    ok_fds, fds_early, fds_late = flat([s[2] for s in samples], 0, 16)
    if not ok_rss:
        failures.append(f"RSS grew: {rss_early:.1f} -> {rss_late:.1f} MiB")
    if not ok_fds:
        failures.append(f"fds grew: {fds_early:.0f} -> {fds_late:.0f}")
    disk_growth = end[2] - samples[0][3]
    if alive and disk_growth > 64 * MiB:
        failures.append(f"disk grew by {disk_growth / MiB:.1f} MiB with every image deleted")

    print("\n== soak summary")
    print(f"duration {samples[-1][0]:.0f}s, samples {len(samples)}")
    print(f"RSS MiB: start {samples[0][1]:.1f}, 2nd-quarter median {rss_early:.1f}, last-quarter median {rss_late:.1f}, "
          f"max {max(s[1] for s in samples):.1f}")
    print(f"fds: start {samples[0][2]}, 2nd-quarter median {fds_early:.0f}, last-quarter median {fds_late:.0f}, "
          f"max {max(s[2] for s in samples)}")
    print(f"disk MiB: start {samples[0][3] / MiB:.1f}, max {max(s[3] for s in samples) / MiB:.1f}, "
          f"end (all deleted) {end[2] / MiB:.1f}")
    print(f"imports: {dict(sorted(stats.outcomes.items()))}")
    print(f"API calls: {sum(stats.calls.values())} ({dict(sorted(stats.calls.items()))})")
    print(f"API errors: {dict(sorted(stats.errors.items())) or 'none'}")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures[:50]))
        return 1
    print("PASS: nothing lost, RSS, fds and disk flat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
