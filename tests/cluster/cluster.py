"""A loopback imagegate cluster on one PostgreSQL catalog and one S3 bucket.

Used by test_cluster.py and by scripts/bench-cluster. Nodes are real processes of the
imagegate binary in their three roles: `serve`, `serve --no-workers` and `worker`; each
has its own config file and data directory (scratch only), all naming the same
`[catalog] url` and `[blobs] url`. The catalog database and the bucket come from the
conformance suite's back-end switch (IMAGEGATE_TEST_PG_URL, IMAGEGATE_TEST_S3_ENDPOINT).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance"
sys.path.insert(0, str(CONFORMANCE))


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The conformance fixtures module under a name of its own (pytest owns "conftest").
igconf = sys.modules.get("igconf") or _load("igconf", CONFORMANCE / "conftest.py")

import diskimages as di  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from origin import Origin  # noqa: E402,F401

READY = {
    "serve": re.compile(r"^imagegate listening on (\S+)\s*$"),
    "worker": re.compile(r"^imagegate worker running\s*$"),
}


def backend_available() -> str | None:
    """Why the cluster cannot run here, or None."""
    missing = [v for v in ("IMAGEGATE_TEST_PG_URL", "IMAGEGATE_TEST_S3_ENDPOINT") if not os.environ.get(v)]
    if missing:
        return f"needs PostgreSQL and S3 ({', '.join(missing)} unset; scripts/test sets them in its pg-s3 pass)"
    return None


class Node:
    """One imagegate process: role is `serve`, `serve --no-workers` or `worker`."""

    def __init__(self, name: str, role: str, config: Path, log: Path):
        self.name, self.role, self.config, self.log_path = name, role, config, log
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 60) -> "Node":
        args = [igconf.bindir_binary()] + self.role.split() + ["--config", str(self.config)]
        ready = READY["worker" if self.role == "worker" else "serve"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
                                     env=env)
        deadline, buf = time.monotonic() + timeout, b""
        while time.monotonic() < deadline and self.proc.poll() is None:
            if not select.select([self.proc.stdout], [], [], 0.2)[0]:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                self.output.append(text)
                m = ready.match(text)
                if m:
                    if m.groups():
                        self.address = m.group(1)
                    threading.Thread(target=self._drain, daemon=True).start()
                    return self
        self.stop()
        raise RuntimeError(f"{self.name} ({self.role}) did not start: {self.output}\n"
                           f"{self.log_path.read_text(errors='replace')[-3000:]}")

    def _drain(self):
        try:
            for line in self.proc.stdout:
                self.output.append(line.decode("utf-8", "replace").rstrip("\n"))
        except (ValueError, OSError):
            pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def owns(self, node_field: str | None) -> bool:
        """Whether a task's Node (`<host>:<pid>:<tag>`) is this process."""
        return bool(node_field) and f":{self.pid}:" in node_field

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()


class Cluster:
    """Nodes on one catalog and one bucket, plus clients that talk to a chosen API node."""

    def __init__(self, workdir: Path, *, lease_seconds: int = 3, concurrency: int = 2,
                 rate_limits: bool = False, rate_limit_scope: str | None = None,
                 cos_root: bool = True, source_extra: str = "", workers_extra: str = ""):
        """`cos_root=False` leaves `source.cos_root` unset, so COS (import sources and
        export buckets) is the S3 store named in `source_extra` (`cos_endpoint` ...);
        `workers_extra` adds lines to every node's `[workers]`."""
        self.workdir = workdir
        self.accounts = igconf.make_accounts()
        # Shared back-ends whatever IMAGEGATE_TEST_BACKEND says: that is what a cluster is.
        igconf.BACKEND = "pg-s3"
        self.backend = igconf.Backend.fresh()
        self.lease_seconds = lease_seconds
        self.concurrency = concurrency
        self.rate_limits, self.rate_limit_scope = rate_limits, rate_limit_scope
        self.cos_root, self.source_extra, self.workers_extra = cos_root, source_extra, workers_extra
        self.nodes: list[Node] = []
        (workdir / "cos").mkdir(parents=True, exist_ok=True)

    def add(self, name: str, role: str) -> Node:
        d = self.workdir / name
        d.mkdir(exist_ok=True)
        config = d / "imagegate.toml"
        igconf.write_config(config, d / "data", self.accounts.values(), rate_limits=self.rate_limits,
                            rate_limit_scope=self.rate_limit_scope,
                            cos_root=self.workdir / "cos" if self.cos_root else None,
                            source_extra=self.source_extra, backend=self.backend,
                            workers=f"concurrency = {self.concurrency}\nlease_seconds = {self.lease_seconds}\n"
                                    f"{self.workers_extra}")
        node = Node(name, role, config, d / "node.log").start()
        self.nodes.append(node)
        return node

    def api(self, node: Node) -> "igconf.Deployment":
        server = igconf.Server(node.config, node.log_path)
        server.port = int(node.address.rpartition(":")[2])
        return igconf.Deployment(server, self.accounts, self.workdir, self.backend)

    def stop(self):
        for n in self.nodes:
            n.stop()
        self.nodes.clear()

    def sql(self, query: str) -> list[list[str]]:
        """Rows of a query on the catalog database (PostgreSQL), as text."""
        out = igconf.pg_admin(query, url=self.backend.catalog_url)
        return [line.split("|") for line in out.splitlines() if line]

    def store_matches_catalog(self) -> list[str]:
        """The blob keys, once the bucket has been found to match the catalog exactly: the
        bucket holds the blob of every disk of every NORMAL image (a SyncImages copy names
        its source's) and nothing else (no orphan, no missing blob), each is listed in
        `blobs`, and no multipart upload is left unfinished in the blob bucket. (`blobs`
        may also list the keys of imports not NORMAL: its row is written with the image.)"""
        named = sorted(r[0] for r in self.sql(
            "SELECT DISTINCT d.blob_key FROM image_disks d JOIN images i ON i.image_id = d.image_id "
            "WHERE i.state = 'NORMAL'"))
        unnamed = self.sql("SELECT d.image_id, d.disk_index FROM image_disks d JOIN images i "
                           "ON i.image_id = d.image_id WHERE i.state = 'NORMAL' AND d.blob_key IS NULL")
        assert not unnamed, f"disks of NORMAL images without a blob: {unnamed}"
        listed = {r[0] for r in self.sql("SELECT blob_key FROM blobs")}
        assert set(named) <= listed, f"blobs of NORMAL images not in `blobs`: {set(named) - listed}"
        keys = self.backend.keys()
        assert keys == named, f"bucket {keys} != blobs of NORMAL images {named}"
        assert self.backend.uploads() == [], "incomplete multipart uploads left in the blob bucket"
        return keys

    def drop(self):
        """Drop the catalog database and empty the bucket."""
        if self.backend.catalog_url:
            db = self.backend.catalog_url.rsplit("/", 1)[1]
            igconf.pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if self.backend.bucket:
            s3 = igconf.s3_client()
            for key in self.backend.keys():
                s3.delete_object(Bucket=self.backend.bucket, Key=f"{self.backend.prefix}/{key}")


# --------------------------------------------------------------------------- API helpers


def import_image(dep, url: str, name: str, account: str = "a", description: str | None = None) -> str:
    from tencentcloud.cvm.v20170312 import models
    req = models.ImportImageRequest()
    params = {"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7", "ImageUrl": url, "ImageName": name}
    if description is not None:
        params["ImageDescription"] = description
    req.from_json_string(json.dumps(params))
    return dep.sdk(account).ImportImage(req).ImageId


def tasks(dep, image_ids: list[str], account: str = "a") -> dict[str, dict]:
    out = {}
    for i in range(0, len(image_ids), 20):
        resp = dep.common(account).call_json("DescribeImportImageTasks", {"ImageIds": image_ids[i:i + 20]})
        out.update({t["ImageId"]: t for t in resp["Response"]["ImportImageTaskSet"]})
    return out


def images(dep, account: str) -> list[dict]:
    from tencentcloud.cvm.v20170312 import models
    out, offset = [], 0
    while True:
        req = models.DescribeImagesRequest()
        req.from_json_string(json.dumps({"Offset": offset, "Limit": 100}))
        resp = json.loads(dep.sdk(account).DescribeImages(req).to_json_string())
        out += resp["ImageSet"]
        offset += 100
        if offset >= resp["TotalCount"]:
            return out


def wait_settled(dep, image_ids: list[str], timeout: float, account: str = "a") -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        ts = tasks(dep, image_ids, account)
        if all(t["TaskState"] not in ("QUEUED", "RUNNING") for t in ts.values()) and len(ts) == len(image_ids):
            return ts
        if time.monotonic() > deadline:
            return ts
        time.sleep(0.25)


def source_disk(workdir: Path, fmt: str = "qcow2-v3", seed: int = 1) -> tuple[Path, Path]:
    """(raw source, the same disk in `fmt`)."""
    raw = di.linux_disk(workdir / f"source-{seed}.raw", seed=seed)
    return raw, di.convert(raw, workdir / f"disk-{seed}.{fmt}", fmt)


# --------------------------------------------------------------------------- S3 part gate


class PartGate(FaultProxy):
    """An S3 proxy (in front of moto_server) that stops multipart uploads midway on command.

    `hold_after(n)`: n more UploadPart requests go through, later ones are held (their body
    read, nothing forwarded) until `open()`; `open(drop=True)` resets the held ones instead
    of forwarding them (their sender is dead: nothing of theirs may reach the store), and
    from then on everything is forwarded. Other requests always pass.
    """

    def __init__(self, upstream: str):
        super().__init__(upstream)
        self.cond = threading.Condition()
        self.passes: int | None = None  # None: open
        self.drop = False
        self.held = 0
        self.parts = {"forwarded": 0, "held": 0, "dropped": 0}

    def hold_after(self, n: int):
        with self.cond:
            self.passes, self.drop = n, False

    def open(self, drop: bool = True):
        with self.cond:
            self.passes, self.drop = None, drop
            self.cond.notify_all()

    def _handle(self, h):
        if not (h.command == "PUT" and "partNumber=" in h.path and "uploadId=" in h.path):
            return super()._handle(h)
        body = self._read_body(h)
        with self.cond:
            dropped = False
            if self.passes is not None and self.passes > 0:
                self.passes -= 1
            elif self.passes is not None:
                self.held += 1
                self.parts["held"] += 1
                while self.passes is not None and self.passes <= 0:
                    self.cond.wait()
                self.held -= 1
                dropped = self.drop
            self.parts["dropped" if dropped else "forwarded"] += 1
        if dropped:
            self._reset(h)
            return
        self._forward(h, body)
