//! Where stored images live: a local folder (the default) or an
//! S3-compatible bucket, behind one small interface.
//!
//! An upload is append-only except for its first bytes, which the qcow2
//! writer only knows at the end (header, L1 and refcount tables). Locally that
//! is a positioned write into a hidden partial file renamed into place at the
//! end; on S3 it is a multipart upload whose part 1 is sent last. Either way
//! nothing is visible under the final key until `finish` succeeds, and
//! `abort` (or dropping the upload) leaves nothing behind.

use crate::directio::{Appender, DualFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::config::BlobConfig;

mod s3;
mod s3_list;

pub use s3::{into_io, patiently, S3BlobStore};
pub(crate) use s3_list::UploadLister;

use crate::retry::Transience;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("object store request failed: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("invalid blob store configuration: {0}")]
    Config(String),
    /// ListMultipartUploads failed: an HTTP status (`None`: no answer).
    #[error("ListMultipartUploads: {message}")]
    Listing {
        status: Option<u16>,
        message: String,
    },
    /// The store kept failing with transient errors until the retry deadline.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl BlobError {
    /// Whether trying again may help (see `retry`).
    pub fn transience(&self) -> Transience {
        match self {
            BlobError::ObjectStore(e) => s3::transience(e),
            BlobError::Listing { status: None, .. } => Transience::Transient,
            BlobError::Listing {
                status: Some(code), ..
            } => status_transience(*code),
            BlobError::Io(_) | BlobError::Config(_) | BlobError::Unavailable(_) => {
                Transience::Permanent
            }
        }
    }
}

/// 5xx (500 InternalError, 503 SlowDown), 429 and 408 are the store's
/// trouble and pass; any other status is an answer.
fn status_transience(code: u16) -> Transience {
    if code >= 500 || code == 429 || code == 408 {
        Transience::Transient
    } else {
        Transience::Permanent
    }
}

/// What the blob store was asked to do (for messages and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOp {
    CreateUpload,
    UploadPart,
    CompleteUpload,
    AbortUpload,
    ListUploads,
    ReadBack,
    Read,
    Delete,
    List,
}

impl BlobOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobOp::CreateUpload => "starting an upload",
            BlobOp::UploadPart => "uploading a part",
            BlobOp::CompleteUpload => "completing an upload",
            BlobOp::AbortUpload => "aborting an upload",
            BlobOp::ListUploads => "listing unfinished uploads",
            BlobOp::ReadBack => "reading the stored image's size",
            BlobOp::Read => "reading the stored image",
            BlobOp::Delete => "deleting a blob",
            BlobOp::List => "listing blobs",
        }
    }
}

impl std::fmt::Display for BlobOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The blob store kept failing with transient errors (server errors,
/// throttling, dropped connections) for `blobs.retry_deadline_secs`. Travels
/// inside an `io::Error` through the converter, so the pipeline can tell it
/// from other write errors (`BlobStoreUnavailable`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the blob store kept failing for {:.0} s ({attempts} attempts) while {op}: {last}", .waited.as_secs_f64())]
pub struct Unavailable {
    pub op: BlobOp,
    pub waited: std::time::Duration,
    pub attempts: u32,
    /// The last error, for the operator's log (it names the endpoint).
    pub last: String,
}

impl Unavailable {
    /// The `Unavailable` an I/O error carries, if any.
    pub fn find(e: &io::Error) -> Option<&Unavailable> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Unavailable>())
    }
}

/// A stored blob as listed by the reaper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub key: String,
    pub size: u64,
}

/// One upload in progress. Used from a blocking thread (the converter).
pub trait BlobUpload: Send {
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Write `head` at offset 0 and publish the blob under its key.
    fn finish(self: Box<Self>, head: &[u8]) -> io::Result<u64>;
    /// Drop everything written so far.
    fn abort(self: Box<Self>);
}

pub trait BlobStore: Send + Sync {
    /// For logs and `/readyz`: "local:/path" or "s3://bucket/prefix".
    fn describe(&self) -> String;
    /// The qcow2 head region must be at least this long (S3: 5 MiB).
    fn min_head_len(&self) -> u64;
    /// Start an upload of `key` whose first `head_len` bytes are sent last
    /// (by `finish`). Must be called inside a tokio runtime.
    fn create<'a>(
        &'a self,
        key: &'a str,
        head_len: u64,
    ) -> BoxFuture<'a, Result<Box<dyn BlobUpload>, BlobError>>;
    /// Delete `key`; a missing blob is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BlobError>>;
    /// Every published blob (for the reaper and for consistency checks).
    fn list(&self) -> BoxFuture<'_, Result<Vec<BlobEntry>, BlobError>>;
    /// Remove leftovers of unfinished uploads whose key starts with `prefix`
    /// (an image id: called when a new attempt starts and when a job ends,
    /// so a crashed attempt's partial never outlives its job).
    fn remove_partials<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<u64, BlobError>>;
    /// Image ids that have unfinished uploads (for the reaper).
    fn partial_prefixes(&self) -> BoxFuture<'_, Result<Vec<String>, BlobError>>;
    /// Check the store answers (for `/readyz`).
    fn check(&self) -> BoxFuture<'_, Result<(), BlobError>>;
}

/// Blob keys are generated by the service (`<ImageId>.qcow2`,
/// `<ImageId>-<N>.qcow2`); refuse anything else so no key can name a path.
pub fn validate_key(key: &str) -> Result<(), BlobError> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(BlobError::Config(format!("invalid blob key {key:?}")))
    }
}

/// Open the store the configuration names: `[blobs] url` or the local
/// folder `<data_dir>/images`.
pub fn open(cfg: &BlobConfig, data_dir: &Path) -> Result<Arc<dyn BlobStore>, BlobError> {
    match cfg.url.as_deref() {
        None | Some("") => Ok(Arc::new(LocalBlobStore::new(data_dir.join("images"))?)),
        Some(url) if url.starts_with("s3://") => Ok(Arc::new(S3BlobStore::new(url, cfg)?)),
        Some(url) => {
            if let Some(path) = url.strip_prefix("file://") {
                Ok(Arc::new(LocalBlobStore::new(PathBuf::from(path))?))
            } else {
                Err(BlobError::Config(format!(
                    "[blobs] url must be s3://bucket/prefix or file:///path, got {url:?}"
                )))
            }
        }
    }
}

// ---------------------------------------------------------------- local

pub struct LocalBlobStore {
    dir: PathBuf,
    partial_dir: PathBuf,
}

impl LocalBlobStore {
    pub fn new(dir: PathBuf) -> Result<Self, BlobError> {
        let partial_dir = dir.join(".partial");
        crate::private_fs::create_dir_all(&partial_dir)?;
        Ok(LocalBlobStore { dir, partial_dir })
    }

    pub fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }
}

struct LocalUpload {
    /// Writes the body behind the head (page cache bypassed where the file
    /// system allows, see `directio`).
    body: Option<Appender>,
    partial: PathBuf,
    target: PathBuf,
    head_len: u64,
}

impl BlobUpload for LocalUpload {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.body
            .as_mut()
            .ok_or_else(|| io::Error::other("upload already closed"))?
            .append(data)
    }

    fn finish(mut self: Box<Self>, head: &[u8]) -> io::Result<u64> {
        let body = self
            .body
            .take()
            .ok_or_else(|| io::Error::other("upload already closed"))?;
        if head.len() as u64 != self.head_len {
            return Err(io::Error::other(
                "head length differs from the one announced",
            ));
        }
        let mut file = body.finish()?;
        file.write_all_at(head, 0)?;
        let file = file.buffered();
        let size = file.metadata()?.len();
        file.sync_all()?;
        std::fs::rename(&self.partial, &self.target)?;
        // The rename is durable once the folder is: NORMAL must survive a
        // power loss.
        if let Some(dir) = self.target.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(size)
    }

    fn abort(mut self: Box<Self>) {
        self.body.take();
        let _ = std::fs::remove_file(&self.partial);
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // Neither finished nor aborted (a panic or an early return): leave no partial.
        if self.body.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

impl BlobStore for LocalBlobStore {
    fn describe(&self) -> String {
        format!("local:{}", self.dir.display())
    }

    fn min_head_len(&self) -> u64 {
        0
    }

    fn create<'a>(
        &'a self,
        key: &'a str,
        head_len: u64,
    ) -> BoxFuture<'a, Result<Box<dyn BlobUpload>, BlobError>> {
        async move {
            validate_key(key)?;
            let partial = self
                .partial_dir
                .join(format!("{key}.{}", uuid::Uuid::new_v4().simple()));
            let file = crate::private_fs::file_options()
                .write(true)
                .create_new(true)
                .open(&partial)?;
            let body = Appender::start(DualFile::new(&partial, file), head_len)?;
            Ok(Box::new(LocalUpload {
                body: Some(body),
                partial,
                target: self.dir.join(key),
                head_len,
            }) as Box<dyn BlobUpload>)
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        async move {
            validate_key(key)?;
            match tokio::fs::remove_file(self.dir.join(key)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<BlobEntry>, BlobError>> {
        async move {
            let mut out = Vec::new();
            let mut dir = tokio::fs::read_dir(&self.dir).await?;
            while let Some(entry) = dir.next_entry().await? {
                let meta = entry.metadata().await?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if meta.is_file() && !name.starts_with('.') {
                    out.push(BlobEntry {
                        key: name,
                        size: meta.len(),
                    });
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        }
        .boxed()
    }

    fn remove_partials<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<u64, BlobError>> {
        async move {
            let mut removed = 0;
            let mut dir = tokio::fs::read_dir(&self.partial_dir).await?;
            while let Some(entry) = dir.next_entry().await? {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(prefix)
                    && tokio::fs::remove_file(entry.path()).await.is_ok()
                {
                    removed += 1;
                }
            }
            Ok(removed)
        }
        .boxed()
    }

    fn partial_prefixes(&self) -> BoxFuture<'_, Result<Vec<String>, BlobError>> {
        async move {
            let mut out = Vec::new();
            let mut dir = tokio::fs::read_dir(&self.partial_dir).await?;
            while let Some(entry) = dir.next_entry().await? {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Keys start with the image id: `img-xxxxxxxx`.
                if let Some(id) = name.get(..12) {
                    if !out.iter().any(|o| o == id) {
                        out.push(id.to_string());
                    }
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BlobError>> {
        async move {
            tokio::fs::metadata(&self.dir).await?;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stores_trouble_is_waited_out() {
        let listing = |status| BlobError::Listing {
            status,
            message: String::new(),
        };
        for transient in [None, Some(500), Some(503), Some(429), Some(408)] {
            assert_eq!(listing(transient).transience(), Transience::Transient);
        }
        for permanent in [Some(400), Some(403), Some(404)] {
            assert_eq!(listing(permanent).transience(), Transience::Permanent);
        }
        let missing = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert_eq!(BlobError::from(missing).transience(), Transience::Permanent);
        let status = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        };
        let slow_down =
            status("Server returned non-2xx status code: 503 Service Unavailable: SlowDown");
        assert_eq!(s3::transience(&slow_down), Transience::Transient);
        let refused = status("Server returned non-2xx status code: 400 Bad Request: no");
        assert_eq!(s3::transience(&refused), Transience::Permanent);
        // An outage that already outlasted its deadline is not retried again.
        let outage = Unavailable {
            op: BlobOp::UploadPart,
            waited: std::time::Duration::from_secs(300),
            attempts: 40,
            last: "503".into(),
        };
        let io = std::io::Error::other(outage.clone());
        assert_eq!(Unavailable::find(&io).map(|u| u.attempts), Some(40));
        assert_eq!(BlobError::from(outage).transience(), Transience::Permanent);
    }

    #[test]
    fn keys_cannot_name_paths() {
        for bad in ["", "../x", "a/b", ".partial", "x\0y", "/etc/passwd"] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        validate_key("img-abc12345.qcow2").unwrap();
        validate_key("img-abc12345-1.qcow2").unwrap();
    }

    #[tokio::test]
    async fn local_upload_publishes_only_on_finish() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::new(dir.path().join("images")).unwrap();
        let mut up = store.create("img-00000001.qcow2", 5).await.unwrap();
        up.append(b"world").unwrap();
        assert!(store.list().await.unwrap().is_empty());
        // The head lands in the first bytes, after the appended stream.
        let size = up.finish(b"hello").unwrap();
        assert_eq!(size, 10);
        let got = std::fs::read(store.path_of("img-00000001.qcow2")).unwrap();
        assert_eq!(got, b"helloworld");
        assert_eq!(store.list().await.unwrap().len(), 1);

        let mut up = store.create("img-00000002.qcow2", 0).await.unwrap();
        up.append(b"x").unwrap();
        up.abort();
        assert_eq!(store.list().await.unwrap().len(), 1);
        assert!(store.partial_prefixes().await.unwrap().is_empty());

        // A crashed upload leaves a partial until its job is cleaned up.
        let mut up = store.create("img-00000003.qcow2", 0).await.unwrap();
        up.append(b"x").unwrap();
        std::mem::forget(up);
        assert_eq!(
            store.partial_prefixes().await.unwrap(),
            vec!["img-00000003"]
        );
        assert_eq!(store.remove_partials("img-00000003").await.unwrap(), 1);
        assert!(store.partial_prefixes().await.unwrap().is_empty());

        store.delete("img-00000001.qcow2").await.unwrap();
        store.delete("img-00000001.qcow2").await.unwrap();
        assert!(store.list().await.unwrap().is_empty());
    }
}
