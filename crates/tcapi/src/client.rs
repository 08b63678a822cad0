//! Client-side signing, for the project's own CLI client and for tests. It
//! shares the string building with the server check (`sign.rs`), and the
//! tests pin both to Tencent's published vectors so that sharing cannot hide
//! a common mistake.

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::sign::{self, SignatureMethod, TC3_ALGORITHM};

/// What a TC3-HMAC-SHA256 signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Tc3Request<'a> {
    /// The Host header exactly as it will be sent.
    pub host: &'a str,
    pub content_type: &'a str,
    /// The query exactly as it will be sent ("" for POST).
    pub raw_query: &'a str,
    /// The body exactly as it will be sent.
    pub payload: &'a [u8],
    pub method: &'a str,
    pub timestamp: i64,
    /// The credential scope's service (`cvm`, `cbs`).
    pub service: &'a str,
    /// Headers signed after `content-type` and `host`: lower-case names in
    /// order, with their values as sent. The official SDKs sign none; a
    /// client that signs `x-tc-action` and `x-tc-region` binds its signature
    /// to them, so the server never mistakes a second request with the same
    /// body in the same second for a replay of the first.
    pub extra_signed: &'a [(&'a str, &'a str)],
}

/// The `Authorization` header value of `req`.
pub fn sign_tc3(secret_id: &str, secret_key: &str, req: &Tc3Request<'_>) -> String {
    let date = sign::utc_date(req.timestamp).unwrap_or_default();
    let mut canonical_headers = format!(
        "content-type:{}\nhost:{}\n",
        req.content_type.trim(),
        req.host.trim()
    );
    let mut signed_headers = String::from("content-type;host");
    for (name, value) in req.extra_signed {
        canonical_headers.push_str(&format!("{name}:{}\n", value.trim()));
        signed_headers.push(';');
        signed_headers.push_str(name);
    }
    let creq = sign::tc3_canonical_request(
        req.method,
        req.raw_query,
        &canonical_headers,
        &signed_headers,
        &sign::sha256_hex(req.payload),
    );
    let sts = sign::tc3_string_to_sign(&req.timestamp.to_string(), &date, req.service, &creq);
    let key = sign::tc3_signing_key(secret_key, &date, req.service);
    let signature = hex::encode(sign::hmac_sha256(&key, sts.as_bytes()));
    format!(
        "{TC3_ALGORITHM} Credential={secret_id}/{date}/{}/tc3_request, SignedHeaders={signed_headers}, Signature={signature}",
        req.service
    )
}

/// The base64 v1 signature of `params` (every parameter to be sent, with or
/// without a Signature entry, which is skipped). `method` chooses HmacSHA1 or
/// HmacSHA256 (Tc3HmacSha256 is treated as HmacSHA256).
pub fn sign_v1(
    method: &str,
    host: &str,
    path: &str,
    params: &[(String, String)],
    secret_key: &str,
    signature_method: SignatureMethod,
) -> String {
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let msg = sign::v1_string_to_sign(method, host, path, &refs, false);
    base64::engine::general_purpose::STANDARD.encode(sign::v1_mac(
        signature_method,
        secret_key,
        &msg,
    ))
}

/// Flatten a JSON object into wire pairs: `ImageIds.0=…`,
/// `Filters.0.Values.1=…`; booleans as `true`/`false`; nulls dropped.
/// A scalar at the top level yields nothing (it has no name).
pub fn flatten(value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Value::Object(m) = value {
        for (k, v) in m {
            flatten_into(k.clone(), v, &mut out);
        }
    }
    out
}

fn flatten_into(prefix: String, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push((prefix, b.to_string())),
        Value::Number(n) => out.push((prefix, n.to_string())),
        Value::String(s) => out.push((prefix, s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten_into(format!("{prefix}.{i}"), item, out);
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                flatten_into(format!("{prefix}.{k}"), v, out);
            }
        }
    }
}

/// Characters left as-is by Python's `quote_plus` (besides alphanumerics).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b' ');

/// `application/x-www-form-urlencoded` text of the pairs, as Python's
/// `urlencode` writes it (space as `+`, `/` and `+` escaped), in the given
/// order. Usable both as a query string and as a form body.
pub fn form_urlencode(pairs: &[(String, String)]) -> String {
    let enc = |s: &str| utf8_percent_encode(s, FORM).to_string().replace(' ', "+");
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}
