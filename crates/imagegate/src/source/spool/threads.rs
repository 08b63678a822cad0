//! The three threads behind a downloading spool:
//!
//! - the **pusher** takes chunks from the download task (a bounded channel)
//!   and appends them to the ring, waiting while the ring is full;
//! - the **hasher** runs SHA-256 over the ring's chunks in order (recording
//!   the chain for re-reads) and finds the zero chunks, while the data is
//!   still in cache;
//! - the **keeper** decides the mode (`auto`), writes chunks to the file
//!   (disk mode: all, in order; memory mode: the ones a reader may still
//!   need) and takes chunks out of the ring once they are hashed and kept.
//!
//! The ring is the only queue: nothing is copied between the threads.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::zeros::ZeroScan;
use super::{FetchProgress, Mode, Spool, State, WRITE_BUF};

/// Chunks queued from the network to the pusher (a chunk is what the HTTP
/// client read at once: up to a few hundred KiB). Small: the ring is the
/// buffer, and a full ring leaves this queue full too.
const NET_QUEUE: usize = 16;
/// The pusher and the keeper wait to be woken, and look again after this
/// anyway.
const RECHECK: Duration = Duration::from_millis(100);
/// How often the keeper updates the resume sidecar (disk mode).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// What the spool reports when the last byte is in and hashed.
#[derive(Debug, Clone, Copy)]
pub struct SpoolDone {
    pub sha256: [u8; 32],
    pub bytes: u64,
}

/// Something to tell about how far the file is complete (disk mode), e.g.
/// to update the resume sidecar. Called on the keeper thread.
pub(crate) type Checkpoint = Box<dyn FnMut(u64) + Send>;

/// The threads behind a spool, fed by [`SpoolSink::send`].
pub struct SpoolSink {
    spool: Arc<Spool>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    result: tokio::sync::oneshot::Receiver<Result<SpoolDone, String>>,
}

impl SpoolSink {
    /// Starts the threads. The source bytes `[0, spool.frontier())` are
    /// already in the file (a resumed spool): the hasher reads them from the
    /// file first, then continues with what arrives.
    pub(crate) fn start(spool: Arc<Spool>, checkpoint: Checkpoint) -> std::io::Result<SpoolSink> {
        spool.count_ring();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(NET_QUEUE);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let sink_spool = spool.clone();
        let hasher = {
            let spool = spool.clone();
            std::thread::Builder::new()
                .name("spool-hash".into())
                .spawn(move || {
                    let r = hash_thread(&spool);
                    let mut st = spool.lock();
                    st.hash_done = true;
                    spool.wake_all();
                    drop(st);
                    if let Err(e) = &r {
                        spool.fail(e.clone());
                    }
                    r
                })?
        };
        let keeper = {
            let spool = spool.clone();
            let out = spool.file.try_clone()?;
            std::thread::Builder::new()
                .name("spool-keep".into())
                .spawn(move || {
                    let r = keep_thread(&spool, &out, checkpoint);
                    if let Err(e) = &r {
                        spool.fail(e.clone());
                    }
                    r
                })?
        };
        std::thread::Builder::new()
            .name("spool-push".into())
            .spawn(move || {
                let pushed = push_thread(&spool, rx);
                {
                    let mut st = spool.lock();
                    st.closed = true;
                    spool.wake_all();
                }
                if let Err(e) = &pushed {
                    spool.fail(e.clone());
                }
                let hashed = hasher
                    .join()
                    .unwrap_or_else(|_| Err("the hashing thread panicked".into()));
                let kept = keeper
                    .join()
                    .unwrap_or_else(|_| Err("the spool keeper thread panicked".into()));
                let result = match (pushed, hashed, kept) {
                    (Ok(bytes), Ok(sha256), Ok(())) => Ok(SpoolDone { sha256, bytes }),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        spool.fail(e.clone());
                        Err(e)
                    }
                };
                let _ = done_tx.send(result);
            })?;
        Ok(SpoolSink {
            spool: sink_spool,
            tx,
            result: done_rx,
        })
    }

    /// Queues the next bytes of the source (in order). Waits while the
    /// spool is behind. Fails if it stopped (its error comes from
    /// [`SpoolSink::finish`]).
    pub async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        self.tx.send(chunk).await.map_err(|_| ())
    }

    /// Ends the input early: readers of bytes that will not arrive get
    /// `reason`. The threads finish with what arrived.
    pub fn abort(self, reason: &str) {
        self.spool.fail(reason);
    }

    /// Ends the input and waits for the threads to finish.
    pub async fn finish(self) -> Result<SpoolDone, String> {
        drop(self.tx);
        self.result
            .await
            .unwrap_or_else(|_| Err("the spool ended without a result".into()))
    }
}

impl Spool {
    fn ring_over_budget(&self, st: &State) -> bool {
        st.ring.bytes() > self.ring_budget() || st.ring.len() > self.tuning.ring_chunks
    }

    /// Once over budget, chunks leave until the ring is back under this
    /// (fewer, larger hand-offs between the threads).
    fn ring_above_low_water(&self, st: &State) -> bool {
        let budget = self.ring_budget();
        st.ring.bytes() > budget - budget / 8
            || st.ring.len() > self.tuning.ring_chunks - self.tuning.ring_chunks / 8
    }

    fn ring_full(&self, st: &State) -> bool {
        let budget = self.ring_budget();
        st.ring.bytes() >= budget + budget / 4
            || st.ring.len() >= self.tuning.ring_chunks + self.tuning.ring_chunks / 4
    }

    /// Wakes the keeper if it waits and may have something to do.
    fn nudge_keeper(&self, st: &State) {
        if st.keeper_waiting && (st.mode != Mode::Memory || self.ring_over_budget(st)) {
            self.work.notify_one();
        }
    }
}

fn push_thread(spool: &Spool, mut rx: tokio::sync::mpsc::Receiver<Bytes>) -> Result<u64, String> {
    let total = spool.len;
    let mut pos = spool.frontier();
    while let Some(chunk) = rx.blocking_recv() {
        if chunk.is_empty() {
            continue;
        }
        if pos + chunk.len() as u64 > total {
            return Err(format!(
                "the source sent more than the {total} bytes it promised"
            ));
        }
        let mut st = spool.lock();
        while spool.ring_full(&st) {
            if let Some(f) = &st.failure {
                return Err(f.clone());
            }
            st.pusher_waiting = true;
            spool.nudge_keeper(&st);
            // Woken when chunks leave; the timeout only re-checks, so that
            // no missed wake-up can stop a download.
            st = spool
                .space
                .wait_timeout(st, RECHECK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            st.pusher_waiting = false;
        }
        if st.started.is_none() {
            st.started = Some((Instant::now(), pos));
        }
        let at = st.frontier;
        pos += chunk.len() as u64;
        st.ring.push(at, chunk);
        st.frontier = pos;
        if st.frontier_waiters.iter().any(|&w| w <= pos) {
            spool.arrived.notify_all();
        }
        spool.nudge_keeper(&st);
    }
    if pos != total {
        return Err(format!("the transfer ended after {pos} of {total} bytes"));
    }
    Ok(pos)
}

fn hash_thread(spool: &Spool) -> Result<[u8; 32], String> {
    let mut h = Sha256::new();
    let chained = spool.reread.is_some();
    let feed = |h: &mut Sha256, pos: u64, data: &[u8]| {
        if chained {
            spool.chain.update(h, pos, data);
        } else {
            h.update(data);
        }
    };
    // A resumed spool: hash what an earlier run left, from the file.
    let prefix = spool.on_disk();
    let mut pos = 0u64;
    if prefix > 0 {
        let mut buf = vec![0u8; WRITE_BUF];
        while pos < prefix {
            let n = (prefix - pos).min(WRITE_BUF as u64) as usize;
            spool
                .file
                .read_exact_at(&mut buf[..n], pos)
                .map_err(|e| format!("re-reading the spool file failed: {e}"))?;
            feed(&mut h, pos, &buf[..n]);
            pos += n as u64;
        }
        let mut st = spool.lock();
        st.hashed = pos;
        wake_after_hashing(spool, &st);
    }
    let mut zeros = ZeroScan::starting_at(pos);
    loop {
        let chunk = {
            let mut st = spool.lock();
            loop {
                if st.frontier > pos {
                    break st.ring.chunk_at(pos);
                }
                if st.closed {
                    break None;
                }
                st.frontier_waiters.push(pos + 1);
                st = spool.arrived.wait(st).unwrap_or_else(|p| p.into_inner());
                if let Some(i) = st.frontier_waiters.iter().position(|&e| e == pos + 1) {
                    st.frontier_waiters.swap_remove(i);
                }
            }
        };
        let Some(chunk) = chunk else {
            break;
        };
        feed(&mut h, pos, &chunk);
        spool.zeros.mark(&zeros.scan(pos, &chunk));
        pos += chunk.len() as u64;
        let mut st = spool.lock();
        st.hashed = pos;
        wake_after_hashing(spool, &st);
    }
    if pos != spool.len {
        // The download ended early; its own error says why.
        return Err(format!(
            "the transfer ended after {pos} of {} bytes",
            spool.len
        ));
    }
    let digest: [u8; 32] = h.finalize().into();
    spool.chain.finish(digest);
    Ok(digest)
}

fn wake_after_hashing(spool: &Spool, st: &MutexGuard<'_, State>) {
    if st.progress_waiters > 0 {
        spool.progress.notify_all();
    }
    spool.nudge_keeper(st);
}

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

fn keep_thread(spool: &Spool, out: &File, mut checkpoint: Checkpoint) -> Result<(), String> {
    let mut last_checkpoint = Instant::now();
    let mut checkpointed = None;
    loop {
        let job = {
            let mut st = spool.lock();
            loop {
                if st.mode == Mode::Deciding {
                    if let Some(mode) = choose_mode(spool, &st) {
                        st.mode = mode;
                        tracing::debug!(path = %spool.path.display(), ?mode, "spool mode chosen");
                    }
                }
                if st.mode == Mode::Disk && checkpointed.is_none() {
                    // The sidecar exists from the moment the file is the
                    // spool, even before its first bytes are written.
                    checkpointed = Some(st.on_disk);
                    let at = st.on_disk;
                    drop(st);
                    checkpoint(at);
                    st = spool.lock();
                }
                if let Some(job) = next_job(spool, &mut st) {
                    break job;
                }
                // Done when nothing more will arrive or be hashed, and in
                // disk mode everything hashed is written.
                let finished =
                    st.closed && st.hash_done && (st.mode != Mode::Disk || st.on_disk >= st.hashed);
                if finished {
                    let at = st.on_disk;
                    let disk = st.mode == Mode::Disk;
                    drop(st);
                    if disk && checkpointed != Some(at) {
                        checkpoint(at);
                    }
                    return Ok(());
                }
                st.keeper_waiting = true;
                // Deciding and holding look at the clock again.
                let timeout = match st.mode {
                    Mode::Deciding => spool.tuning.decide_after / 4,
                    _ if spool.holding.load(Ordering::Relaxed) => spool
                        .tuning
                        .hold_limit
                        .saturating_sub(spool.since_last_read())
                        .max(Duration::from_millis(10)),
                    _ => RECHECK,
                };
                st = spool
                    .work
                    .wait_timeout(st, timeout)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                st.keeper_waiting = false;
            }
        };
        match job {
            Job::Lost(at) => {
                return Err(format!(
                    "internal: the spool lost the chunk at byte {at} before writing it"
                ))
            }
            Job::Write(at, chunk) => {
                spool
                    .zeros
                    .write_skipping(out, at, &chunk)
                    .map_err(|e| format!("writing the spool file failed: {e}"))?;
                let mut st = spool.lock();
                st.on_disk = at + chunk.len() as u64;
                evict(spool, &mut st);
                if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    let at = st.on_disk;
                    drop(st);
                    checkpoint(at);
                    checkpointed = Some(at);
                    last_checkpoint = Instant::now();
                }
            }
            Job::Spill(at, chunk) => {
                spool
                    .zeros
                    .write_skipping(out, at, &chunk)
                    .map_err(|e| format!("writing the spool file failed: {e}"))?;
                let end = at + chunk.len() as u64;
                spool
                    .stats
                    .spilled
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                let mut st = spool.lock();
                st.in_file.insert(at, end);
                // Only the keeper pops, so the front is still this chunk.
                st.ring.pop_front();
                wake_after_evicting(spool, &st);
            }
        }
    }
}

/// The keeper's next piece of I/O, evicting what needs none on the way.
fn next_job(spool: &Spool, st: &mut MutexGuard<'_, State>) -> Option<Job> {
    match st.mode {
        Mode::Disk => {
            evict(spool, st);
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
                        Leave::Drop => {
                            st.ring.pop_front();
                            wake_after_evicting(spool, st);
                        }
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

/// Disk mode: chunks hashed and in the file leave the ring once it is over
/// its budget.
fn evict(spool: &Spool, st: &mut MutexGuard<'_, State>) {
    if !spool.ring_over_budget(st) {
        return;
    }
    let mut popped = false;
    while spool.ring_above_low_water(st) {
        let Some((at, chunk)) = st.ring.front() else {
            break;
        };
        let end = at + chunk.len() as u64;
        if end > st.hashed || end > st.on_disk {
            break;
        }
        st.ring.pop_front();
        popped = true;
    }
    if popped {
        wake_after_evicting(spool, st);
    }
}

fn wake_after_evicting(spool: &Spool, st: &State) {
    if st.pusher_waiting {
        spool.space.notify_one();
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

/// Hashes a complete file (a `cos_root` object read in place) on a thread,
/// reporting progress; the spool over it is complete from the start.
pub(crate) fn hash_file_in_place(
    spool: Arc<Spool>,
    progress: Arc<FetchProgress>,
    cancel: tokio_util::sync::CancellationToken,
) -> tokio::sync::oneshot::Receiver<Result<SpoolDone, String>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let run = move || -> Result<SpoolDone, String> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 4 * WRITE_BUF];
        let mut off = 0u64;
        while off < spool.len {
            if cancel.is_cancelled() {
                return Err("cancelled".into());
            }
            let n = (spool.len - off).min(buf.len() as u64) as usize;
            spool
                .file
                .read_exact_at(&mut buf[..n], off)
                .map_err(|e| format!("reading {} failed: {e}", spool.path.display()))?;
            h.update(&buf[..n]);
            off += n as u64;
            progress.bytes_fetched.store(off, Ordering::Relaxed);
            crate::metrics::global().add_bytes_fetched(n as u64);
        }
        Ok(SpoolDone {
            sha256: h.finalize().into(),
            bytes: off,
        })
    };
    let spawned = std::thread::Builder::new()
        .name("spool-hash".into())
        .spawn(move || {
            let _ = tx.send(run());
        });
    if let Err(e) = spawned {
        let (tx, rx2) = tokio::sync::oneshot::channel();
        let _ = tx.send(Err(format!("cannot start the hashing thread: {e}")));
        return rx2;
    }
    rx
}
