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
//!   mutating one, unless it is the same caller's next call (below); a
//!   read-only target runs (it changes nothing, and SDKs polling two
//!   read-only actions send byte-identical bodies);
//! - an identical re-send of a mutating action gets the first answer back,
//!   byte for byte, without running again (the SDKs' own retries sign anew,
//!   with a new timestamp, so they are new requests);
//! - an identical re-send of a read-only action simply runs again.
//!
//! The connection and the clock tell the attack from an honest client. A
//! DescribeImages followed within the same second by a DeleteImages of the
//! same `ImageIds` (Terraform's refresh then destroy, or two tccli runs)
//! shares its signature. The SDKs keep their connection alive, so their
//! pair comes on one connection; tccli runs a process per call, so its
//! pair comes on two, but at once: within `SAME_CALLER_SECS` of the
//! signature's timestamp and of its first use. A captured request is sent
//! again later, from a connection of the attacker's: refused. To send it
//! at once takes someone watching the client's traffic live, which TLS
//! prevents (and on plain HTTP such a watcher on the path could rewrite
//! the unsigned `X-TC-Action` of the original request anyway).
//!
//! Memory is bounded by `capacity` entries (the oldest go first when full).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tcapi::Binding;
use tokio::sync::watch;

use crate::net::conns::ConnectionId;

/// How long an identical re-send waits for the first copy's answer.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(30);

/// How soon after its signing and its first use a signature may carry the
/// same caller's next, mutating call from another connection: a second's
/// worth of one client's calls, plus a second for delivery.
const SAME_CALLER_SECS: i64 = 2;

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
    /// Where the signature was first used (none: not through our listener).
    connection: Option<ConnectionId>,
    /// When it was first used (Unix seconds, the server's clock).
    first_used: i64,
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
    pub connection: Option<ConnectionId>,
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
            match inner.entries.get_mut(&seen.binding.key) {
                Some(e) if e.expires >= seen.now => {
                    // Under v1 another request under a used Nonce.
                    if e.identity != seen.binding.identity {
                        return Verdict::Mismatch;
                    }
                    if e.action != seen.action || e.region.as_deref() != seen.region {
                        // A read-only target changes nothing, and the SDKs
                        // send byte-identical bodies to different read-only
                        // actions within a second all the time (polling
                        // DescribeImages and DescribeImportImageTasks by
                        // ImageIds): it runs, the binding stays the first.
                        if !tcapi::is_mutating(seen.action) {
                            return Verdict::Run(None);
                        }
                        // Turned into something that changes state, later or
                        // from elsewhere: refused. On the client's own
                        // connection, or at once, it is the client's next
                        // call: it runs and the binding becomes this one (a
                        // re-send of it gets its answer).
                        if !e.same_caller(&seen) {
                            return Verdict::Mismatch;
                        }
                        let (slot, answer) = answer_slot();
                        e.action = seen.action;
                        e.region = seen.region.map(Box::from);
                        e.answer = Some(answer);
                        return Verdict::Run(Some(slot));
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
            let (slot, answer) = answer_slot();
            (Some(slot), Some(answer))
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
                connection: seen.connection,
                first_used: seen.now,
            },
        );
        inner.order.push_back((seen.binding.key, expires));
        slot
    }
}

impl Entry {
    /// Whether `seen`, under this entry's signature, is its client's next
    /// call rather than a captured request sent again (see the module).
    fn same_caller(&self, seen: &Seen<'_>) -> bool {
        let own_connection = self.connection.is_some() && self.connection == seen.connection;
        let at_once = seen.now - seen.timestamp <= SAME_CALLER_SECS
            && seen.now - self.first_used <= SAME_CALLER_SECS;
        own_connection || at_once
    }
}

/// Where a mutating request's first copy leaves its answer, and how a
/// re-send reads it.
fn answer_slot() -> (AnswerSlot, watch::Receiver<Answer>) {
    let (tx, rx) = watch::channel(None);
    (AnswerSlot(tx), rx)
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
            connection: Some(*CONN_A),
        }
    }

    /// `seen` sent again `secs` later from another connection: a captured copy.
    fn captured(mut s: Seen<'static>, secs: i64, from: ConnectionId) -> Seen<'static> {
        s.now += secs;
        s.connection = Some(from);
        s
    }

    /// The connection `seen` requests come on.
    static CONN_A: std::sync::LazyLock<ConnectionId> = std::sync::LazyLock::new(ConnectionId::next);

    #[tokio::test]
    async fn the_clients_own_connection_may_use_a_signature_for_its_next_call() {
        let g = ReplayGuard::new(16);
        let other = ConnectionId::next();
        g.check(seen(5, 5, "DescribeImages", "ap-guangzhou")).await;
        // Another connection, later: the captured request cannot become a delete.
        let mut elsewhere = captured(seen(5, 5, "DeleteImages", "ap-guangzhou"), 3, other);
        assert!(matches!(g.check(elsewhere).await, Verdict::Mismatch));
        // Nor can a request from outside our listener (no connection known).
        elsewhere.connection = None;
        assert!(matches!(g.check(elsewhere).await, Verdict::Mismatch));
        // The client's own next call on its connection, same body, later
        // still: it runs, and the binding is now the delete's.
        let mut own = seen(5, 5, "DeleteImages", "ap-guangzhou");
        own.now += 3;
        let Verdict::Run(Some(slot)) = g.check(own).await else {
            panic!("the client's own delete runs")
        };
        slot.finish("{\"Response\":{\"RequestId\":\"d\"}}");
        let resend = captured(seen(5, 5, "DeleteImages", "ap-guangzhou"), 4, other);
        let Verdict::Replay(body) = g.check(resend).await else {
            panic!("a re-send of the delete gets its answer")
        };
        assert_eq!(&*body, "{\"Response\":{\"RequestId\":\"d\"}}");
        // Moved to another region from elsewhere: refused still.
        let moved = captured(seen(5, 5, "DeleteImages", "ap-shanghai"), 4, other);
        assert!(matches!(g.check(moved).await, Verdict::Mismatch));
        // Read-only after it, anywhere: runs (Terraform reads after deleting).
        let read = captured(seen(5, 5, "DescribeImages", "ap-guangzhou"), 4, other);
        assert!(matches!(g.check(read).await, Verdict::Run(None)));
        assert_eq!(g.len(), 1);
    }

    #[tokio::test]
    async fn a_process_per_call_client_may_use_a_signature_for_its_next_call_at_once() {
        // tccli: DescribeImages, then DeleteImages of the same image from a
        // new process (a new connection), signed in the same second.
        let g = ReplayGuard::new(16);
        g.check(seen(6, 6, "DescribeImages", "ap-guangzhou")).await;
        let next = captured(
            seen(6, 6, "DeleteImages", "ap-guangzhou"),
            SAME_CALLER_SECS,
            ConnectionId::next(),
        );
        assert!(matches!(g.check(next).await, Verdict::Run(Some(_))));
        // A moment later the binding is the delete's: a region change is refused.
        let moved = captured(
            seen(6, 6, "DeleteImages", "ap-shanghai"),
            SAME_CALLER_SECS + 1,
            ConnectionId::next(),
        );
        assert!(matches!(g.check(moved).await, Verdict::Mismatch));
    }

    #[tokio::test]
    async fn a_timestamp_from_the_future_does_not_stretch_at_once() {
        // A client clock 100 s ahead: fresh by its own timestamp for long,
        // but the first use on the server's clock still bounds "at once".
        let g = ReplayGuard::new(16);
        let mut first = seen(7, 7, "DescribeImages", "ap-guangzhou");
        first.timestamp = first.now + 100;
        g.check(first).await;
        let late = captured(
            Seen {
                action: "DeleteImages",
                ..first
            },
            SAME_CALLER_SECS + 1,
            ConnectionId::next(),
        );
        assert!(matches!(g.check(late).await, Verdict::Mismatch));
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
        // Sent again later by someone else (on another connection).
        let elsewhere = ConnectionId::next();
        for other in [
            seen(1, 1, "DeleteImages", "ap-guangzhou"),
            seen(1, 1, "ImportImage", "ap-shanghai"),
            seen(1, 2, "DescribeImages", "ap-guangzhou"),
        ] {
            let other = captured(other, SAME_CALLER_SECS + 1, elsewhere);
            assert!(matches!(g.check(other).await, Verdict::Mismatch));
        }
        // Another v1 request under a used Nonce: refused on any connection.
        assert!(matches!(
            g.check(seen(1, 2, "DescribeImages", "ap-guangzhou")).await,
            Verdict::Mismatch
        ));
        // Read-only elsewhere: runs.
        for other in [
            seen(1, 1, "DescribeImportImageTasks", "ap-guangzhou"),
            seen(1, 1, "DescribeImages", "ap-shanghai"),
        ] {
            assert!(matches!(g.check(other).await, Verdict::Run(None)));
        }
        // A mutating first use keeps its region too.
        g.check(seen(3, 3, "DeleteImages", "ap-guangzhou")).await;
        let moved = captured(seen(3, 3, "DeleteImages", "ap-shanghai"), 10, elsewhere);
        assert!(matches!(g.check(moved).await, Verdict::Mismatch));
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
