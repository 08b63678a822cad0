//! Protocol behaviour of `decode` + `verify`: each signing scheme and
//! transport, the quirks of the real clients, and the error each broken
//! request gets.

mod common;

use common::*;
use tcapi::*;

fn import_pairs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("OsType", "CentOS"),
        ("OsVersion", "6"),
        ("ImageName", "sample"),
        ("ImageDescription", "sampleimage"),
        (
            "ImageUrl",
            "http://111-1251233127.cosd.myqcloud.com/Windows Server 2008 R2 x64a.vmdk",
        ),
        ("Architecture", "x86_64"),
    ]
}

#[test]
fn tencent_doc_import_example_v1_get() {
    // The ImportImage example of Tencent's documentation, with legacy
    // parameters; its URL has %20 for spaces, which form_urlencode writes as +.
    for m in [SignatureMethod::HmacSha1, SignatureMethod::HmacSha256] {
        let r = v1(false, m, v1_params("ImportImage", m, &import_pairs()));
        match r.run().unwrap() {
            ActionRequest::ImportImage(i) => {
                assert_eq!(i.os_type, "CentOS");
                assert_eq!(i.os_version, "6");
                assert_eq!(
                    i.image_url,
                    "http://111-1251233127.cosd.myqcloud.com/Windows Server 2008 R2 x64a.vmdk"
                );
                assert!(!i.dry_run);
            }
            other => panic!("{other:?}"),
        }
        let d = r.decode().unwrap();
        assert_eq!(d.signature_method(), m);
        assert_eq!(d.language, Language::EnUs);
        assert_eq!(d.region.as_deref(), Some("ap-guangzhou"));
    }
}

#[test]
fn v1_percent_20_and_plus_decode_alike() {
    // The documentation example spells spaces %20; the signature covers the
    // decoded value, so both spellings verify.
    let params = v1_params("ImportImage", SignatureMethod::HmacSha1, &import_pairs());
    let mut r = v1(false, SignatureMethod::HmacSha1, params);
    r.query = r.query.replace('+', "%20");
    assert_eq!(code(r.run()), "Ok(ImportImage)");
}

#[test]
fn v1_signature_method_absent_is_sha1() {
    let p = v1_params("DescribeImageQuota", SignatureMethod::HmacSha1, &[]);
    assert!(!p.iter().any(|(k, _)| k == "SignatureMethod"));
    let r = v1(true, SignatureMethod::HmacSha1, p);
    assert_eq!(
        r.decode().unwrap().signature_method(),
        SignatureMethod::HmacSha1
    );
    assert_eq!(code(r.run()), "Ok(DescribeImageQuota)");
    // The same request signed with SHA-256 but not saying so fails.
    let p = v1_params("DescribeImageQuota", SignatureMethod::HmacSha1, &[]);
    let r = v1(true, SignatureMethod::HmacSha256, p);
    assert_eq!(code(r.run()), "AuthFailure.SignatureFailure");
}

#[test]
fn v1_python_underscore_quirk() {
    // The Python SDK signs key names with '_' replaced by '.'.
    let mut params = v1_params(
        "DescribeImages",
        SignatureMethod::HmacSha256,
        &[("Offset", "0")],
    );
    params.push(("X_Custom".into(), "1".into()));
    let mut signed = params.clone();
    for (k, _) in signed.iter_mut() {
        *k = k.replace('_', ".");
    }
    let sig = sign_v1("GET", HOST, "/", &signed, KEY, SignatureMethod::HmacSha256);
    params.push(("Signature".into(), sig));
    let r = Req {
        method: "GET".into(),
        query: form_urlencode(&params),
        headers: vec![("Host".into(), HOST.into())],
        body: vec![],
    };
    r.with(|raw| decode(raw).unwrap().verify(raw, KEY, TS))
        .unwrap();
}

#[test]
fn v1_unencoded_plus_in_signature_still_verifies() {
    // Some hand-written clients put the base64 signature in the URL without
    // encoding '+', which then decodes as a space.
    for nonce in 0..64 {
        let mut p = v1_params("DescribeImageQuota", SignatureMethod::HmacSha256, &[]);
        p[4].1 = nonce.to_string();
        let sig = sign_v1("GET", HOST, "/", &p, KEY, SignatureMethod::HmacSha256);
        if !sig.contains('+') {
            continue;
        }
        let q = format!("{}&Signature={sig}", form_urlencode(&p));
        let r = Req {
            method: "GET".into(),
            query: q,
            headers: vec![("Host".into(), HOST.into())],
            body: vec![],
        };
        assert_eq!(code(r.run()), "Ok(DescribeImageQuota)");
        return;
    }
    panic!("no nonce gave a signature with '+'");
}

#[test]
fn tc3_get_signs_raw_query_as_received() {
    let q = "ImageIds.0=img-a&Limit=10";
    let r = tc3_get("DescribeImages", q);
    match r.run().unwrap() {
        ActionRequest::DescribeImages(d) => {
            assert_eq!(d.image_ids, Some(vec!["img-a".into()]));
            assert_eq!(d.limit, Some(10));
        }
        other => panic!("{other:?}"),
    }
    // Same decoded parameters, other bytes (re-encoded, re-ordered): the
    // signature no longer matches.
    let mut r2 = r.clone();
    r2.query = "ImageIds.0=img-%61&Limit=10".into();
    assert_eq!(code(r2.run()), "AuthFailure.SignatureFailure");
    let mut r3 = r.clone();
    r3.query = "Limit=10&ImageIds.0=img-a".into();
    assert_eq!(code(r3.run()), "AuthFailure.SignatureFailure");
}

#[test]
fn tc3_form_post_and_python_booleans() {
    let r = tc3_form(
        "DeleteImages",
        "ImageIds.0=img-1&ImageIds.1=img-2&DeleteBindedSnap=True&DryRun=false",
    );
    match r.run().unwrap() {
        ActionRequest::DeleteImages(d) => {
            assert_eq!(d.image_ids, vec!["img-1", "img-2"]);
            assert!(d.delete_binded_snap);
            assert!(!d.dry_run);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tc3_host_header_verbatim_and_case_insensitive_headers() {
    let mut r = tc3_json("DescribeImageQuota", "{}");
    for (k, _) in r.headers.iter_mut() {
        *k = k.to_ascii_uppercase();
    }
    assert_eq!(code(r.run()), "Ok(DescribeImageQuota)");
    // The host header as tccli sends it is part of the signature.
    let mut r2 = r.clone();
    r2.set_header("Host", "127.0.0.1:18083");
    assert_eq!(code(r2.run()), "AuthFailure.SignatureFailure");
}

/// Authorization for the request signed with content-type, host and
/// x-tc-action, using the given header values in CanonicalHeaders.
fn authz_with_extra_header(ct: &str, action: &str) -> String {
    let date = "2023-11-14";
    let canonical = format!(
        "POST\n/\n\ncontent-type:{ct}\nhost:{HOST}\nx-tc-action:{action}\n\ncontent-type;host;x-tc-action\n{}",
        hex(b"{}")
    );
    let sts = format!(
        "TC3-HMAC-SHA256\n{TS}\n{date}/cvm/tc3_request\n{}",
        hex(canonical.as_bytes())
    );
    let k = hmac(format!("TC3{KEY}").as_bytes(), date.as_bytes());
    let k = hmac(&k, b"cvm");
    let k = hmac(&k, b"tc3_request");
    let sig = ::hex::encode(hmac(&k, sts.as_bytes()));
    format!("TC3-HMAC-SHA256 Credential={ID}/{date}/cvm/tc3_request, SignedHeaders=content-type;host;x-tc-action, Signature={sig}")
}

#[test]
fn tc3_extra_signed_headers() {
    // A client that signs x-tc-action too; values are signed as sent.
    let mut r = tc3_json("DescribeImageQuota", "{}");
    r.set_header("Content-Type", "application/json; charset=UTF-8");
    r.set_header(
        "Authorization",
        &authz_with_extra_header("application/json; charset=UTF-8", "DescribeImageQuota"),
    );
    assert_eq!(code(r.run()), "Ok(DescribeImageQuota)");
    // The signed action header is covered: another action fails.
    let mut other = r.clone();
    other.set_header("X-TC-Action", "DescribeImages");
    assert_eq!(code(other.run()), "AuthFailure.SignatureFailure");
    // Values are not lower-cased: a signature over lower-cased values fails,
    // so that no case change of a signed header goes unnoticed.
    r.set_header(
        "Authorization",
        &authz_with_extra_header("application/json; charset=utf-8", "describeimagequota"),
    );
    assert_eq!(code(r.run()), "AuthFailure.SignatureFailure");
}

fn hex(data: &[u8]) -> String {
    use sha2::Digest;
    ::hex::encode(sha2::Sha256::digest(data))
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

#[test]
fn tc3_unsigned_payload() {
    let mut r = tc3_json("DescribeImages", r#"{"Limit": 5}"#);
    r.set_header("X-TC-Content-SHA256", "UNSIGNED-PAYLOAD");
    // Sign over the literal instead of the body.
    let body = std::mem::replace(&mut r.body, b"UNSIGNED-PAYLOAD".to_vec());
    r.resign_tc3();
    r.body = body;
    assert_eq!(code(r.run()), "Ok(DescribeImages)");
}

#[test]
fn tc3_credential_date_must_be_utc_date_of_timestamp() {
    // 2023-11-14T22:13:20Z: in UTC+8 it is already the 15th.
    let mut r = tc3_json("DescribeImageQuota", "{}");
    let authz = r
        .headers
        .iter()
        .find(|(k, _)| k == "Authorization")
        .unwrap()
        .1
        .replace("2023-11-14", "2023-11-15");
    r.set_header("Authorization", &authz);
    let err = r.run().unwrap_err();
    assert_eq!(err.code, "AuthFailure.SignatureFailure");
    assert!(err.message_en.contains("2023-11-14"), "{}", err.message_en);
}

#[test]
fn timestamp_skew_window() {
    let r = tc3_json("DescribeImageQuota", "{}");
    assert_eq!(code(r.run_at(KEY, TS + 300)), "Ok(DescribeImageQuota)");
    assert_eq!(code(r.run_at(KEY, TS - 300)), "Ok(DescribeImageQuota)");
    assert_eq!(code(r.run_at(KEY, TS + 301)), "AuthFailure.SignatureExpire");
    assert_eq!(code(r.run_at(KEY, TS - 301)), "AuthFailure.SignatureExpire");
    assert_eq!(code(r.run_at(KEY, i64::MIN)), "AuthFailure.SignatureExpire");
    assert_eq!(code(r.run_at(KEY, i64::MAX)), "AuthFailure.SignatureExpire");
}

#[test]
fn json_null_is_absent_and_empty_body_is_no_params() {
    let r = tc3_json(
        "DescribeImages",
        r#"{"ImageIds": null, "Filters": null, "Limit": 20, "InstanceType": null}"#,
    );
    match r.run().unwrap() {
        ActionRequest::DescribeImages(d) => {
            assert_eq!(d.image_ids, None);
            assert_eq!(d.limit, Some(20));
        }
        other => panic!("{other:?}"),
    }
    let r = tc3_json("DescribeImageQuota", "");
    assert_eq!(code(r.run()), "Ok(DescribeImageQuota)");
}

#[test]
fn language_header_and_default() {
    let mut r = tc3_json("DescribeImageQuota", "{}");
    assert_eq!(r.decode().unwrap().language, Language::EnUs);
    r.set_header("X-TC-Language", "zh-CN");
    assert_eq!(r.decode().unwrap().language, Language::ZhCn);
    r.remove_header("X-TC-Language");
    assert_eq!(r.decode().unwrap().language, Language::ZhCn);
    r.set_header("X-TC-Language", "fr-FR");
    let (e, _) = r.decode().unwrap_err();
    assert_eq!(e.code, "InvalidParameter");
    assert!(e.message_en.contains("X-TC-Language"));
}

#[test]
fn language_is_returned_with_errors() {
    let mut r = tc3_json("NoSuchThing", "{}");
    let (e, lang) = r.decode().unwrap_err();
    assert_eq!((e.code.as_ref(), lang), ("InvalidAction", Language::EnUs));
    r.set_header("X-TC-Language", "zh-CN");
    assert_eq!(r.decode().unwrap_err().1, Language::ZhCn);
    // v1: the Language parameter.
    let p = v1_params("NoSuchThing", SignatureMethod::HmacSha1, &[]);
    let (e, lang) = v1(false, SignatureMethod::HmacSha1, p)
        .decode()
        .unwrap_err();
    assert_eq!((e.code.as_ref(), lang), ("InvalidAction", Language::EnUs));
}

#[test]
fn region_token_absent_or_empty() {
    let mut r = tc3_json("DescribeImageQuota", "{}");
    r.remove_header("X-TC-Region");
    r.set_header("X-TC-Token", "tok");
    let d = r.decode().unwrap();
    assert_eq!(d.region, None);
    assert_eq!(d.token.as_deref(), Some("tok"));
    r.set_header("X-TC-Region", "");
    assert_eq!(r.decode().unwrap().region, None);
}

#[test]
fn check_size_limits() {
    assert!(check_size("GET", None, 32 * 1024, 0).is_ok());
    assert_eq!(
        check_size("GET", None, 32 * 1024 + 1, 0).unwrap_err().code,
        "RequestSizeLimitExceeded"
    );
    let form = Some("application/x-www-form-urlencoded; charset=utf-8");
    assert!(check_size("POST", form, 0, 1 << 20).is_ok());
    assert!(check_size("POST", form, 0, (1 << 20) + 1).is_err());
    assert!(check_size("POST", Some("application/json"), 0, 10 << 20).is_ok());
    let e = check_size("POST", Some("application/json"), 0, (10 << 20) + 1).unwrap_err();
    assert_eq!(e.code, "RequestSizeLimitExceeded");
    assert!(e.message_en.contains("10485760"), "{}", e.message_en);
}
