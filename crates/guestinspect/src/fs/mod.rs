//! Read-only filesystem readers behind one small trait.
//!
//! Each reader (ext, xfs, btrfs, ntfs, fat) implements [`Filesystem`] at the
//! inode level; path resolution with bounded symlink following is shared in
//! `path.rs` so that no reader re-implements it. Every reader is bounded: a
//! hostile filesystem cannot make it loop, recurse without end, or allocate
//! more than the caller's limits.

pub(crate) mod blockcache;
pub mod btrfs;
pub mod ext;
pub mod fat;
pub mod ntfs;
pub mod path;
pub mod xfs;

use diskformat::bytes::Truncated;
use diskformat::ReadAt;

/// A filesystem-specific inode (or MFT record, or FAT directory entry) id.
pub type InodeId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Raw name bytes (UTF-8 for Linux filesystems; UTF-16 converted to UTF-8
    /// for NTFS/FAT long names).
    pub name: Vec<u8>,
    pub inode: InodeId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub file_type: FileType,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("I/O error reading the disk: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt filesystem: {0}")]
    Corrupt(String),
    #[error("unsupported filesystem feature: {0}")]
    Unsupported(String),
    #[error("limit reached: {0}")]
    Limit(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("not a directory: {0}")]
    NotADirectory(String),
}

/// A field beyond its buffer, where no structure name is worth giving.
impl From<Truncated> for FsError {
    fn from(t: Truncated) -> Self {
        FsError::Corrupt(format!("structure truncated: {t}"))
    }
}

/// A mounted (read-only, in-process) filesystem.
pub trait Filesystem: Send + Sync {
    /// "ext4", "ext3", "ext2", "xfs", "btrfs", "ntfs", "vfat".
    fn kind(&self) -> &'static str;
    fn label(&self) -> Option<String>;
    fn uuid(&self) -> Option<String>;
    /// Names compare case-insensitively (NTFS, FAT).
    fn case_insensitive(&self) -> bool {
        false
    }
    fn root(&self) -> InodeId;
    fn stat(&self, inode: InodeId) -> Result<Stat, FsError>;
    /// At most `limit` entries ("." and ".." excluded); more is `FsError::Limit`.
    fn read_dir(&self, inode: InodeId, limit: usize) -> Result<Vec<DirEntry>, FsError>;
    /// Read file bytes at `offset`; returns the count read (0 at end).
    fn read(&self, inode: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError>;
    /// Target of a symlink (at most 4 KiB).
    fn read_link(&self, inode: InodeId) -> Result<Vec<u8>, FsError>;
}

/// Probe signatures of the known filesystems at `offset` of `disk` and open the
/// one that matches, if any. (Filled in by the readers as they land.)
pub type Opener = fn(
    disk: std::sync::Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
) -> Result<Option<Box<dyn Filesystem>>, FsError>;

/// The readers [`probe`] tries, in order. Each checks its own signature
/// and returns Ok(None) when it does not match.
pub fn openers() -> Vec<(&'static str, Opener)> {
    vec![
        ("ext", ext::open as Opener),
        ("xfs", xfs::open as Opener),
        ("btrfs", btrfs::open as Opener),
        ("ntfs", ntfs::open as Opener),
        // Last: a FAT boot sector is the loosest signature.
        ("vfat", fat::open as Opener),
    ]
}

/// Open whichever known filesystem lies at `offset` (length `len`) of
/// `disk`. Ok(None) when no reader recognises it. A reader that recognises
/// its signature but finds the filesystem corrupt returns that error.
pub fn probe(
    disk: std::sync::Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
) -> Result<Option<Box<dyn Filesystem>>, FsError> {
    for (_, open) in openers() {
        if let Some(fs) = open(disk.clone(), offset, len)? {
            return Ok(Some(fs));
        }
    }
    Ok(None)
}
