"""The import pipeline end to end: ImportImage through the official SDK, the
image fetched from the COS stand-in folder or a loopback HTTP origin, and the
stored qcow2 judged by `qemu-img compare` and `qemu-img check`.

Hostile images must fail with a precise code, store nothing, and never let a
byte of the host file they name reach the store.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import diskimages as di
from conftest import _start_deployment, make_accounts, next_second, unique
from origin import Origin
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import models

APP_ID = 1251233127  # account "a"
BUCKET = f"images-{APP_ID}"
SECRET = b"imagegate-host-secret-" + os.urandom(16).hex().encode() + b"\n"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """A server whose workers import with short leases and a short stall timeout."""
    tmp = tmp_path_factory.mktemp("pipe")
    dep = _start_deployment(tmp, rate_limits=False,
                            workers="concurrency = 4\nlease_seconds = 3",
                            source_extra="stall_timeout_secs = 2\n")
    yield dep
    dep.server.stop()


@pytest.fixture(scope="module")
def origin():
    o = Origin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The source disk (raw) once per module, and a cache of its conversions."""
    work = tmp_path_factory.mktemp("images")
    src = di.linux_disk(work / "source.raw")
    cache: dict[str, Path] = {}

    class Images:
        source = src
        workdir = work

        def get(self, name: str) -> Path:
            if name not in cache:
                cache[name] = di.convert(src, work / f"disk.{name}", name)
            return cache[name]

    return Images()


@pytest.fixture(scope="module")
def host_secret(tmp_path_factory) -> Path:
    """A host file that hostile images name; its bytes must never be stored."""
    p = tmp_path_factory.mktemp("host") / "secret.raw"
    p.write_bytes(SECRET * 4096)
    return p


def put_cos(dep, path: Path, key: str) -> str:
    dest = dep.workdir / "cos" / BUCKET / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, dest)
    return f"https://{BUCKET}.cos.ap-guangzhou.myqcloud.com/{key}"


def start_import(dep, url: str, *, name: str | None = None, force: bool = False, data_disks=(), **kw) -> str:
    req = models.ImportImageRequest()
    params = {"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7", "ImageUrl": url,
              "ImageName": name or unique("pipe"), "Force": force}
    if data_disks:
        params["ImportImageDataDiskList"] = [{"ImageUrl": u} for u in data_disks]
    params.update(kw)
    req.from_json_string(json.dumps(params))
    return dep.sdk("a").ImportImage(req).ImageId


def describe(dep, image_id: str) -> dict:
    req = models.DescribeImagesRequest()
    req.from_json_string(json.dumps({"ImageIds": [image_id]}))
    resp = json.loads(dep.sdk("a").DescribeImages(req).to_json_string())
    assert resp["TotalCount"] == 1, resp
    return resp["ImageSet"][0]


def task(dep, image_id: str) -> dict:
    resp = dep.common("a").call_json("DescribeImportImageTasks", {"ImageIds": [image_id]})
    tasks = resp["Response"]["ImportImageTaskSet"]
    assert len(tasks) == 1, resp
    return tasks[0]


def wait_done(dep, image_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        img = describe(dep, image_id)
        if img["ImageState"] != "IMPORTING":
            return img
        time.sleep(0.2)
    pytest.fail(f"{image_id} still IMPORTING after {timeout}s: {task(dep, image_id)}")


def blob(dep, image_id: str, disk: int = 0) -> Path:
    """The stored blob as a local file (fetched from the bucket on the S3 back-end)."""
    name = f"{image_id}.qcow2" if disk == 0 else f"{image_id}-{disk}.qcow2"
    if dep.backend.s3:
        return s3_copy(dep, name)
    return dep.workdir / "data" / "images" / name


def s3_copy(dep, key: str) -> Path:
    dest = dep.workdir / "s3-copies" / key
    dest.parent.mkdir(exist_ok=True)
    dep.backend.fetch(key, dest)
    return dest


def stored_files(dep) -> list[Path]:
    if dep.backend.s3:
        return [s3_copy(dep, k) for k in dep.backend.keys()]
    root = dep.workdir / "data" / "images"
    return [p for p in root.rglob("*") if p.is_file()]


def blob_files(dep) -> list[str]:
    """Published blobs and unfinished uploads, by name."""
    if dep.backend.s3:
        return sorted(dep.backend.keys() + dep.backend.uploads())
    return sorted(p.name for p in stored_files(dep))


def assert_stored_equals(dep, image_id: str, source_raw: Path, disk: int = 0):
    path = blob(dep, image_id, disk)
    assert path.exists(), f"no blob at {path}"
    chk = di.check(path)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    cmp = di.compare(source_raw, path)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def assert_failed(dep, image_id: str, codes: set[str]) -> dict:
    img = wait_done(dep, image_id)
    t = task(dep, image_id)
    assert img["ImageState"] == "IMPORTFAILED", (img, t)
    assert t["FailureCode"] in codes, t
    assert t["FailureMessage"], t
    assert not blob(dep, image_id).exists()
    leftovers = [n for n in blob_files(dep) if n.startswith(image_id)]
    assert leftovers == [], leftovers
    return t


# --------------------------------------------------------------------------- every format


@pytest.mark.parametrize("fmt", [name for name, _, _ in di.FORMATS])
def test_every_format_imports_identically(pipe, images, fmt):
    path = images.get(fmt)
    url = put_cos(pipe, path, f"formats/{fmt}.img")
    image_id = start_import(pipe, url)
    img = wait_done(pipe, image_id)
    t = task(pipe, image_id)
    assert img["ImageState"] == "NORMAL", t
    assert_stored_equals(pipe, image_id, images.source)
    virtual = int(subprocess.run(["qemu-img", "info", "-f", di.QEMU_FMT[fmt], "--output=json", str(path)],
                                 capture_output=True, text=True, check=True).stdout and
                  json.loads(subprocess.run(["qemu-img", "info", "-f", di.QEMU_FMT[fmt], "--output=json",
                                             str(path)], capture_output=True, text=True).stdout)["virtual-size"])
    assert img["ImageSize"] == math.ceil(virtual / (1 << 30))
    assert t["Sha256"] == di.sha256(path)
    assert t["BytesFetched"] == path.stat().st_size
    assert t["TaskState"] == "SUCCEEDED"
    assert t["SourceFormat"].split(" ")[0] == {"vpc": "vhd"}.get(di.QEMU_FMT[fmt], di.QEMU_FMT[fmt])
    assert t["VirtualSize"] == virtual
    assert img["SnapshotSet"][0]["DiskUsage"] == "SYSTEM_DISK"


@pytest.fixture(scope="module")
def memory_pipe(tmp_path_factory):
    """A server that keeps downloads in memory (`source.spool = "memory"`): a 48 MiB ring,
    the converter right behind the download, re-reads for what leaves it."""
    tmp = tmp_path_factory.mktemp("memory-pipe")
    dep = _start_deployment(tmp, rate_limits=False,
                            workers="concurrency = 2\nlease_seconds = 5",
                            source_extra='stall_timeout_secs = 10\nspool = "memory"\n')
    yield dep
    dep.server.stop()


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 256 MiB disk with 120 MiB of scattered data: several times the spool's ring."""
    work = tmp_path_factory.mktemp("big")
    src = di.linux_disk(work / "big-source.raw", size_mib=256, data_mib=120, seed=5)
    return src, work


@pytest.mark.parametrize("fmt", ["raw", "qcow2-4k", "vmdk-stream", "vhdx-dynamic"])
def test_memory_spool_imports_disks_larger_than_its_ring(memory_pipe, big, origin, fmt):
    """Bytes leave memory while the converter and the guest inspector still read: the
    stored image is still exactly the source, and the download was hashed once."""
    src, work = big
    path = di.convert(src, work / f"big.{fmt}", fmt)
    url = origin.serve(f"big-{fmt}.img", path)
    image_id = start_import(memory_pipe, url)
    img = wait_done(memory_pipe, image_id)
    t = task(memory_pipe, image_id)
    assert img["ImageState"] == "NORMAL", t
    assert_stored_equals(memory_pipe, image_id, src)
    assert t["Sha256"] == di.sha256(path)
    assert t["BytesFetched"] == path.stat().st_size
    log = re.sub(r"\x1b\[[0-9;]*m", "", memory_pipe.server.log_path.read_text(errors="replace"))
    line = next(ln for ln in log.splitlines() if "source bytes read" in ln and image_id in ln)
    stats = dict(re.findall(r"(\w+)=(\S+)", line))
    assert stats["spool"] == '"memory"', line
    # Nothing fetched more than twice: re-reads stay far below the source.
    assert int(stats["reread"]) <= path.stat().st_size // 4, line


def test_import_over_http_from_allowed_host(pipe, images, origin):
    path = images.get("qcow2-v3")
    url = origin.serve("http-ok.qcow2", path)
    image_id = start_import(pipe, url)
    assert wait_done(pipe, image_id)["ImageState"] == "NORMAL", task(pipe, image_id)
    assert_stored_equals(pipe, image_id, images.source)


def test_data_disks_are_imported_beside_the_system_disk(pipe, images):
    sys_url = put_cos(pipe, images.get("qcow2-v3"), "multi/system.qcow2")
    d1 = put_cos(pipe, images.get("vmdk-stream"), "multi/data1.vmdk")
    d2 = put_cos(pipe, images.get("vhd-dynamic"), "multi/data2.vhd")
    image_id = start_import(pipe, sys_url, data_disks=[d1, d2])
    img = wait_done(pipe, image_id)
    assert img["ImageState"] == "NORMAL", task(pipe, image_id)
    usage = [(s["DiskUsage"], s["DiskSize"]) for s in img["SnapshotSet"]]
    assert usage == [("SYSTEM_DISK", 1), ("DATA_DISK", 1), ("DATA_DISK", 1)], img["SnapshotSet"]
    for disk in (0, 1, 2):
        assert_stored_equals(pipe, image_id, images.source, disk)


def test_delete_removes_the_stored_image(pipe, images):
    url = put_cos(pipe, images.get("raw"), "delete/raw.img")
    image_id = start_import(pipe, url)
    assert wait_done(pipe, image_id)["ImageState"] == "NORMAL"
    assert blob(pipe, image_id).exists()
    req = models.DeleteImagesRequest()
    req.from_json_string(json.dumps({"ImageIds": [image_id]}))
    next_second()  # the describes above sent the same body
    pipe.sdk("a").DeleteImages(req)
    assert not blob(pipe, image_id).exists()


# --------------------------------------------------------------------------- hostile images


def test_qcow2_backing_file_is_refused(pipe, images, host_secret):
    path = di.qcow2_with_backing(images.workdir / "backing.qcow2", host_secret)
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/backing.qcow2"), force=True)
    assert_failed(pipe, image_id, {"ExternalReferenceRefused"})
    assert_secret_never_stored(pipe)


def test_qcow2_external_data_file_is_refused(pipe, images, host_secret):
    path = di.qcow2_with_data_file(images.workdir / "datafile.qcow2", host_secret)
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/datafile.qcow2"), force=True)
    assert_failed(pipe, image_id, {"ExternalReferenceRefused"})
    assert_secret_never_stored(pipe)


def test_vmdk_text_descriptor_naming_a_host_file_is_refused(pipe, images, host_secret):
    path = di.vmdk_flat_descriptor(images.workdir / "flat.vmdk", host_secret)
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/flat.vmdk"), force=True)
    assert_failed(pipe, image_id, {"ExternalReferenceRefused", "UnsupportedImageFormat"})
    assert_secret_never_stored(pipe)


def test_vmdk_sparse_with_flat_extent_is_refused(pipe, images, host_secret):
    path = di.vmdk_sparse_with_flat_extent(images.workdir / "kdmv-flat.vmdk", host_secret, images.workdir)
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/kdmv-flat.vmdk"), force=True)
    assert_failed(pipe, image_id, {"ExternalReferenceRefused", "UnsupportedImageFormat"})
    assert_secret_never_stored(pipe)


def test_vhd_differencing_disk_is_refused(pipe, images):
    path = di.vhd_differencing(images.workdir / "diff.vhd", images.workdir)
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/diff.vhd"), force=True)
    assert_failed(pipe, image_id, {"ExternalReferenceRefused"})


def test_tiny_file_claiming_a_petabyte_is_refused(pipe, images):
    path = di.qcow2_claiming(images.workdir / "huge.qcow2", "1P")
    assert path.stat().st_size < MiB_(32)  # qemu-img writes a 16 MiB L1 table for 1 PiB
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/huge.qcow2"), force=True)
    t = assert_failed(pipe, image_id, {"InvalidFormatSize"})
    assert "500" in t["FailureMessage"] or "GiB" in t["FailureMessage"], t


def test_compressed_cluster_bomb_is_refused(pipe, images):
    path = di.qcow2_compression_bomb(images.workdir / "bomb.qcow2")
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/bomb.qcow2"), force=True)
    assert_failed(pipe, image_id, {"CorruptImage"})


def test_truncated_image_is_refused(pipe, images):
    src = images.get("qcow2-v3")
    path = di.truncated(src, images.workdir / "truncated.qcow2", src.stat().st_size // 3)
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/truncated.qcow2"), force=True)
    assert_failed(pipe, image_id, {"ImageTruncated", "CorruptImage"})


def test_bit_flipped_header_is_refused(pipe, images):
    src = images.get("qcow2-v3")
    # The high byte of the L1 table offset: the table now lies far outside the file.
    path = di.bit_flipped(src, images.workdir / "flipped.qcow2", 40, 0x40)
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/flipped.qcow2"), force=True)
    assert_failed(pipe, image_id, {"CorruptImage", "ImageTruncated"})


def test_qed_is_refused(pipe, images):
    path = images.workdir / "disk.qed"
    di.run("qemu-img", "create", "-f", "qed", path, "16M")
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/disk.qed"), force=True)
    assert_failed(pipe, image_id, {"UnsupportedImageFormat"})


def test_iso_needs_force(pipe, images):
    path = di.iso_image(images.workdir / "installer.iso")
    image_id = start_import(pipe, put_cos(pipe, path, "hostile/installer.iso"))
    t = assert_failed(pipe, image_id, {"InvalidParameterValue.ISOMustImportByForce"})
    assert "Force" in t["FailureMessage"]


def assert_secret_never_stored(dep):
    for p in stored_files(dep):
        assert SECRET not in p.read_bytes(), f"host file bytes found in {p}"


def MiB_(n: int) -> int:
    return n << 20


# --------------------------------------------------------------------------- faulty sources


def test_dropped_connection_is_resumed(pipe, images, origin):
    path = images.get("qcow2-zlib")
    url = origin.serve("drop.qcow2", path, "drop")
    image_id = start_import(pipe, url)
    img = wait_done(pipe, image_id)
    t = task(pipe, image_id)
    assert img["ImageState"] == "NORMAL", t
    assert t["Sha256"] == di.sha256(path)
    tail = f"bytes={path.stat().st_size - 65536}-"  # the footer prefetch, not a resume
    ranged = [r for m, n, r in origin.requests if n == "drop.qcow2" and r and r not in ("bytes=0-", tail)]
    assert ranged, origin.requests
    assert_stored_equals(pipe, image_id, images.source)


def test_source_lying_about_its_length_fails(pipe, images, origin):
    url = origin.serve("lie.qcow2", images.get("qcow2-v3"), "lie")
    image_id = start_import(pipe, url, force=True)
    assert_failed(pipe, image_id, {"SourceLengthMismatch", "SourceUnreachable", "ImageTruncated"})


def test_stalled_source_times_out(pipe, images, origin):
    url = origin.serve("stall.raw", images.get("raw"), "stall")
    image_id = start_import(pipe, url, force=True)
    assert_failed(pipe, image_id, {"SourceStalled"})


def test_redirect_to_a_private_address_is_refused(pipe, images, origin):
    target = "http://169.254.169.254/latest/meta-data/"
    url = origin.serve("redirect-meta", None, f"redirect:{target}")
    image_id = start_import(pipe, url, force=True)
    assert_failed(pipe, image_id, {"SourceAddressRefused", "InvalidUrl"})


def test_missing_object_fails_with_invalid_url(pipe):
    url = f"https://{BUCKET}.cos.ap-guangzhou.myqcloud.com/does/not/exist.qcow2"
    image_id = start_import(pipe, url, force=True)
    t = assert_failed(pipe, image_id, {"InvalidUrl"})
    assert "exist" in t["FailureMessage"].lower() or "not found" in t["FailureMessage"].lower(), t


# --------------------------------------------------------------------------- jobs


def test_cancel_stops_an_import_and_leaves_nothing(pipe, stall):
    image_id = start_import(pipe, stall.url("forever.qcow2"), force=True)
    time.sleep(0.5)
    resp = pipe.common("a").call_json("CancelImportImageTask", {"ImageId": image_id})
    assert "RequestId" in resp["Response"]
    t = assert_failed(pipe, image_id, {"ImportCancelled"})
    assert t["TaskState"] == "CANCELLED"
    next_second()  # within the same second it would be a re-send of the first cancel
    with pytest.raises(TencentCloudSDKException) as e:
        pipe.common("a").call_json("CancelImportImageTask", {"ImageId": image_id})
    assert e.value.code == "InvalidImageId.IncorrectState"


def test_tasks_of_another_account_are_invisible(pipe, images):
    url = put_cos(pipe, images.get("raw"), "tasks/raw.img")
    image_id = start_import(pipe, url)
    resp = pipe.common("b").call_json("DescribeImportImageTasks", {"ImageIds": [image_id]})
    assert resp["Response"]["ImportImageTaskSet"] == []
    with pytest.raises(TencentCloudSDKException) as e:
        pipe.common("b").call_json("CancelImportImageTask", {"ImageId": image_id})
    assert e.value.code == "InvalidImageId.NotFound"
    wait_done(pipe, image_id)


def test_killed_server_resumes_its_import(tmp_path, images, origin):
    """SIGKILL mid-import: after a restart the job is taken up again and ends NORMAL."""
    accounts = make_accounts()
    dep = _start_deployment(tmp_path, rate_limits=False, accounts=accounts,
                            workers="concurrency = 1\nlease_seconds = 2")
    try:
        path = images.get("qcow2-v3")
        url = origin.serve("slow-crash.qcow2", path, "slow")
        image_id = start_import(dep, url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and task(dep, image_id)["BytesFetched"] == 0:
            time.sleep(0.1)
        dep.server.proc.send_signal(signal.SIGKILL)
        dep.server.proc.wait(timeout=10)
        origin.routes["slow-crash.qcow2"] = (path, "ok")
        dep.server.start()
        img = wait_done(dep, image_id)
        t = task(dep, image_id)
        assert img["ImageState"] == "NORMAL", t
        assert t["Attempts"] >= 2, t
        assert t["Sha256"] == di.sha256(path)
        assert_stored_equals(dep, image_id, images.source)
        assert blob_files(dep) == [f"{image_id}.qcow2"]
    finally:
        dep.server.stop()
