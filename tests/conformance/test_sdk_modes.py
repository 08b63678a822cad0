"""The official Python SDK in every mode it has: TC3 / HmacSHA256 / HmacSHA1, POST / GET,
zh-CN (default) / en-US. Each action and a representative error, in each mode."""

import re

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import models

from conftest import describe, do_import, filt, image_by_id, import_request, modifiable_image, unique

MODES = [
    pytest.param(("TC3-HMAC-SHA256", "POST", None), id="tc3-post"),
    pytest.param(("TC3-HMAC-SHA256", "GET", "en-US"), id="tc3-get-en"),
    pytest.param(("HmacSHA256", "POST", None), id="sha256-form"),
    pytest.param(("HmacSHA256", "GET", "en-US"), id="sha256-get-en"),
    pytest.param(("HmacSHA1", "POST", "en-US"), id="sha1-form-en"),
    pytest.param(("HmacSHA1", "GET", None), id="sha1-get"),
]
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(params=MODES)
def client(request, gate):
    sign, method, lang = request.param
    c = gate.sdk("a", sign=sign, method=method, language=lang)
    c.language = lang or "zh-CN"
    return c


def check_message_language(client, e: TencentCloudSDKException):
    if client.language == "en-US":
        assert e.message.isascii(), e.message
    else:
        assert CJK.search(e.message), e.message


def test_describe_import_image_os(client):
    resp = client.DescribeImportImageOs(models.DescribeImportImageOsRequest())
    assert "CentOS" in resp.ImportImageOsListSupported.Linux
    assert re.fullmatch(r"[0-9a-f-]{36}", resp.RequestId)


def test_import_describe_modify_delete_cycle(client, stall):
    name = unique("mode")
    tag = models.Tag()
    tag.Key, tag.Value = "env", "test"
    spec = models.TagSpecification()
    spec.ResourceType, spec.Tags = "image", [tag]
    image_id = do_import(client, ImageName=name, ImageDescription="desc with spaces/+&=",
                         TagSpecification=[spec], Force=True, LicenseType="BYOL",
                         ImageUrl=stall.url("modes.raw"))
    assert re.fullmatch(r"img-[a-z0-9]{8}", image_id)
    img = image_by_id(client, image_id)
    assert img.ImageName == name
    assert img.ImageDescription == "desc with spaces/+&="
    assert img.LicenseType == "BYOL"
    assert [(t.Key, t.Value) for t in img.Tags] == [("env", "test")]

    # Filters flattened through GET and form encodings, with values that need escaping.
    found = describe(client, Filters=[filt("image-name", name), filt("tag:env", "test")])
    assert [i.ImageId for i in found.ImageSet] == [image_id]

    # ModifyImageAttribute through this mode's encoding: a value error, and the
    # state rule (the image is IMPORTING).
    mod = models.ModifyImageAttributeRequest()
    mod.ImageId, mod.ImageName = image_id, "n" * 61
    with pytest.raises(TencentCloudSDKException) as e:
        client.ModifyImageAttribute(mod)
    assert e.value.code == "InvalidParameterValue.TooLarge"
    mod.ImageName, mod.ImageDeprecated = name + "-x", True
    with pytest.raises(TencentCloudSDKException) as e:
        client.ModifyImageAttribute(mod)
    assert e.value.code == "InvalidImageId.IncorrectState"

    # The source never answers, so the image is still IMPORTING: it cannot be deleted,
    # and a DryRun delete reports the same.
    assert img.ImageState == "IMPORTING"
    for dry in (True, False):
        dele = models.DeleteImagesRequest()
        dele.ImageIds, dele.DryRun = [image_id], dry
        with pytest.raises(TencentCloudSDKException) as e:
            client.DeleteImages(dele)
        assert e.value.code == "InvalidImageId.IncorrectState"


def test_import_dry_run_writes_nothing(client):
    name = unique("dry")
    resp = client.ImportImage(import_request(ImageName=name, DryRun=True))
    assert resp.ImageId is None and resp.RequestId
    assert describe(client, Filters=[filt("image-name", name)]).TotalCount == 0


def test_modify_settled_image(client, gate):
    image_id = modifiable_image(gate, "a")
    name = unique("mod")
    mod = models.ModifyImageAttributeRequest()
    mod.ImageId, mod.ImageName, mod.ImageDeprecated, mod.ImageDescription = image_id, name, True, "a b&c=d+e/f"
    mod.ImageFamily = "fam-x"
    client.ModifyImageAttribute(mod)
    img = image_by_id(client, image_id)
    assert (img.ImageName, img.ImageDeprecated, img.ImageDescription, img.ImageFamily) == (
        name, True, "a b&c=d+e/f", "fam-x")


def test_quota(client, gate):
    resp = client.DescribeImageQuota(models.DescribeImageQuotaRequest())
    assert resp.ImageNumQuota == gate.accounts["a"].quota


def test_errors_raise_with_code_message_and_request_id(client):
    with pytest.raises(TencentCloudSDKException) as e:
        client.ImportImage(import_request(OsType="Plan9"))
    assert e.value.code == "InvalidImageOsType.Unsupported"
    assert re.fullmatch(r"[0-9a-f-]{36}", e.value.requestId)
    check_message_language(client, e.value)

    with pytest.raises(TencentCloudSDKException) as e:
        describe(client, ImageIds=["img-12345678"], Filters=[filt("image-type", "PRIVATE_IMAGE")])
    assert e.value.code == "InvalidParameter.InvalidParameterCoexistImageIdsFilters"

    with pytest.raises(TencentCloudSDKException) as e:
        client.ImportImage(import_request(ImageUrl="ftp://example.com/a.qcow2"))
    assert e.value.code == "InvalidParameter.InvalidParameterUrlError"
    check_message_language(client, e.value)


def test_wrong_key_is_signature_failure(gate):
    from tencentcloud.common import credential
    for sign, method in [("TC3-HMAC-SHA256", "POST"), ("HmacSHA256", "GET"), ("HmacSHA1", "POST")]:
        c = gate.sdk("a", sign=sign, method=method)
        c.credential = credential.Credential(gate.accounts["a"].secret_id, "wrong-key")
        with pytest.raises(TencentCloudSDKException) as e:
            c.DescribeImageQuota(models.DescribeImageQuotaRequest())
        assert e.value.code == "AuthFailure.SignatureFailure", (sign, method)


def test_unknown_secret_id_via_sdk(gate):
    from tencentcloud.common import credential
    c = gate.sdk("a")
    c.credential = credential.Credential("AKIDunknown0000000000000000000000", "k")
    with pytest.raises(TencentCloudSDKException) as e:
        c.DescribeImages(models.DescribeImagesRequest())
    assert e.value.code == "AuthFailure.SecretIdNotFound"


def test_unsupported_region_via_sdk(gate):
    c = gate.sdk("a", region="ap-tokyo")
    with pytest.raises(TencentCloudSDKException) as e:
        c.DescribeImages(models.DescribeImagesRequest())
    assert e.value.code == "UnsupportedRegion"


def test_common_client_json(gate):
    """CommonClient.call_json is how users reach actions the typed client lacks."""
    c = gate.common("a")
    r = c.call_json("DescribeImageQuota", {})
    assert r["Response"]["ImageNumQuota"] == gate.accounts["a"].quota
    with pytest.raises(TencentCloudSDKException) as e:
        c.call_json("DescribeImages", {"ImageIds": ["bad id"]})
    assert e.value.code == "InvalidImageId.Malformed"


def test_describe_import_image_tasks_extension(gate, stall):
    c = gate.common("a")
    image_id = do_import(gate.sdk("a"), ImageUrl=stall.url("tasks.raw"), ImageName=unique("task"))
    r = c.call_json("DescribeImportImageTasks", {"ImageIds": [image_id]})["Response"]
    assert image_id in str(r), r
    # Another account cannot see the task.
    try:
        r = gate.common("b").call_json("DescribeImportImageTasks", {"ImageIds": [image_id]})["Response"]
    except TencentCloudSDKException as e:
        assert e.code == "InvalidImageId.NotFound", e.code
    else:
        assert image_id not in str(r)


def test_cancel_import_image_task_extension(gate, stall):
    c = gate.common("a")
    sdk = gate.sdk("a")
    image_id = do_import(sdk, ImageUrl=stall.url("cancel.raw"), ImageName=unique("cancel"))
    c.call_json("CancelImportImageTask", {"ImageId": image_id})
    # Cancellation may be asynchronous, but the image must leave IMPORTING soon.
    import time
    deadline = time.time() + 30
    while time.time() < deadline and image_by_id(sdk, image_id).ImageState == "IMPORTING":
        time.sleep(0.5)
    assert image_by_id(sdk, image_id).ImageState == "IMPORTFAILED"
    with pytest.raises(TencentCloudSDKException) as e:
        gate.common("b").call_json("CancelImportImageTask", {"ImageId": image_id})
    assert e.value.code == "InvalidImageId.NotFound"
