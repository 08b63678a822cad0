//! A small read cache for DescribeImages answers, so that a busy listing
//! (the same page polled by many clients) costs a hash lookup instead of a
//! catalog query that must count every match.
//!
//! An entry is used only while both hold:
//! - the catalog's change counter is what it was when the entry was built:
//!   every write made through this process's [`Catalog`] bumps it, so a
//!   client never reads its own writes stale on one node;
//! - it is younger than [`TTL`]: writes made by other processes (other API
//!   nodes, separate workers) show up within that time.
//!
//! Bounded: at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] of text; when
//! full, the map is cleared (listings are cheap to rebuild, and an LRU would
//! cost every hit a write).
//!
//! [`Catalog`]: crate::catalog::Catalog

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TTL: Duration = Duration::from_millis(500);
pub const MAX_ENTRIES: usize = 512;
pub const MAX_BYTES: usize = 16 << 20;

struct Entry {
    generation: u64,
    built: Instant,
    body: Arc<str>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    bytes: usize,
}

#[derive(Default)]
pub struct ResponseCache {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache").finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// The cached text for `key` if it was built at `generation` less than
    /// [`TTL`] ago.
    pub fn get(&self, key: &str, generation: u64) -> Option<Arc<str>> {
        self.get_at(key, generation, Instant::now())
    }

    fn get_at(&self, key: &str, generation: u64, now: Instant) -> Option<Arc<str>> {
        // The lock guards a map lookup and an Arc clone, never an await.
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let e = inner.map.get(key)?;
        (e.generation == generation && now.saturating_duration_since(e.built) < TTL)
            .then(|| e.body.clone())
    }

    /// Stores `body`, built from the catalog as it was at `generation`.
    pub fn put(&self, key: String, generation: u64, body: Arc<str>) {
        self.put_at(key, generation, body, Instant::now());
    }

    fn put_at(&self, key: String, generation: u64, body: Arc<str>, now: Instant) {
        let size = key.len() + body.len();
        if size > MAX_BYTES / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.map.len() >= MAX_ENTRIES || inner.bytes + size > MAX_BYTES {
            inner.map.clear();
            inner.bytes = 0;
        }
        inner.bytes += size;
        let entry = Entry {
            generation,
            built: now,
            body,
        };
        if let Some(old) = inner.map.insert(key, entry) {
            inner.bytes = inner.bytes.saturating_sub(old.body.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_at_the_same_generation_and_within_ttl() {
        let c = ResponseCache::default();
        let t0 = Instant::now();
        c.put_at("k".into(), 7, Arc::from("body"), t0);
        assert_eq!(c.get_at("k", 7, t0).as_deref(), Some("body"));
        assert!(c.get_at("k", 8, t0).is_none(), "a newer write invalidates");
        assert!(c.get_at("k", 7, t0 + TTL).is_none(), "old entries expire");
        assert!(c.get_at("other", 7, t0).is_none());
    }

    #[test]
    fn stays_bounded() {
        let c = ResponseCache::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES * 3) {
            c.put_at(format!("k{i}"), 1, Arc::from("x"), t0);
        }
        let inner = c.inner.lock().unwrap();
        assert!(inner.map.len() <= MAX_ENTRIES);
        drop(inner);
        // Too large to keep at all.
        let huge: Arc<str> = Arc::from("y".repeat(MAX_BYTES));
        c.put_at("huge".into(), 1, huge, t0);
        assert!(c.get_at("huge", 1, t0).is_none());
    }
}
