//! The spool: a local file the download lands in, readable (as a
//! [`diskformat::ReadAt`]) while it is still arriving.
//!
//! Data flows through three places, each on its own thread so that network,
//! disk and hashing overlap:
//! - the async download task hands received chunks to a bounded channel;
//! - the writer thread gathers them into 1 MiB buffers aligned to absolute
//!   file offsets, writes each buffer with as few `pwrite`s as it takes
//!   (all-zero 64 KiB-aligned chunks are skipped: the file was sized with
//!   holes, which read as zeros), then moves the frontier and wakes readers;
//! - the hasher thread takes the written buffers (bounded channel, buffers
//!   recycled) and runs SHA-256 over them in order.
//!
//! Readers block (Mutex + Condvar) until their range lies below the frontier,
//! or fail once the transfer has failed or been cancelled. Memory is bounded
//! by the channel capacities, whatever the size of the source.
//!
//! The spool file survives the process: a sidecar file records the source,
//! its validator (ETag / Last-Modified), its length and a frontier, so that a
//! restarted import can re-hash what is there and continue with a ranged
//! request (see `fetch`). The frontier in the sidecar trails the data
//! written; data reaches the page cache before the sidecar names it, which
//! covers a killed or crashed process; after a power loss the kernel may have
//! lost pages the sidecar already counted, so the sidecar is not trusted
//! across reboots: it records the boot id and is ignored after a reboot.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
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

/// Size of the writer's buffers: the unit of `pwrite`, of hashing hand-off
/// and of frontier moves.
pub const WRITE_BUF: usize = 1 << 20;
/// Granularity of zero detection (the qcow2 cluster size we write).
pub const ZERO_CHUNK: usize = 64 << 10;
/// Chunks queued from the network to the writer.
const NET_QUEUE: usize = 64;
/// Buffers queued from the writer to the hasher (each [`WRITE_BUF`]).
const HASH_QUEUE: usize = 4;

#[derive(Debug)]
struct State {
    frontier: u64,
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
            file,
            path,
            len,
            state: Mutex::new(State {
                frontier: frontier.min(len),
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

    /// The failure that ended the transfer, if any.
    pub fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state
        // inconsistent (two plain fields), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn advance(&self, to: u64) {
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
        if st.failure.is_none() && st.frontier < self.len {
            st.failure = Some(msg.into());
        }
        self.arrived.notify_all();
    }

    fn wait_for(&self, end: u64) -> io::Result<()> {
        let mut st = self.lock();
        loop {
            if st.frontier >= end {
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
        self.wait_for(end)?;
        self.file.read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.len
    }
}

/// True when every byte is zero. Works on 64-byte blocks so the compiler
/// can vectorise it; the early exit is per block, not per byte.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(64);
    for b in &mut blocks {
        if b.iter().fold(0u8, |acc, &x| acc | x) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&x| x == 0)
}

/// Writes `buf` at absolute offset `at`, skipping all-zero chunks that are
/// whole and aligned to [`ZERO_CHUNK`]; runs of data are written at once.
fn write_skipping_zeros(file: &File, at: u64, buf: &[u8]) -> io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut i = 0usize;
    while i < buf.len() {
        let abs = at + i as u64;
        let to_boundary = ZERO_CHUNK - (abs % ZERO_CHUNK as u64) as usize;
        let n = to_boundary.min(buf.len() - i);
        let piece = &buf[i..i + n];
        let skip = n == ZERO_CHUNK && is_zero(piece);
        match (skip, run_start) {
            (true, Some(s)) => {
                file.write_all_at(&buf[s..i], at + s as u64)?;
                run_start = None;
            }
            (false, None) => run_start = Some(i),
            _ => {}
        }
        i += n;
    }
    if let Some(s) = run_start {
        file.write_all_at(&buf[s..], at + s as u64)?;
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
        let (hash_tx, hash_rx) = sync_channel::<Vec<u8>>(HASH_QUEUE);
        let (back_tx, back_rx) = sync_channel::<Vec<u8>>(HASH_QUEUE + 2);
        let prefix = spool.frontier();
        let hasher_spool = spool.clone();
        let hasher = std::thread::Builder::new()
            .name("spool-hash".into())
            .spawn(move || hash_thread(&hasher_spool, prefix, hash_rx, back_tx))?;
        std::thread::Builder::new()
            .name("spool-write".into())
            .spawn(move || {
                let written = write_thread(&spool, rx, hash_tx, back_rx, checkpoint);
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

fn write_thread(
    spool: &Spool,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    hash_tx: SyncSender<Vec<u8>>,
    back_rx: Receiver<Vec<u8>>,
    mut checkpoint: Checkpoint,
) -> Result<u64, String> {
    let total = spool.len;
    let mut pos = spool.frontier();
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BUF);
    let mut allocated = 1usize;
    let mut last_checkpoint = Instant::now();
    // Flush so that every buffer but the first ends on a WRITE_BUF boundary:
    // zero chunks line up with the file, and writes are large.
    let next_end = |start: u64| -> u64 {
        let aligned = (start / WRITE_BUF as u64 + 1) * WRITE_BUF as u64;
        aligned.min(total)
    };
    let mut buf_start = pos;
    let mut flush_at = next_end(buf_start);
    while let Some(mut chunk) = rx.blocking_recv() {
        while !chunk.is_empty() {
            let end = buf_start + buf.len() as u64;
            if end >= total {
                return Err(format!(
                    "the source sent more than the {total} bytes it promised"
                ));
            }
            let room = (flush_at - end) as usize;
            let n = room.min(chunk.len());
            buf.extend_from_slice(&chunk.split_to(n));
            if buf_start + buf.len() as u64 == flush_at {
                write_skipping_zeros(&spool.file, buf_start, &buf)
                    .map_err(|e| format!("writing the spool file failed: {e}"))?;
                pos = flush_at;
                spool.advance(pos);
                if last_checkpoint.elapsed() >= CHECKPOINT_EVERY || pos == total {
                    checkpoint(pos);
                    last_checkpoint = Instant::now();
                }
                // Hand the buffer to the hasher, take a recycled one back
                // (or allocate while under the bound).
                let full = std::mem::take(&mut buf);
                hash_tx
                    .send(full)
                    .map_err(|_| "the hashing thread stopped".to_string())?;
                buf = match back_rx.try_recv() {
                    Ok(b) => b,
                    Err(_) if allocated < HASH_QUEUE + 2 => {
                        allocated += 1;
                        Vec::with_capacity(WRITE_BUF)
                    }
                    Err(_) => back_rx
                        .recv()
                        .map_err(|_| "the hashing thread stopped".to_string())?,
                };
                buf.clear();
                buf_start = pos;
                flush_at = next_end(buf_start);
            }
        }
    }
    if pos != total || !buf.is_empty() {
        return Err(format!(
            "the transfer ended after {} of {total} bytes",
            buf_start + buf.len() as u64
        ));
    }
    Ok(pos)
}

/// How often the writer updates the resume sidecar.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

fn hash_thread(
    spool: &Spool,
    prefix: u64,
    rx: Receiver<Vec<u8>>,
    back: SyncSender<Vec<u8>>,
) -> Result<[u8; 32], String> {
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
        // The writer may have stopped taking buffers back; that is fine.
        let _ = back.try_send(b);
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
