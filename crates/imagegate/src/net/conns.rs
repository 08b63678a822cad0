//! The connection table of one listener: admits a connection under the cap
//! (closing the oldest one that has no request in flight when full) and
//! keeps each connection's clocks for its watchdog.
//!
//! Times are milliseconds since the table's epoch in atomics, so the IO
//! wrapper can note a first byte without a lock.

use super::settings::Timeouts;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// No time noted (field value).
const NONE: u64 = u64::MAX;

/// One accepted connection, for the life of the process (every listener
/// draws from one counter). Each request carries its connection's id as an
/// extension: the API tells a client's own connection from another one by
/// it (see `api::replay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(u64);

impl ConnectionId {
    pub fn next() -> ConnectionId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnectionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// One open connection.
#[derive(Debug)]
pub struct Conn {
    epoch: Instant,
    /// Requests whose handler has not answered yet.
    in_flight: AtomicUsize,
    /// Whether a request has been answered on this connection.
    served: AtomicBool,
    /// When it was accepted or last answered (ms).
    idle_since: AtomicU64,
    /// First byte of a request head read while idle (ms), or `NONE`.
    head_started: AtomicU64,
    /// Told when a clock changes or the connection must close.
    changed: Notify,
    evicted: AtomicBool,
}

impl Conn {
    fn new(epoch: Instant) -> Conn {
        Conn {
            epoch,
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(ms_since(epoch)),
            head_started: AtomicU64::new(NONE),
            changed: Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        ms_since(self.epoch)
    }

    /// Bytes arrived; when idle, they start a request head's clock.
    pub fn note_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            self.head_started.store(self.now(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A request head is complete and its handler runs; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
        self.changed.notify_one();
        RequestGuard(self.clone())
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// When the watchdog must close the connection: `None` while a request
    /// is in flight (its handler bounds the body; see `api::http`).
    pub fn deadline(&self, t: &Timeouts) -> Option<u64> {
        if !self.idle() {
            return None;
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != NONE {
            return Some(head + t.header.as_millis() as u64);
        }
        let since = self.idle_since.load(Ordering::Relaxed);
        // The first request must arrive as fast as a header; later ones may
        // wait the idle timeout for their first byte.
        let wait = if self.served.load(Ordering::Relaxed) {
            t.idle
        } else {
            t.header
        };
        Some(since + wait.as_millis() as u64)
    }

    /// Waits until this connection must be closed: a clock ran out, or it
    /// was evicted to make room.
    pub async fn expired(&self, t: &Timeouts) {
        loop {
            if self.evicted.load(Ordering::Relaxed) {
                return;
            }
            let changed = self.changed.notified();
            match self.deadline(t) {
                Some(at) => {
                    let now = self.now();
                    if now >= at {
                        return;
                    }
                    let sleep = tokio::time::sleep(Duration::from_millis(at - now));
                    tokio::select! {
                        _ = sleep => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    pub fn was_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }
}

/// Ends a request (also when its future is dropped half-way).
#[derive(Debug)]
pub struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since.store(c.now(), Ordering::Relaxed);
        c.served.store(true, Ordering::Relaxed);
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
        c.changed.notify_one();
    }
}

fn ms_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// All connections of one listener.
#[derive(Debug)]
pub struct Table {
    epoch: Instant,
    max: usize,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Told when the table becomes empty (graceful shutdown waits on it).
    emptied: Notify,
}

/// What admission did.
#[derive(Debug)]
pub enum Admission {
    /// Admitted, with nobody closed.
    Admitted(Slot),
    /// Admitted after closing the oldest connection without a request.
    Evicted(Slot),
    /// Every connection has a request in flight: the new one is closed.
    Refused,
}

impl Table {
    pub fn new(max: usize) -> Arc<Table> {
        Arc::new(Table {
            epoch: Instant::now(),
            max,
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            emptied: Notify::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // A panic while holding this lock leaves a consistent map.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection under the cap.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut conns = self.lock();
        let mut evicted = false;
        if conns.len() >= self.max {
            let victim = conns
                .iter()
                .filter(|(_, c)| c.idle())
                .min_by_key(|(_, c)| {
                    let head = c.head_started.load(Ordering::Relaxed);
                    // A head in progress is older than its idle time says.
                    head.min(c.idle_since.load(Ordering::Relaxed))
                })
                .map(|(id, _)| *id);
            let Some(id) = victim else {
                return Admission::Refused;
            };
            if let Some(c) = conns.remove(&id) {
                c.evicted.store(true, Ordering::Relaxed);
                c.changed.notify_one();
            }
            evicted = true;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(self.epoch));
        conns.insert(id, conn.clone());
        let slot = Slot {
            table: self.clone(),
            id,
            conn,
        };
        if evicted {
            Admission::Evicted(slot)
        } else {
            Admission::Admitted(slot)
        }
    }

    /// Waits until no connection is open.
    pub async fn drained(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }
}

/// A connection's place in the table; leaving frees it.
#[derive(Debug)]
pub struct Slot {
    table: Arc<Table>,
    id: u64,
    pub conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut conns = self.table.lock();
        conns.remove(&self.id);
        if conns.is_empty() {
            self.table.emptied.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let table = Table::new(2);
        let Admission::Admitted(a) = table.admit() else {
            panic!("first")
        };
        let Admission::Admitted(b) = table.admit() else {
            panic!("second")
        };
        // `a` is busy, so `b` (idle) is the one closed for the third.
        let _busy = a.conn.begin();
        let Admission::Evicted(c) = table.admit() else {
            panic!("third evicts")
        };
        assert!(b.conn.was_evicted() && !a.conn.was_evicted());
        assert_eq!(table.len(), 2);
        // Now `a` and `c` busy: a fourth is refused.
        let _busy_c = c.conn.begin();
        assert!(matches!(table.admit(), Admission::Refused));
        drop(b);
        assert_eq!(table.len(), 2, "an evicted slot is already gone");
    }

    #[test]
    fn clocks_follow_the_request_cycle() {
        let table = Table::new(4);
        let Admission::Admitted(s) = table.admit() else {
            panic!()
        };
        let c = &s.conn;
        // New connection: the header timeout.
        assert_eq!(
            c.deadline(&t()),
            Some(c.idle_since.load(Ordering::Relaxed) + 10_000)
        );
        let g = c.begin();
        assert_eq!(c.deadline(&t()), None, "no clock while a request runs");
        drop(g);
        // Answered: the idle timeout, until a byte starts a head.
        let since = c.idle_since.load(Ordering::Relaxed);
        assert_eq!(c.deadline(&t()), Some(since + 60_000));
        c.note_read();
        let head = c.head_started.load(Ordering::Relaxed);
        assert_eq!(c.deadline(&t()), Some(head + 10_000));
    }
}
