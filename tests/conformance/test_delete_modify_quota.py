"""DeleteImages, DescribeImageQuota, ModifyImageAttribute (reference §4)."""

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import models

from conftest import cos_url, describe, do_import, image_by_id, modifiable_image, next_second, settled_image, unique

def delete(client, ids, **kw):
    req = models.DeleteImagesRequest()
    req.ImageIds = ids
    for k, v in kw.items():
        setattr(req, k, v)
    return client.DeleteImages(req)


def delete_err(client, ids, **kw) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as e:
        delete(client, ids, **kw)
    return e.value


def modify(client, image_id, **kw):
    req = models.ModifyImageAttributeRequest()
    req.ImageId = image_id
    for k, v in kw.items():
        setattr(req, k, v)
    return client.ModifyImageAttribute(req)


def modify_err(client, image_id, **kw) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as e:
        modify(client, image_id, **kw)
    return e.value


# --------------------------------------------------------------------------- DeleteImages


def test_delete_not_found(gate):
    assert delete_err(gate.sdk(), ["img-zzzzzzzz"]).code == "InvalidImageId.NotFound"


@pytest.mark.parametrize("bad", ["nope", "img-", "img-ABCDEFGH", "img-1234567$", "ins-12345678"])
def test_delete_malformed(gate, bad):
    assert delete_err(gate.sdk(), [bad]).code == "InvalidImageId.Malformed"


def test_delete_importing_is_incorrect_state(gate, stall):
    sdk = gate.sdk()
    image_id = do_import(sdk, ImageUrl=stall.url("del.raw"))
    assert image_by_id(sdk, image_id).ImageState == "IMPORTING"
    next_second()
    assert delete_err(sdk, [image_id]).code == "InvalidImageId.IncorrectState"
    assert delete_err(sdk, [image_id], DryRun=True).code == "InvalidImageId.IncorrectState"
    assert image_by_id(sdk, image_id).ImageState == "IMPORTING"


def test_delete_is_all_or_nothing(gate, stall):
    """One bad id in the list fails the request and deletes nothing."""
    sdk = gate.sdk()
    importing = do_import(sdk, ImageUrl=stall.url("atomic.raw"))
    assert delete_err(sdk, [importing, "img-zzzzzzzz"]).code in ("InvalidImageId.NotFound",
                                                                  "InvalidImageId.IncorrectState")
    image_by_id(sdk, importing)


def test_delete_dry_run_and_success(gate):
    sdk = gate.sdk("a")
    image_id = settled_image(gate, "a")
    resp = delete(sdk, [image_id], DryRun=True, DeleteBindedSnap=True)
    assert resp.RequestId
    image_by_id(sdk, image_id)  # still there
    next_second()
    delete(sdk, [image_id])
    assert describe(sdk, ImageIds=[image_id]).TotalCount == 0
    next_second()
    assert delete_err(sdk, [image_id]).code == "InvalidImageId.NotFound"
    # No stored data is left behind (local blob store: <data_dir>/images/<ImageId>.qcow2).
    leftovers = [p for p in (gate.workdir / "data").rglob(f"*{image_id}*")]
    if gate.backend.s3:
        leftovers += [k for k in gate.backend.keys() + gate.backend.uploads() if image_id in k]
    assert leftovers == [], leftovers


def test_delete_frees_quota_and_name(gate):
    sdk = gate.sdk("tiny")
    url = cos_url(gate.accounts["tiny"].app_id)
    assert describe(sdk).TotalCount == 0  # quota 1, and no other test keeps an image here
    image_id = settled_image(gate, "tiny")
    name = image_by_id(sdk, image_id).ImageName
    with pytest.raises(TencentCloudSDKException) as e:
        do_import(sdk, ImageUrl=url)
    assert e.value.code == "ImageQuotaLimitExceeded"
    next_second()
    delete(sdk, [image_id])
    do_import(sdk, ImageUrl=url, ImageName=name)  # quota and name are free again


def test_delete_missing_ids(gate):
    with pytest.raises(TencentCloudSDKException) as e:
        gate.sdk().DeleteImages(models.DeleteImagesRequest())
    assert e.value.code == "MissingParameter"


# --------------------------------------------------------------------------- DescribeImageQuota


@pytest.mark.parametrize("account", ["a", "small", "tiny"])
def test_quota_per_account(gate, account):
    r = gate.sdk(account).DescribeImageQuota(models.DescribeImageQuotaRequest())
    assert r.ImageNumQuota == gate.accounts[account].quota


# --------------------------------------------------------------------------- ModifyImageAttribute


def test_modify_rename_and_describe(gate):
    sdk = gate.sdk()
    image_id = modifiable_image(gate)
    new = unique("renamed")
    modify(sdk, image_id, ImageName=new, ImageDescription="new description")
    img = image_by_id(sdk, image_id)
    assert img.ImageName == new and img.ImageDescription == "new description"
    # A field left out is left alone.
    modify(sdk, image_id, ImageDescription="only this")
    img = image_by_id(sdk, image_id)
    assert img.ImageName == new and img.ImageDescription == "only this"


def test_modify_duplicate_name(gate):
    sdk = gate.sdk()
    first = unique("first")
    do_import(sdk, ImageName=first)
    other = modifiable_image(gate)
    assert modify_err(sdk, other, ImageName=first).code == "InvalidImageName.Duplicate"
    # The old name of a renamed image is free for an import.
    mine = unique("mine")
    image_id = modifiable_image(gate, ImageName=mine)
    modify(sdk, image_id, ImageName=unique("moved"))
    do_import(sdk, ImageName=mine)
    # Renaming an image to its own name is no conflict.
    modify(sdk, other, ImageName=image_by_id(sdk, other).ImageName)


def test_modify_value_errors(gate, stall):
    """Parameter values are checked before anything else, whatever the image's state."""
    sdk = gate.sdk()
    image_id = do_import(sdk, ImageUrl=stall.url("modify-values.raw"))
    assert modify_err(sdk, image_id, ImageName="n" * 61).code == "InvalidParameterValue.TooLarge"
    assert modify_err(sdk, image_id, ImageDescription="d" * 257).code == "InvalidParameterValue.TooLarge"
    assert modify_err(sdk, image_id, ImageFamily="bad family!").code == "InvalidParameterValue.InvalidImageFamily"


def test_modify_importing_image(gate, stall):
    """An IMPORTING image cannot be modified (the server's reading of the documented
    InvalidImageId.IncorrectState); the attempt changes nothing."""
    sdk = gate.sdk()
    name = unique("busy")
    image_id = do_import(sdk, ImageUrl=stall.url("modify-busy.raw"), ImageName=name)
    assert modify_err(sdk, image_id, ImageName=unique("x")).code == "InvalidImageId.IncorrectState"
    assert image_by_id(sdk, image_id).ImageName == name


def test_modify_lengths(gate):
    sdk = gate.sdk()
    image_id = modifiable_image(gate)
    name60 = unique("len")
    name60 += "z" * (60 - len(name60))
    modify(sdk, image_id, ImageName=name60, ImageDescription="d" * 256)
    img = image_by_id(sdk, image_id)
    assert img.ImageName == name60 and img.ImageDescription == "d" * 256


def test_modify_family_and_deprecated(gate):
    sdk = gate.sdk()
    image_id = modifiable_image(gate)
    modify(sdk, image_id, ImageFamily="web-servers")
    assert image_by_id(sdk, image_id).ImageFamily == "web-servers"
    assert modify_err(sdk, image_id, ImageFamily="bad family!").code == "InvalidParameterValue.InvalidImageFamily"
    assert image_by_id(sdk, image_id).ImageFamily == "web-servers"
    modify(sdk, image_id, ImageDeprecated=True)
    assert image_by_id(sdk, image_id).ImageDeprecated is True
    modify(sdk, image_id, ImageDeprecated=False)
    assert image_by_id(sdk, image_id).ImageDeprecated is False


def test_modify_not_found_and_malformed(gate):
    sdk = gate.sdk()
    assert modify_err(sdk, "img-zzzzzzzz", ImageName="x").code == "InvalidImageId.NotFound"
    assert modify_err(sdk, "bogus", ImageName="x").code == "InvalidImageId.Malformed"


def test_modify_other_account(gate):
    image_id = do_import(gate.sdk("a"))
    assert modify_err(gate.sdk("b"), image_id, ImageName="x").code == "InvalidImageId.NotFound"
    assert delete_err(gate.sdk("b"), [image_id]).code == "InvalidImageId.NotFound"
