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
//! Readers block (Mutex + Condvar) until their range has arrived, or fail
//! once the transfer has failed or been cancelled. Memory is bounded by the
//! ring's budget whatever the size of the source: the download waits when
//! the ring is full.
//!
//! The resume sidecar's frontier trails the data written; data reaches the
//! page cache before the sidecar names it, which covers a killed or crashed
//! process; after a power loss the kernel may have lost pages the sidecar
//! already counted, so the sidecar records the boot id and is ignored after a
//! reboot.

mod chain;
mod ranges;
mod ring;
mod threads;
mod zeros;

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) use threads::{hash_file_in_place, Checkpoint};
pub use threads::{SpoolDone, SpoolSink};
pub use zeros::ZERO_CHUNK;

use crate::config::SpoolPolicy;
use chain::HashChain;
use ranges::RangeSet;
use ring::Ring;
use zeros::ZeroMap;

/// Unit of re-reading a resumed prefix and an in-place file for hashing.
pub const WRITE_BUF: usize = 1 << 20;

/// How far past the asked offset a hint waits for the download, so that it
/// describes a useful run rather than the last few bytes that arrived.
const HINT_SPAN: u64 = 4 << 20;

/// Progress of one fetch, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct FetchProgress {
    /// Bytes of the source received so far (including a resumed prefix).
    pub bytes_fetched: AtomicU64,
    /// The source's length, once known (0 before).
    pub bytes_total: AtomicU64,
    /// Broken connections resumed with a ranged request, plus one if this
    /// fetch continued a spool left by an earlier process.
    pub resumes: AtomicU32,
}

impl FetchProgress {
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

struct State {
    /// Bytes `[0, frontier)` have arrived.
    frontier: u64,
    /// Bytes `[0, hashed)` are hashed and zero-scanned.
    hashed: u64,
    /// Bytes `[0, on_disk)` are in the file (disk mode, or a resumed spool).
    on_disk: u64,
    /// Further ranges in the file (memory mode: spilled and re-read bytes).
    in_file: RangeSet,
    failure: Option<String>,
    /// No more chunks will arrive.
    closed: bool,
    /// The hasher has stopped (`hashed` will not move).
    hash_done: bool,
    mode: Mode,
    ring: Ring,
    /// Memory mode: spill every leaving chunk.
    spill_all: bool,
    /// Granules being re-read (one reader fetches, the others wait).
    rereading: Vec<u64>,
    /// Offsets readers (and the hasher) wait for the frontier to pass.
    frontier_waiters: Vec<u64>,
    /// Readers waiting for `hashed`, the file or a re-read to move.
    progress_waiters: usize,
    /// Of the waiting readers, those whose reads count as the converter's.
    tracked_waiting: usize,
    /// The converter needs nothing more ([`Spool::release`]).
    released: bool,
    /// Memory mode: holding stalled a converter that waits further on;
    /// chunks it has not read are spilled from then on.
    no_hold: bool,
    /// The keeper thread is waiting for work.
    keeper_waiting: bool,
    /// The pusher waits for the ring to shrink.
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

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("frontier", &self.frontier())
            .finish()
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the image",
    )
}

/// Spools whose downloads are in memory, in this process (they share
/// [`SpoolTuning::ring_shared_bytes`]).
static RINGS: AtomicUsize = AtomicUsize::new(0);

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

    /// The converter has read all it will: chunks may leave the ring without
    /// waiting for it (the inspector's late reads are fetched again).
    pub fn release(&self) {
        let mut st = self.lock();
        st.released = true;
        self.work.notify_all();
    }

    /// Counts a waiting reader of the converter's.
    fn begin_wait(&self, st: &mut State) {
        if !UNTRACKED.get() {
            st.tracked_waiting += 1;
        }
    }

    fn end_wait(&self, st: &mut State) {
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
            let _st = self.lock();
            self.work.notify_one();
        }
    }

    /// Time since the converter's last read.
    fn since_last_read(&self) -> Duration {
        let now = self.created.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_read_ms.load(Ordering::Relaxed)))
    }

    /// Ends the transfer with an error: every waiting and later reader of
    /// missing bytes gets it. Bytes already present stay readable.
    pub(crate) fn fail(&self, msg: impl Into<String>) {
        let mut st = self.lock();
        if st.failure.is_none() && st.frontier < self.len {
            st.failure = Some(msg.into());
        }
        st.closed = true;
        self.wake_all();
    }

    fn wake_all(&self) {
        self.arrived.notify_all();
        self.progress.notify_all();
        self.space.notify_all();
        self.work.notify_all();
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
            st.frontier_waiters.push(end);
            self.begin_wait(&mut st);
            st = self.arrived.wait(st).unwrap_or_else(|p| p.into_inner());
            self.end_wait(&mut st);
            if let Some(i) = st.frontier_waiters.iter().position(|&e| e == end) {
                st.frontier_waiters.swap_remove(i);
            }
        }
        Ok(st)
    }

    /// Waits on `progress` once (the caller rechecks its condition).
    fn wait_progress<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.progress_waiters += 1;
        self.begin_wait(&mut st);
        st = self.progress.wait(st).unwrap_or_else(|p| p.into_inner());
        self.end_wait(&mut st);
        st.progress_waiters -= 1;
        st
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
        st.rereading.retain(|&x| x != g);
        self.progress.notify_all();
        match outcome {
            Ok(()) => {
                st.in_file.insert(start, end);
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

#[cfg(test)]
mod tests;
