//! `IMAGEGATE_*` environment overrides, applied over the file.

use std::path::PathBuf;

use super::{Config, ConfigError};

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

impl Config {
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
}
