//! The remote side of a fetch: one (possibly ranged, conditional) GET of
//! the object over http(s) through the network policy, or from an
//! S3-compatible `cos_endpoint`, answered as an [`Opened`] body whose place
//! in the object is checked. Errors become the fetch's failure codes here;
//! retries and resumes are the download's business
//! ([`super::download`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use reqwest::header::{self, HeaderMap};
use serde::{Deserialize, Serialize};

use super::fetch::{FetchError, FetchOptions, TAIL_PREFETCH};
use super::netpolicy::{redact_query, DnsFailure, NetPolicy, PolicyRefusal};
use super::url::ImageSource;
use crate::config::SourceConfig;
use crate::s3::{S3Endpoint, Tuning};

/// What identifies one version of the object, for `If-Range` / `If-Match`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Validator {
    /// Strong ETags only (weak ones may not be used in If-Range).
    pub etag: Option<String>,
    pub last_modified: Option<String>,
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

    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    /// The `If-Range` value: the strong ETag, else the date.
    fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }
}

/// One answer to a (possibly ranged) GET.
pub(super) struct Opened {
    /// Offset of the body's first byte in the object.
    pub start: u64,
    /// Offset just past its last byte.
    pub end: u64,
    pub total: u64,
    pub validator: Validator,
    pub body: BoxStream<'static, Result<Bytes, FetchError>>,
}

pub(super) enum Remote {
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
    pub fn new(
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
                if let Some(service) = S3Endpoint::for_cos(cfg) {
                    return Remote::s3(&service, &format!("{bucket}-{app_id}"), key, opts);
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
        service: &S3Endpoint,
        bucket_full: &str,
        key: &str,
        opts: &FetchOptions,
    ) -> Result<Remote, FetchError> {
        // A multi-GiB body may take hours: no whole-request timeout, a
        // per-read one instead.
        let tuning = Tuning::Download {
            stall: opts.stall_timeout,
            connect: opts.connect_timeout,
            backoff_initial: opts.backoff_initial,
            backoff_max: opts.backoff_max,
            max_retries: opts.max_consecutive_failures as usize,
        };
        let store = service
            .client(bucket_full, &tuning)
            .map_err(|e| FetchError::Internal(format!("source.cos_endpoint is not usable: {e}")))?;
        let path = object_store::path::Path::from_iter(key.split('/'));
        let endpoint = service.endpoint.as_deref().unwrap_or_default();
        Ok(Remote::S3 {
            store: Arc::new(store),
            path,
            shown: format!("{endpoint}/{bucket_full}/{key}"),
        })
    }

    /// What the resume sidecar records as the source.
    pub fn identity(&self) -> String {
        match self {
            Remote::Http { url, .. } => format!("http {url}"),
            Remote::S3 { shown, .. } => format!("s3 {shown}"),
        }
    }

    /// GET from `from` to `to` (exclusive) or the end: a ranged request
    /// when it is not the whole object, conditional on `validator`.
    pub async fn open(
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
                let get = HttpGet {
                    client,
                    url,
                    policy,
                    stall: *stall,
                };
                get.open(from, to, validator).await
            }
            Remote::S3 { store, path, shown } => {
                s3_open(store, path, shown, from, to, validator).await
            }
        }
    }
}

/// One http(s) request's context.
struct HttpGet<'a> {
    client: &'a reqwest::Client,
    url: &'a reqwest::Url,
    policy: &'a NetPolicy,
    stall: Duration,
}

impl HttpGet<'_> {
    async fn open(
        &self,
        from: u64,
        to: Option<u64>,
        validator: Option<&Validator>,
    ) -> Result<Opened, FetchError> {
        let (url, stall) = (self.url, self.stall);
        // reqwest does not ask the resolver about IP literals.
        self.policy
            .check_url(url)
            .map_err(|e| FetchError::AddressRefused(e.0))?;
        let mut req = self.client.get(url.clone());
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
        let resp = match tokio::time::timeout(stall + Duration::from_secs(1), req.send()).await {
            Err(_) => {
                return Err(FetchError::Stalled {
                    secs: stall.as_secs(),
                    at: from,
                    total: 0,
                })
            }
            Ok(r) => r.map_err(|e| reqwest_error(&e, url, stall))?,
        };
        http_opened(resp, from, url, stall)
    }
}

async fn s3_open(
    store: &object_store::aws::AmazonS3,
    path: &object_store::path::Path,
    shown: &str,
    from: u64,
    to: Option<u64>,
    validator: Option<&Validator>,
) -> Result<Opened, FetchError> {
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
    let shown = shown.to_owned();
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

/// The last `TAIL_PREFETCH` bytes of the version `validator` names, or
/// `None` (best effort: the import still works, it only overlaps less).
pub(super) async fn prefetch_tail(
    remote: &Remote,
    total: u64,
    validator: &Validator,
) -> Option<Vec<u8>> {
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
