"""Fixtures: a real `imagegate serve` on 127.0.0.1, accounts, and the three kinds of client.

The binary comes from IMAGEGATE_BIN (scripts/test sets it); without it the suite
falls back to target/debug/imagegate and fails loudly if that does not exist.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from tcraw import RawClient  # noqa: E402

from tencentcloud.common import credential  # noqa: E402
from tencentcloud.common.common_client import CommonClient  # noqa: E402
from tencentcloud.common.profile.client_profile import ClientProfile  # noqa: E402
from tencentcloud.common.profile.http_profile import HttpProfile  # noqa: E402
from tencentcloud.cvm.v20170312 import cvm_client, models  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"^imagegate listening on (\S+)\s*$")
STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Account:
    name: str
    secret_id: str
    secret_key: str
    app_id: int
    uin: str
    quota: int
    storage_quota_gib: float | None = None  # accounts.storage_quota_gib (issue 16)


def _secret(n: int) -> str:
    return uuid.uuid4().hex[:n]


def make_accounts() -> dict[str, Account]:
    """Fresh credentials per session. `a` owns the bucket in Tencent's own doc example."""
    specs = [
        # name, app_id, uin, quota
        ("a", 1251233127, "100000000001", 500),
        ("b", 1300000002, "100000000002", 500),
        ("small", 1300000003, "100000000003", 3),  # ImageQuotaLimitExceeded
        ("tiny", 1300000004, "100000000004", 1),  # quota freed by DeleteImages
        ("lister", 1300000005, "100000000005", 500),  # pagination / Limit defaults
        ("racer", 1300000006, "100000000006", 500),  # concurrent imports
        ("racer2", 1300000007, "100000000007", 4),  # concurrent quota
        ("dry", 1300000008, "100000000008", 1),  # DryRun writes nothing (a write would fill the quota)
    ]
    return {
        name: Account(name, "AKID" + _secret(32), _secret(32), app_id, uin, quota)
        for name, app_id, uin, quota in specs
    }


def bindir_binary() -> str:
    env = os.environ.get("IMAGEGATE_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    return str(Path(target) / "debug" / "imagegate")


def write_config(path: Path, data_dir: Path, accounts, *, rate_limits: bool, cos_root: Path | None,
                 regions=("ap-guangzhou", "ap-shanghai", "ap-beijing"),
                 import_regions=("ap-guangzhou", "ap-beijing"), extra: str = "",
                 source_extra: str = "", workers: str = "concurrency = 32",
                 backend: "Backend | None" = None, rate_limit_scope: str | None = None) -> "Backend":
    """Write the config; returns the back-end it names (see `Backend`).

    `backend` None means the one chosen by IMAGEGATE_TEST_BACKEND: the embedded
    default, or with `pg-s3` a fresh PostgreSQL database and a fresh S3 bucket.
    """
    backend = backend or Backend.fresh()

    def toml_list(xs):
        return "[" + ", ".join(f'"{x}"' for x in xs) + "]"

    lines = [
        'listen = "127.0.0.1:0"',
        f'data_dir = "{data_dir}"',
        f"regions = {toml_list(regions)}",
        f"import_regions = {toml_list(import_regions)}",
        extra,
        "[rate_limits]",
        f"enabled = {'true' if rate_limits else 'false'}",
        f'scope = "{rate_limit_scope}"' if rate_limit_scope else "",
        # Imports from the stalling source (below) each hold a worker until the
        # pipeline's stall timeout: leave plenty for the imports that must finish.
        "[workers]",
        workers,
        "[source]",
        f'cos_root = "{cos_root}"' if cos_root else "",
        'allow_hosts = ["127.0.0.1"]',
        source_extra,
    ]
    for acc in accounts:
        lines += [
            "[[accounts]]",
            f'secret_id = "{acc.secret_id}"',
            f'secret_key = "{acc.secret_key}"',
            f"app_id = {acc.app_id}",
            f'uin = "{acc.uin}"',
            f"image_quota = {acc.quota}",
        ]
        if acc.storage_quota_gib is not None:
            lines.append(f"storage_quota_gib = {acc.storage_quota_gib}")
    path.write_text("\n".join(lines + backend.toml_lines()) + "\n")
    return backend


# --------------------------------------------------------------------------- back-ends (issue 5)
#
# IMAGEGATE_TEST_BACKEND=pg-s3 runs every deployment on PostgreSQL + S3 instead of the
# embedded default (SQLite + <data_dir>/images): each config gets a fresh database made
# through IMAGEGATE_TEST_PG_URL (a role with CREATEDB, e.g.
# postgres://imagegate_test:imagegate_test@127.0.0.1:5432/postgres) and a fresh bucket on
# the S3-compatible IMAGEGATE_TEST_S3_ENDPOINT (moto_server). scripts/test sets all three.

BACKEND = os.environ.get("IMAGEGATE_TEST_BACKEND", "default")
S3_KEYS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
_CREATED_DATABASES: list[str] = []


def pg_admin(sql: str, url: str | None = None) -> str:
    url = url or os.environ["IMAGEGATE_TEST_PG_URL"]
    out = subprocess.run(["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {out.stderr}")
    return out.stdout


def pg_database_url(name: str) -> str:
    base = os.environ["IMAGEGATE_TEST_PG_URL"]
    return base.rsplit("/", 1)[0] + "/" + name


def s3_client():
    import boto3  # only needed (and installed) for the pg-s3 pass
    return boto3.client("s3", endpoint_url=os.environ["IMAGEGATE_TEST_S3_ENDPOINT"], **S3_KEYS)


@dataclass(frozen=True)
class Backend:
    """Where a deployment keeps its catalog and blobs. Defaults: the embedded ones."""
    catalog_url: str | None = None
    bucket: str | None = None
    prefix: str = "blobs"
    # The S3 endpoint imagegate is given (None: IMAGEGATE_TEST_S3_ENDPOINT itself; the fault
    # tests put their proxy there), and more `[blobs]` lines.
    endpoint: str | None = None
    blobs_extra: tuple[str, ...] = ()

    @staticmethod
    def fresh() -> "Backend":
        if BACKEND == "default":
            return Backend()
        if BACKEND != "pg-s3":
            raise RuntimeError(f"IMAGEGATE_TEST_BACKEND={BACKEND!r}: expected default or pg-s3")
        tag = uuid.uuid4().hex[:12]
        db = f"igtest_{tag}"
        pg_admin(f'CREATE DATABASE "{db}"')
        _CREATED_DATABASES.append(db)
        bucket = f"igtest-{tag}"
        s3_client().create_bucket(Bucket=bucket)
        return Backend(pg_database_url(db), bucket)

    @property
    def s3(self) -> bool:
        return self.bucket is not None

    def toml_lines(self) -> list[str]:
        # Tables of their own, written after every other key.
        lines = []
        if self.catalog_url:
            lines += ["[catalog]", f'url = "{self.catalog_url}"']
        if self.bucket:
            lines += ["[blobs]", f'url = "s3://{self.bucket}/{self.prefix}"',
                      f'endpoint = "{self.endpoint or os.environ["IMAGEGATE_TEST_S3_ENDPOINT"]}"',
                      f'region = "{S3_KEYS["region_name"]}"',
                      f'access_key = "{S3_KEYS["aws_access_key_id"]}"',
                      f'secret_key = "{S3_KEYS["aws_secret_access_key"]}"', *self.blobs_extra]
        return lines

    def keys(self) -> list[str]:
        """Blob keys in the bucket (prefix stripped), published ones only."""
        out = []
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                           Prefix=self.prefix + "/"):
            out += [o["Key"][len(self.prefix) + 1:] for o in page.get("Contents", [])]
        return sorted(out)

    def uploads(self) -> list[str]:
        """Keys (prefix stripped) of multipart uploads begun and neither completed nor aborted."""
        resp = s3_client().list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix + "/")
        return sorted(u["Key"][len(self.prefix) + 1:] for u in resp.get("Uploads", []))

    def fetch(self, key: str, dest: Path) -> bool:
        """Copy blob `key` into `dest`; False (and no file) when it does not exist."""
        from botocore.exceptions import ClientError
        try:
            s3_client().download_file(self.bucket, f"{self.prefix}/{key}", str(dest))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                dest.unlink(missing_ok=True)
                return False
            raise


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases():
    """Drop the databases this session made (after every server has stopped)."""
    yield
    for db in _CREATED_DATABASES:
        try:
            pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        except Exception as e:  # noqa: BLE001 - cleanup must not mask a test result
            print(f"could not drop {db}: {e}", file=sys.stderr)


class Server:
    """One `imagegate serve` child process; stdout is drained into `self.output`."""

    def __init__(self, config: Path, log_path: Path, args: tuple[str, ...] = ()):
        self.args = args
        # Added to the server's environment at each start.
        self.env: dict[str, str] = {}
        self.config = config
        self.log_path = log_path
        self.output: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self) -> "Server":
        binary = bindir_binary()
        if not os.path.exists(binary):
            pytest.fail(f"imagegate binary not found at {binary}: build it (cargo build -p imagegate) "
                        "or set IMAGEGATE_BIN", pytrace=False)
        env = dict(os.environ)
        env.pop("IMAGEGATE_LISTEN", None)
        env.pop("IMAGEGATE_DATA_DIR", None)
        env.update(self.env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", str(self.config), *self.args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        fd = self.proc.stdout
        buf = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(fd.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                self.output.append(text)
                m = READY.match(text)
                if m:
                    host, _, port = m.group(1).rpartition(":")
                    self.port = int(port)
                    self.address = m.group(1)
                    threading.Thread(target=self._drain, daemon=True).start()
                    return self
        self.stop()
        log = self.log_path.read_text(errors="replace")[-4000:]
        pytest.fail(f"imagegate did not print its ready line within {STARTUP_TIMEOUT}s.\nstdout: {self.output}\n"
                    f"stderr tail:\n{log}", pytrace=False)

    def _drain(self):
        try:
            for line in self.proc.stdout:
                self.output.append(line.decode("utf-8", "replace").rstrip("\n"))
        except (ValueError, OSError):
            pass

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


class Deployment:
    """A running server plus its accounts, with client factories."""

    def __init__(self, server: Server, accounts: dict[str, Account], workdir: Path,
                 backend: "Backend | None" = None):
        self.server = server
        self.accounts = accounts
        self.workdir = workdir
        self.backend = backend or Backend()

    @property
    def port(self) -> int:
        return self.server.port

    def sdk(self, account: str = "a", *, region: str = "ap-guangzhou", sign: str = "TC3-HMAC-SHA256",
            method: str = "POST", language: str | None = None, retryer=None) -> cvm_client.CvmClient:
        acc = self.accounts[account]
        cred = credential.Credential(acc.secret_id, acc.secret_key)
        http = HttpProfile(protocol="http", endpoint=self.server.endpoint, reqMethod=method, reqTimeout=30)
        kw = {"signMethod": sign, "httpProfile": http}
        if language is not None:
            kw["language"] = language
        if retryer is not None:
            kw["retryer"] = retryer
        return cvm_client.CvmClient(cred, region, ClientProfile(**kw))

    def common(self, account: str = "a", *, region: str = "ap-guangzhou", sign: str = "TC3-HMAC-SHA256",
               method: str = "POST") -> CommonClient:
        acc = self.accounts[account]
        cred = credential.Credential(acc.secret_id, acc.secret_key)
        http = HttpProfile(protocol="http", endpoint=self.server.endpoint, reqMethod=method, reqTimeout=30)
        return CommonClient("cvm", "2017-03-12", cred, region, ClientProfile(signMethod=sign, httpProfile=http))

    def raw(self, account: str = "a", *, region: str = "ap-guangzhou") -> RawClient:
        acc = self.accounts[account]
        return RawClient(self.port, acc.secret_id, acc.secret_key, region)


def _start_deployment(tmp: Path, *, rate_limits: bool, accounts=None, with_cos_root: bool = True,
                      server_args: tuple[str, ...] = (), server_env: dict[str, str] | None = None,
                      **cfg) -> Deployment:
    """`with_cos_root=False` leaves `source.cos_root` unset (COS through `cos_endpoint`);
    `server_args` are added to `imagegate serve` (e.g. `--no-workers`), `server_env` to
    its environment."""
    accounts = accounts or make_accounts()
    data_dir = tmp / "data"
    cos_root = tmp / "cos"
    cos_root.mkdir(parents=True, exist_ok=True)
    config = tmp / "imagegate.toml"
    backend = write_config(config, data_dir, accounts.values(), rate_limits=rate_limits,
                           cos_root=cos_root if with_cos_root else None, **cfg)
    server = Server(config, tmp / "server.log", server_args)
    server.env.update(server_env or {})
    server.start()
    return Deployment(server, accounts, tmp, backend)


@pytest.fixture(scope="session")
def gate(tmp_path_factory) -> Deployment:
    """The main server: rate limits off (the suite itself sends bursts), three regions."""
    dep = _start_deployment(tmp_path_factory.mktemp("gate"), rate_limits=False)
    yield dep
    dep.server.stop()


@pytest.fixture(scope="session")
def limited_gate(tmp_path_factory) -> Deployment:
    """A second server with `[rate_limits] enabled = true`."""
    dep = _start_deployment(tmp_path_factory.mktemp("limited"), rate_limits=True)
    yield dep
    dep.server.stop()


@pytest.fixture
def fresh_server(tmp_path):
    """A factory for servers with their own data directory (restart and first-run tests)."""
    started: list[Server] = []

    def start(config: Path) -> Server:
        s = Server(config, tmp_path / f"server{len(started)}.log").start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


class StallServer:
    """An HTTP source on 127.0.0.1 that accepts and never answers.

    An import from it stays IMPORTING whether or not the import pipeline exists,
    which the tests of the IMPORTING state rely on.
    """

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self):
        self._stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture(scope="session")
def stall():
    s = StallServer()
    yield s
    s.close()


# --------------------------------------------------------------------------- helpers used by tests


def next_second():
    """Wait for the next wall-clock second.

    The SDK signs with the current second, and e.g. DescribeImages and DeleteImages of
    the same ids send byte-identical bodies: within one second they share a signature,
    and the server refuses a signature turned into a mutating request (README, Exposure
    and hostile clients). A test that does both in a row waits for the next second.
    """
    time.sleep(1.01 - time.time() % 1)


def unique(prefix: str = "img") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def cos_url(app_id: int, key: str = "disk.qcow2", region: str = "ap-guangzhou", bucket: str = "images") -> str:
    """A well-formed COS URL for a bucket the given appid owns; the object does not exist."""
    return f"https://{bucket}-{app_id}.cos.{region}.myqcloud.com/{key}"


def import_request(**kw) -> models.ImportImageRequest:
    req = models.ImportImageRequest()
    params = {
        "Architecture": "x86_64",
        "OsType": "CentOS",
        "OsVersion": "7",
        "ImageUrl": cos_url(1251233127),
        "ImageName": unique(),
    }
    params.update(kw)
    for k, v in params.items():
        if v is not None:
            setattr(req, k, v)
    return req


def do_import(client, **kw) -> str:
    resp = client.ImportImage(import_request(**kw))
    return resp.ImageId


def describe(client, **kw):
    req = models.DescribeImagesRequest()
    for k, v in kw.items():
        setattr(req, k, v)
    return client.DescribeImages(req)


def filt(name: str, *values: str) -> models.Filter:
    f = models.Filter()
    f.Name = name
    f.Values = list(values)
    return f


def image_by_id(client, image_id: str):
    resp = describe(client, ImageIds=[image_id])
    assert resp.TotalCount == 1, f"{image_id} not visible: TotalCount={resp.TotalCount}"
    return resp.ImageSet[0]


# --------------------------------------------------------------------------- images in a given state

# An import from a COS object that does not exist (cos_root is an empty folder) ends
# IMPORTFAILED.
SETTLE_SECONDS = 60


def settled_image(gate, account: str, **kw) -> str:
    """An image of `account` that has left IMPORTING (so it may be deleted or modified)."""
    sdk = gate.sdk(account)
    kw.setdefault("ImageUrl", cos_url(gate.accounts[account].app_id, key=f"missing-{unique()}.qcow2"))
    image_id = do_import(sdk, **kw)
    deadline = time.time() + SETTLE_SECONDS
    while time.time() < deadline:
        state = image_by_id(sdk, image_id).ImageState
        if state != "IMPORTING":
            assert state in ("NORMAL", "IMPORTFAILED"), state
            return image_id
        time.sleep(0.5)
    pytest.fail(f"{image_id} (object missing from cos_root) still IMPORTING after {SETTLE_SECONDS}s")


def modifiable_image(gate, account: str = "a", **kw) -> str:
    """An image ModifyImageAttribute may change.

    The server refuses to modify an image that is still IMPORTING
    (InvalidImageId.IncorrectState, one of the action's documented errors), so this
    is a settled image, which needs the import pipeline.
    """
    return settled_image(gate, account, **kw)
