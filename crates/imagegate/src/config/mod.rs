//! Configuration: a TOML file, then `IMAGEGATE_*` environment overrides,
//! then command-line flags. Every key is documented in the README.

mod env;
mod validate;

pub use env::ENV_OVERRIDES;

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
    pub platform: crate::domain::OsPlatform,
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

    /// Regions that may import: `import_regions`, or every served region.
    pub fn effective_import_regions(&self) -> &[String] {
        self.import_regions.as_deref().unwrap_or(&self.regions)
    }
}

#[cfg(test)]
mod tests;
