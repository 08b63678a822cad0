//! Client-side signing, for the project's own CLI client and for tests. It
//! shares the string building with the server check (`sign.rs`), and the
//! tests pin both to Tencent's published vectors so that sharing cannot hide
//! a common mistake.

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::sign::{self, SignatureMethod, TC3_ALGORITHM};

/// The `Authorization` header value for a TC3-HMAC-SHA256 request signing
/// `content-type` and `host`. `raw_query` is the query exactly as it will be
/// sent ("" for POST); `payload` the body exactly as it will be sent.
#[allow(clippy::too_many_arguments)]
pub fn sign_tc3_request(
    secret_id: &str,
    secret_key: &str,
    host_header_value: &str,
    content_type: &str,
    payload: &[u8],
    raw_query: &str,
    method: &str,
    timestamp: i64,
    service: &str,
) -> String {
    let date = sign::utc_date(timestamp).unwrap_or_default();
    let canonical_headers = format!(
        "content-type:{}\nhost:{}\n",
        content_type.trim(),
        host_header_value.trim()
    );
    let signed_headers = "content-type;host";
    let creq = sign::tc3_canonical_request(
        method,
        raw_query,
        &canonical_headers,
        signed_headers,
        &sign::sha256_hex(payload),
    );
    let sts = sign::tc3_string_to_sign(&timestamp.to_string(), &date, service, &creq);
    let key = sign::tc3_signing_key(secret_key, &date, service);
    let signature = hex::encode(sign::hmac_sha256(&key, sts.as_bytes()));
    format!(
        "{TC3_ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, SignedHeaders={signed_headers}, Signature={signature}"
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
