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
//! file itself (opened without following any link, a regular file only, see
//! [`super::local`]), complete at once, and hashed on a thread. The folder is the
//! operator's stand-in for COS; a file changed while it is imported would
//! make the hash and the data disagree, as it would on a real copy.
//!
//! When a reader of the spool gets an error, the precise reason is the
//! `Err` of [`FetchHandle::done`]. A caller that stops reading early (the
//! image was refused) should cancel the token so the download stops.
//!
//! This module holds the contract (errors, options, handle) and the entry
//! points; the work is done by [`super::local`] (`cos_root`),
//! [`super::remote`] (one GET over http(s) or S3), [`super::download`] (the
//! transfer and its retries) and [`super::resume`] (the sidecar that lets a
//! later process continue a spool).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::download::{start_remote, RemoteFetch};
use super::local::{start_local, LocalObject};
use super::remote::Remote;
use super::spool::RereadFailure;
pub use super::spool::{FetchProgress, Spool, SpoolTuning};
use super::url::ImageSource;
use crate::config::{LimitsConfig, SourceConfig};
use crate::domain::FailureCode;

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
    pub fn code(&self) -> FailureCode {
        match self {
            FetchError::InvalidUrl(_) => FailureCode::InvalidUrl,
            FetchError::AddressRefused(_) => FailureCode::SourceAddressRefused,
            FetchError::PathRefused(_) => FailureCode::SourcePathRefused,
            FetchError::Unreachable(_) => FailureCode::SourceUnreachable,
            FetchError::Stalled { .. } => FailureCode::SourceStalled,
            FetchError::LengthMismatch(_) => FailureCode::SourceLengthMismatch,
            FetchError::LengthUnknown(_) => FailureCode::SourceLengthUnknown,
            FetchError::TooLarge { .. } => FailureCode::SourceTooLarge,
            FetchError::Changed(_) => FailureCode::SourceChanged,
            FetchError::Cancelled => FailureCode::ImportCancelled,
            FetchError::Internal(_) => FailureCode::InternalError,
        }
    }

    /// Worth another attempt (a resume) rather than final.
    pub(super) fn is_retryable(&self) -> bool {
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
        let obj = LocalObject {
            root,
            bucket_full: &format!("{bucket}-{app_id}"),
            key,
        };
        return start_local(&obj, limits, progress, cancel);
    }
    let remote = Remote::new(src, cfg, opts)?;
    let fetch = RemoteFetch {
        policy: cfg.spool,
        limits,
        scratch,
        progress,
        cancel: cancel.clone(),
        opts: opts.clone(),
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(FetchError::Cancelled),
        r = start_remote(remote, fetch) => r,
    }
}
