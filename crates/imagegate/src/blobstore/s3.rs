//! The S3 blob store: one multipart upload per stored image, published by
//! completing it. Every request goes through [`patiently`]: a transient
//! failure (500 InternalError, 503 SlowDown, 429, a refused, reset or timed
//! out connection) is retried with backoff until `blobs.retry_deadline_secs`,
//! after which the operation fails with [`Unavailable`]. object_store's own
//! retries are off, so that this one loop (which signs every try afresh)
//! governs how long an outage is waited out.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::{MultipartId, PutPayload};

use super::s3_list::UploadLister;
use super::{
    status_transience, validate_key, BlobEntry, BlobError, BlobOp, BlobStore, BlobUpload,
    Unavailable,
};
use crate::config::BlobConfig;
use crate::retry::{retry, Retried, RetryPolicy, Transience};
use crate::s3::{Credentials, S3Endpoint, Tuning};

/// Minimum size of every S3 multipart part but the last.
const S3_MIN_PART: u64 = 5 << 20;
/// Size of the parts we send: bounded memory, few requests.
const S3_PART_SIZE: usize = 16 << 20;
/// Parts in flight at once per upload (memory = this × part size).
const S3_PARTS_IN_FLIGHT: usize = 2;

/// Whether an object_store error may pass: a transport failure anywhere in
/// its chain, or an HTTP status that is the store's trouble.
pub(super) fn transience(e: &object_store::Error) -> Transience {
    let object_store::Error::Generic { source, .. } = e else {
        // NotFound, PermissionDenied, Precondition, …: answers, not outages.
        return Transience::Permanent;
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(err) = cur {
        if err
            .downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return Transience::Transient;
        }
        cur = err.source();
    }
    let text = e.to_string();
    // A 200 whose body is an S3 error document (CompleteMultipartUpload).
    if text.contains("Server returned error response") {
        return Transience::Transient;
    }
    match text
        .split("status code: ")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|digits| digits.parse::<u16>().ok())
    {
        Some(code) => status_transience(code),
        None => Transience::Permanent,
    }
}

/// Runs one blob-store operation under `policy`: transient failures are
/// retried, a permanent one is returned as it is, and an outage that lasts
/// past the deadline becomes [`BlobError::Unavailable`].
pub async fn patiently<T, F, Fut>(policy: &RetryPolicy, op: BlobOp, f: F) -> Result<T, BlobError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BlobError>>,
{
    retry(policy, op.as_str(), None, BlobError::transience, f)
        .await
        .map_err(|r| match r {
            Retried::Permanent(e) => e,
            Retried::Outlasted(o) | Retried::Stopped(o) => BlobError::Unavailable(Unavailable {
                op,
                waited: o.waited,
                attempts: o.attempts,
                last: o.last.to_string(),
            }),
        })
}

/// An error of the blob store as the converter's `io::Error`, keeping an
/// [`Unavailable`] recognisable (`Unavailable::find`).
pub fn into_io(e: BlobError) -> io::Error {
    match e {
        BlobError::Io(io) => io,
        BlobError::Unavailable(u) => io::Error::other(u),
        other => io::Error::other(other),
    }
}

pub struct S3BlobStore {
    store: Arc<object_store::aws::AmazonS3>,
    bucket: String,
    prefix: String,
    /// Lists incomplete multipart uploads (object_store cannot); `None`
    /// without static keys, when only the bucket's lifecycle rule clears them.
    uploads: Option<UploadLister>,
    /// How long an outage is waited out (`blobs.retry_deadline_secs`).
    policy: RetryPolicy,
}

impl S3BlobStore {
    pub fn new(url: &str, cfg: &BlobConfig) -> Result<Self, BlobError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| BlobError::Config(format!("not an s3:// url: {url:?}")))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
            None => (rest.to_string(), String::new()),
        };
        if bucket.is_empty() {
            return Err(BlobError::Config(format!("no bucket in {url:?}")));
        }
        let endpoint = S3Endpoint::for_blobs(cfg);
        // One try per call: `patiently` retries, signing each try afresh.
        let store = endpoint.client(&bucket, &Tuning::CallerRetries)?;
        let uploads = match &endpoint.credentials {
            Credentials::Keys(ak, sk) => Some(UploadLister::new(&endpoint, &bucket, ak, sk)?),
            _ => None,
        };
        Ok(S3BlobStore {
            store: Arc::new(store),
            bucket,
            prefix,
            uploads,
            policy: RetryPolicy::with_deadline(Duration::from_secs_f64(cfg.retry_deadline_secs)),
        })
    }

    /// What reading one stored blob takes: the client, the object's path
    /// and how long an outage is waited out.
    pub fn object(
        &self,
        key: &str,
    ) -> (
        Arc<object_store::aws::AmazonS3>,
        object_store::path::Path,
        RetryPolicy,
    ) {
        (self.store.clone(), self.path(key), self.policy)
    }

    /// Abort the incomplete multipart uploads whose key starts with
    /// `<prefix>/<key_prefix>`: what a killed process left behind.
    async fn abort_uploads(&self, key_prefix: &str) -> Result<u64, BlobError> {
        let Some(lister) = &self.uploads else {
            return Ok(0);
        };
        let full = self.full_key(key_prefix);
        let found = patiently(&self.policy, BlobOp::ListUploads, || lister.list(&full)).await?;
        let mut aborted = 0;
        for (key, id) in found {
            let path = object_store::path::Path::from(key.as_str());
            abort_upload(&self.store, &self.policy, &path, &id).await?;
            aborted += 1;
        }
        Ok(aborted)
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn path(&self, key: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(key)
        } else {
            object_store::path::Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn prefix_path(&self) -> Option<object_store::path::Path> {
        (!self.prefix.is_empty()).then(|| object_store::path::Path::from(self.prefix.as_str()))
    }

    /// One listing of every published blob.
    async fn list_once(&self) -> Result<Vec<BlobEntry>, BlobError> {
        use object_store::ObjectStore;
        let prefix = self.prefix_path();
        let mut stream = self.store.list(prefix.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            let full = meta.location.to_string();
            let key = match &prefix {
                Some(p) => full
                    .strip_prefix(&format!("{p}/"))
                    .unwrap_or(&full)
                    .to_string(),
                None => full,
            };
            out.push(BlobEntry {
                key,
                size: meta.size,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// Aborts one multipart upload, waiting out an outage; one already gone is
/// not an error.
async fn abort_upload(
    store: &object_store::aws::AmazonS3,
    policy: &RetryPolicy,
    path: &object_store::path::Path,
    id: &MultipartId,
) -> Result<(), BlobError> {
    patiently(policy, BlobOp::AbortUpload, || async {
        match store.abort_multipart(path, id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// Sends one part, waiting out an outage (a part sent twice is stored once).
async fn put_part(
    store: &object_store::aws::AmazonS3,
    policy: &RetryPolicy,
    path: &object_store::path::Path,
    id: &MultipartId,
    index: usize,
    data: PutPayload,
) -> Result<PartId, BlobError> {
    patiently(policy, BlobOp::UploadPart, || async {
        Ok(store.put_part(path, id, index, data.clone()).await?)
    })
    .await
}

/// Completes a multipart upload, waiting out an outage. A completion whose
/// answer was lost (the connection dropped after the store did it) makes
/// the next try answer NoSuchUpload: the upload counts as completed when
/// the object is there with the size of its parts.
async fn complete(
    store: &object_store::aws::AmazonS3,
    policy: &RetryPolicy,
    path: &object_store::path::Path,
    id: &MultipartId,
    parts: &[PartId],
    size: u64,
) -> Result<(), BlobError> {
    let mut tries = 0u32;
    patiently(policy, BlobOp::CompleteUpload, || {
        tries += 1;
        let again = tries > 1;
        async move {
            match store.complete_multipart(path, id, parts.to_vec()).await {
                Ok(_) => Ok(()),
                Err(object_store::Error::NotFound { .. }) if again => {
                    use object_store::ObjectStoreExt;
                    let meta = store.head(path).await?;
                    if meta.size == size {
                        Ok(())
                    } else {
                        Err(BlobError::Io(io::Error::other(format!(
                            "the upload vanished and the object holds {} bytes, not {size}",
                            meta.size
                        ))))
                    }
                }
                Err(e) => Err(e.into()),
            }
        }
    })
    .await
}

type PartFuture = tokio::task::JoinHandle<Result<PartId, BlobError>>;

struct S3Upload {
    runtime: tokio::runtime::Handle,
    store: Arc<object_store::aws::AmazonS3>,
    policy: RetryPolicy,
    path: object_store::path::Path,
    head_len: u64,
    id: Option<MultipartId>,
    buffer: Vec<u8>,
    /// Part index 0 is the head, sent at the end; appended parts start at 1.
    next_part: usize,
    in_flight: std::collections::VecDeque<PartFuture>,
    done: Vec<PartId>,
    /// Bytes of the parts sent so far (the head not included).
    sent: u64,
}

impl S3Upload {
    fn send_buffer(&mut self) -> io::Result<()> {
        let id = self
            .id
            .clone()
            .ok_or_else(|| io::Error::other("upload closed"))?;
        while self.in_flight.len() >= S3_PARTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(S3_PART_SIZE));
        self.sent += data.len() as u64;
        let (store, path, idx) = (self.store.clone(), self.path.clone(), self.next_part);
        let policy = self.policy;
        self.next_part += 1;
        let task = self
            .runtime
            .spawn(async move { put_part(&store, &policy, &path, &id, idx, data.into()).await });
        self.in_flight.push_back(task);
        Ok(())
    }

    /// Collects the parts already sent, so that a part that failed (the
    /// store down past the deadline) stops the upload at the next append,
    /// not only when the converter next has to wait for a part.
    fn collect_sent(&mut self) -> io::Result<()> {
        while self.in_flight.front().is_some_and(|t| t.is_finished()) {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = self
                .runtime
                .block_on(task)
                .map_err(io::Error::other)?
                .map_err(into_io)?;
            self.done.push(part);
        }
        Ok(())
    }
}

impl BlobUpload for S3Upload {
    fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.collect_sent()?;
        while !data.is_empty() {
            let room = S3_PART_SIZE - self.buffer.len();
            let n = room.min(data.len());
            self.buffer.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buffer.len() == S3_PART_SIZE {
                self.send_buffer()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, head: &[u8]) -> io::Result<u64> {
        if head.len() as u64 != self.head_len {
            return Err(io::Error::other(
                "head length differs from the one announced",
            ));
        }
        if !self.buffer.is_empty() {
            self.send_buffer()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        let id = self
            .id
            .clone()
            .ok_or_else(|| io::Error::other("upload closed"))?;
        let (store, path, policy) = (self.store.clone(), self.path.clone(), self.policy);
        let size = self.sent + head.len() as u64;
        let head = PutPayload::from(head.to_vec());
        let mut parts = std::mem::take(&mut self.done);
        self.runtime
            .block_on(async {
                parts.insert(0, put_part(&store, &policy, &path, &id, 0, head).await?);
                complete(&store, &policy, &path, &id, &parts, size).await
            })
            .map_err(into_io)?;
        // Completed: nothing is left to abort.
        self.id = None;
        let meta = self
            .runtime
            .block_on(patiently(&policy, BlobOp::ReadBack, || async {
                use object_store::ObjectStoreExt;
                Ok(store.head(&path).await?)
            }));
        meta.map(|m| m.size).map_err(into_io)
    }

    fn abort(mut self: Box<Self>) {
        self.abort_now();
    }
}

impl S3Upload {
    fn abort_now(&mut self) {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
        if let Some(id) = self.id.take() {
            let (store, path, policy) = (self.store.clone(), self.path.clone(), self.policy);
            // In the background, waiting out an outage; an abort that still
            // fails leaves an incomplete upload, which the job's clean-up
            // (`remove_partials`), the reaper or the bucket's lifecycle rule
            // removes.
            self.runtime.spawn(async move {
                if let Err(e) = abort_upload(&store, &policy, &path, &id).await {
                    tracing::warn!(error = %e, "aborting a multipart upload failed");
                }
            });
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        self.abort_now();
    }
}

impl BlobStore for S3BlobStore {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn min_head_len(&self) -> u64 {
        S3_MIN_PART
    }

    fn create<'a>(
        &'a self,
        key: &'a str,
        head_len: u64,
    ) -> BoxFuture<'a, Result<Box<dyn BlobUpload>, BlobError>> {
        async move {
            if head_len < S3_MIN_PART {
                return Err(BlobError::Config(format!(
                    "S3 uploads need a head region of at least {S3_MIN_PART} bytes"
                )));
            }
            validate_key(key)?;
            let path = self.path(key);
            let id = patiently(&self.policy, BlobOp::CreateUpload, || async {
                Ok(self.store.create_multipart(&path).await?)
            })
            .await?;
            Ok(Box::new(S3Upload {
                runtime: tokio::runtime::Handle::current(),
                store: self.store.clone(),
                policy: self.policy,
                path,
                head_len,
                id: Some(id),
                buffer: Vec::with_capacity(S3_PART_SIZE),
                next_part: 1,
                in_flight: Default::default(),
                done: Vec::new(),
                sent: 0,
            }) as Box<dyn BlobUpload>)
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        async move {
            use object_store::ObjectStoreExt;
            validate_key(key)?;
            let path = self.path(key);
            patiently(&self.policy, BlobOp::Delete, || async {
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            })
            .await
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<BlobEntry>, BlobError>> {
        async move { patiently(&self.policy, BlobOp::List, || self.list_once()).await }.boxed()
    }

    fn remove_partials<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<u64, BlobError>> {
        // Incomplete multipart uploads are invisible to readers and listing,
        // but they hold storage: an upload dropped by a live process is
        // aborted at once, one of a killed process here (by the next attempt
        // or the reaper), and the bucket's AbortIncompleteMultipartUpload
        // lifecycle rule is the backstop.
        async move { self.abort_uploads(prefix).await }.boxed()
    }

    fn partial_prefixes(&self) -> BoxFuture<'_, Result<Vec<String>, BlobError>> {
        async move {
            let Some(lister) = &self.uploads else {
                return Ok(Vec::new());
            };
            let all = self.full_key("");
            let mut out: Vec<String> =
                patiently(&self.policy, BlobOp::ListUploads, || lister.list(&all))
                    .await?
                    .into_iter()
                    .filter_map(|(key, _)| {
                        let name = key.rsplit('/').next().unwrap_or(&key);
                        let stem = name.split('.').next().unwrap_or(name);
                        // `<ImageId>` or `<ImageId>-<N>`; image ids have one dash.
                        let id = match stem.match_indices('-').nth(1) {
                            Some((at, _)) => &stem[..at],
                            None => stem,
                        };
                        validate_key(id).ok().map(|_| id.to_string())
                    })
                    .collect();
            out.sort();
            out.dedup();
            Ok(out)
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BlobError>> {
        async move {
            use object_store::ObjectStore;
            let prefix = self.prefix_path();
            let mut stream = self.store.list(prefix.as_ref());
            if let Some(first) = stream.next().await {
                first?;
            }
            Ok(())
        }
        .boxed()
    }
}
