//! Room to write: the data volume's free-space reserve (`limits.min_free_space`),
//! an account's byte quota on stored images (`accounts.storage_quota_gib`), and
//! recognising a disk that filled up anyway (ENOSPC).
//!
//! Small functions any task that writes (import, export, sync) can call:
//! [`check_free_space`] before and while writing under the data directory,
//! [`Catalog::stored_bytes`] with [`quota_room`] before storing an account's
//! bytes, and [`is_disk_full`] to turn an I/O error into [`StorageRefusal::Full`].

use std::io;
use std::path::Path;

/// Why a task may not write (more). Each has its own failure code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageRefusal {
    /// The account's stored images would exceed its byte quota.
    QuotaExceeded { quota: u64, used: u64 },
    /// Writing would leave less than the reserve free on the data volume.
    ReserveReached { reserve: u64, free: u64 },
    /// The volume is full (ENOSPC/EDQUOT met while writing).
    Full,
}

impl StorageRefusal {
    /// The failure code recorded for the task.
    pub fn code(&self) -> &'static str {
        match self {
            StorageRefusal::QuotaExceeded { .. } => "StorageQuotaExceeded",
            StorageRefusal::ReserveReached { .. } => "StorageReserveReached",
            StorageRefusal::Full => "StorageFull",
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
                 (its free-space reserve was reached), so the image was not stored. Try \
                 again later; the operator has to free or add space."
                .to_string(),
            StorageRefusal::Full => "The service's storage filled up while the image was \
                 written; nothing of it was kept. Try again later; the operator has to free \
                 or add space."
                .to_string(),
        }
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
        assert_eq!(e.code(), "StorageQuotaExceeded");
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
        assert_eq!(e.code(), "StorageReserveReached");
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
}
