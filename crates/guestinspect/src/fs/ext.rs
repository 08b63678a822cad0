//! ext2/3/4, read-only: superblock, group descriptors (classic and
//! meta_bg), inodes, extent trees and indirect blocks, linear and htree
//! directories (an htree is read linearly: its index blocks look like empty
//! entries), fast and slow symlinks, inline data.
//!
//! Written here rather than taken from `ext4-view`, which resolves paths
//! itself (we need inode-level access behind the shared [`Filesystem`]
//! trait) and whose `Ext4` is neither `Send` nor `Sync`. Every number read
//! from disk is checked before use; the extent tree is descended with a
//! strictly decreasing depth (at most 5 levels) and indirect blocks have a
//! fixed depth of three, so no hostile image can make a lookup loop.

use super::blockcache::BlockCache;
use super::{DirEntry, FileType, Filesystem, FsError, InodeId, Stat};
use crate::window::Window;
use diskformat::bytes::{u16_le, u32_le};
use diskformat::ReadAt;
use std::sync::Arc;

const MAGIC: u16 = 0xef53;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

const FLAG_EXTENTS: u32 = 0x8_0000;
const FLAG_INLINE_DATA: u32 = 0x1000_0000;
const EXTENT_MAGIC: u16 = 0xf30a;
const MAX_EXTENT_DEPTH: u16 = 5;
/// Directories larger than this are refused (a real /usr/bin is ~100 KiB).
const MAX_DIR_BYTES: u64 = 64 << 20;

pub struct ExtFs {
    disk: Window,
    cache: BlockCache,
    kind: &'static str,
    block_size: u64,
    blocks_count: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    inodes_per_group: u64,
    inodes_count: u64,
    inode_size: u64,
    desc_size: u64,
    group_count: u64,
    incompat: u32,
    ro_compat: u32,
    first_meta_bg: u64,
    label: Option<String>,
    uuid: Option<String>,
}

/// An inode's fields that matter here.
struct Inode {
    mode: u16,
    size: u64,
    flags: u32,
    block: [u8; 60],
    blocks_lo: u32,
    file_acl: u64,
    /// Inline data past the first 60 bytes: the in-inode extended
    /// attribute "system.data" (empty unless the inode has inline data).
    inline_tail: Vec<u8>,
}

impl Inode {
    fn file_type(&self) -> FileType {
        match self.mode & 0xf000 {
            0x4000 => FileType::Dir,
            0x8000 => FileType::File,
            0xa000 => FileType::Symlink,
            _ => FileType::Other,
        }
    }
}

fn corrupt(msg: impl Into<String>) -> FsError {
    FsError::Corrupt(msg.into())
}

/// Reads past the end of the partition mean the filesystem points outside
/// itself: corruption, not an I/O failure.
fn io_or_corrupt(e: std::io::Error, what: &str) -> FsError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        corrupt(format!("{what} lies outside the partition"))
    } else {
        FsError::Io(e)
    }
}

/// Open an ext2/3/4 filesystem at `offset` (length `len`) of `disk`.
/// Ok(None) when there is no ext superblock there.
pub fn open(
    disk: Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
) -> Result<Option<Box<dyn Filesystem>>, FsError> {
    Ok(ExtFs::open(disk, offset, len)?.map(|f| Box::new(f) as Box<dyn Filesystem>))
}

impl ExtFs {
    pub fn open(disk: Arc<dyn ReadAt>, offset: u64, len: u64) -> Result<Option<ExtFs>, FsError> {
        if len < 2048 {
            return Ok(None);
        }
        let disk = Window::new(disk, offset, len)?;
        let mut sb = [0u8; 1024];
        disk.read_at(1024, &mut sb)?;
        if u16_le(&sb, 0x38)? != MAGIC {
            return Ok(None);
        }
        let log_bs = u32_le(&sb, 0x18)?;
        if log_bs > 6 {
            return Err(corrupt(format!("block size 1024<<{log_bs} out of range")));
        }
        let block_size = 1024u64 << log_bs;
        let incompat = u32_le(&sb, 0x60)?;
        let ro_compat = u32_le(&sb, 0x64)?;
        let compat = u32_le(&sb, 0x5c)?;
        if incompat & INCOMPAT_JOURNAL_DEV != 0 {
            return Err(FsError::Unsupported(
                "an external journal device, not a filesystem".into(),
            ));
        }
        let mut blocks_count = u64::from(u32_le(&sb, 0x04)?);
        if incompat & INCOMPAT_64BIT != 0 {
            blocks_count |= u64::from(u32_le(&sb, 0x150)?) << 32;
        }
        let first_data_block = u64::from(u32_le(&sb, 0x14)?);
        let blocks_per_group = u64::from(u32_le(&sb, 0x20)?);
        let inodes_per_group = u64::from(u32_le(&sb, 0x28)?);
        let inodes_count = u64::from(u32_le(&sb, 0x00)?);
        let rev = u32_le(&sb, 0x4c)?;
        let inode_size = if rev == 0 {
            128
        } else {
            u64::from(u16_le(&sb, 0x58)?)
        };
        if blocks_per_group == 0 || blocks_per_group > 8 * block_size {
            return Err(corrupt(format!("{blocks_per_group} blocks per group")));
        }
        if inodes_per_group == 0 || inodes_per_group > 8 * block_size {
            return Err(corrupt(format!("{inodes_per_group} inodes per group")));
        }
        if inode_size < 128 || inode_size > block_size || !inode_size.is_power_of_two() {
            return Err(corrupt(format!("inode size {inode_size}")));
        }
        // Byte offsets of blocks are computed as block × size: the product
        // of the largest must not overflow.
        if blocks_count.checked_mul(block_size).is_none() {
            return Err(corrupt(format!(
                "{blocks_count} blocks overflow the byte range"
            )));
        }
        if first_data_block >= blocks_count || blocks_count == 0 {
            return Err(corrupt(format!(
                "first data block {first_data_block} of {blocks_count}"
            )));
        }
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            u64::from(u16_le(&sb, 0xfe)?)
        } else {
            32
        };
        if desc_size < 32 || desc_size > block_size || !desc_size.is_power_of_two() {
            return Err(corrupt(format!("group descriptor size {desc_size}")));
        }
        let group_count = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        if inodes_count > group_count.saturating_mul(inodes_per_group) {
            return Err(corrupt(format!(
                "{inodes_count} inodes do not fit {group_count} groups"
            )));
        }
        let kind = if incompat & (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG) != 0
            || ro_compat & (RO_COMPAT_HUGE_FILE | RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0
        {
            "ext4"
        } else if compat & COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let label_raw = &sb[0x78..0x88];
        let label_end = label_raw.iter().position(|&b| b == 0).unwrap_or(16);
        let label = String::from_utf8_lossy(&label_raw[..label_end])
            .trim()
            .to_string();
        let u = &sb[0x68..0x78];
        let uuid = if u.iter().all(|&b| b == 0) {
            None
        } else {
            Some(format_uuid(u))
        };
        Ok(Some(ExtFs {
            disk,
            // At most 16 MiB of cached metadata, whatever the block size.
            cache: BlockCache::new(((16 << 20) / block_size) as usize),
            kind,
            block_size,
            blocks_count,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            inodes_count,
            inode_size,
            desc_size,
            group_count,
            incompat,
            ro_compat,
            first_meta_bg: u64::from(u32_le(&sb, 0x104)?),
            label: (!label.is_empty()).then_some(label),
            uuid,
        }))
    }

    /// True when the journal has unreplayed transactions: what we read may
    /// be slightly stale (the guest was not shut down cleanly).
    pub fn needs_recovery(&self) -> bool {
        self.incompat & INCOMPAT_RECOVER != 0
    }

    fn block(&self, n: u64, what: &str) -> Result<Arc<[u8]>, FsError> {
        if n >= self.blocks_count {
            return Err(corrupt(format!("{what}: block {n} beyond the filesystem")));
        }
        self.cache
            .get(&self.disk, n * self.block_size, self.block_size as usize)
            .map_err(|e| io_or_corrupt(e, what))
    }

    fn has_super(&self, group: u64) -> bool {
        if self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 || group <= 1 {
            return true;
        }
        for base in [3u64, 5, 7] {
            let mut p = base;
            while p < group {
                p *= base;
            }
            if p == group {
                return true;
            }
        }
        false
    }

    /// The block holding group `g`'s descriptor and its offset within it.
    fn desc_location(&self, g: u64) -> (u64, u64) {
        let per_block = self.block_size / self.desc_size;
        let mg = g / per_block;
        let within = (g % per_block) * self.desc_size;
        if self.incompat & INCOMPAT_META_BG != 0 && mg >= self.first_meta_bg {
            let first = mg * per_block;
            let start = self.first_data_block + first * self.blocks_per_group;
            (start + u64::from(self.has_super(first)), within)
        } else {
            (self.first_data_block + 1 + mg, within)
        }
    }

    fn inode_table(&self, g: u64) -> Result<u64, FsError> {
        if g >= self.group_count {
            return Err(corrupt(format!("group {g} beyond {}", self.group_count)));
        }
        let (blk, off) = self.desc_location(g);
        let b = self.block(blk, "group descriptor")?;
        let d = &b[off as usize..(off + self.desc_size) as usize];
        let mut table = u64::from(u32_le(d, 8)?);
        if self.desc_size >= 64 {
            table |= u64::from(u32_le(d, 0x28)?) << 32;
        }
        Ok(table)
    }

    fn inode(&self, ino: InodeId) -> Result<Inode, FsError> {
        if ino == 0 || ino > self.inodes_count {
            return Err(corrupt(format!("inode {ino} out of range")));
        }
        let g = (ino - 1) / self.inodes_per_group;
        let idx = (ino - 1) % self.inodes_per_group;
        let table = self.inode_table(g)?;
        let byte = idx * self.inode_size;
        let blk = table
            .checked_add(byte / self.block_size)
            .ok_or_else(|| corrupt("inode table address overflows"))?;
        let b = self.block(blk, "inode table")?;
        let o = (byte % self.block_size) as usize;
        let raw = &b[o..o + self.inode_size as usize];
        let mut block = [0u8; 60];
        block.copy_from_slice(&raw[0x28..0x28 + 60]);
        let size = u64::from(u32_le(raw, 4)?) | (u64::from(u32_le(raw, 0x6c)?) << 32);
        let flags = u32_le(raw, 0x20)?;
        let inline_tail = if flags & FLAG_INLINE_DATA != 0 {
            inline_xattr(raw)?
        } else {
            Vec::new()
        };
        Ok(Inode {
            mode: u16_le(raw, 0)?,
            size,
            flags,
            block,
            blocks_lo: u32_le(raw, 0x1c)?,
            file_acl: u64::from(u32_le(raw, 0x68)?) | (u64::from(u16_le(raw, 0x76)?) << 32),
            inline_tail,
        })
    }

    /// Physical block of logical block `lblk`, or None for a hole (or an
    /// uninitialised extent, which reads as zeros).
    fn map_block(&self, ino: &Inode, lblk: u64) -> Result<Option<u64>, FsError> {
        if ino.flags & FLAG_EXTENTS != 0 {
            self.map_extent(ino, lblk)
        } else {
            self.map_indirect(ino, lblk)
        }
    }

    fn map_extent(&self, ino: &Inode, lblk: u64) -> Result<Option<u64>, FsError> {
        let mut node: Vec<u8> = ino.block.to_vec();
        let mut expected_depth: Option<u16> = None;
        // Each step goes one level down; depth is checked to decrease, so
        // this runs at most MAX_EXTENT_DEPTH + 1 times.
        for _ in 0..=MAX_EXTENT_DEPTH {
            if u16_le(&node, 0)? != EXTENT_MAGIC {
                return Err(corrupt("extent header magic missing"));
            }
            let entries = usize::from(u16_le(&node, 2)?);
            let depth = u16_le(&node, 6)?;
            if depth > MAX_EXTENT_DEPTH || expected_depth.is_some_and(|d| d != depth) {
                return Err(corrupt(format!(
                    "extent tree depth {depth} is inconsistent"
                )));
            }
            if 12 + entries * 12 > node.len() {
                return Err(corrupt(format!("{entries} extents overflow their node")));
            }
            let entry = |i: usize| &node[12 + i * 12..24 + i * 12];
            if depth == 0 {
                for i in 0..entries {
                    let e = entry(i);
                    let first = u64::from(u32_le(e, 0)?);
                    let raw_len = u16_le(e, 4)?;
                    let (len, uninit) = if raw_len > 32768 {
                        (u64::from(raw_len - 32768), true)
                    } else {
                        (u64::from(raw_len), false)
                    };
                    if lblk >= first && lblk < first + len {
                        if uninit {
                            return Ok(None);
                        }
                        let start = u64::from(u32_le(e, 8)?) | (u64::from(u16_le(e, 6)?) << 32);
                        return Ok(Some(start + (lblk - first)));
                    }
                }
                return Ok(None);
            }
            // Index node: the last entry whose first block is <= lblk.
            let mut child = None;
            for i in 0..entries {
                let e = entry(i);
                if u64::from(u32_le(e, 0)?) <= lblk {
                    child = Some(u64::from(u32_le(e, 4)?) | (u64::from(u16_le(e, 8)?) << 32));
                } else {
                    break;
                }
            }
            let Some(child) = child else {
                return Ok(None);
            };
            node = self.block(child, "extent tree node")?.to_vec();
            expected_depth = Some(depth - 1);
        }
        Err(corrupt("extent tree deeper than allowed"))
    }

    fn map_indirect(&self, ino: &Inode, lblk: u64) -> Result<Option<u64>, FsError> {
        let per = self.block_size / 4;
        let ptr = |i: usize| u32_le(&ino.block, i * 4).map(u64::from);
        let (mut blk, path): (u64, Vec<u64>) = if lblk < 12 {
            (ptr(lblk as usize)?, vec![])
        } else if lblk - 12 < per {
            (ptr(12)?, vec![lblk - 12])
        } else if lblk - 12 - per < per * per {
            let r = lblk - 12 - per;
            (ptr(13)?, vec![r / per, r % per])
        } else {
            let r = lblk - 12 - per - per * per;
            if r >= per * per * per {
                return Ok(None);
            }
            (ptr(14)?, vec![r / (per * per), (r / per) % per, r % per])
        };
        for idx in path {
            if blk == 0 {
                return Ok(None);
            }
            let b = self.block(blk, "indirect block")?;
            blk = u64::from(u32_le(&b, (idx * 4) as usize)?);
        }
        Ok((blk != 0).then_some(blk))
    }

    fn read_inode_data(&self, ino: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        if offset >= ino.size {
            return Ok(0);
        }
        let want = ((ino.size - offset).min(buf.len() as u64)) as usize;
        if ino.flags & FLAG_INLINE_DATA != 0 {
            // The first 60 bytes live in i_block, the rest in the in-inode
            // "system.data" attribute.
            let data: Vec<u8> = ino.block.iter().chain(&ino.inline_tail).copied().collect();
            let end = offset + want as u64;
            let src = data
                .get(offset as usize..end as usize)
                .ok_or_else(|| corrupt("inline data shorter than the file size"))?;
            buf[..want].copy_from_slice(src);
            return Ok(want);
        }
        let bs = self.block_size;
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let lblk = pos / bs;
            let within = (pos % bs) as usize;
            let n = (bs as usize - within).min(want - done);
            match self.map_block(ino, lblk)? {
                None => buf[done..done + n].fill(0),
                Some(p) => {
                    if p >= self.blocks_count {
                        return Err(corrupt(format!("data block {p} beyond the filesystem")));
                    }
                    self.disk
                        .read_at(p * bs + within as u64, &mut buf[done..done + n])
                        .map_err(|e| io_or_corrupt(e, "file data"))?;
                }
            }
            done += n;
        }
        Ok(done)
    }

    fn is_fast_symlink(&self, ino: &Inode) -> bool {
        if ino.size >= 60 || ino.flags & (FLAG_EXTENTS | FLAG_INLINE_DATA) != 0 {
            return false;
        }
        let acl_blocks = if ino.file_acl != 0 {
            (self.block_size / 512) as u32
        } else {
            0
        };
        ino.blocks_lo == acl_blocks
    }
}

/// The value of the in-inode extended attribute "system.data" (index 7,
/// name "data"), which holds inline data beyond i_block's 60 bytes. Every
/// offset is checked against the inode's own bytes.
fn inline_xattr(raw: &[u8]) -> Result<Vec<u8>, FsError> {
    const XATTR_MAGIC: u32 = 0xea02_0000;
    if raw.len() <= 128 {
        return Ok(Vec::new());
    }
    let extra = usize::from(u16_le(raw, 0x80)?);
    let start = 128 + extra;
    if start + 4 > raw.len() || u32_le(raw, start)? != XATTR_MAGIC {
        return Ok(Vec::new());
    }
    // Entries follow the magic; value offsets count from the first entry.
    let first = start + 4;
    let mut pos = first;
    while pos + 16 <= raw.len() {
        if u32_le(raw, pos)? == 0 {
            break;
        }
        let name_len = usize::from(raw[pos]);
        let index = raw[pos + 1];
        let value_offs = usize::from(u16_le(raw, pos + 2)?);
        let value_inum = u32_le(raw, pos + 4)?;
        let value_size = u32_le(raw, pos + 8)? as usize;
        let name = raw
            .get(pos + 16..pos + 16 + name_len)
            .ok_or_else(|| corrupt("extended attribute name overruns the inode"))?;
        if index == 7 && name == b"data" {
            if value_inum != 0 {
                return Err(FsError::Unsupported("inline data in an EA inode".into()));
            }
            return raw
                .get(first + value_offs..first + value_offs + value_size)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| corrupt("inline data attribute overruns the inode"));
        }
        pos += (16 + name_len).div_ceil(4) * 4;
    }
    Ok(Vec::new())
}

/// Parse the entries of one directory block (or inline area) into `out`.
fn parse_dir_block(
    b: &[u8],
    filetype: bool,
    out: &mut Vec<DirEntry>,
    limit: usize,
) -> Result<(), FsError> {
    let mut pos = 0usize;
    while pos + 8 <= b.len() {
        let inode = u32_le(b, pos)?;
        let rec_len = usize::from(u16_le(b, pos + 4)?);
        let name_len = if filetype {
            usize::from(b[pos + 6])
        } else {
            usize::from(u16_le(b, pos + 6)?)
        };
        if rec_len < 8 || pos + rec_len > b.len() || name_len + 8 > rec_len {
            return Err(corrupt(format!(
                "directory entry at {pos} has length {rec_len}"
            )));
        }
        let name = &b[pos + 8..pos + 8 + name_len];
        if inode != 0 && name != b"." && name != b".." && name_len > 0 {
            if out.len() >= limit {
                return Err(FsError::Limit(format!(
                    "directory has more than {limit} entries"
                )));
            }
            out.push(DirEntry {
                name: name.to_vec(),
                inode: u64::from(inode),
            });
        }
        pos += rec_len;
    }
    Ok(())
}

pub(crate) fn format_uuid(u: &[u8]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    if h.len() != 32 {
        return h;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Filesystem for ExtFs {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn label(&self) -> Option<String> {
        self.label.clone()
    }
    fn uuid(&self) -> Option<String> {
        self.uuid.clone()
    }
    fn root(&self) -> InodeId {
        2
    }

    fn stat(&self, inode: InodeId) -> Result<Stat, FsError> {
        let ino = self.inode(inode)?;
        Ok(Stat {
            file_type: ino.file_type(),
            size: ino.size,
        })
    }

    fn read_dir(&self, inode: InodeId, limit: usize) -> Result<Vec<DirEntry>, FsError> {
        let ino = self.inode(inode)?;
        if ino.file_type() != FileType::Dir {
            return Err(FsError::NotADirectory(format!("inode {inode}")));
        }
        let filetype = self.incompat & INCOMPAT_FILETYPE != 0;
        let mut out = Vec::new();
        if ino.flags & FLAG_INLINE_DATA != 0 {
            // 4 bytes of parent inode, then entries in the rest of i_block,
            // then more entries in the "system.data" attribute.
            parse_dir_block(&ino.block[4..], filetype, &mut out, limit)?;
            if ino.size > 60 {
                parse_dir_block(&ino.inline_tail, filetype, &mut out, limit)?;
            }
            return Ok(out);
        }
        if ino.size > MAX_DIR_BYTES {
            return Err(FsError::Limit(format!("directory of {} bytes", ino.size)));
        }
        let blocks = ino.size.div_ceil(self.block_size);
        for lblk in 0..blocks {
            let Some(p) = self.map_block(&ino, lblk)? else {
                continue;
            };
            let b = self.block(p, "directory block")?;
            parse_dir_block(&b, filetype, &mut out, limit)?;
        }
        Ok(out)
    }

    fn read(&self, inode: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let ino = self.inode(inode)?;
        match ino.file_type() {
            FileType::Dir => Err(FsError::Unsupported(format!(
                "inode {inode} is a directory"
            ))),
            _ => self.read_inode_data(&ino, offset, buf),
        }
    }

    fn read_link(&self, inode: InodeId) -> Result<Vec<u8>, FsError> {
        let ino = self.inode(inode)?;
        if ino.file_type() != FileType::Symlink {
            return Err(corrupt(format!("inode {inode} is not a symlink")));
        }
        if ino.size > 4096 {
            return Err(FsError::Limit(format!("symlink of {} bytes", ino.size)));
        }
        if self.is_fast_symlink(&ino) {
            return Ok(ino.block[..ino.size as usize].to_vec());
        }
        let mut buf = vec![0u8; ino.size as usize];
        let n = self.read_inode_data(&ino, 0, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 256-byte inode body with an in-inode xattr area holding `value`
    /// as "system.data" at value offset `offs`.
    fn inode_with_xattr(offs: u16, value: &[u8], size: u32) -> Vec<u8> {
        let mut raw = vec![0u8; 256];
        raw[0x80..0x82].copy_from_slice(&32u16.to_le_bytes()); // i_extra_isize
        let start = 128 + 32;
        raw[start..start + 4].copy_from_slice(&0xea02_0000u32.to_le_bytes());
        let e = start + 4;
        raw[e] = 4; // name_len
        raw[e + 1] = 7; // system.
        raw[e + 2..e + 4].copy_from_slice(&offs.to_le_bytes());
        raw[e + 8..e + 12].copy_from_slice(&size.to_le_bytes());
        raw[e + 16..e + 20].copy_from_slice(b"data");
        let v = e + usize::from(offs);
        if v + value.len() <= raw.len() {
            raw[v..v + value.len()].copy_from_slice(value);
        }
        raw
    }

    #[test]
    fn inline_data_attribute() {
        let raw = inode_with_xattr(40, b"hello", 5);
        assert_eq!(inline_xattr(&raw).unwrap(), b"hello");
        // A value pointing past the inode is corruption, not a panic.
        let raw = inode_with_xattr(40, b"", 4000);
        assert!(matches!(inline_xattr(&raw), Err(FsError::Corrupt(_))));
        let raw = inode_with_xattr(0xfff0, b"", 4);
        assert!(matches!(inline_xattr(&raw), Err(FsError::Corrupt(_))));
        // No magic: no attribute.
        assert!(inline_xattr(&[0u8; 256]).unwrap().is_empty());
        assert!(inline_xattr(&[0u8; 128]).unwrap().is_empty());
    }

    #[test]
    fn directory_entries_are_checked() {
        let mut b = vec![0u8; 64];
        b[0..4].copy_from_slice(&12u32.to_le_bytes());
        b[4..6].copy_from_slice(&16u16.to_le_bytes());
        b[6] = 4;
        b[7] = 1;
        b[8..12].copy_from_slice(b"name");
        b[16..20].copy_from_slice(&13u32.to_le_bytes());
        b[20..22].copy_from_slice(&48u16.to_le_bytes());
        b[22] = 2;
        b[24..26].copy_from_slice(b"ok");
        let mut out = Vec::new();
        parse_dir_block(&b, true, &mut out, 10).unwrap();
        assert_eq!(out.len(), 2);
        assert!(matches!(
            parse_dir_block(&b, true, &mut Vec::new(), 1),
            Err(FsError::Limit(_))
        ));
        // A record length running past the block.
        b[20..22].copy_from_slice(&60u16.to_le_bytes());
        assert!(matches!(
            parse_dir_block(&b, true, &mut Vec::new(), 10),
            Err(FsError::Corrupt(_))
        ));
        // A name longer than its record.
        b[20..22].copy_from_slice(&48u16.to_le_bytes());
        b[22] = 200;
        assert!(matches!(
            parse_dir_block(&b, true, &mut Vec::new(), 10),
            Err(FsError::Corrupt(_))
        ));
    }
}
