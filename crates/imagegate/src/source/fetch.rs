//! Fetching an image source into a [`Spool`]: from the `cos_root` folder,
//! from an S3-compatible `cos_endpoint`, or over http(s) through the network
//! policy.
//!
//! [`start_fetch`] returns as soon as the source's length is known; the
//! download goes on in a task while readers consume the spool. What it
//! guarantees:
//! - the length is known and within `limits.max_source_size` before any byte
//!   is written; exactly that many bytes arrive, or `SourceLengthMismatch`;
//! - a broken connection is resumed with `Range: bytes=N-` and `If-Range`
//!   (the recorded strong ETag, else Last-Modified). A `206` must start at N
//!   and carry the same total. A `200` instead means the server ignored the
//!   range or the object changed: if it carries the recorded strong ETag and
//!   the same length, the first N bytes of the new body are skipped (the
//!   server ignores ranges); otherwise the fetch fails with `SourceChanged`:
//!   it cannot start over, because readers may already have consumed bytes of
//!   the old object (the job layer may retry the whole import). A source with
//!   neither ETag nor Last-Modified cannot be resumed safely and fails with
//!   `SourceUnreachable` at the first break;
//! - no bytes for `stall_timeout` (default 60 s) counts as a break; breaks
//!   are retried with exponential backoff, a bounded number of times in a row
//!   and in total; the last one decides the error (`SourceStalled`,
//!   `SourceUnreachable`);
//! - the SHA-256 of the source is computed on the way through;
//! - a spool left in `scratch` by an earlier process for the same source (a
//!   sidecar records source, validator, length, frontier and boot) is
//!   re-hashed and continued with a ranged request; if the source changed or
//!   ignores the range, the fetch starts over (nothing was read yet).
//!
//! `cos_root` objects are read in place, not copied: the spool is the object
//! file itself (opened component by component with `O_NOFOLLOW`, a regular
//! file only), complete at once, and hashed on a thread. The folder is the
//! operator's stand-in for COS; a file changed while it is imported would
//! make the hash and the data disagree, as it would on a real copy.
//!
//! When a reader of the spool gets an error, the precise reason is the
//! `Err` of [`FetchHandle::done`]. A caller that stops reading early (the
//! image was refused) should cancel the token so the download stops.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use reqwest::header::{self, HeaderMap};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::netpolicy::{redact_query, DnsFailure, NetPolicy, PolicyRefusal};
use super::spool::{hash_file_in_place, Reread, RereadFailure, SpoolSink};
pub use super::spool::{FetchProgress, Spool, SpoolTuning};
use super::url::ImageSource;
use crate::config::{LimitsConfig, SourceConfig, SpoolPolicy};

/// Why a fetch failed. [`FetchError::code`] is the import failure code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The object is missing or not readable (403/404/…): the URL is wrong.
    #[error("{0}")]
    InvalidUrl(String),
    /// The network policy refused an address (directly, after DNS, or in a
    /// redirect).
    #[error("{0}")]
    AddressRefused(String),
    /// A `cos_root` object path that is a symlink, a FIFO, a directory, or
    /// would leave the folder.
    #[error("{0}")]
    PathRefused(String),
    /// Connecting or reading kept failing.
    #[error("{0}")]
    Unreachable(String),
    /// No bytes arrived for the stall timeout, until retries ran out.
    #[error("{}", stalled_message(*.secs, *.at, *.total))]
    Stalled { secs: u64, at: u64, total: u64 },
    /// More or fewer bytes than promised, or an inconsistent range answer.
    #[error("{0}")]
    LengthMismatch(String),
    /// The server did not say how long the object is.
    #[error("{0}")]
    LengthUnknown(String),
    #[error(
        "the source is {size} bytes, over the limit of {limit} bytes \
         (limits.max_source_size)"
    )]
    TooLarge { size: u64, limit: u64 },
    /// The object changed during the download.
    #[error("{0}")]
    Changed(String),
    #[error("the import was cancelled")]
    Cancelled,
    /// Our side: the scratch folder, a thread, the configuration.
    #[error("{0}")]
    Internal(String),
}

fn stalled_message(secs: u64, at: u64, total: u64) -> String {
    let place = if total == 0 {
        "before answering".to_string()
    } else {
        format!("at byte {at} of {total}")
    };
    format!(
        "the source sent no data for {secs} s ({place}); check that the server is up \
         and not throttling"
    )
}

impl FetchError {
    /// The import failure code: Tencent's `InvalidUrl` where it fits, our
    /// own precise codes elsewhere.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::InvalidUrl(_) => "InvalidUrl",
            FetchError::AddressRefused(_) => "SourceAddressRefused",
            FetchError::PathRefused(_) => "SourcePathRefused",
            FetchError::Unreachable(_) => "SourceUnreachable",
            FetchError::Stalled { .. } => "SourceStalled",
            FetchError::LengthMismatch(_) => "SourceLengthMismatch",
            FetchError::LengthUnknown(_) => "SourceLengthUnknown",
            FetchError::TooLarge { .. } => "SourceTooLarge",
            FetchError::Changed(_) => "SourceChanged",
            FetchError::Cancelled => "ImportCancelled",
            FetchError::Internal(_) => "InternalError",
        }
    }

    /// Worth another attempt (a resume) rather than final.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            FetchError::Unreachable(_) | FetchError::Stalled { .. }
        )
    }
}

/// Tuning of the download loop. [`start_fetch`] uses the defaults.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// No bytes for this long counts as a broken connection.
    pub stall_timeout: Duration,
    /// Failed attempts in a row (no byte received in between) before giving up.
    pub max_consecutive_failures: u32,
    /// Resumes over the whole download before giving up.
    pub max_resumes: u32,
    /// First backoff before a retry; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Connect timeout of one attempt.
    pub connect_timeout: Duration,
    /// The spool's sizes and thresholds.
    pub spool: SpoolTuning,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            stall_timeout: Duration::from_secs(60),
            max_consecutive_failures: 5,
            max_resumes: 50,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(15),
            spool: SpoolTuning::default(),
        }
    }
}

/// A running fetch.
pub struct FetchHandle {
    /// Readable at once; blocks readers until their bytes arrive.
    pub spool: Arc<Spool>,
    pub total_len: u64,
    /// The object's last bytes, fetched ahead with a ranged request, so that
    /// footers (VHD, VMDK) and format detection need not wait for the whole
    /// download. `None` for local sources (nothing to wait for) or when the
    /// server would not serve the range.
    pub tail: Option<Vec<u8>>,
    /// Ends when every byte is in the spool and hashed, or with the error.
    pub done: tokio::task::JoinHandle<Result<FetchOutcome, FetchError>>,
}

impl FetchHandle {
    /// Why reading bytes of the source again failed, if that is what
    /// stopped a reader (see [`Spool`]'s memory mode).
    pub fn reread_failure(&self) -> Option<FetchError> {
        self.spool.reread_failure().map(|f| match f {
            RereadFailure::Unreachable(m) => FetchError::Unreachable(m),
            RereadFailure::Changed(m) => FetchError::Changed(m),
        })
    }
}

/// How much of the end of a remote object is fetched ahead.
pub const TAIL_PREFETCH: u64 = 64 << 10;

/// The last `TAIL_PREFETCH` bytes of the version `validator` names, or
/// `None` (best effort: the import still works, it only overlaps less).
async fn prefetch_tail(remote: &Remote, total: u64, validator: &Validator) -> Option<Vec<u8>> {
    if total <= TAIL_PREFETCH * 2 || validator.is_empty() {
        return None;
    }
    let from = total - TAIL_PREFETCH;
    let opened = remote.open(from, None, Some(validator)).await.ok()?;
    // A 200 (range ignored or object changed) starts at 0: not the tail.
    if opened.start != from || opened.total != total {
        return None;
    }
    let mut tail = Vec::with_capacity(TAIL_PREFETCH as usize);
    let mut body = opened.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.ok()?;
        if tail.len() + chunk.len() > TAIL_PREFETCH as usize {
            return None;
        }
        tail.extend_from_slice(&chunk);
    }
    (tail.len() as u64 == TAIL_PREFETCH).then_some(tail)
}

/// A finished fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOutcome {
    pub sha256: [u8; 32],
    pub bytes: u64,
    /// Resumes after broken connections, plus one if an earlier process's
    /// spool was continued.
    pub resumes: u32,
    /// Bytes taken from an earlier process's spool (0 for a fresh fetch).
    pub reused_bytes: u64,
}

/// Starts fetching `src` with the default [`FetchOptions`], except the
/// stall timeout, which comes from `source.stall_timeout_secs`.
pub async fn start_fetch(
    src: &ImageSource,
    cfg: &SourceConfig,
    limits: &LimitsConfig,
    scratch: &Path,
    progress: Arc<FetchProgress>,
    cancel: CancellationToken,
) -> Result<FetchHandle, FetchError> {
    start_fetch_with(
        src,
        cfg,
        limits,
        scratch,
        progress,
        cancel,
        &FetchOptions {
            stall_timeout: Duration::from_secs(cfg.stall_timeout_secs.max(1)),
            ..FetchOptions::default()
        },
    )
    .await
}

/// Starts fetching `src` into a spool in `scratch` (a folder for this import
/// only; pass the same one again to continue after a restart). Returns once
/// the length is known.
pub async fn start_fetch_with(
    src: &ImageSource,
    cfg: &SourceConfig,
    limits: &LimitsConfig,
    scratch: &Path,
    progress: Arc<FetchProgress>,
    cancel: CancellationToken,
    opts: &FetchOptions,
) -> Result<FetchHandle, FetchError> {
    if let (
        ImageSource::Cos {
            bucket,
            app_id,
            key,
            ..
        },
        Some(root),
    ) = (src, &cfg.cos_root)
    {
        return start_local(
            root,
            &format!("{bucket}-{app_id}"),
            key,
            limits,
            progress,
            cancel,
        );
    }
    let remote = Remote::new(src, cfg, opts)?;
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(FetchError::Cancelled),
        r = start_remote(remote, cfg.spool, limits, scratch, progress, cancel.clone(), opts.clone()) => r,
    }
}

// ---------------------------------------------------------------- cos_root

fn start_local(
    root: &Path,
    bucket_full: &str,
    key: &str,
    limits: &LimitsConfig,
    progress: Arc<FetchProgress>,
    cancel: CancellationToken,
) -> Result<FetchHandle, FetchError> {
    let (file, path) = open_under_root(root, bucket_full, key)?;
    let len = file
        .metadata()
        .map_err(|e| FetchError::Internal(format!("cannot stat {}: {e}", path.display())))?
        .len();
    if len > limits.max_source_size {
        return Err(FetchError::TooLarge {
            size: len,
            limit: limits.max_source_size,
        });
    }
    progress.bytes_total.store(len, Ordering::Relaxed);
    let spool = Arc::new(Spool::complete_file(file, path, len));
    let hashed = hash_file_in_place(spool.clone(), progress, cancel.clone());
    let done = tokio::spawn(async move {
        let r = tokio::select! {
            _ = cancel.cancelled() => return Err(FetchError::Cancelled),
            r = hashed => r,
        };
        match r {
            Ok(Ok(d)) => Ok(FetchOutcome {
                sha256: d.sha256,
                bytes: d.bytes,
                resumes: 0,
                reused_bytes: 0,
            }),
            Ok(Err(e)) => Err(FetchError::Internal(e)),
            Err(_) => Err(FetchError::Internal("the hashing thread vanished".into())),
        }
    });
    Ok(FetchHandle {
        spool,
        total_len: len,
        tail: None,
        done,
    })
}

/// Opens `<root>/<bucket_full>/<key>` one component at a time, refusing
/// symlinks at every step (`O_NOFOLLOW`), so nothing inside the folder can
/// point outside it; `..` and `.` components are refused outright. The last
/// component is opened with `O_NONBLOCK` (a FIFO must not hang the worker)
/// and must be a regular file. The root itself is operator configuration and
/// may be a symlink.
fn open_under_root(
    root: &Path,
    bucket_full: &str,
    key: &str,
) -> Result<(File, PathBuf), FetchError> {
    let shown = format!("{bucket_full}/{key}");
    let mut components = vec![bucket_full];
    components.extend(key.split('/'));
    for c in &components {
        if c.is_empty() || *c == "." || *c == ".." || c.contains('\0') {
            return Err(FetchError::PathRefused(format!(
                "the object name {shown:?} has an empty, \".\" or \"..\" component"
            )));
        }
    }
    let root_c = cstring(root.as_os_str().as_encoded_bytes())?;
    // SAFETY: plain syscall on a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            root_c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(FetchError::Internal(format!(
            "cannot open source.cos_root {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd is a freshly opened descriptor we own.
    let mut dir = unsafe { OwnedFd::from_raw_fd(fd) };
    let last = components.len() - 1;
    for (i, c) in components.iter().enumerate() {
        let name = cstring(c.as_bytes())?;
        let flags = if i == last {
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY
        } else {
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC
        };
        use std::os::fd::AsRawFd;
        // SAFETY: dir is a valid directory descriptor, name NUL-terminated.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT) => {
                    FetchError::InvalidUrl(format!("the COS object {shown} does not exist (404)"))
                }
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => FetchError::PathRefused(format!(
                    "the COS object path {shown} goes through a symbolic link or a \
                     non-folder at {c:?}; objects in source.cos_root must be plain files \
                     in plain folders"
                )),
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    FetchError::InvalidUrl(format!("the COS object {shown} is not readable (403)"))
                }
                _ => FetchError::Internal(format!("cannot open {shown} in cos_root: {e}")),
            });
        }
        // SAFETY: fd is a freshly opened descriptor we own.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    let file = File::from(dir);
    let meta = file
        .metadata()
        .map_err(|e| FetchError::Internal(format!("cannot stat {shown}: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(FetchError::PathRefused(format!(
            "the COS object {shown} is not a regular file"
        )));
    }
    Ok((file, root.join(bucket_full).join(key)))
}

fn cstring(b: &[u8]) -> Result<CString, FetchError> {
    CString::new(b).map_err(|_| FetchError::PathRefused("a path contains a NUL byte".into()))
}

// ---------------------------------------------------------------- remote

/// What identifies one version of the object, for `If-Range` / `If-Match`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Validator {
    /// Strong ETags only (weak ones may not be used in If-Range).
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validator {
    fn from_headers(h: &HeaderMap) -> Validator {
        fn text(h: &HeaderMap, n: header::HeaderName) -> Option<&str> {
            h.get(n).and_then(|v| v.to_str().ok())
        }
        Validator {
            etag: text(h, header::ETAG)
                .filter(|e| !e.starts_with("W/") && e.len() <= 1024)
                .map(str::to_owned),
            last_modified: text(h, header::LAST_MODIFIED)
                .filter(|e| e.len() <= 128)
                .map(str::to_owned),
        }
    }

    fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    /// The `If-Range` value: the strong ETag, else the date.
    fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }
}

/// One answer to a (possibly ranged) GET.
struct Opened {
    /// Offset of the body's first byte in the object.
    start: u64,
    /// Offset just past its last byte.
    end: u64,
    total: u64,
    validator: Validator,
    body: BoxStream<'static, Result<Bytes, FetchError>>,
}

enum Remote {
    Http {
        client: reqwest::Client,
        url: reqwest::Url,
        policy: NetPolicy,
        stall: Duration,
    },
    S3 {
        store: Arc<object_store::aws::AmazonS3>,
        path: object_store::path::Path,
        shown: String,
    },
}

impl Remote {
    fn new(
        src: &ImageSource,
        cfg: &SourceConfig,
        opts: &FetchOptions,
    ) -> Result<Remote, FetchError> {
        let (url, app_id) = match src {
            ImageSource::Cos {
                bucket,
                app_id,
                key,
                url,
                ..
            } => {
                if let Some(endpoint) = &cfg.cos_endpoint {
                    return Remote::s3(endpoint, &format!("{bucket}-{app_id}"), key, cfg, opts);
                }
                let u = reqwest::Url::parse(url).map_err(|e| {
                    FetchError::InvalidUrl(format!("the COS URL is malformed: {e}"))
                })?;
                (u, Some(*app_id))
            }
            ImageSource::Http { url } => (url.clone(), None),
        };
        let policy = NetPolicy::new(cfg, app_id);
        let client = policy
            .http_client(opts.stall_timeout, opts.connect_timeout)
            .map_err(|e| FetchError::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Remote::Http {
            client,
            url,
            policy,
            stall: opts.stall_timeout,
        })
    }

    fn s3(
        endpoint: &str,
        bucket_full: &str,
        key: &str,
        cfg: &SourceConfig,
        opts: &FetchOptions,
    ) -> Result<Remote, FetchError> {
        let client_options = object_store::ClientOptions::new()
            .with_allow_http(true)
            // A multi-GiB body may take hours: no whole-request timeout, a
            // per-read one instead.
            .with_timeout_disabled()
            .with_read_timeout(opts.stall_timeout)
            .with_connect_timeout(opts.connect_timeout);
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: opts.backoff_initial,
                max_backoff: opts.backoff_max,
                base: 2.0,
            },
            max_retries: opts.max_consecutive_failures as usize,
            retry_timeout: opts.stall_timeout * 2,
        };
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket_full)
            .with_region(cfg.cos_region.as_deref().unwrap_or("us-east-1"))
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
            .with_client_options(client_options)
            .with_retry(retry);
        match (&cfg.cos_access_key, &cfg.cos_secret_key) {
            (Some(a), Some(s)) => {
                b = b.with_access_key_id(a).with_secret_access_key(s);
            }
            _ => b = b.with_skip_signature(true),
        }
        let store = b
            .build()
            .map_err(|e| FetchError::Internal(format!("source.cos_endpoint is not usable: {e}")))?;
        let path = object_store::path::Path::from_iter(key.split('/'));
        Ok(Remote::S3 {
            store: Arc::new(store),
            path,
            shown: format!("{endpoint}/{bucket_full}/{key}"),
        })
    }

    /// What the resume sidecar records as the source.
    fn identity(&self) -> String {
        match self {
            Remote::Http { url, .. } => format!("http {url}"),
            Remote::S3 { shown, .. } => format!("s3 {shown}"),
        }
    }

    /// GET from `from` to `to` (exclusive) or the end: a ranged request
    /// when it is not the whole object, conditional on `validator`.
    async fn open(
        &self,
        from: u64,
        to: Option<u64>,
        validator: Option<&Validator>,
    ) -> Result<Opened, FetchError> {
        match self {
            Remote::Http {
                client,
                url,
                policy,
                stall,
            } => {
                // reqwest does not ask the resolver about IP literals.
                policy
                    .check_url(url)
                    .map_err(|e| FetchError::AddressRefused(e.0))?;
                let mut req = client.get(url.clone());
                let range = match to {
                    Some(to) => Some(format!("bytes={from}-{}", to.saturating_sub(1))),
                    None => (from > 0).then(|| format!("bytes={from}-")),
                };
                if let Some(range) = range {
                    req = req.header(header::RANGE, range);
                    if let Some(v) = validator.and_then(Validator::if_range) {
                        req = req.header(header::IF_RANGE, v);
                    }
                }
                let resp =
                    match tokio::time::timeout(*stall + Duration::from_secs(1), req.send()).await {
                        Err(_) => {
                            return Err(FetchError::Stalled {
                                secs: stall.as_secs(),
                                at: from,
                                total: 0,
                            })
                        }
                        Ok(r) => r.map_err(|e| reqwest_error(&e, url, *stall))?,
                    };
                http_opened(resp, from, url, *stall)
            }
            Remote::S3 { store, path, shown } => {
                let range = match to {
                    Some(to) => Some(object_store::GetRange::Bounded(from..to)),
                    None => (from > 0).then_some(object_store::GetRange::Offset(from)),
                };
                let options = object_store::GetOptions {
                    range,
                    if_match: validator.and_then(|v| v.etag.clone()),
                    ..Default::default()
                };
                let r = store
                    .get_opts(path, options)
                    .await
                    .map_err(|e| s3_error(e, shown))?;
                let shown = shown.clone();
                Ok(Opened {
                    start: r.range.start,
                    end: r.range.end,
                    total: r.meta.size,
                    validator: Validator {
                        etag: r.meta.e_tag.clone(),
                        last_modified: None,
                    },
                    body: r
                        .into_stream()
                        .map_err(move |e| s3_error(e, &shown))
                        .boxed(),
                })
            }
        }
    }
}

fn http_opened(
    resp: reqwest::Response,
    from: u64,
    url: &reqwest::Url,
    stall: Duration,
) -> Result<Opened, FetchError> {
    let status = resp.status();
    let shown = redact_query(url);
    let validator = Validator::from_headers(resp.headers());
    let (start, end, total) = match status.as_u16() {
        200 => {
            let total = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    FetchError::LengthUnknown(format!(
                        "{shown} did not say how long it is (no Content-Length); \
                         serve the image as a plain file"
                    ))
                })?;
            (0, total, total)
        }
        206 => {
            let cr = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    FetchError::LengthMismatch(format!(
                        "{shown} answered a range request without a usable Content-Range"
                    ))
                })?;
            (cr.0, cr.1 + 1, cr.2)
        }
        416 => {
            return Err(FetchError::LengthMismatch(format!(
                "{shown} has fewer bytes than it promised: it cannot serve from byte {from} (416)"
            )))
        }
        401 | 403 | 404 | 410 => {
            return Err(FetchError::InvalidUrl(format!(
                "{shown} answered {status}; check that the object exists and is public-read \
                 or the URL is validly signed"
            )))
        }
        408 | 429 | 500..=599 => {
            return Err(FetchError::Unreachable(format!(
                "{shown} answered {status}"
            )))
        }
        _ => {
            return Err(FetchError::InvalidUrl(format!(
                "{shown} answered {status} instead of the image"
            )))
        }
    };
    let url2 = url.clone();
    let body = resp
        .bytes_stream()
        .map_err(move |e| reqwest_error(&e, &url2, stall))
        .boxed();
    Ok(Opened {
        start,
        end,
        total,
        validator,
        body,
    })
}

/// `bytes a-b/total` → (a, b, total), consistent or `None`.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, total) = (
        a.trim().parse::<u64>().ok()?,
        b.trim().parse::<u64>().ok()?,
        total.trim().parse::<u64>().ok()?,
    );
    (a <= b && b < total).then_some((a, b, total))
}

/// Finds our own reasons (policy, DNS) inside reqwest's error chain.
fn reqwest_error(e: &reqwest::Error, url: &reqwest::Url, stall: Duration) -> FetchError {
    let shown = redact_query(url);
    if e.is_timeout() {
        // Position and total are filled in by the caller, who knows them.
        return FetchError::Stalled {
            secs: stall.as_secs(),
            at: 0,
            total: 0,
        };
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut chain = Vec::new();
    while let Some(s) = src {
        if let Some(p) = s.downcast_ref::<PolicyRefusal>() {
            return FetchError::AddressRefused(format!("fetching {shown}: {p}"));
        }
        if let Some(d) = s.downcast_ref::<DnsFailure>() {
            return FetchError::Unreachable(format!("fetching {shown}: {d}"));
        }
        chain.push(s.to_string());
        src = s.source();
        if chain.len() > 16 {
            break;
        }
    }
    chain.dedup();
    FetchError::Unreachable(format!("fetching {shown} failed: {}", chain.join(": ")))
}

fn s3_error(e: object_store::Error, shown: &str) -> FetchError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => {
            FetchError::InvalidUrl(format!("the COS object {shown} does not exist (404)"))
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => FetchError::InvalidUrl(format!(
            "the COS object {shown} is not readable with the configured keys (403)"
        )),
        E::Precondition { .. } => FetchError::Changed(format!(
            "the COS object {shown} changed during the download"
        )),
        other => FetchError::Unreachable(format!("fetching {shown} failed: {other}")),
    }
}

// ---------------------------------------------------------------- sidecar

const SPOOL_NAME: &str = "source.spool";
const SIDECAR_NAME: &str = "source.spool.json";

/// What a spool in the scratch folder holds, for a later process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Sidecar {
    version: u32,
    boot_id: String,
    source: String,
    total: u64,
    validator: Validator,
    frontier: u64,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn read_sidecar(scratch: &Path) -> Option<Sidecar> {
    use std::io::Read;
    let f = File::open(scratch.join(SIDECAR_NAME)).ok()?;
    let mut text = String::new();
    // Our own small file; still, never read an unbounded amount.
    f.take(16 << 10).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_sidecar(scratch: &Path, s: &Sidecar) -> std::io::Result<()> {
    // A private temporary name per write: the writer thread and the task
    // may both write; each rename installs one whole file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = scratch.join(format!("{SIDECAR_NAME}.{}.{n}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(s).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, scratch.join(SIDECAR_NAME))
}

// ---------------------------------------------------------------- download

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

async fn start_remote(
    remote: Remote,
    policy: SpoolPolicy,
    limits: &LimitsConfig,
    scratch: &Path,
    progress: Arc<FetchProgress>,
    cancel: CancellationToken,
    opts: FetchOptions,
) -> Result<FetchHandle, FetchError> {
    std::fs::create_dir_all(scratch).map_err(|e| {
        FetchError::Internal(format!(
            "cannot create scratch folder {}: {e}",
            scratch.display()
        ))
    })?;
    let spool_path = scratch.join(SPOOL_NAME);
    let identity = remote.identity();
    let boot = boot_id();

    // An earlier process's spool for the same source, same boot.
    let previous = read_sidecar(scratch).filter(|s| {
        s.version == 1
            && s.source == identity
            && !boot.is_empty()
            && s.boot_id == boot
            && !s.validator.is_empty()
            && s.frontier > 0
            && s.frontier <= s.total
            && std::fs::metadata(&spool_path).is_ok_and(|m| m.is_file() && m.len() == s.total)
    });
    let mut reused = 0;
    let mut opened = None;
    if let Some(prev) = &previous {
        match open_with_retry(&remote, prev.frontier, Some(&prev.validator), &opts).await {
            Ok(o) if o.start == prev.frontier && o.total == prev.total => {
                reused = prev.frontier;
                opened = Some(o);
            }
            // Changed or range ignored: this answer starts at 0, use it.
            Ok(o) if o.start == 0 => opened = Some(o),
            Ok(_) => {}
            Err(e) if e.is_retryable() => return Err(e),
            Err(FetchError::LengthMismatch(_)) | Err(FetchError::Changed(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let opened = match opened {
        Some(o) => o,
        None => open_with_retry(&remote, 0, None, &opts).await?,
    };
    let total = opened.total;
    if total > limits.max_source_size {
        return Err(FetchError::TooLarge {
            size: total,
            limit: limits.max_source_size,
        });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(reused == 0)
        .open(&spool_path)
        .and_then(|f| f.set_len(total).map(|_| f))
        .map_err(|e| {
            FetchError::Internal(format!(
                "cannot create the spool {}: {e}",
                spool_path.display()
            ))
        })?;
    let sidecar = Sidecar {
        version: 1,
        boot_id: boot,
        source: identity,
        total,
        validator: opened.validator.clone(),
        frontier: reused,
    };
    // A sidecar left by an earlier process names bytes of a file that was
    // just truncated: gone before anything else happens. The spool's keeper
    // writes a new one if it keeps the file complete (disk mode). Without a
    // validator a later process could not tell whether the object changed:
    // no sidecar then, and no resume.
    if reused == 0 {
        let _ = std::fs::remove_file(scratch.join(SIDECAR_NAME));
    }
    let scratch_owned = scratch.to_path_buf();
    let checkpoint: super::spool::Checkpoint = if sidecar.validator.is_empty() {
        Box::new(|_| {})
    } else {
        let mut sc = sidecar.clone();
        Box::new(move |frontier| {
            sc.frontier = frontier;
            // Best effort: a stale sidecar only costs a longer re-download.
            let _ = write_sidecar(&scratch_owned, &sc);
        })
    };
    let remote = Arc::new(remote);
    let tail = prefetch_tail(&remote, total, &opened.validator).await;
    // A server that answered the tail's range request for this version can
    // serve any range again: the spool may then keep the download in memory.
    let reread: Option<Arc<dyn Reread>> = tail.as_ref().map(|_| {
        Arc::new(RemoteReread {
            remote: remote.clone(),
            validator: opened.validator.clone(),
            total,
            runtime: tokio::runtime::Handle::current(),
            opts: opts.clone(),
        }) as Arc<dyn Reread>
    });
    let spool = Arc::new(Spool::new(
        file,
        spool_path,
        total,
        reused,
        policy,
        reread,
        opts.spool.clone(),
    ));
    progress.bytes_total.store(total, Ordering::Relaxed);
    progress.bytes_fetched.store(reused, Ordering::Relaxed);
    let initial_resumes = u32::from(reused > 0);
    if reused > 0 {
        progress.resumes.fetch_add(1, Ordering::Relaxed);
    }
    let sink = SpoolSink::start(spool.clone(), checkpoint)
        .map_err(|e| FetchError::Internal(format!("cannot start the spool threads: {e}")))?;

    let task_spool = spool.clone();
    let scratch_owned = scratch.to_path_buf();
    let done = tokio::spawn(async move {
        let dl = Download {
            remote,
            total,
            validator: sidecar.validator.clone(),
            progress,
            opts,
            resumes: initial_resumes,
        };
        let r = dl.run(opened, reused, sink, cancel).await;
        match r {
            Ok(mut outcome) => {
                outcome.reused_bytes = reused;
                Ok(outcome)
            }
            Err(e) => {
                if matches!(e, FetchError::Changed(_) | FetchError::LengthMismatch(_)) {
                    // What is spooled belongs to another version: never resume it.
                    let _ = std::fs::remove_file(scratch_owned.join(SIDECAR_NAME));
                } else if !sidecar.validator.is_empty() {
                    // Record how far the file is complete, for the next
                    // attempt (disk mode; in memory mode it holds no prefix
                    // and a frontier of 0 is never resumed). The keeper may
                    // still write a later one.
                    let mut sc = sidecar;
                    sc.frontier = task_spool.on_disk();
                    let _ = write_sidecar(&scratch_owned, &sc);
                }
                Err(e)
            }
        }
    });
    Ok(FetchHandle {
        spool,
        total_len: total,
        tail,
        done,
    })
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
