//! Tencent's published signature test vectors (reference §2), checked on the
//! client signer and on the server verifier.

use tcapi::*;

const ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
const KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
const TC3_SIG: &str = "f3025300fad1b3d803eaef6edcfe9aebc95c769966ce3761b0bce217f270c283";

#[test]
fn tc3_vector_client() {
    let authz = sign_tc3(
        ID,
        KEY,
        &Tc3Request {
            host: "cvm.tencentcloudapi.com",
            content_type: "application/json",
            payload: br#"{"ImageIds": ["img-gvbnzy6f"]}"#,
            raw_query: "",
            method: "POST",
            timestamp: 1551113065,
            service: "cvm",
            extra_signed: &[],
        },
    );
    assert_eq!(
        authz,
        format!("TC3-HMAC-SHA256 Credential={ID}/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature={TC3_SIG}")
    );
}

#[test]
fn tc3_vector_server() {
    let authz = format!("TC3-HMAC-SHA256 Credential={ID}/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature={TC3_SIG}");
    let headers = [
        ("Host", "cvm.tencentcloudapi.com"),
        ("content-type", "application/json"),
        ("X-TC-Action", "DescribeImages"),
        ("X-TC-Version", "2017-03-12"),
        ("X-TC-Timestamp", "1551113065"),
        ("X-TC-Region", "ap-guangzhou"),
        ("Authorization", authz.as_str()),
    ];
    let raw = RawRequest {
        method: "POST",
        raw_query: "",
        headers: &headers,
        body: br#"{"ImageIds": ["img-gvbnzy6f"]}"#,
    };
    let req = decode(&raw).map_err(|e| e.0).unwrap();
    assert_eq!(req.secret_id, ID);
    assert_eq!(req.region.as_deref(), Some("ap-guangzhou"));
    assert_eq!(req.signature_method(), SignatureMethod::Tc3HmacSha256);
    req.verify(&raw, KEY, 1551113065 + 10).unwrap();
    assert_eq!(
        req.verify(&raw, "Gu5t9xGARNpq86cd98joQYCN3EXAMPLf", 1551113065)
            .unwrap_err()
            .code,
        "AuthFailure.SignatureFailure"
    );
    match decode_action(&req.action, &req.params).unwrap() {
        ActionRequest::DescribeImages(d) => {
            assert_eq!(d.image_ids, Some(vec!["img-gvbnzy6f".to_string()]))
        }
        other => panic!("wrong action {other:?}"),
    }
}

/// A client that signs X-TC-Action and X-TC-Region (the CLI, the console):
/// the server verifies it, and a Describe and a Delete of the same body in
/// the same second no longer share a signature.
#[test]
fn signing_action_and_region_verifies_and_differs_per_action() {
    let ts = 1551113065;
    let body = br#"{"ImageIds": ["img-gvbnzy6f"]}"#;
    let sign = |action: &'static str| {
        sign_tc3(
            ID,
            KEY,
            &Tc3Request {
                host: "cvm.tencentcloudapi.com",
                content_type: "application/json",
                raw_query: "",
                payload: body,
                method: "POST",
                timestamp: ts,
                service: "cvm",
                extra_signed: &[("x-tc-action", action), ("x-tc-region", "ap-guangzhou")],
            },
        )
    };
    let (describe, delete) = (sign("DescribeImages"), sign("DeleteImages"));
    assert_ne!(describe, delete);
    assert!(
        describe.contains("SignedHeaders=content-type;host;x-tc-action;x-tc-region,"),
        "{describe}"
    );
    let request = |authz: &str, action: &'static str| {
        let headers: Vec<(&str, String)> = vec![
            ("Host", "cvm.tencentcloudapi.com".into()),
            ("content-type", "application/json".into()),
            ("X-TC-Action", action.into()),
            ("X-TC-Version", "2017-03-12".into()),
            ("X-TC-Timestamp", ts.to_string()),
            ("X-TC-Region", "ap-guangzhou".into()),
            ("Authorization", authz.to_string()),
        ];
        headers
    };
    for (authz, action, ok) in [
        (&describe, "DescribeImages", true),
        (&delete, "DeleteImages", true),
        // The Describe signature does not cover a Delete.
        (&describe, "DeleteImages", false),
    ] {
        let headers = request(authz, action);
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let raw = RawRequest {
            method: "POST",
            raw_query: "",
            headers: &pairs,
            body,
        };
        let req = decode(&raw).map_err(|e| e.0).unwrap();
        assert_eq!(
            req.verify(&raw, KEY, ts).is_ok(),
            ok,
            "{action} with {authz}"
        );
    }
}

const V1_PARAMS: &[(&str, &str)] = &[
    ("Action", "DescribeImages"),
    ("ImageIds.0", "img-gvbnzy6f"),
    ("Nonce", "11886"),
    ("Region", "ap-guangzhou"),
    ("SecretId", ID),
    ("SignatureMethod", "HmacSHA256"),
    ("Timestamp", "1465185768"),
    ("Version", "2017-03-12"),
];
const V1_SIG: &str = "TXeUTuv/k2CHXx8Vb15+S4PGF5sjiwe6veErNhAw7S4=";

#[test]
fn v1_vector_client() {
    let params: Vec<(String, String)> = V1_PARAMS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sig = sign_v1(
        "GET",
        "cvm.tencentcloudapi.com",
        "/",
        &params,
        KEY,
        SignatureMethod::HmacSha256,
    );
    assert_eq!(sig, V1_SIG);
}

#[test]
fn v1_vector_server() {
    let mut params: Vec<(String, String)> = V1_PARAMS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    params.push(("Signature".into(), V1_SIG.into()));
    let query = form_urlencode(&params);
    let headers = [("Host", "cvm.tencentcloudapi.com")];
    let raw = RawRequest {
        method: "GET",
        raw_query: &query,
        headers: &headers,
        body: b"",
    };
    let req = decode(&raw).map_err(|e| e.0).unwrap();
    assert_eq!(req.signature_method(), SignatureMethod::HmacSha256);
    assert_eq!(req.nonce, Some(11886));
    req.verify(&raw, KEY, 1465185768).unwrap();
    assert_eq!(
        req.verify(&raw, KEY, 1465185768 + 301).unwrap_err().code,
        "AuthFailure.SignatureExpire"
    );
    // Only ImageIds is an action parameter; the common ones are removed.
    assert_eq!(req.params.entries.len(), 1);
}
