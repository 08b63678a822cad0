"""ExportImages end to end through the official Python SDK against the real server,
to the `cos_root` folder: every format, judged by `qemu-img compare` against the
source disk and by a round trip (the exported object imported again gives an
identical image); object names; OnlyExportRootDisk; the documented refusals;
DescribeExportImageTasks and CancelExportImageTask; a cancelled or killed export
leaves no object. (The S3 target: test_export_s3.py, in the PostgreSQL + S3 pass.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import diskimages as di
from conftest import Server, _start_deployment, next_second, unique
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import models

APP_ID = 1251233127  # account "a"
SOURCES = f"images-{APP_ID}"
EXPORTS = f"exports-{APP_ID}"
QEMU = {"RAW": "raw", "QCOW2": "qcow2", "VHD": "vpc", "VMDK": "vmdk"}
EXT = {"RAW": "raw", "QCOW2": "qcow2", "VHD": "vhd", "VMDK": "vmdk"}
WORKERS = "concurrency = 4\nexport_concurrency = 2\nlease_seconds = 3"


# --------------------------------------------------------------------------- helpers


def put_cos(dep, path: Path, key: str, bucket: str = SOURCES) -> str:
    dest = dep.workdir / "cos" / bucket / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    try:
        os.link(path, dest)  # same file system: no copy of a large disk
    except OSError:
        shutil.copy(path, dest)
    return f"https://{bucket}.cos.ap-guangzhou.myqcloud.com/{key}"


def sdk_call(dep, action: str, params: dict, account: str = "a") -> dict:
    client = dep.sdk(account)
    req = getattr(models, f"{action}Request")()
    req.from_json_string(json.dumps(params))
    return json.loads(getattr(client, action)(req).to_json_string())


def sdk_error(dep, action: str, params: dict, account: str = "a") -> str:
    with pytest.raises(TencentCloudSDKException) as e:
        sdk_call(dep, action, params, account)
    assert e.value.get_message(), e.value
    return e.value.get_code()


def import_image(dep, url: str, data_urls=(), **kw) -> str:
    params = {"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7", "ImageUrl": url,
              "ImageName": unique("exp")}
    if data_urls:
        params["ImportImageDataDiskList"] = [{"ImageUrl": u} for u in data_urls]
    params.update(kw)
    return sdk_call(dep, "ImportImage", params)["ImageId"]


def image(dep, image_id: str, account: str = "a") -> dict:
    resp = sdk_call(dep, "DescribeImages", {"ImageIds": [image_id]}, account)
    assert resp["TotalCount"] == 1, resp
    return resp["ImageSet"][0]


def wait_image(dep, image_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        img = image(dep, image_id)
        if img["ImageState"] != "IMPORTING":
            return img
        time.sleep(0.2)
    pytest.fail(f"{image_id} still IMPORTING after {timeout}s")


def export(dep, image_id: str, fmt: str = "RAW", **kw) -> dict:
    params = {"ImageIds": [image_id], "BucketName": EXPORTS, "ExportFormat": fmt}
    params.update(kw)
    return sdk_call(dep, "ExportImages", params)


def export_task(dep, task_id: int, account: str = "a") -> dict:
    resp = dep.common(account).call_json("DescribeExportImageTasks", {"TaskIds": [task_id]})["Response"]
    assert resp["TotalCount"] == 1, resp
    return resp["ExportImageTaskSet"][0]


def wait_task(dep, task_id: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = export_task(dep, task_id)
        if t["TaskState"] not in ("QUEUED", "RUNNING"):
            return t
        time.sleep(0.2)
    pytest.fail(f"export task {task_id} not finished after {timeout}s: {export_task(dep, task_id)}")


def bucket_dir(dep, bucket: str = EXPORTS) -> Path:
    return dep.workdir / "cos" / bucket


def objects(dep, bucket: str = EXPORTS) -> list[str]:
    d = bucket_dir(dep, bucket)
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def partials(dep) -> list[str]:
    d = dep.workdir / "cos" / ".imagegate-exports"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def compare(fmt_a: str, a: Path, fmt_b: str, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
                          capture_output=True, text=True)


def stored_blob(dep, image_id: str, disk: int = 0) -> Path:
    name = f"{image_id}.qcow2" if disk == 0 else f"{image_id}-{disk}.qcow2"
    if dep.backend.s3:
        dest = dep.workdir / "s3-copies" / name
        dest.parent.mkdir(exist_ok=True)
        assert dep.backend.fetch(name, dest), name
        return dest
    return dep.workdir / "data" / "images" / name


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    d = _start_deployment(tmp, rate_limits=False, workers=WORKERS)
    bucket_dir(d).mkdir(parents=True)
    yield d
    d.server.stop()


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    """The source system disk and a data disk (raw)."""
    work = tmp_path_factory.mktemp("export-disks")
    system = di.linux_disk(work / "system.raw")
    data = work / "data.raw"
    with open(data, "wb") as f:
        f.truncate(24 * di.MiB + 3 * 512)
        for off in (0, 5 * di.MiB, 17 * di.MiB):
            f.seek(off)
            f.write(os.urandom(di.MiB))
    return system, data


@pytest.fixture(scope="module")
def normal(dep, disks):
    """A NORMAL image of account a with one data disk, and its snapshot ids."""
    system, data = disks
    image_id = import_image(dep, put_cos(dep, system, "src/system.raw"),
                            [put_cos(dep, data, "src/data.raw")])
    img = wait_image(dep, image_id)
    assert img["ImageState"] == "NORMAL", img
    snaps = {s["DiskUsage"]: s["SnapshotId"] for s in img["SnapshotSet"]}
    return image_id, snaps["SYSTEM_DISK"], snaps["DATA_DISK"]


# --------------------------------------------------------------------------- every format


@pytest.mark.parametrize("fmt", ["RAW", "QCOW2", "VHD", "VMDK"])
def test_every_format_round_trips(dep, disks, normal, fmt):
    system, data = disks
    image_id, snap_sys, snap_data = normal
    resp = export(dep, image_id, fmt)
    assert isinstance(resp["TaskId"], int) and resp["TaskId"] > 0, resp
    ext = EXT[fmt]
    want = [f"/{image_id}_system_{snap_sys}.{ext}", f"/{image_id}_data_{snap_data}.{ext}"]
    assert resp["CosPaths"] == want
    t = wait_task(dep, resp["TaskId"])
    assert t["TaskState"] == "SUCCEEDED", t
    assert t["Percent"] == 100 and t["BytesWritten"] > 0 and t["CosPaths"] == want, t
    # The image stays NORMAL throughout.
    assert image(dep, image_id)["ImageState"] == "NORMAL"
    out_sys = bucket_dir(dep) / want[0][1:]
    out_data = bucket_dir(dep) / want[1][1:]
    for src, out in ((system, out_sys), (data, out_data)):
        cmp = compare("raw", src, QEMU[fmt], out)
        assert cmp.returncode == 0, (fmt, cmp.stdout + cmp.stderr)
        if fmt in ("QCOW2", "VMDK"):
            chk = subprocess.run(["qemu-img", "check", "-f", QEMU[fmt], str(out)], capture_output=True, text=True)
            assert chk.returncode == 0, chk.stdout + chk.stderr
    # Round trip: the exported objects import again to an identical image.
    again = import_image(dep, f"https://{EXPORTS}.cos.ap-guangzhou.myqcloud.com/{want[0][1:]}",
                         [f"https://{EXPORTS}.cos.ap-guangzhou.myqcloud.com/{want[1][1:]}"])
    img = wait_image(dep, again)
    assert img["ImageState"] == "NORMAL", img
    for disk in (0, 1):
        cmp = compare("qcow2", stored_blob(dep, image_id, disk), "qcow2", stored_blob(dep, again, disk))
        assert cmp.returncode == 0, (fmt, disk, cmp.stdout + cmp.stderr)
    next_second()  # DescribeImages just sent the same body
    sdk_call(dep, "DeleteImages", {"ImageIds": [again]})


def test_prefix_names_and_only_root_disk(dep, normal):
    image_id, snap_sys, _ = normal
    resp = export(dep, image_id, "QCOW2", FileNamePrefixList=["nightly.1"], OnlyExportRootDisk=True)
    want = f"/nightly.1_{image_id}_system_{snap_sys}.qcow2"
    assert resp["CosPaths"] == [want]
    t = wait_task(dep, resp["TaskId"])
    assert t["TaskState"] == "SUCCEEDED", t
    assert [o["CosPath"] for o in t["ObjectSet"]] == [want]
    assert t["ObjectSet"][0]["DiskUsage"] == "SYSTEM_DISK"
    assert (bucket_dir(dep) / want[1:]).is_file()
    assert not [n for n in objects(dep) if n.startswith(f"nightly.1_{image_id}_data_")]


def test_describe_by_image_and_dry_run(dep, normal):
    image_id, _, _ = normal
    before = objects(dep)
    dry = export(dep, image_id, "VHD", DryRun=True, FileNamePrefixList=["dry"])
    assert dry.get("TaskId") is None and not dry.get("CosPaths"), dry
    assert objects(dep) == before
    resp = dep.common("a").call_json("DescribeExportImageTasks", {"ImageIds": [image_id], "Limit": 100})["Response"]
    assert resp["TotalCount"] >= 1
    assert all(image_id in t["ImageIds"] for t in resp["ExportImageTaskSet"])
    assert not [t for t in resp["ExportImageTaskSet"] if any("dry_" in p for p in t["CosPaths"])]
    # Another account sees none of them.
    other = dep.common("b").call_json("DescribeExportImageTasks", {"ImageIds": [image_id]})["Response"]
    assert other["TotalCount"] == 0


# --------------------------------------------------------------------------- refusals


def test_refusals(dep, disks, normal):
    image_id, _, _ = normal
    base = {"ImageIds": [image_id], "BucketName": EXPORTS}

    def code(**kw):
        params = dict(base)
        params.update(kw)
        return sdk_error(dep, "ExportImages", {k: v for k, v in params.items() if v is not None})

    def common_code(**kw):
        # The SDK's model has no SnapshotIds ("not open"): sent as the API has it.
        params = {k: v for k, v in {**base, **kw}.items() if v is not None}
        with pytest.raises(TencentCloudSDKException) as e:
            dep.common("a").call_json("ExportImages", params)
        return e.value.get_code()

    assert common_code(SnapshotIds=["snap-12345678"]) == "InvalidParameter.ImageIdsSnapshotIdsMustOne"
    assert code(ImageIds=None) == "InvalidParameter.ImageIdsSnapshotIdsMustOne"
    assert common_code(ImageIds=None, SnapshotIds=["snap-12345678"]) == "UnsupportedOperation"
    assert code(ImageIds=["img-bad"]) == "InvalidImageId.Malformed"
    assert code(ImageIds=["img-00000000"]) == "InvalidImageId.NotFound"
    assert code(BucketName="exports-1300000002") == "InvalidParameterValue.InvalidBucketPermissionForExport"
    assert code(BucketName="exports") == "InvalidParameterValue.InvalidAppIdFormat"
    assert code(BucketName=f"missing-{APP_ID}") == "InvalidParameterValue.BucketNotFound"
    assert code(BucketName="../etc-1251233127") == "InvalidParameterValue.BucketNotFound"
    assert code(ExportFormat="VHDX") == "InvalidParameterValue"
    assert code(FileNamePrefixList=["a", "b"]) == "InvalidParameterValue.InvalidFileNamePrefixList"
    assert code(FileNamePrefixList=["../x"]) == "InvalidParameterValue.InvalidFileNamePrefixList"
    # Another account's image is not found for the caller.
    assert sdk_error(dep, "ExportImages", {**base, "BucketName": "exports-1300000002"},
                     account="b") == "InvalidImageId.NotFound"
    # A recipient of a shared image may not export it.
    share = {"ImageId": image_id, "AccountIds": [dep.accounts["b"].uin]}
    sdk_call(dep, "ModifyImageSharePermission", {**share, "Permission": "SHARE"})
    next_second()  # b sent this very body above: a retry in the same second gets that answer
    try:
        assert sdk_error(dep, "ExportImages", {**base, "BucketName": "exports-1300000002"},
                         account="b") == "UnsupportedOperation.SharedImageExportUnsupported"
    finally:
        sdk_call(dep, "ModifyImageSharePermission", {**share, "Permission": "CANCEL"})
    # An image that is not NORMAL (its object is missing: IMPORTFAILED).
    failed = import_image(dep, f"https://{SOURCES}.cos.ap-guangzhou.myqcloud.com/missing-{unique()}.raw")
    assert wait_image(dep, failed)["ImageState"] == "IMPORTFAILED"
    assert code(ImageIds=[failed]) == "InvalidParameterValue.InvalidImageState"
    # A Windows image, whatever its state.
    win = import_image(dep, f"https://{SOURCES}.cos.ap-guangzhou.myqcloud.com/missing-{unique()}.vhd",
                       OsType="Windows Server 2016", OsVersion="9")
    assert code(ImageIds=[win]) == "UnsupportedOperation.WindowsImageExportUnsupported"
    # More than 5 data disks: only with OnlyExportRootDisk.
    tiny = dep.workdir / "tiny.raw"
    tiny.write_bytes(os.urandom(64 * 1024))
    url = put_cos(dep, tiny, "src/tiny.raw")
    six = import_image(dep, put_cos(dep, disks[0], "src/six-system.raw"), [url] * 6)
    assert wait_image(dep, six)["ImageState"] == "NORMAL"
    assert code(ImageIds=[six]) == "InvalidParameterValue"
    assert export(dep, six, OnlyExportRootDisk=True, DryRun=True).get("TaskId") is None
    # Unknown export tasks.
    r = dep.common("a")
    with pytest.raises(TencentCloudSDKException) as e:
        r.call_json("CancelExportImageTask", {"TaskId": 12345})
    assert e.value.get_code() == "ResourceNotFound"


# --------------------------------------------------------------------------- queued tasks (no workers)


@pytest.fixture(scope="module")
def idle(tmp_path_factory, disks):
    """A server whose image is NORMAL, restarted without workers: exports stay QUEUED."""
    tmp = tmp_path_factory.mktemp("export-idle")
    d = _start_deployment(tmp, rate_limits=False, workers=WORKERS, extra="[limits]\nmax_export_tasks = 2")
    bucket_dir(d).mkdir(parents=True)
    image_id = import_image(d, put_cos(d, disks[0], "src/system.raw"))
    assert wait_image(d, image_id)["ImageState"] == "NORMAL"
    d.server.stop()
    d.server = Server(d.server.config, tmp / "server-idle.log", ("--no-workers",)).start()
    yield d, image_id
    d.server.stop()


def test_queued_export_limits_cancel_and_delete(idle):
    dep, image_id = idle
    first = export(dep, image_id)["TaskId"]
    second = export(dep, image_id, "VMDK")["TaskId"]
    assert export_task(dep, first)["TaskState"] == "QUEUED"
    assert sdk_error(dep, "ExportImages", {"ImageIds": [image_id], "BucketName": EXPORTS}) == \
        "LimitExceeded.ExportImageTaskLimitExceeded"
    # An image being exported cannot be deleted.
    next_second()  # DescribeImages may have sent the same body
    assert sdk_error(dep, "DeleteImages", {"ImageIds": [image_id]}) == "MutexOperation.TaskRunning"
    for task_id in (first, second):
        dep.common("a").call_json("CancelExportImageTask", {"TaskId": task_id})
        t = export_task(dep, task_id)
        assert t["TaskState"] == "CANCELLED" and t["FailureCode"] == "ExportCancelled", t
        next_second()  # the same body again within a second would be answered as a retry
        with pytest.raises(TencentCloudSDKException) as e:
            dep.common("a").call_json("CancelExportImageTask", {"TaskId": task_id})
        assert e.value.get_code() == "FailedOperation"
    # Another account cannot cancel (or see) a task.
    with pytest.raises(TencentCloudSDKException) as e:
        dep.common("b").call_json("CancelExportImageTask", {"TaskId": first})
    assert e.value.get_code() == "ResourceNotFound"
    assert objects(dep) == [] and partials(dep) == []
    # Room again under the cap.
    next_second()
    third = export(dep, image_id)["TaskId"]
    assert third != first
    dep.common("a").call_json("CancelExportImageTask", {"TaskId": third})


# --------------------------------------------------------------------------- running tasks


@pytest.fixture(scope="module")
def big_source(tmp_path_factory) -> Path:
    """A disk with 256 MiB of data, half of it random: a VMDK export of it takes seconds."""
    work = tmp_path_factory.mktemp("export-big")
    return di.linux_disk(work / "big.raw", size_mib=512, data_mib=256, seed=7)


@pytest.fixture(scope="module")
def big(dep, big_source):
    src = big_source
    image_id = import_image(dep, put_cos(dep, src, "src/big.raw"))
    assert wait_image(dep, image_id, timeout=400)["ImageState"] == "NORMAL"
    return image_id, src


def wait_running(dep, task_id: int, *, written: bool = True, finished_ok: bool = False) -> dict | None:
    """The task once RUNNING (and, with `written`, once a heartbeat reported bytes).
    With `finished_ok`, a task that SUCCEEDED before it was seen running gives None."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        t = export_task(dep, task_id)
        if t["TaskState"] == "RUNNING" and (t["BytesWritten"] > 0 or not written):
            return t
        if finished_ok and t["TaskState"] == "SUCCEEDED":
            return None
        assert t["TaskState"] in ("QUEUED", "RUNNING"), t
        time.sleep(0.05)
    pytest.fail(f"task {task_id} never got going")


def test_cancel_running_export_leaves_nothing(dep, big):
    image_id, _ = big
    # The worker sees a cancel at its next heartbeat (at most a second); an export that
    # finishes first on a fast moment of the machine ends SUCCEEDED, which is right but
    # proves nothing here: try again (each attempt under its own prefix).
    for attempt in range(4):
        prefix = f"cancelled{attempt}"
        resp = export(dep, image_id, "VMDK", FileNamePrefixList=[prefix])
        # Cancel as soon as it runs: bytes reach the catalog only with a heartbeat,
        # and a fast export may finish before its first one.
        t = wait_running(dep, resp["TaskId"], written=False, finished_ok=True)
        if t is None:
            continue
        assert 0 <= t["Percent"] < 100
        dep.common("a").call_json("CancelExportImageTask", {"TaskId": resp["TaskId"]})
        t = wait_task(dep, resp["TaskId"])
        if t["TaskState"] == "SUCCEEDED":
            continue
        assert t["TaskState"] == "CANCELLED" and t["FailureCode"] == "ExportCancelled", t
        assert not [n for n in objects(dep) if n.startswith(f"{prefix}_")]
        assert [p for p in partials(dep) if p.startswith(f"{resp['TaskId']}-")] == []
        return
    pytest.fail("four exports all finished before their cancel reached the worker")


def test_killed_export_is_retried_and_leaves_no_partial_object(tmp_path, big_source):
    """kill -9 mid-export: no object appears; after a restart the task is taken up again.

    A lease of 8 s rather than the module's 3 s: the restarted server waits for the dead
    one's lease to expire, and a 3 s lease on a loaded 2-core machine can lapse between
    two heartbeats of the live attempt too, which would count as a third attempt."""
    d = _start_deployment(tmp_path, rate_limits=False, workers=WORKERS.replace("lease_seconds = 3", "lease_seconds = 8"))
    bucket_dir(d).mkdir(parents=True)
    try:
        image_id = import_image(d, put_cos(d, big_source, "src/big.raw"))
        assert wait_image(d, image_id, timeout=400)["ImageState"] == "NORMAL"
        resp = export(d, image_id, "VMDK")
        # Killed while it writes: once its temporary file exists (the export takes
        # about a second, less than a heartbeat may take to show its bytes).
        deadline = time.monotonic() + 120
        while not partials(d):
            t = export_task(d, resp["TaskId"])
            assert t["TaskState"] in ("QUEUED", "RUNNING"), f"the export ended before it was killed: {t}"
            assert time.monotonic() < deadline, t
            time.sleep(0.01)
        d.server.proc.send_signal(signal.SIGKILL)
        d.server.proc.wait(timeout=10)
        assert objects(d) == [], "an unfinished export is visible in the bucket"
        d.server = Server(d.server.config, tmp_path / "server2.log").start()
        t = wait_task(d, resp["TaskId"], timeout=400)
        assert t["TaskState"] == "SUCCEEDED" and t["Attempts"] == 2, t
        assert objects(d) == [p[1:] for p in resp["CosPaths"]]
        assert partials(d) == []
        cmp = compare("raw", big_source, "vmdk", bucket_dir(d) / resp["CosPaths"][0][1:])
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    finally:
        d.server.stop()
