"""ExportImages to the S3 target (`source.cos_endpoint`, moto_server): formats judged by
`qemu-img compare`, the round trip through ImportImage from the same store, a
cancelled export leaving neither an object nor an unfinished multipart upload, a
missing bucket, and a store that answers "no room" (through our fault proxy). Runs in the PostgreSQL + S3 pass only (scripts/test
conformance_pg_s3), which has moto_server; the SQLite pass does not collect it.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

import diskimages as di
from conftest import S3_KEYS, _start_deployment, next_second, s3_client
from faultproxy import FaultProxy
from test_export import (APP_ID, EXT, QEMU, WORKERS, compare, export, import_image, sdk_error,
                         stored_blob, wait_image, wait_running, wait_task)


def bucket(tag: str) -> str:
    name = f"{tag}{uuid.uuid4().hex[:8]}-{APP_ID}"
    s3_client().create_bucket(Bucket=name)
    return name


def keys(name: str) -> list[str]:
    resp = s3_client().list_objects_v2(Bucket=name)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def uploads(name: str) -> list[str]:
    resp = s3_client().list_multipart_uploads(Bucket=name)
    return sorted(u["Key"] for u in resp.get("Uploads", []))


@pytest.fixture(scope="module")
def s3dep(tmp_path_factory):
    endpoint = os.environ["IMAGEGATE_TEST_S3_ENDPOINT"]
    tmp = tmp_path_factory.mktemp("export-s3")
    source = (f'cos_endpoint = "{endpoint}"\ncos_access_key = "{S3_KEYS["aws_access_key_id"]}"\n'
              f'cos_secret_key = "{S3_KEYS["aws_secret_access_key"]}"\ncos_region = "{S3_KEYS["region_name"]}"\n')
    d = _start_deployment(tmp, rate_limits=False, workers=WORKERS, with_cos_root=False, source_extra=source)
    yield d
    d.server.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return di.linux_disk(tmp_path_factory.mktemp("export-s3-src") / "system.raw", size_mib=256, data_mib=96, seed=3)


@pytest.fixture(scope="module")
def s3image(s3dep, source):
    src = bucket("src")
    s3_client().upload_file(str(source), src, "system.raw")
    image_id = import_image(s3dep, f"https://{src}.cos.ap-guangzhou.myqcloud.com/system.raw")
    assert wait_image(s3dep, image_id)["ImageState"] == "NORMAL"
    return image_id


@pytest.mark.parametrize("fmt", ["RAW", "VMDK", "VHD", "QCOW2"])
def test_export_to_s3_round_trips(s3dep, source, s3image, fmt, tmp_path):
    out = bucket("exp")
    resp = export(s3dep, s3image, fmt, BucketName=out)
    key = resp["CosPaths"][0][1:]
    assert key.endswith("." + EXT[fmt])
    t = wait_task(s3dep, resp["TaskId"])
    assert t["TaskState"] == "SUCCEEDED", t
    assert keys(out) == [key] and uploads(out) == []
    local = tmp_path / key
    s3_client().download_file(out, key, str(local))
    cmp = compare("raw", source, QEMU[fmt], local)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    again = import_image(s3dep, f"https://{out}.cos.ap-guangzhou.myqcloud.com/{key}")
    assert wait_image(s3dep, again)["ImageState"] == "NORMAL"
    cmp = compare("qcow2", stored_blob(s3dep, s3image), "qcow2", stored_blob(s3dep, again))
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def test_cancelled_s3_export_leaves_no_object_nor_upload(s3dep, s3image):
    out = bucket("cxl")
    resp = export(s3dep, s3image, "VMDK", BucketName=out)
    wait_running(s3dep, resp["TaskId"])
    s3dep.common("a").call_json("CancelExportImageTask", {"TaskId": resp["TaskId"]})
    t = wait_task(s3dep, resp["TaskId"])
    assert t["TaskState"] == "CANCELLED", t
    deadline = time.monotonic() + 20
    while uploads(out) and time.monotonic() < deadline:  # the abort is sent after the task ends
        time.sleep(0.2)
    assert keys(out) == [] and uploads(out) == []


def test_missing_s3_bucket(s3dep, s3image):
    code = sdk_error(s3dep, "ExportImages", {"ImageIds": [s3image], "BucketName": f"nowhere-{APP_ID}"})
    assert code == "InvalidParameterValue.BucketNotFound"


def test_a_full_s3_store_fails_the_export_with_export_target_full(tmp_path):
    """The store behind `cos_endpoint` answers every part upload with "no room" (Ceph's
    403 QuotaExceeded; MinIO's 507 XMinioStorageFull is mapped the same way, see the unit
    test in export/target.rs): the task fails with ExportTargetFull, leaves neither an
    object nor an unfinished upload, and the same export succeeds once there is room."""
    proxy = FaultProxy(os.environ["IMAGEGATE_TEST_S3_ENDPOINT"])
    source = (f'cos_endpoint = "{proxy.endpoint}"\ncos_access_key = "{S3_KEYS["aws_access_key_id"]}"\n'
              f'cos_secret_key = "{S3_KEYS["aws_secret_access_key"]}"\ncos_region = "{S3_KEYS["region_name"]}"\n')
    dep = _start_deployment(tmp_path, rate_limits=False, workers=WORKERS, with_cos_root=False,
                            source_extra=source)
    try:
        raw = di.linux_disk(tmp_path / "small.raw", size_mib=64, data_mib=16, seed=9)
        src = bucket("fsrc")
        s3_client().upload_file(str(raw), src, "system.raw")
        image_id = import_image(dep, f"https://{src}.cos.ap-guangzhou.myqcloud.com/system.raw")
        assert wait_image(dep, image_id)["ImageState"] == "NORMAL"
        out = bucket("full")
        proxy.fault(seconds=600, kinds=("quota",), methods=("PUT",))
        t = wait_task(dep, export(dep, image_id, "RAW", BucketName=out)["TaskId"])
        assert t["TaskState"] == "FAILED" and t["FailureCode"] == "ExportTargetFull", t
        assert proxy.counts["quota"] > 0
        deadline = time.monotonic() + 20
        while uploads(out) and time.monotonic() < deadline:  # the abort is sent after the failure
            time.sleep(0.2)
        assert keys(out) == [] and uploads(out) == []
        proxy.clear()
        # The same parameters within the same second would be an identical re-send,
        # answered with the first task (see README, "A signature is bound ...").
        next_second()
        resp = export(dep, image_id, "RAW", BucketName=out)
        t = wait_task(dep, resp["TaskId"])
        assert t["TaskState"] == "SUCCEEDED", (t.get("FailureCode"), t.get("FailureMessage"))
        assert keys(out) == [resp["CosPaths"][0][1:]] and uploads(out) == []
    finally:
        dep.server.stop()
        proxy.close()


def test_a_completion_whose_answer_is_lost_still_publishes_the_export(tmp_path):
    """The store completes the multipart upload, and the answer never arrives (the proxy
    drops the connection after the store did the work, as a timeout does while a store
    assembles a large object). The S3 client's retries then find no upload; the export
    counts as published because the object is there with every byte written: the task
    SUCCEEDS, its object is identical to the source, and no upload is left."""
    proxy = FaultProxy(os.environ["IMAGEGATE_TEST_S3_ENDPOINT"])
    source = (f'cos_endpoint = "{proxy.endpoint}"\ncos_access_key = "{S3_KEYS["aws_access_key_id"]}"\n'
              f'cos_secret_key = "{S3_KEYS["aws_secret_access_key"]}"\ncos_region = "{S3_KEYS["region_name"]}"\n')
    dep = _start_deployment(tmp_path, rate_limits=False, workers=WORKERS, with_cos_root=False,
                            source_extra=source)
    try:
        raw = di.linux_disk(tmp_path / "small.raw", size_mib=64, data_mib=16, seed=11)
        src = bucket("lsrc")
        s3_client().upload_file(str(raw), src, "system.raw")
        image_id = import_image(dep, f"https://{src}.cos.ap-guangzhou.myqcloud.com/system.raw")
        assert wait_image(dep, image_id)["ImageState"] == "NORMAL"
        out = bucket("lost")
        # Only the completion (a POST naming its upload) is dropped, for long enough
        # that the first try and the client's quick retries all go unanswered.
        proxy.fault(seconds=600, kinds=("drop",), methods=("POST",), path_contains="uploadId=")
        resp = export(dep, image_id, "RAW", BucketName=out)
        t = wait_task(dep, resp["TaskId"], timeout=300)
        proxy.clear()
        print(f"\nlost completion answers: {proxy.counts}; task {t['TaskState']} "
              f"{t.get('FailureCode')} {t.get('FailureMessage')}")
        assert proxy.counts["drop"] > 0, proxy.counts
        assert t["TaskState"] == "SUCCEEDED", (t.get("FailureCode"), t.get("FailureMessage"))
        key = resp["CosPaths"][0][1:]
        assert keys(out) == [key] and uploads(out) == []
        local = tmp_path / "exported.raw"
        s3_client().download_file(out, key, str(local))
        cmp = compare("raw", raw, "raw", local)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    finally:
        dep.server.stop()
        proxy.close()
