//! The network policy for image sources: which addresses a download may
//! connect to, enforced where it matters.
//!
//! A URL check alone is not enough (Glance CVE-2026-34881: redirects; DNS
//! rebinding: the name resolves to one address when checked and to another
//! when connected). So the policy sits in three places of the HTTP client
//! built by [`NetPolicy::http_client`]:
//! - a DNS resolver that resolves, filters every address through the policy
//!   and hands the connector only the allowed ones: the address checked is the
//!   address connected to;
//! - a redirect policy that re-validates every hop (scheme, host, IP literal);
//! - [`NetPolicy::check_url`], which callers run before the first request,
//!   because reqwest does not consult the resolver for IP-literal URLs.
//!
//! Refused by default: loopback, RFC 1918, link-local (the metadata address
//! 169.254.169.254 among them), CGNAT, unique-local, IPv4-mapped/compatible
//! IPv6 and NAT64 (classified by the IPv4 address they embed), unspecified,
//! multicast, broadcast, "this network", IETF protocol assignments,
//! benchmarking, documentation and reserved ranges. `allow_private_networks`
//! opens all of them; a host listed in `allow_hosts` may resolve to them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::hosts::{cos_host, literal_ip};
use crate::config::SourceConfig;

/// The name of the refused range `ip` lies in, or `None` for a public
/// unicast address.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_range_v4(v4),
        IpAddr::V6(v6) => refused_range_v6(v6),
    }
}

fn refused_range_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let name = match (a, b, c) {
        _ if ip.is_broadcast() => "the broadcast address",
        (0, _, _) => "\"this network\" 0.0.0.0/8",
        (10, _, _) => "the private network 10.0.0.0/8",
        (100, 64..=127, _) => "the carrier-grade NAT range 100.64.0.0/10",
        (127, _, _) => "loopback 127.0.0.0/8",
        (169, 254, _) => "link-local 169.254.0.0/16 (cloud metadata lives here)",
        (172, 16..=31, _) => "the private network 172.16.0.0/12",
        (192, 0, 0) => "the IETF protocol range 192.0.0.0/24",
        (192, 0, 2) => "the documentation range 192.0.2.0/24",
        (192, 88, 99) => "the deprecated 6to4 relay range 192.88.99.0/24",
        (192, 168, _) => "the private network 192.168.0.0/16",
        (198, 18..=19, _) => "the benchmarking range 198.18.0.0/15",
        (198, 51, 100) => "the documentation range 198.51.100.0/24",
        (203, 0, 113) => "the documentation range 203.0.113.0/24",
        (224..=239, _, _) => "multicast 224.0.0.0/4",
        (240..=255, _, _) => "the reserved range 240.0.0.0/4",
        _ => return None,
    };
    Some(name)
}

fn refused_range_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    // Addresses that carry an IPv4 address are judged by it: `::ffff:127.0.0.1`
    // reaches loopback on a dual-stack host, `64:ff9b::a9fe:a9fe` reaches the
    // metadata service through a NAT64 gateway.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_range_v4(v4).map(|_| "an IPv4-mapped IPv6 address of a refused IPv4 range");
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        // IPv4-compatible (deprecated): refused whatever it embeds.
        return Some("an IPv4-compatible IPv6 address (::/96)");
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return refused_range_v4(v4)
            .map(|_| "a NAT64 (64:ff9b::/96) address of a refused IPv4 range");
    }
    let name = match seg[0] {
        _ if ip.is_unspecified() => "the unspecified address ::",
        _ if ip.is_loopback() => "loopback ::1",
        0x0064 if seg[1] == 0xff9b && seg[2] == 1 => "the local NAT64 range 64:ff9b:1::/48",
        0x0100 if seg[1..4] == [0, 0, 0] => "the discard range 100::/64",
        0x2001 if seg[1] < 0x0200 => "the IETF protocol range 2001::/23",
        0x2001 if seg[1] == 0x0db8 => "the documentation range 2001:db8::/32",
        0x2002 => "6to4 2002::/16 (it embeds an IPv4 address)",
        0x3fff if seg[1] < 0x1000 => "the documentation range 3fff::/20",
        0x5f00 => "the SRv6 range 5f00::/16",
        x if x & 0xfe00 == 0xfc00 => "unique-local fc00::/7",
        x if x & 0xffc0 == 0xfe80 => "link-local fe80::/10",
        x if x & 0xffc0 == 0xfec0 => "site-local fec0::/10",
        x if x & 0xff00 == 0xff00 => "multicast ff00::/8",
        _ => return None,
    };
    Some(name)
}

/// Why the policy refused a URL or an address. It travels inside reqwest's
/// errors (resolver and redirect policy), where `fetch` finds it again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PolicyRefusal(pub String);

/// The policy, built once from the configuration.
#[derive(Debug, Clone)]
pub struct NetPolicy {
    allow_private_networks: bool,
    /// Lower-cased host names and canonical IP literals (no brackets).
    allow_hosts: Vec<String>,
    /// The caller's appid: a redirect to another account's COS bucket is
    /// refused like the original URL would be. `None` (a non-COS source):
    /// COS hosts are allowed only if listed, like any other host.
    account_app_id: Option<u64>,
}

/// One allow_hosts entry in comparable form: lower case, IPv6 without
/// brackets and in canonical text.
fn normalize_host(host: &str) -> String {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    match h.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => h.to_ascii_lowercase(),
    }
}

impl NetPolicy {
    pub fn new(cfg: &SourceConfig, account_app_id: Option<u64>) -> Self {
        NetPolicy {
            allow_private_networks: cfg.allow_private_networks,
            allow_hosts: cfg.allow_hosts.iter().map(|h| normalize_host(h)).collect(),
            account_app_id,
        }
    }

    /// Whether `host` (as in a URL: IPv6 with or without brackets) is listed
    /// in `allow_hosts`. Exact, case-insensitive.
    pub fn host_listed(&self, host: &str) -> bool {
        let h = normalize_host(host);
        self.allow_hosts.contains(&h)
    }

    /// Checks one address the client is about to connect to. `host_listed`:
    /// the name it came from is in `allow_hosts`.
    pub fn check_ip(&self, ip: IpAddr, host_listed: bool) -> Result<(), PolicyRefusal> {
        if self.allow_private_networks || host_listed {
            return Ok(());
        }
        match refused_range(ip) {
            None => Ok(()),
            Some(range) => Err(PolicyRefusal(format!(
                "the address {ip} is in {range}, which image downloads may not reach; \
                 list the host in source.allow_hosts or set source.allow_private_networks \
                 if this is intended"
            ))),
        }
    }

    /// Checks a URL the client is about to request (the first one, or a
    /// redirect hop): scheme, no userinfo, host allowed (a COS host of the
    /// caller's account or an allow_hosts entry), IP literal not refused.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), PolicyRefusal> {
        match url.scheme() {
            "http" | "https" => {}
            s => {
                return Err(PolicyRefusal(format!(
                    "the scheme \"{s}\" is not allowed; only http and https"
                )))
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(PolicyRefusal(
                "URLs with user credentials (user@host) are not allowed".into(),
            ));
        }
        let host_text = match url.host_str() {
            Some(h) if !h.is_empty() => h,
            _ => return Err(PolicyRefusal("the URL has no host".into())),
        };
        let listed = self.host_listed(host_text);
        // `Url` keeps hosts canonical: IPv6 in brackets, IPv4 dotted-quad.
        if let Some(ip) = literal_ip(host_text) {
            return self.check_ip(ip, listed);
        }
        if !listed {
            match cos_host(host_text) {
                Some(h)
                    if self.account_app_id.is_some()
                        && (h.app_id.is_none() || h.app_id == self.account_app_id) => {}
                Some(_) if self.account_app_id.is_some() => {
                    return Err(PolicyRefusal(format!(
                        "the host {host_text} is a COS bucket of another account"
                    )))
                }
                _ => {
                    return Err(PolicyRefusal(format!(
                        "the host {host_text} is neither a COS host nor listed in \
                         source.allow_hosts"
                    )))
                }
            }
        }
        Ok(())
    }

    /// An HTTP client that enforces this policy at connect time and on every
    /// redirect, never uses a proxy from the environment, and never decodes
    /// content (the bytes hashed and resumed are the bytes stored).
    /// `read_idle`: the stall timeout (no bytes for this long).
    pub fn http_client(
        &self,
        read_idle: Duration,
        connect_timeout: Duration,
    ) -> Result<reqwest::Client, reqwest::Error> {
        let redirect_policy = {
            let policy = self.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                // `previous` holds the original URL and every hop so far.
                if attempt.previous().len() > MAX_REDIRECTS {
                    let e = PolicyRefusal(format!(
                        "more than {MAX_REDIRECTS} redirects; give the final URL instead"
                    ));
                    return attempt.error(e);
                }
                match policy.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => {
                        let e = PolicyRefusal(format!(
                            "redirect to {} refused: {}",
                            redact_query(attempt.url()),
                            e.0
                        ));
                        attempt.error(e)
                    }
                }
            })
        };
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT_ENCODING,
            reqwest::header::HeaderValue::from_static("identity"),
        );
        reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect_policy)
            .dns_resolver(Arc::new(PolicyResolver {
                policy: self.clone(),
            }))
            .default_headers(headers)
            .connect_timeout(connect_timeout)
            // A backstop only: `fetch` times every body read itself
            // (stall timeout) and reports it precisely.
            .read_timeout(read_idle.saturating_mul(2))
            .user_agent(concat!("imagegate/", env!("CARGO_PKG_VERSION")))
            .build()
    }
}

/// Most redirect hops followed for one request.
pub const MAX_REDIRECTS: usize = 5;

/// A URL for messages: pre-signed query strings carry credentials.
pub fn redact_query(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.to_string()
}

/// The resolver that makes the connect-time check: only addresses the
/// policy allows ever reach the connector.
struct PolicyResolver {
    policy: NetPolicy,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let listed = policy.host_listed(&host);
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> {
                    Box::new(DnsFailure(format!("cannot resolve {host}: {e}")))
                })?
                // A resolver answer is not trusted for its size either.
                .take(64)
                .collect();
            let mut allowed = Vec::new();
            let mut first_refusal = None;
            for addr in found {
                match policy.check_ip(addr.ip(), listed) {
                    Ok(()) => allowed.push(addr),
                    Err(e) => {
                        first_refusal.get_or_insert(e);
                    }
                }
            }
            if allowed.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = match first_refusal {
                    Some(r) => Box::new(PolicyRefusal(format!("{host} resolves to {}", r.0))),
                    None => Box::new(DnsFailure(format!("{host} has no address"))),
                };
                return Err(e);
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// A name that does not resolve: the source is unreachable, not refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DnsFailure(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn refused_v4_ranges() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(refused_range(v4(a)).is_some(), "{a} must be refused");
        }
    }

    #[test]
    fn public_v4_allowed() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.1",
        ] {
            assert_eq!(refused_range(v4(a)), None, "{a} must be allowed");
        }
    }

    #[test]
    fn refused_v6_ranges() {
        for a in [
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:7f00:1::",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(refused_range(v6(a)).is_some(), "{a} must be refused");
        }
    }

    #[test]
    fn public_v6_allowed() {
        for a in [
            "2400:cb00::1",
            "2606:4700::6810:84e5",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2001:4860::8888",
        ] {
            assert_eq!(refused_range(v6(a)), None, "{a} must be allowed");
        }
    }

    #[test]
    fn opening_the_policy() {
        let mut cfg = SourceConfig::default();
        let p = NetPolicy::new(&cfg, Some(1));
        assert!(p.check_ip(v4("127.0.0.1"), false).is_err());
        assert!(p.check_ip(v4("127.0.0.1"), true).is_ok());
        cfg.allow_private_networks = true;
        let p = NetPolicy::new(&cfg, Some(1));
        assert!(p.check_ip(v4("169.254.169.254"), false).is_ok());
    }

    #[test]
    fn host_listing_is_exact_and_case_insensitive() {
        let cfg = SourceConfig {
            allow_hosts: vec!["Images.Example.COM".into(), "[::1]".into(), "::2".into()],
            ..SourceConfig::default()
        };
        let p = NetPolicy::new(&cfg, Some(1));
        assert!(p.host_listed("images.example.com"));
        assert!(!p.host_listed("evil.images.example.com"));
        assert!(!p.host_listed("images.example.com.evil"));
        assert!(p.host_listed("[::1]"));
        assert!(p.host_listed("::1"));
        assert!(p.host_listed("[0:0::2]"));
    }

    #[test]
    fn redirect_urls_are_checked() {
        let cfg = SourceConfig {
            allow_hosts: vec!["localhost".into()],
            ..SourceConfig::default()
        };
        let p = NetPolicy::new(&cfg, Some(1251233127));
        let ok = |s: &str| p.check_url(&reqwest::Url::parse(s).unwrap()).is_ok();
        assert!(ok("http://localhost:8080/x"));
        assert!(ok("https://b-1251233127.cos.ap-guangzhou.myqcloud.com/x"));
        assert!(!ok("https://b-1251233128.cos.ap-guangzhou.myqcloud.com/x"));
        assert!(!ok("http://127.0.0.1:8080/x"));
        assert!(!ok("http://169.254.169.254/latest/meta-data/"));
        assert!(!ok("http://[::ffff:127.0.0.1]/"));
        assert!(!ok("http://example.com/"));
        assert!(!ok("ftp://localhost/x"));
        assert!(!ok("file:///etc/passwd"));
        assert!(!ok("http://user:pw@localhost/x"));
    }
}
