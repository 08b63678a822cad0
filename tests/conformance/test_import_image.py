"""ImportImage: every synchronous rule of reference §4 and §5, through the official SDK."""

import re
from datetime import datetime, timezone

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import models

from conftest import cos_url, describe, do_import, filt, image_by_id, import_request, next_second, unique

A_APPID = 1251233127


def err(client, **kw) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as e:
        client.ImportImage(import_request(**kw))
    return e.value


def url_of(gate, account: str, **kw) -> str:
    return cos_url(gate.accounts[account].app_id, **kw)


def test_success_returns_image_id_and_request_id(gate):
    resp = gate.sdk().ImportImage(import_request())
    assert re.fullmatch(r"img-[a-z0-9]{8}", resp.ImageId), resp.ImageId
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", resp.RequestId)


def test_image_ids_are_distinct(gate):
    sdk = gate.sdk()
    ids = {do_import(sdk) for _ in range(10)}
    assert len(ids) == 10


@pytest.mark.parametrize("arch", ["x86_64", "i386", "arm_64"])
def test_architectures(gate, arch):
    image_id = do_import(gate.sdk(), Architecture=arch)
    assert image_by_id(gate.sdk(), image_id).Architecture == {"arm_64": "arm"}.get(arch, arch)


@pytest.mark.parametrize("arch", ["arm", "aarch64", "x86", "", "X86_64"])
def test_bad_architecture(gate, arch):
    e = err(gate.sdk(), Architecture=arch)
    assert e.code.startswith("InvalidParameter"), e.code


def test_unsupported_os_type(gate):
    assert err(gate.sdk(), OsType="Plan9").code == "InvalidImageOsType.Unsupported"
    assert err(gate.sdk(), OsType="centos-ish").code == "InvalidImageOsType.Unsupported"


def test_unsupported_os_version(gate):
    assert err(gate.sdk(), OsType="CentOS", OsVersion="99").code == "InvalidImageOsVersion.Unsupported"
    # A version valid for another OS is not valid here: CoreOS lists only 7.
    assert err(gate.sdk(), OsType="CoreOS", OsVersion="6").code == "InvalidImageOsVersion.Unsupported"


def test_every_listed_os_version_is_accepted_by_dry_run(gate):
    """DescribeImportImageOs and ImportImage's checks agree (with DryRun, nothing is written)."""
    sdk = gate.sdk()
    listing = sdk.DescribeImportImageOs(models.DescribeImportImageOsRequest())
    checked = 0
    for entry in listing.ImportImageOsVersionSet:
        for version in entry.OsVersions:
            for arch in entry.Architecture:
                sdk.ImportImage(import_request(OsType=entry.OsName, OsVersion=version, Architecture=arch,
                                               DryRun=True))
                checked += 1
    assert checked >= 30


def test_duplicate_name_same_account_and_region(gate):
    sdk = gate.sdk("a")
    name = unique("dup")
    do_import(sdk, ImageName=name)
    next_second()  # the same bytes within the second would be a re-send of the first
    assert err(sdk, ImageName=name).code == "InvalidImageName.Duplicate"
    # DryRun also checks the name.
    assert err(sdk, ImageName=name, DryRun=True).code == "InvalidImageName.Duplicate"


def test_same_name_in_another_account_and_region(gate):
    name = unique("shared-name")
    do_import(gate.sdk("a"), ImageName=name)
    do_import(gate.sdk("b"), ImageName=name, ImageUrl=url_of(gate, "b"))
    do_import(gate.sdk("a", region="ap-beijing"), ImageName=name,
              ImageUrl=cos_url(A_APPID, region="ap-beijing"))
    # Each sees only its own.
    for acc, region in [("a", "ap-guangzhou"), ("b", "ap-guangzhou"), ("a", "ap-beijing")]:
        r = describe(gate.sdk(acc, region=region), Filters=[filt("image-name", name)])
        assert r.TotalCount == 1, (acc, region)


def test_name_length(gate):
    sdk = gate.sdk()
    ok60 = unique("n")
    ok60 = ok60 + "x" * (60 - len(ok60))
    image_id = do_import(sdk, ImageName=ok60)
    assert image_by_id(sdk, image_id).ImageName == ok60
    assert err(sdk, ImageName="y" * 61).code == "InvalidParameterValue.TooLarge"
    # Length is counted in characters, not bytes: 60 CJK characters are fine.
    cjk = "镜" * 55 + unique("")[-5:]
    image_id = do_import(sdk, ImageName=cjk)
    assert image_by_id(sdk, image_id).ImageName == cjk


def test_description_length(gate):
    sdk = gate.sdk()
    image_id = do_import(sdk, ImageDescription="d" * 256)
    assert image_by_id(sdk, image_id).ImageDescription == "d" * 256
    assert err(sdk, ImageDescription="d" * 257).code == "InvalidParameterValue.TooLarge"


def test_missing_parameters(gate):
    sdk = gate.sdk()
    for missing in ["Architecture", "OsType", "OsVersion", "ImageUrl", "ImageName"]:
        e = err(sdk, **{missing: None})
        assert e.code == "MissingParameter", (missing, e.code)
        assert missing in e.message, (missing, e.message)


def test_empty_image_name_is_invalid(gate):
    e = err(gate.sdk(), ImageName="")
    assert e.code in ("MissingParameter", "InvalidParameterValue", "InvalidParameter"), e.code


@pytest.mark.parametrize("url", [
    "not a url",
    "cos://images-1251233127/disk.qcow2",
    "ftp://images-1251233127.cos.ap-guangzhou.myqcloud.com/disk.qcow2",
    "file:///etc/passwd",
    "https://",
    "https://images-1251233127.cos.ap-guangzhou.myqcloud.com",  # no object key
    "http://example.com/disk.qcow2",  # not COS and not an allowed host
    "https://169.254.169.254/latest/meta-data",  # not COS, metadata address
    "https://images-1300000002.cos.ap-guangzhou.myqcloud.com/disk.qcow2",  # account b's bucket
    "http://111-1300000002.cosd.myqcloud.com/disk.vmdk",  # legacy form, account b's bucket
])
def test_bad_urls(gate, url):
    assert err(gate.sdk("a"), ImageUrl=url).code == "InvalidParameter.InvalidParameterUrlError", url


@pytest.mark.parametrize("url", [
    "https://images-1251233127.cos.ap-guangzhou.myqcloud.com/dir/disk.qcow2",
    "http://111-1251233127.cosd.myqcloud.com/Windows%20Server%202008%20R2%20x64a.vmdk",
    "https://user-test-1251233127.cos.ap-guangzhou.myqcloud.com/snap-xxxx.qcow2",
    "http://127.0.0.1:9/allowed-host.raw",  # allow_hosts = ["127.0.0.1"] in the test config
])
def test_good_urls(gate, url):
    gate.sdk("a").ImportImage(import_request(ImageUrl=url, DryRun=True))


def test_data_disk_urls_are_checked_too(gate):
    sdk = gate.sdk("a")
    disk = models.ImportImageDataDisk()
    disk.ImageUrl = "ftp://nope/x.qcow2"
    assert err(sdk, ImportImageDataDiskList=[disk]).code == "InvalidParameter.InvalidParameterUrlError"
    disk.ImageUrl = cos_url(A_APPID, key="data.qcow2")
    image_id = do_import(sdk, ImportImageDataDiskList=[disk])
    assert image_by_id(sdk, image_id).ImageId == image_id


def test_region_without_import_ability(gate):
    e = err(gate.sdk("a", region="ap-shanghai"), ImageUrl=cos_url(A_APPID, region="ap-shanghai"))
    assert e.code == "RegionAbilityLimit.UnsupportedToImportImage"
    # The region is still served for everything else.
    describe(gate.sdk("a", region="ap-shanghai"))


@pytest.mark.parametrize("field,value,code", [
    ("BootMode", "BIOS", "InvalidParameterValue.InvalidBootMode"),
    ("BootMode", "uefi", "InvalidParameterValue.InvalidBootMode"),
    ("LicenseType", "Free", "InvalidParameterValue.InvalidLicenseType"),
    ("LicenseType", "byol", "InvalidParameterValue.InvalidLicenseType"),
    ("ImageFamily", "bad family!", "InvalidParameterValue.InvalidImageFamily"),
    ("ImageFamily", "f" * 200, "InvalidParameterValue.InvalidImageFamily"),
])
def test_enum_values(gate, field, value, code):
    assert err(gate.sdk(), **{field: value}).code == code


@pytest.mark.parametrize("field,value", [
    ("BootMode", "Legacy BIOS"), ("BootMode", "UEFI"), ("LicenseType", "TencentCloud"), ("LicenseType", "BYOL"),
    ("ImageFamily", "business-daily"),
])
def test_enum_values_accepted(gate, field, value):
    sdk = gate.sdk()
    image_id = do_import(sdk, **{field: value})
    img = image_by_id(sdk, image_id)
    if field != "BootMode":  # BootMode is not an Image output field
        assert getattr(img, field) == value


def test_tag_specification_rules(gate):
    sdk = gate.sdk()
    spec = models.TagSpecification()
    spec.ResourceType = "instance"
    tag = models.Tag()
    tag.Key, tag.Value = "k", "v"
    spec.Tags = [tag]
    e = err(sdk, TagSpecification=[spec])
    assert e.code.startswith("InvalidParameter"), e.code
    spec.ResourceType = "image"
    tag.Key = None
    e = err(sdk, TagSpecification=[spec])
    assert e.code in ("MissingParameter", "InvalidParameter", "InvalidParameterValue"), e.code


def test_dry_run_writes_nothing(gate):
    sdk = gate.sdk("dry")  # quota 1: a DryRun that wrote anything would use it up
    name = unique("dry")
    url = url_of(gate, "dry")
    quota_before = describe(sdk).TotalCount
    for _ in range(3):
        resp = sdk.ImportImage(import_request(ImageName=name, ImageUrl=url, DryRun=True))
        assert resp.ImageId is None
    assert describe(sdk).TotalCount == quota_before
    # A failing DryRun reports the error it would have hit.
    assert err(sdk, ImageName=name, ImageUrl=url, DryRun=True, OsType="Plan9").code == \
        "InvalidImageOsType.Unsupported"


def test_quota_exceeded(gate):
    sdk = gate.sdk("small")
    url = url_of(gate, "small")
    quota = gate.accounts["small"].quota
    assert sdk.DescribeImageQuota(models.DescribeImageQuotaRequest()).ImageNumQuota == quota
    have = describe(sdk).TotalCount
    for _ in range(quota - have):
        do_import(sdk, ImageUrl=url)
    assert err(sdk, ImageUrl=url).code == "ImageQuotaLimitExceeded"
    assert err(sdk, ImageUrl=url, DryRun=True).code == "ImageQuotaLimitExceeded"
    # Quota is per account: another account is unaffected.
    do_import(gate.sdk("b"), ImageUrl=url_of(gate, "b"))
    assert describe(sdk).TotalCount == quota


def test_created_fields(gate, stall):
    sdk = gate.sdk("a")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    name = unique("fields")
    tag = models.Tag()
    tag.Key, tag.Value = "team", "storage"
    spec = models.TagSpecification()
    spec.ResourceType, spec.Tags = "image", [tag]
    image_id = do_import(sdk, ImageName=name, ImageDescription="why", OsType="Ubuntu", OsVersion="16",
                         Architecture="arm_64", TagSpecification=[spec], ImageFamily="fam-1",
                         ImageUrl=stall.url("fields.raw"))
    after = datetime.now(timezone.utc)
    img = image_by_id(sdk, image_id)
    assert img.ImageId == image_id
    assert img.ImageName == name and img.ImageDescription == "why"
    assert img.ImageType == "PRIVATE_IMAGE"
    assert img.ImageSource == "EXTERNAL_IMPORT"
    assert img.ImageCreator == gate.accounts["a"].uin
    assert img.Architecture == "arm"
    assert img.Platform == "Ubuntu"
    assert img.LicenseType == "TencentCloud"  # the documented default
    assert img.ImageFamily == "fam-1"
    assert img.ImageDeprecated is False
    assert img.ImageState == "IMPORTING"
    assert [(t.Key, t.Value) for t in img.Tags] == [("team", "storage")]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|\+00:00)", img.CreatedTime), img.CreatedTime
    created = datetime.fromisoformat(img.CreatedTime.replace("Z", "+00:00"))
    assert before <= created <= after, (before, created, after)
