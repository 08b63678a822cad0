//! Why an import failed: a stable code and a message that tells the user
//! what to fix. Tencent's own codes where they fit (`InvalidUrl`,
//! `InvalidFormatSize`, `PartitionNotPresent`, …), precise ones of ours where
//! theirs would be vague (`ExternalReferenceRefused`, `SourceStalled`, …).

use diskformat::FormatError;

use crate::domain::FailureCode;

#[derive(Debug, Clone)]
pub struct ImportFailure {
    pub code: FailureCode,
    pub message: String,
    /// What guest inspection found, kept whatever the outcome.
    pub guest: Option<Box<guestinspect::GuestReport>>,
}

impl ImportFailure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        ImportFailure {
            code,
            message: message.into(),
            guest: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(FailureCode::InternalError, message)
    }

    pub fn cancelled() -> Self {
        Self::new(
            FailureCode::ImportCancelled,
            "The import was cancelled by CancelImportImageTask.",
        )
    }

    /// Refused for room: quota, free-space reserve, or a full disk.
    pub fn storage(refusal: &crate::storage::StorageRefusal) -> Self {
        Self::new(refusal.code(), refusal.message())
    }

    /// The blob store kept failing past `blobs.retry_deadline_secs`. The
    /// tenant reads how long it was waited out, not where the store is.
    pub fn blob_store_unavailable(outage: &crate::blobstore::Unavailable) -> Self {
        Self::new(
            FailureCode::BlobStoreUnavailable,
            format!(
                "The image store kept failing for {:.0} s while {} (server errors, throttling or \
                 dropped connections), longer than this service waits for it. Nothing of this \
                 import was kept: import the image again.",
                outage.waited.as_secs_f64(),
                outage.op
            ),
        )
    }

    /// A write that failed: `BlobStoreUnavailable` when the blob store was
    /// down past its deadline, `StorageFull` when the disk was full, else an
    /// internal error with `what` for context.
    pub fn from_write(what: &str, e: &std::io::Error) -> Self {
        if let Some(outage) = crate::blobstore::Unavailable::find(e) {
            return Self::blob_store_unavailable(outage);
        }
        if crate::storage::is_disk_full(e) {
            return Self::storage(&crate::storage::StorageRefusal::Full);
        }
        Self::internal(format!("{what}: {e}"))
    }

    pub fn stored_too_large(size: u64, limit: u64) -> Self {
        Self::new(
            FailureCode::InvalidFormatSize,
            format!(
                "The converted image needs more than {} GiB of storage (limit {} GiB, measured as qcow2, \
                 as Tencent measures it). Shrink the filesystem or zero its free space before exporting; \
                 at least {size} bytes were needed.",
                limit >> 30,
                limit >> 30
            ),
        )
    }

    pub fn from_format(e: FormatError) -> Self {
        if let FormatError::Io(io) = &e {
            if let Some(outage) = crate::blobstore::Unavailable::find(io) {
                return Self::blob_store_unavailable(outage);
            }
            if crate::storage::is_disk_full(io) {
                return Self::storage(&crate::storage::StorageRefusal::Full);
            }
        }
        let code = FailureCode::of_format(&e);
        let hint = match &e {
            FormatError::TooLarge(_) => {
                " Tencent accepts system disks of at most 500 GiB virtual size."
            }
            FormatError::ExternalReference(_) => {
                " Flatten the image into a single self-contained file first \
                 (e.g. `qemu-img convert -O qcow2` on a trusted machine)."
            }
            FormatError::Encrypted(_) => " Decrypt the image before importing it.",
            FormatError::Unsupported(_) => {
                " Supported: raw, qcow2, VMDK (monolithicSparse, streamOptimized), VHD (fixed, dynamic), VHDX."
            }
            FormatError::Truncated(_) => {
                " The upload may be incomplete: upload the whole file again."
            }
            FormatError::Ambiguous(_) => {
                " The file carries signatures of several formats; export it again in one format."
            }
            FormatError::Corrupt(_) => " Check the image with `qemu-img check` where it was made.",
            FormatError::Io(_) => "",
        };
        Self::new(code, format!("{e}.{hint}"))
    }

    pub fn from_fetch(e: crate::source::fetch::FetchError) -> Self {
        // The spool's write errors reach here as text only.
        if matches!(e, crate::source::fetch::FetchError::Internal(_))
            && crate::storage::names_disk_full(&e.to_string())
        {
            return Self::storage(&crate::storage::StorageRefusal::Full);
        }
        Self::new(e.code(), e.to_string())
    }
}

impl std::fmt::Display for ImportFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
