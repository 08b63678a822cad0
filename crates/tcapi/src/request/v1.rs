//! The legacy (v1) scheme: common parameters in the query or form body, an
//! HmacSHA1 or HmacSHA256 signature over them, and a Nonce.

use super::{
    check_version_action, non_empty, parse_language, parse_timestamp, short, Auth, Pending,
    SignedRequest,
};
use crate::actions::Product;
use crate::error::{ApiError, Language};
use crate::params::Params;
use crate::sign::SignatureMethod;

/// The single value of a common v1 parameter; sent twice is an error.
pub(super) fn single<'p>(
    pairs: &'p [(String, String)],
    name: &str,
) -> Result<Option<&'p str>, ApiError> {
    let mut found = None;
    for (k, v) in pairs {
        if k == name {
            if found.is_some() {
                return Err(ApiError::invalid_parameter(
                    format!("The parameter `{name}` is sent more than once."),
                    format!("参数`{name}`重复出现。"),
                ));
            }
            found = Some(v.as_str());
        }
    }
    Ok(found)
}

pub(super) fn required_param<'p>(
    pairs: &'p [(String, String)],
    name: &str,
) -> Result<&'p str, ApiError> {
    match single(pairs, name)? {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::missing_parameter(name)),
    }
}

pub(super) fn decode_v1(
    pairs: Vec<(String, String)>,
    lang: &mut Language,
) -> Result<SignedRequest, ApiError> {
    if let Some(l) = single(&pairs, "Language")? {
        *lang = parse_language(l, "Language")?;
    }
    let action = required_param(&pairs, "Action")?;
    let version = required_param(&pairs, "Version")?;
    let timestamp = parse_timestamp(required_param(&pairs, "Timestamp")?, "Timestamp")?;
    let nonce_text = required_param(&pairs, "Nonce")?;
    let nonce = nonce_text
        .parse::<u64>()
        .ok()
        .filter(|_| nonce_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ApiError::invalid_parameter(
                format!(
                    "The parameter `Nonce` must be a positive integer, got `{}`.",
                    short(nonce_text)
                ),
                format!("参数`Nonce`必须为正整数，实际为`{}`。", short(nonce_text)),
            )
        })?;
    let secret_id = required_param(&pairs, "SecretId")?;
    let signature = required_param(&pairs, "Signature")?.to_string();
    let method = match single(&pairs, "SignatureMethod")? {
        None | Some("HmacSHA1") => SignatureMethod::HmacSha1,
        Some("HmacSHA256") => SignatureMethod::HmacSha256,
        Some(other) => {
            return Err(ApiError::invalid_parameter(
                format!("The parameter `SignatureMethod` has the invalid value `{}`: use `HmacSHA1` or `HmacSHA256`, or TC3-HMAC-SHA256 in the Authorization header.", short(other)),
                format!("参数`SignatureMethod`的取值`{}`不合法：只能为`HmacSHA1`或`HmacSHA256`，或在Authorization头部使用TC3-HMAC-SHA256。", short(other)),
            ))
        }
    };
    let region = non_empty(single(&pairs, "Region")?);
    let token = non_empty(single(&pairs, "Token")?);
    single(&pairs, "RequestClient")?;
    // The legacy scheme names no service: the action decides.
    let product = Product::of_action(action).unwrap_or(Product::Cvm);
    check_version_action(version, action, product)?;
    let (action, version, secret_id) = (
        action.to_string(),
        version.to_string(),
        secret_id.to_string(),
    );
    let signed_pairs = pairs
        .into_iter()
        .filter(|(k, _)| k != "Signature")
        .collect();
    Ok(SignedRequest {
        action,
        product,
        version,
        region,
        timestamp,
        secret_id,
        token,
        language: *lang,
        nonce: Some(nonce),
        params: Params::default(),
        pending: Some(Pending::V1),
        auth: Auth::V1 {
            method,
            pairs: signed_pairs,
            signature,
        },
    })
}
