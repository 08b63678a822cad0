//! The keeper thread: decides the mode (`auto`), writes chunks to the file
//! (disk mode: all, in order; memory mode: the ones a reader may still
//! need) and takes chunks out of the ring once they are hashed and kept.
//! It alone removes chunks from the ring, so a chunk it is writing is still
//! the ring's front when it comes back.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::sync::MutexGuard;
use super::threads::Checkpoint;
use super::{Mode, Spool, State};

/// How often the keeper updates the resume sidecar (disk mode).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// What the keeper does next, outside the lock.
enum Job {
    /// Disk mode: write the chunk at the file's frontier.
    Write(u64, Bytes),
    /// Memory mode: write the ring's oldest chunk before it leaves.
    Spill(u64, Bytes),
    /// Disk mode: the chunk at the file's frontier is missing (a broken
    /// invariant: failing beats waiting for it forever).
    Lost(u64),
}

pub(super) fn keep_thread(spool: &Spool, out: &File, checkpoint: Checkpoint) -> Result<(), String> {
    let mut keeper = Keeper {
        spool,
        out,
        checkpoint,
        last_checkpoint: Instant::now(),
        checkpointed: None,
    };
    while let Some(job) = keeper.wait_for_job() {
        keeper.run(job)?;
    }
    Ok(())
}

/// The keeper thread's own state.
struct Keeper<'a> {
    spool: &'a Spool,
    out: &'a File,
    checkpoint: Checkpoint,
    last_checkpoint: Instant,
    /// What the sidecar was last told (disk mode).
    checkpointed: Option<u64>,
}

impl Keeper<'_> {
    /// Waits for the next job; `None` once nothing more will arrive or be
    /// hashed and, in disk mode, everything hashed is written.
    fn wait_for_job(&mut self) -> Option<Job> {
        let spool = self.spool;
        let mut st = spool.lock();
        loop {
            if st.mode == Mode::Deciding {
                if let Some(mode) = choose_mode(spool, &st) {
                    st.mode = mode;
                    tracing::debug!(path = %spool.path.display(), ?mode, "spool mode chosen");
                }
            }
            if st.mode == Mode::Disk && self.checkpointed.is_none() {
                // The sidecar exists from the moment the file is the
                // spool, even before its first bytes are written.
                let at = st.on_disk;
                self.checkpointed = Some(at);
                drop(st);
                (self.checkpoint)(at);
                st = spool.lock();
            }
            if let Some(job) = next_job(spool, &mut st) {
                return Some(job);
            }
            let finished =
                st.closed && st.hash_done && (st.mode != Mode::Disk || st.on_disk >= st.hashed);
            if finished {
                let at = st.on_disk;
                let disk = st.mode == Mode::Disk;
                drop(st);
                if disk && self.checkpointed != Some(at) {
                    (self.checkpoint)(at);
                }
                return None;
            }
            // Woken by `nudge_keeper`, a read of the converter's while
            // holding, `release` or the end; deciding and holding are also
            // rules of time, so they look at the clock again.
            let timeout = clock_rule(spool, &st);
            st = spool.wait_for_work(st, timeout);
        }
    }

    /// Does one job's I/O outside the lock, then records it.
    fn run(&mut self, job: Job) -> Result<(), String> {
        let spool = self.spool;
        match job {
            Job::Lost(at) => Err(format!(
                "internal: the spool lost the chunk at byte {at} before writing it"
            )),
            Job::Write(at, chunk) => {
                self.write(at, &chunk)?;
                let mut st = spool.lock();
                spool.written_to(&mut st, at + chunk.len() as u64);
                if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    let at = st.on_disk;
                    drop(st);
                    (self.checkpoint)(at);
                    self.checkpointed = Some(at);
                    self.last_checkpoint = Instant::now();
                }
                Ok(())
            }
            Job::Spill(at, chunk) => {
                self.write(at, &chunk)?;
                let end = at + chunk.len() as u64;
                spool
                    .stats
                    .spilled
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                // Only the keeper pops, so the front is still this chunk.
                spool.spilled(&mut spool.lock(), at, end);
                Ok(())
            }
        }
    }

    fn write(&self, at: u64, chunk: &Bytes) -> Result<(), String> {
        self.spool
            .zeros
            .write_skipping(self.out, at, chunk)
            .map_err(|e| format!("writing the spool file failed: {e}"))
    }
}

/// When the keeper must look again without being woken: `auto` decides
/// after [`SpoolTuning::decide_after`] and a held chunk is spilled after
/// [`SpoolTuning::hold_limit`] without a read, whatever else happens.
///
/// [`SpoolTuning::decide_after`]: super::SpoolTuning::decide_after
/// [`SpoolTuning::hold_limit`]: super::SpoolTuning::hold_limit
fn clock_rule(spool: &Spool, st: &State) -> Option<Duration> {
    match st.mode {
        Mode::Deciding => Some(spool.tuning.decide_after / 4),
        _ if spool.holding.load(Ordering::Relaxed) => Some(
            spool
                .tuning
                .hold_limit
                .saturating_sub(spool.since_last_read())
                .max(Duration::from_millis(10)),
        ),
        _ => None,
    }
}

/// The keeper's next piece of I/O, evicting what needs none on the way.
fn next_job(spool: &Spool, st: &mut MutexGuard<'_, State>) -> Option<Job> {
    match st.mode {
        Mode::Disk => {
            spool.evict(st);
            let at = st.on_disk;
            // Written once hashed, so that the zero chunks are known (holes).
            if at < st.hashed {
                return Some(match st.ring.chunk_at(at) {
                    Some(chunk) => Job::Write(at, chunk),
                    None => Job::Lost(at),
                });
            }
            None
        }
        Mode::Memory => {
            // Set before the converter's progress is looked at: a read that
            // ends after that look sees the flag and wakes the keeper.
            spool.holding.store(true, Ordering::SeqCst);
            let mut job = None;
            let mut hold = false;
            if spool.ring_over_budget(st) {
                while spool.ring_above_low_water(st) {
                    let Some((at, chunk)) = st.ring.front().cloned() else {
                        break;
                    };
                    let end = at + chunk.len() as u64;
                    if end > st.hashed {
                        break;
                    }
                    match leaving(spool, st, end) {
                        Leave::Drop => spool.left_ring(st),
                        Leave::Spill => {
                            job = Some(Job::Spill(at, chunk));
                            break;
                        }
                        Leave::Hold => {
                            hold = true;
                            break;
                        }
                    }
                }
            }
            spool.holding.store(hold, Ordering::SeqCst);
            job
        }
        Mode::Deciding => None,
    }
}

/// What happens to the ring's oldest chunk (memory mode, hashed, ring over
/// budget).
enum Leave {
    Drop,
    Spill,
    /// Stay, and let the download wait for the converter.
    Hold,
}

fn leaving(spool: &Spool, st: &mut State, end: u64) -> Leave {
    if st.spill_all {
        return Leave::Spill;
    }
    if st.released {
        return Leave::Drop;
    }
    let read_past =
        end.saturating_add(spool.tuning.keep_behind) <= spool.read_high.load(Ordering::SeqCst);
    if read_past {
        Leave::Drop
    } else if st.no_hold {
        Leave::Spill
    } else if spool.since_last_read() >= spool.tuning.hold_limit {
        // The converter has stopped reading. If it waits for bytes further
        // on, it cannot go on before they arrive (its layout jumps ahead):
        // holding would only stall every ring's worth, so it stops for this
        // download. Otherwise it is slow (a stalled disk): this chunk goes
        // to the file and holding goes on.
        if st.tracked_waiting > 0 {
            st.no_hold = true;
            tracing::info!(
                path = %spool.path.display(),
                "the converter waits for bytes ahead of what it has not read: spilling instead of waiting"
            );
        }
        Leave::Spill
    } else {
        Leave::Hold
    }
}

/// `auto`: disk or memory, once the ring first fills or
/// [`SpoolTuning::decide_after`] has passed since the first byte; `None`
/// while it is too early to tell.
///
/// [`SpoolTuning::decide_after`]: super::SpoolTuning::decide_after
fn choose_mode(spool: &Spool, st: &State) -> Option<Mode> {
    let (since, from) = st.started?;
    let elapsed = since.elapsed();
    if !spool.ring_over_budget(st) && elapsed < spool.tuning.decide_after {
        return None;
    }
    let rate = (st.frontier - from) as f64 / elapsed.as_secs_f64().max(1e-3);
    Some(if rate < spool.tuning.disk_below_bytes_per_sec {
        Mode::Disk
    } else {
        Mode::Memory
    })
}
