"""Every client but the Node.js SDK (tests/node): the credential scope's service, CBS
DescribeSnapshots for the snapshots behind images, and what Terraform's provider sends.

- Raw HTTP: the scope may name `cvm`, `cbs` or the first label of the Host (what the
  Node.js SDK signs with `endpoint: "127.0.0.1:9000"`), nothing else; `cbs` only for the
  CBS actions and `cvm` only for the CVM ones.
- The Python SDK's CbsClient and `tccli cbs DescribeSnapshots` on the snapshots of a
  NORMAL image imported from the COS stand-in folder.
- The calls of Terraform's `tencentcloud_images` data source (DescribeImages with an
  `image-type` filter, then DescribeSnapshots by SnapshotIds, Offset 0, Limit 100), and
  of its image resource (ModifyImageAttribute with `ImageFamily: ""`).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import diskimages as di
from conftest import bindir_binary, unique
from tcraw import send_raw, tc3_signature, utc_date
from tencentcloud.cbs.v20170312 import cbs_client
from tencentcloud.cbs.v20170312 import models as cbs_models
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cvm.v20170312 import models

TCCLI = str(Path(sys.executable).parent / "tccli")


# --------------------------------------------------------------------------- the credential scope, raw


def signed(gate, action, params, *, service, host=None, account="a"):
    """A TC3 POST whose scope names `service`, signed with it, sent with this Host."""
    acc = gate.accounts[account]
    host = host or f"127.0.0.1:{gate.port}"
    body = json.dumps(params).encode()
    ts = int(time.time())
    sig = tc3_signature(acc.secret_key, method="POST", host=host, content_type="application/json", query="",
                        payload=body, timestamp=ts, service=service)
    headers = [
        ("Host", host),
        ("Content-Type", "application/json"),
        ("Authorization", f"TC3-HMAC-SHA256 Credential={acc.secret_id}/{utc_date(ts)}/{service}/tc3_request, "
                          f"SignedHeaders=content-type;host, Signature={sig}"),
        ("X-TC-Action", action),
        ("X-TC-Version", "2017-03-12"),
        ("X-TC-Timestamp", str(ts)),
        ("X-TC-Region", "ap-guangzhou"),
        ("X-TC-Language", "en-US"),
    ]
    resp = send_raw(("127.0.0.1", gate.port), "POST", "/", headers, body)
    assert resp.status == 200 and resp.headers["content-type"] == "application/json", resp
    return resp


def test_scope_host_first_label_is_accepted(gate):
    # tencentcloud-sdk-nodejs: service = endpoint.split(".")[0]
    r = signed(gate, "DescribeImageQuota", {}, service="127")
    assert r.error_code is None, r.response
    assert r.response["ImageNumQuota"] == gate.accounts["a"].quota
    # A name without dots: the label with its port (Node's split) or without.
    for service in ("localhost", f"localhost:{gate.port}"):
        r = signed(gate, "DescribeImages", {"Limit": 1}, service=service, host=f"localhost:{gate.port}")
        assert r.error_code is None, (service, r.response)


@pytest.mark.parametrize("service,host", [
    ("cos", None),
    ("128", None),
    ("127.0.0.1", None),
    ("0", None),
    ("localhost", None),          # not the Host's label
    ("tencentcloudapi", "cvm.tencentcloudapi.com"),
])
def test_scope_other_services_are_refused(gate, service, host):
    r = signed(gate, "DescribeImageQuota", {}, service=service, host=host)
    assert r.error_code == "AuthFailure.InvalidAuthorization", r.response
    assert "service" in r.error_message


def test_scope_names_the_product_of_the_action(gate):
    r = signed(gate, "DescribeImages", {}, service="cbs")
    assert r.error_code == "InvalidAction", r.response
    assert "cbs" in r.error_message
    r = signed(gate, "DescribeSnapshots", {}, service="cvm")
    assert r.error_code == "InvalidAction", r.response
    for service in ("cbs", "127"):
        r = signed(gate, "DescribeSnapshots", {"Limit": 1}, service=service)
        assert r.error_code is None, (service, r.response)
        assert isinstance(r.response["TotalCount"], int)


def test_scope_host_signed_without_its_port(gate):
    # tencentcloud-sdk-nodejs signs `host:<URL.hostname>`, the Host header without its port.
    acc = gate.accounts["a"]
    ts = int(time.time())
    sig = tc3_signature(acc.secret_key, method="POST", host="127.0.0.1", content_type="application/json",
                        query="", payload=b"{}", timestamp=ts, service="127")
    headers = [("Host", f"127.0.0.1:{gate.port}"), ("Content-Type", "application/json"),
               ("Authorization", f"TC3-HMAC-SHA256 Credential={acc.secret_id}/{utc_date(ts)}/127/tc3_request, "
                                 f"SignedHeaders=content-type;host, Signature={sig}"),
               ("X-TC-Action", "DescribeImageQuota"), ("X-TC-Version", "2017-03-12"),
               ("X-TC-Timestamp", str(ts)), ("X-TC-Region", "ap-guangzhou")]
    r = send_raw(("127.0.0.1", gate.port), "POST", "/", headers, b"{}")
    assert r.error_code is None, r.response
    # Another host name is still another signature.
    sig = tc3_signature(acc.secret_key, method="POST", host="127.0.0.2", content_type="application/json",
                        query="", payload=b"{}", timestamp=ts, service="127")
    headers[2] = ("Authorization", f"TC3-HMAC-SHA256 Credential={acc.secret_id}/{utc_date(ts)}/127/tc3_request, "
                                   f"SignedHeaders=content-type;host, Signature={sig}")
    r = send_raw(("127.0.0.1", gate.port), "POST", "/", headers, b"{}")
    assert r.error_code == "AuthFailure.SignatureFailure", r.response


def test_scope_signature_is_keyed_by_the_scope(gate):
    # Signed with `cvm` but the scope says `127`: the key chain differs.
    acc = gate.accounts["a"]
    host = f"127.0.0.1:{gate.port}"
    ts = int(time.time())
    sig = tc3_signature(acc.secret_key, method="POST", host=host, content_type="application/json", query="",
                        payload=b"{}", timestamp=ts, service="cvm")
    headers = [("Host", host), ("Content-Type", "application/json"),
               ("Authorization", f"TC3-HMAC-SHA256 Credential={acc.secret_id}/{utc_date(ts)}/127/tc3_request, "
                                 f"SignedHeaders=content-type;host, Signature={sig}"),
               ("X-TC-Action", "DescribeImageQuota"), ("X-TC-Version", "2017-03-12"),
               ("X-TC-Timestamp", str(ts)), ("X-TC-Region", "ap-guangzhou")]
    r = send_raw(("127.0.0.1", gate.port), "POST", "/", headers, b"{}")
    assert r.error_code == "AuthFailure.SignatureFailure", r.response


# --------------------------------------------------------------------------- a NORMAL image and its snapshots


@pytest.fixture(scope="module")
def normal_image(gate, tmp_path_factory):
    """A NORMAL image of account a with a data disk: two snapshots."""
    work = tmp_path_factory.mktemp("clients-disk")
    disk = di.convert(di.linux_disk(work / "source.raw"), work / "disk.qcow2", "qcow2-v3")
    data = work / "data.raw"
    data.write_bytes(b"\0" * (4 << 20))
    app_id = gate.accounts["a"].app_id
    bucket = gate.workdir / "cos" / f"images-{app_id}"
    bucket.mkdir(parents=True, exist_ok=True)
    shutil.copy(disk, bucket / "clients.qcow2")
    shutil.copy(data, bucket / "clients-data.raw")
    base = f"https://images-{app_id}.cos.ap-guangzhou.myqcloud.com"
    req = models.ImportImageRequest()
    req.from_json_string(json.dumps({
        "Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7", "ImageName": unique("clients"),
        "ImageUrl": f"{base}/clients.qcow2", "ImportImageDataDiskList": [{"ImageUrl": f"{base}/clients-data.raw"}],
        "ImageFamily": "clients-family"}))
    sdk = gate.sdk("a")
    image_id = sdk.ImportImage(req).ImageId
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        img = describe_one(sdk, image_id)
        if img["ImageState"] != "IMPORTING":
            break
        time.sleep(0.3)
    assert img["ImageState"] == "NORMAL", img
    return img


def describe_one(sdk, image_id):
    req = models.DescribeImagesRequest()
    req.ImageIds = [image_id]
    resp = json.loads(sdk.DescribeImages(req).to_json_string())
    assert resp["TotalCount"] == 1, resp
    return resp["ImageSet"][0]


def cbs(gate, account="a"):
    acc = gate.accounts[account]
    http = HttpProfile(protocol="http", endpoint=gate.server.endpoint, reqTimeout=30)
    return cbs_client.CbsClient(credential.Credential(acc.secret_id, acc.secret_key), "ap-guangzhou",
                                ClientProfile(httpProfile=http))


def describe_snapshots(client, **params):
    req = cbs_models.DescribeSnapshotsRequest()
    req.from_json_string(json.dumps(params))
    return json.loads(client.DescribeSnapshots(req).to_json_string())


def test_python_sdk_cbs_describes_the_snapshots_of_an_image(gate, normal_image):
    snaps = normal_image["SnapshotSet"]
    assert [s["DiskUsage"] for s in snaps] == ["SYSTEM_DISK", "DATA_DISK"]
    ids = [s["SnapshotId"] for s in snaps]
    resp = describe_snapshots(cbs(gate), SnapshotIds=ids, Offset=0, Limit=100)
    assert resp["TotalCount"] == 2
    got = {s["SnapshotId"]: s for s in resp["SnapshotSet"]}
    assert set(got) == set(ids)
    for s in snaps:
        g = got[s["SnapshotId"]]
        assert g["DiskUsage"] == s["DiskUsage"] and g["DiskSize"] == s["DiskSize"]
        assert g["SnapshotState"] == "NORMAL" and g["Percent"] == 100
        assert g["SnapshotType"] == "PRIVATE_SNAPSHOT" and g["Encrypt"] is False
        assert g["Images"] == [{"ImageId": normal_image["ImageId"], "ImageName": normal_image["ImageName"]}]
        assert g["SnapshotName"] and g["CreateTime"]
        assert g["Placement"]["ProjectId"] == 0


def test_python_sdk_cbs_filters_and_pages(gate, normal_image):
    system = normal_image["SnapshotSet"][0]["SnapshotId"]
    client = cbs(gate)
    resp = describe_snapshots(client, Filters=[{"Name": "snapshot-id", "Values": [system]},
                                               {"Name": "disk-usage", "Values": ["SYSTEM_DISK"]}])
    assert [s["SnapshotId"] for s in resp["SnapshotSet"]] == [system]
    resp = describe_snapshots(client, Filters=[{"Name": "snapshot-id", "Values": [system]},
                                               {"Name": "disk-usage", "Values": ["DATA_DISK"]}])
    assert resp == {"TotalCount": 0, "SnapshotSet": [], "RequestId": resp["RequestId"]}
    everything = describe_snapshots(client, Limit=100)
    assert everything["TotalCount"] >= 2
    page = describe_snapshots(client, Offset=1, Limit=1)
    assert page["TotalCount"] == everything["TotalCount"]
    assert page["SnapshotSet"] == everything["SnapshotSet"][1:2]
    # Another account sees none of them.
    assert describe_snapshots(cbs(gate, "b"), SnapshotIds=[system])["TotalCount"] == 0


def test_python_sdk_cbs_errors(gate):
    client = cbs(gate)
    cases = [
        ({"SnapshotIds": ["snap-BAD"]}, "InvalidParameterValue"),
        ({"Filters": [{"Name": "snapshot-colour", "Values": ["x"]}]}, "InvalidFilter"),
        ({"Limit": 101}, "InvalidParameterValue"),
        ({"Order": "UP"}, "InvalidParameterValue"),
    ]
    for params, code in cases:
        with pytest.raises(TencentCloudSDKException) as e:
            describe_snapshots(client, **params)
        assert e.value.code == code, (params, e.value)
    assert describe_snapshots(client, SnapshotIds=["snap-00000000"])["TotalCount"] == 0


def tccli_run(gate, product, action, *args, home):
    acc = gate.accounts["a"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENCENTCLOUD_")}
    env["HOME"] = str(home)
    cmd = [TCCLI, product, action, "--region", "ap-guangzhou", "--endpoint", f"http://127.0.0.1:{gate.port}",
           "--secretId", acc.secret_id, "--secretKey", acc.secret_key, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)


def test_tccli_cbs_describe_snapshots(gate, normal_image, tmp_path):
    ids = [s["SnapshotId"] for s in normal_image["SnapshotSet"]]
    p = tccli_run(gate, "cbs", "DescribeSnapshots", "--SnapshotIds", json.dumps(ids), home=tmp_path)
    assert p.returncode == 0, (p.stdout, p.stderr)
    out = json.loads(p.stdout)
    assert sorted(s["SnapshotId"] for s in out["SnapshotSet"]) == sorted(ids)
    p = tccli_run(gate, "cbs", "DescribeSnapshots", "--SnapshotIds", '["snap-BAD"]', home=tmp_path)
    assert p.returncode != 0
    assert re.search(r"code:InvalidParameterValue message:.*snap-BAD", p.stderr), p.stderr


# --------------------------------------------------------------------------- what Terraform's provider sends


def test_terraform_images_data_source_flow(gate, normal_image):
    """tencentcloud_images: DescribeImages by image-type in pages of 100, then for each image
    DescribeSnapshots by its SnapshotSet ids (Offset 0, Limit 100) until a short page."""
    sdk = gate.sdk("a")
    req = models.DescribeImagesRequest()
    req.from_json_string(json.dumps({"Filters": [{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}],
                                     "Offset": 0, "Limit": 100}))
    images = json.loads(sdk.DescribeImages(req).to_json_string())["ImageSet"]
    mine = [i for i in images if i["ImageId"] == normal_image["ImageId"]]
    assert mine, "the NORMAL image is not listed"
    client = cbs(gate)
    for image in images:
        ids = [s["SnapshotId"] for s in image["SnapshotSet"]]
        if not ids:
            continue
        got = describe_snapshots(client, SnapshotIds=ids, Offset=0, Limit=100)["SnapshotSet"]
        # Failed imports have no snapshot; every other image has all of its own.
        expected = set(ids) if image["ImageState"] != "IMPORTFAILED" else set()
        assert {s["SnapshotId"] for s in got} == expected, image
        for s in got:
            assert s["SnapshotName"] and s["DiskUsage"] and s["DiskSize"] >= 1


def test_terraform_clears_the_family_with_an_empty_string(gate, normal_image):
    sdk = gate.sdk("a")
    image_id = normal_image["ImageId"]
    req = models.ModifyImageAttributeRequest()
    req.from_json_string(json.dumps({"ImageId": image_id, "ImageFamily": "tf-family"}))
    sdk.ModifyImageAttribute(req)
    assert describe_one(sdk, image_id)["ImageFamily"] == "tf-family"
    req = models.ModifyImageAttributeRequest()
    req.from_json_string(json.dumps({"ImageId": image_id, "ImageFamily": ""}))
    sdk.ModifyImageAttribute(req)
    assert describe_one(sdk, image_id)["ImageFamily"] == ""
    # A family that is not empty is still checked.
    req.from_json_string(json.dumps({"ImageId": image_id, "ImageFamily": "bad family!"}))
    with pytest.raises(TencentCloudSDKException) as e:
        sdk.ModifyImageAttribute(req)
    assert e.value.code == "InvalidParameterValue.InvalidImageFamily"


@pytest.mark.parametrize("values,code", [
    (["PRIVATE_IMAGE", "MY_IMAGE"], "InvalidFilter"),
    (["private_image"], "InvalidFilter"),
    ([""], "InvalidFilter"),
    (["PUBLIC_IMAGE"], None),
])
def test_image_type_filter_values_are_checked(gate, values, code):
    req = models.DescribeImagesRequest()
    req.from_json_string(json.dumps({"Filters": [{"Name": "image-type", "Values": values}]}))
    if code is None:
        assert gate.sdk("a").DescribeImages(req).TotalCount == 0
        return
    with pytest.raises(TencentCloudSDKException) as e:
        gate.sdk("a").DescribeImages(req)
    assert e.value.code == code
    assert "image-type" in e.value.message


@pytest.mark.parametrize("os_type,os_version,platform", [
    ("CentOS", "7", "CentOS"),
    ("Windows Server 2016", "9", "Windows"),
    ("Ubuntu", "22", "Ubuntu"),
])
def test_platform_is_right_from_the_moment_of_import(gate, os_type, os_version, platform):
    """Terraform reads Platform while the image is IMPORTING: it is the value inspection
    reports (the distribution, or Windows), not the declared OsType."""
    sdk = gate.sdk("a")
    app_id = gate.accounts["a"].app_id
    req = models.ImportImageRequest()
    req.from_json_string(json.dumps({
        "Architecture": "x86_64", "OsType": os_type, "OsVersion": os_version, "ImageName": unique("platform"),
        "ImageUrl": f"https://images-{app_id}.cos.ap-guangzhou.myqcloud.com/missing-{unique()}.qcow2"}))
    image_id = sdk.ImportImage(req).ImageId
    assert describe_one(sdk, image_id)["Platform"] == platform
    deadline = time.monotonic() + 60
    while describe_one(sdk, image_id)["ImageState"] == "IMPORTING" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert describe_one(sdk, image_id)["Platform"] == platform


# --------------------------------------------------------------------------- the CLI: tccli's profiles, --json


def imagegate(*args, home, env=None, timeout=180):
    """`imagegate images …` with this HOME and no TENCENTCLOUD_*/TCCLI_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TENCENTCLOUD_", "TCCLI_"))}
    clean["HOME"] = str(home)
    clean.update(env or {})
    return subprocess.run([bindir_binary(), *args], capture_output=True, text=True, env=clean,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def tccli_configure(home, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENCENTCLOUD_", "TCCLI_"))}
    env["HOME"] = str(home)
    p = subprocess.run([TCCLI, "configure", "set", *args], capture_output=True, text=True, env=env,
                       timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, (args, p.stdout, p.stderr)


@pytest.fixture(scope="module")
def tccli_home(gate, tmp_path_factory):
    """A home whose ~/.tccli was written by the real `tccli configure set`: profile
    `default` with region, key and cvm.endpoint, and profile `second` (key and region only)."""
    home = tmp_path_factory.mktemp("tccli-profiles")
    acc = gate.accounts["a"]
    tccli_configure(home, "secretId", acc.secret_id, "secretKey", acc.secret_key)
    tccli_configure(home, "region", "ap-guangzhou")
    tccli_configure(home, "cvm.endpoint", f"http://127.0.0.1:{gate.port}")
    b = gate.accounts["b"]
    tccli_configure(home, "secretId", b.secret_id, "secretKey", b.secret_key, "--profile", "second")
    tccli_configure(home, "region", "ap-guangzhou", "--profile", "second")
    conf = json.loads((home / ".tccli" / "default.configure").read_text())
    # What made `imagegate images` fail: the product called `region` beside _sys_param.
    assert isinstance(conf["region"], dict) and conf["_sys_param"]["region"] == "ap-guangzhou", conf["region"]
    return home


def test_cli_reads_the_files_tccli_writes(gate, tccli_home):
    p = imagegate("images", "quota", "--json", home=tccli_home)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert json.loads(p.stdout)["ImageNumQuota"] == gate.accounts["a"].quota
    assert p.stderr == ""
    p = imagegate("images", "quota", home=tccli_home)
    assert p.returncode == 0, p.stderr
    assert re.fullmatch(r"\d+ of 500 images used in ap-guangzhou\n", p.stdout), p.stdout
    # A named profile (account b, endpoint from the flag).
    p = imagegate("images", "--profile", "second", "--endpoint", f"http://127.0.0.1:{gate.port}", "quota",
                  "--json", home=tccli_home)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert json.loads(p.stdout)["ImageNumQuota"] == gate.accounts["b"].quota
    p = imagegate("images", "--endpoint", f"http://127.0.0.1:{gate.port}", "quota", "--json", home=tccli_home,
                  env={"TCCLI_PROFILE": "second"})
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert json.loads(p.stdout)["ImageNumQuota"] == gate.accounts["b"].quota


def test_cli_unknown_profile_says_so(tccli_home):
    p = imagegate("images", "--profile", "nope", "list", home=tccli_home)
    assert p.returncode == 2
    assert "profile `nope` does not exist" in p.stderr, p.stderr
    assert "nope.credential" in p.stderr
    assert "no credentials" not in p.stderr


def test_cli_endpoint_without_scheme_is_a_clear_error(gate, tccli_home):
    p = imagegate("images", "--endpoint", f"127.0.0.1:{gate.port}", "list", home=tccli_home)
    assert p.returncode == 2
    assert f"write http://127.0.0.1:{gate.port}" in p.stderr, p.stderr
    assert "InvalidContentType" not in p.stderr


def test_cli_os_and_quota_commands(gate, tccli_home):
    p = imagegate("images", "os", home=tccli_home)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["OS", "TYPE", "OS", "VERSIONS", "ARCHITECTURES"]
    centos = next(line for line in lines if line.startswith("CentOS "))
    assert "7" in centos and "x86_64" in centos
    p = imagegate("images", "os", "--json", home=tccli_home)
    assert "ImportImageOsVersionSet" in json.loads(p.stdout)


def test_cli_json_errors_take_the_api_error_shape(gate, tccli_home):
    p = imagegate("images", "delete", "img-BAD", "--json", home=tccli_home)
    assert p.returncode == 1
    assert p.stderr == ""
    doc = json.loads(p.stdout)
    assert doc["Response"]["Error"]["Code"] == "InvalidImageId.Malformed"
    assert re.fullmatch(r"[0-9a-f-]{36}", doc["Response"]["RequestId"])
    p = imagegate("images", "--json", "list", "--limit", "1", home=tccli_home)
    assert p.returncode == 0
    assert set(json.loads(p.stdout)) == {"TotalCount", "ImageSet"}


def test_cli_import_json_wait_prints_one_document(gate, tccli_home, normal_image):
    app_id = gate.accounts["a"].app_id
    url = f"https://images-{app_id}.cos.ap-guangzhou.myqcloud.com/clients.qcow2"
    p = imagegate("images", "import", "--url", url, "--name", unique("cli-json"), "--os-type", "CentOS",
                  "--os-version", "7", "--json", "--wait", "--interval", "0.2", home=tccli_home)
    assert p.returncode == 0, (p.stdout, p.stderr)
    doc = json.loads(p.stdout)  # the whole of stdout is one JSON document
    assert doc["Image"]["ImageState"] == "NORMAL"
    assert doc["ImportTask"]["TaskState"] == "SUCCEEDED"
    assert p.stderr == ""


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completions(shell, tmp_path):
    p = imagegate("completions", shell, home=tmp_path)
    assert p.returncode == 0, p.stderr
    # fish names a long option `-l os-version`; bash and zsh write `--os-version`.
    option = "-l os-version" if shell == "fish" else "--os-version"
    assert "imagegate" in p.stdout and "images" in p.stdout and option in p.stdout
    if shell == "bash":
        script = tmp_path / "imagegate.bash"
        script.write_text(p.stdout)
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
