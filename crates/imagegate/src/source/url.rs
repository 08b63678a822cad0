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
mod tests {
    use super::*;

    const APP: u64 = 1251233127;

    fn parse(u: &str) -> Result<ImageSource, UrlError> {
        parse_image_url(u, APP, &SourceConfig::default())
    }

    #[test]
    fn tencent_examples() {
        let s = parse(
            "http://111-1251233127.cosd.myqcloud.com/Windows%20Server%202008%20R2%20x64a.vmdk",
        )
        .unwrap();
        match s {
            ImageSource::Cos {
                bucket,
                app_id,
                region,
                key,
                ..
            } => {
                assert_eq!(bucket, "111");
                assert_eq!(app_id, APP);
                assert_eq!(region, None);
                assert_eq!(key, "Windows Server 2008 R2 x64a.vmdk");
            }
            other => panic!("{other:?}"),
        }
        let s = parse("https://user-test-1251233127.cos.ap-guangzhou.myqcloud.com/snap-xxxx.qcow2")
            .unwrap();
        assert_eq!(
            s,
            ImageSource::Cos {
                bucket: "user-test".into(),
                app_id: APP,
                region: Some("ap-guangzhou".into()),
                key: "snap-xxxx.qcow2".into(),
                url: "https://user-test-1251233127.cos.ap-guangzhou.myqcloud.com/snap-xxxx.qcow2"
                    .into()
            }
        );
        // No appid: the caller's bucket.
        match parse("https://import-img.cos.ap-guangzhou.myqcloud.com/import-img.vpc").unwrap() {
            ImageSource::Cos { bucket, app_id, .. } => {
                assert_eq!(bucket, "import-img");
                assert_eq!(app_id, APP);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_cos_hosts() {
        for (u, region) in [
            (
                "https://b-1251233127.cos-internal.ap-shanghai.myqcloud.com/k",
                Some("ap-shanghai"),
            ),
            ("https://b-1251233127.cos.accelerate.myqcloud.com/k", None),
            (
                "HTTPS://B-1251233127.COS.AP-BEIJING.MYQCLOUD.COM/k",
                Some("ap-beijing"),
            ),
            (
                "https://b-1251233127.cos.ap-beijing.myqcloud.com:443/k?sign=abc",
                Some("ap-beijing"),
            ),
        ] {
            match parse(u) {
                Ok(ImageSource::Cos { region: r, key, .. }) => {
                    assert_eq!(r.as_deref(), region, "{u}");
                    assert_eq!(key, "k");
                }
                other => panic!("{u}: {other:?}"),
            }
        }
    }

    #[test]
    fn keys_decode_once_and_refuse_escapes() {
        let key = |u: &str| match parse(u) {
            Ok(ImageSource::Cos { key, .. }) => Ok(key),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let base = "https://b-1251233127.cos.ap-guangzhou.myqcloud.com";
        assert_eq!(key(&format!("{base}/dir/a%2520b")).unwrap(), "dir/a%20b");
        assert_eq!(
            key(&format!("{base}/%E9%95%9C%E5%83%8F.qcow2")).unwrap(),
            "镜像.qcow2"
        );
        assert_eq!(key(&format!("{base}/a+b")).unwrap(), "a+b");
        for bad in [
            "/",
            "",
            "/a/../b",
            "/a/%2e%2e/b",
            "/%2E%2E/x",
            "/./x",
            "/a/%2E/b",
            "/a//b",
            "/%2Fetc/passwd",
            "/a/",
            "/a%00b",
            "/a%zzb",
            "/a%4",
            "/%ff%fe",
        ] {
            assert!(
                matches!(key(&format!("{base}{bad}")), Err(UrlError::BadKey(_))),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn foreign_bucket() {
        assert_eq!(
            parse("https://b-1300000000.cos.ap-guangzhou.myqcloud.com/x"),
            Err(UrlError::ForeignBucket {
                bucket: "b".into(),
                app_id: 1300000000,
                account_app_id: APP
            })
        );
    }

    #[test]
    fn not_cos() {
        for u in [
            "https://example.com/x.qcow2",
            "https://b-1251233127.cos.ap-guangzhou.myqcloud.com.evil.com/x",
            "https://evilmyqcloud.com/x",
            "https://b-1251233127.s3.amazonaws.com/x",
            "https://b-1251233127.cos.ap-guangzhou.example.com/x",
            "https://localhost/x",
            "http://8.8.8.8/x",
        ] {
            assert!(
                matches!(parse(u), Err(UrlError::NotCos(_))),
                "{u}: {:?}",
                parse(u)
            );
        }
    }

    #[test]
    fn schemes_and_shapes() {
        for u in ["ftp://x/y", "file:///etc/passwd", "gopher://127.0.0.1/"] {
            assert!(matches!(parse(u), Err(UrlError::Scheme(_))), "{u}");
        }
        for u in [
            "",
            "cos.ap-guangzhou.myqcloud.com/x",
            "https:b-1251233127.cos.ap-guangzhou.myqcloud.com/x",
            "https:///x",
            "https://user@b-1251233127.cos.ap-guangzhou.myqcloud.com/x",
            "https://u:p@b-1251233127.cos.ap-guangzhou.myqcloud.com/x",
            "https://b-1251233127.cos.ap-guangzhou.myqcloud.com/x#frag",
            "https://b-1251233127.cos.ap-guangzhou.myqcloud.com\\@127.0.0.1/x",
            "https://b-1251233127.cos.ap-guangzhou.myqcloud.com/a b",
            "https://b-1251233127.cos.ap-guangzhou.myqcloud.com/a\tb",
            "https://b-1251233127.cos.ap-guangzhou.myqcloud.com/a\nb",
            "https://[::1/x",
        ] {
            assert!(
                matches!(parse(u), Err(UrlError::Malformed(_))),
                "{u}: {:?}",
                parse(u)
            );
        }
        let long = format!(
            "https://b-1251233127.cos.ap-guangzhou.myqcloud.com/{}",
            "a".repeat(MAX_URL_LEN)
        );
        assert!(matches!(parse(&long), Err(UrlError::Malformed(_))));
    }

    #[test]
    fn non_canonical_ip_spellings_are_refused() {
        let cfg = SourceConfig {
            // Even an operator who opened private networks gets no
            // obfuscated spellings.
            allow_private_networks: true,
            ..SourceConfig::default()
        };
        for u in [
            "http://2130706433/x",
            "http://0177.0.0.1/x",
            "http://0x7f.1/x",
            "http://0x7f000001/x",
            "http://127.1/x",
            "http://127.0.1/x",
            "http://127.000.000.001/x",
            "http://127.0.0.1./x",
            "http://%31%32%37.0.0.1/x",
            "http://017700000001/x",
        ] {
            assert!(
                matches!(
                    parse_image_url(u, APP, &cfg),
                    Err(UrlError::AddressRefused(_))
                ),
                "{u}: {:?}",
                parse_image_url(u, APP, &cfg)
            );
        }
    }

    #[test]
    fn refused_ip_literals() {
        for u in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/x",
            "http://172.16.0.1/x",
            "http://192.168.0.1/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/x",
            "http://0.0.0.0/x",
            "http://224.0.0.1/x",
            "http://255.255.255.255/x",
            "http://240.0.0.1/x",
            "http://192.0.0.1/x",
            "http://198.18.0.1/x",
            "http://192.0.2.1/x",
            "http://[::1]/x",
            "http://[::]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[::ffff:7f00:1]/x",
            "http://[::ffff:a9fe:a9fe]/x",
            "http://[64:ff9b::7f00:1]/x",
            "http://[fe80::1]/x",
            "http://[fd00::1]/x",
            "http://[ff02::1]/x",
        ] {
            assert!(
                matches!(parse(u), Err(UrlError::AddressRefused(_))),
                "{u}: {:?}",
                parse(u)
            );
        }
    }

    #[test]
    fn allow_hosts_opens_hosts_and_private_literals() {
        let cfg = SourceConfig {
            allow_hosts: vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
            ..SourceConfig::default()
        };
        for u in [
            "http://localhost:8080/img.raw",
            "http://LOCALHOST/img.raw",
            "http://127.0.0.1:9/img.raw",
            "http://[::1]:9/img.raw",
        ] {
            assert!(
                matches!(parse_image_url(u, APP, &cfg), Ok(ImageSource::Http { .. })),
                "{u}"
            );
        }
        // Listing 127.0.0.1 does not open its other spellings.
        assert!(matches!(
            parse_image_url("http://127.1/x", APP, &cfg),
            Err(UrlError::AddressRefused(_))
        ));
        // A listed name is not a listed suffix.
        assert!(matches!(
            parse_image_url("http://localhost.evil.com/x", APP, &cfg),
            Err(UrlError::NotCos(_))
        ));
        // allow_private_networks alone does not make a host fetchable.
        let cfg = SourceConfig {
            allow_private_networks: true,
            ..SourceConfig::default()
        };
        assert!(matches!(
            parse_image_url("http://10.0.0.1/x", APP, &cfg),
            Err(UrlError::NotCos(_))
        ));
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let e = parse("https://b-1300000000.cos.ap-guangzhou.myqcloud.com/x").unwrap_err();
        assert!(e.to_string().contains("1300000000"), "{e}");
        assert_eq!(e.code(), "InvalidParameter.InvalidParameterUrlError");
        let e = parse("http://0x7f.1/x").unwrap_err();
        assert!(e.to_string().contains("non-canonical"), "{e}");
        let e = parse("http://169.254.169.254/").unwrap_err();
        assert!(e.to_string().contains("169.254.169.254"), "{e}");
    }
}
