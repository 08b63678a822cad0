"""Sharing (ModifyImageSharePermission, DescribeImageSharePermission), copying
(SyncImages) and DescribeImageFromFamily, driven through the official Python SDK
(and tccli and the `imagegate images` CLI for a few) against a real server.

A copy shares the source's stored blob: no new bytes, and deleting either image
leaves the other's data intact (judged by `qemu-img compare`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import diskimages as di
from conftest import _start_deployment, bindir_binary, filt, make_accounts, next_second, pg_admin, unique
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import models

APP_ID = 1251233127  # account "a"
BUCKET = f"images-{APP_ID}"
TCCLI = str(Path(sys.executable).parent / "tccli")


@pytest.fixture(scope="module")
def life(tmp_path_factory):
    dep = _start_deployment(tmp_path_factory.mktemp("life"), rate_limits=False,
                            workers="concurrency = 4")
    yield dep
    dep.server.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return di.linux_disk(tmp_path_factory.mktemp("lifesrc") / "source.raw")


# --------------------------------------------------------------------------- helpers


# Actions that change something: the server answers an identical re-send of one in the
# same second with the first answer, and refuses one signed like the read before it
# (README, Exposure and hostile clients), so each is sent in a fresh second.
MUTATING = {"DeleteImages", "ModifyImageAttribute", "ModifyImageSharePermission", "SyncImages"}


def call(dep, action, params, account="a", region="ap-guangzhou") -> dict:
    if action in MUTATING:
        next_second()
    return dep.common(account, region=region).call_json(action, params)["Response"]


def err(dep, action, params, account="a", region="ap-guangzhou") -> str:
    with pytest.raises(TencentCloudSDKException) as e:
        call(dep, action, params, account, region)
    return e.value.code


def sdk_req(model, params: dict):
    req = model()
    req.from_json_string(json.dumps(params))
    return req


def put_cos(dep, path: Path, key: str) -> str:
    dest = dep.workdir / "cos" / BUCKET / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copy(path, dest)
    return f"https://{BUCKET}.cos.ap-guangzhou.myqcloud.com/{key}"


def images_of(dep, account, region="ap-guangzhou", **params) -> list[dict]:
    return call(dep, "DescribeImages", params, account, region)["ImageSet"]


def one_image(dep, image_id, account="a", region="ap-guangzhou") -> dict | None:
    s = images_of(dep, account, region, ImageIds=[image_id])
    return s[0] if s else None


def normal_image(dep, source: Path, *, name=None, family=None) -> str:
    params = {"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
              "ImageUrl": put_cos(dep, source, "life/source.raw"), "ImageName": name or unique("life")}
    if family:
        params["ImageFamily"] = family
    image_id = dep.sdk("a").ImportImage(sdk_req(models.ImportImageRequest, params)).ImageId
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = one_image(dep, image_id)["ImageState"]
        if state != "IMPORTING":
            assert state == "NORMAL", call(dep, "DescribeImportImageTasks", {"ImageIds": [image_id]})
            return image_id
        time.sleep(0.2)
    pytest.fail(f"{image_id} still IMPORTING")


def share(dep, image_id, accounts, permission="SHARE", account="a"):
    return dep.sdk(account).ModifyImageSharePermission(sdk_req(
        models.ModifyImageSharePermissionRequest,
        {"ImageId": image_id, "AccountIds": accounts, "Permission": permission}))


def sync(dep, image_id, regions, account="a", region="ap-guangzhou", **kw) -> list[dict]:
    params = {"ImageIds": [image_id], "DestinationRegions": regions, **kw}
    resp = dep.sdk(account, region=region).SyncImages(sdk_req(models.SyncImagesRequest, params))
    return json.loads(resp.to_json_string())["ImageSet"]


def uin(dep, account) -> str:
    return dep.accounts[account].uin


def blob_names(dep) -> list[str]:
    if dep.backend.s3:
        return sorted(dep.backend.keys())
    return sorted(p.name for p in (dep.workdir / "data" / "images").iterdir() if p.is_file())


def blob_path(dep, key: str) -> Path:
    if dep.backend.s3:
        dest = dep.workdir / "s3-copies" / key
        dest.parent.mkdir(exist_ok=True)
        assert dep.backend.fetch(key, dest), key
        return dest
    return dep.workdir / "data" / "images" / key


def assert_bytes_equal(dep, key: str, source: Path):
    path = blob_path(dep, key)
    assert path.exists(), f"no blob {key}"
    cmp = di.compare(source, path)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


# --------------------------------------------------------------------------- sharing


def test_share_is_seen_by_the_recipient_only_as_shared(life, source):
    image_id = normal_image(life, source)
    assert call(life, "DescribeImageSharePermission", {"ImageId": image_id})["SharePermissionSet"] == []
    assert one_image(life, image_id, "b") is None
    share(life, image_id, [uin(life, "b")])

    perms = life.sdk("a").DescribeImageSharePermission(
        sdk_req(models.DescribeImageSharePermissionRequest, {"ImageId": image_id})).SharePermissionSet
    assert [p.AccountId for p in perms] == [uin(life, "b")]
    assert isinstance(perms[0].CreatedTime, str) and perms[0].CreatedTime.endswith("Z")

    seen = one_image(life, image_id, "b")
    assert seen["ImageType"] == "SHARED_IMAGE" and seen["ImageCreator"] == uin(life, "a"), seen
    assert one_image(life, image_id, "a")["ImageType"] == "PRIVATE_IMAGE"
    shared = images_of(life, "b", Filters=[{"Name": "image-type", "Values": ["SHARED_IMAGE"]}], Limit=100)
    assert image_id in [i["ImageId"] for i in shared]
    private = images_of(life, "b", Filters=[{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}], Limit=100)
    assert image_id not in [i["ImageId"] for i in private]
    # Only in the image's region, and never to a third account.
    assert one_image(life, image_id, "b", region="ap-beijing") is None
    assert one_image(life, image_id, "lister") is None

    # The recipient may read, not change, delete, export or re-share.
    assert err(life, "ModifyImageAttribute", {"ImageId": image_id, "ImageName": unique()}, "b") == \
        "UnsupportedOperation.SharedImageModifyUnsupported"
    assert err(life, "DeleteImages", {"ImageIds": [image_id]}, "b") == \
        "InvalidParameterValue.InvalidImageIdIsShared"
    assert err(life, "ModifyImageSharePermission",
               {"ImageId": image_id, "AccountIds": [uin(life, "lister")], "Permission": "SHARE"}, "b") == \
        "UnauthorizedOperation.ImageNotBelongToAccount"
    assert err(life, "DescribeImageSharePermission", {"ImageId": image_id}, "b") == \
        "UnauthorizedOperation.ImageNotBelongToAccount"

    # The owner may not delete while shared, may modify; a second SHARE is refused.
    assert err(life, "DeleteImages", {"ImageIds": [image_id]}) == "InvalidImageId.InShared"
    assert err(life, "DeleteImages", {"ImageIds": [image_id], "DryRun": True}) == "InvalidImageId.InShared"
    call(life, "ModifyImageAttribute", {"ImageId": image_id, "ImageDescription": "shared"})
    assert err(life, "ModifyImageSharePermission",
               {"ImageId": image_id, "AccountIds": [uin(life, "b")], "Permission": "SHARE"}) == \
        "FailedOperation.AccountAlreadyExists"

    # CANCEL without AccountIds (what an SDK that omits empty lists sends) changes nothing.
    call(life, "ModifyImageSharePermission", {"ImageId": image_id, "Permission": "CANCEL"})
    assert one_image(life, image_id, "b") is not None
    share(life, image_id, [uin(life, "b")], "CANCEL")
    assert one_image(life, image_id, "b") is None
    assert call(life, "DescribeImageSharePermission", {"ImageId": image_id})["SharePermissionSet"] == []
    share(life, image_id, [uin(life, "b")], "CANCEL")  # cancelling again changes nothing
    call(life, "DeleteImages", {"ImageIds": [image_id]})


def test_share_refusals(life, source, stall):
    image_id = normal_image(life, source)
    base = {"ImageId": image_id, "Permission": "SHARE"}
    assert err(life, "ModifyImageSharePermission", {**base, "AccountIds": [uin(life, "a")]}) == \
        "FailedOperation.AccountIsYourSelf"
    assert err(life, "ModifyImageSharePermission", {**base, "AccountIds": ["999999999999"]}) == \
        "InvalidAccountId.NotFound"
    assert err(life, "ModifyImageSharePermission",
               {**base, "AccountIds": [uin(life, "b")], "Permission": "share"}) == "InvalidParameterValue"
    too_many = [str(200000000000 + n) for n in range(501)]
    assert err(life, "ModifyImageSharePermission", {**base, "AccountIds": too_many}) == \
        "InvalidParameterValue.LimitExceeded"
    assert err(life, "ModifyImageSharePermission", {**base, "AccountIds": [uin(life, "b")],
                                                    "ImageId": "img-zzzzzzzz"}) == "InvalidImageId.NotFound"
    assert err(life, "ModifyImageSharePermission", {**base, "AccountIds": [uin(life, "b")],
                                                    "ImageId": "img-XY"}) == "InvalidImageId.Malformed"
    # Another account's image that is not shared with the caller does not exist for it.
    assert err(life, "ModifyImageSharePermission", {**base, "AccountIds": [uin(life, "a")]}, "b") in \
        ("InvalidImageId.NotFound", "FailedOperation.AccountIsYourSelf")
    assert err(life, "ModifyImageSharePermission", {**base, "AccountIds": [uin(life, "lister")]}, "b") == \
        "InvalidImageId.NotFound"
    importing = life.sdk("a").ImportImage(sdk_req(models.ImportImageRequest, {
        "Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
        "ImageUrl": stall.url("share.raw"), "ImageName": unique()})).ImageId
    assert err(life, "ModifyImageSharePermission", {**base, "ImageId": importing, "AccountIds": [uin(life, "b")]}) \
        == "InvalidParameterValue.InvalidImageState"
    assert call(life, "DescribeImageSharePermission", {"ImageId": image_id})["SharePermissionSet"] == []


# --------------------------------------------------------------------------- SyncImages


def test_sync_copies_to_other_regions_without_copying_bytes(life, source):
    name = unique("sync")
    image_id = normal_image(life, source, name=name)
    before = blob_names(life)
    started = time.monotonic()
    copies = sync(life, image_id, ["ap-shanghai", "ap-beijing"], ImageSetRequired=True)
    elapsed = time.monotonic() - started
    assert sorted(c["Region"] for c in copies) == ["ap-beijing", "ap-shanghai"], copies
    assert blob_names(life) == before, "a copy must not store new bytes"
    for c in copies:
        assert c["ImageId"] != image_id
        img = one_image(life, c["ImageId"], region=c["Region"])
        assert img["ImageState"] == "NORMAL" and img["ImageName"] == name, img
        assert img["ImageType"] == "PRIVATE_IMAGE"
        # Visible only in its region.
        assert one_image(life, c["ImageId"]) is None
    print(f"SyncImages to two regions: {elapsed:.3f}s")

    # Deleting the source keeps the copies' data; deleting the last copy frees it.
    key = f"{image_id}.qcow2"
    call(life, "DeleteImages", {"ImageIds": [image_id]})
    assert key in blob_names(life)
    assert_bytes_equal(life, key, source)
    call(life, "DeleteImages", {"ImageIds": [copies[0]["ImageId"]]}, region=copies[0]["Region"])
    assert key in blob_names(life)
    call(life, "DeleteImages", {"ImageIds": [copies[1]["ImageId"]]}, region=copies[1]["Region"])
    assert key not in blob_names(life)


def test_sync_answers_an_empty_image_set_without_image_set_required(life, source):
    image_id = normal_image(life, source)
    name = unique("named")
    resp = call(life, "SyncImages", {"ImageIds": [image_id], "DestinationRegions": ["ap-shanghai"],
                                     "ImageName": name})
    assert resp["ImageSet"] == []
    found = images_of(life, "a", "ap-shanghai", Filters=[{"Name": "image-name", "Values": [name]}])
    assert [i["ImageName"] for i in found] == [name]


def test_sync_refusals(life, source, stall):
    image_id = normal_image(life, source)
    one = {"ImageIds": [image_id], "DestinationRegions": ["ap-shanghai"]}
    assert err(life, "SyncImages", {**one, "DestinationRegions": ["ap-guangzhou"]}) == \
        "InvalidParameterValue.InvalidRegion"
    assert err(life, "SyncImages", {**one, "DestinationRegions": ["eu-nowhere"]}) == "InvalidRegion.NotFound"
    assert err(life, "SyncImages", {**one, "ImageIds": ["img-zzzzzzzz"]}) == "InvalidImageId.NotFound"
    assert err(life, "SyncImages", {**one, "ImageIds": [image_id, image_id]}) == \
        "InvalidParameterValue.LimitExceeded"
    assert err(life, "SyncImages", {**one, "Encrypt": True}) == \
        "UnsupportedOperation.EncryptedImagesNotSupported"
    assert err(life, "SyncImages", {**one, "KmsKeyId": "kms-1"}) == "InvalidParameter.InvalidKmsKeyId"
    assert err(life, "SyncImages", {**one, "ImageName": "x" * 61}) == "InvalidParameterValue.TooLarge"
    importing = life.sdk("a").ImportImage(sdk_req(models.ImportImageRequest, {
        "Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
        "ImageUrl": stall.url("sync.raw"), "ImageName": unique()})).ImageId
    assert err(life, "SyncImages", {**one, "ImageIds": [importing]}) == "InvalidImageId.IncorrectState"
    # Another account's image does not exist for the caller.
    assert err(life, "SyncImages", one, "b") == "InvalidImageId.NotFound"

    # DryRun checks and writes nothing.
    count = lambda: len(images_of(life, "a", "ap-shanghai", Limit=100))  # noqa: E731
    n = count()
    assert call(life, "SyncImages", {**one, "DryRun": True, "ImageSetRequired": True})["ImageSet"] == []
    assert count() == n
    # A second copy of the same name in the destination is a duplicate.
    sync(life, image_id, ["ap-shanghai"])
    assert err(life, "SyncImages", one) == "InvalidImageName.Duplicate"
    assert err(life, "SyncImages", {**one, "DryRun": True}) == "InvalidImageName.Duplicate"


def test_sync_takes_quota_in_the_destination(life, source):
    """`tiny` has a quota of 1 image per region: a copy into its account fills it."""
    src = normal_image(life, source)
    share(life, src, [uin(life, "tiny")])
    copies = sync(life, src, ["ap-guangzhou"], account="tiny", ImageSetRequired=True)
    assert len(copies) == 1
    assert err(life, "SyncImages", {"ImageIds": [src], "DestinationRegions": ["ap-guangzhou"],
                                    "ImageName": unique()}, "tiny") == "ImageQuotaLimitExceeded"
    assert err(life, "SyncImages", {"ImageIds": [src], "DestinationRegions": ["ap-guangzhou"],
                                    "ImageName": unique(), "DryRun": True}, "tiny") == "ImageQuotaLimitExceeded"
    call(life, "DeleteImages", {"ImageIds": [copies[0]["ImageId"]]}, "tiny")
    copies = sync(life, src, ["ap-guangzhou"], account="tiny", ImageSetRequired=True)
    share(life, src, [uin(life, "tiny")], "CANCEL")
    call(life, "DeleteImages", {"ImageIds": [copies[0]["ImageId"]]}, "tiny")
    call(life, "DeleteImages", {"ImageIds": [src]})


def test_recipient_copies_a_shared_image_into_its_account(life, source):
    image_id = normal_image(life, source)
    share(life, image_id, [uin(life, "b")])
    assert err(life, "SyncImages", {"ImageIds": [image_id], "DestinationRegions": ["ap-shanghai"]}, "b") == \
        "InvalidParameterValue.InvalidRegion"
    copies = sync(life, image_id, ["ap-guangzhou"], account="b", ImageSetRequired=True,
                  ImageName=unique("mine"))
    mine = one_image(life, copies[0]["ImageId"], "b")
    assert mine["ImageType"] == "PRIVATE_IMAGE" and mine["ImageCreator"] == uin(life, "b"), mine
    # The owner withdraws the share and deletes the image: the recipient's copy stays whole.
    share(life, image_id, [uin(life, "b")], "CANCEL")
    call(life, "DeleteImages", {"ImageIds": [image_id]})
    assert one_image(life, copies[0]["ImageId"], "b")["ImageState"] == "NORMAL"
    assert_bytes_equal(life, f"{image_id}.qcow2", source)
    call(life, "ModifyImageAttribute", {"ImageId": copies[0]["ImageId"], "ImageDescription": "mine"}, "b")
    call(life, "DeleteImages", {"ImageIds": [copies[0]["ImageId"]]}, "b")
    assert f"{image_id}.qcow2" not in blob_names(life)


def test_concurrent_syncs_and_a_racing_delete_leave_a_consistent_store(life, source):
    from concurrent.futures import ThreadPoolExecutor
    image_id = normal_image(life, source)

    def one(n):
        try:
            return sync(life, image_id, ["ap-beijing"], ImageSetRequired=True, ImageName=unique(f"race{n}"))
        except TencentCloudSDKException as e:
            return e.code

    def delete():
        try:
            return call(life, "DeleteImages", {"ImageIds": [image_id]})
        except TencentCloudSDKException as e:
            return e.code

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(one, n) for n in range(5)] + [pool.submit(delete)]
        results = [f.result() for f in futures]
    copies = [r[0]["ImageId"] for r in results[:5] if isinstance(r, list)]
    for r in results[:5]:
        assert isinstance(r, list) or r in ("InvalidImageId.NotFound", "InvalidImageId.IncorrectState"), r
    key = f"{image_id}.qcow2"
    if copies:
        assert key in blob_names(life)
        assert_bytes_equal(life, key, source)
    for c in copies:
        call(life, "DeleteImages", {"ImageIds": [c]}, region="ap-beijing")
    if one_image(life, image_id) is not None:
        call(life, "DeleteImages", {"ImageIds": [image_id]})
    assert key not in blob_names(life)


# --------------------------------------------------------------------------- families


def test_describe_image_from_family(life, source):
    family = "fam" + unique("x").replace("-", "")
    older = normal_image(life, source, family=family)
    time.sleep(1.1)  # CreatedTime has second resolution in the answer; order by it
    newer = normal_image(life, source, family=family)
    got = life.sdk("a").DescribeImageFromFamily(
        sdk_req(models.DescribeImageFromFamilyRequest, {"ImageFamily": family})).Image
    assert got.ImageId == newer and got.ImageFamily == family
    call(life, "ModifyImageAttribute", {"ImageId": newer, "ImageDeprecated": True})
    assert call(life, "DescribeImageFromFamily", {"ImageFamily": family})["Image"]["ImageId"] == older
    # Visible to a recipient of a share, not to anyone else.
    assert call(life, "DescribeImageFromFamily", {"ImageFamily": family}, "b")["Image"] is None
    share(life, older, [uin(life, "b")])
    seen = call(life, "DescribeImageFromFamily", {"ImageFamily": family}, "b")["Image"]
    assert seen["ImageId"] == older and seen["ImageType"] == "SHARED_IMAGE"
    share(life, older, [uin(life, "b")], "CANCEL")
    resp = call(life, "DescribeImageFromFamily", {"ImageFamily": "no-such-family"})
    assert "Image" in resp and resp["Image"] is None
    assert err(life, "DescribeImageFromFamily", {}) == "MissingParameter"
    assert err(life, "DescribeImageFromFamily", {"ImageFamily": "9bad"}) == \
        "InvalidParameterValue.InvalidImageFamily"
    call(life, "DeleteImages", {"ImageIds": [older, newer]})


# --------------------------------------------------------------------------- tccli and the CLI


def test_tccli_share_sync_family_and_export(life, source, tmp_path):
    image_id = normal_image(life, source)

    def tccli(action, *args, account="a"):
        acc = life.accounts[account]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENCENTCLOUD_")}
        env["HOME"] = str(tmp_path)
        cmd = [TCCLI, "cvm", action, "--region", "ap-guangzhou", "--endpoint", f"http://127.0.0.1:{life.port}",
               "--secretId", acc.secret_id, "--secretKey", acc.secret_key, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, (cmd, p.stdout, p.stderr)
        return json.loads(p.stdout)

    tccli("ModifyImageSharePermission", "--ImageId", image_id, "--AccountIds", json.dumps([uin(life, "b")]),
          "--Permission", "SHARE")
    out = tccli("DescribeImageSharePermission", "--ImageId", image_id)
    assert [p["AccountId"] for p in out["SharePermissionSet"]] == [uin(life, "b")]
    out = tccli("SyncImages", "--ImageIds", json.dumps([image_id]), "--DestinationRegions",
                json.dumps(["ap-shanghai"]), "--ImageSetRequired", "True")
    assert out["ImageSet"][0]["Region"] == "ap-shanghai"
    copy = out["ImageSet"][0]["ImageId"]
    tccli("ModifyImageSharePermission", "--ImageId", image_id, "--AccountIds", json.dumps([uin(life, "b")]),
          "--Permission", "CANCEL")
    # The family lookup and an export, the rest of the lifecycle tccli offers.
    family = unique("fam")
    call(life, "ModifyImageAttribute", {"ImageId": image_id, "ImageFamily": family})
    out = tccli("DescribeImageFromFamily", "--ImageFamily", family)
    assert out["Image"]["ImageId"] == image_id, out
    bucket = f"exports-{life.accounts['a'].app_id}"
    (life.workdir / "cos" / bucket).mkdir(parents=True, exist_ok=True)
    out = tccli("ExportImages", "--BucketName", bucket, "--ImageIds", json.dumps([image_id]),
                "--ExportFormat", "RAW")
    assert isinstance(out["TaskId"], int) and len(out["CosPaths"]) == 1, out
    exported = life.workdir / "cos" / bucket / out["CosPaths"][0].lstrip("/")
    deadline = time.time() + 120
    while not exported.exists() and time.time() < deadline:
        time.sleep(0.3)
    assert exported.exists(), f"{exported} never appeared"
    # The export is done once its object is there; the image may go.
    for _ in range(100):
        task = life.common("a").call_json("DescribeExportImageTasks", {"TaskIds": [out["TaskId"]]})
        if task["Response"]["ExportImageTaskSet"][0]["TaskState"] == "SUCCEEDED":
            break
        time.sleep(0.3)
    call(life, "DeleteImages", {"ImageIds": [image_id]})
    call(life, "DeleteImages", {"ImageIds": [copy]}, region="ap-shanghai")


def test_cli_share_shares_sync_unshare(life, source):
    image_id = normal_image(life, source)
    acc = life.accounts["a"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENCENTCLOUD_")}
    env.update(TENCENTCLOUD_SECRET_ID=acc.secret_id, TENCENTCLOUD_SECRET_KEY=acc.secret_key,
               TENCENTCLOUD_REGION="ap-guangzhou", HOME=str(life.workdir))

    def cli(*args):
        p = subprocess.run([bindir_binary(), "images", *args, "--endpoint", f"http://127.0.0.1:{life.port}"],
                           capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr

    b = uin(life, "b")
    assert cli("share", image_id, b)[0] == 0
    code, out, _ = cli("shares", image_id)
    assert code == 0 and b in out, out
    code, out, _ = cli("sync", image_id, "--to", "ap-beijing")
    assert code == 0 and "ap-beijing" in out, out
    copy = out.split()[-1]
    assert one_image(life, copy, region="ap-beijing")["ImageState"] == "NORMAL"
    code, _, errout = cli("sync", image_id, "--to", "ap-guangzhou")
    assert code == 1 and "InvalidParameterValue.InvalidRegion" in errout, errout
    assert cli("unshare", image_id, b)[0] == 0
    code, out, _ = cli("shares", image_id)
    assert code == 0 and "not shared" in out
    call(life, "DeleteImages", {"ImageIds": [image_id]})
    call(life, "DeleteImages", {"ImageIds": [copy]}, region="ap-beijing")


# --------------------------------------------------------------------------- kill -9


def catalog_rows(dep, sql: str) -> list[tuple]:
    if dep.backend.catalog_url:
        out = pg_admin(sql, dep.backend.catalog_url)
        return [tuple(line.split("|")) for line in out.splitlines() if line]
    import sqlite3
    con = sqlite3.connect(dep.workdir / "data" / "catalog.db")
    try:
        return [tuple(str(c) for c in r) for r in con.execute(sql)]
    finally:
        con.close()


def test_kill_9_during_syncs_and_deletes_leaves_blobs_and_rows_matching(tmp_path, source):
    """SIGKILL while copies are made and deleted: after a restart (whose reaper runs at
    start) every NORMAL image's blob exists and every stored blob is named by an image."""
    dep = _start_deployment(tmp_path, rate_limits=False, accounts=make_accounts(), workers="concurrency = 2")
    try:
        image_id = normal_image(dep, source)
        for round_ in range(3):
            stop = time.monotonic() + 0.3 + 0.2 * round_

            def churn():
                made = []
                while time.monotonic() < stop:
                    try:
                        made += [c["ImageId"] for c in sync(dep, image_id, ["ap-beijing"], ImageSetRequired=True,
                                                            ImageName=unique("k"))]
                        if len(made) > 1:
                            call(dep, "DeleteImages", {"ImageIds": [made.pop(0)]}, region="ap-beijing")
                    except Exception:  # the server dies under us
                        return

            import threading
            t = threading.Thread(target=churn)
            t.start()
            time.sleep(0.3 + 0.1 * round_)
            dep.server.proc.send_signal(signal.SIGKILL)
            dep.server.proc.wait(timeout=10)
            t.join()
            dep.server.start()
            live_sql = ("SELECT d.blob_key FROM image_disks d JOIN images i ON i.image_id = d.image_id "
                        "WHERE i.state = 'NORMAL'")
            deadline = time.monotonic() + 30  # the reaper sweeps as the workers start
            while True:
                live = {r[0] for r in catalog_rows(dep, live_sql)}
                stored = set(blob_names(dep))
                assert live <= stored, f"images without blobs: {live - stored}"
                if stored <= live or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert stored <= live, f"blobs without images: {stored - live}"
            registered = {r[0] for r in catalog_rows(dep, "SELECT blob_key FROM blobs")}
            assert live <= registered
        assert_bytes_equal(dep, f"{image_id}.qcow2", source)
    finally:
        dep.server.stop()
