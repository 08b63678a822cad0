"""tccli 3.1.189.1 as a user runs it: a subprocess, pointed at the server with --endpoint.

tccli sends `Host: http://127.0.0.1:PORT` (reference §1): every success here also
proves that quirk works. Output is JSON on stdout; an API error exits 255 with
`[TencentCloudSDKException] code:<Code> message:<msg> requestId:<id>` on stderr.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cos_url, modifiable_image, unique

TCCLI = str(Path(sys.executable).parent / "tccli")


@pytest.fixture(scope="module")
def tccli(gate, tmp_path_factory):
    home = tmp_path_factory.mktemp("tccli-home")

    def run(action, *args, account="a", region="ap-guangzhou", creds="flags", ok=True, secret_key=None):
        acc = gate.accounts[account]
        key = acc.secret_key if secret_key is None else secret_key
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENCENTCLOUD_")}
        env["HOME"] = str(home)  # keep tccli's profile files out of the real home
        cmd = [TCCLI, "cvm", action, "--region", region, "--endpoint", f"http://127.0.0.1:{gate.port}"]
        if creds == "flags":
            cmd += ["--secretId", acc.secret_id, "--secretKey", key]
        else:
            env["TENCENTCLOUD_SECRET_ID"] = acc.secret_id
            env["TENCENTCLOUD_SECRET_KEY"] = key
        cmd += list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        if ok:
            assert p.returncode == 0, (cmd, p.stdout, p.stderr)
            return json.loads(p.stdout)
        assert p.returncode != 0, (cmd, p.stdout)
        m = re.search(r"code:(\S+) message:(.*) requestId:(\S+)", p.stderr)
        assert m, p.stderr
        return m.group(1), m.group(2), m.group(3)

    return run


def test_describe_import_image_os(tccli):
    out = tccli("DescribeImportImageOs")
    assert "Redhat" in out["ImportImageOsListSupported"]["Linux"]
    assert out["RequestId"]


def test_import_describe_modify_delete(tccli, gate, stall):
    name = unique("tccli")
    out = tccli("ImportImage", "--Architecture", "x86_64", "--OsType", "CentOS", "--OsVersion", "7",
                "--ImageUrl", stall.url("tccli.raw"), "--ImageName", name, "--Force", "True",
                "--TagSpecification", json.dumps([{"ResourceType": "image", "Tags": [{"Key": "cli", "Value": "1"}]}]),
                creds="env")
    image_id = out["ImageId"]
    assert re.fullmatch(r"img-[a-z0-9]{8}", image_id)

    out = tccli("DescribeImages", "--ImageIds", json.dumps([image_id]))
    assert out["TotalCount"] == 1
    img = out["ImageSet"][0]
    assert img["ImageName"] == name and img["ImageState"] == "IMPORTING"
    assert img["Tags"] == [{"Key": "cli", "Value": "1"}]

    out = tccli("DescribeImages", "--Filters", json.dumps([{"Name": "tag:cli", "Values": ["1"]},
                                                           {"Name": "image-name", "Values": [name]}]))
    assert [i["ImageId"] for i in out["ImageSet"]] == [image_id]

    code, _, _ = tccli("ModifyImageAttribute", "--ImageId", image_id, "--ImageName", name + "-2", ok=False)
    assert code == "InvalidImageId.IncorrectState"
    code, _, rid = tccli("DeleteImages", "--ImageIds", json.dumps([image_id]), ok=False)
    assert code == "InvalidImageId.IncorrectState"
    assert re.fullmatch(r"[0-9a-f-]{36}", rid)


def test_modify_and_delete_settled(tccli, gate):
    image_id = modifiable_image(gate, "a")
    name = unique("tccli-mod")
    out = tccli("ModifyImageAttribute", "--ImageId", image_id, "--ImageName", name, "--ImageDeprecated", "True")
    assert out["RequestId"]
    out = tccli("DescribeImages", "--ImageIds", json.dumps([image_id]))
    assert out["ImageSet"][0]["ImageName"] == name and out["ImageSet"][0]["ImageDeprecated"] is True
    tccli("DeleteImages", "--ImageIds", json.dumps([image_id]), "--DryRun", "True")
    tccli("DeleteImages", "--ImageIds", json.dumps([image_id]))
    assert tccli("DescribeImages", "--ImageIds", json.dumps([image_id]))["TotalCount"] == 0


def test_dry_run_and_quota(tccli, gate):
    out = tccli("ImportImage", "--Architecture", "i386", "--OsType", "Debian", "--OsVersion", "9",
                "--ImageUrl", cos_url(1251233127), "--ImageName", unique("tcd"), "--DryRun", "True")
    assert "ImageId" not in out or out["ImageId"] is None
    out = tccli("DescribeImageQuota", account="small")
    assert out["ImageNumQuota"] == gate.accounts["small"].quota


def test_errors(tccli):
    code, msg, _ = tccli("ImportImage", "--Architecture", "x86_64", "--OsType", "Plan9", "--OsVersion", "7",
                         "--ImageUrl", cos_url(1251233127), "--ImageName", unique(), ok=False)
    assert code == "InvalidImageOsType.Unsupported"
    code, _, _ = tccli("DescribeImages", region="eu-frankfurt", ok=False)
    assert code == "UnsupportedRegion"
    code, _, _ = tccli("DeleteImages", "--ImageIds", json.dumps(["img-zzzzzzzz"]), ok=False)
    assert code == "InvalidImageId.NotFound"
    code, _, _ = tccli("ModifyImageAttribute", "--ImageId", "oops", "--ImageName", "x", ok=False)
    assert code == "InvalidImageId.Malformed"


def test_language_flag(tccli):
    code, msg, _ = tccli("DescribeImages", "--language", "en-US", "--ImageIds", json.dumps(["bad"]), ok=False)
    assert code == "InvalidImageId.Malformed" and msg.isascii(), msg
    code, msg, _ = tccli("DescribeImages", "--ImageIds", json.dumps(["bad"]), ok=False)
    assert re.search(r"[\u4e00-\u9fff]", msg), msg


def test_wrong_key(tccli):
    code, _, _ = tccli("DescribeImageQuota", secret_key="wrong", ok=False)
    assert code == "AuthFailure.SignatureFailure"
