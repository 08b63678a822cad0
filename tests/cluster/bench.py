"""Scale-out figures (issue 5), printed, not asserted. Run by scripts/bench-cluster.

1. Failover: one `serve --no-workers` node and two `worker` processes (1 slot each) on one
   PostgreSQL catalog and one S3 bucket. An import trickles from a slow loopback origin;
   the worker running it is SIGKILLed; we time how long until the other worker runs it
   (lease expiry + its next claim). The lease length is the baseline: a takeover cannot
   come sooner than the lease's remaining time, nor later than it plus one idle poll.
2. Throughput: the same batch of imports (fast origin) with 1 worker process, then with
   2 worker processes, each with `concurrency` slots, in the same run on the same cluster.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cluster as cl
from cluster import igconf


def failover(work: Path, origin, disk: Path, rounds: int, lease: int) -> list[float]:
    c = cl.Cluster(work / "failover", lease_seconds=lease, concurrency=1)
    out = []
    try:
        front = c.api(c.add("front", "serve --no-workers"))
        for r in range(rounds):
            a = c.add(f"wa{r}", "worker")
            url = origin.serve(f"fo{r}.qcow2", disk, "slow")
            image_id = cl.import_image(front, url, igconf.unique("fo"))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                t = cl.tasks(front, [image_id])[image_id]
                if a.owns(t["Node"]) and (t["BytesFetched"] or 0) > 0:
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"worker never started {image_id}: {t} {a.output} {a.log_path.read_text()[-2000:]}")
            b = c.add(f"wb{r}", "worker")  # idle: the queue is empty
            a.kill()
            killed = time.monotonic()
            while time.monotonic() < killed + lease + 60:
                t = cl.tasks(front, [image_id])[image_id]
                if b.owns(t["Node"]):
                    out.append(time.monotonic() - killed)
                    break
                time.sleep(0.02)
            else:
                raise RuntimeError(f"{image_id} not taken over: {t}")
            origin.routes[f"fo{r}.qcow2"] = (disk, "ok")
            t = cl.wait_settled(front, [image_id], timeout=300)[image_id]
            assert t["TaskState"] == "SUCCEEDED", t
            b.stop()
            c.nodes.remove(b)
    finally:
        c.stop()
        c.drop()
    return out


def throughput(work: Path, origin, disk: Path, n: int, slots: int) -> list[tuple[int, float]]:
    c = cl.Cluster(work / "throughput", lease_seconds=30, concurrency=slots)
    results = []
    try:
        front = c.api(c.add("front", "serve --no-workers"))
        for processes in (1, 2):
            c.add(f"w{processes}", "worker")
            urls = [origin.serve(f"tp{processes}-{i}.qcow2", disk, "ok") for i in range(n)]
            t0 = time.monotonic()
            ids = [cl.import_image(front, u, igconf.unique("tp")) for u in urls]
            ts = cl.wait_settled(front, ids, timeout=900)
            dt = time.monotonic() - t0
            bad = [t for t in ts.values() if t["TaskState"] != "SUCCEEDED"]
            assert not bad, bad
            results.append((processes, dt))
    finally:
        c.stop()
        c.drop()
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="failover rounds")
    p.add_argument("--lease", type=int, default=3, help="[workers] lease_seconds for the failover rounds")
    p.add_argument("--imports", type=int, default=8, help="imports per throughput batch")
    p.add_argument("--slots", type=int, default=2, help="[workers] concurrency of each worker process")
    args = p.parse_args()
    why = cl.backend_available()
    if why:
        raise SystemExit(why)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        raw, disk = cl.source_disk(work)
        size = disk.stat().st_size
        origin = cl.Origin()
        try:
            fo = failover(work, origin, disk, args.rounds, args.lease)
            tp = throughput(work, origin, disk, args.imports, args.slots)
        finally:
            origin.close()
    print(f"source: {disk.name}, {size / 2**20:.1f} MiB (qcow2 of a 96 MiB disk); PostgreSQL catalog, "
          f"S3 (moto_server) blobs, all on loopback")
    print(f"failover (worker SIGKILLed -> idle worker runs its job), lease {args.lease}s, heartbeat every "
          f"{args.lease / 3:.1f}s, {len(fo)} rounds:")
    print(f"  mean {statistics.mean(fo):.2f}s  min {min(fo):.2f}s  max {max(fo):.2f}s   "
          f"(baseline: the lease, {args.lease}s)")
    base = None
    print(f"throughput, {args.imports} imports per batch, {args.slots} slots per worker process:")
    for processes, dt in tp:
        mib_s = args.imports * size / 2**20 / dt
        base = base or mib_s
        print(f"  {processes} worker process(es): {dt:6.2f}s  {args.imports / dt * 60:6.1f} imports/min  "
              f"{mib_s:6.1f} MiB/s source  ({mib_s / base:.2f}x of 1 process)")


if __name__ == "__main__":
    main()
