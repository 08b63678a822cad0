"""DescribeImportImageOs and DescribeImages (reference §4, §6)."""

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import models

from conftest import cos_url, describe, do_import, filt, unique


def derr(client, **kw) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as e:
        describe(client, **kw)
    return e.value


# --------------------------------------------------------------------------- DescribeImportImageOs


def test_import_os_list(gate):
    r = gate.sdk().DescribeImportImageOs(models.DescribeImportImageOsRequest())
    linux = r.ImportImageOsListSupported.Linux
    windows = r.ImportImageOsListSupported.Windows
    for name in ["CentOS", "Ubuntu", "Debian", "OpenSUSE", "SUSE", "CoreOS", "FreeBSD", "Other Linux", "Redhat"]:
        assert name in linux, name
    for name in ["Windows Server 2008", "Windows Server 2012", "Windows Server 2016"]:
        assert name in windows, name
    assert not set(linux) & set(windows)
    by_name = {e.OsName: e for e in r.ImportImageOsVersionSet}
    # Every listed OS has versions and architectures, and every entry is listed.
    assert set(by_name) == set(linux) | set(windows)
    for e in r.ImportImageOsVersionSet:
        assert e.OsVersions and e.Architecture, e.OsName
        assert set(e.Architecture) <= {"x86_64", "i386", "arm_64"}, e.Architecture
    for version in ["5", "6", "7"]:
        assert version in by_name["CentOS"].OsVersions
        assert version in by_name["Redhat"].OsVersions
    for version in ["6", "7", "8", "9"]:
        assert version in by_name["Debian"].OsVersions
    assert "x86_64" in by_name["CentOS"].Architecture and "i386" in by_name["CentOS"].Architecture


def test_import_os_list_same_for_everyone(gate):
    a = gate.sdk("a").DescribeImportImageOs(models.DescribeImportImageOsRequest())
    b = gate.sdk("b", sign="HmacSHA1", method="GET").DescribeImportImageOs(models.DescribeImportImageOsRequest())
    assert a.ImportImageOsListSupported.Linux == b.ImportImageOsListSupported.Linux
    assert [e.OsName for e in a.ImportImageOsVersionSet] == [e.OsName for e in b.ImportImageOsVersionSet]
    assert a.RequestId != b.RequestId


# --------------------------------------------------------------------------- DescribeImages: the catalog under test


@pytest.fixture(scope="module")
def catalog(gate):
    """Account `b` gets a small, known set of images in ap-guangzhou."""
    sdk = gate.sdk("b")
    url = cos_url(gate.accounts["b"].app_id)
    run = unique("cat")

    def tagspec(**tags):
        out = []
        for k, v in tags.items():
            t = models.Tag()
            t.Key, t.Value = k, v
            out.append(t)
        s = models.TagSpecification()
        s.ResourceType, s.Tags = "image", out
        return [s]

    made = {}
    made["centos"] = do_import(sdk, ImageName=f"{run}-centos-web", OsType="CentOS", OsVersion="7", ImageUrl=url,
                               TagSpecification=tagspec(env="prod", team="web"))
    made["ubuntu"] = do_import(sdk, ImageName=f"{run}-ubuntu-db", OsType="Ubuntu", OsVersion="16", ImageUrl=url,
                               TagSpecification=tagspec(env="dev", team="db"))
    made["debian"] = do_import(sdk, ImageName=f"{run}-debian-web", OsType="Debian", OsVersion="9", ImageUrl=url,
                               TagSpecification=tagspec(env="prod"))
    made["win"] = do_import(sdk, ImageName=f"{run}-win", OsType="Windows Server 2016", OsVersion="9",
                            ImageUrl=url)
    return run, made


def ids(resp):
    return sorted(i.ImageId for i in resp.ImageSet)


def test_by_image_ids(gate, catalog):
    _, made = catalog
    sdk = gate.sdk("b")
    r = describe(sdk, ImageIds=[made["centos"], made["win"], "img-zzzzzzzz"])
    assert ids(r) == sorted([made["centos"], made["win"]])
    assert r.TotalCount == 2


def test_ids_and_filters_are_exclusive(gate, catalog):
    e = derr(gate.sdk("b"), ImageIds=[catalog[1]["win"]], Filters=[filt("image-type", "PRIVATE_IMAGE")])
    assert e.code == "InvalidParameter.InvalidParameterCoexistImageIdsFilters"


def test_malformed_image_id(gate):
    assert derr(gate.sdk(), ImageIds=["not-an-id"]).code == "InvalidImageId.Malformed"
    assert derr(gate.sdk(), ImageIds=["img-UPPER123"]).code == "InvalidImageId.Malformed"


def test_filter_image_id(gate, catalog):
    _, made = catalog
    r = describe(gate.sdk("b"), Filters=[filt("image-id", made["ubuntu"], made["debian"])])
    assert ids(r) == sorted([made["ubuntu"], made["debian"]])


def test_filter_image_type(gate, catalog):
    run, made = catalog
    sdk = gate.sdk("b")
    r = describe(sdk, Filters=[filt("image-type", "PRIVATE_IMAGE"), filt("image-name", run)])
    assert ids(r) == sorted(made.values())
    r = describe(sdk, Filters=[filt("image-type", "PUBLIC_IMAGE", "SHARED_IMAGE"), filt("image-name", run)])
    assert r.TotalCount == 0


def test_filter_image_name_is_fuzzy(gate, catalog):
    run, made = catalog
    r = describe(gate.sdk("b"), Filters=[filt("image-name", f"{run}-")])
    assert ids(r) == sorted(made.values())
    r = describe(gate.sdk("b"), Filters=[filt("image-name", "-web")])
    assert set(ids(r)) >= {made["centos"], made["debian"]} and made["ubuntu"] not in ids(r)


def test_filter_platform(gate, catalog):
    run, made = catalog
    r = describe(gate.sdk("b"), Filters=[filt("platform", "CentOS"), filt("image-name", run)])
    assert ids(r) == [made["centos"]]
    r = describe(gate.sdk("b"), Filters=[filt("platform", "Windows"), filt("image-name", run)])
    assert ids(r) == [made["win"]]


def test_filter_tags(gate, catalog):
    run, made = catalog
    sdk = gate.sdk("b")
    name = filt("image-name", run)
    assert ids(describe(sdk, Filters=[filt("tag-key", "team"), name])) == sorted([made["centos"], made["ubuntu"]])
    assert ids(describe(sdk, Filters=[filt("tag-value", "prod"), name])) == sorted([made["centos"], made["debian"]])
    assert ids(describe(sdk, Filters=[filt("tag:env", "dev"), name])) == [made["ubuntu"]]
    assert ids(describe(sdk, Filters=[filt("tag:env", "prod", "dev"), name])) == sorted(
        [made["centos"], made["debian"], made["ubuntu"]])
    assert describe(sdk, Filters=[filt("tag:nope", "prod"), name]).TotalCount == 0


def test_filters_and_between_or_within(gate, catalog):
    run, made = catalog
    sdk = gate.sdk("b")
    # OR within one filter's values
    r = describe(sdk, Filters=[filt("platform", "CentOS", "Ubuntu"), filt("image-name", run)])
    assert ids(r) == sorted([made["centos"], made["ubuntu"]])
    # AND between filters
    r = describe(sdk, Filters=[filt("tag:env", "prod"), filt("image-name", "-web"), filt("platform", "Debian"),
                               filt("image-name", run)])
    assert ids(r) == [made["debian"]]
    r = describe(sdk, Filters=[filt("tag:env", "dev"), filt("platform", "CentOS"), filt("image-name", run)])
    assert r.TotalCount == 0


def test_filter_limits(gate, catalog):
    run, _ = catalog
    sdk = gate.sdk("b")
    ten = [filt("image-name", run)] * 10
    describe(sdk, Filters=ten)
    e = derr(sdk, Filters=ten + [filt("image-name", run)])
    assert e.code in ("InvalidFilter", "InvalidParameterValue.LimitExceeded"), e.code
    describe(sdk, Filters=[filt("image-name", *[f"v{i}" for i in range(5)])])
    e = derr(sdk, Filters=[filt("image-name", *[f"v{i}" for i in range(6)])])
    assert e.code == "InvalidFilterValue.LimitExceeded"


def test_unknown_filter(gate):
    assert derr(gate.sdk(), Filters=[filt("image-colour", "blue")]).code == "InvalidFilter"
    assert derr(gate.sdk(), Filters=[filt("image-state", "NORMAL")]).code == "InvalidFilter"


def test_describe_other_account_and_region_isolated(gate, catalog):
    run, _ = catalog
    assert describe(gate.sdk("a"), Filters=[filt("image-name", run)]).TotalCount == 0
    assert describe(gate.sdk("b", region="ap-beijing"), Filters=[filt("image-name", run)]).TotalCount == 0


@pytest.fixture(scope="module")
def many(gate):
    """Account `lister` with 25 images."""
    sdk = gate.sdk("lister")
    url = cos_url(gate.accounts["lister"].app_id)
    have = describe(sdk).TotalCount
    for i in range(have, 25):
        do_import(sdk, ImageUrl=url, ImageName=f"page-{i:02d}")
    return sdk


def test_offset_limit_defaults(many):
    r = describe(many)
    assert r.TotalCount == 25
    assert len(r.ImageSet) == 20  # default Limit


def test_limit_max_and_bounds(many):
    r = describe(many, Limit=100)
    assert len(r.ImageSet) == 25 and r.TotalCount == 25
    for bad in [{"Limit": 101}, {"Limit": -1}, {"Offset": -1}]:
        e = derr(many, **bad)
        assert e.code.startswith("InvalidParameterValue"), (bad, e.code)


def test_pagination_is_stable_and_complete(many):
    full = [i.ImageId for i in describe(many, Limit=100).ImageSet]
    assert len(set(full)) == 25
    pages = []
    for off in range(0, 25, 7):
        r = describe(many, Offset=off, Limit=7)
        assert r.TotalCount == 25
        pages += [i.ImageId for i in r.ImageSet]
    assert pages == full
    assert describe(many, Offset=25).ImageSet == []
    assert describe(many, Offset=1000, Limit=5).TotalCount == 25


def test_limit_zero(many):
    """Limit 0 is not forbidden by the model; either an empty page with the count, or an error."""
    try:
        r = describe(many, Limit=0)
    except TencentCloudSDKException as e:
        assert e.code.startswith("InvalidParameterValue")
    else:
        assert r.ImageSet == [] and r.TotalCount == 25
