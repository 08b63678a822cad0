//! Every error code the crate raises, or offers to the service, with the
//! request that provokes it and a message that names the culprit in both
//! languages.

mod common;

use common::*;
use tcapi::*;

/// Decode → verify → decode_action error of a request.
fn err(r: &Req) -> ApiError {
    r.run().expect_err("request should fail")
}

fn assert_bilingual(e: &ApiError, code: &str, en_needle: &str) {
    assert_eq!(e.code, code, "{e}");
    assert!(
        e.message_en.contains(en_needle),
        "`{}` lacks `{en_needle}`",
        e.message_en
    );
    assert!(!e.message_zh.is_empty() && e.message_zh != e.message_en);
    assert!(
        e.message_zh.chars().any(|c| c as u32 > 0x2E80),
        "{}",
        e.message_zh
    );
}

#[test]
fn auth_failure_signature_failure() {
    let r = tc3_json("DescribeImageQuota", "{}");
    let e = r.run_at("wrong-key", TS).unwrap_err();
    assert_eq!(e, ApiError::signature_failure());
    assert_eq!(
        e.message(Language::EnUs),
        "The provided credentials could not be validated. Please check your signature is correct."
    );
    assert_eq!(
        e.message(Language::ZhCn),
        "请求签名验证失败，请检查您的签名计算是否正确。"
    );
    let p = v1_params("DescribeImageQuota", SignatureMethod::HmacSha1, &[]);
    let mut r = v1(false, SignatureMethod::HmacSha1, p);
    r.query = r.query.replace("Nonce=4242", "Nonce=4243");
    assert_eq!(err(&r), ApiError::signature_failure());
    // A v1 signature that is not even base64.
    let mut r = v1(
        false,
        SignatureMethod::HmacSha1,
        v1_params("DescribeImageQuota", SignatureMethod::HmacSha1, &[]),
    );
    let at = r.query.find("Signature=").unwrap();
    r.query.truncate(at);
    r.query.push_str("Signature=%21%21");
    assert_bilingual(&err(&r), "AuthFailure.SignatureFailure", "base64");
}

#[test]
fn auth_failure_signature_expire() {
    let r = tc3_json("DescribeImageQuota", "{}");
    let e = r.run_at(KEY, TS + 3600).unwrap_err();
    assert_bilingual(&e, "AuthFailure.SignatureExpire", &TS.to_string());
}

#[test]
fn auth_failure_invalid_authorization() {
    let base = tc3_json("DescribeImageQuota", "{}");
    let authz = base
        .headers
        .iter()
        .find(|(k, _)| k == "Authorization")
        .unwrap()
        .1
        .clone();
    let cases = [
        "Basic abc".to_string(),
        "TC3-HMAC-SHA256".to_string(),
        authz.replace("Credential=", "Cred="),
        authz.replace("/cvm/", "/cos/"),
        authz.replace("/cvm/", "//"),
        authz.replace("/tc3_request", "/tc4_request"),
        authz.replace("2023-11-14", "20231114"),
        authz.replace(ID, ""),
        authz.replace("SignedHeaders=content-type;host", "SignedHeaders=host"),
        authz.replace(
            "SignedHeaders=content-type;host",
            "SignedHeaders=content-type",
        ),
        authz.replace(
            "SignedHeaders=content-type;host",
            "SignedHeaders=content-type;host;host",
        ),
        authz.replace(
            "SignedHeaders=content-type;host",
            "SignedHeaders=content-type;host;x-missing",
        ),
        authz[..authz.len() - 2].to_string(),
        format!("{}zz", &authz[..authz.len() - 2]),
        format!("{authz}, Signature=00"),
    ];
    for bad in cases {
        let mut r = base.clone();
        r.set_header("Authorization", &bad);
        let e = err(&r);
        assert_eq!(e.code, "AuthFailure.InvalidAuthorization", "{bad}: {e}");
    }
    // No signature at all: JSON POST without Authorization, GET without either.
    let mut r = base.clone();
    r.remove_header("Authorization");
    assert_bilingual(
        &err(&r),
        "AuthFailure.InvalidAuthorization",
        "Authorization",
    );
    let mut r = tc3_get("DescribeImages", "Limit=1");
    r.remove_header("Authorization");
    assert_bilingual(&err(&r), "AuthFailure.InvalidAuthorization", "Signature");
}

#[test]
fn auth_failure_codes_raised_by_the_service() {
    assert_bilingual(
        &ApiError::secret_id_not_found(),
        "AuthFailure.SecretIdNotFound",
        "The SecretId is not found, please ensure that your SecretId is correct.",
    );
    assert_eq!(
        ApiError::secret_id_not_found().message_zh,
        "SecretId不存在，请输入正确的密钥。"
    );
    assert_bilingual(
        &ApiError::invalid_secret_id(),
        "AuthFailure.InvalidSecretId",
        "SecretId",
    );
    assert_bilingual(
        &ApiError::token_failure(),
        "AuthFailure.TokenFailure",
        "Token",
    );
}

#[test]
fn invalid_action() {
    let e = err(&tc3_json("RunInstances", "{}"));
    assert_bilingual(&e, "InvalidAction", "RunInstances");
    assert!(e.message_en.contains("ImportImage"));
    // Case matters.
    assert_eq!(err(&tc3_json("importImage", "{}")).code, "InvalidAction");
}

#[test]
fn no_such_version() {
    let mut r = tc3_json("DescribeImageQuota", "{}");
    r.set_header("X-TC-Version", "2018-01-01");
    r.resign_tc3();
    assert_bilingual(&err(&r), "NoSuchVersion", "2018-01-01");
    let mut p = v1_params("DescribeImageQuota", SignatureMethod::HmacSha1, &[]);
    p[1].1 = "2020-01-01".into();
    assert_eq!(
        err(&v1(false, SignatureMethod::HmacSha1, p)).code,
        "NoSuchVersion"
    );
}

#[test]
fn unknown_parameter() {
    let e = err(&tc3_json("DescribeImages", r#"{"ImageId": "img-1"}"#));
    assert_bilingual(&e, "UnknownParameter", "ImageId");
    let e = err(&tc3_json(
        "DescribeImages",
        r#"{"Filters": [{"Name": "image-id", "Values": ["a"], "Extra": 1}]}"#,
    ));
    assert_bilingual(&e, "UnknownParameter", "Filters.0.Extra");
    let e = err(&tc3_form(
        "ImportImage",
        "Architecture=x86_64&OsType=CentOS&OsVersion=7&ImageName=n&ImageUrl=u&TagSpecification.0.ResourceType=image&TagSpecification.0.Tags.0.Key=k&TagSpecification.0.Tags.0.Value=v&TagSpecification.0.Tags.0.Color=red",
    ));
    assert_bilingual(&e, "UnknownParameter", "TagSpecification.0.Tags.0.Color");
    // An action without parameters has no parameter to accept.
    let e = err(&tc3_get("DescribeImageQuota", "Limit=1"));
    assert_bilingual(&e, "UnknownParameter", "Limit");
}

#[test]
fn missing_parameter() {
    for h in ["X-TC-Action", "X-TC-Version", "X-TC-Timestamp"] {
        let mut r = tc3_json("DescribeImageQuota", "{}");
        r.remove_header(h);
        assert_bilingual(&err(&r), "MissingParameter", h);
    }
    for (i, name) in ["Action", "Version", "Timestamp", "Nonce", "SecretId"]
        .iter()
        .enumerate()
    {
        let mut p = v1_params("DescribeImageQuota", SignatureMethod::HmacSha1, &[]);
        let ix = p.iter().position(|(k, _)| k == name).unwrap();
        p.remove(ix);
        let e = err(&v1(i % 2 == 0, SignatureMethod::HmacSha1, p));
        assert_bilingual(&e, "MissingParameter", name);
    }
    let e = err(&tc3_json(
        "ImportImage",
        r#"{"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7", "ImageName": "n"}"#,
    ));
    assert_bilingual(&e, "MissingParameter", "ImageUrl");
    let e = err(&tc3_json("DeleteImages", r#"{"DryRun": true}"#));
    assert_bilingual(&e, "MissingParameter", "ImageIds");
    let e = err(&tc3_json("DeleteImages", r#"{"ImageIds": []}"#));
    assert_bilingual(&e, "MissingParameter", "ImageIds");
    let e = err(&tc3_json(
        "DescribeImages",
        r#"{"Filters": [{"Name": "image-id"}]}"#,
    ));
    assert_bilingual(&e, "MissingParameter", "Filters.0.Values");
    let e = err(&tc3_get(
        "ImportImage",
        "Architecture=x86_64&OsType=CentOS&OsVersion=7&ImageName=n&ImageUrl=u&ImportImageDataDiskList.0.ImageUrl=a&ImportImageDataDiskList.1.Foo=b",
    ));
    assert_eq!(e.code, "UnknownParameter");
    let e = err(&tc3_json("ModifyImageAttribute", "{}"));
    assert_bilingual(&e, "MissingParameter", "ImageId");
    let e = err(&tc3_json("CancelImportImageTask", r#"{"ImageId": null}"#));
    assert_bilingual(&e, "MissingParameter", "ImageId");
}

#[test]
fn invalid_parameter_bodies() {
    let cases: &[(&str, &str)] = &[
        ("{", "JSON"),
        ("[1,2]", "object"),
        ("\"x\"", "object"),
        (r#"{"Limit": 1} x"#, "JSON"),
        (r#"{"Limit": 1, "Limit": 2}"#, "duplicate"),
        (r#"{"ImageIds": null, "ImageIds": ["a"]}"#, "duplicate"),
        (r#"{"ImageIds": ["a", null]}"#, "null"),
    ];
    for (body, needle) in cases {
        let e = err(&tc3_json("DescribeImages", body));
        assert_bilingual(&e, "InvalidParameter", needle);
    }
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let e = err(&tc3_json(
        "DescribeImages",
        &format!(r#"{{"ImageIds": {deep}}}"#),
    ));
    assert_bilingual(&e, "InvalidParameter", "32");
    let long = format!(r#"{{"ImageIds": [{}"a"]}}"#, "\"a\",".repeat(1000));
    assert_bilingual(
        &err(&tc3_json("DescribeImages", &long)),
        "InvalidParameter",
        "1000",
    );
    // Non-UTF-8 in JSON and in a form.
    let mut r = tc3_json("DescribeImages", "{}");
    r.body = b"{\"InstanceType\": \"\xff\"}".to_vec();
    r.resign_tc3();
    assert_eq!(err(&r).code, "InvalidParameter");
    let e = err(&tc3_get("DescribeImages", "InstanceType=%FF"));
    assert_bilingual(&e, "InvalidParameter", "UTF-8");
}

#[test]
fn invalid_parameter_types() {
    let cases: &[(&str, &str, &str)] = &[
        ("DescribeImages", r#"{"ImageIds": "img-1"}"#, "ImageIds"),
        ("DescribeImages", r#"{"ImageIds": [1]}"#, "ImageIds.0"),
        ("DescribeImages", r#"{"Limit": "ten"}"#, "Limit"),
        ("DescribeImages", r#"{"Limit": 1.5}"#, "Limit"),
        ("DescribeImages", r#"{"Limit": true}"#, "Limit"),
        (
            "DescribeImages",
            r#"{"Offset": 9223372036854775808}"#,
            "Offset",
        ),
        ("DescribeImages", r#"{"Offset": 1e300}"#, "Offset"),
        (
            "DescribeImages",
            r#"{"Filters": ["image-id"]}"#,
            "Filters.0",
        ),
        (
            "DescribeImages",
            r#"{"Filters": [{"Name": "a", "Values": "b"}]}"#,
            "Filters.0.Values",
        ),
        (
            "DeleteImages",
            r#"{"ImageIds": ["a"], "DryRun": "true"}"#,
            "DryRun",
        ),
        (
            "DeleteImages",
            r#"{"ImageIds": ["a"], "DryRun": 1}"#,
            "DryRun",
        ),
        ("ModifyImageAttribute", r#"{"ImageId": ["a"]}"#, "ImageId"),
        (
            "ImportImage",
            r#"{"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7", "ImageName": "n", "ImageUrl": "u", "TagSpecification": {"ResourceType": "image"}}"#,
            "TagSpecification",
        ),
    ];
    for (action, body, name) in cases {
        let e = err(&tc3_json(action, body));
        assert_bilingual(&e, "InvalidParameter", name);
    }
    let flat: &[(&str, &str, &str)] = &[
        ("DescribeImages", "ImageIds=img-1", "ImageIds"),
        ("DescribeImages", "Limit=2a", "Limit"),
        ("DescribeImages", "Limit=99999999999999999999", "Limit"),
        ("DeleteImages", "ImageIds.0=a&DryRun=yes", "DryRun"),
        ("DeleteImages", "ImageIds.0=a&DryRun=TRUE", "DryRun"),
        ("DescribeImages", "ImageIds.0=a&ImageIds.2=b", "ImageIds.1"),
        ("DescribeImages", "ImageIds.1=a", "ImageIds.0"),
        (
            "DescribeImages",
            "ImageIds.99999999999=a",
            "ImageIds.99999999999",
        ),
        ("DescribeImages", "ImageIds.1000=a", "1000"),
        ("DescribeImages", "ImageIds.01=a", "leading zero"),
        ("DescribeImages", "ImageIds.0=a&ImageIds.0=b", "ImageIds.0"),
        ("DescribeImages", "Limit=1&Limit=2", "Limit"),
        (
            "DescribeImages",
            "ImageIds.0=a&ImageIds.0.X=b",
            "ImageIds.0",
        ),
        ("DescribeImages", "ImageIds.0=a&ImageIds.X=b", "ImageIds.X"),
        ("DescribeImages", "ImageIds..0=a", "empty"),
        ("DescribeImages", "=a", "empty"),
        ("DescribeImages", "0=a", "0"),
    ];
    for (action, query, name) in flat {
        let e = err(&tc3_get(action, query));
        assert_bilingual(&e, "InvalidParameter", name);
    }
    let deep = format!("Filters{}=1", ".0.A".repeat(20));
    assert_bilingual(
        &err(&tc3_get("DescribeImages", &deep)),
        "InvalidParameter",
        "32",
    );
    // Invalid common parameter values.
    let mut r = tc3_json("DescribeImageQuota", "{}");
    r.set_header("X-TC-Timestamp", "soon");
    assert_bilingual(&err(&r), "InvalidParameter", "X-TC-Timestamp");
    let mut p = v1_params("DescribeImageQuota", SignatureMethod::HmacSha1, &[]);
    p.push(("SignatureMethod".into(), "HmacMD5".into()));
    assert_bilingual(
        &err(&v1(false, SignatureMethod::HmacSha1, p)),
        "InvalidParameter",
        "SignatureMethod",
    );
    let mut p = v1_params("DescribeImageQuota", SignatureMethod::HmacSha1, &[]);
    p[4].1 = "-1".into();
    assert_bilingual(
        &err(&v1(false, SignatureMethod::HmacSha1, p)),
        "InvalidParameter",
        "Nonce",
    );
    let mut p = v1_params("DescribeImageQuota", SignatureMethod::HmacSha1, &[]);
    p[6].1 = "de-DE".into();
    let (e, lang) = v1(false, SignatureMethod::HmacSha1, p)
        .decode()
        .unwrap_err();
    assert_eq!(
        (e.code.as_ref(), lang),
        ("InvalidParameter", Language::ZhCn)
    );
    let mut p = v1_params("DescribeImageQuota", SignatureMethod::HmacSha1, &[]);
    p.push(("Action".into(), "DescribeImages".into()));
    assert_bilingual(
        &err(&v1(false, SignatureMethod::HmacSha1, p)),
        "InvalidParameter",
        "Action",
    );
}

#[test]
fn unsupported_protocol() {
    for m in ["PUT", "DELETE", "get", "PATCH"] {
        let mut r = tc3_json("DescribeImageQuota", "{}");
        r.method = m.into();
        let (e, lang) = r.decode().unwrap_err();
        assert_bilingual(&e, "UnsupportedProtocol", m);
        assert_eq!(lang, Language::EnUs);
    }
}

#[test]
fn request_size_limit_exceeded() {
    let big = format!(r#"{{"InstanceType": "{}"}}"#, "a".repeat(10 << 20));
    let e = err(&tc3_json("DescribeImages", &big));
    assert_bilingual(&e, "RequestSizeLimitExceeded", "10485760");
    let q = format!("InstanceType={}", "a".repeat(32 * 1024));
    assert_eq!(
        err(&tc3_get("DescribeImages", &q)).code,
        "RequestSizeLimitExceeded"
    );
    let form = format!("InstanceType={}", "a".repeat(1 << 20));
    assert_eq!(
        err(&tc3_form("DescribeImages", &form)).code,
        "RequestSizeLimitExceeded"
    );
}

#[test]
fn invalid_request() {
    let mut r = tc3_json("DescribeImageQuota", "{}");
    r.set_header("Content-Type", "multipart/form-data; boundary=x");
    r.resign_tc3();
    assert_bilingual(&err(&r), "InvalidRequest", "multipart");
    let mut r = tc3_json("DescribeImageQuota", "{}");
    r.set_header("Content-Type", "text/xml");
    assert_bilingual(&err(&r), "InvalidRequest", "text/xml");
    let mut r = tc3_json("DescribeImageQuota", "{}");
    r.headers
        .push(("x-tc-action".into(), "DescribeImages".into()));
    assert_bilingual(&err(&r), "InvalidRequest", "more than once");
}

#[test]
fn codes_raised_by_the_service() {
    assert_bilingual(
        &ApiError::invalid_parameter_value(
            "ImageName is longer than 60 characters.",
            "ImageName长度超过60个字符。",
        ),
        "InvalidParameterValue",
        "ImageName",
    );
    assert_bilingual(
        &ApiError::unsupported_region("ap-mars"),
        "UnsupportedRegion",
        "ap-mars",
    );
    assert_bilingual(
        &ApiError::request_limit_exceeded("ImportImage", 10),
        "RequestLimitExceeded",
        "10 requests per second",
    );
    assert_bilingual(
        &ApiError::internal("catalog unavailable"),
        "InternalError",
        "catalog unavailable",
    );
}

#[test]
fn envelopes() {
    let rid = "71e69b56-32be-4412-ab45-49eded6a87be";
    let ok = success_body(serde_json::json!({"ImageId": "img-abcdefgh"}), rid);
    assert_eq!(
        ok,
        r#"{"Response":{"ImageId":"img-abcdefgh","RequestId":"71e69b56-32be-4412-ab45-49eded6a87be"}}"#
    );
    assert_eq!(
        success_body(serde_json::json!({}), rid),
        format!(r#"{{"Response":{{"RequestId":"{rid}"}}}}"#)
    );
    let e = ApiError::secret_id_not_found();
    let en: serde_json::Value = serde_json::from_str(&error_body(&e, Language::EnUs, rid)).unwrap();
    assert_eq!(
        en["Response"]["Error"]["Code"],
        "AuthFailure.SecretIdNotFound"
    );
    assert_eq!(en["Response"]["Error"]["Message"], e.message_en);
    assert_eq!(en["Response"]["RequestId"], rid);
    let zh: serde_json::Value = serde_json::from_str(&error_body(&e, Language::ZhCn, rid)).unwrap();
    assert_eq!(
        zh["Response"]["Error"]["Message"],
        "SecretId不存在，请输入正确的密钥。"
    );
}

#[test]
fn hostile_sizes_fail_fast_and_small() {
    // Each of these would cost memory or time in proportion to a claimed
    // number, or overflow the stack, if the decoder trusted it.
    let nested = format!("{}{}", "[".repeat(5_000_000), "]".repeat(5_000_000));
    let e = err(&tc3_json(
        "DescribeImages",
        &format!(r#"{{"ImageIds": {nested}}}"#),
    ));
    assert_eq!(e.code, "InvalidParameter");
    assert!(e.message_en.len() < 400, "{}", e.message_en);
    let dots = format!("ImageIds{}=1", ".a".repeat(400_000));
    let e = err(&tc3_form("DescribeImages", &dots));
    assert_eq!(e.code, "InvalidParameter");
    assert!(e.message_en.len() < 400, "{}", e.message_en);
    let long_name = format!("{}=1", "X".repeat(900_000));
    let e = err(&tc3_form("DescribeImages", &long_name));
    assert_eq!(e.code, "UnknownParameter");
    assert!(e.message_en.len() < 400, "{}", e.message_en);
    let mut many = String::new();
    for i in 0..60_000 {
        many.push_str(&format!("ImageIds.{}=a&", i % 999));
    }
    assert_eq!(
        err(&tc3_form("DescribeImages", &many)).code,
        "InvalidParameter"
    );
    let e = err(&tc3_form("DescribeImages", "ImageIds.999=a"));
    assert!(e.message_en.contains("ImageIds.0"), "{}", e.message_en);
}
