//! Room to write: the data volume's free-space reserve (`limits.min_free_space`),
//! an account's byte quota on stored images (`accounts.storage_quota_gib`), and
//! recognising a disk that filled up anyway (ENOSPC).
//!
//! Small functions any task that writes (import, export, sync) can call:
//! [`check_free_space`] before and while writing under the data directory,
//! [`crate::catalog::Catalog::stored_bytes`] with [`quota_room`] before storing an account's
//! bytes, [`is_disk_full`] to turn an I/O error into [`StorageRefusal::Full`]
//! (or [`StorageRefusal::TargetFull`] for an export's bucket), and
//! [`same_volume`] to tell whether a folder shares the data volume (and so
//! its reserve).

use std::io;
use std::path::Path;

use crate::domain::FailureCode;

/// Why a task may not write (more). Each has its own failure code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageRefusal {
    /// The account's stored images would exceed its byte quota.
    QuotaExceeded { quota: u64, used: u64 },
    /// Writing would leave less than the reserve free on the data volume.
    ReserveReached { reserve: u64, free: u64 },
    /// The service's own volume is full (ENOSPC/EDQUOT met while writing a
    /// stored image, the spool, or the catalog).
    Full,
    /// The export's destination (the bucket's folder) filled up while an
    /// object was written.
    TargetFull,
}

impl StorageRefusal {
    /// The failure code recorded for the task.
    pub fn code(&self) -> FailureCode {
        match self {
            StorageRefusal::QuotaExceeded { .. } => FailureCode::StorageQuotaExceeded,
            StorageRefusal::ReserveReached { .. } => FailureCode::StorageReserveReached,
            StorageRefusal::Full => FailureCode::StorageFull,
            StorageRefusal::TargetFull => FailureCode::ExportTargetFull,
        }
    }

    /// A message for the tenant: what happened and what to do, naming no
    /// server path.
    pub fn message(&self) -> String {
        match self {
            StorageRefusal::QuotaExceeded { quota, used } => format!(
                "The account's stored images would exceed its storage quota of {:.2} GiB \
                 ({:.2} GiB are stored now). Delete images you no longer need, or ask the \
                 operator for a larger quota.",
                *quota as f64 / GIB,
                *used as f64 / GIB
            ),
            StorageRefusal::ReserveReached { .. } => "The service's storage is nearly full \
                 (its free-space reserve was reached), so nothing more was written and \
                 nothing of this task was kept. Try again later; the operator has to free \
                 or add space."
                .to_string(),
            StorageRefusal::Full => "The service's storage filled up while this task was \
                 writing; nothing of it was kept. Try again later; the operator has to free \
                 or add space."
                .to_string(),
            StorageRefusal::TargetFull => "The bucket's storage filled up while the export \
                 was written; nothing of it was left in the bucket. Free space where the \
                 bucket is stored (for the service's COS folder: ask the operator) and \
                 export again."
                .to_string(),
        }
    }
}

impl std::fmt::Display for StorageRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code().as_str())
    }
}

/// Carried inside an `io::Error` by writers that stop for room, so the task
/// can record the refusal's own code (see [`refusal_in`]).
impl std::error::Error for StorageRefusal {}

/// The [`StorageRefusal`] an `io::Error` carries, if a writer stopped for room.
pub fn refusal_in(e: &io::Error) -> Option<StorageRefusal> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<StorageRefusal>())
        .cloned()
}

/// Whether `a` and `b` are on one file system (same device). Unknown (one
/// of them unreadable) counts as not.
pub fn same_volume(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => false,
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// Bytes an unprivileged writer may still use on the file system holding
/// `path` (statvfs `f_bavail`).
pub fn free_space(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether `incoming` more bytes can be written under `dir` and leave
/// `reserve` free. A reserve of 0 checks nothing. An unreadable volume is not
/// a refusal (the write itself will tell).
pub fn check_free_space(dir: &Path, reserve: u64, incoming: u64) -> Result<(), StorageRefusal> {
    if reserve == 0 {
        return Ok(());
    }
    match free_space(dir) {
        Ok(free) if free.saturating_sub(incoming) < reserve => {
            Err(StorageRefusal::ReserveReached { reserve, free })
        }
        _ => Ok(()),
    }
}

/// Bytes an account may still store under its `quota` (bytes): `None` when
/// it has no quota.
pub fn quota_room(quota: Option<u64>, used: u64) -> Result<Option<u64>, StorageRefusal> {
    let Some(quota) = quota else {
        return Ok(None);
    };
    if used >= quota {
        return Err(StorageRefusal::QuotaExceeded { quota, used });
    }
    Ok(Some(quota - used))
}

/// ENOSPC or EDQUOT, also when wrapped inside another error or flattened
/// into its text.
pub fn is_disk_full(e: &io::Error) -> bool {
    if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
    {
        return true;
    }
    let mut inner = e.get_ref().map(|i| i as &(dyn std::error::Error + 'static));
    while let Some(err) = inner {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if is_disk_full(io) {
                return true;
            }
        }
        inner = err.source();
    }
    // Some writers hand errors across threads as text.
    names_disk_full(&e.to_string())
}

/// Like [`is_disk_full`] for an error only known by its text (errors that
/// were flattened to strings on their way up): the OS's own wording.
pub fn names_disk_full(text: &str) -> bool {
    text.contains(&format!("(os error {})", libc::ENOSPC))
        || text.contains(&format!("(os error {})", libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_room_counts_down_and_refuses_at_zero() {
        assert_eq!(quota_room(None, u64::MAX), Ok(None));
        assert_eq!(quota_room(Some(1 << 30), 0), Ok(Some(1 << 30)));
        assert_eq!(quota_room(Some(1 << 30), 100), Ok(Some((1 << 30) - 100)));
        let e = quota_room(Some(1 << 30), 1 << 30).unwrap_err();
        assert_eq!(e.code().as_str(), "StorageQuotaExceeded");
        assert!(e.message().contains("1.00 GiB"), "{}", e.message());
    }

    #[test]
    fn the_reserve_is_checked_against_the_real_volume() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_space(dir.path()).unwrap();
        assert!(free > 0);
        check_free_space(dir.path(), 0, u64::MAX).unwrap();
        check_free_space(dir.path(), 1, 0).unwrap();
        let e = check_free_space(dir.path(), free + (1 << 40), 0).unwrap_err();
        assert_eq!(e.code().as_str(), "StorageReserveReached");
        assert!(!e.message().contains('/'), "no path: {}", e.message());
    }

    #[test]
    fn enospc_is_recognised_through_wrappers() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_disk_full(&full));
        assert!(names_disk_full(&full.to_string()));
        let wrapped = io::Error::other(io::Error::from_raw_os_error(libc::EDQUOT));
        assert!(is_disk_full(&wrapped));
        assert!(!is_disk_full(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(!names_disk_full("os error 5"));
    }

    #[test]
    fn a_refusal_travels_inside_an_io_error() {
        let e = io::Error::other(StorageRefusal::TargetFull);
        assert_eq!(refusal_in(&e), Some(StorageRefusal::TargetFull));
        assert_eq!(refusal_in(&io::Error::other("text")), None);
        assert_eq!(
            StorageRefusal::TargetFull.code().as_str(),
            "ExportTargetFull"
        );
        assert!(!StorageRefusal::TargetFull.message().contains('/'));
    }

    #[test]
    fn same_volume_compares_devices() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(same_volume(dir.path(), &sub));
        assert!(!same_volume(dir.path(), &dir.path().join("missing")));
        // /proc is never the volume of a temporary folder.
        assert!(!same_volume(dir.path(), Path::new("/proc")));
    }
}
