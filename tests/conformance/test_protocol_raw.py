"""Raw HTTP: what the official clients cannot send (reference §1–§3, §7).

Every response, error or not, must be HTTP 200 with `Content-Type: application/json`
exactly and a fresh lower-case UUID RequestId: `check_envelope` asserts that on
every single response of this file.
"""

import json
import re
import time

import pytest

from conftest import cos_url, unique
from tcraw import is_request_id, send_raw

ALL_REQUEST_IDS: set[str] = set()
CJK = re.compile(r"[\u4e00-\u9fff]")


def check_envelope(resp):
    assert resp.status == 200, (resp.status, resp.body[:300])
    cts = [v for k, v in resp.header_list if k == "content-type"]
    assert cts == ["application/json"], cts
    body = resp.json
    assert set(body) == {"Response"}, body
    rid = body["Response"].get("RequestId")
    assert is_request_id(rid), f"RequestId {rid!r} is not a lower-case UUID"
    assert rid not in ALL_REQUEST_IDS, f"RequestId {rid} reused"
    ALL_REQUEST_IDS.add(rid)
    if "Error" in body["Response"]:
        err = body["Response"]["Error"]
        assert set(err) == {"Code", "Message"}, err
        assert err["Code"] and err["Message"]
        assert set(body["Response"]) == {"Error", "RequestId"}, body
    return resp


def expect_error(resp, *codes):
    check_envelope(resp)
    assert resp.error_code in codes, f"expected {codes}, got {resp.error_code}: {resp.error_message}"
    return resp


def expect_ok(resp):
    check_envelope(resp)
    assert resp.error_code is None, f"{resp.error_code}: {resp.error_message}"
    return resp.response


# --------------------------------------------------------------------------- the happy paths, by hand


def test_tc3_post_json_describe(gate):
    r = expect_ok(gate.raw().tc3_post("DescribeImageQuota", {}))
    assert r["ImageNumQuota"] == gate.accounts["a"].quota


def test_tc3_get_query_signed_as_sent(gate):
    r = expect_ok(gate.raw().tc3_get("DescribeImages", {"Limit": 1, "Filters": [{"Name": "image-type",
                                                                                   "Values": ["PRIVATE_IMAGE"]}]}))
    assert "TotalCount" in r


@pytest.mark.parametrize("algo", ["HmacSHA1", "HmacSHA256"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_v1_signatures(gate, algo, method):
    raw = gate.raw()
    send = raw.v1_get if method == "GET" else raw.v1_post
    r = expect_ok(send("DescribeImageQuota", {}, algo=algo))
    assert r["ImageNumQuota"] == gate.accounts["a"].quota


def test_v1_flattened_lists_and_filters(gate):
    sdk = gate.sdk()
    from conftest import do_import
    name = unique("flat")
    image_id = do_import(sdk, ImageName=name)
    r = expect_ok(gate.raw().v1_get("DescribeImages", {"ImageIds": [image_id, "img-00000000"]}))
    assert [i["ImageId"] for i in r["ImageSet"]] == [image_id]
    r = expect_ok(gate.raw().v1_post("DescribeImages", {
        "Filters": [{"Name": "image-name", "Values": ["no-such-name-xyz", name]},
                    {"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}]}))
    assert r["TotalCount"] == 1 and r["ImageSet"][0]["ImageId"] == image_id


def test_tencent_doc_example_get_with_v1_signature(gate):
    """The ImportImage example of Tencent's API page, as written, plus the legacy common parameters."""
    # The suite's accounts are fresh per run, so the example's fixed name "sample" is free.
    query = ("Action=ImportImage&OsType=CentOS&OsVersion=6&ImageName=sample&ImageDescription=sampleimage"
             "&ImageUrl=http://111-1251233127.cosd.myqcloud.com/Windows%20Server%202008%20R2%20x64a.vmdk"
             "&Architecture=x86_64")
    decoded = {
        "Action": "ImportImage", "OsType": "CentOS", "OsVersion": "6", "ImageName": "sample",
        "ImageDescription": "sampleimage",
        "ImageUrl": "http://111-1251233127.cosd.myqcloud.com/Windows Server 2008 R2 x64a.vmdk",
        "Architecture": "x86_64",
    }
    r = expect_ok(gate.raw("a").v1_get_query(query, decoded, algo="HmacSHA256"))
    assert re.fullmatch(r"img-[a-z0-9]{8}", r["ImageId"]), r
    img = gate.sdk("a")
    from conftest import image_by_id
    got = image_by_id(img, r["ImageId"])
    assert got.ImageName == "sample" and got.ImageDescription == "sampleimage"
    # The same example signed with HmacSHA1 now hits the name rule: the request itself was fine.
    r2 = gate.raw("a").v1_get_query(query, decoded, algo="HmacSHA1")
    expect_error(r2, "InvalidImageName.Duplicate")


def test_tccli_host_quirk_host_with_scheme(gate):
    """tccli sends and signs `Host: http://127.0.0.1:PORT`; the server must verify it verbatim."""
    raw = gate.raw()
    r = expect_ok(raw.tc3_post("DescribeImageQuota", {}, host=f"http://127.0.0.1:{gate.port}"))
    assert r["ImageNumQuota"] == gate.accounts["a"].quota
    # Signing the bare host but sending the quirky one must fail: the header is taken as received.
    from tcraw import tc3_signature
    ts = int(time.time())
    body = b"{}"
    sig = tc3_signature(raw.secret_key, method="POST", host=raw.host, content_type="application/json", query="",
                        payload=body, timestamp=ts)
    auth = (f"TC3-HMAC-SHA256 Credential={raw.secret_id}/{time.strftime('%Y-%m-%d', time.gmtime(ts))}/cvm/tc3_request,"
            f" SignedHeaders=content-type;host, Signature={sig}")
    r = raw.tc3_post("DescribeImageQuota", body=body, timestamp=ts, host=f"http://127.0.0.1:{gate.port}",
                     authorization=auth)
    expect_error(r, "AuthFailure.SignatureFailure")


def test_python_true_booleans_in_get_and_form(gate):
    """`True` (Python SDK) and `true` (Go SDK) must both mean true in GET and form requests."""
    sdk = gate.sdk()
    for spelling, send in [("True", "v1_get"), ("true", "v1_post"), ("True", "v1_post"), ("true", "v1_get")]:
        name = unique("bool")
        flat = {"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7", "ImageUrl": cos_url(1251233127),
                "ImageName": name, "DryRun": spelling}
        r = expect_ok(getattr(gate.raw(), send)("ImportImage", flat=flat))
        assert "ImageId" not in r, f"DryRun={spelling} via {send} created an image"
        from conftest import describe, filt
        assert describe(sdk, Filters=[filt("image-name", name)]).TotalCount == 0


def test_unsigned_payload_header(gate):
    """`X-TC-Content-SHA256: UNSIGNED-PAYLOAD` replaces the body hash (reference §2)."""
    raw = gate.raw()
    from tcraw import tc3_signature
    ts = int(time.time())
    body = b"{}"
    sig = tc3_signature(raw.secret_key, method="POST", host=raw.host, content_type="application/json", query="",
                        payload=b"UNSIGNED-PAYLOAD", timestamp=ts)
    date = time.strftime("%Y-%m-%d", time.gmtime(ts))
    auth = (f"TC3-HMAC-SHA256 Credential={raw.secret_id}/{date}/cvm/tc3_request, SignedHeaders=content-type;host, "
            f"Signature={sig}")
    r = raw.tc3_post("DescribeImageQuota", body=body, timestamp=ts, authorization=auth,
                     extra_headers=[("X-TC-Content-SHA256", "UNSIGNED-PAYLOAD")])
    assert expect_ok(r)["ImageNumQuota"] == gate.accounts["a"].quota


def test_null_treated_as_absent(gate):
    r = expect_ok(gate.raw().tc3_post("DescribeImages", {"ImageIds": None, "Filters": None, "Limit": 1}))
    assert "TotalCount" in r


# --------------------------------------------------------------------------- malformed bodies and parameters


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"Limit": 1,}', b"\xff\xfe{}"])
def test_bad_json(gate, body):
    expect_error(gate.raw().tc3_post("DescribeImages", body=body), "InvalidParameter")


@pytest.mark.parametrize("body", [b"[]", b"1", b'"x"', b"null"])
def test_json_not_an_object(gate, body):
    expect_error(gate.raw().tc3_post("DescribeImages", body=body), "InvalidParameter")


@pytest.mark.parametrize("params", [
    {"ImageIds": "img-12345678"},  # string for a list
    {"Limit": 1.5},  # float Limit
    {"Limit": "ten"},
    {"Offset": [1]},
    {"Filters": [{"Name": "image-id", "Values": "img-12345678"}]},
    {"Filters": {"Name": "image-id"}},
])
def test_wrong_types(gate, params):
    expect_error(gate.raw().tc3_post("DescribeImages", params), "InvalidParameter")


def test_wrong_type_in_import_image(gate):
    params = {"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7", "ImageUrl": cos_url(1251233127),
              "ImageName": unique(), "DryRun": "maybe"}
    expect_error(gate.raw().tc3_post("ImportImage", params), "InvalidParameter")
    params["DryRun"] = False
    params["ImageName"] = 12
    expect_error(gate.raw().tc3_post("ImportImage", params), "InvalidParameter")


def test_unknown_parameter(gate):
    r = expect_error(gate.raw().tc3_post("DescribeImages", {"Limit": 1, "NoSuchThing": 1}), "UnknownParameter")
    assert "NoSuchThing" in r.error_message
    expect_error(gate.raw().v1_get("DescribeImageQuota", flat={"Bogus": "1"}), "UnknownParameter")


def test_missing_required_parameter(gate):
    r = expect_error(gate.raw().tc3_post("DeleteImages", {}), "MissingParameter")
    assert "ImageIds" in r.error_message
    r = expect_error(gate.raw().tc3_post("ModifyImageAttribute", {"ImageName": "x"}), "MissingParameter")
    assert "ImageId" in r.error_message


# --------------------------------------------------------------------------- routing errors


def test_missing_action(gate):
    expect_error(gate.raw().tc3_post(None, {}), "MissingParameter")


def test_unknown_action(gate):
    expect_error(gate.raw().tc3_post("RunInstances", {}), "InvalidAction")
    expect_error(gate.raw().tc3_post("NoSuchAction", {}), "InvalidAction")
    expect_error(gate.raw().v1_get("NoSuchAction", {}), "InvalidAction")


def test_wrong_version(gate):
    expect_error(gate.raw().tc3_post("DescribeImages", {}, version="2099-01-01"), "NoSuchVersion")
    expect_error(gate.raw().tc3_post("DescribeImages", {}, version=None), "MissingParameter", "NoSuchVersion")


def test_unsupported_region(gate):
    expect_error(gate.raw().tc3_post("DescribeImages", {}, region="eu-frankfurt"), "UnsupportedRegion")
    expect_error(gate.raw(region="na-ashburn").v1_get("DescribeImages", {}), "UnsupportedRegion")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_unsupported(gate, method):
    expect_error(gate.raw().tc3_post("DescribeImages", {}, method=method), "UnsupportedProtocol")


def test_huge_body(gate):
    body = json.dumps({"ImageIds": ["img-12345678"], "Pad": "x" * (10 * 1024 * 1024 + 10)}).encode()
    expect_error(gate.raw().tc3_post("DescribeImages", body=body), "RequestSizeLimitExceeded")


def test_huge_declared_length_is_refused_without_the_body(gate):
    """A Content-Length of 1 GiB must be refused from the header, not after buffering."""
    raw = gate.raw()
    resp = raw.tc3_post("DescribeImages", body=b"{}", content_length=1 << 30)
    expect_error(resp, "RequestSizeLimitExceeded")


def test_query_over_32k(gate):
    raw = gate.raw()
    flat = {f"ImageIds.{i}": f"img-{i:08d}" for i in range(1500)}  # ~ 40 KB of query
    expect_error(raw.v1_get("DescribeImages", flat=flat), "RequestSizeLimitExceeded")


def test_v1_form_post_over_1mb(gate):
    flat = {"ImageName": "x" * (1024 * 1024 + 100), "ImageId": "img-12345678"}
    r = gate.raw().v1_post("ModifyImageAttribute", flat=flat)
    # Tencent answers an oversized v1 request with a size error (or SignatureFailure, see reference §2).
    expect_error(r, "RequestSizeLimitExceeded", "AuthFailure.SignatureFailure")


# --------------------------------------------------------------------------- authentication


def test_missing_authorization(gate):
    # Reference §2: InvalidAuthorization is the code for a missing or malformed Authorization.
    expect_error(gate.raw().tc3_post("DescribeImages", {}, authorization=None), "AuthFailure.InvalidAuthorization")


@pytest.mark.parametrize("auth", [
    "garbage",
    "TC3-HMAC-SHA256",
    "TC3-HMAC-SHA256 Credential=AKIDxx, SignedHeaders=content-type;host, Signature=00",
    "HMAC-SHA1 Credential=AKIDxx/2020-01-01/cvm/tc3_request, SignedHeaders=content-type;host, Signature=00",
    "TC3-HMAC-SHA256 Credential={sid}/{date}/cvm/tc3_request, SignedHeaders=host, Signature={zero}",
])
def test_malformed_authorization(gate, auth):
    raw = gate.raw()
    auth = auth.format(sid=raw.secret_id, date=time.strftime("%Y-%m-%d", time.gmtime()), zero="0" * 64)
    expect_error(raw.tc3_post("DescribeImages", {}, authorization=auth), "AuthFailure.InvalidAuthorization")


def test_wrong_credential_date(gate):
    # Correctly signed with a key derived from the wrong date: the scope must match the timestamp's UTC date.
    expect_error(gate.raw().tc3_post("DescribeImages", {}, date="2019-02-25"), "AuthFailure.SignatureFailure",
                 "AuthFailure.InvalidAuthorization")


def test_wrong_service(gate):
    # cvm, cbs and the Host's first label are the scopes served (test_clients.py).
    expect_error(gate.raw().tc3_post("DescribeImages", {}, service="cos"), "AuthFailure.InvalidAuthorization")


def test_signature_off_by_one_byte(gate):
    expect_error(gate.raw().tc3_post("DescribeImages", {}, tamper_signature=True), "AuthFailure.SignatureFailure")


def test_body_changed_after_signing(gate):
    raw = gate.raw()
    from tcraw import tc3_signature
    ts = int(time.time())
    sig = tc3_signature(raw.secret_key, method="POST", host=raw.host, content_type="application/json", query="",
                        payload=b'{"Limit": 1}', timestamp=ts)
    date = time.strftime("%Y-%m-%d", time.gmtime(ts))
    auth = f"TC3-HMAC-SHA256 Credential={raw.secret_id}/{date}/cvm/tc3_request, SignedHeaders=content-type;host, Signature={sig}"
    expect_error(raw.tc3_post("DescribeImages", body=b'{"Limit": 2}', timestamp=ts, authorization=auth),
                 "AuthFailure.SignatureFailure")


def test_wrong_secret_key(gate):
    expect_error(gate.raw().tc3_post("DescribeImages", {}, secret_key="not-the-key"), "AuthFailure.SignatureFailure")
    expect_error(gate.raw().v1_get("DescribeImages", {}, secret_key="not-the-key"), "AuthFailure.SignatureFailure")


@pytest.mark.parametrize("skew", [-301 - 60, 301 + 60, -3600 * 24])
def test_replayed_or_future_timestamp(gate, skew):
    ts = int(time.time()) + skew
    expect_error(gate.raw().tc3_post("DescribeImages", {}, timestamp=ts), "AuthFailure.SignatureExpire")
    expect_error(gate.raw().v1_get("DescribeImages", {}, timestamp=ts), "AuthFailure.SignatureExpire")


@pytest.mark.parametrize("skew", [-240, 240])
def test_timestamp_within_tolerance(gate, skew):
    ts = int(time.time()) + skew
    expect_ok(gate.raw().tc3_post("DescribeImageQuota", {}, timestamp=ts))
    expect_ok(gate.raw().v1_get("DescribeImageQuota", {}, timestamp=ts))


def test_unknown_secret_id(gate):
    expect_error(gate.raw().tc3_post("DescribeImages", {}, secret_id="AKIDnosuchkey000000000000000000000"),
                 "AuthFailure.SecretIdNotFound")
    expect_error(gate.raw().v1_post("DescribeImages", {}, secret_id="AKIDnosuchkey000000000000000000000"),
                 "AuthFailure.SecretIdNotFound")


# --------------------------------------------------------------------------- isolation


def test_another_accounts_image_is_not_found(gate):
    from conftest import do_import
    image_id = do_import(gate.sdk("a"), ImageName=unique("mine"))
    b = gate.raw("b")
    r = expect_ok(b.tc3_post("DescribeImages", {"ImageIds": [image_id]}))
    assert r["TotalCount"] == 0 and r["ImageSet"] == []
    expect_error(b.tc3_post("DeleteImages", {"ImageIds": [image_id]}), "InvalidImageId.NotFound")
    expect_error(b.tc3_post("ModifyImageAttribute", {"ImageId": image_id, "ImageName": "stolen"}),
                 "InvalidImageId.NotFound")
    # And it is untouched.
    r = expect_ok(gate.raw("a").tc3_post("DescribeImages", {"ImageIds": [image_id]}))
    assert r["ImageSet"][0]["ImageName"] != "stolen"


# --------------------------------------------------------------------------- language and envelope


def test_language_en_and_zh(gate):
    raw = gate.raw()
    en = expect_error(raw.tc3_post("DescribeImages", {}, tamper_signature=True, language="en-US"),
                      "AuthFailure.SignatureFailure")
    zh = expect_error(raw.tc3_post("DescribeImages", {}, tamper_signature=True, language="zh-CN"),
                      "AuthFailure.SignatureFailure")
    default = expect_error(raw.tc3_post("DescribeImages", {}, tamper_signature=True),
                           "AuthFailure.SignatureFailure")
    assert not CJK.search(en.error_message) and en.error_message.isascii(), en.error_message
    assert CJK.search(zh.error_message), zh.error_message
    assert default.error_message == zh.error_message  # both SDKs default to zh-CN
    en2 = expect_error(raw.tc3_post("DescribeImages", {"Bogus": 1}, language="en-US"), "UnknownParameter")
    zh2 = expect_error(raw.tc3_post("DescribeImages", {"Bogus": 1}, language="zh-CN"), "UnknownParameter")
    assert en2.error_message.isascii() and CJK.search(zh2.error_message)
    v1en = expect_error(raw.v1_get("NoSuchAction", {}, language="en-US"), "InvalidAction")
    v1zh = expect_error(raw.v1_get("NoSuchAction", {}, language="zh-CN"), "InvalidAction")
    assert v1en.error_message.isascii() and CJK.search(v1zh.error_message)


def test_request_ids_are_fresh_uuids(gate):
    raw = gate.raw()
    ids = []
    for _ in range(5):
        ids.append(expect_ok(raw.tc3_post("DescribeImageQuota", {}))["RequestId"])
        ids.append(expect_error(raw.tc3_post("NoSuchAction", {}), "InvalidAction").response["RequestId"])
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", i) for i in ids)


def test_non_root_path_and_garbage_still_json(gate):
    """Whatever reaches the server gets the envelope (a bare GET without any parameter included)."""
    r = send_raw(gate.raw().addr, "GET", "/", [("Host", gate.raw().host)])
    check_envelope(r)
    assert r.error_code is not None
