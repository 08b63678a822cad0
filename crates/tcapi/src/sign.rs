//! Signature arithmetic shared by the server check (`request.rs`) and the
//! client signer (`client.rs`), so both sides build the very same strings.
//!
//! TC3-HMAC-SHA256: CanonicalRequest → StringToSign → key chain
//! `"TC3"+SecretKey → Date → service → "tc3_request"`. Legacy v1: HMAC-SHA1 or
//! HMAC-SHA256 over `METHOD host path ? sorted k=v`, base64.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// How a request was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMethod {
    Tc3HmacSha256,
    HmacSha1,
    HmacSha256,
}

impl SignatureMethod {
    /// The name used on the wire (`SignatureMethod` parameter or the
    /// Authorization algorithm).
    pub fn wire_name(self) -> &'static str {
        match self {
            SignatureMethod::Tc3HmacSha256 => "TC3-HMAC-SHA256",
            SignatureMethod::HmacSha1 => "HmacSHA1",
            SignatureMethod::HmacSha256 => "HmacSHA256",
        }
    }
}

pub(crate) const TC3_ALGORITHM: &str = "TC3-HMAC-SHA256";
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// `YYYY-MM-DD` of the timestamp in UTC; `None` outside chrono's range.
pub(crate) fn utc_date(timestamp: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(timestamp, 0).map(|d| d.format("%Y-%m-%d").to_string())
}

pub(crate) fn tc3_canonical_request(
    method: &str,
    raw_query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    format!("{method}\n/\n{raw_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}")
}

pub(crate) fn tc3_string_to_sign(
    timestamp: &str,
    date: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{TC3_ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

pub(crate) fn tc3_signing_key(secret_key: &str, date: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac_sha256(&k_date, service.as_bytes());
    hmac_sha256(&k_service, b"tc3_request")
}

/// True when `tag` is the TC3 signature of `string_to_sign`; constant time.
pub(crate) fn tc3_verify(signing_key: &[u8], string_to_sign: &str, tag: &[u8]) -> bool {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(signing_key) {
        Ok(mut mac) => {
            mac.update(string_to_sign.as_bytes());
            mac.verify_slice(tag).is_ok()
        }
        Err(_) => false,
    }
}

/// The v1 string to sign. `dots_for_underscores` reproduces the Python SDK,
/// which signs key names with `_` turned into `.` (and sorts after that).
pub(crate) fn v1_string_to_sign(
    method: &str,
    host: &str,
    path: &str,
    params: &[(&str, &str)],
    dots_for_underscores: bool,
) -> String {
    let mut keyed: Vec<(String, &str)> = params
        .iter()
        .filter(|(k, _)| *k != "Signature")
        .map(|(k, v)| {
            let k = if dots_for_underscores {
                k.replace('_', ".")
            } else {
                (*k).to_string()
            };
            (k, *v)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut s =
        String::with_capacity(method.len() + host.len() + path.len() + 1 + 32 * keyed.len());
    s.push_str(method);
    s.push_str(host);
    s.push_str(path);
    s.push('?');
    for (i, (k, v)) in keyed.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

pub(crate) fn v1_mac(method: SignatureMethod, secret_key: &str, msg: &str) -> Vec<u8> {
    match method {
        SignatureMethod::HmacSha1 => {
            let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret_key.as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            mac.update(msg.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        SignatureMethod::HmacSha256 | SignatureMethod::Tc3HmacSha256 => {
            hmac_sha256(secret_key.as_bytes(), msg.as_bytes())
        }
    }
}

/// True when `tag` is the v1 MAC of `msg`; constant time.
pub(crate) fn v1_verify(method: SignatureMethod, secret_key: &str, msg: &str, tag: &[u8]) -> bool {
    match method {
        SignatureMethod::HmacSha1 => {
            match <Hmac<Sha1> as KeyInit>::new_from_slice(secret_key.as_bytes()) {
                Ok(mut mac) => {
                    mac.update(msg.as_bytes());
                    mac.verify_slice(tag).is_ok()
                }
                Err(_) => false,
            }
        }
        SignatureMethod::HmacSha256 | SignatureMethod::Tc3HmacSha256 => {
            match <Hmac<Sha256> as KeyInit>::new_from_slice(secret_key.as_bytes()) {
                Ok(mut mac) => {
                    mac.update(msg.as_bytes());
                    mac.verify_slice(tag).is_ok()
                }
                Err(_) => false,
            }
        }
    }
}
