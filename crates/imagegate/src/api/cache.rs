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
//! Single flight: when an entry is missing or stale, the first request
//! builds it and every concurrent request for the same key waits for that
//! one build instead of running the same query beside it (64 clients
//! polling one page would otherwise stampede the catalog at every expiry).
//! A failed build is not cached; the next waiter tries again.
//!
//! Bounded: at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] of text; when
//! full, the map is cleared (listings are cheap to rebuild, and an LRU would
//! cost every hit a write).
//!
//! [`Catalog`]: crate::catalog::Catalog

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

pub const TTL: Duration = Duration::from_millis(500);
pub const MAX_ENTRIES: usize = 512;
pub const MAX_BYTES: usize = 16 << 20;

type Slot = Arc<OnceCell<Arc<str>>>;

struct Entry {
    generation: u64,
    created: Instant,
    slot: Slot,
}

impl Entry {
    fn size(&self, key: &str) -> usize {
        key.len() + self.slot.get().map_or(0, |b| b.len())
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Keys plus the bodies built so far.
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
    /// The text for `key` as of `generation`: the cached one if it is fresh,
    /// else the one `build` makes (once, however many callers wait for it).
    pub async fn get_or_build<F, Fut, E>(
        &self,
        key: &str,
        generation: u64,
        build: F,
    ) -> Result<Arc<str>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<str>, E>>,
    {
        let slot = self.slot_at(key, generation, Instant::now());
        let mut built = false;
        let body = slot
            .get_or_try_init(|| {
                built = true;
                build()
            })
            .await?
            .clone();
        if built {
            self.account(key, &slot, body.len());
        }
        Ok(body)
    }

    /// The slot to read or fill for `key`: the live entry's, or a new empty
    /// one replacing a stale or missing entry.
    fn slot_at(&self, key: &str, generation: u64, now: Instant) -> Slot {
        // The lock guards map work and Arc clones, never an await.
        let mut inner = self.lock();
        if let Some(e) = inner.map.get(key) {
            if e.generation == generation && now.saturating_duration_since(e.created) < TTL {
                return e.slot.clone();
            }
        }
        if inner.map.len() >= MAX_ENTRIES {
            inner.map.clear();
            inner.bytes = 0;
        }
        let slot = Slot::default();
        let entry = Entry {
            generation,
            created: now,
            slot: slot.clone(),
        };
        inner.bytes += key.len();
        if let Some(old) = inner.map.insert(key.to_owned(), entry) {
            let freed = old.size(key);
            inner.bytes = inner.bytes.saturating_sub(freed);
        }
        slot
    }

    /// Counts a body just built into `slot`; drops what no longer fits.
    fn account(&self, key: &str, slot: &Slot, len: usize) {
        let mut inner = self.lock();
        // Only if the slot is still the one mapped (a newer entry may have
        // replaced it while it was being built).
        let current = inner
            .map
            .get(key)
            .is_some_and(|e| Arc::ptr_eq(&e.slot, slot));
        if !current {
            return;
        }
        if len > MAX_BYTES / 4 {
            inner.map.remove(key);
            inner.bytes = inner.bytes.saturating_sub(key.len());
            return;
        }
        inner.bytes += len;
        if inner.bytes > MAX_BYTES {
            inner.map.clear();
            inner.bytes = 0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn fetch(c: &ResponseCache, key: &str, generation: u64, text: &str) -> Arc<str> {
        c.get_or_build(key, generation, || async { Ok::<_, ()>(Arc::from(text)) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn hits_only_at_the_same_generation_and_within_ttl() {
        let c = ResponseCache::default();
        assert_eq!(&*fetch(&c, "k", 7, "one").await, "one");
        assert_eq!(&*fetch(&c, "k", 7, "two").await, "one", "a hit");
        assert_eq!(
            &*fetch(&c, "k", 8, "three").await,
            "three",
            "a newer write invalidates"
        );
        assert_eq!(&*fetch(&c, "other", 8, "four").await, "four");
        // An entry older than the TTL is replaced.
        let t0 = Instant::now();
        let fresh = c.slot_at("k", 8, t0);
        assert_eq!(fresh.get().map(|b| &**b), Some("three"));
        let later = c.slot_at("k", 8, t0 + TTL * 2);
        assert!(later.get().is_none(), "old entries expire");
    }

    #[tokio::test]
    async fn concurrent_misses_build_once() {
        let c = Arc::new(ResponseCache::default());
        let builds = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (c, builds, gate) = (c.clone(), builds.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_build("page", 1, || async {
                    builds.fetch_add(1, Ordering::SeqCst);
                    // Hold the build until every task has asked.
                    gate.notified().await;
                    Ok::<_, ()>(Arc::from("body"))
                })
                .await
            }));
        }
        tokio::task::yield_now().await;
        while builds.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(&*t.await.unwrap().unwrap(), "body");
        }
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "one query for 32 requests"
        );
    }

    #[tokio::test]
    async fn a_failed_build_is_not_cached() {
        let c = ResponseCache::default();
        let r = c
            .get_or_build("k", 1, || async { Err::<Arc<str>, _>("db down") })
            .await;
        assert_eq!(r.unwrap_err(), "db down");
        assert_eq!(&*fetch(&c, "k", 1, "ok").await, "ok");
    }

    #[tokio::test]
    async fn stays_bounded() {
        let c = ResponseCache::default();
        for i in 0..(MAX_ENTRIES * 3) {
            fetch(&c, &format!("k{i}"), 1, "x").await;
        }
        assert!(c.lock().map.len() <= MAX_ENTRIES);
        // Too large to keep at all.
        let huge = "y".repeat(MAX_BYTES);
        assert_eq!(fetch(&c, "huge", 1, &huge).await.len(), MAX_BYTES);
        assert!(!c.lock().map.contains_key("huge"));
        assert!(c.lock().bytes <= MAX_BYTES);
    }
}
