//! The TC3-HMAC-SHA256 scheme: the request's X-TC-* headers and its
//! Authorization header, decoded without trusting them; the Host values and
//! canonical headers its signature is checked against.

use super::{
    check_version_action, non_empty, parse_timestamp, required_header, scope_product, Auth, Body,
    Pending, RawRequest, SignedRequest,
};
use crate::error::{clip, ApiError, Language};
use crate::params::Params;
use crate::sign::TC3_ALGORITHM;

pub(super) fn decode_tc3(
    raw: &RawRequest,
    authz: &str,
    body: Body,
    lang: Language,
) -> Result<SignedRequest, ApiError> {
    let action = required_header(raw, "X-TC-Action")?;
    let version = required_header(raw, "X-TC-Version")?;
    let timestamp_text = required_header(raw, "X-TC-Timestamp")?;
    let timestamp = parse_timestamp(timestamp_text, "X-TC-Timestamp")?;
    let parsed = parse_authorization(authz)?;
    let host = raw.header("Host")?.unwrap_or("");
    let product = scope_product(&parsed.service, host, action)?;
    for name in &parsed.signed_header_names {
        if raw.header(name)?.is_none() {
            let name = clip(name);
            return Err(ApiError::invalid_authorization(
                &format!("the signed header `{name}` is not in the request"),
                &format!("签名头部`{name}`不在请求中"),
            ));
        }
    }
    check_version_action(version, action, product)?;
    let pending = match body {
        Body::Json => Pending::Json,
        Body::Flat(pairs) => Pending::Flat(pairs),
    };
    Ok(SignedRequest {
        action: action.to_string(),
        product,
        version: version.to_string(),
        region: non_empty(raw.header("X-TC-Region")?),
        timestamp,
        secret_id: parsed.secret_id,
        token: non_empty(raw.header("X-TC-Token")?),
        language: lang,
        nonce: None,
        params: Params::default(),
        pending: Some(pending),
        auth: Auth::Tc3 {
            timestamp_text: timestamp_text.to_string(),
            credential_date: parsed.date,
            service: parsed.service,
            signed_headers: parsed.signed_headers,
            signed_header_names: parsed.signed_header_names,
            signature: parsed.signature,
        },
    })
}

pub(super) struct Tc3Authorization {
    secret_id: String,
    date: String,
    service: String,
    signed_headers: String,
    signed_header_names: Vec<String>,
    signature: Vec<u8>,
}

/// `TC3-HMAC-SHA256 Credential=<id>/<date>/<service>/tc3_request, SignedHeaders=a;b, Signature=<hex>`;
/// the service is checked by [`scope_product`].
pub(super) fn parse_authorization(authz: &str) -> Result<Tc3Authorization, ApiError> {
    let bad = |en: &str, zh: &str| Err(ApiError::invalid_authorization(en, zh));
    let authz = authz.trim();
    let Some(rest) = authz.strip_prefix(TC3_ALGORITHM) else {
        return bad(
            "it must start with TC3-HMAC-SHA256",
            "必须以TC3-HMAC-SHA256开头",
        );
    };
    if !rest.starts_with(' ') {
        return bad(
            "TC3-HMAC-SHA256 must be followed by a space",
            "TC3-HMAC-SHA256之后必须有空格",
        );
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let Some((k, v)) = part.split_once('=') else {
            return bad(
                "each part must be Name=Value",
                "每一部分必须为Name=Value格式",
            );
        };
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => {
                return bad(
                    "only Credential, SignedHeaders and Signature may appear",
                    "只能包含Credential、SignedHeaders和Signature",
                )
            }
        };
        if slot.replace(v.trim()).is_some() {
            return bad("a part appears twice", "某一部分重复出现");
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return bad(
            "Credential, SignedHeaders and Signature are all required",
            "Credential、SignedHeaders和Signature都必须提供",
        );
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [secret_id, date, service, terminator] = scope[..] else {
        return bad(
            "Credential must be <SecretId>/<YYYY-MM-DD>/<service>/tc3_request",
            "Credential必须为<SecretId>/<YYYY-MM-DD>/<service>/tc3_request",
        );
    };
    if secret_id.is_empty() {
        return bad(
            "the SecretId in Credential is empty",
            "Credential中的SecretId为空",
        );
    }
    let date_ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !date_ok {
        return bad(
            "the date in Credential must be YYYY-MM-DD",
            "Credential中的日期必须为YYYY-MM-DD格式",
        );
    }
    if terminator != "tc3_request" {
        return bad(
            "Credential must end with /tc3_request",
            "Credential必须以/tc3_request结尾",
        );
    }
    let mut names: Vec<String> = Vec::new();
    for n in signed.split(';') {
        let n = n.trim().to_ascii_lowercase();
        if n.is_empty() || names.contains(&n) || names.len() >= 32 {
            return bad(
                "SignedHeaders must be distinct header names separated by `;`",
                "SignedHeaders必须是以`;`分隔的不重复头部名",
            );
        }
        names.push(n);
    }
    if !names.iter().any(|n| n == "content-type") || !names.iter().any(|n| n == "host") {
        return bad(
            "SignedHeaders must include content-type and host",
            "SignedHeaders必须包含content-type和host",
        );
    }
    names.sort();
    let sig = match hex::decode(signature) {
        Ok(s) if s.len() == 32 => s,
        _ => {
            return bad(
                "Signature must be 64 hexadecimal digits",
                "Signature必须为64位十六进制数",
            )
        }
    };
    Ok(Tc3Authorization {
        secret_id: secret_id.to_string(),
        date: date.to_string(),
        service: service.to_string(),
        signed_headers: signed.to_string(),
        signed_header_names: names,
        signature: sig,
    })
}

/// The Host values a TC3 client may have signed: the header as received
/// and, when it carries a port, the host name alone (the Node.js SDK signs
/// `URL.hostname`, never the port it sends in the header).
pub(super) fn tc3_host_candidates(host: &str) -> Vec<&str> {
    let mut out = vec![host];
    if let Some((name, port)) = host.rsplit_once(':') {
        let bracketed_v6 = name.starts_with('[') && name.ends_with(']');
        let plain = !name.contains(':') && !name.contains('/');
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && (bracketed_v6 || plain) {
            out.push(name);
        }
    }
    out
}

/// CanonicalHeaders with `host` as the Host value. Values are signed as
/// sent, only trimmed, as the SDKs sign them. (The documentation also says
/// lower-cased; accepting that too would let a case change of a signed
/// header pass.)
pub(super) fn tc3_canonical_headers(
    raw: &RawRequest,
    names: &[String],
    host: &str,
) -> Result<String, ApiError> {
    let mut out = String::new();
    for name in names {
        let value = if name == "host" {
            host
        } else {
            raw.header(name)?.unwrap_or("").trim()
        };
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    Ok(out)
}
