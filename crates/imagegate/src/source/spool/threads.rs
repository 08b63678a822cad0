//! The three threads behind a downloading spool:
//!
//! - the **pusher** takes chunks from the download task (a bounded channel)
//!   and appends them to the ring, waiting while the ring is full;
//! - the **hasher** runs SHA-256 over the ring's chunks in order (recording
//!   the chain for re-reads) and finds the zero chunks, while the data is
//!   still in cache;
//! - the **keeper** (`keeper.rs`) decides the mode (`auto`), writes chunks
//!   to the file and takes chunks out of the ring once hashed and kept.
//!
//! The ring is the only queue: nothing is copied between the threads. How
//! they wait for each other is in the table at the top of `mod.rs`.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::keeper;
use super::sync::thread;
use super::zeros::ZeroScan;
use super::{FetchProgress, Spool, WRITE_BUF};

/// Chunks queued from the network to the pusher (a chunk is what the HTTP
/// client read at once: up to a few hundred KiB). Small: the ring is the
/// buffer, and a full ring leaves this queue full too.
const NET_QUEUE: usize = 16;

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
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(NET_QUEUE);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        start_threads(
            spool.clone(),
            checkpoint,
            Box::new(move || rx.blocking_recv()),
            Box::new(move |result| {
                let _ = done_tx.send(result);
            }),
        )?;
        Ok(SpoolSink {
            spool,
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

/// Where the pusher takes the source's next chunk from (`None`: no more).
pub(crate) type Input = Box<dyn FnMut() -> Option<Bytes> + Send>;

/// Where the spool's result goes once its threads are done.
pub(crate) type Report = Box<dyn FnOnce(Result<SpoolDone, String>) + Send>;

/// Starts the hasher, the keeper and the pusher. The pusher, once `input`
/// ends, joins the other two and hands the result to `report`.
pub(crate) fn start_threads(
    spool: Arc<Spool>,
    checkpoint: Checkpoint,
    input: Input,
    report: Report,
) -> std::io::Result<()> {
    spool.count_ring();
    let hasher = {
        let spool = spool.clone();
        thread::Builder::new()
            .name("spool-hash".into())
            .spawn(move || {
                let r = hash_thread(&spool);
                // Recorded first, as the pusher does.
                if let Err(e) = &r {
                    spool.fail(e.clone());
                }
                spool.hash_ended(&mut spool.lock());
                r
            })?
    };
    let keeper = {
        let spool = spool.clone();
        let out = spool.file.try_clone()?;
        thread::Builder::new()
            .name("spool-keep".into())
            .spawn(move || {
                let r = keeper::keep_thread(&spool, &out, checkpoint);
                if let Err(e) = &r {
                    spool.fail(e.clone());
                }
                r
            })?
    };
    thread::Builder::new()
        .name("spool-push".into())
        .spawn(move || {
            let pushed = push_thread(&spool, input);
            // A failure is recorded before anyone sees the spool close, so
            // that it, and not a woken thread's "ended early", is the cause.
            match &pushed {
                Ok(_) => spool.input_ended(&mut spool.lock()),
                Err(e) => spool.fail(e.clone()),
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
                    // The first failure is the cause; a thread that saw the
                    // spool close reports only "the transfer ended after …".
                    Err(spool.failure().unwrap_or(e))
                }
            };
            report(result);
        })?;
    Ok(())
}

fn push_thread(spool: &Spool, mut input: Input) -> Result<u64, String> {
    let total = spool.len;
    let mut pos = spool.frontier();
    while let Some(chunk) = input() {
        if chunk.is_empty() {
            continue;
        }
        if pos + chunk.len() as u64 > total {
            return Err(format!(
                "the source sent more than the {total} bytes it promised"
            ));
        }
        let mut st = spool.wait_for_space(spool.lock())?;
        pos += chunk.len() as u64;
        spool.arrive(&mut st, chunk);
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
        spool.hashed_to(&mut spool.lock(), pos);
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
                st = spool.wait_for_arrival(st, pos + 1);
            }
        };
        let Some(chunk) = chunk else {
            break;
        };
        feed(&mut h, pos, &chunk);
        spool.zeros.mark(&zeros.scan(pos, &chunk));
        pos += chunk.len() as u64;
        spool.hashed_to(&mut spool.lock(), pos);
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
