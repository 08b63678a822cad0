//! Request rate limits: one token bucket per (account, action), refilled at
//! the action's rate with a burst of one second's worth of requests.
//!
//! Rates are Tencent's documented ones where it documents them (ImportImage
//! 10/s, DescribeImages 40/s, DescribeImportImageOs 288/s) and otherwise a
//! default of 20/s (10/s for the actions that write: DeleteImages,
//! ModifyImageAttribute, CancelImportImageTask; 10/s documented for the share
//! actions and SyncImages).
//!
//! Every process keeps its own buckets in memory (allocated at start, since
//! accounts are fixed; each a tiny mutex held for a few instructions, never
//! across an await). On a PostgreSQL catalog with `rate_limits.scope =
//! "cluster"` (the default) the bucket that decides is the one in the
//! database (`shared`), common to every node; the node's own bucket is then
//! a first filter and the fallback:
//!
//! - a request the node's bucket refuses is refused without asking the
//!   database (the node alone already sent the rate: the shared bucket, which
//!   saw those requests too, is no fuller);
//! - otherwise the shared bucket decides. When it refuses, the node gives its
//!   token back (so the node's bucket never holds fewer tokens than the
//!   shared one) and refuses this (account, action) locally until the shared
//!   bucket will have refilled one token, so a flood costs the database at
//!   most about one statement per node per refill interval;
//! - when the database does not answer within `shared::TIMEOUT` (on a pool
//!   of the limiter's own, so that opening connections and slow catalog
//!   queries do not count against it), the request
//!   is decided by the node's bucket alone (fail open to the per-node limit)
//!   and the database is not asked again for `shared::PAUSE`.

mod shared;

pub use shared::{SharedBuckets, SharedVerdict};

use crate::catalog::{Backend, Catalog};
use crate::config::{Config, RateLimitScope};
use std::sync::Mutex;
use std::time::Instant;

/// Requests per second allowed per account for an action.
pub fn rate_for(action: &str) -> u32 {
    match action {
        "ImportImage" => 10,
        "DescribeImages" => 40,
        "DescribeImportImageOs" => 288,
        "DeleteImages"
        | "ModifyImageAttribute"
        | "CancelImportImageTask"
        | "CancelExportImageTask" => 10,
        // Documented: 10/s for sharing and copying, 20/s for the family lookup.
        "ModifyImageSharePermission" | "DescribeImageSharePermission" | "SyncImages" => 10,
        _ => 20,
    }
}

/// A refused request: the action's rate, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub rate: u32,
}

/// An action the limiter knows: its place in `tcapi::ACTIONS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ActionId(usize);

impl ActionId {
    fn of(action: &str) -> Option<ActionId> {
        tcapi::ACTIONS
            .iter()
            .position(|a| *a == action)
            .map(ActionId)
    }

    fn name(self) -> &'static str {
        tcapi::ACTIONS.get(self.0).copied().unwrap_or_default()
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// The shared bucket was found empty: until then, refuse without asking.
    shared_empty_until: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: u32) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
    }
}

/// What the node's own bucket says.
#[derive(Debug, PartialEq, Eq)]
enum Local {
    /// A token was taken.
    Taken,
    /// Empty: the node alone has sent the rate.
    Empty,
    /// The shared bucket is known to be empty for a while yet.
    SharedEmpty,
}

#[derive(Debug)]
pub struct RateLimiter {
    enabled: bool,
    /// `buckets[account_index * actions + action_index]`
    buckets: Vec<Mutex<Bucket>>,
    rates: Vec<u32>,
    /// The buckets every node shares, on a PostgreSQL catalog.
    shared: Option<SharedBuckets>,
}

impl RateLimiter {
    /// The limiter a server runs with: shared through the catalog when it
    /// is PostgreSQL and the scope is `cluster`, per process otherwise.
    pub fn for_catalog(config: &Config, accounts: usize, catalog: &Catalog) -> Self {
        let limits = &config.rate_limits;
        let shared = limits.enabled
            && limits.scope == RateLimitScope::Cluster
            && catalog.backend() == Backend::Postgres;
        let shared = shared.then(|| {
            // The catalog opened with this URL, so it parses; should it not,
            // the catalog's own pool serves.
            let url = config.catalog.url.as_deref().unwrap_or_default();
            let pool = SharedBuckets::pool(url).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "shared rate limits on the catalog's pool");
                catalog.pool().clone()
            });
            SharedBuckets::new(pool)
        });
        RateLimiter::build(limits.enabled, accounts, shared)
    }

    /// Buckets in this process only.
    pub fn new(enabled: bool, accounts: usize) -> RateLimiter {
        RateLimiter::build(enabled, accounts, None)
    }

    /// Enabled, deciding with `shared` (tests choose its timing).
    pub fn with_shared(accounts: usize, shared: SharedBuckets) -> RateLimiter {
        RateLimiter::build(true, accounts, Some(shared))
    }

    fn build(enabled: bool, accounts: usize, shared: Option<SharedBuckets>) -> RateLimiter {
        let rates: Vec<u32> = tcapi::ACTIONS.iter().map(|a| rate_for(a)).collect();
        let now = Instant::now();
        let buckets = if enabled {
            (0..accounts * rates.len())
                .map(|i| {
                    Mutex::new(Bucket {
                        tokens: f64::from(rates[i % rates.len()]),
                        last: now,
                        shared_empty_until: None,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        RateLimiter {
            enabled,
            buckets,
            rates,
            shared,
        }
    }

    /// Whether the limits hold across the nodes of a cluster.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Admits one request of the account (by its index and uin, the key of
    /// its shared buckets) for the action, or refuses it. Unknown actions
    /// are not limited here (decoding refuses them anyway).
    pub async fn check(&self, account: usize, uin: &str, action: &str) -> Result<(), Exceeded> {
        if !self.enabled {
            return Ok(());
        }
        let Some(action) = ActionId::of(action) else {
            return Ok(());
        };
        let Some((bucket, rate)) = self.bucket(account, action) else {
            return Ok(());
        };
        if take_local(bucket, rate, Instant::now()) != Local::Taken {
            return Err(Exceeded { rate });
        }
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        // The wait counts from the statement, not from its answer (which a
        // busy machine may deliver late): holding off longer would refuse
        // requests the shared bucket would admit.
        let asked = Instant::now();
        match shared.take(uin, action.name(), rate).await {
            SharedVerdict::Admitted => Ok(()),
            SharedVerdict::Unavailable => {
                crate::metrics::global().shared_limit_unavailable();
                Ok(())
            }
            SharedVerdict::Refused { wait } => {
                give_back(bucket, rate, Instant::now(), asked + wait);
                Err(Exceeded { rate })
            }
        }
    }

    fn bucket(&self, account: usize, action: ActionId) -> Option<(&Mutex<Bucket>, u32)> {
        let rate = *self.rates.get(action.0)?;
        let bucket = self.buckets.get(account * self.rates.len() + action.0)?;
        Some((bucket, rate))
    }
}

/// Takes a token from the node's bucket, unless the shared one is known
/// to be empty.
fn take_local(bucket: &Mutex<Bucket>, rate: u32, now: Instant) -> Local {
    // A poisoned lock only means another request panicked mid-update of
    // plain numbers; the numbers are still usable.
    let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
    b.refill(now, rate);
    if b.shared_empty_until.is_some_and(|until| now < until) {
        return Local::SharedEmpty;
    }
    b.shared_empty_until = None;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        Local::Taken
    } else {
        Local::Empty
    }
}

/// The shared bucket refused: the token taken locally goes back, and the
/// shared bucket is not asked again before `until` (its next token).
fn give_back(bucket: &Mutex<Bucket>, rate: u32, now: Instant, until: Instant) {
    let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
    b.refill(now, rate);
    b.tokens = (b.tokens + 1.0).min(f64::from(rate));
    b.shared_empty_until = Some(until);
}

#[cfg(test)]
mod pg_tests;
#[cfg(test)]
mod tests;
