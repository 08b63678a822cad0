//! Configuration: a TOML file, then `IMAGEGATE_*` environment overrides,
//! then command-line flags. Every key is documented in the README.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the API listens on.
    pub listen: String,
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
    /// Overrides DescribeImportImageOs (and the OS checks of ImportImage).
    pub import_os: Option<Vec<ImportOsEntry>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:9000".into(),
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
            import_os: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { enabled: true }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
}

pub fn default_image_quota() -> u32 {
    500
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_virtual_size: 500 << 30,
            max_stored_size: 50 << 30,
            max_source_size: 512 << 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Concurrent imports per process.
    pub concurrency: usize,
    /// Seconds a claimed job's lease lasts without a heartbeat.
    pub lease_seconds: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 2,
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

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobConfig {
    /// `s3://bucket/prefix`; default: `<data_dir>/images`.
    pub url: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
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
