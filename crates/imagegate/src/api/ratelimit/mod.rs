//! Request rate limits: one token bucket per (account, action), refilled at
//! the action's rate with a burst of one second's worth of requests.
//!
//! Rates are Tencent's documented ones where it documents them (ImportImage
//! 10/s, DescribeImages 40/s, DescribeImportImageOs 288/s) and otherwise a
//! default of 20/s (10/s for the actions that write: DeleteImages,
//! ModifyImageAttribute, CancelImportImageTask; 10/s documented for the share
//! actions and SyncImages). Buckets live in the process:
//! with several API nodes each node enforces the rate on its own, so an
//! account can reach N times the rate across N nodes (as with Tencent's
//! per-region limits, clients are expected to spread and retry).
//!
//! The buckets are allocated at start (accounts are fixed) and each is a
//! tiny mutex held for a few instructions, never across an await.

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

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    enabled: bool,
    /// `buckets[account_index * actions + action_index]`
    buckets: Vec<Mutex<Bucket>>,
    rates: Vec<u32>,
}

impl RateLimiter {
    pub fn new(enabled: bool, accounts: usize) -> RateLimiter {
        let rates: Vec<u32> = tcapi::ACTIONS.iter().map(|a| rate_for(a)).collect();
        let now = Instant::now();
        let buckets = if enabled {
            (0..accounts * rates.len())
                .map(|i| {
                    Mutex::new(Bucket {
                        tokens: f64::from(rates[i % rates.len()]),
                        last: now,
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
        }
    }

    /// Takes one token for the account and action. `Err(rate)` when the
    /// bucket is empty. Unknown actions are not limited here (decoding
    /// refuses them anyway).
    pub fn check(&self, account_index: usize, action: &str) -> Result<(), u32> {
        self.check_at(account_index, action, Instant::now())
    }

    fn check_at(&self, account_index: usize, action: &str, now: Instant) -> Result<(), u32> {
        if !self.enabled {
            return Ok(());
        }
        let Some(action_index) = tcapi::ACTIONS.iter().position(|a| *a == action) else {
            return Ok(());
        };
        let rate = self.rates[action_index];
        let Some(bucket) = self
            .buckets
            .get(account_index * self.rates.len() + action_index)
        else {
            return Ok(());
        };
        // A poisoned lock only means another request panicked mid-update of
        // two plain numbers; the numbers are still usable.
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new(true, 2);
        let t0 = Instant::now();
        for _ in 0..10 {
            rl.check_at(0, "ImportImage", t0).unwrap();
        }
        assert_eq!(rl.check_at(0, "ImportImage", t0), Err(10));
        // Other actions and other accounts have their own buckets.
        rl.check_at(0, "DescribeImages", t0).unwrap();
        rl.check_at(1, "ImportImage", t0).unwrap();
        // A tenth of a second gives one token back at 10/s.
        let t1 = t0 + Duration::from_millis(100);
        rl.check_at(0, "ImportImage", t1).unwrap();
        assert!(rl.check_at(0, "ImportImage", t1).is_err());
        // Never more than one second's burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..10 {
            rl.check_at(0, "ImportImage", t2).unwrap();
        }
        assert!(rl.check_at(0, "ImportImage", t2).is_err());
    }

    #[test]
    fn disabled_never_limits() {
        let rl = RateLimiter::new(false, 1);
        let t0 = Instant::now();
        for _ in 0..1000 {
            rl.check_at(0, "ImportImage", t0).unwrap();
        }
    }

    #[test]
    fn documented_rates() {
        assert_eq!(rate_for("ImportImage"), 10);
        assert_eq!(rate_for("DescribeImages"), 40);
        assert_eq!(rate_for("DescribeImportImageOs"), 288);
        assert_eq!(rate_for("DescribeImageQuota"), 20);
    }
}
