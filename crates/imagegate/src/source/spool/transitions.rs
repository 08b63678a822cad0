//! The spool's state machine: every change of [`State`] that another thread
//! waits for, each made by one method here together with the wake-up that
//! the table at the top of `mod.rs` names for it, and every wait, each
//! registering itself where its waker looks. The threads change `State`
//! only through these methods (their own bookkeeping, such as the keeper's
//! `mode` or a reader's `rereading`, is theirs), so a missed wake-up can
//! only be a mistake in this file, and the model test (`model.rs`) runs it.

use bytes::Bytes;
use std::time::{Duration, Instant};

use super::sync::MutexGuard;
use super::{Mode, Spool, State};

impl Spool {
    // ------------------------------------------------------------ the pusher

    /// The next chunk arrived at the frontier: readers and the hasher whose
    /// end it passes wake, the keeper may have work.
    pub(super) fn arrive(&self, st: &mut State, chunk: Bytes) {
        let at = st.frontier;
        if st.started.is_none() {
            st.started = Some((Instant::now(), at));
        }
        let end = at + chunk.len() as u64;
        st.ring.push(at, chunk);
        st.frontier = end;
        if st.frontier_waiters.iter().any(|&w| w <= end) {
            self.arrived.notify_all();
        }
        self.nudge_keeper(st);
    }

    /// No more chunks will arrive: everyone waiting for one wakes.
    pub(super) fn input_ended(&self, st: &mut State) {
        st.closed = true;
        self.wake_all();
    }

    /// Waits until the ring has room; `Err` with the failure if the spool
    /// failed meanwhile (nothing will make room then).
    pub(super) fn wait_for_space<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>, String> {
        while self.ring_full(&st) {
            if let Some(f) = &st.failure {
                return Err(f.clone());
            }
            st.pusher_waiting = true;
            self.nudge_keeper(&st);
            // Woken when chunks leave (`left_ring`) or on failure.
            st = self.space.wait(st).unwrap_or_else(|p| p.into_inner());
            st.pusher_waiting = false;
        }
        Ok(st)
    }

    // ------------------------------------------------------------ the hasher

    /// Bytes `[0, pos)` are hashed and zero-scanned: readers waiting for a
    /// hint or a re-read's check, and the keeper (it writes hashed bytes),
    /// may go on.
    pub(super) fn hashed_to(&self, st: &mut State, pos: u64) {
        st.hashed = pos;
        if st.progress_waiters > 0 {
            self.progress.notify_all();
        }
        self.nudge_keeper(st);
    }

    /// The hasher stopped: `hashed` will not move again.
    pub(super) fn hash_ended(&self, st: &mut State) {
        st.hash_done = true;
        self.wake_all();
    }

    /// Waits once for the frontier to pass `end`, registered where the
    /// pusher looks (the caller rechecks). Readers count themselves as the
    /// converter's waiting reads in `read.rs`; the hasher does not.
    pub(super) fn wait_for_arrival<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        end: u64,
    ) -> MutexGuard<'a, State> {
        st.frontier_waiters.push(end);
        st = self.arrived.wait(st).unwrap_or_else(|p| p.into_inner());
        if let Some(i) = st.frontier_waiters.iter().position(|&e| e == end) {
            st.frontier_waiters.swap_remove(i);
        }
        st
    }

    // ------------------------------------------------------------ the keeper

    /// Disk mode: the chunk at the file's frontier is written, up to `end`;
    /// what is hashed and written may leave the ring.
    pub(super) fn written_to(&self, st: &mut State, end: u64) {
        st.on_disk = end;
        self.evict(st);
    }

    /// Memory mode: the ring's oldest chunk, `[at, end)`, is in the file
    /// and leaves the ring.
    pub(super) fn spilled(&self, st: &mut State, at: u64, end: u64) {
        st.in_file.insert(at, end);
        self.left_ring(st);
    }

    /// The ring's oldest chunk leaves it (the keeper alone removes chunks,
    /// so it is the one the keeper looked at); a waiting pusher has room.
    pub(super) fn left_ring(&self, st: &mut State) {
        st.ring.pop_front();
        if st.pusher_waiting {
            self.space.notify_one();
        }
    }

    /// Disk mode: chunks hashed and in the file leave the ring once it is
    /// over its budget, down to its low-water mark.
    pub(super) fn evict(&self, st: &mut State) {
        if !self.ring_over_budget(st) {
            return;
        }
        while self.ring_above_low_water(st) {
            let Some((at, chunk)) = st.ring.front() else {
                break;
            };
            let end = at + chunk.len() as u64;
            if end > st.hashed || end > st.on_disk {
                break;
            }
            self.left_ring(st);
        }
    }

    /// The keeper waits for work: a nudge, a converter's read while
    /// holding, `release` or the end; or `timeout` (the keeper's two rules
    /// of time, `clock_rule`), the only wait here with one.
    pub(super) fn wait_for_work<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        st.keeper_waiting = true;
        st = match timeout {
            Some(timeout) => {
                self.work
                    .wait_timeout(st, timeout)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => self.work.wait(st).unwrap_or_else(|p| p.into_inner()),
        };
        st.keeper_waiting = false;
        st
    }

    /// Wakes the keeper if it waits and may have something to do.
    pub(super) fn nudge_keeper(&self, st: &State) {
        if st.keeper_waiting && (st.mode != Mode::Memory || self.ring_over_budget(st)) {
            self.work.notify_one();
        }
    }

    // ------------------------------------------------------------ readers

    /// A read of the converter's ended while the keeper holds a chunk for
    /// it: the keeper looks again (the chunk may now leave).
    pub(super) fn read_while_holding(&self) {
        let _st = self.lock();
        self.work.notify_one();
    }

    /// Waits on `progress` once, registered where the hasher looks (the
    /// caller rechecks its condition).
    pub(super) fn wait_progress<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> MutexGuard<'a, State> {
        st.progress_waiters += 1;
        self.begin_wait(&mut st);
        st = self.progress.wait(st).unwrap_or_else(|p| p.into_inner());
        self.end_wait(&mut st);
        st.progress_waiters -= 1;
        st
    }

    /// A re-read of granule `g` ended (`kept`: the range it put in the
    /// file): readers waiting for it, or for that range, look again.
    pub(super) fn reread_ended(&self, st: &mut State, g: u64, kept: Option<(u64, u64)>) {
        st.rereading.retain(|&x| x != g);
        if let Some((start, end)) = kept {
            st.in_file.insert(start, end);
        }
        self.progress.notify_all();
    }

    // ------------------------------------------------------------ anyone

    /// The converter has read all it will: chunks may leave the ring without
    /// waiting for it (the inspector's late reads are fetched again).
    pub fn release(&self) {
        let mut st = self.lock();
        st.released = true;
        self.work.notify_all();
    }

    /// Ends the transfer with an error: every waiting and later reader of
    /// missing bytes gets it. Bytes already present stay readable. The
    /// first failure is kept: it is the cause, the later ones its echoes.
    pub(crate) fn fail(&self, msg: impl Into<String>) {
        let mut st = self.lock();
        if st.failure.is_none() && st.frontier < self.len {
            let msg = msg.into();
            tracing::info!(path = %self.path.display(), at = st.frontier, error = %msg, "spool stopped");
            st.failure = Some(msg);
        }
        self.input_ended(&mut st);
    }

    /// Wakes every waiter (each rechecks its condition).
    pub(super) fn wake_all(&self) {
        self.arrived.notify_all();
        self.progress.notify_all();
        self.space.notify_all();
        self.work.notify_all();
    }
}
