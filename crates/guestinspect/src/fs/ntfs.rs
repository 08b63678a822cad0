//! NTFS, read-only, for Windows images: a thin adapter over the `ntfs`
//! crate (0.4), which does the parsing (boot sector, MFT records with fixups,
//! attribute lists, data runs, index B-trees, the upcase table).
//!
//! The crate reads through `Read + Seek`; `Cursor` provides that over
//! `ReadAt` at the partition offset, and is also the bound the crate lacks:
//! each operation gets a budget of bytes it may read from the disk. An index
//! whose subnode pointers form a cycle makes the crate descend forever,
//! reading one index record per step; the budget turns that into
//! `FsError::Limit`. As a second net, calls into the crate run under
//! `catch_unwind`, so a panic on hostile bytes becomes `FsError::Corrupt`.
//!
//! Inode ids are MFT record numbers. Names are listed in their long form
//! (Win32/POSIX namespaces; DOS 8.3 aliases are skipped) and compare
//! case-insensitively. Reparse points (symlinks, junctions, deduplicated or
//! WOF-compressed files) are reported as `FileType::Other` and not followed;
//! LZNT1-compressed and encrypted data are `Unsupported`.

use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use diskformat::ReadAt;
use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace};
use ntfs::{NtfsAttributeFlags, NtfsReadSeek};

use super::{DirEntry, FileType, FsError, InodeId, Stat};

/// Bytes of metadata one operation may read: enough for a directory of tens
/// of thousands of entries (WinSxS), far below what a cycle would consume.
const METADATA_BUDGET: u64 = 32 << 20;
const ROOT_RECORD: u64 = 5;

/// `Read + Seek` over a partition of a `ReadAt`, with a read budget.
struct Cursor<'a> {
    disk: &'a dyn ReadAt,
    base: u64,
    len: u64,
    pos: u64,
    budget: u64,
}

impl<'a> Cursor<'a> {
    fn new(disk: &'a dyn ReadAt, base: u64, len: u64, budget: u64) -> Self {
        Cursor {
            disk,
            base,
            len,
            pos: 0,
            budget,
        }
    }
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - self.pos);
        if n > self.budget {
            return Err(io::Error::other(BudgetExhausted));
        }
        self.budget -= n;
        let n = n as usize;
        let at = self
            .base
            .checked_add(self.pos)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        self.disk.read_at(at, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Cursor<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos =
            new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek overflow"))?;
        Ok(self.pos)
    }
}

#[derive(Debug)]
struct BudgetExhausted;
impl std::fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("read budget of one NTFS operation exhausted")
    }
}
impl std::error::Error for BudgetExhausted {}

fn map_err(e: ntfs::NtfsError) -> FsError {
    if let ntfs::NtfsError::Io(io) = &e {
        if io
            .get_ref()
            .is_some_and(|inner| inner.is::<BudgetExhausted>())
        {
            return FsError::Limit(format!("ntfs: {io}"));
        }
    }
    FsError::Corrupt(format!("ntfs: {e}"))
}

/// Run a call into the `ntfs` crate, turning a panic into an error.
fn guarded<R>(f: impl FnOnce() -> Result<R, FsError>) -> Result<R, FsError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(FsError::Corrupt("ntfs: malformed structure".into())))
}

struct Ntfs {
    disk: Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
    ntfs: ntfs::Ntfs,
    label: Option<String>,
}

/// Probe for an NTFS boot sector at `offset` and open the volume.
pub fn open(
    disk: Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
) -> Result<Option<Box<dyn super::Filesystem>>, FsError> {
    if len < 512 {
        return Ok(None);
    }
    let mut boot = [0u8; 512];
    disk.read_at(offset, &mut boot)?;
    if &boot[3..11] != b"NTFS    " {
        return Ok(None);
    }
    guarded(|| {
        let mut c = Cursor::new(&*disk, offset, len, METADATA_BUDGET);
        let mut volume = ntfs::Ntfs::new(&mut c).map_err(map_err)?;
        volume.read_upcase_table(&mut c).map_err(map_err)?;
        let label = match volume.volume_name(&mut c) {
            Some(Ok(name)) => Some(name.name().to_string_lossy()).filter(|n| !n.is_empty()),
            Some(Err(e)) => return Err(map_err(e)),
            None => None,
        };
        let root = volume.root_directory(&mut c).map_err(map_err)?;
        if !root.is_directory() {
            return Err(FsError::Corrupt(
                "ntfs: root record is not a directory".into(),
            ));
        }
        Ok((volume, label))
    })
    .map(|(ntfs, label)| {
        Some(Box::new(Ntfs {
            disk,
            offset,
            len,
            ntfs,
            label,
        }) as Box<dyn super::Filesystem>)
    })
}

impl Ntfs {
    fn cursor(&self, budget: u64) -> Cursor<'_> {
        Cursor::new(&*self.disk, self.offset, self.len, budget)
    }

    fn file<'n>(
        &'n self,
        c: &mut Cursor<'_>,
        inode: InodeId,
    ) -> Result<ntfs::NtfsFile<'n>, FsError> {
        let file = self.ntfs.file(c, inode).map_err(map_err)?;
        if !file.flags().contains(ntfs::NtfsFileFlags::IN_USE) {
            return Err(FsError::NotFound(format!(
                "ntfs record {inode} is not in use"
            )));
        }
        Ok(file)
    }

    fn file_type(file: &ntfs::NtfsFile<'_>) -> Result<FileType, FsError> {
        let info = file.info().map_err(map_err)?;
        if info
            .file_attributes()
            .contains(NtfsFileAttributeFlags::REPARSE_POINT)
        {
            return Ok(FileType::Other);
        }
        Ok(if file.is_directory() {
            FileType::Dir
        } else {
            FileType::File
        })
    }
}

impl super::Filesystem for Ntfs {
    fn kind(&self) -> &'static str {
        "ntfs"
    }
    fn label(&self) -> Option<String> {
        self.label.clone()
    }
    fn uuid(&self) -> Option<String> {
        // What blkid and Windows show: the volume serial number in hex.
        Some(format!("{:016X}", self.ntfs.serial_number()))
    }
    fn case_insensitive(&self) -> bool {
        true
    }
    fn root(&self) -> InodeId {
        ROOT_RECORD
    }
    fn stat(&self, inode: InodeId) -> Result<Stat, FsError> {
        guarded(|| {
            let mut c = self.cursor(METADATA_BUDGET);
            let file = self.file(&mut c, inode)?;
            let file_type = Self::file_type(&file)?;
            let size = match file.data(&mut c, "") {
                Some(item) => {
                    let item = item.map_err(map_err)?;
                    item.to_attribute().map_err(map_err)?.value_length()
                }
                None => 0,
            };
            Ok(Stat { file_type, size })
        })
    }
    fn read_dir(&self, inode: InodeId, limit: usize) -> Result<Vec<DirEntry>, FsError> {
        guarded(|| {
            let mut c = self.cursor(METADATA_BUDGET);
            let file = self.file(&mut c, inode)?;
            if !file.is_directory() {
                return Err(FsError::NotADirectory(format!("ntfs record {inode}")));
            }
            let index = file.directory_index(&mut c).map_err(map_err)?;
            let mut entries = index.entries();
            let mut out = Vec::new();
            while let Some(entry) = entries.next(&mut c) {
                let entry = entry.map_err(map_err)?;
                let Some(key) = entry.key() else { continue };
                let name = key.map_err(map_err)?;
                // The 8.3 alias of a long name is a second entry: skip it.
                if name.namespace() == NtfsFileNamespace::Dos {
                    continue;
                }
                let text = name.name().to_string_lossy();
                if text == "." || text == ".." {
                    continue;
                }
                if out.len() >= limit {
                    return Err(FsError::Limit(format!(
                        "ntfs: directory has more than {limit} entries"
                    )));
                }
                out.push(DirEntry {
                    name: text.into_bytes(),
                    inode: entry.file_reference().file_record_number(),
                });
            }
            Ok(out)
        })
    }
    fn read(&self, inode: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        guarded(|| {
            let budget = METADATA_BUDGET.saturating_add(buf.len() as u64);
            let mut c = self.cursor(budget);
            let file = self.file(&mut c, inode)?;
            if file.is_directory() {
                return Err(FsError::Unsupported("ntfs: read of a directory".into()));
            }
            let Some(item) = file.data(&mut c, "") else {
                return Ok(0);
            };
            let item = item.map_err(map_err)?;
            let attr = item.to_attribute().map_err(map_err)?;
            if attr
                .flags()
                .intersects(NtfsAttributeFlags::COMPRESSED | NtfsAttributeFlags::ENCRYPTED)
            {
                return Err(FsError::Unsupported(format!(
                    "ntfs record {inode}: compressed or encrypted data"
                )));
            }
            let size = attr.value_length();
            if offset >= size {
                return Ok(0);
            }
            let want = usize::try_from(size - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let mut value = attr.value(&mut c).map_err(map_err)?;
            value
                .seek(&mut c, SeekFrom::Start(offset))
                .map_err(map_err)?;
            let mut done = 0;
            while done < want {
                let n = value.read(&mut c, &mut buf[done..want]).map_err(map_err)?;
                if n == 0 {
                    return Err(FsError::Corrupt(format!(
                        "ntfs record {inode}: data ends before its length"
                    )));
                }
                done += n;
            }
            Ok(done)
        })
    }
    fn read_link(&self, inode: InodeId) -> Result<Vec<u8>, FsError> {
        Err(FsError::Unsupported(format!(
            "ntfs record {inode}: reparse points are not followed"
        )))
    }
}
