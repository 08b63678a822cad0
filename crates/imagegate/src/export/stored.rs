//! Reading a stored image back: the blob store's qcow2 (local file or S3
//! object) as a [`ReadAt`], opened by diskformat's qcow2 reader with its
//! safety rules like any other input.
//!
//! S3 reads go through a small cache of 4 MiB blocks fetched with ranged
//! GETs: the qcow2 reader asks for metadata and clusters in small pieces,
//! and one request per piece would cost far more than the bytes. Like every
//! request of the blob store, each waits out transient S3 errors for up to
//! `blobs.retry_deadline_secs` (`blobstore::patiently`).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use diskformat::{DiskImage, FileSource, FormatError, Limits, ReadAt};
use object_store::ObjectStoreExt;

use crate::blobstore::{into_io, patiently, BlobError, BlobOp, S3BlobStore, Unavailable};
use crate::catalog::blobs::local_blob_dir;
use crate::config::Config;
use crate::retry::RetryPolicy;

const BLOCK: u64 = 4 << 20;
/// Blocks kept: the export's reader threads each work on a window of their own.
const CACHED_BLOCKS: usize = 8;

/// Why a stored disk could not be opened.
#[derive(Debug)]
pub enum StoredError {
    /// Gone, damaged, or not reachable for a reason waiting cannot fix.
    Unreadable(String),
    /// The blob store kept failing past `blobs.retry_deadline_secs`.
    StoreUnavailable(Unavailable),
}

/// Opens the stored disk `blob_key` as a guest disk.
pub async fn open_stored(
    config: &Config,
    blob_key: &str,
) -> Result<Box<dyn DiskImage>, StoredError> {
    crate::blobstore::validate_key(blob_key).map_err(|e| StoredError::Unreadable(e.to_string()))?;
    let src: Arc<dyn ReadAt> = match config.blobs.url.as_deref() {
        None | Some("") => local(&local_blob_dir(&config.data_dir).join(blob_key))?,
        Some(url) if url.starts_with("file://") => {
            let dir = url.trim_start_matches("file://");
            local(&std::path::Path::new(dir).join(blob_key))?
        }
        Some(url) => Arc::new(S3Source::open(config, url, blob_key).await?),
    };
    let limits = Limits {
        max_virtual_size: config.limits.max_virtual_size,
    };
    // The stored form is always qcow2 (our own writer's); still read with
    // every check, as if it came from outside.
    tokio::task::spawn_blocking(move || diskformat::qcow2::open(src, &limits))
        .await
        .map_err(|e| StoredError::Unreadable(format!("opening the stored image stopped: {e}")))?
        .map_err(|e| match &e {
            FormatError::Io(io) => match Unavailable::find(io) {
                Some(outage) => StoredError::StoreUnavailable(outage.clone()),
                None => StoredError::Unreadable(format!("the stored image cannot be read: {e}")),
            },
            _ => StoredError::Unreadable(format!("the stored image cannot be read: {e}")),
        })
}

fn local(path: &std::path::Path) -> Result<Arc<dyn ReadAt>, StoredError> {
    match FileSource::open(path) {
        Ok(f) => Ok(Arc::new(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoredError::Unreadable(
            "the stored image is gone (was it deleted?)".into(),
        )),
        Err(e) => Err(StoredError::Unreadable(format!(
            "cannot open the stored image: {e}"
        ))),
    }
}

struct S3Source {
    runtime: tokio::runtime::Handle,
    store: Arc<object_store::aws::AmazonS3>,
    path: object_store::path::Path,
    len: u64,
    cache: Mutex<VecDeque<(u64, Bytes)>>,
    policy: RetryPolicy,
}

impl S3Source {
    async fn open(config: &Config, url: &str, key: &str) -> Result<S3Source, StoredError> {
        let blobs = S3BlobStore::new(url, &config.blobs)
            .map_err(|e| StoredError::Unreadable(format!("blob store: {e}")))?;
        let (store, path, policy) = blobs.object(key);
        let meta = patiently(&policy, BlobOp::ReadBack, || async {
            Ok(store.head(&path).await?)
        })
        .await
        .map_err(|e| match e {
            BlobError::ObjectStore(object_store::Error::NotFound { .. }) => {
                StoredError::Unreadable("the stored image is gone (was it deleted?)".into())
            }
            BlobError::Unavailable(outage) => StoredError::StoreUnavailable(outage),
            e => StoredError::Unreadable(format!("cannot reach the stored image: {e}")),
        })?;
        Ok(S3Source {
            runtime: tokio::runtime::Handle::current(),
            store,
            path,
            len: meta.size,
            cache: Mutex::new(VecDeque::new()),
            policy,
        })
    }

    fn block(&self, index: u64) -> io::Result<Bytes> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((_, b)) = cache.iter().find(|(i, _)| *i == index) {
                return Ok(b.clone());
            }
        }
        let start = index * BLOCK;
        let end = (start + BLOCK).min(self.len);
        let data = self
            .runtime
            .block_on(patiently(&self.policy, BlobOp::Read, || async {
                Ok(self.store.get_range(&self.path, start..end).await?)
            }))
            // An outage past the deadline stays recognisable (the task
            // fails with `BlobStoreUnavailable`).
            .map_err(into_io)?;
        if data.len() as u64 != end - start {
            return Err(io::Error::other(
                "the stored image changed while it was read",
            ));
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHED_BLOCKS {
                cache.pop_front();
            }
            cache.push_back((index, data.clone()));
        }
        Ok(data)
    }
}

impl ReadAt for S3Source {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        let mut pos = offset;
        while pos < end {
            let block = self.block(pos / BLOCK)?;
            let within = (pos % BLOCK) as usize;
            let n = ((end - pos) as usize).min(block.len() - within);
            let at = (pos - offset) as usize;
            buf[at..at + n].copy_from_slice(&block[within..within + n]);
            pos += n as u64;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }
}
