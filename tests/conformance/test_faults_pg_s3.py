"""Back-end faults in the middle of imports (issue 16): what a retry can save is saved.

- PostgreSQL stopped for 14 s while three imports are mid-flight (one of them finishes
  during the outage and must wait to record its outcome): every import ends NORMAL on its
  first attempt, byte-identical to its source; the API answered InternalError (within its
  10 s wait for a connection, never a hang) during the outage and answers again after it;
  the server never exited; the catalog and the bucket agree exactly.
- The blob store's S3 endpoint behind our fault proxy (faultproxy.py, in front of the real
  moto_server) answering 45 s of mixed 500 InternalError / 503 SlowDown / connection
  resets, before the store saw the request or after it did the work (25 s of nothing
  else, then 20 s where 70 % of requests fail) while three imports upload and an export
  reads a stored image back: every import ends NORMAL,
  byte-identical, with no orphan object and no incomplete multipart upload; the export
  is complete and identical.
- An S3 outage longer than `blobs.retry_deadline_secs` fails the import with
  `BlobStoreUnavailable` once the deadline has passed, leaves nothing in the bucket once
  the store is back, and the next import runs normally. An export whose reads of the
  stored image fail past the deadline fails with the same code and leaves nothing in its
  bucket; the same export succeeds once the store is back.

- PostgreSQL's data volume full (its WAL elsewhere: 53100 disk_full, not a PANIC) while
  imports run and more are asked for: each call is accepted or answered
  ResourceInsufficient.StorageFull with nothing made, finished imports wait to record
  their outcome, and once there is room every accepted import ends NORMAL on its first
  attempt and the bucket matches the catalog.

PostgreSQL here is a server of this test's own (initdb in a temporary directory, a free
port; `PrivatePostgres`), restarted with `pg_ctl stop -m fast` / `start`: the shared
cluster of IMAGEGATE_TEST_PG_URL serves every other deployment of the session (and maybe
other runs on the machine), which a restart would disturb. Runs in scripts/test's pg-s3
pass (`conformance_pg_s3`); the SQLite pass does not collect this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

import diskimages as di
from conftest import BACKEND, S3_KEYS, Backend, _start_deployment, s3_client, unique
from faultproxy import KINDS, FaultProxy
from origin import Origin
from test_full_disk import fill

pytestmark = pytest.mark.skipif(BACKEND != "pg-s3", reason="needs PostgreSQL and S3 (IMAGEGATE_TEST_BACKEND=pg-s3)")

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_OUTAGE = 14.0          # seconds PostgreSQL is down
# Seconds of mixed S3 faults: every request fails for the first phase (longer than the
# ~10 retries an S3 client makes on its own), then 70 % of them.
S3_FAULT_PHASES = ((25.0, 1.0), (20.0, 0.7))
S3_FAULT_WINDOW = sum(seconds for seconds, _ in S3_FAULT_PHASES)
SHORT_DEADLINE = 6        # blobs.retry_deadline_secs of the deadline test
WORKERS = "concurrency = 4"


# --------------------------------------------------------------------------- fixtures

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """A PostgreSQL 15 server of this test's own, run as `postgres` when we are root.

    `data_volume_mib`: the data directory on a tmpfs of that size of its own, the WAL
    (`initdb --waldir`) outside it, so that filling the volume makes PostgreSQL answer
    53100 disk_full to what needs new room instead of failing its WAL (a PANIC and a
    restart, which the restart test covers)."""

    def __init__(self, data_volume_mib: int | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="igtest-pg-"))
        self.volume = None
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o700)
        initdb = ["initdb", "-A", "trust", "-U", "postgres", "--no-sync"]
        if data_volume_mib is None:
            self.data = self.dir / "data"
        else:
            assert os.geteuid() == 0, "mounting a tmpfs needs root"
            self.volume = self.dir / "volume"
            self.volume.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={data_volume_mib}m,mode=0700", "tmpfs",
                            str(self.volume)], check=True)
            shutil.chown(self.volume, "postgres", "postgres")
            self.data = self.volume / "data"
            initdb += ["--waldir", str(self.dir / "wal")]
        self._run(*initdb, "-D", self.data)
        self.start()
        subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "-c", "CREATE DATABASE imagegate"], check=True, capture_output=True, timeout=60)
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/imagegate"

    def _run(self, tool: str, *args):
        cmd = [str(PG_BIN / tool), *map(str, args)]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{tool}: {out.stdout}{out.stderr}"

    def start(self):
        self._run("pg_ctl", "-D", self.data, "-l", self.dir / "postgres.log", "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self):
        # Fast: open connections are terminated, as in a restart or a failover.
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop")

    def close(self):
        try:
            self.stop()
        except AssertionError:
            pass
        if self.volume is not None:
            subprocess.run(["umount", "-l", str(self.volume)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        return (self.dir / "postgres.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def origin():
    o = Origin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory) -> tuple[Path, Path]:
    """(raw source, qcow2 source): 96 MiB virtual, ~30 MiB of qcow2."""
    work = tmp_path_factory.mktemp("faults-small")
    raw = di.linux_disk(work / "small.raw", size_mib=96, data_mib=24, seed=16)
    return raw, di.convert(raw, work / "small.qcow2", "qcow2-v3")


@pytest.fixture(scope="module")
def big_disk(tmp_path_factory) -> tuple[Path, Path]:
    """(raw source, qcow2 source): 160 MiB virtual, ~70 MiB of qcow2 (four 16 MiB parts)."""
    work = tmp_path_factory.mktemp("faults-big")
    raw = di.linux_disk(work / "big.raw", size_mib=160, data_mib=64, seed=17)
    return raw, di.convert(raw, work / "big.qcow2", "qcow2-v3")


@pytest.fixture
def proxy():
    p = FaultProxy(os.environ["IMAGEGATE_TEST_S3_ENDPOINT"])
    yield p
    p.close()


def fresh_bucket() -> str:
    name = f"igtest-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=name)
    return name


# --------------------------------------------------------------------------- API helpers

def import_image(dep, url: str, name: str) -> str:
    from tencentcloud.cvm.v20170312 import models
    req = models.ImportImageRequest()
    req.from_json_string(json.dumps({"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
                                     "ImageUrl": url, "ImageName": name}))
    return dep.sdk().ImportImage(req).ImageId


def tasks(dep, ids: list[str]) -> dict[str, dict]:
    resp = dep.common().call_json("DescribeImportImageTasks", {"ImageIds": ids, "Limit": 100})
    return {t["ImageId"]: t for t in resp["Response"]["ImportImageTaskSet"]}


def wait_until(what: str, cond, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def answers(call) -> bool:
    """Whether an API call succeeds (an error answer is not one)."""
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
    try:
        call()
        return True
    except TencentCloudSDKException:
        return False


def settled(dep, ids: list[str], timeout: float) -> dict[str, dict]:
    def done():
        ts = tasks(dep, ids)
        return ts if all(t["TaskState"] not in ("QUEUED", "RUNNING") for t in ts.values()) else None
    return wait_until(f"tasks {ids} to settle", done, timeout, step=0.5)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def all_images(dep) -> dict[str, str]:
    """ImageId -> ImageState of every image of account a."""
    resp = dep.common().call_json("DescribeImages", {"Limit": 100})
    return {i["ImageId"]: i["ImageState"] for i in resp["Response"]["ImageSet"]}


def assert_stored_exactly(dep, sources: dict[str, Path], work: Path):
    """Every image of `sources` NORMAL with a blob identical to its raw source; the bucket
    holds exactly the NORMAL images' blobs and no incomplete multipart upload."""
    backend: Backend = dep.backend
    states = all_images(dep)
    normal = sorted(i for i, s in states.items() if s == "NORMAL")
    assert set(sources) <= set(normal), states
    assert backend.keys() == sorted(f"{i}.qcow2" for i in normal), "bucket and catalog disagree"
    assert backend.uploads() == [], "incomplete multipart uploads left in the bucket"
    for i, raw in sources.items():
        blob = work / f"{i}.qcow2"
        assert backend.fetch(f"{i}.qcow2", blob), f"no blob for {i}"
        chk = di.check(blob)
        assert chk.returncode == 0, chk.stdout + chk.stderr
        cmp = di.compare(raw, blob)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        blob.unlink()


# --------------------------------------------------------------------------- PostgreSQL restart

def test_postgres_restart_mid_import_fails_nothing(tmp_path, origin, small_disk):
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
    raw, qcow = small_disk
    pg = PrivatePostgres()
    dep = _start_deployment(tmp_path, rate_limits=False, workers=WORKERS,
                            backend=Backend(catalog_url=pg.url, bucket=fresh_bucket()))
    try:
        tag = uuid.uuid4().hex[:6]
        # Two trickle for ~20 s (past the outage); one arrives in ~5 s and so finishes
        # while the catalog is down: its outcome must wait for it.
        rates = [1_500_000, 1_500_000, 6_000_000]
        ids = [import_image(dep, origin.serve(f"pg{tag}{n}.qcow2", qcow, f"throttle:{rate}"), unique("pg"))
               for n, rate in enumerate(rates)]
        wait_until("all imports mid-flight",
                   lambda: all(t["TaskState"] == "RUNNING" and (t["BytesFetched"] or 0) > 0
                               for t in tasks(dep, ids).values()), 60)

        calls = []  # (code, seconds) of API calls begun while the catalog is down
        down = threading.Event()

        def call_meanwhile():
            while down.is_set():
                t0 = time.monotonic()
                try:
                    tasks(dep, ids)
                    calls.append(("ok", time.monotonic() - t0))
                except TencentCloudSDKException as e:
                    calls.append((e.code, time.monotonic() - t0))

        pg.stop()
        stopped = time.monotonic()
        down.set()
        caller = threading.Thread(target=call_meanwhile, daemon=True)
        caller.start()
        time.sleep(PG_OUTAGE)
        pg.start()
        outage = time.monotonic() - stopped
        down.clear()
        started = time.monotonic()
        wait_until("the API to answer again", lambda: answers(lambda: tasks(dep, ids)), 30, step=0.1)
        recovered = time.monotonic() - started

        caller.join(30)
        assert not caller.is_alive(), "an API call begun during the outage never returned"
        ts = settled(dep, ids, 240)
        print(f"\nPostgreSQL down {outage:.1f}s; API calls during it: "
              f"{[(c, round(s, 1)) for c, s in calls]}; API answered {recovered:.2f}s after the start; "
              f"imports settled {time.monotonic() - stopped:.1f}s after the stop")
        codes = {c for c, _ in calls}
        assert "InternalError" in codes, calls
        assert codes <= {"ok", "InternalError"}, calls
        assert max(s for _, s in calls) < 13, f"an API call hung: {calls}"
        assert dep.server.proc.poll() is None, "the server exited"
        for i in ids:
            t = ts[i]
            assert t["TaskState"] == "SUCCEEDED" and t["ImageState"] == "NORMAL", t
            assert t["Sha256"] == sha256(qcow), t
            # Waited, never restarted: the first attempt finished.
            assert len(t["AttemptSet"]) == 1, t["AttemptSet"]
        assert_stored_exactly(dep, dict.fromkeys(ids, raw), tmp_path)
    finally:
        dep.server.stop()
        pg.close()


# --------------------------------------------------------------------------- PostgreSQL disk full

PG_VOLUME_MIB = 64        # the catalog's data volume (initdb and the database take ~32)


def test_a_full_postgres_data_volume_refuses_or_waits_and_loses_nothing(tmp_path, origin, small_disk):
    """The catalog's PostgreSQL data volume fills up (its WAL is elsewhere, so the server
    answers 53100 disk_full) while three imports are mid-flight and more are asked for.
    Each call is accepted or answered ResourceInsufficient.StorageFull (with nothing
    made); the imports in flight finish their work and their outcomes wait for room; the
    server and PostgreSQL stay up. Once there is room every accepted import ends NORMAL
    on its first attempt, byte-identical, the bucket matches the catalog, and the next
    import runs normally."""
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
    raw, qcow = small_disk
    pg = PrivatePostgres(data_volume_mib=PG_VOLUME_MIB)
    dep = _start_deployment(tmp_path, rate_limits=False, workers=WORKERS,
                            backend=Backend(catalog_url=pg.url, bucket=fresh_bucket()))
    filler = None
    try:
        tag = uuid.uuid4().hex[:6]
        ids = [import_image(dep, origin.serve(f"full{tag}{n}.qcow2", qcow, "throttle:4000000"), unique("pgfull"))
               for n in range(3)]
        wait_until("all imports mid-flight",
                   lambda: all(t["TaskState"] == "RUNNING" and (t["BytesFetched"] or 0) > 0
                               for t in tasks(dep, ids).values()), 60)
        filler = fill(pg.volume, 0)

        # Ask for more until the catalog needs new room and says so (each import adds
        # rows; a page of a table or an index fills within a few dozen).
        accepted, refused = [], []
        for n in range(80):
            try:
                accepted.append(import_image(dep, origin.serve(f"more{tag}{n}.qcow2", qcow), unique("pgmore")))
            except TencentCloudSDKException as e:
                assert e.code == "ResourceInsufficient.StorageFull", (e.code, e.message)
                assert "/" not in e.message and "postgres" not in e.message.lower(), e.message
                refused.append(e.code)
                if len(refused) >= 3:
                    break
        assert refused, f"{len(accepted)} imports were accepted on a full volume: it never needed room"
        assert "No space left on device" in pg.log()

        # Long enough for the imports in flight to finish their bytes (~8 s at 4 MB/s).
        time.sleep(12)
        assert dep.server.proc.poll() is None, "the server exited"
        assert "PANIC" not in pg.log(), pg.log()[-2000:]
        # An import that finished meanwhile could not record it, and waits.
        assert "the task's outcome waits for room" in (tmp_path / "server.log").read_text(errors="replace")
        filler.unlink()
        filler = None

        every = ids + accepted
        ts = settled(dep, every, 300)
        for i in every:
            t = ts[i]
            assert t["TaskState"] == "SUCCEEDED" and t["ImageState"] == "NORMAL", t
            assert t["Sha256"] == sha256(qcow), t
            assert len(t["AttemptSet"]) == 1, t["AttemptSet"]
        # A refused call made nothing: the account holds exactly the accepted imports.
        assert sorted(all_images(dep)) == sorted(every)
        print(f"\n{len(accepted)} imports accepted and {len(refused)} refused (StorageFull) on a full "
              f"PostgreSQL volume; all {len(every)} NORMAL once there was room")

        after = import_image(dep, origin.serve(f"after{tag}.qcow2", qcow), unique("pgafter"))
        t = settled(dep, [after], 120)[after]
        assert t["TaskState"] == "SUCCEEDED" and t["ImageState"] == "NORMAL", t
        assert_stored_exactly(dep, dict.fromkeys(every + [after], raw), tmp_path)
    finally:
        if filler is not None:
            filler.unlink()
        dep.server.stop()
        pg.close()


# --------------------------------------------------------------------------- S3 faults

def s3_deployment(tmp_path: Path, proxy: FaultProxy, *blobs_extra: str):
    """The blob store through `proxy`; the COS stand-in (export targets) on moto directly."""
    base = Backend.fresh()
    backend = Backend(catalog_url=base.catalog_url, bucket=base.bucket, endpoint=proxy.endpoint,
                      blobs_extra=blobs_extra)
    cos = (f'cos_endpoint = "{os.environ["IMAGEGATE_TEST_S3_ENDPOINT"]}"\n'
           f'cos_access_key = "{S3_KEYS["aws_access_key_id"]}"\n'
           f'cos_secret_key = "{S3_KEYS["aws_secret_access_key"]}"\n'
           f'cos_region = "{S3_KEYS["region_name"]}"\n')
    return _start_deployment(tmp_path, rate_limits=False, workers=WORKERS + "\nexport_concurrency = 2",
                             with_cos_root=False, source_extra=cos, backend=backend)


def export_task(dep, task_id: int) -> dict:
    resp = dep.common().call_json("DescribeExportImageTasks", {"TaskIds": [task_id]})
    return resp["Response"]["ExportImageTaskSet"][0]


def test_a_minute_of_s3_errors_mid_import_fails_nothing(tmp_path, origin, big_disk, small_disk, proxy):
    raw, qcow = big_disk
    small_raw, small_qcow = small_disk
    dep = s3_deployment(tmp_path, proxy)
    try:
        tag = uuid.uuid4().hex[:6]
        # An image to export during the faults (its stored blob is read back through them).
        exported = import_image(dep, origin.serve(f"ex{tag}.qcow2", small_qcow), unique("ex"))
        ids = [import_image(dep, origin.serve(f"s3{tag}{n}.qcow2", qcow, "throttle:3000000"), unique("s3"))
               for n in range(3)]
        assert settled(dep, [exported], 120)[exported]["ImageState"] == "NORMAL"
        target = f"exp{tag}-{dep.accounts['a'].app_id}"
        s3_client().create_bucket(Bucket=target)
        wait_until("multipart uploads begun for every import",
                   lambda: {f"{i}.qcow2" for i in ids} <= set(dep.backend.uploads()), 60)
        before = proxy.counts["forwarded"]
        opened = time.monotonic()
        proxy.fault(seconds=S3_FAULT_WINDOW, rate=S3_FAULT_PHASES[0][1], latency=0.05, kinds=KINDS)
        resp = dep.common().call_json("ExportImages", {"ImageIds": [exported], "BucketName": target,
                                                       "ExportFormat": "RAW"})["Response"]
        task_id, key = resp["TaskId"], resp["CosPaths"][0][1:]
        time.sleep(max(0.0, opened + S3_FAULT_PHASES[0][0] - time.monotonic()))
        proxy.fault(seconds=S3_FAULT_PHASES[1][0], rate=S3_FAULT_PHASES[1][1], latency=0.05, kinds=KINDS)
        ts = settled(dep, ids, S3_FAULT_WINDOW + 180)
        took = time.monotonic() - opened
        et = wait_until("the export to end",
                        lambda: (t := export_task(dep, task_id))["TaskState"] not in ("QUEUED", "RUNNING") and t,
                        120, step=0.5)
        faulted = [(m, p, o) for _, m, p, o in proxy.log if o != "forwarded"]
        print(f"\nS3 fault window {S3_FAULT_WINDOW:.0f}s {S3_FAULT_PHASES}: {proxy.counts} "
              f"({proxy.counts['forwarded'] - before} forwarded since it opened); "
              f"imports settled {took:.1f}s after it opened")
        for kind in KINDS:
            assert proxy.counts[kind] > 0, proxy.counts
        # The faults hit the uploads themselves: parts and completions.
        assert any(m == "PUT" and "uploadId=" in p for m, p, _ in faulted), faulted[:20]
        for i in ids:
            t = ts[i]
            assert t["TaskState"] == "SUCCEEDED" and t["ImageState"] == "NORMAL", t
            assert t["Sha256"] == sha256(qcow), t
        # Every import was still uploading when the window opened: it waited the faults out.
        assert took >= S3_FAULT_WINDOW * 0.75, f"imports finished {took:.1f}s into the window"
        assert dep.server.proc.poll() is None, "the server exited"
        proxy.clear()
        assert_stored_exactly(dep, {**dict.fromkeys(ids, raw), exported: small_raw}, tmp_path)
        # The export read its source through the faults and wrote it whole.
        assert et["TaskState"] == "SUCCEEDED", et
        objects = s3_client().list_objects_v2(Bucket=target).get("Contents", [])
        assert [o["Key"] for o in objects] == [key], objects
        assert s3_client().list_multipart_uploads(Bucket=target).get("Uploads", []) == []
        local = tmp_path / "exported.raw"
        s3_client().download_file(target, key, str(local))
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(small_raw), str(local)],
                             capture_output=True, text=True)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    finally:
        dep.server.stop()


def test_an_s3_outage_past_the_deadline_fails_the_import_with_its_own_code(tmp_path, origin, big_disk,
                                                                            small_disk, proxy):
    raw, qcow = big_disk
    dep = s3_deployment(tmp_path, proxy, f"retry_deadline_secs = {SHORT_DEADLINE}")
    try:
        tag = uuid.uuid4().hex[:6]
        victim = import_image(dep, origin.serve(f"dl{tag}.qcow2", qcow, "throttle:3000000"), unique("dl"))
        # Open the outage while the first part fills (8 of its 16 MiB written): its upload
        # then comes a few seconds into the outage, and fails SHORT_DEADLINE later.
        wait_until("the import's first bytes in its upload",
                   lambda: (tasks(dep, [victim])[victim]["BytesWritten"] or 0) >= 8 << 20, 60)
        assert f"{victim}.qcow2" in dep.backend.uploads()
        window = SHORT_DEADLINE * 4
        proxy.fault(seconds=window, rate=1.0, kinds=("500", "503", "reset"))
        opened = time.monotonic()
        t = settled(dep, [victim], window + 60)[victim]
        failed_after = time.monotonic() - opened
        print(f"\ndeadline {SHORT_DEADLINE}s, outage {window}s: FAILED {failed_after:.1f}s into it "
              f"with {t['FailureCode']}: {t['FailureMessage']}")
        assert t["TaskState"] == "FAILED" and t["ImageState"] == "IMPORTFAILED", t
        assert t["FailureCode"] == "BlobStoreUnavailable", t
        assert "image store kept failing" in t["FailureMessage"] and "import the image again" in t["FailureMessage"], t
        for hidden in ("127.0.0.1", str(proxy.port), dep.backend.bucket, "http"):
            assert hidden not in t["FailureMessage"], t
        # Not before the deadline, and while the store was still down.
        assert SHORT_DEADLINE <= failed_after < window, failed_after
        assert len(t["AttemptSet"]) == 1, t

        # Once the store is back, nothing of the failed import is left in it.
        wait_until("the outage to end", lambda: not proxy.active(), window + 5)
        wait_until("the failed import's upload and blob to be removed",
                   lambda: dep.backend.uploads() == [] and f"{victim}.qcow2" not in dep.backend.keys(), 90, step=1)
        cleaned = time.monotonic() - opened - window
        print(f"nothing left {cleaned:.1f}s after the store came back")

        # The next import runs normally.
        small_raw, small_qcow = small_disk
        after = import_image(dep, origin.serve(f"ok{tag}.qcow2", small_qcow), unique("ok"))
        t = settled(dep, [after], 120)[after]
        assert t["TaskState"] == "SUCCEEDED" and t["ImageState"] == "NORMAL", t
        assert_stored_exactly(dep, {after: small_raw}, tmp_path)
        assert dep.server.proc.poll() is None, "the server exited"
    finally:
        dep.server.stop()


def test_an_s3_outage_past_the_deadline_fails_an_export_with_its_own_code(tmp_path, origin, small_disk, proxy):
    """The blob store's GETs fail (its HEADs, and the export bucket on moto directly, do
    not): the export's reads of the stored image wait out the outage up to the deadline,
    then the task fails with BlobStoreUnavailable and leaves nothing in the bucket; once the
    store is back the same export succeeds."""
    small_raw, small_qcow = small_disk
    dep = s3_deployment(tmp_path, proxy, f"retry_deadline_secs = {SHORT_DEADLINE}")
    try:
        tag = uuid.uuid4().hex[:6]
        image = import_image(dep, origin.serve(f"ed{tag}.qcow2", small_qcow), unique("ed"))
        assert settled(dep, [image], 120)[image]["ImageState"] == "NORMAL"
        target = f"exd{tag}-{dep.accounts['a'].app_id}"
        s3_client().create_bucket(Bucket=target)

        window = SHORT_DEADLINE * 4
        proxy.fault(seconds=window, rate=1.0, kinds=("500", "503", "reset"), methods=("GET",))
        opened = time.monotonic()
        params = {"ImageIds": [image], "BucketName": target, "ExportFormat": "QCOW2"}
        task_id = dep.common().call_json("ExportImages", params)["Response"]["TaskId"]
        t = wait_until("the export to end",
                       lambda: (t := export_task(dep, task_id))["TaskState"] not in ("QUEUED", "RUNNING") and t,
                       window + 30, step=0.5)
        failed_after = time.monotonic() - opened
        print(f"\ndeadline {SHORT_DEADLINE}s, GET outage {window}s: export {t['TaskState']} "
              f"{failed_after:.1f}s into it with {t.get('FailureCode')}: {t.get('FailureMessage')}")
        assert t["TaskState"] == "FAILED", t
        assert t["FailureCode"] == "BlobStoreUnavailable", t
        assert "image store kept failing" in t["FailureMessage"], t
        assert "export the image again" in t["FailureMessage"], t
        for hidden in ("127.0.0.1", str(proxy.port), dep.backend.bucket, "http"):
            assert hidden not in t["FailureMessage"], t
        # Not before the deadline, and while the store was still down.
        assert SHORT_DEADLINE <= failed_after < window, failed_after
        assert proxy.faults_injected() > 0, proxy.counts
        # Nothing in the bucket: no object, no incomplete upload.
        assert s3_client().list_objects_v2(Bucket=target).get("Contents", []) == []
        assert s3_client().list_multipart_uploads(Bucket=target).get("Uploads", []) == []

        # Once the store is back, the same export (in a later second: an identical
        # re-send within one would get the failed task back) succeeds.
        wait_until("the outage to end", lambda: not proxy.active(), window + 5)
        time.sleep(1.0)
        again = dep.common().call_json("ExportImages", params)["Response"]
        assert again["TaskId"] != task_id, again
        t = wait_until("the second export to end",
                       lambda: (t := export_task(dep, again["TaskId"]))["TaskState"] not in ("QUEUED", "RUNNING") and t,
                       120, step=0.5)
        assert t["TaskState"] == "SUCCEEDED", t
        local = tmp_path / "exported.qcow2"
        s3_client().download_file(target, again["CosPaths"][0][1:], str(local))
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(small_raw), str(local)],
                             capture_output=True, text=True)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        assert dep.server.proc.poll() is None, "the server exited"
    finally:
        dep.server.stop()
