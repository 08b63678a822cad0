//! `[net]`: how long a client may take and how many may be connected, and
//! `[tls]`: the certificate `serve` terminates TLS with.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Seconds from accepting a connection (or from the first byte of a
    /// later request on it) until its request header is complete.
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may take to arrive, in total.
    pub body_read_timeout_secs: u64,
    /// Seconds a keep-alive connection may wait for its next request.
    pub idle_timeout_secs: u64,
    /// Connections open at once per listener. At the cap a new connection
    /// closes the oldest one that has no request in flight (idle, or still
    /// sending its header); when every one has a request in flight, the new
    /// one is closed.
    pub max_connections: usize,
    /// Accepted signatures remembered for the signature window (see
    /// `api::replay`); about 200 bytes each.
    pub replay_cache_entries: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_connections: 512,
            replay_cache_entries: 100_000,
        }
    }
}

/// The three clocks of a connection, as durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
}

impl NetConfig {
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            header: Duration::from_secs(self.header_read_timeout_secs),
            body: Duration::from_secs(self.body_read_timeout_secs),
            idle: Duration::from_secs(self.idle_timeout_secs),
        }
    }

    /// The key and reason of the first bad value, if any.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        let secs = [
            (
                "net.header_read_timeout_secs",
                self.header_read_timeout_secs,
            ),
            ("net.body_read_timeout_secs", self.body_read_timeout_secs),
            ("net.idle_timeout_secs", self.idle_timeout_secs),
        ];
        for (key, v) in secs {
            if !(1..=3600).contains(&v) {
                return Some((key, "must be 1 to 3600 seconds"));
            }
        }
        if !(2..=100_000).contains(&self.max_connections) {
            return Some(("net.max_connections", "must be 2 to 100000"));
        }
        if !(1000..=10_000_000).contains(&self.replay_cache_entries) {
            return Some(("net.replay_cache_entries", "must be 1000 to 10000000"));
        }
        None
    }
}

/// `[tls]`: PEM files; both or neither.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Both files, when TLS is configured.
    pub fn files(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }

    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Some(("tls.key_file", "cert_file needs key_file")),
            (None, Some(_)) => Some(("tls.cert_file", "key_file needs cert_file")),
            _ => None,
        }
    }
}
