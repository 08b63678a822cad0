//! The reading side of the spool: readers wait for their range to arrive,
//! take it from the ring, or from the file, or fetch it again (checked
//! against the hash chain), and report how far the converter has read.

use std::cell::Cell;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use super::sync::MutexGuard;
use super::{ring, Reread, RereadFailure, Spool, State};

/// How far past the asked offset a hint waits for the download, so that it
/// describes a useful run rather than the last few bytes that arrived.
const HINT_SPAN: u64 = 4 << 20;

thread_local! {
    static UNTRACKED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's spool reads left out of the converter's
/// progress. The guest inspector reads a few blocks anywhere in the disk;
/// counted, a jump ahead would let the ring drop bytes the converter has
/// not read yet (they would then be fetched again).
pub fn untracked<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            UNTRACKED.set(self.0);
        }
    }
    let _reset = Reset(UNTRACKED.replace(true));
    f()
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the image",
    )
}

impl Spool {
    /// Counts a waiting reader of the converter's.
    pub(super) fn begin_wait(&self, st: &mut State) {
        if !UNTRACKED.get() {
            st.tracked_waiting += 1;
        }
    }

    pub(super) fn end_wait(&self, st: &mut State) {
        if !UNTRACKED.get() {
            st.tracked_waiting -= 1;
        }
    }

    /// A read of the converter's ended at `end`.
    fn note_read(&self, end: u64) {
        if UNTRACKED.get() {
            return;
        }
        self.read_high.fetch_max(end, Ordering::SeqCst);
        let now = self.created.elapsed().as_millis() as u64;
        self.last_read_ms.store(now, Ordering::Relaxed);
        if self.holding.load(Ordering::SeqCst) {
            self.read_while_holding();
        }
    }

    /// Waits until the frontier reaches `end`.
    fn wait_arrived<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        end: u64,
    ) -> io::Result<MutexGuard<'a, State>> {
        while st.frontier < end {
            if let Some(f) = &st.failure {
                return Err(io::Error::other(format!("the image download failed: {f}")));
            }
            if st.closed {
                return Err(io::Error::other("the image download ended early"));
            }
            self.begin_wait(&mut st);
            st = self.wait_for_arrival(st, end);
            self.end_wait(&mut st);
        }
        Ok(st)
    }

    /// Fills `buf` with source bytes at `offset` that have arrived but have
    /// left the ring: from the file, or fetched again.
    fn read_evicted(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let in_file = {
                let st = self.lock();
                if pos < st.on_disk {
                    Some(st.on_disk)
                } else {
                    st.in_file.end_of_span_at(pos)
                }
            };
            match in_file {
                Some(upto) => {
                    let n = upto.min(end) - pos;
                    let b = (pos - offset) as usize;
                    self.file.read_exact_at(&mut buf[b..b + n as usize], pos)?;
                    self.stats.from_file.fetch_add(n, Ordering::Relaxed);
                    pos += n;
                }
                None => self.reread_granule(pos / self.chain.granule())?,
            }
        }
        Ok(())
    }

    /// Fetches granule `g` again, checks it against the hash chain and keeps
    /// it in the file (one reader fetches; others asking meanwhile wait).
    fn reread_granule(&self, g: u64) -> io::Result<()> {
        let (start, end) = self.chain.range(g);
        let Some(reread) = self.reread.clone() else {
            return Err(io::Error::other(
                "internal: bytes left memory that cannot be fetched again",
            ));
        };
        {
            let mut st = self.lock();
            loop {
                if st.in_file.end_of_span_at(start).is_some_and(|e| e >= end) {
                    return Ok(());
                }
                let busy = st.rereading.contains(&g);
                if !busy && self.chain.can_verify(g) {
                    break;
                }
                if !busy && st.hash_done && st.hashed < end {
                    return Err(io::Error::other(format!(
                        "the image download failed before byte {end}: {}",
                        st.failure.as_deref().unwrap_or("it ended early")
                    )));
                }
                st = self.wait_progress(st);
            }
            st.rereading.push(g);
        }
        let outcome = self.fetch_checked(&*reread, g, start, end);
        let mut st = self.lock();
        self.reread_ended(&mut st, g, outcome.is_ok().then_some((start, end)));
        match outcome {
            Ok(()) => {
                let total = self.stats.reread.fetch_add(end - start, Ordering::Relaxed);
                if total + (end - start) >= self.tuning.spill_after_rereads && !st.spill_all {
                    st.spill_all = true;
                    tracing::info!(
                        path = %self.path.display(),
                        reread = total + (end - start),
                        "many reads behind the download: spilling to the spool file from now on"
                    );
                }
                Ok(())
            }
            Err(f) => {
                let msg = match &f {
                    RereadFailure::Unreachable(m) | RereadFailure::Changed(m) => m.clone(),
                };
                self.reread_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(f);
                Err(io::Error::other(msg))
            }
        }
    }

    fn fetch_checked(
        &self,
        reread: &dyn Reread,
        g: u64,
        start: u64,
        end: u64,
    ) -> Result<(), RereadFailure> {
        let data = reread.reread(start, (end - start) as usize)?;
        if !self.chain.verify(g, &data) {
            return Err(RereadFailure::Changed(format!(
                "bytes {start}-{} of the source read again differ from the first download \
                 (the object changed, or the server does not serve it consistently)",
                end - 1
            )));
        }
        self.zeros
            .write_skipping(&self.file, start, &data)
            .map_err(|e| RereadFailure::Unreachable(format!("writing the spool file failed: {e}")))
    }
}

impl diskformat::ReadAt for Spool {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(eof)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (pieces, ring_start) = {
            let st = self.wait_arrived(self.lock(), end)?;
            let ring_start = st.ring.start_or(st.frontier);
            let pieces = if end > ring_start {
                st.ring.covering(offset.max(ring_start), end)
            } else {
                Vec::new()
            };
            (pieces, ring_start)
        };
        let in_ring = if end > ring_start {
            ring::copy_pieces(&pieces, offset, buf);
            end - offset.max(ring_start)
        } else {
            0
        };
        self.stats.from_ring.fetch_add(in_ring, Ordering::Relaxed);
        if offset < ring_start {
            let n = (ring_start.min(end) - offset) as usize;
            self.read_evicted(offset, &mut buf[..n])?;
        }
        self.note_read(end);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// Runs of zero chunks found on the way in are reported as zeros;
    /// everything else may be data. Waits until a few MiB past `offset` have
    /// been scanned.
    fn extent_hint(&self, offset: u64, max_len: u64) -> io::Result<diskformat::Hint> {
        let unknown = diskformat::Hint {
            len: max_len.min(self.len.saturating_sub(offset)).max(1),
            zero: false,
        };
        if offset >= self.len || max_len == 0 {
            return Ok(unknown);
        }
        let want = offset.saturating_add(max_len.min(HINT_SPAN)).min(self.len);
        let scanned = {
            let mut st = self.lock();
            while st.hashed < want && !st.hash_done {
                st = self.wait_progress(st);
            }
            st.hashed
        };
        if scanned < want {
            // The read that follows reports the failure.
            return Ok(unknown);
        }
        let limit = offset.saturating_add(max_len).min(scanned);
        let (run_end, zero) = self.zeros.run(offset, limit);
        let len = run_end.max(offset + 1) - offset;
        if zero {
            // Skipping zeros is reading past them: the ring need not keep
            // them for this reader.
            self.note_read(offset + len);
        }
        Ok(diskformat::Hint { len, zero })
    }
}
