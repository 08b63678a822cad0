//! Where exported objects go: the same stand-ins for COS that imports read
//! from (`source.cos_root`, a folder of `<bucket>-<appid>` folders, or
//! `source.cos_endpoint`, an S3-compatible store with one bucket per COS
//! bucket; the folder wins when both are set, as for imports).
//!
//! An object appears only when it is complete, and a failed or cancelled
//! export leaves nothing:
//! - folder: the bytes go to `<cos_root>/.imagegate-exports/<task>-<seq>-…`
//!   (outside every bucket), are synced, and are renamed into the bucket
//!   last. A process killed midway leaves a temporary file outside the
//!   buckets, which the next attempt or the worker's sweep removes.
//! - S3: a multipart upload to the final key, completed last; an abort or
//!   a drop aborts it. One left by a killed process is invisible to readers
//!   and listings; the next attempt of its task aborts it (`abort_uploads`,
//!   with static keys), else the bucket's AbortIncompleteMultipartUpload
//!   rule reclaims its parts.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskformat::export::ExportSink;
use object_store::{ObjectStore, ObjectStoreExt};

use super::folder::FolderWriter;
use crate::config::SourceConfig;
use crate::s3::{Credentials, S3Endpoint, Tuning};

/// Folder (under `cos_root`) of temporary export files.
pub const PARTIAL_DIR: &str = ".imagegate-exports";
/// S3 part size and parts in flight per object (memory: their product).
const S3_CHUNK: usize = 8 << 20;
const S3_IN_FLIGHT: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the bucket {0} does not exist")]
    BucketNotFound(String),
    /// No room left where the object would be written (ENOSPC, EDQUOT).
    #[error("the bucket's storage is full")]
    Full,
    #[error("{0}")]
    Io(String),
}

impl TargetError {
    /// `Full` for a full disk, else `Io` with `what` for context.
    fn io(what: &str, e: &io::Error) -> TargetError {
        if crate::storage::is_disk_full(e) {
            return TargetError::Full;
        }
        TargetError::Io(format!("{what}: {e}"))
    }
}

/// The configured destination.
#[derive(Debug, Clone)]
pub enum Target {
    Folder { root: PathBuf },
    S3(S3Target),
}

#[derive(Debug, Clone)]
pub struct S3Target {
    service: S3Endpoint,
}

/// One object being written: an [`ExportSink`] that is published whole or
/// not at all.
pub trait ObjectWriter: ExportSink + Send {
    /// Make the object visible under its key (after `ExportSink::finish`).
    fn publish(self: Box<Self>) -> io::Result<()>;
    /// Drop everything written.
    fn abort(self: Box<Self>);
}

impl Target {
    /// `None` when neither `cos_root` nor `cos_endpoint` is configured:
    /// there is no bucket to write to (`MissingLocationCosEndpoint`).
    pub fn from_config(cfg: &SourceConfig) -> Option<Target> {
        if let Some(root) = &cfg.cos_root {
            return Some(Target::Folder { root: root.clone() });
        }
        Some(Target::S3(S3Target {
            service: S3Endpoint::for_cos(cfg)?,
        }))
    }

    /// Whether the bucket exists (its folder, or the S3 bucket).
    pub async fn check_bucket(&self, bucket: &str) -> Result<(), TargetError> {
        match self {
            Target::Folder { root } => {
                let dir = root.join(bucket);
                match tokio::fs::symlink_metadata(&dir).await {
                    Ok(m) if m.is_dir() => Ok(()),
                    Ok(_) => Err(TargetError::BucketNotFound(bucket.into())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        Err(TargetError::BucketNotFound(bucket.into()))
                    }
                    Err(e) => Err(TargetError::Io(format!("cannot reach the bucket: {e}"))),
                }
            }
            Target::S3(s3) => {
                let store = s3.store(bucket)?;
                match store.list_with_delimiter(None).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_missing_bucket(&e) => {
                        Err(TargetError::BucketNotFound(bucket.into()))
                    }
                    Err(e) => Err(TargetError::Io(format!("cannot reach the bucket: {e}"))),
                }
            }
        }
    }

    /// Start writing `key` in `bucket`; `tag` (`<task>-<seq>`) names the
    /// temporary file so a later attempt can find and remove it.
    pub async fn begin(
        &self,
        bucket: &str,
        key: &str,
        tag: &str,
    ) -> Result<Box<dyn ObjectWriter>, TargetError> {
        if !super::names::is_safe_key(key) {
            return Err(TargetError::Io(format!("refusing object key {key:?}")));
        }
        match self {
            Target::Folder { root } => {
                let partial_dir = root.join(PARTIAL_DIR);
                tokio::fs::create_dir_all(&partial_dir)
                    .await
                    .map_err(|e| TargetError::io(&format!("cannot create {PARTIAL_DIR}"), &e))?;
                let partial =
                    partial_dir.join(format!("{tag}-{}.part", uuid::Uuid::new_v4().simple()));
                let writer = FolderWriter::create(partial, root.join(bucket), key)
                    .map_err(|e| TargetError::io("cannot create a temporary file", &e))?;
                Ok(Box::new(writer))
            }
            Target::S3(s3) => {
                let store = s3.store(bucket)?;
                let path = object_store::path::Path::from(key);
                let upload = store.put_multipart(&path).await.map_err(|e| {
                    if is_store_full(&e) {
                        return TargetError::Full;
                    }
                    TargetError::Io(format!("cannot start the upload: {e}"))
                })?;
                Ok(Box::new(S3Writer {
                    runtime: tokio::runtime::Handle::current(),
                    upload: Some(object_store::WriteMultipart::new_with_chunk_size(
                        upload, S3_CHUNK,
                    )),
                    store,
                    path,
                    written: 0,
                }))
            }
        }
    }

    /// Delete a published object; a missing one is not an error.
    pub async fn remove(&self, bucket: &str, key: &str) -> Result<(), TargetError> {
        if !super::names::is_safe_key(key) {
            return Err(TargetError::Io(format!("refusing object key {key:?}")));
        }
        match self {
            Target::Folder { root } => {
                match tokio::fs::remove_file(root.join(bucket).join(key)).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(TargetError::Io(e.to_string())),
                }
            }
            Target::S3(s3) => {
                let path = object_store::path::Path::from(key);
                match s3.store(bucket)?.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(TargetError::Io(e.to_string())),
                }
            }
        }
    }

    /// Abort the incomplete multipart uploads to exactly `key` in `bucket`
    /// (S3 target with static keys; otherwise there is nothing to list and
    /// 0 is returned). Returns how many were aborted. The caller makes sure
    /// no live writer owns one (see `run::abort_dead_uploads`).
    pub async fn abort_uploads(&self, bucket: &str, key: &str) -> Result<usize, TargetError> {
        use object_store::multipart::MultipartStore;
        let Target::S3(s3) = self else {
            return Ok(0);
        };
        let Credentials::Keys(ak, sk) = &s3.service.credentials else {
            return Ok(0);
        };
        let lister = crate::blobstore::UploadLister::new(&s3.service, bucket, ak, sk)
            .map_err(|e| TargetError::Io(e.to_string()))?;
        let found = lister
            .list(key)
            .await
            .map_err(|e| TargetError::Io(e.to_string()))?;
        let store = s3.amazon(bucket)?;
        let mut aborted = 0;
        for (_, id) in found.iter().filter(|(k, _)| k == key) {
            let path = object_store::path::Path::from(key);
            match store.abort_multipart(&path, id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => aborted += 1,
                Err(e) => return Err(TargetError::Io(format!("cannot abort an upload: {e}"))),
            }
        }
        Ok(aborted)
    }

    /// Remove the temporary files of the tasks `keep` says no to (folder
    /// target only: an S3 upload never shows before it completes). Returns
    /// how many were removed.
    pub async fn sweep_partials(&self, keep: impl Fn(i64) -> bool) -> usize {
        let Target::Folder { root } = self else {
            return 0;
        };
        let Ok(mut dir) = tokio::fs::read_dir(root.join(PARTIAL_DIR)).await else {
            return 0;
        };
        let mut removed = 0;
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let task = name.split('-').next().and_then(|t| t.parse::<i64>().ok());
            if task.is_some_and(|t| !keep(t)) && tokio::fs::remove_file(entry.path()).await.is_ok()
            {
                removed += 1;
            }
        }
        removed
    }
}

impl S3Target {
    fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, TargetError> {
        Ok(Arc::new(self.amazon(bucket)?))
    }

    fn amazon(&self, bucket: &str) -> Result<object_store::aws::AmazonS3, TargetError> {
        self.service
            .client(bucket, &Tuning::Upload)
            .map_err(|e| TargetError::Io(format!("source.cos_endpoint is not usable: {e}")))
    }
}

/// How S3-compatible stores say they have no room: MinIO's
/// `XMinioStorageFull` (507), Ceph RGW's `QuotaExceeded` (403, a bucket or
/// user quota), and a bare 507 Insufficient Storage. object_store keeps the
/// answer's status and body only in its message.
const STORE_FULL: &[&str] = &["XMinioStorageFull", "QuotaExceeded", "Insufficient Storage"];

fn is_store_full(e: &object_store::Error) -> bool {
    let text = e.to_string();
    STORE_FULL.iter().any(|answer| text.contains(answer))
}

/// An upload's error as the export sees it: a full store is a full disk
/// (`ExportTargetFull`), anything else a write error.
fn store_io_error(e: object_store::Error) -> io::Error {
    if is_store_full(&e) {
        return io::Error::new(io::ErrorKind::StorageFull, e);
    }
    io::Error::other(e)
}

fn is_missing_bucket(e: &object_store::Error) -> bool {
    let text = e.to_string();
    matches!(e, object_store::Error::NotFound { .. }) || text.contains("NoSuchBucket")
}

/// Writes go to S3 parts from the exporting (blocking) thread; at most
/// [`S3_IN_FLIGHT`] parts are in flight, so memory stays bounded.
struct S3Writer {
    runtime: tokio::runtime::Handle,
    upload: Option<object_store::WriteMultipart>,
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    /// Bytes handed to the upload.
    written: u64,
}

impl S3Writer {
    fn upload(&mut self) -> io::Result<&mut object_store::WriteMultipart> {
        self.upload
            .as_mut()
            .ok_or_else(|| io::Error::other("object already closed"))
    }
}

impl ExportSink for S3Writer {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let runtime = self.runtime.clone();
        let upload = self.upload()?;
        runtime
            .block_on(upload.wait_for_capacity(S3_IN_FLIGHT))
            .map_err(store_io_error)?;
        // Parts are spawned on the runtime by `write`.
        let _guard = runtime.enter();
        upload.write(data);
        self.written += data.len() as u64;
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn publish(mut self: Box<Self>) -> io::Result<()> {
        let upload = self
            .upload
            .take()
            .ok_or_else(|| io::Error::other("object already closed"))?;
        match self.runtime.block_on(upload.finish()) {
            Ok(_) => Ok(()),
            Err(e) if self.completed_anyway() => {
                tracing::info!(key = %self.path, error = %e, "the upload's completion went through although its answer was lost");
                Ok(())
            }
            Err(e) => Err(store_io_error(e)),
        }
    }

    fn abort(mut self: Box<Self>) {
        self.abort_now();
    }
}

impl S3Writer {
    /// Whether a completion that failed was done after all. Its answer can
    /// be lost after the store did the work (a dropped connection, or a
    /// timeout while the store assembles a large object); the retry then
    /// finds no upload. The object counts as published when it is there
    /// with every byte written (an object left at this key by an earlier
    /// export of the same image and format holds the same bytes).
    fn completed_anyway(&self) -> bool {
        let head = self.runtime.block_on(self.store.head(&self.path));
        matches!(head, Ok(meta) if meta.size == self.written)
    }

    fn abort_now(&mut self) {
        if let Some(upload) = self.upload.take() {
            // Fire and forget: the blocking thread must not wait on a dead store.
            self.runtime.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        self.abort_now();
    }
}

/// For tests and the benchmark: the path an object has in the folder target.
pub fn folder_object_path(root: &Path, bucket: &str, key: &str) -> PathBuf {
    root.join(bucket).join(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.into(),
        }
    }

    #[test]
    fn a_full_store_is_a_full_disk() {
        for full in [
            "Server returned non-2xx status code: 507 Insufficient Storage: <Error><Code>XMinioStorageFull</Code></Error>",
            "Client error with status 403 Forbidden: <Error><Code>QuotaExceeded</Code></Error>",
        ] {
            assert!(crate::storage::is_disk_full(&store_io_error(answer(full))), "{full}");
        }
        let other = store_io_error(answer("503 Service Unavailable: <Code>SlowDown</Code>"));
        assert!(!crate::storage::is_disk_full(&other));
    }
}
