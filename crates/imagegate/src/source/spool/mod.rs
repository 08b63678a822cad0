//! The spool: the source of an import as it arrives, readable (as a
//! [`diskformat::ReadAt`]) by the converter and the guest inspector while the
//! download goes on.
//!
//! Received chunks go into a ring in memory (`Bytes` as the HTTP client
//! handed them over: never copied on the way in), where the hasher, the
//! keeper thread and the readers find them. The converter reads right behind
//! the download, so nearly every byte it needs is still in the ring. What
//! happens to a chunk that leaves the ring depends on the mode:
//!
//! - **memory**: a chunk the converter has read past (its furthest read is
//!   more than [`SpoolTuning::keep_behind`] beyond it) is dropped. One it has
//!   not read yet stays, and the download waits for the converter (which is
//!   then slower than the network, usually because of the disk): buffering
//!   the difference would only fill the page cache with what the same disk
//!   must take later. The chunk is written to the spool file ("spilled")
//!   and dropped instead when the converter is waiting for bytes further on
//!   (a layout that jumps ahead), or has read nothing for
//!   [`SpoolTuning::hold_limit`]. A reader that later asks for dropped bytes
//!   (the guest inspector's random reads, a container whose layout jumps
//!   back) gets them *re-read* from the source with a ranged request,
//!   checked against the SHA-256 chain of the first pass ([`chain`]) and
//!   kept in the file. The file is written only when needed: copying every
//!   byte into the page cache is the largest cost of an import after hashing
//!   and receiving (1–3 CPU-s per GiB on these VMs). If re-reads add up to
//!   [`SpoolTuning::spill_after_rereads`], every leaving chunk is spilled
//!   from then on, so no byte is fetched more than twice.
//! - **disk**: every chunk is written to the file as it arrives, in order,
//!   and leaves the ring once written. A sidecar (see `fetch`) records how far
//!   the file is complete, so that a restarted process continues the download
//!   instead of starting over.
//!
//! `auto` (the default) chooses once, half a second into the download or
//! when the ring first fills: disk when the source cannot be re-read (no
//! ranges, no validator) or arrives slower than
//! [`SpoolTuning::disk_below_bytes_per_sec`] (where a restart would lose
//! minutes and the file's cost is negligible), memory otherwise. Until then
//! the ring holds every byte from the start, so either choice is complete.
//!
//! Readers block until their range has arrived, or fail once the transfer
//! has failed or been cancelled. Memory is bounded by the ring's budget
//! whatever the size of the source: the download waits when the ring is
//! full.
//!
//! ## Who owns what, who waits for what
//!
//! All shared state is one [`State`] under one mutex; a chunk's `Bytes` are
//! owned by the ring until the keeper takes them out (readers and the
//! hasher clone the handle, never the bytes). Each thread moves one part:
//! the pusher `frontier` (and pushes), the hasher `hashed`, the keeper
//! `on_disk`, `mode` and every removal from the ring, readers `in_file` by
//! re-reads. Each wait is for a condition of the state, on its own condvar,
//! and every change that can make it true wakes it, with the lock held (so
//! no wake-up falls between a waiter's check and its wait):
//!
//! These changes and waits are the methods of `transitions.rs`, each
//! change with its wake-up (the threads call them; they do not touch the
//! shared fields or the condvars themselves):
//!
//! | waiter (its wait) | condvar | waits until | woken by |
//! |---|---|---|---|
//! | reader, hasher (`wait_for_arrival`) | `arrived` | `frontier` passes its end, or the end | `arrive` (the pusher), when a registered end (`frontier_waiters`) is reached; `wake_all` |
//! | reader: hint, re-read (`wait_progress`) | `progress` | `hashed` moves, a re-read ends | `hashed_to` (the hasher, when `progress_waiters`), `reread_ended`; `wake_all` |
//! | pusher (`wait_for_space`) | `space` | the ring is not full | `left_ring` (the keeper's `written_to`, `spilled`, `evict`, drops; when `pusher_waiting`); `wake_all` |
//! | keeper (`wait_for_work`) | `work` | a chunk to write, spill or drop; the end | `nudge_keeper` from `arrive` and `hashed_to` (when `keeper_waiting`); `read_while_holding`; `release`; `wake_all` |
//!
//! `wake_all` (`input_ended`, `fail`, `hash_ended`) wakes everyone. The keeper
//! alone also has rules of time, `auto`'s decision and the hold limit
//! (`clock_rule`); no other wait has a timeout. The model test (`model.rs`,
//! shuttle) runs the four threads in random interleavings with timeouts
//! that never fire: a missed wake-up there is a deadlock.
//!
//! The resume sidecar's frontier trails the data written; data reaches the
//! page cache before the sidecar names it, which covers a killed or crashed
//! process; after a power loss the kernel may have lost pages the sidecar
//! already counted, so the sidecar records the boot id and is ignored after a
//! reboot.

mod chain;
mod keeper;
mod ranges;
mod read;
mod ring;
mod sync;
mod threads;
mod transitions;
mod zeros;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use read::untracked;
pub(crate) use threads::{hash_file_in_place, Checkpoint};
pub use threads::{SpoolDone, SpoolSink};
pub use zeros::ZERO_CHUNK;

use crate::config::SpoolPolicy;
use chain::HashChain;
use ranges::RangeSet;
use ring::Ring;
use sync::{AtomicBool, AtomicU64, AtomicUsize, Condvar, Mutex, MutexGuard};
use zeros::ZeroMap;

/// Unit of re-reading a resumed prefix and an in-place file for hashing.
pub const WRITE_BUF: usize = 1 << 20;

/// Progress of one fetch, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct FetchProgress {
    /// Bytes of the source received so far (including a resumed prefix).
    pub bytes_fetched: std::sync::atomic::AtomicU64,
    /// The source's length, once known (0 before).
    pub bytes_total: std::sync::atomic::AtomicU64,
    /// Broken connections resumed with a ranged request, plus one if this
    /// fetch continued a spool left by an earlier process.
    pub resumes: AtomicU32,
}

impl FetchProgress {
    /// A fetch of `total` bytes begins, `reused` of them kept from an
    /// earlier process (a resume).
    pub fn starting(&self, total: u64, reused: u64) {
        self.bytes_total.store(total, Ordering::Relaxed);
        self.bytes_fetched.store(reused, Ordering::Relaxed);
        if reused > 0 {
            self.resumes.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> (u64, u64, u32) {
        (
            self.bytes_fetched.load(Ordering::Relaxed),
            self.bytes_total.load(Ordering::Relaxed),
            self.resumes.load(Ordering::Relaxed),
        )
    }
}

/// Sizes and thresholds of a spool. The defaults suit an import; tests
/// shrink them to reach every path with small sources.
#[derive(Debug, Clone)]
pub struct SpoolTuning {
    /// Chunks leave the ring once it holds more than this. The download
    /// waits when it holds a quarter more (the hasher or the keeper behind).
    pub ring_bytes: usize,
    /// What the rings of all downloads in the process hold together: a
    /// download that starts while more than `ring_shared_bytes / ring_bytes`
    /// run gets its share, but never less than half of `ring_bytes`. (Fixed
    /// for the download's life: a budget that moved while the download
    /// waited for room would leave it waiting for a wake-up that never
    /// comes.)
    pub ring_shared_bytes: usize,
    /// The same bound by count, so that a peer trickling tiny chunks only
    /// makes the ring cover less, never makes it hold millions of entries.
    pub ring_chunks: usize,
    /// Memory mode keeps (spills) a leaving chunk unless the furthest read
    /// of the converter is at least this far beyond its end: the converter's
    /// windows in flight complete out of order by up to a few windows.
    pub keep_behind: u64,
    /// Memory mode spills every leaving chunk once re-reads reach this.
    pub spill_after_rereads: u64,
    /// Memory mode holds a chunk the converter has not read for at most
    /// this long without a read of the converter's, then spills it.
    pub hold_limit: Duration,
    /// `auto` decides this long after the first byte (or when the ring
    /// first fills).
    pub decide_after: Duration,
    /// `auto` chooses disk below this download rate.
    pub disk_below_bytes_per_sec: f64,
}

impl Default for SpoolTuning {
    fn default() -> Self {
        SpoolTuning {
            ring_bytes: 48 << 20,
            ring_shared_bytes: 96 << 20,
            ring_chunks: 2048,
            keep_behind: 16 << 20,
            spill_after_rereads: 32 << 20,
            hold_limit: Duration::from_secs(1),
            decide_after: Duration::from_millis(500),
            // Below it, a GiB takes 16 s or more (a restart would lose
            // that, or minutes for a large image), and the page-cache
            // copies cost at most a few percent of a core.
            disk_below_bytes_per_sec: (64 << 20) as f64,
        }
    }
}

/// Fetches bytes of the source again: exactly `[offset, offset + len)` of
/// the version being downloaded. Called from reader threads (never from an
/// async task); may block.
pub trait Reread: Send + Sync {
    fn reread(&self, offset: u64, len: usize) -> Result<Vec<u8>, RereadFailure>;
}

/// Why a re-read failed, for the import's failure code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RereadFailure {
    /// The source could not be reached or answered wrongly.
    Unreachable(String),
    /// The source answered with other bytes than the first time.
    Changed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `auto`, before the choice: nothing has left the ring yet.
    Deciding,
    Memory,
    Disk,
}

/// Everything the spool's threads share, under [`Spool::state`]. Invariants:
/// `hashed <= frontier <= len`; the keeper writes only hashed bytes (so
/// `on_disk` is past `hashed` only over a resumed prefix); the ring holds a
/// contiguous run of chunks ending at `frontier`; bytes before the ring's
/// start are in the file (`on_disk`, `in_file`) or can be re-read.
struct State {
    /// Bytes `[0, frontier)` have arrived. Moved by the pusher only.
    frontier: u64,
    /// Bytes `[0, hashed)` are hashed and zero-scanned. Moved by the hasher.
    hashed: u64,
    /// Bytes `[0, on_disk)` are in the file (disk mode, or a resumed spool).
    /// Moved by the keeper.
    on_disk: u64,
    /// Further ranges in the file (memory mode: spilled by the keeper,
    /// re-read by readers).
    in_file: RangeSet,
    /// Why the transfer ended early; set once, by `fail`.
    failure: Option<String>,
    /// No more chunks will arrive (the pusher ended, or `fail`).
    closed: bool,
    /// The hasher has stopped (`hashed` will not move).
    hash_done: bool,
    /// Chosen by the keeper (`auto`), never changed after.
    mode: Mode,
    /// Pushed by the pusher, popped by the keeper only.
    ring: Ring,
    /// Memory mode: spill every leaving chunk (set by a re-read that went
    /// past `spill_after_rereads`).
    spill_all: bool,
    /// Granules being re-read (one reader fetches, the others wait on
    /// `progress`).
    rereading: Vec<u64>,
    /// Ends readers (and the hasher) wait on `arrived` for the frontier to
    /// pass: the pusher wakes them when it passes one.
    frontier_waiters: Vec<u64>,
    /// Readers waiting on `progress`: the hasher wakes them if any.
    progress_waiters: usize,
    /// Of the waiting readers, those whose reads count as the converter's.
    tracked_waiting: usize,
    /// The converter needs nothing more ([`Spool::release`]).
    released: bool,
    /// Memory mode: holding stalled a converter that waits further on;
    /// chunks it has not read are spilled from then on.
    no_hold: bool,
    /// The keeper waits on `work`: `nudge_keeper` wakes it.
    keeper_waiting: bool,
    /// The pusher waits on `space`: chunks leaving wake it.
    pusher_waiting: bool,
    /// When the first byte of this run arrived, and the frontier then.
    started: Option<(Instant, u64)>,
}

/// A source that may still be arriving. `len()` is the promised total
/// length; `read_at` blocks until the bytes are there.
pub struct Spool {
    file: File,
    path: PathBuf,
    len: u64,
    tuning: SpoolTuning,
    state: Mutex<State>,
    /// The frontier moved (readers, hasher).
    arrived: Condvar,
    /// `hashed`, the file's contents or a re-read moved.
    progress: Condvar,
    /// The ring shrank (pusher).
    space: Condvar,
    /// Work for the keeper thread.
    work: Condvar,
    zeros: ZeroMap,
    chain: HashChain,
    reread: Option<Arc<dyn Reread>>,
    reread_failure: Mutex<Option<RereadFailure>>,
    /// The converter's furthest read (reads on [`untracked`] threads do not
    /// count).
    read_high: AtomicU64,
    /// When the converter's last read ended, in ms since `created`.
    last_read_ms: AtomicU64,
    created: Instant,
    /// The keeper holds a chunk the converter has not read: its reads wake
    /// the keeper.
    holding: AtomicBool,
    /// Counted in [`RINGS`].
    counted: AtomicBool,
    /// Bytes the ring may hold (see [`SpoolTuning::ring_shared_bytes`]).
    budget: AtomicUsize,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    from_ring: AtomicU64,
    from_file: AtomicU64,
    reread: AtomicU64,
    spilled: AtomicU64,
}

/// Bytes served and kept, for the import's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Read by the converter and inspector from memory.
    pub from_ring: u64,
    /// Read from the spool file.
    pub from_file: u64,
    /// Fetched again from the source (memory mode).
    pub reread: u64,
    /// Written to the file in memory mode because a reader might need them.
    pub spilled: u64,
    /// `"memory"`, `"disk"`, or `"undecided"` (the source fit in the ring).
    pub mode: &'static str,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("frontier", &self.frontier())
            .finish()
    }
}

/// Spools whose downloads are in memory, in this process (they share
/// [`SpoolTuning::ring_shared_bytes`]).
static RINGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Spool {
    fn drop(&mut self) {
        if self.counted.load(Ordering::Relaxed) {
            RINGS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Spool {
    /// Counts this spool's ring among the process's (once) and fixes its
    /// budget: its share of what all rings may hold.
    fn count_ring(&self) {
        if !self.counted.swap(true, Ordering::Relaxed) {
            let rings = RINGS.fetch_add(1, Ordering::Relaxed) + 1;
            let t = &self.tuning;
            let share = (t.ring_shared_bytes / rings).clamp(t.ring_bytes / 2, t.ring_bytes);
            self.budget.store(share, Ordering::Relaxed);
        }
    }

    /// This ring's budget.
    fn ring_budget(&self) -> usize {
        self.budget.load(Ordering::Relaxed)
    }

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

    /// A spool over `file` (already `len` bytes long) for a download whose
    /// first `frontier` bytes are already in the file (a resumed spool: disk
    /// mode). `reread` can fetch bytes again (ranged requests on the same
    /// object version); without it the spool must use disk mode.
    pub(crate) fn new(
        file: File,
        path: PathBuf,
        len: u64,
        frontier: u64,
        policy: SpoolPolicy,
        reread: Option<Arc<dyn Reread>>,
        tuning: SpoolTuning,
    ) -> Spool {
        let frontier = frontier.min(len);
        let mode = match (policy, &reread) {
            _ if frontier > 0 => Mode::Disk,
            (_, None) | (SpoolPolicy::Disk, _) => Mode::Disk,
            (SpoolPolicy::Memory, Some(_)) => Mode::Memory,
            (SpoolPolicy::Auto, Some(_)) => Mode::Deciding,
        };
        Spool {
            zeros: ZeroMap::new(len),
            chain: HashChain::new(len),
            reread,
            reread_failure: Mutex::new(None),
            read_high: AtomicU64::new(0),
            last_read_ms: AtomicU64::new(0),
            created: Instant::now(),
            holding: AtomicBool::new(false),
            counted: AtomicBool::new(false),
            budget: AtomicUsize::new(tuning.ring_bytes),
            stats: Stats::default(),
            file,
            path,
            len,
            tuning,
            state: Mutex::new(State {
                frontier,
                hashed: 0,
                on_disk: frontier,
                in_file: RangeSet::default(),
                failure: None,
                closed: false,
                hash_done: false,
                mode,
                ring: Ring::default(),
                spill_all: false,
                rereading: Vec::new(),
                frontier_waiters: Vec::new(),
                progress_waiters: 0,
                tracked_waiting: 0,
                released: false,
                no_hold: false,
                keeper_waiting: false,
                pusher_waiting: false,
                started: None,
            }),
            arrived: Condvar::new(),
            progress: Condvar::new(),
            space: Condvar::new(),
            work: Condvar::new(),
        }
    }

    /// A spool over a complete file (a `cos_root` object read in place).
    pub(crate) fn complete_file(file: File, path: PathBuf, len: u64) -> Spool {
        let spool = Spool::new(
            file,
            path,
            len,
            len,
            SpoolPolicy::Disk,
            None,
            SpoolTuning::default(),
        );
        {
            let mut st = spool.lock();
            st.hashed = len;
            st.closed = true;
            st.hash_done = true;
        }
        spool
    }

    /// The file holding the data (in the scratch folder, or the `cos_root`
    /// object itself when read in place).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes `[0, frontier)` have arrived.
    pub fn frontier(&self) -> u64 {
        self.lock().frontier
    }

    /// Bytes `[0, on_disk)` are in the file: what a resume sidecar may name.
    pub fn on_disk(&self) -> u64 {
        self.lock().on_disk
    }

    pub fn is_complete(&self) -> bool {
        self.frontier() == self.len
    }

    pub fn stats(&self) -> SpoolStats {
        let mode = match self.lock().mode {
            Mode::Deciding => "undecided",
            Mode::Memory => "memory",
            Mode::Disk => "disk",
        };
        SpoolStats {
            from_ring: self.stats.from_ring.load(Ordering::Relaxed),
            from_file: self.stats.from_file.load(Ordering::Relaxed),
            reread: self.stats.reread.load(Ordering::Relaxed),
            spilled: self.stats.spilled.load(Ordering::Relaxed),
            mode,
        }
    }

    /// The failure that ended the transfer, if any.
    pub fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// The first failed re-read, if any: the precise reason when a reader's
    /// error stopped the import.
    pub fn reread_failure(&self) -> Option<RereadFailure> {
        self.reread_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain counters and queues
        // that stay consistent step by step, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time since the converter's last read.
    fn since_last_read(&self) -> Duration {
        let now = self.created.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_read_ms.load(Ordering::Relaxed)))
    }
}

#[cfg(all(test, feature = "spool-model"))]
mod model;
#[cfg(all(test, not(feature = "spool-model")))]
mod tests;
