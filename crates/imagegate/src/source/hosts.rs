//! Host names of image URLs taken apart: COS host forms and IP literals.
//! Pure text, shared by the URL parser ([`super::url`]) and the network
//! policy ([`super::netpolicy`]), so neither needs the other for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A COS host name taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosHost {
    pub bucket: String,
    pub app_id: Option<u64>,
    pub region: Option<String>,
}

fn is_name_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Recognises a COS host (already lower-case, as `Url` gives it). `None` for
/// any other host.
pub fn cos_host(host: &str) -> Option<CosHost> {
    let host = host.to_ascii_lowercase();
    let rest = host.strip_suffix(".myqcloud.com")?;
    let labels: Vec<&str> = rest.split('.').collect();
    let (bucket_label, region) = match labels.as_slice() {
        [b, "cos", "accelerate"] => (*b, None),
        [b, "cos" | "cos-internal", region] if is_name_label(region) => {
            (*b, Some((*region).to_owned()))
        }
        [b, "cosd"] => (*b, None),
        _ => return None,
    };
    if !is_name_label(bucket_label) {
        return None;
    }
    let (bucket, app_id) = match bucket_label.rsplit_once('-') {
        Some((b, id)) if !id.is_empty() && id.bytes().all(|c| c.is_ascii_digit()) => {
            // All digits after the last '-': that is the appid, and one that
            // does not fit is refused rather than read as part of the name.
            match id.parse::<u64>() {
                Ok(n) if !b.is_empty() => (b.to_owned(), Some(n)),
                _ => return None,
            }
        }
        _ => (bucket_label.to_owned(), None),
    };
    Some(CosHost {
        bucket,
        app_id,
        region,
    })
}

/// The IP address a URL host (as `Url::host_str` gives it) spells, if any.
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cos_host_parsing() {
        assert_eq!(
            cos_host("a-b-c-1250000000.cos.ap-guangzhou.myqcloud.com"),
            Some(CosHost {
                bucket: "a-b-c".into(),
                app_id: Some(1250000000),
                region: Some("ap-guangzhou".into())
            })
        );
        assert_eq!(cos_host("cos.ap-guangzhou.myqcloud.com"), None);
        assert_eq!(cos_host("x.y.cos.ap-guangzhou.myqcloud.com"), None);
        assert_eq!(cos_host("-1250000000.cos.ap-guangzhou.myqcloud.com"), None);
        // An appid that does not fit u64 is not silently something else.
        assert_eq!(cos_host("b-99999999999999999999.cosd.myqcloud.com"), None);
    }
}
