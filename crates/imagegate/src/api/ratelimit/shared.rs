//! The token buckets every node shares, in the PostgreSQL catalog
//! (`rate_buckets`, migration 0006): one row per (account uin, action) holding
//! its tokens and when they were counted, by PostgreSQL's clock so that every
//! node refills by the same clock. Taking a token is one statement (an
//! upsert that refills and takes under the row's lock), so two nodes never
//! both take the last token. The table is UNLOGGED: no WAL, so no disk flush
//! per request; a database crash empties it, which only refills every bucket.
//!
//! The database must not hold a request up: a take that gets no answer within
//! [`TIMEOUT`] (the pool busy, the server unreachable) reports
//! [`SharedVerdict::Unavailable`], and so does every take for the next
//! [`PAUSE`] without asking; the caller then decides by its own bucket.
//!
//! Takes run on a pool of their own ([`POOL`] connections, opened at start
//! and kept open): opening a PostgreSQL connection (SCRAM authentication)
//! can take longer than [`TIMEOUT`] on a busy machine, and the catalog's
//! pool opens connections on demand and may be held by slow queries.

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a request waits for the shared bucket.
pub const TIMEOUT: Duration = Duration::from_millis(500);
/// Connections of the limiter's own pool, per node.
pub const POOL: u32 = 4;
/// After a failure, how long the database is left alone.
pub const PAUSE: Duration = Duration::from_secs(1);

/// Refill and take one token if there is one, in one statement. `$3` is the
/// rate (tokens per second, and the bucket's size). Every expression in the
/// `SET` list reads the row as it was, so the three agree. A clock that
/// went backwards (a statement that read the clock before waiting for the
/// row's lock) refills nothing and keeps the later stamp.
const TAKE: &str = "\
INSERT INTO rate_buckets AS b (account_uin, action, tokens, stamp, admitted)
VALUES ($1, $2, $3 - 1, extract(epoch FROM clock_timestamp())::float8, TRUE)
ON CONFLICT (account_uin, action) DO UPDATE SET
    admitted = LEAST($3, b.tokens + GREATEST(0, EXCLUDED.stamp - b.stamp) * $3) >= 1,
    tokens = CASE
        WHEN LEAST($3, b.tokens + GREATEST(0, EXCLUDED.stamp - b.stamp) * $3) >= 1
        THEN LEAST($3, b.tokens + GREATEST(0, EXCLUDED.stamp - b.stamp) * $3) - 1
        ELSE LEAST($3, b.tokens + GREATEST(0, EXCLUDED.stamp - b.stamp) * $3)
    END,
    stamp = GREATEST(b.stamp, EXCLUDED.stamp)
RETURNING admitted, tokens";

/// What the shared bucket said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SharedVerdict {
    Admitted,
    /// Empty; its next token comes in `wait`.
    Refused {
        wait: Duration,
    },
    /// The database did not answer in time or failed.
    Unavailable,
}

#[derive(Debug)]
pub struct SharedBuckets {
    pool: AnyPool,
    timeout: Duration,
    pause: Duration,
    /// Set after a failure: no statement before then.
    paused_until: Mutex<Option<Instant>>,
    /// Between a failure and the next answer (one log line each way).
    down: AtomicBool,
}

impl SharedBuckets {
    pub fn new(pool: AnyPool) -> SharedBuckets {
        SharedBuckets::with_timing(pool, TIMEOUT, PAUSE)
    }

    /// A pool of [`POOL`] connections to the catalog at `url`, opened in the
    /// background now and kept open (reopened after a failure).
    pub fn pool(url: &str) -> Result<AnyPool, sqlx::Error> {
        AnyPoolOptions::new()
            .max_connections(POOL)
            .min_connections(POOL)
            .idle_timeout(None)
            .max_lifetime(None)
            // A request waits at most TIMEOUT (see `take`); this bounds the
            // background reconnection (`warm`).
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(url)
    }

    /// With another timeout and pause (tests).
    pub fn with_timing(pool: AnyPool, timeout: Duration, pause: Duration) -> SharedBuckets {
        SharedBuckets {
            pool,
            timeout,
            pause,
            paused_until: Mutex::new(None),
            down: AtomicBool::new(false),
        }
    }

    /// Takes one token of the account's bucket for the action.
    pub async fn take(&self, uin: &str, action: &str, rate: u32) -> SharedVerdict {
        if self.paused(Instant::now()) {
            return SharedVerdict::Unavailable;
        }
        let query = sqlx::query(TAKE)
            .bind(uin)
            .bind(action)
            .bind(f64::from(rate))
            .fetch_one(&self.pool);
        let row = match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => return self.failed(&e.to_string()),
            Err(_) => return self.failed(&format!("no answer within {:?}", self.timeout)),
        };
        let decoded = sqlx::Row::try_get::<bool, _>(&row, "admitted").and_then(|admitted| {
            sqlx::Row::try_get::<f64, _>(&row, "tokens").map(|tokens| (admitted, tokens))
        });
        let (admitted, tokens) = match decoded {
            Ok(v) => v,
            Err(e) => return self.failed(&e.to_string()),
        };
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("shared rate limits: the catalog database answers again");
        }
        if admitted {
            SharedVerdict::Admitted
        } else {
            SharedVerdict::Refused {
                wait: next_token(tokens, rate),
            }
        }
    }

    fn paused(&self, now: Instant) -> bool {
        let until = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|t| now < t)
    }

    fn failed(&self, why: &str) -> SharedVerdict {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = why,
                pause = ?self.pause,
                "shared rate limits unavailable: each node limits on its own until it answers"
            );
        }
        let mut until = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        *until = Some(Instant::now() + self.pause);
        // A take gives up after TIMEOUT, connecting included: reconnect in
        // the background, so that a slow connection set-up cannot keep the
        // shared buckets unavailable.
        tokio::spawn(warm(self.pool.clone()));
        SharedVerdict::Unavailable
    }
}

/// Opens the pool's connections again (each waits at most the pool's
/// acquire timeout), then leaves them idle in the pool.
async fn warm(pool: AnyPool) {
    let acquires = (0..POOL).map(|_| pool.acquire());
    drop(futures::future::join_all(acquires).await);
}

/// When a bucket holding `tokens` (less than one) has a whole one again.
fn next_token(tokens: f64, rate: u32) -> Duration {
    let secs = (1.0 - tokens).max(0.0) / f64::from(rate.max(1));
    Duration::try_from_secs_f64(secs.min(1.0)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_token_is_the_missing_fraction_over_the_rate() {
        assert_eq!(next_token(0.0, 10), Duration::from_millis(100));
        assert_eq!(next_token(0.5, 10), Duration::from_millis(50));
        assert_eq!(next_token(1.0, 10), Duration::ZERO);
        // Never more than a second, whatever the row says.
        assert_eq!(next_token(-100.0, 10), Duration::from_secs(1));
    }
}
