//! The download loop of a remote fetch: the first request (continuing an
//! earlier process's spool when its sidecar allows), the spool it fills,
//! and the transfer that resumes after breaks with backoff, bounded in a
//! row and in total. The guarantees are listed in [`super::fetch`].

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::fetch::{FetchError, FetchHandle, FetchOptions, FetchOutcome};
use super::remote::{prefetch_tail, Opened, Remote, Validator};
use super::resume::{self, Sidecar, SPOOL_NAME};
use super::spool::{FetchProgress, Reread, RereadFailure, Spool, SpoolSink};
use crate::config::{LimitsConfig, SpoolPolicy};

/// What a remote fetch needs besides the remote itself.
pub(super) struct RemoteFetch<'a> {
    pub policy: SpoolPolicy,
    pub limits: &'a LimitsConfig,
    /// This import's folder (module docs of [`super::fetch`]).
    pub scratch: &'a Path,
    pub progress: Arc<FetchProgress>,
    pub cancel: CancellationToken,
    pub opts: FetchOptions,
}

/// Opens the source (continuing an earlier spool if possible), creates the
/// spool and starts the download into it; returns once the length is known.
pub(super) async fn start_remote(
    remote: Remote,
    f: RemoteFetch<'_>,
) -> Result<FetchHandle, FetchError> {
    crate::private_fs::create_dir_all(f.scratch).map_err(|e| {
        FetchError::Internal(format!(
            "cannot create scratch folder {}: {e}",
            f.scratch.display()
        ))
    })?;
    let (opened, reused) = open_first(&remote, f.scratch, &f.opts).await?;
    let total = opened.total;
    if total > f.limits.max_source_size {
        return Err(FetchError::TooLarge {
            size: total,
            limit: f.limits.max_source_size,
        });
    }
    let spool_path = f.scratch.join(SPOOL_NAME);
    let file = create_spool_file(&spool_path, total, reused)?;
    let sidecar = Sidecar::new(remote.identity(), total, opened.validator.clone(), reused);
    // A sidecar left by an earlier process names bytes of a file that was
    // just truncated: gone before anything else happens. The spool's keeper
    // writes a new one if it keeps the file complete (disk mode).
    if reused == 0 {
        resume::remove(f.scratch);
    }
    let remote = Arc::new(remote);
    let tail = prefetch_tail(&remote, total, &opened.validator).await;
    // A server that answered the tail's range request for this version can
    // serve any range again: the spool may then keep the download in memory.
    let reread = tail
        .as_ref()
        .map(|_| RemoteReread::shared(&remote, opened.validator.clone(), total, f.opts.clone()));
    let spool = Arc::new(Spool::new(
        file,
        spool_path,
        total,
        reused,
        f.policy,
        reread,
        f.opts.spool.clone(),
    ));
    f.progress.starting(total, reused);
    let sink = SpoolSink::start(spool.clone(), sidecar.checkpoint(f.scratch))
        .map_err(|e| FetchError::Internal(format!("cannot start the spool threads: {e}")))?;
    let dl = Download {
        remote,
        total,
        validator: sidecar.validator.clone(),
        progress: f.progress,
        opts: f.opts,
        resumes: u32::from(reused > 0),
    };
    let ending = Ending {
        spool: spool.clone(),
        sidecar,
        scratch: f.scratch.to_path_buf(),
        reused,
    };
    let cancel = f.cancel;
    let done = tokio::spawn(async move {
        let r = dl.run(opened, reused, sink, cancel).await;
        ending.record(r)
    });
    Ok(FetchHandle {
        spool,
        total_len: total,
        tail,
        done,
    })
}

/// The first answer: from an earlier process's frontier if its spool can be
/// continued (then how many bytes it holds), else from the start.
async fn open_first(
    remote: &Remote,
    scratch: &Path,
    opts: &FetchOptions,
) -> Result<(Opened, u64), FetchError> {
    if let Some(prev) = Sidecar::previous(scratch, &remote.identity()) {
        match open_with_retry(remote, prev.frontier, Some(&prev.validator), opts).await {
            Ok(o) if o.start == prev.frontier && o.total == prev.total => {
                return Ok((o, prev.frontier))
            }
            // Changed or range ignored: this answer starts at 0, use it.
            Ok(o) if o.start == 0 => return Ok((o, 0)),
            Ok(_) => {}
            Err(e) if e.is_retryable() => return Err(e),
            Err(FetchError::LengthMismatch(_)) | Err(FetchError::Changed(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((open_with_retry(remote, 0, None, opts).await?, 0))
}

/// The spool file at its full length; what an earlier process left there is
/// kept only when it is continued (`reused` > 0).
fn create_spool_file(path: &Path, total: u64, reused: u64) -> Result<std::fs::File, FetchError> {
    crate::private_fs::file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(reused == 0)
        .open(path)
        .and_then(|f| f.set_len(total).map(|_| f))
        .map_err(|e| {
            FetchError::Internal(format!("cannot create the spool {}: {e}", path.display()))
        })
}

/// What the download leaves for a later attempt when it ends.
struct Ending {
    spool: Arc<Spool>,
    sidecar: Sidecar,
    scratch: PathBuf,
    reused: u64,
}

impl Ending {
    fn record(self, r: Result<FetchOutcome, FetchError>) -> Result<FetchOutcome, FetchError> {
        match r {
            Ok(mut outcome) => {
                outcome.reused_bytes = self.reused;
                Ok(outcome)
            }
            Err(e) => {
                if matches!(e, FetchError::Changed(_) | FetchError::LengthMismatch(_)) {
                    // What is spooled belongs to another version: never resume it.
                    resume::remove(&self.scratch);
                } else if !self.sidecar.validator.is_empty() {
                    // Record how far the file is complete, for the next
                    // attempt (disk mode; in memory mode it holds no prefix
                    // and a frontier of 0 is never resumed). The keeper may
                    // still write a later one.
                    self.sidecar.record(&self.scratch, self.spool.on_disk());
                }
                Err(e)
            }
        }
    }
}

async fn open_with_retry(
    remote: &Remote,
    from: u64,
    validator: Option<&Validator>,
    opts: &FetchOptions,
) -> Result<Opened, FetchError> {
    let mut failures = 0;
    loop {
        match remote.open(from, None, validator).await {
            Ok(o) => return Ok(o),
            Err(e) if e.is_retryable() && failures + 1 < opts.max_consecutive_failures => {
                failures += 1;
                tokio::time::sleep(backoff(opts, failures)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn backoff(opts: &FetchOptions, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    opts.backoff_initial
        .saturating_mul(factor)
        .min(opts.backoff_max)
}

/// Bytes of the object fetched again for the spool: ranged requests on the
/// version being downloaded (`If-Range` / `If-Match` on its validator),
/// through the same client and network policy. The spool checks what
/// arrives against the first download's hash chain.
struct RemoteReread {
    remote: Arc<Remote>,
    validator: Validator,
    total: u64,
    runtime: tokio::runtime::Handle,
    opts: FetchOptions,
}

impl RemoteReread {
    /// Ranged requests for the version `validator` names, run on this
    /// runtime from the spool's reader threads.
    fn shared(
        remote: &Arc<Remote>,
        validator: Validator,
        total: u64,
        opts: FetchOptions,
    ) -> Arc<dyn Reread> {
        Arc::new(RemoteReread {
            remote: remote.clone(),
            validator,
            total,
            runtime: tokio::runtime::Handle::current(),
            opts,
        })
    }

    async fn read_range(&self, offset: u64, len: usize) -> Result<Vec<u8>, FetchError> {
        let end = offset + len as u64;
        let o = self
            .remote
            .open(offset, Some(end), Some(&self.validator))
            .await?;
        if o.total != self.total || o.start != offset || o.end != end {
            return Err(FetchError::Changed(format!(
                "asked for bytes {offset}-{} of {} again, the source answered with bytes \
                 {}-{} of {} (the object changed, or the server ignores ranges)",
                end - 1,
                self.total,
                o.start,
                o.end.saturating_sub(1),
                o.total
            )));
        }
        let mut data = Vec::with_capacity(len);
        let mut body = o.body;
        loop {
            let next = tokio::time::timeout(self.opts.stall_timeout, body.next()).await;
            match next {
                Ok(Some(Ok(chunk))) => {
                    if data.len() + chunk.len() > len {
                        return Err(FetchError::LengthMismatch(format!(
                            "the source sent more than the {len} bytes asked for again"
                        )));
                    }
                    data.extend_from_slice(&chunk);
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) if data.len() == len => return Ok(data),
                Ok(None) => {
                    return Err(FetchError::Unreachable(format!(
                        "the connection ended after {} of the {len} bytes asked for again",
                        data.len()
                    )))
                }
                Err(_) => {
                    return Err(FetchError::Stalled {
                        secs: self.opts.stall_timeout.as_secs(),
                        at: offset + data.len() as u64,
                        total: self.total,
                    })
                }
            }
        }
    }
}

impl Reread for RemoteReread {
    fn reread(&self, offset: u64, len: usize) -> Result<Vec<u8>, RereadFailure> {
        let mut failures = 0;
        loop {
            match self.runtime.block_on(self.read_range(offset, len)) {
                Ok(data) => return Ok(data),
                Err(e) if e.is_retryable() && failures + 1 < self.opts.max_consecutive_failures => {
                    failures += 1;
                    std::thread::sleep(backoff(&self.opts, failures));
                }
                Err(e) => {
                    let msg = format!(
                        "reading bytes {offset}-{} of the source again failed: {e}",
                        offset + len as u64 - 1
                    );
                    return Err(match e {
                        FetchError::Changed(_) => RereadFailure::Changed(msg),
                        _ => RereadFailure::Unreachable(msg),
                    });
                }
            }
        }
    }
}

struct Download {
    remote: Arc<Remote>,
    total: u64,
    validator: Validator,
    progress: Arc<FetchProgress>,
    opts: FetchOptions,
    resumes: u32,
}

impl Download {
    /// Runs the transfer into `sink` until it is complete, fails or is
    /// cancelled. A failure reaches the spool's readers before its input
    /// closes, so they report the download's reason, not an early end.
    async fn run(
        mut self,
        first: Opened,
        from: u64,
        sink: SpoolSink,
        cancel: CancellationToken,
    ) -> Result<FetchOutcome, FetchError> {
        let started = std::time::Instant::now();
        let transferred = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(FetchError::Cancelled),
            r = self.transfer(first, from, &sink) => r,
        };
        let chunks = match transferred {
            Ok(chunks) => chunks,
            Err(e) => {
                sink.abort(&e.to_string());
                return Err(e);
            }
        };
        let total = self.total;
        let done = sink.finish().await.map_err(FetchError::Internal)?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            bytes = done.bytes - from,
            seconds = secs,
            mib_per_s = (done.bytes - from) as f64 / secs.max(1e-9) / 1048576.0,
            resumes = self.resumes,
            chunks,
            "source fetched and hashed"
        );
        if done.bytes != total {
            return Err(FetchError::LengthMismatch(format!(
                "{} bytes arrived, {total} were promised",
                done.bytes
            )));
        }
        Ok(FetchOutcome {
            sha256: done.sha256,
            bytes: done.bytes,
            resumes: self.resumes,
            reused_bytes: 0,
        })
    }

    /// Receives the body (resuming after breaks) and hands it to the
    /// spool; returns the number of chunks.
    async fn transfer(
        &mut self,
        first: Opened,
        from: u64,
        sink: &SpoolSink,
    ) -> Result<u64, FetchError> {
        let total = self.total;
        let mut pos = from;
        let mut body = first.body;
        // Bytes to drop from the front of a body that ignored our Range.
        let mut skip = 0u64;
        let mut failures = 0u32;
        let mut chunks = 0u64;
        loop {
            let next = tokio::time::timeout(self.opts.stall_timeout, body.next()).await;
            let err = match next {
                Ok(Some(Ok(mut chunk))) => {
                    if skip > 0 {
                        let n = skip.min(chunk.len() as u64);
                        chunk.advance(n as usize);
                        skip -= n;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    chunks += 1;
                    let end = pos + chunk.len() as u64;
                    if end > total {
                        return Err(FetchError::LengthMismatch(format!(
                            "the source sent more than the {total} bytes it promised"
                        )));
                    }
                    crate::metrics::global().add_bytes_fetched(end - pos);
                    pos = end;
                    failures = 0;
                    self.progress.bytes_fetched.store(pos, Ordering::Relaxed);
                    if sink.send(chunk).await.is_err() {
                        break;
                    }
                    continue;
                }
                Ok(None) if pos == total && skip == 0 => break,
                Ok(None) => FetchError::Unreachable(format!(
                    "the connection ended after {pos} of {total} bytes"
                )),
                Ok(Some(Err(FetchError::Stalled { .. }))) | Err(_) => FetchError::Stalled {
                    secs: self.opts.stall_timeout.as_secs(),
                    at: pos,
                    total,
                },
                Ok(Some(Err(e))) => e,
            };
            drop(body);
            (body, skip) = self.resume(pos, err, &mut failures).await?;
        }
        Ok(chunks)
    }

    /// After a break at `pos`: back off and re-request from `pos`, until a
    /// body continues there (returned with how many leading bytes to drop)
    /// or the break is final.
    async fn resume(
        &mut self,
        pos: u64,
        mut err: FetchError,
        failures: &mut u32,
    ) -> Result<(BoxStream<'static, Result<Bytes, FetchError>>, u64), FetchError> {
        loop {
            if !err.is_retryable() {
                return Err(err);
            }
            *failures += 1;
            if *failures >= self.opts.max_consecutive_failures
                || self.resumes >= self.opts.max_resumes
            {
                return Err(err);
            }
            if self.validator.is_empty() {
                return Err(FetchError::Unreachable(format!(
                    "{err}; the server sends neither ETag nor Last-Modified, so the \
                     download cannot be resumed safely"
                )));
            }
            tokio::time::sleep(backoff(&self.opts, *failures)).await;
            self.resumes += 1;
            self.progress.resumes.fetch_add(1, Ordering::Relaxed);
            let o = match self.remote.open(pos, None, Some(&self.validator)).await {
                Ok(o) => o,
                Err(FetchError::Stalled { .. }) => {
                    err = FetchError::Stalled {
                        secs: self.opts.stall_timeout.as_secs(),
                        at: pos,
                        total: self.total,
                    };
                    continue;
                }
                Err(e) => {
                    err = e;
                    continue;
                }
            };
            if o.total != self.total && o.validator == self.validator {
                return Err(FetchError::LengthMismatch(format!(
                    "the source first promised {} bytes, now says it has {}",
                    self.total, o.total
                )));
            }
            if o.total != self.total {
                return Err(FetchError::Changed(format!(
                    "the source is now {} bytes long, it was {} when the download began",
                    o.total, self.total
                )));
            }
            if o.start == pos {
                return Ok((o.body, 0));
            }
            if o.start == 0 && o.validator.etag.is_some() && o.validator.etag == self.validator.etag
            {
                // Same version, but the server ignores Range: skip ahead.
                return Ok((o.body, pos));
            }
            if o.start == 0 {
                return Err(FetchError::Changed(
                    "the source changed during the download (its ETag/Last-Modified differ, \
                     or the server ignores ranges and gives no ETag); import it again once it \
                     is stable"
                        .into(),
                ));
            }
            return Err(FetchError::LengthMismatch(format!(
                "asked to resume at byte {pos}, the server answered from byte {}",
                o.start
            )));
        }
    }
}
