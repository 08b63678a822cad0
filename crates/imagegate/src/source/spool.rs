//! The spool: a local file the download lands in, readable (as a
//! [`diskformat::ReadAt`]) while it is still arriving.
//!
//! Data flows through three places, each on its own thread so that network,
//! disk and hashing overlap:
//! - the async download task hands received chunks to a bounded channel;
//! - the writer thread finds the all-zero 64 KiB-aligned chunks, hands each
//!   network chunk (as it came: no copy) to the file thread and the hasher,
//!   keeps it in the ring, then moves the frontier and wakes readers;
//! - the file thread writes the chunks with as few `pwrite`s as it takes
//!   (zero runs are skipped: the file was sized with holes, which read
//!   as zeros);
//! - the hasher thread runs SHA-256 over the chunks in order.
//!
//! Readers block (Mutex + Condvar) until their range lies below the frontier,
//! or fail once the transfer has failed or been cancelled. Memory is bounded
//! by the channel capacities, whatever the size of the source.
//!
//! The data is read once, soon after it arrived: the writer keeps the last
//! [`RECENT_BYTES`] in memory, where readers near the frontier (every
//! sequential format) find them; older bytes are read from the file. The
//! file is written through the page cache on a thread of its own: it is
//! scratch, deleted after the import, so its pages are usually dropped
//! before they ever reach the disk (writing it with `O_DIRECT` instead made
//! every import wait for the disk twice, spool and stored image).
//!
//! The spool file survives the process: a sidecar file records the source,
//! its validator (ETag / Last-Modified), its length and a frontier, so that a
//! restarted import can re-hash what is there and continue with a ranged
//! request (see `fetch`). The frontier in the sidecar trails the data
//! written; data reaches the page cache before the sidecar names it, which
//! covers a killed or crashed process; after a power loss the kernel may have
//! lost pages the sidecar already counted, so the sidecar is not trusted
//! across reboots: it records the boot id and is ignored after a reboot.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diskformat::is_zero;

use sha2::{Digest, Sha256};

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

/// Unit of re-reading a resumed prefix and an in-place file for hashing.
pub const WRITE_BUF: usize = 1 << 20;
/// Granularity of zero detection (the qcow2 cluster size we write).
pub const ZERO_CHUNK: usize = 64 << 10;
/// Chunks queued from the network to the writer (a chunk is what the HTTP
/// client read at once: up to a few hundred KiB).
const NET_QUEUE: usize = 64;
/// Chunks queued from the writer to the hasher.
const HASH_QUEUE: usize = 48;
/// The newest bytes kept in memory for readers.
pub const RECENT_BYTES: usize = 24 << 20;
/// At most this many chunks in the ring, however small: a peer trickling
/// tiny chunks only makes the ring cover less (readers then use the file),
/// never makes it hold millions of entries.
const RECENT_CHUNKS: usize = 2048;
/// Sources up to this many [`ZERO_CHUNK`]s (1 TiB, a 2 MiB bitmap) have
/// their zero chunks tracked for [`ReadAt::extent_hint`].
///
/// [`ReadAt::extent_hint`]: diskformat::ReadAt::extent_hint
const MAX_TRACKED_CHUNKS: u64 = 1 << 24;
/// How far past the asked offset a hint waits for the download, so that it
/// describes a useful run rather than the last few bytes that arrived.
const HINT_SPAN: u64 = 4 << 20;

/// An arrived chunk: its file offset and bytes, shared by the hasher, the
/// file thread and the readers.
type Written = (u64, Bytes);

/// The newest chunks, in file order, and how many bytes they hold.
#[derive(Default)]
struct Ring {
    chunks: VecDeque<Written>,
    bytes: usize,
}

#[derive(Debug)]
struct State {
    /// Bytes `[0, frontier)` have arrived (in memory or in the file).
    frontier: u64,
    /// Bytes `[0, on_disk)` are in the file.
    on_disk: u64,
    failure: Option<String>,
}

/// A source file that may still be arriving. `len()` is the promised total
/// length; `read_at` blocks until the bytes are there.
pub struct Spool {
    file: File,
    path: PathBuf,
    len: u64,
    state: Mutex<State>,
    arrived: Condvar,
    /// The newest chunks, for readers near the frontier.
    recent: Mutex<Ring>,
    /// Bit `c`: chunk `[c, c + 1) × ZERO_CHUNK` arrived and is all zeros.
    /// Empty (nothing known) for sources too large to track.
    zeros: Mutex<Vec<u64>>,
    /// Bytes read from the ring and from the file (how often readers fell
    /// behind the ring).
    read_from_ring: AtomicU64,
    read_from_file: AtomicU64,
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

impl Spool {
    /// A spool over `file` (already `len` bytes long) whose first `frontier`
    /// bytes are present.
    pub(crate) fn new(file: File, path: PathBuf, len: u64, frontier: u64) -> Spool {
        Spool {
            recent: Mutex::new(Ring::default()),
            zeros: Mutex::new(if len / ZERO_CHUNK as u64 <= MAX_TRACKED_CHUNKS {
                vec![0u64; (len / ZERO_CHUNK as u64).div_ceil(64) as usize]
            } else {
                Vec::new()
            }),
            read_from_ring: AtomicU64::new(0),
            read_from_file: AtomicU64::new(0),
            file,
            path,
            len,
            state: Mutex::new(State {
                frontier: frontier.min(len),
                on_disk: frontier.min(len),
                failure: None,
            }),
            arrived: Condvar::new(),
        }
    }

    /// The file holding the data (in the scratch folder, or the `cos_root`
    /// object itself when read in place).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes `[0, frontier)` are present.
    pub fn frontier(&self) -> u64 {
        self.lock().frontier
    }

    pub fn is_complete(&self) -> bool {
        self.frontier() == self.len
    }

    /// Bytes served to readers so far: (from the in-memory ring, from the
    /// file).
    pub fn read_stats(&self) -> (u64, u64) {
        (
            self.read_from_ring.load(Ordering::Relaxed),
            self.read_from_file.load(Ordering::Relaxed),
        )
    }

    /// The failure that ended the transfer, if any.
    pub fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state
        // inconsistent (two plain fields), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes `[0, to)` are in the file.
    #[cfg(test)]
    pub(crate) fn advance(&self, to: u64) {
        self.advance_in_memory(to);
        self.advance_on_disk(to);
    }

    /// Bytes `[0, to)` have arrived; the newest are in the ring only.
    fn advance_in_memory(&self, to: u64) {
        let mut st = self.lock();
        if to > st.frontier {
            st.frontier = to.min(self.len);
            self.arrived.notify_all();
        }
    }

    /// Ends the transfer with an error: every waiting and later reader of
    /// missing bytes gets it. Bytes already present stay readable.
    pub(crate) fn fail(&self, msg: impl Into<String>) {
        let mut st = self.lock();
        if st.failure.is_none() && st.on_disk < self.len {
            st.failure = Some(msg.into());
        }
        self.arrived.notify_all();
    }

    /// Fills `buf` from the buffers kept in memory if they cover it all.
    fn read_recent(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset + buf.len() as u64;
        let pieces: Vec<Written> = {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            // The first chunk that ends after `offset`.
            let first = recent
                .chunks
                .partition_point(|(at, b)| at + b.len() as u64 <= offset);
            let mut pieces = Vec::new();
            let mut covered = offset;
            for (at, b) in recent.chunks.iter().skip(first) {
                if covered >= end {
                    break;
                }
                if *at > covered {
                    return false;
                }
                covered = at + b.len() as u64;
                pieces.push((*at, b.clone()));
            }
            if covered < end || pieces.is_empty() {
                return false;
            }
            pieces
        };
        for (at, b) in pieces {
            let from = offset.max(at);
            let to = end.min(at + b.len() as u64);
            let src = &b[(from - at) as usize..(to - at) as usize];
            buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
        }
        true
    }

    /// Records zero chunks (indices of [`ZERO_CHUNK`]s) about to be readable.
    fn mark_zeros(&self, chunks: &[u64]) {
        if chunks.is_empty() {
            return;
        }
        let mut zeros = self.zeros.lock().unwrap_or_else(|p| p.into_inner());
        for &c in chunks {
            if let Some(word) = zeros.get_mut((c / 64) as usize) {
                *word |= 1 << (c % 64);
            }
        }
    }

    /// Keeps an arrived chunk for readers, forgetting the oldest ones past
    /// [`RECENT_BYTES`] or [`RECENT_CHUNKS`].
    fn remember(&self, at: u64, chunk: Bytes) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.bytes += chunk.len();
        recent.chunks.push_back((at, chunk));
        while (recent.bytes > RECENT_BYTES || recent.chunks.len() > RECENT_CHUNKS)
            && recent.chunks.len() > 1
        {
            if let Some((_, old)) = recent.chunks.pop_front() {
                recent.bytes -= old.len();
            }
        }
    }

    /// Bytes `[0, to)` are in the file.
    fn advance_on_disk(&self, to: u64) {
        let mut st = self.lock();
        if to > st.on_disk {
            st.on_disk = to.min(self.len);
            self.arrived.notify_all();
        }
    }

    fn on_disk(&self) -> u64 {
        self.lock().on_disk
    }

    /// Waits until `mark` (the frontier, or what is on disk) reaches `end`.
    fn wait_for(&self, end: u64, mark: impl Fn(&State) -> u64) -> io::Result<()> {
        let mut st = self.lock();
        loop {
            if mark(&st) >= end {
                return Ok(());
            }
            if let Some(f) = &st.failure {
                return Err(io::Error::other(format!("the image download failed: {f}")));
            }
            st = self.arrived.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl diskformat::ReadAt for Spool {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the image",
                )
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        self.wait_for(end, |st| st.frontier)?;
        if self.read_recent(offset, buf) {
            self.read_from_ring
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            return Ok(());
        }
        self.wait_for(end, |st| st.on_disk)?;
        self.read_from_file
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.file.read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// Runs of zero chunks found on the way in are reported as zeros (they
    /// are holes in the file); everything else may be data. Waits until a
    /// few MiB past `offset` have arrived.
    fn extent_hint(&self, offset: u64, max_len: u64) -> io::Result<diskformat::Hint> {
        let unknown = diskformat::Hint {
            len: max_len.min(self.len.saturating_sub(offset)).max(1),
            zero: false,
        };
        if offset >= self.len || max_len == 0 {
            return Ok(unknown);
        }
        let want = offset.saturating_add(max_len.min(HINT_SPAN)).min(self.len);
        if self.wait_for(want, |st| st.frontier).is_err() {
            // The read that follows reports the failure.
            return Ok(unknown);
        }
        let limit = offset.saturating_add(max_len).min(self.frontier());
        let zeros = self.zeros.lock().unwrap_or_else(|p| p.into_inner());
        let z = ZERO_CHUNK as u64;
        let zero_chunk = |c: u64| {
            zeros
                .get((c / 64) as usize)
                .is_some_and(|w| w & (1 << (c % 64)) != 0)
        };
        let first = offset / z;
        let zero = zero_chunk(first);
        let mut c = first + 1;
        while c * z < limit && zero_chunk(c) == zero {
            c += 1;
        }
        Ok(diskformat::Hint {
            len: (c * z).min(limit).max(offset + 1) - offset,
            zero,
        })
    }
}

/// The pieces of `[at, at + len)` cut at [`ZERO_CHUNK`] boundaries:
/// (start within the buffer, length); only whole pieces can be zero chunks.
fn pieces(at: u64, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        if i >= len {
            return None;
        }
        let abs = at + i as u64;
        let to_boundary = ZERO_CHUNK - (abs % ZERO_CHUNK as u64) as usize;
        let n = to_boundary.min(len - i);
        let piece = (i, n);
        i += n;
        Some(piece)
    })
}

/// Zero runs shorter than this are written (a hole would only split a
/// write in two).
const MIN_HOLE: usize = 4096;

/// Follows the stream across chunks and finds its all-zero [`ZERO_CHUNK`]s,
/// including those split between two network chunks.
struct ZeroScan {
    /// Every byte seen so far of the zero chunk being crossed is zero (false
    /// when the stream began inside it: the bytes before are not known).
    all_zero: bool,
}

/// The zero chunks one network chunk completed.
#[derive(Default)]
struct ZeroFound {
    /// Indices of the zero chunks it completed (for the hint bitmap).
    chunks: Vec<u64>,
    /// Its all-zero pieces of at least [`MIN_HOLE`] bytes (whole zero chunks,
    /// and the parts of zero chunks split with a neighbour), as (start, len)
    /// within it: the file thread leaves them as holes.
    holes: Vec<(usize, usize)>,
}

impl ZeroScan {
    fn starting_at(pos: u64) -> ZeroScan {
        ZeroScan {
            all_zero: pos.is_multiple_of(ZERO_CHUNK as u64),
        }
    }

    fn scan(&mut self, at: u64, chunk: &[u8]) -> ZeroFound {
        let mut found = ZeroFound::default();
        for (i, n) in pieces(at, chunk.len()) {
            let abs = at + i as u64;
            if abs.is_multiple_of(ZERO_CHUNK as u64) {
                self.all_zero = true;
            }
            let piece_zero = is_zero(&chunk[i..i + n]);
            if piece_zero && n >= MIN_HOLE {
                found.holes.push((i, n));
            }
            self.all_zero = self.all_zero && piece_zero;
            let ends_chunk = (abs + n as u64).is_multiple_of(ZERO_CHUNK as u64);
            if ends_chunk && self.all_zero {
                found.chunks.push(abs / ZERO_CHUNK as u64);
            }
        }
        found
    }
}

/// Writes `chunk` at absolute offset `at`, skipping the `holes` in it (see
/// [`ZeroFound::holes`], in order); the runs between are written at once.
/// A skipped range reads as zeros: the file is new and sparse, or it is a
/// resumed spool whose bytes past the recorded frontier were written by the
/// earlier process from the same version of the source (the sidecar's
/// validator matched), so they are these same zeros.
fn write_skipping_zeros(
    file: &File,
    at: u64,
    chunk: &[u8],
    holes: &[(usize, usize)],
) -> io::Result<()> {
    let mut next = 0usize;
    for &(start, len) in holes {
        if start > next {
            file.write_all_at(&chunk[next..start], at + next as u64)?;
        }
        next = start + len;
    }
    if next < chunk.len() {
        file.write_all_at(&chunk[next..], at + next as u64)?;
    }
    Ok(())
}

/// What the writer side reports when the last byte is written and hashed.
#[derive(Debug, Clone, Copy)]
pub struct SpoolDone {
    pub sha256: [u8; 32],
    pub bytes: u64,
}

/// The writer and hasher threads behind a spool, fed by [`SpoolSink::send`].
pub(crate) struct SpoolSink {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    result: tokio::sync::oneshot::Receiver<Result<SpoolDone, String>>,
}

/// Something to tell the writer thread about progress it made, e.g. to
/// update the resume sidecar. Called on the writer thread.
pub(crate) type Checkpoint = Box<dyn FnMut(u64) + Send>;

impl SpoolSink {
    /// Starts the threads. The source bytes `[0, spool.frontier())` are
    /// already in the file (a resumed spool): the hasher reads them from the
    /// file first, then continues with what arrives.
    pub(crate) fn start(spool: Arc<Spool>, checkpoint: Checkpoint) -> io::Result<SpoolSink> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(NET_QUEUE);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (hash_tx, hash_rx) = sync_channel::<Bytes>(HASH_QUEUE);
        let prefix = spool.frontier();
        let out = spool.file.try_clone()?;
        let hasher_spool = spool.clone();
        let hasher = std::thread::Builder::new()
            .name("spool-hash".into())
            .spawn(move || hash_thread(&hasher_spool, prefix, hash_rx))?;
        std::thread::Builder::new()
            .name("spool-write".into())
            .spawn(move || {
                let written = write_thread(&spool, out, rx, hash_tx, checkpoint);
                // The hasher ends when the writer drops its sender.
                let hashed = hasher
                    .join()
                    .unwrap_or_else(|_| Err("the hashing thread panicked".into()));
                let result = match (written, hashed) {
                    (Ok(bytes), Ok(sha256)) => Ok(SpoolDone { sha256, bytes }),
                    (Err(e), _) | (_, Err(e)) => {
                        spool.fail(e.clone());
                        Err(e)
                    }
                };
                let _ = done_tx.send(result);
            })?;
        Ok(SpoolSink {
            tx,
            result: done_rx,
        })
    }

    /// Queues the next bytes of the source (in order). Waits while the
    /// writer is behind. Fails if the writer stopped (its error comes from
    /// [`SpoolSink::finish`]).
    pub(crate) async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        self.tx.send(chunk).await.map_err(|_| ())
    }

    /// Ends the input and waits for the writer and hasher to finish.
    pub(crate) async fn finish(self) -> Result<SpoolDone, String> {
        drop(self.tx);
        self.result
            .await
            .unwrap_or_else(|_| Err("the spool writer ended without a result".into()))
    }
}

/// What the writer hands the file thread: a chunk, its offset, its holes.
type ToFile = (u64, Bytes, Vec<(usize, usize)>);

fn write_thread(
    spool: &Arc<Spool>,
    out: File,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    hash_tx: SyncSender<Bytes>,
    mut checkpoint: Checkpoint,
) -> Result<u64, String> {
    let total = spool.len;
    let mut pos = spool.frontier();
    // The file writes run on their own thread (copying into the page cache
    // costs about a second per GiB here): this one must keep taking bytes
    // off the network.
    // Readers find the newest chunks in the ring meanwhile; the ring is
    // much longer than the file queue, so a chunk normally leaves the ring
    // after its write has returned (a reader that misses it waits for the
    // file). `on_disk` is what the resume sidecar may name.
    let (file_tx, file_rx) = sync_channel::<ToFile>(FILE_QUEUE);
    let file_thread = {
        let spool = spool.clone();
        std::thread::Builder::new()
            .name("spool-file".into())
            .spawn(move || file_thread(out, file_rx, &spool))
            .map_err(|e| format!("cannot start the spool file thread: {e}"))?
    };
    let join_file = |file_tx: SyncSender<ToFile>, file_thread: std::thread::JoinHandle<_>| {
        drop(file_tx);
        file_thread
            .join()
            .unwrap_or_else(|_| Err("the spool file thread panicked".to_string()))
    };
    let mut zeros = ZeroScan::starting_at(pos);
    let mut last_checkpoint = Instant::now();
    while let Some(chunk) = rx.blocking_recv() {
        if chunk.is_empty() {
            continue;
        }
        if pos + chunk.len() as u64 > total {
            let _ = join_file(file_tx, file_thread);
            return Err(format!(
                "the source sent more than the {total} bytes it promised"
            ));
        }
        // Zero chunks: holes in the file, and known to readers.
        let found = zeros.scan(pos, &chunk);
        spool.mark_zeros(&found.chunks);
        let handed = file_tx.send((pos, chunk.clone(), found.holes)).is_ok()
            && hash_tx.send(chunk.clone()).is_ok();
        if !handed {
            // A thread stopped: its own error says why.
            let file_err = join_file(file_tx, file_thread).err();
            return Err(file_err.unwrap_or_else(|| "the hashing thread stopped".into()));
        }
        let len = chunk.len() as u64;
        spool.remember(pos, chunk);
        pos += len;
        spool.advance_in_memory(pos);
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            checkpoint(spool.on_disk());
            last_checkpoint = Instant::now();
        }
    }
    let written = join_file(file_tx, file_thread)?;
    checkpoint(written);
    if pos != total {
        return Err(format!("the transfer ended after {pos} of {total} bytes"));
    }
    Ok(pos)
}

/// Chunks queued from the writer to the file thread.
const FILE_QUEUE: usize = 24;

/// Writes the chunks to the spool file in order, leaving all-zero chunks
/// as holes; returns the offset written up to.
fn file_thread(out: File, rx: Receiver<ToFile>, spool: &Spool) -> Result<u64, String> {
    let mut done = spool.on_disk();
    while let Ok((at, chunk, holes)) = rx.recv() {
        write_skipping_zeros(&out, at, &chunk, &holes)
            .map_err(|e| format!("writing the spool file failed: {e}"))?;
        done = at + chunk.len() as u64;
        spool.advance_on_disk(done);
    }
    Ok(done)
}

/// How often the writer updates the resume sidecar.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

fn hash_thread(spool: &Spool, prefix: u64, rx: Receiver<Bytes>) -> Result<[u8; 32], String> {
    let mut h = Sha256::new();
    // A resumed spool: hash what an earlier run left, from the file.
    let mut buf = vec![0u8; WRITE_BUF];
    let mut off = 0u64;
    while off < prefix {
        let n = (prefix - off).min(WRITE_BUF as u64) as usize;
        spool
            .file
            .read_exact_at(&mut buf[..n], off)
            .map_err(|e| format!("re-reading the spool file failed: {e}"))?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    drop(buf);
    while let Ok(b) = rx.recv() {
        h.update(&b);
    }
    Ok(h.finalize().into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use diskformat::ReadAt;

    fn pattern(n: usize) -> Vec<u8> {
        // Data with long zero runs, unaligned data runs and noise.
        let mut v = vec![0u8; n];
        let mut x: u32 = 12345;
        for (i, b) in v.iter_mut().enumerate() {
            if (i / 70_000) % 3 != 0 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = (x >> 16) as u8;
            }
        }
        v
    }

    fn new_spool(dir: &Path, len: u64, frontier: u64) -> Arc<Spool> {
        let path = dir.join("s");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(frontier == 0)
            .open(&path)
            .unwrap();
        f.set_len(len).unwrap();
        Arc::new(Spool::new(f, path, len, frontier))
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 1000]));
        let mut v = vec![0u8; 1000];
        v[999] = 1;
        assert!(!is_zero(&v));
        v[999] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
        assert!(is_zero(&[]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_hashes_and_serves_while_arriving() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3 * WRITE_BUF + 12_345);
        let spool = new_spool(dir.path(), data.len() as u64, 0);
        let checkpoints = Arc::new(Mutex::new(Vec::new()));
        let cp = checkpoints.clone();
        let sink =
            SpoolSink::start(spool.clone(), Box::new(move |p| cp.lock().unwrap().push(p))).unwrap();
        // A reader waiting for the last byte before anything arrived.
        let reader = {
            let spool = spool.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                spool.read_at(spool.len() - 1, &mut b).map(|_| b[0])
            })
        };
        for piece in data.chunks(7_777) {
            sink.send(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let done = sink.finish().await.unwrap();
        assert_eq!(done.bytes, data.len() as u64);
        assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(reader.join().unwrap().unwrap(), *data.last().unwrap());
        let mut all = vec![0u8; data.len()];
        spool.read_at(0, &mut all).unwrap();
        assert_eq!(all, data);
        assert!(spool.is_complete());
        assert_eq!(
            *checkpoints.lock().unwrap().last().unwrap(),
            data.len() as u64
        );
        // Reading past the end is an EOF, not a wait.
        let mut b = [0u8; 2];
        let e = spool.read_at(spool.len() - 1, &mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = spool.read_at(u64::MAX, &mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// More data than the ring holds: old bytes come from the file, new
    /// ones from memory, and reads that straddle both are whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_from_the_ring_and_from_the_file_agree() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(RECENT_BYTES + 8 * WRITE_BUF + 4321);
        let spool = new_spool(dir.path(), data.len() as u64, 0);
        let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
        // A reader following the download in 3 MiB steps, unaligned.
        let follower = {
            let spool = spool.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                let mut off = 777u64;
                let mut b = vec![0u8; 3 << 20];
                while off + b.len() as u64 <= spool.len() {
                    spool.read_at(off, &mut b).unwrap();
                    assert_eq!(&b[..], &data[off as usize..off as usize + b.len()]);
                    off += b.len() as u64;
                }
            })
        };
        for piece in data.chunks(100_000) {
            sink.send(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        sink.finish().await.unwrap();
        follower.join().unwrap();
        for (off, len) in [
            (0usize, 5usize << 20),
            (data.len() - (3 << 20), 3 << 20),
            (data.len() - RECENT_BYTES - 2 * WRITE_BUF, 4 * WRITE_BUF),
        ] {
            let mut b = vec![0u8; len];
            spool.read_at(off as u64, &mut b).unwrap();
            assert_eq!(&b[..], &data[off..off + len], "at {off}");
        }
        assert_eq!(std::fs::read(spool.path()).unwrap(), data);
    }

    /// Zero chunks seen on the way in are hinted as zeros; everything
    /// else, and every partial chunk, may be data.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hints_report_the_zero_chunks() {
        let z = ZERO_CHUNK;
        let dir = tempfile::tempdir().unwrap();
        // data | 3 zero chunks | data (1 byte) | 40 zero chunks | 100 bytes of zeros
        let len = 45 * z + 100;
        let mut data = vec![0u8; len];
        data[..z].fill(7);
        data[4 * z + 5] = 1;
        let spool = new_spool(dir.path(), len as u64, 0);
        let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
        for piece in data.chunks(50_000) {
            sink.send(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        sink.finish().await.unwrap();
        let hint = |off: usize, max: usize| spool.extent_hint(off as u64, max as u64).unwrap();
        let h = |len: usize, zero: bool| diskformat::Hint {
            len: len as u64,
            zero,
        };
        assert_eq!(hint(0, len), h(z, false));
        assert_eq!(hint(10, len), h(z - 10, false));
        assert_eq!(hint(z, len), h(3 * z, true));
        assert_eq!(hint(z + 7, 100), h(100, true));
        assert_eq!(hint(4 * z, len), h(z, false));
        assert_eq!(hint(5 * z, len), h(40 * z, true));
        assert_eq!(hint(45 * z, len), h(100, false), "a partial chunk is data");
        assert_eq!(hint(len - 1, 10), h(1, false));
        // Every hinted zero run reads as zeros.
        let mut off = 0;
        while off < len {
            let hh = hint(off, len);
            if hh.zero {
                assert!(data[off..off + hh.len as usize].iter().all(|&b| b == 0));
            }
            off += hh.len as usize;
        }
    }

    #[test]
    fn zero_scan_follows_chunks_across_network_chunks() {
        let z = ZERO_CHUNK;
        // Zero chunk 0 split 1000 | rest; chunk 1 whole inside the second
        // network chunk; chunk 2 has data.
        let mut data = vec![0u8; 3 * z];
        data[2 * z + 9] = 1;
        let mut scan = ZeroScan::starting_at(0);
        let a = scan.scan(0, &data[..1000]);
        assert!(a.chunks.is_empty());
        assert_eq!(a.holes, vec![], "too short to be worth a hole");
        let b = scan.scan(1000, &data[1000..]);
        assert_eq!(b.chunks, vec![0, 1]);
        assert_eq!(b.holes, vec![(0, z - 1000), (z - 1000, z)]);
        // A stream resumed inside a chunk cannot vouch for its start.
        let mut resumed = ZeroScan::starting_at(10);
        assert!(resumed.scan(10, &data[10..z]).chunks.is_empty());
        assert_eq!(resumed.scan(z as u64, &data[z..2 * z]).chunks, vec![1]);
    }

    /// A peer sending tiny chunks: the ring keeps a bounded number of them,
    /// older bytes come from the file, all intact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tiny_chunks_bound_the_ring_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(RECENT_CHUNKS * 100 + 4321);
        let spool = new_spool(dir.path(), data.len() as u64, 0);
        let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
        for piece in data.chunks(100) {
            sink.send(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let done = sink.finish().await.unwrap();
        assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(spool.recent.lock().unwrap().chunks.len(), RECENT_CHUNKS);
        let mut all = vec![0u8; data.len()];
        spool.read_at(0, &mut all).unwrap();
        assert_eq!(all, data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zero_chunks_become_holes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let len = 16 * WRITE_BUF;
        let mut data = vec![0u8; len];
        data[5] = 1;
        let spool = new_spool(dir.path(), len as u64, 0);
        let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
        for piece in data.chunks(64 << 10) {
            sink.send(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let done = sink.finish().await.unwrap();
        assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        let blocks = std::fs::metadata(spool.path()).unwrap().blocks();
        // One 64 KiB chunk written: far less than 16 MiB allocated.
        assert!(blocks * 512 < 1 << 20, "{} bytes allocated", blocks * 512);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resumed_prefix_is_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(2 * WRITE_BUF + 999);
        let prefix = 1_500_001usize;
        {
            let spool = new_spool(dir.path(), data.len() as u64, 0);
            spool.file.write_all_at(&data[..prefix], 0).unwrap();
        }
        let spool = new_spool(dir.path(), data.len() as u64, prefix as u64);
        let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
        for piece in data[prefix..].chunks(10_000) {
            sink.send(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let done = sink.finish().await.unwrap();
        assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        let mut all = vec![0u8; data.len()];
        spool.read_at(0, &mut all).unwrap();
        assert_eq!(all, data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_and_long_inputs_fail_and_wake_readers() {
        let dir = tempfile::tempdir().unwrap();
        let spool = new_spool(dir.path(), 1000, 0);
        let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
        let reader = {
            let spool = spool.clone();
            std::thread::spawn(move || spool.read_at(900, &mut [0u8; 100]))
        };
        sink.send(Bytes::from(vec![1u8; 500])).await.unwrap();
        let e = sink.finish().await.unwrap_err();
        assert!(e.contains("500 of 1000"), "{e}");
        assert!(reader.join().unwrap().is_err());

        let dir = tempfile::tempdir().unwrap();
        let spool = new_spool(dir.path(), 1000, 0);
        let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
        let _ = sink.send(Bytes::from(vec![1u8; 1500])).await;
        let e = sink.finish().await.unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn failure_unblocks_and_keeps_present_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = new_spool(dir.path(), 100, 0);
        spool.advance(50);
        let s2 = spool.clone();
        let t = std::thread::spawn(move || s2.read_at(60, &mut [0u8; 10]));
        std::thread::sleep(Duration::from_millis(50));
        spool.fail("cancelled");
        let e = t.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("cancelled"));
        spool.read_at(0, &mut [0u8; 50]).unwrap();
        // An empty read never waits, wherever it is.
        spool.read_at(100, &mut []).unwrap();
    }
}
