//! Checking a configuration before anything starts: everything that can
//! be judged without touching the network or the disk, so a bad file fails
//! at start with the key at fault named, not on the first request.

use super::{invalid, Config, ConfigError, ARCHITECTURES};

impl Config {
    /// Checks everything that can be checked without touching the network or
    /// the disk, so a bad file fails at start, not on the first request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_listeners_and_regions()?;
        self.check_accounts()?;
        self.check_back_ends()?;
        self.check_limits()?;
        self.check_import_os()
    }

    fn check_listeners_and_regions(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn check_accounts(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The source store, the catalog database and the blob store.
    fn check_back_ends(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn check_limits(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn check_import_os(&self) -> Result<(), ConfigError> {
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
