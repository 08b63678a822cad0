//! Parsing an `ImageUrl`: which COS object (or allowed http(s) resource) it
//! names, and whether it may be fetched at all. Pure and synchronous: no DNS
//! (connect-time checks live in [`super::netpolicy`]; host names are
//! recognised by [`super::hosts`]).
//!
//! COS host forms recognised (host names are case-insensitive):
//! - `<bucket>-<appid>.cos.<region>.myqcloud.com` (the standard form);
//! - `<bucket>-<appid>.cos-internal.<region>.myqcloud.com` (private endpoint);
//! - `<bucket>-<appid>.cos.accelerate.myqcloud.com` (global acceleration);
//! - `<bucket>-<appid>.cosd.myqcloud.com` (legacy, Tencent's ImportImage example).
//!
//! A COS host without an appid (`import-img.cos.ap-guangzhou.myqcloud.com`,
//! seen in one Tencent example) is taken as a bucket of the caller's own
//! account: COS itself resolves such names against the requester, and the
//! caller cannot reach another account's bucket through it.
//!
//! The URL text is checked before the WHATWG parser normalises it, because
//! that parser silently turns `2130706433`, `0177.0.0.1`, `0x7f.1` and
//! `127.1` into `127.0.0.1`, and folds `%2e%2e` path segments away. Such
//! spellings are refused (Glance CVE-2026-34881 did the same).

use std::net::IpAddr;

use super::hosts::{cos_host, literal_ip};
use super::netpolicy::NetPolicy;
use crate::config::SourceConfig;

/// Longest `ImageUrl` accepted (pre-signed COS URLs are a few hundred bytes).
pub const MAX_URL_LEN: usize = 4096;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A COS object of the caller's account.
    Cos {
        /// The bucket name without the `-<appid>` suffix.
        bucket: String,
        app_id: u64,
        /// `None` for the legacy `cosd` and the accelerate hosts.
        region: Option<String>,
        /// The object key, percent-decoded once, without the leading `/`.
        key: String,
        /// The URL as parsed (query kept: pre-signed URLs need it).
        url: String,
    },
    /// A non-COS http(s) URL whose host is in `source.allow_hosts`.
    Http { url: reqwest::Url },
}

impl ImageSource {
    /// `<bucket>-<appid>`, the bucket's full name, for COS sources.
    pub fn cos_bucket_full_name(&self) -> Option<String> {
        match self {
            ImageSource::Cos { bucket, app_id, .. } => Some(format!("{bucket}-{app_id}")),
            ImageSource::Http { .. } => None,
        }
    }
}

/// Why an `ImageUrl` was refused. Every variant is reported as
/// `InvalidParameter.InvalidParameterUrlError` (see [`UrlError::code`]) with
/// the Display text as the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("ImageUrl is malformed: {0}")]
    Malformed(String),
    #[error("ImageUrl must use https:// (or http://), not \"{0}\"")]
    Scheme(String),
    #[error(
        "ImageUrl host \"{0}\" is not a COS host \
         (https://<bucket>-<appid>.cos.<region>.myqcloud.com/<key>) \
         and is not listed in source.allow_hosts"
    )]
    NotCos(String),
    #[error(
        "ImageUrl names the COS bucket {bucket}-{app_id}, which belongs to appid {app_id}, \
         not to your account (appid {account_app_id}); copy the image into one of your buckets"
    )]
    ForeignBucket {
        bucket: String,
        app_id: u64,
        account_app_id: u64,
    },
    #[error("ImageUrl address refused: {0}")]
    AddressRefused(String),
    #[error("ImageUrl object key is not usable: {0}")]
    BadKey(String),
}

impl UrlError {
    /// The synchronous Tencent error code for every URL refusal.
    pub fn code(&self) -> &'static str {
        "InvalidParameter.InvalidParameterUrlError"
    }
}

/// The pieces of the URL text before any normalisation.
struct RawParts<'a> {
    scheme: &'a str,
    userinfo: bool,
    host: &'a str,
    /// From the first `/` after the authority up to `?` or `#`.
    path: &'a str,
    fragment: bool,
}

fn split_raw(url: &str) -> Result<RawParts<'_>, UrlError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| UrlError::Malformed("it must start with https:// (or http://)".into()))?;
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    let after = &rest[auth_end..];
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((_, hp)) => (true, hp),
        None => (false, authority),
    };
    let host = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(i) => &hostport[..=i],
            None => return Err(UrlError::Malformed("unclosed [ in the host".into())),
        }
    } else {
        hostport.split(':').next().unwrap_or_default()
    };
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    Ok(RawParts {
        scheme,
        userinfo,
        host,
        path: &after[..path_end],
        fragment: after.contains('#'),
    })
}

/// Decodes `%XX` once. Invalid escapes and non-UTF-8 results are refused.
fn percent_decode_once(s: &str) -> Result<String, UrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .ok_or_else(|| UrlError::BadKey("a % is not followed by two hex digits".into()))?;
            let hi = (hex[0] as char).to_digit(16);
            let lo = (hex[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => {
                    return Err(UrlError::BadKey(
                        "a % is not followed by two hex digits".into(),
                    ))
                }
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::BadKey("it does not decode to UTF-8".into()))
}

/// The COS object key from the raw path: decoded once, and refused when it
/// could name something other than one object under the bucket.
fn cos_key(raw_path: &str) -> Result<String, UrlError> {
    let key = percent_decode_once(raw_path.strip_prefix('/').unwrap_or(raw_path))?;
    if key.is_empty() {
        return Err(UrlError::BadKey(
            "it is empty; the URL must name an object, not the bucket".into(),
        ));
    }
    if key.contains('\0') {
        return Err(UrlError::BadKey("it contains a NUL byte".into()));
    }
    for seg in key.split('/') {
        match seg {
            "" => {
                return Err(UrlError::BadKey(
                    "it has an empty path segment (a leading, doubled or trailing /)".into(),
                ))
            }
            "." | ".." => return Err(UrlError::BadKey(format!("it has a \"{seg}\" path segment"))),
            _ => {}
        }
    }
    Ok(key)
}

/// Parses and checks an `ImageUrl` (or a data disk's) for the account with
/// `account_app_id`. Pure: no DNS, no I/O.
pub fn parse_image_url(
    url: &str,
    account_app_id: u64,
    cfg: &SourceConfig,
) -> Result<ImageSource, UrlError> {
    let raw = checked_form(url)?;
    let parsed = reqwest::Url::parse(url).map_err(|e| UrlError::Malformed(e.to_string()))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| UrlError::Malformed("it has no host".into()))?
        .to_owned();

    let policy = NetPolicy::new(cfg, Some(account_app_id));
    if let Some(ip) = literal_ip(&host) {
        check_ip_spelling(raw.host, ip)?;
        let listed = policy.host_listed(&host);
        policy
            .check_ip(ip, listed)
            .map_err(|e| UrlError::AddressRefused(e.0))?;
        if !listed {
            return Err(UrlError::NotCos(host));
        }
        return Ok(ImageSource::Http { url: parsed });
    }
    if raw.host.to_ascii_lowercase() != host {
        return Err(UrlError::Malformed(format!(
            "write its host in canonical form (\"{host}\", not \"{}\")",
            raw.host
        )));
    }
    if let Some(cos) = cos_host(&host) {
        let app_id = match cos.app_id {
            Some(id) if id != account_app_id => {
                return Err(UrlError::ForeignBucket {
                    bucket: cos.bucket,
                    app_id: id,
                    account_app_id,
                })
            }
            Some(id) => id,
            // No appid in the host: the caller's own bucket (module docs).
            None => account_app_id,
        };
        let key = cos_key(raw.path)?;
        return Ok(ImageSource::Cos {
            bucket: cos.bucket,
            app_id,
            region: cos.region,
            key,
            url: parsed.to_string(),
        });
    }
    if policy.host_listed(&host) {
        return Ok(ImageSource::Http { url: parsed });
    }
    Err(UrlError::NotCos(host))
}

/// The URL's text as a whole and its parts as written: bounded, nothing the
/// WHATWG parser would rewrite, http(s), no credentials or fragment, a host.
fn checked_form(url: &str) -> Result<RawParts<'_>, UrlError> {
    if url.is_empty() {
        return Err(UrlError::Malformed("it is empty".into()));
    }
    if url.len() > MAX_URL_LEN {
        return Err(UrlError::Malformed(format!(
            "it is longer than {MAX_URL_LEN} bytes"
        )));
    }
    // The WHATWG parser strips tabs and newlines anywhere and treats `\` as
    // `/`: either would make the text checked differ from the URL fetched.
    if let Some(c) = url
        .chars()
        .find(|c| c.is_ascii_control() || *c == ' ' || *c == '\\')
    {
        return Err(UrlError::Malformed(format!(
            "it contains {c:?}; percent-encode spaces and special characters"
        )));
    }
    let raw = split_raw(url)?;
    let scheme = raw.scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(UrlError::Scheme(raw.scheme.to_owned()));
    }
    if raw.userinfo {
        return Err(UrlError::Malformed(
            "it carries user credentials (user@host); use a pre-signed URL instead".into(),
        ));
    }
    if raw.fragment {
        return Err(UrlError::Malformed(
            "it has a #fragment; percent-encode # in object keys as %23".into(),
        ));
    }
    if raw.host.is_empty() {
        return Err(UrlError::Malformed("it has no host".into()));
    }
    Ok(raw)
}

/// An IP literal must be written the one canonical way: the WHATWG parser
/// accepts decimal, octal, hex and short forms, which filters written for
/// dotted quads miss.
fn check_ip_spelling(raw_host: &str, ip: IpAddr) -> Result<(), UrlError> {
    let ok = match ip {
        IpAddr::V4(v4) => raw_host == v4.to_string(),
        // Any RFC 4291 text form is fine: it names one address unambiguously
        // and std's parser reads exactly that grammar (no zone ids).
        IpAddr::V6(v6) => {
            raw_host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
                == Some(v6)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(UrlError::AddressRefused(format!(
            "\"{raw_host}\" is a non-canonical spelling of the IP address {ip}; \
             IP addresses must be written as plain dotted quads"
        )))
    }
}

#[cfg(test)]
mod tests;
