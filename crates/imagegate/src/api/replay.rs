//! Binds each accepted signature to what it was accepted for.
//!
//! The SDKs sign only `content-type` and `host`, so a captured TC3 request
//! could otherwise be sent again within the five-minute window with another
//! `X-TC-Action` or `X-TC-Region` (a DescribeImages turned into a
//! DeleteImages). Every verified request is recorded here, keyed by its
//! signature (v1: by SecretId and Nonce), with its action and region, until
//! its timestamp leaves the window:
//!
//! - the same key with another (v1) signature is refused, and so is the
//!   same signature with another action or region when that action is a
//!   mutating one; a read-only target runs (it changes nothing, and
//!   SDKs polling two read-only actions send byte-identical bodies);
//! - an identical re-send of a mutating action gets the first answer back,
//!   byte for byte, without running again (the SDKs' own retries sign anew,
//!   with a new timestamp, so they are new requests);
//! - an identical re-send of a read-only action simply runs again.
//!
//! Memory is bounded by `capacity` entries (the oldest go first when full).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tcapi::Binding;
use tokio::sync::watch;

/// How long an identical re-send waits for the first copy's answer.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(30);

/// Largest answer kept for re-sends; mutating answers are a few hundred bytes.
const MAX_KEPT_ANSWER: usize = 64 << 10;

/// The first copy's answer, once it has one.
type Answer = Option<Arc<str>>;

#[derive(Debug)]
struct Entry {
    /// Unix seconds after which the signature is expired anyway.
    expires: i64,
    identity: [u8; 32],
    action: &'static str,
    region: Option<Box<str>>,
    /// Mutating actions only.
    answer: Option<watch::Receiver<Answer>>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<[u8; 32], Entry>,
    /// Keys in the order recorded, with their expiry, for eviction.
    order: VecDeque<([u8; 32], i64)>,
}

/// The record of accepted signatures.
#[derive(Debug)]
pub struct ReplayGuard {
    inner: Mutex<Inner>,
    capacity: usize,
}

/// What to do with a verified request.
#[derive(Debug)]
pub enum Verdict {
    /// Run it. For a mutating action, hand the answer to the slot.
    Run(Option<AnswerSlot>),
    /// Identical re-send of a mutating action: answer this, run nothing.
    Replay(Arc<str>),
    /// The signature was accepted for another action, region or request.
    Mismatch,
}

/// Where the first copy of a mutating request leaves its answer.
#[derive(Debug)]
pub struct AnswerSlot(watch::Sender<Answer>);

impl AnswerSlot {
    pub fn finish(self, body: &str) {
        if body.len() <= MAX_KEPT_ANSWER {
            let _ = self.0.send(Some(Arc::from(body)));
        }
    }
}

/// One request as the guard sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub binding: Binding,
    pub action: &'static str,
    pub region: Option<&'a str>,
    /// The request's timestamp (Unix seconds).
    pub timestamp: i64,
    pub now: i64,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `seen` or judges it against the first use of its key.
    pub async fn check(&self, seen: Seen<'_>) -> Verdict {
        let waiting = {
            let mut inner = self.lock();
            match inner.entries.get(&seen.binding.key) {
                Some(e) if e.expires >= seen.now => {
                    // Under v1 another request under a used Nonce.
                    if e.identity != seen.binding.identity {
                        return Verdict::Mismatch;
                    }
                    if e.action != seen.action || e.region.as_deref() != seen.region {
                        // Turned into something that changes state: refused.
                        // A read-only target changes nothing, and the SDKs
                        // send byte-identical bodies to different read-only
                        // actions within a second all the time (polling
                        // DescribeImages and DescribeImportImageTasks by
                        // ImageIds): it runs, the binding stays the first.
                        if tcapi::is_mutating(seen.action) {
                            return Verdict::Mismatch;
                        }
                        return Verdict::Run(None);
                    }
                    match &e.answer {
                        None => return Verdict::Run(None),
                        Some(rx) => rx.clone(),
                    }
                }
                _ => return Verdict::Run(self.record(&mut inner, seen)),
            }
        };
        wait_for_answer(waiting).await
    }

    fn record(&self, inner: &mut Inner, seen: Seen<'_>) -> Option<AnswerSlot> {
        let expires = seen.timestamp + tcapi::request::MAX_SKEW_SECS as i64;
        while let Some(&(key, at)) = inner.order.front() {
            if at >= seen.now && inner.entries.len() < self.capacity {
                break;
            }
            inner.order.pop_front();
            // A key recorded again later has a newer expiry: keep that one.
            if inner.entries.get(&key).is_some_and(|e| e.expires == at) {
                inner.entries.remove(&key);
            }
        }
        let (slot, answer) = if tcapi::is_mutating(seen.action) {
            let (tx, rx) = watch::channel(None);
            (Some(AnswerSlot(tx)), Some(rx))
        } else {
            (None, None)
        };
        inner.entries.insert(
            seen.binding.key,
            Entry {
                expires,
                identity: seen.binding.identity,
                action: seen.action,
                region: seen.region.map(Box::from),
                answer,
            },
        );
        inner.order.push_back((seen.binding.key, expires));
        slot
    }
}

async fn wait_for_answer(mut rx: watch::Receiver<Answer>) -> Verdict {
    let answered = tokio::time::timeout(WAIT_FOR_FIRST, rx.wait_for(|a| a.is_some())).await;
    match answered {
        Ok(Ok(a)) => match (*a).clone() {
            Some(body) => Verdict::Replay(body),
            None => Verdict::Mismatch,
        },
        // The first copy failed to answer (its connection broke before the
        // answer was kept) or is still running: do not run it a second time.
        _ => Verdict::Mismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(key: u8, identity: u8, action: &'static str, region: &'static str) -> Seen<'static> {
        Seen {
            binding: Binding {
                key: [key; 32],
                identity: [identity; 32],
            },
            action,
            region: Some(region),
            timestamp: 1000,
            now: 1000,
        }
    }

    #[tokio::test]
    async fn a_signature_keeps_its_action_and_region() {
        let g = ReplayGuard::new(16);
        assert!(matches!(
            g.check(seen(1, 1, "DescribeImages", "ap-guangzhou")).await,
            Verdict::Run(None)
        ));
        // Read-only re-send: runs again.
        assert!(matches!(
            g.check(seen(1, 1, "DescribeImages", "ap-guangzhou")).await,
            Verdict::Run(None)
        ));
        for other in [
            seen(1, 1, "DeleteImages", "ap-guangzhou"),
            seen(1, 1, "ImportImage", "ap-shanghai"),
            seen(1, 2, "DescribeImages", "ap-guangzhou"),
        ] {
            assert!(matches!(g.check(other).await, Verdict::Mismatch));
        }
        // Read-only elsewhere: runs.
        for other in [
            seen(1, 1, "DescribeImportImageTasks", "ap-guangzhou"),
            seen(1, 1, "DescribeImages", "ap-shanghai"),
        ] {
            assert!(matches!(g.check(other).await, Verdict::Run(None)));
        }
        // A mutating first use keeps its region too.
        g.check(seen(3, 3, "DeleteImages", "ap-guangzhou")).await;
        assert!(matches!(
            g.check(seen(3, 3, "DeleteImages", "ap-shanghai")).await,
            Verdict::Mismatch
        ));
    }

    #[tokio::test]
    async fn a_mutating_resend_gets_the_first_answer() {
        let g = ReplayGuard::new(16);
        let Verdict::Run(Some(slot)) = g.check(seen(2, 2, "DeleteImages", "ap-guangzhou")).await
        else {
            panic!("first copy runs")
        };
        slot.finish("{\"Response\":{\"RequestId\":\"a\"}}");
        let Verdict::Replay(body) = g.check(seen(2, 2, "DeleteImages", "ap-guangzhou")).await
        else {
            panic!("second copy is answered")
        };
        assert_eq!(&*body, "{\"Response\":{\"RequestId\":\"a\"}}");
    }

    #[tokio::test]
    async fn memory_is_bounded_and_expired_entries_go() {
        let g = ReplayGuard::new(4);
        for k in 0..10u8 {
            g.check(seen(k, k, "DescribeImages", "ap-guangzhou")).await;
        }
        assert_eq!(g.len(), 4);
        let mut late = seen(99, 99, "DescribeImages", "ap-guangzhou");
        late.now = 2000;
        late.timestamp = 2000;
        g.check(late).await;
        assert_eq!(g.len(), 1, "expired entries are dropped first");
    }
}
