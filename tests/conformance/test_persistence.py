"""Everything survives a restart; a first start without accounts creates one."""

import os
import re
import stat
import time

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cvm.v20170312 import cvm_client, models

from conftest import Deployment, cos_url, describe, do_import, filt, image_by_id, make_accounts, \
    unique, write_config


def test_restart_keeps_images_names_and_quota(tmp_path, fresh_server):
    accounts = make_accounts()
    (tmp_path / "cos").mkdir()
    config = tmp_path / "imagegate.toml"
    write_config(config, tmp_path / "data", accounts.values(), rate_limits=False, cos_root=tmp_path / "cos")

    first = fresh_server(config)
    dep = Deployment(first, accounts, tmp_path)
    sdk = dep.sdk("small")
    url = cos_url(accounts["small"].app_id)
    name = unique("persist")
    tag = models.Tag()
    tag.Key, tag.Value = "k", "v"
    spec = models.TagSpecification()
    spec.ResourceType, spec.Tags = "image", [tag]
    image_id = do_import(sdk, ImageName=name, ImageUrl=url, ImageDescription="kept", TagSpecification=[spec],
                         Architecture="arm_64", ImageFamily="fam")
    for _ in range(accounts["small"].quota - 1):
        do_import(sdk, ImageUrl=url)
    # With the import pipeline, the import (of a missing object) ends IMPORTFAILED on its
    # own: wait for that before the restart, so the state compared is a settled one.
    deadline = time.time() + 60
    before = image_by_id(sdk, image_id)
    while before.ImageState == "IMPORTING" and time.time() < deadline:
        time.sleep(0.5)
        before = image_by_id(sdk, image_id)
    first.stop()
    assert first.proc.returncode is not None

    second = fresh_server(config)
    dep2 = Deployment(second, accounts, tmp_path)
    sdk2 = dep2.sdk("small")
    after = image_by_id(sdk2, image_id)
    for field in ["ImageId", "ImageName", "ImageDescription", "CreatedTime", "Architecture", "ImageFamily",
                  "ImageDeprecated", "ImageCreator", "Platform", "ImageState"]:
        assert getattr(after, field) == getattr(before, field), field
    assert [(t.Key, t.Value) for t in after.Tags] == [("k", "v")]
    assert describe(sdk2).TotalCount == accounts["small"].quota
    # Name uniqueness and the quota still hold after the restart.
    try:
        do_import(sdk2, ImageName=name, ImageUrl=url)
        raise AssertionError("import after restart should have failed")
    except TencentCloudSDKException as e:
        assert e.code in ("InvalidImageName.Duplicate", "ImageQuotaLimitExceeded")
    try:
        do_import(sdk2, ImageUrl=url)
        raise AssertionError("quota should still be exhausted after restart")
    except TencentCloudSDKException as e:
        assert e.code == "ImageQuotaLimitExceeded"
    assert describe(sdk2, Filters=[filt("image-name", name)]).TotalCount == 1


def test_first_start_without_accounts_creates_one(tmp_path, fresh_server):
    data = tmp_path / "data"
    config = tmp_path / "imagegate.toml"
    # Rate limits off: every printed token is tried as the key below.
    config.write_text(f'listen = "127.0.0.1:0"\ndata_dir = "{data}"\n[rate_limits]\nenabled = false\n')
    server = fresh_server(config)
    # The credentials may come before or after the ready line, on stdout or stderr.
    deadline = time.time() + 5
    while True:
        text = "\n".join(server.output) + "\n" + (tmp_path / "server0.log").read_text(errors="replace")
        if re.search(r"AKID[0-9A-Za-z]{8,}", text) or time.time() > deadline:
            break
        time.sleep(0.1)
    sid = re.search(r"(AKID[0-9A-Za-z]{8,})", text)
    assert sid, f"no SecretId printed on first start: {server.output}"
    sid = sid.group(1)
    # The key is printed next to it; try every token that could be the key.
    tokens = set(re.findall(r"[0-9A-Za-z+/=_-]{16,}", text)) - {sid}
    assert tokens, server.output
    # The stored account file(s) are private.
    secret_files = []
    for root, _, files in os.walk(data):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                if sid.encode() in fh.read():
                    secret_files.append(p)
    assert secret_files, "the created account is not stored in the data directory"
    for p in secret_files:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, (p, oct(os.stat(p).st_mode))

    def quota_with(key):
        http = HttpProfile(protocol="http", endpoint=server.endpoint)
        c = cvm_client.CvmClient(credential.Credential(sid, key), "ap-guangzhou", ClientProfile(httpProfile=http))
        return c.DescribeImageQuota(models.DescribeImageQuotaRequest())

    working = []
    for key in tokens:
        try:
            quota_with(key)
            working.append(key)
        except TencentCloudSDKException as e:
            assert e.code == "AuthFailure.SignatureFailure", e.code
    assert len(working) == 1, "exactly one printed token must be the SecretKey"
    key = working[0]
    server.stop()

    # Restarted, the same account is used and not printed again.
    again = fresh_server(config)
    assert key not in "\n".join(again.output), "the SecretKey was printed again on the second start"
    http = HttpProfile(protocol="http", endpoint=again.endpoint)
    c = cvm_client.CvmClient(credential.Credential(sid, key), "ap-guangzhou", ClientProfile(httpProfile=http))
    assert c.DescribeImageQuota(models.DescribeImageQuotaRequest()).ImageNumQuota > 0
    time.sleep(0.5)
    again.stop()
    second_run = (tmp_path / "server1.log").read_text(errors="replace") + "\n".join(again.output)
    assert key not in second_run, "the SecretKey appears in the output of a later start"
