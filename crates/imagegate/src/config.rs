//! Configuration: a TOML file, then `IMAGEGATE_*` environment overrides,
//! then command-line flags. Every key is documented in the README.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the API listens on.
    pub listen: String,
    /// Serve /readyz and /metrics (and /healthz) on this address instead of
    /// beside the API; a `worker` process serves them only here.
    pub ops_listen: Option<String>,
    /// SQLite catalog, local blob store (`images/<ImageId>.qcow2`), scratch.
    pub data_dir: PathBuf,
    /// Regions served; requests for others get `UnsupportedRegion`.
    pub regions: Vec<String>,
    /// Regions that can import; default: all served regions.
    pub import_regions: Option<Vec<String>>,
    pub rate_limits: RateLimitConfig,
    pub accounts: Vec<AccountConfig>,
    pub source: SourceConfig,
    pub limits: LimitsConfig,
    pub workers: WorkerConfig,
    pub catalog: CatalogConfig,
    pub blobs: BlobConfig,
    pub log: LogConfig,
    /// Connection timeouts and cap (see `net`).
    pub net: crate::net::NetConfig,
    /// TLS for the API listener (`serve` terminates it itself).
    pub tls: crate::net::TlsConfig,
    /// Overrides DescribeImportImageOs (and the OS checks of ImportImage).
    pub import_os: Option<Vec<ImportOsEntry>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:9000".into(),
            ops_listen: None,
            data_dir: PathBuf::from("imagegate-data"),
            regions: vec!["ap-guangzhou".into()],
            import_regions: None,
            rate_limits: RateLimitConfig::default(),
            accounts: Vec::new(),
            source: SourceConfig::default(),
            limits: LimitsConfig::default(),
            workers: WorkerConfig::default(),
            catalog: CatalogConfig::default(),
            blobs: BlobConfig::default(),
            log: LogConfig::default(),
            net: crate::net::NetConfig::default(),
            tls: crate::net::TlsConfig::default(),
            import_os: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Where a limit holds (see [`RateLimitScope`]).
    pub scope: RateLimitScope,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            scope: RateLimitScope::Cluster,
        }
    }
}

/// `rate_limits.scope`: `cluster` (the default) shares each account's
/// buckets between every node of a PostgreSQL catalog; `node` keeps them in
/// each process. A SQLite catalog has one node, so both mean the same there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitScope {
    Cluster,
    Node,
}

// Debug is written by hand below so that a secret key never reaches a log.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub secret_id: String,
    pub secret_key: String,
    /// Owner of COS buckets named `<bucket>-<app_id>`.
    pub app_id: u64,
    /// Reported as `ImageCreator`.
    pub uin: String,
    #[serde(default = "default_image_quota")]
    pub image_quota: u32,
    /// Bytes of stored images the account may keep, in GiB (fractions
    /// allowed); none: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_quota_gib: Option<f64>,
}

impl std::fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountConfig")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"<redacted>")
            .field("app_id", &self.app_id)
            .field("uin", &self.uin)
            .field("image_quota", &self.image_quota)
            .field("storage_quota_gib", &self.storage_quota_gib)
            .finish()
    }
}

pub fn default_image_quota() -> u32 {
    500
}

// Debug by hand: `cos_secret_key` must never be printed.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// A folder standing in for COS: object `<bucket>-<appid>/<key>`.
    pub cos_root: Option<PathBuf>,
    /// An S3-compatible endpoint standing in for COS (path-style requests).
    pub cos_endpoint: Option<String>,
    pub cos_access_key: Option<String>,
    pub cos_secret_key: Option<String>,
    /// Region used to sign requests to `cos_endpoint` (default "us-east-1").
    pub cos_region: Option<String>,
    /// Hosts of non-COS http(s) URLs that may be fetched (also on private networks).
    pub allow_hosts: Vec<String>,
    /// Let any allowed host resolve to private/loopback/link-local addresses.
    pub allow_private_networks: bool,
    /// A download that receives no byte for this long is broken (it is
    /// resumed, then failed with SourceStalled).
    pub stall_timeout_secs: u64,
    /// Where the download is kept while it is converted (see
    /// [`SpoolPolicy`]).
    pub spool: SpoolPolicy,
}

/// How a download is kept while the converter and the guest inspector read
/// it (`source.spool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolPolicy {
    /// Memory when the source can be read again with ranged requests and
    /// arrives fast; disk otherwise.
    #[default]
    Auto,
    /// In memory; bytes a reader still needs go to the spool file, bytes it
    /// asks for again are fetched again (checked against the first hash). A
    /// restarted process starts the download over.
    Memory,
    /// Every byte in the spool file as it arrives; a restarted process
    /// continues the download where the file ends.
    Disk,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            cos_root: None,
            cos_endpoint: None,
            cos_access_key: None,
            cos_secret_key: None,
            cos_region: None,
            allow_hosts: Vec::new(),
            allow_private_networks: false,
            stall_timeout_secs: 60,
            spool: SpoolPolicy::Auto,
        }
    }
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("cos_root", &self.cos_root)
            .field("cos_endpoint", &self.cos_endpoint)
            .field("cos_access_key", &self.cos_access_key)
            .field(
                "cos_secret_key",
                &self.cos_secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("cos_region", &self.cos_region)
            .field("allow_hosts", &self.allow_hosts)
            .field("allow_private_networks", &self.allow_private_networks)
            .field("stall_timeout_secs", &self.stall_timeout_secs)
            .field("spool", &self.spool)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest virtual (guest) disk accepted, bytes. Tencent: 500 GiB.
    pub max_virtual_size: u64,
    /// Largest stored (qcow2) image, bytes. Tencent: 50 GiB.
    pub max_stored_size: u64,
    /// Largest source object fetched, bytes.
    pub max_source_size: u64,
    /// Unfinished ExportImages tasks per account and region
    /// (`LimitExceeded.ExportImageTaskLimitExceeded` beyond).
    pub max_export_tasks: u32,
    /// Jobs one account may run at once across all workers; 0: no cap (the
    /// queue is fair between accounts either way).
    pub max_running_per_account: u32,
    /// Bytes that must stay free on the data directory's volume: an import
    /// that would go below fails with `StorageReserveReached`; 0: no reserve.
    pub min_free_space: u64,
    /// Seconds guest inspection of one image may take, in all (fractions
    /// allowed): past it the import fails with `GuestInspectionTimeout`.
    pub inspect_timeout_secs: f64,
    /// Bytes guest inspection of one image may read, in all.
    pub inspect_max_read_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_virtual_size: 500 << 30,
            max_stored_size: 50 << 30,
            max_source_size: 512 << 30,
            max_export_tasks: 10,
            max_running_per_account: 0,
            min_free_space: 1 << 30,
            inspect_timeout_secs: guestinspect::DEFAULT_DEADLINE_SECS as f64,
            inspect_max_read_bytes: guestinspect::DEFAULT_MAX_READ_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Concurrent imports per process.
    pub concurrency: usize,
    /// Concurrent exports per process (each holds up to ~40 MiB).
    pub export_concurrency: usize,
    /// Seconds a claimed job's lease lasts without a heartbeat.
    pub lease_seconds: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 2,
            export_concurrency: 2,
            lease_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// `postgres://…`; default: SQLite in the data directory.
    pub url: Option<String>,
}

// Debug by hand: `secret_key` must never be printed.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobConfig {
    /// `s3://bucket/prefix`; default: `<data_dir>/images`.
    pub url: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Seconds one S3 operation is retried through transient errors (5xx,
    /// SlowDown, dropped connections) before it fails the task with
    /// `BlobStoreUnavailable`.
    pub retry_deadline_secs: f64,
}

/// `blobs.retry_deadline_secs` by default: five minutes of outage.
pub const DEFAULT_BLOB_RETRY_DEADLINE_SECS: f64 = 300.0;

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            url: None,
            endpoint: None,
            region: None,
            access_key: None,
            secret_key: None,
            retry_deadline_secs: DEFAULT_BLOB_RETRY_DEADLINE_SECS,
        }
    }
}

impl std::fmt::Debug for BlobConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("retry_deadline_secs", &self.retry_deadline_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "text" or "json".
    pub format: String,
    /// tracing env-filter syntax, e.g. "info" or "imagegate=debug".
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// One entry of `ImportImageOsVersionSet`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImportOsEntry {
    pub os_name: String,
    /// "Linux" or "Windows".
    pub platform: String,
    pub os_versions: Vec<String>,
    pub architectures: Vec<String>,
}

/// Why a configuration cannot be used. The message names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {var}: {reason}")]
    Env { var: &'static str, reason: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The environment variables that override scalar keys, in the order they are
/// applied. `IMAGEGATE_CONFIG` (the file itself) is read by the CLI.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("IMAGEGATE_LISTEN", "listen"),
    ("IMAGEGATE_DATA_DIR", "data_dir"),
    ("IMAGEGATE_REGIONS", "regions (comma-separated)"),
    (
        "IMAGEGATE_IMPORT_REGIONS",
        "import_regions (comma-separated)",
    ),
    (
        "IMAGEGATE_RATE_LIMITS_ENABLED",
        "rate_limits.enabled (true|false)",
    ),
    ("IMAGEGATE_CATALOG_URL", "catalog.url"),
    ("IMAGEGATE_BLOBS_URL", "blobs.url"),
    ("IMAGEGATE_WORKERS_CONCURRENCY", "workers.concurrency"),
    ("IMAGEGATE_LOG_FORMAT", "log.format (text|json)"),
    ("IMAGEGATE_LOG_LEVEL", "log.level"),
    ("IMAGEGATE_COS_ROOT", "source.cos_root"),
    ("IMAGEGATE_COS_ENDPOINT", "source.cos_endpoint"),
];

/// Architectures ImportImage accepts (as given on the wire).
pub const ARCHITECTURES: &[&str] = &["x86_64", "i386", "arm_64"];

impl Config {
    /// Reads a TOML file; `None` gives the defaults.
    pub fn from_file(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Applies `IMAGEGATE_*` overrides. `get` is the environment (a closure so
    /// that tests need not touch the process environment).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn list(v: &str) -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        }
        if let Some(v) = get("IMAGEGATE_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("IMAGEGATE_OPS_LISTEN") {
            self.ops_listen = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = get("IMAGEGATE_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("IMAGEGATE_REGIONS") {
            self.regions = list(&v);
        }
        if let Some(v) = get("IMAGEGATE_IMPORT_REGIONS") {
            self.import_regions = Some(list(&v));
        }
        if let Some(v) = get("IMAGEGATE_RATE_LIMITS_ENABLED") {
            self.rate_limits.enabled = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(ConfigError::Env {
                        var: "IMAGEGATE_RATE_LIMITS_ENABLED",
                        reason: format!("expected true or false, got {v:?}"),
                    })
                }
            };
        }
        if let Some(v) = get("IMAGEGATE_CATALOG_URL") {
            self.catalog.url = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = get("IMAGEGATE_BLOBS_URL") {
            self.blobs.url = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = get("IMAGEGATE_WORKERS_CONCURRENCY") {
            self.workers.concurrency = v.trim().parse().map_err(|_| ConfigError::Env {
                var: "IMAGEGATE_WORKERS_CONCURRENCY",
                reason: format!("expected a number, got {v:?}"),
            })?;
        }
        if let Some(v) = get("IMAGEGATE_LOG_FORMAT") {
            self.log.format = v;
        }
        if let Some(v) = get("IMAGEGATE_LOG_LEVEL") {
            self.log.level = v;
        }
        if let Some(v) = get("IMAGEGATE_COS_ROOT") {
            self.source.cos_root = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = get("IMAGEGATE_COS_ENDPOINT") {
            self.source.cos_endpoint = Some(v).filter(|s| !s.is_empty());
        }
        Ok(())
    }

    /// Regions that may import: `import_regions`, or every served region.
    pub fn effective_import_regions(&self) -> &[String] {
        self.import_regions.as_deref().unwrap_or(&self.regions)
    }

    /// Checks everything that can be checked without touching the network or
    /// the disk, so a bad file fails at start, not on the first request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "listen",
                format!("{:?} is not an IP:port address", self.listen),
            ));
        }
        if let Some(ops) = &self.ops_listen {
            if ops.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "ops_listen",
                    format!("{ops:?} is not an IP:port address"),
                ));
            }
        }
        if let Some((key, reason)) = self.net.problem().or_else(|| self.tls.problem()) {
            return Err(invalid(key, reason));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.regions.is_empty() {
            return Err(invalid("regions", "at least one region must be served"));
        }
        for r in &self.regions {
            if !is_region_name(r) {
                return Err(invalid("regions", format!("{r:?} is not a region name")));
            }
        }
        if let Some(import) = &self.import_regions {
            for r in import {
                if !self.regions.contains(r) {
                    return Err(invalid(
                        "import_regions",
                        format!("{r:?} is not in `regions`"),
                    ));
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        // uin and app_id name an account's images and buckets: two accounts
        // sharing one would see and delete each other's images.
        let mut uins = std::collections::HashMap::new();
        let mut app_ids = std::collections::HashMap::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let key = |k: &str| format!("accounts[{i}].{k}");
            if a.secret_id.is_empty() || !a.secret_id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    key("secret_id"),
                    "must be non-empty printable ASCII",
                ));
            }
            if !ids.insert(a.secret_id.as_str()) {
                return Err(invalid(key("secret_id"), "appears twice"));
            }
            if a.secret_key.is_empty() {
                return Err(invalid(key("secret_key"), "must not be empty"));
            }
            if a.uin.is_empty() || a.uin.len() > 20 || !a.uin.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(key("uin"), "must be 1 to 20 decimal digits"));
            }
            if a.app_id == 0 {
                return Err(invalid(key("app_id"), "must be a positive number"));
            }
            if a.storage_quota_gib
                .is_some_and(|q| !(0.0..=1e9).contains(&q))
            {
                return Err(invalid(
                    key("storage_quota_gib"),
                    "must be a number of GiB from 0 to 1e9",
                ));
            }
            if let Some(first) = uins.insert(a.uin.as_str(), i) {
                return Err(invalid(
                    key("uin"),
                    format!("{:?} is also the uin of accounts[{first}]", a.uin),
                ));
            }
            if let Some(first) = app_ids.insert(a.app_id, i) {
                return Err(invalid(
                    key("app_id"),
                    format!("{} is also the app_id of accounts[{first}]", a.app_id),
                ));
            }
        }
        if let Some(url) = &self.source.cos_endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "source.cos_endpoint",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.source.cos_endpoint.is_some()
            && (self.source.cos_access_key.is_none() != self.source.cos_secret_key.is_none())
        {
            return Err(invalid(
                "source.cos_access_key",
                "cos_access_key and cos_secret_key go together",
            ));
        }
        for h in &self.source.allow_hosts {
            if h.is_empty() || h.contains('/') || h.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "source.allow_hosts",
                    format!("{h:?} is not a host name"),
                ));
            }
        }
        if let Some(url) = &self.catalog.url {
            let ok = url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:");
            if !ok {
                return Err(invalid(
                    "catalog.url",
                    "must start with postgres://, postgresql:// or sqlite:",
                ));
            }
        }
        if let Some(url) = &self.blobs.url {
            if !url.starts_with("s3://") {
                return Err(invalid("blobs.url", "must be an s3://bucket/prefix URL"));
            }
        }
        let d = self.blobs.retry_deadline_secs;
        if !d.is_finite() || d <= 0.0 || d > 86_400.0 {
            return Err(invalid(
                "blobs.retry_deadline_secs",
                "must be more than 0 and at most 86400 seconds",
            ));
        }
        let t = self.limits.inspect_timeout_secs;
        if !t.is_finite() || t <= 0.0 || t > 86_400.0 {
            return Err(invalid(
                "limits.inspect_timeout_secs",
                "must be more than 0 and at most 86400 seconds",
            ));
        }
        if self.limits.inspect_max_read_bytes == 0 {
            return Err(invalid(
                "limits.inspect_max_read_bytes",
                "must be at least 1",
            ));
        }
        if self.workers.concurrency == 0 {
            return Err(invalid("workers.concurrency", "must be at least 1"));
        }
        if self.workers.lease_seconds == 0 {
            return Err(invalid("workers.lease_seconds", "must be at least 1"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be \"text\" or \"json\""));
        }
        if let Some(list) = &self.import_os {
            if list.is_empty() {
                return Err(invalid("import_os", "must list at least one OS"));
            }
            let mut names = std::collections::HashSet::new();
            for (i, e) in list.iter().enumerate() {
                let key = |k: &str| format!("import_os[{i}].{k}");
                if e.os_name.trim().is_empty() {
                    return Err(invalid(key("os_name"), "must not be empty"));
                }
                if !names.insert(e.os_name.to_ascii_lowercase()) {
                    return Err(invalid(key("os_name"), "appears twice"));
                }
                if !matches!(e.platform.as_str(), "Linux" | "Windows") {
                    return Err(invalid(key("platform"), "must be \"Linux\" or \"Windows\""));
                }
                if e.os_versions.is_empty() {
                    return Err(invalid(
                        key("os_versions"),
                        "must list at least one version",
                    ));
                }
                if e.architectures.is_empty()
                    || e.architectures
                        .iter()
                        .any(|a| !ARCHITECTURES.contains(&a.as_str()))
                {
                    return Err(invalid(
                        key("architectures"),
                        "must list some of x86_64, i386, arm_64",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `ap-guangzhou`, `na-siliconvalley`, `ap-shanghai-fsi`: lower-case words
/// joined by `-`.
fn is_region_name(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 64
        && r.split('-').count() >= 2
        && r.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_example_parses_and_validates() {
        let text = r#"
listen = "127.0.0.1:9000"
data_dir = "imagegate-data"
regions = ["ap-guangzhou"]
import_regions = ["ap-guangzhou"]
[rate_limits]
enabled = true
[[accounts]]
secret_id = "AKIDexample"
secret_key = "secret"
app_id = 1251233127
uin = "100000000001"
image_quota = 500
[source]
cos_root = "/srv/buckets"
cos_endpoint = "http://127.0.0.1:9100"
allow_hosts = ["127.0.0.1"]
allow_private_networks = false
"#;
        let c = Config::from_toml(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.accounts[0].app_id, 1251233127);
        assert_eq!(c.effective_import_regions(), ["ap-guangzhou".to_string()]);
        // The secret never shows in Debug output.
        assert!(!format!("{c:?}").contains("\"secret\""));
    }

    #[test]
    fn uin_and_app_id_are_unique_across_accounts() {
        let account = |id: &str, app_id: u64, uin: &str| AccountConfig {
            secret_id: id.into(),
            secret_key: "k".into(),
            app_id,
            uin: uin.into(),
            image_quota: 1,
            storage_quota_gib: None,
        };
        let mut c = Config {
            accounts: vec![account("AKID1", 1, "10"), account("AKID2", 2, "10")],
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("accounts[1].uin") && e.contains("accounts[0]"),
            "{e}"
        );
        c.accounts[1].uin = "11".into();
        c.accounts[1].app_id = 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("accounts[1].app_id") && e.contains("accounts[0]"),
            "{e}"
        );
        c.accounts[1].app_id = 2;
        c.validate().unwrap();
    }

    #[test]
    fn rate_limit_scope_defaults_to_cluster() {
        let c = Config::from_toml("[rate_limits]\nenabled = true\n").unwrap();
        assert_eq!(c.rate_limits.scope, RateLimitScope::Cluster);
        let c = Config::from_toml("[rate_limits]\nscope = \"node\"\n").unwrap();
        assert_eq!(c.rate_limits.scope, RateLimitScope::Node);
        assert!(Config::from_toml("[rate_limits]\nscope = \"region\"\n").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::from_toml("lissten = \"x\"").is_err());
    }

    #[test]
    fn env_overrides_apply() {
        let mut c = Config::default();
        let env = |k: &str| match k {
            "IMAGEGATE_LISTEN" => Some("127.0.0.1:0".to_string()),
            "IMAGEGATE_REGIONS" => Some("ap-guangzhou, ap-beijing".to_string()),
            "IMAGEGATE_RATE_LIMITS_ENABLED" => Some("false".to_string()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!(c.regions, ["ap-guangzhou", "ap-beijing"]);
        assert!(!c.rate_limits.enabled);
        c.validate().unwrap();
        let bad = |k: &str| (k == "IMAGEGATE_RATE_LIMITS_ENABLED").then(|| "maybe".to_string());
        assert!(Config::default().apply_env(bad).is_err());
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut c = Config {
            import_regions: Some(vec!["ap-tokyo".into()]),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("import_regions"), "{e}");
        c.import_regions = None;
        c.regions = vec!["Guangzhou".into()];
        assert!(c.validate().unwrap_err().to_string().contains("regions"));
        c.regions = vec!["ap-guangzhou".into()];
        c.listen = "localhost".into();
        assert!(c.validate().unwrap_err().to_string().contains("listen"));
    }

    #[test]
    fn the_blob_retry_deadline_defaults_to_five_minutes_and_must_be_positive() {
        let c = Config::from_toml("[blobs]\nurl = \"s3://b/p\"\n").unwrap();
        assert_eq!(c.blobs.retry_deadline_secs, 300.0);
        let c = Config::from_toml("[blobs]\nretry_deadline_secs = 2.5\n").unwrap();
        assert_eq!(c.blobs.retry_deadline_secs, 2.5);
        for bad in ["0", "-1", "100000"] {
            let mut c = Config::default();
            c.blobs.retry_deadline_secs = bad.parse().unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("blobs.retry_deadline_secs"), "{e}");
        }
    }
}
