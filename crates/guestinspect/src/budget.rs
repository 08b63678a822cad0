//! The overall budget of one inspection: a deadline and a cap on the bytes
//! read, on top of the per-structure budgets inside each parser. Every read
//! of the inspection passes through [`Budgeted`]; once either limit is
//! passed, that read and every later one fail with `TimedOut` (which the
//! inspector treats as a failing source, so it stops at once), and
//! [`inspect`](crate::inspect) reports [`InspectError::Budget`](crate::InspectError).

use diskformat::ReadAt;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which limit stopped an inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetExceeded {
    Deadline(Duration),
    Reads(u64),
}

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetExceeded::Deadline(d) => write!(
                f,
                "guest inspection did not finish within its deadline of {} s",
                d.as_secs()
            ),
            BudgetExceeded::Reads(n) => write!(
                f,
                "guest inspection needed to read more than its budget of {} MiB",
                n >> 20
            ),
        }
    }
}

const OK: u8 = 0;
const DEADLINE: u8 = 1;
const READS: u8 = 2;

/// A reader that enforces the inspection's deadline and read budget.
pub struct Budgeted {
    inner: Arc<dyn ReadAt>,
    started: Instant,
    deadline: Option<Duration>,
    max_bytes: Option<u64>,
    bytes: AtomicU64,
    tripped: AtomicU8,
}

impl Budgeted {
    pub fn new(
        inner: Arc<dyn ReadAt>,
        deadline: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Budgeted {
        Budgeted {
            inner,
            started: Instant::now(),
            deadline,
            max_bytes,
            bytes: AtomicU64::new(0),
            tripped: AtomicU8::new(OK),
        }
    }

    /// The limit that was passed, if any.
    pub fn exceeded(&self) -> Option<BudgetExceeded> {
        match self.tripped.load(Ordering::SeqCst) {
            DEADLINE => self.deadline.map(BudgetExceeded::Deadline),
            READS => self.max_bytes.map(BudgetExceeded::Reads),
            _ => None,
        }
    }

    fn check(&self, len: u64) -> io::Result<()> {
        if self.tripped.load(Ordering::SeqCst) == OK {
            let read = self.bytes.fetch_add(len, Ordering::Relaxed) + len;
            if self.max_bytes.is_some_and(|max| read > max) {
                self.tripped.store(READS, Ordering::SeqCst);
            } else if self.deadline.is_some_and(|d| self.started.elapsed() > d) {
                self.tripped.store(DEADLINE, Ordering::SeqCst);
            }
        }
        match self.exceeded() {
            Some(e) => Err(io::Error::new(io::ErrorKind::TimedOut, e.to_string())),
            None => Ok(()),
        }
    }
}

impl ReadAt for Budgeted {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(buf.len() as u64)?;
        self.inner.read_at(offset, buf)?;
        // A read that blocked past the deadline (a slow source) counts too.
        self.check(0)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Zeros;
    impl ReadAt for Zeros {
        fn read_at(&self, _: u64, buf: &mut [u8]) -> io::Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn len(&self) -> u64 {
            1 << 30
        }
    }

    #[test]
    fn reads_past_the_budget_fail_and_stay_failed() {
        let b = Budgeted::new(Arc::new(Zeros), None, Some(8192));
        let mut buf = [0u8; 4096];
        b.read_at(0, &mut buf).unwrap();
        b.read_at(4096, &mut buf).unwrap();
        let e = b.read_at(8192, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(b.exceeded(), Some(BudgetExceeded::Reads(8192)));
        assert!(b.read_at(0, &mut [0u8; 1]).is_err());
    }

    #[test]
    fn a_passed_deadline_fails_the_next_read() {
        let b = Budgeted::new(Arc::new(Zeros), Some(Duration::ZERO), None);
        std::thread::sleep(Duration::from_millis(2));
        assert!(b.read_at(0, &mut [0u8; 512]).is_err());
        assert_eq!(b.exceeded(), Some(BudgetExceeded::Deadline(Duration::ZERO)));
        let free = Budgeted::new(Arc::new(Zeros), None, None);
        free.read_at(0, &mut [0u8; 512]).unwrap();
        assert_eq!(free.exceeded(), None);
    }
}
