//! The API: the HTTP front (`http`), per-account rate limits (`ratelimit`),
//! the service's error codes (`errors`) and one module per action
//! (`actions`). The wire protocol itself is the `tcapi` crate.

pub mod access;
pub mod actions;
pub mod cache;
pub mod errors;
pub mod http;
pub mod ratelimit;
pub mod replay;
pub mod views;

use crate::accounts::{Account, Accounts};
use crate::blobstore::BlobStore;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::oslist::OsList;
use ratelimit::RateLimiter;
use std::collections::HashSet;
use std::sync::Arc;

/// Everything a request needs, built once at start and shared read-only.
pub struct AppState {
    pub config: Arc<Config>,
    pub accounts: Accounts,
    pub catalog: Catalog,
    /// Where stored images live (deleted with their image).
    pub blobs: Arc<dyn BlobStore>,
    /// Wakes this process's idle import workers when an import is queued.
    pub wake: Arc<tokio::sync::Notify>,
    /// Wakes this process's idle export workers when an export is queued.
    pub export_wake: Arc<tokio::sync::Notify>,
    /// Wakes this process's export heartbeats when a cancel was requested:
    /// a task running here stops at once rather than at its next beat.
    pub export_cancels: Arc<tokio::sync::Notify>,
    pub oslist: OsList,
    pub limiter: RateLimiter,
    /// DescribeImages answers (see `cache`).
    pub describe_cache: cache::ResponseCache,
    /// What each accepted signature was accepted for (see `replay`).
    pub replay: replay::ReplayGuard,
    regions: HashSet<String>,
    import_regions: HashSet<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("catalog", &self.catalog)
            .field("blobs", &self.blobs.describe())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// `config.accounts` must already hold every account (see
    /// [`crate::accounts::ensure_default_account`]).
    pub fn new(config: Arc<Config>, catalog: Catalog, blobs: Arc<dyn BlobStore>) -> AppState {
        let accounts = Accounts::new(&config.accounts);
        let limiter = RateLimiter::for_catalog(&config, accounts.len(), &catalog);
        AppState {
            oslist: OsList::from_config(config.import_os.as_deref()),
            regions: config.regions.iter().cloned().collect(),
            import_regions: config.effective_import_regions().iter().cloned().collect(),
            accounts,
            limiter,
            catalog,
            blobs,
            wake: Arc::new(tokio::sync::Notify::new()),
            export_wake: Arc::new(tokio::sync::Notify::new()),
            export_cancels: Arc::new(tokio::sync::Notify::new()),
            describe_cache: cache::ResponseCache::default(),
            replay: replay::ReplayGuard::new(config.net.replay_cache_entries),
            config,
        }
    }

    pub fn serves_region(&self, region: &str) -> bool {
        self.regions.contains(region)
    }

    pub fn imports_in_region(&self, region: &str) -> bool {
        self.import_regions.contains(region)
    }
}

/// Who is calling, where, and under which RequestId (for log lines).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub account: &'a Account,
    /// The request's region, already checked against `regions`; `None` only
    /// for DescribeImportImageOs, which needs none.
    pub region: Option<&'a str>,
    pub request_id: &'a str,
}
