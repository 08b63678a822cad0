//! XFS, read-only: the default root filesystem of CentOS and RHEL 7 and later.
//!
//! Enough of the on-disk format to list directories, stat inodes, read files
//! and symlinks: the superblock (v4 and v5), inode location from the inode
//! number, the inode core, data forks in local, extent and B+tree format, and
//! directories in short-form, block, leaf and node format (for the last two
//! only the data blocks are walked; the hash index is not needed to list).
//! Every on-disk number is checked before it is used: block magics are
//! verified, B+tree depth and the number of blocks and extents visited are
//! capped, and no allocation follows a size the filesystem merely claims.
//! CRCs are not verified: magic and range checks catch misdirected reads,
//! and nothing here is written back.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use diskformat::bytes::{u16_be, u32_be, u64_be};
use diskformat::ReadAt;

use super::{DirEntry, FileType, FsError, InodeId, Stat};

const SB_MAGIC: u32 = 0x5846_5342; // "XFSB"
const DINODE_MAGIC: u16 = 0x494e; // "IN"
const BMAP_MAGIC: u32 = 0x424d_4150; // "BMAP" (v4)
const BMA3_MAGIC: u32 = 0x424d_4133; // "BMA3" (v5)
const DIR2_BLOCK_MAGIC: u32 = 0x5844_3242; // "XD2B"
const DIR2_DATA_MAGIC: u32 = 0x5844_3244; // "XD2D"
const DIR3_BLOCK_MAGIC: u32 = 0x5844_4233; // "XDB3"
const DIR3_DATA_MAGIC: u32 = 0x5844_4433; // "XDD3"
const SYMLINK_MAGIC: u32 = 0x5853_4c4d; // "XSLM"

const FMT_LOCAL: u8 = 1;
const FMT_EXTENTS: u8 = 2;
const FMT_BTREE: u8 = 3;

/// Directory data blocks live below this byte offset of the directory's data
/// fork; the leaf and free index blocks above it are not needed to list.
const DIR2_LEAF_OFFSET: u64 = 1 << 35;
/// XFS_SYMLINK_MAXLEN.
const SYMLINK_MAXLEN: u64 = 1024;
/// A bmbt deeper than this cannot address any real file (XFS's own limit is
/// below 10 for 64-bit extent counts).
const MAX_BTREE_DEPTH: u16 = 12;
/// Caps on the work one inode can demand.
const MAX_EXTENTS: usize = 1 << 20;
const MAX_BTREE_BLOCKS: usize = 1 << 16;
const MAX_DIR_BLOCKS: usize = 1 << 16;
/// Inodes kept parsed; cleared wholesale when full (lookups are bursty).
/// Extents are counted too: many inodes sharing one huge (hostile) B+tree
/// must not multiply its memory.
const INODE_CACHE: usize = 1024;
const CACHED_EXTENTS: usize = 1 << 18;

const V5_INCOMPAT_FTYPE: u32 = 0x1;
/// Incompat features that do not change anything this reader parses:
/// ftype, sparse inodes, meta_uuid, bigtime, needsrepair, nrext64,
/// exchange-range, parent pointers, metadir.
const V5_INCOMPAT_KNOWN: u32 = 0x1ff;
const DIFLAG_REALTIME: u16 = 0x1;
const DIFLAG2_NREXT64: u64 = 1 << 4;

fn corrupt(msg: impl Into<String>) -> FsError {
    FsError::Corrupt(format!("xfs: {}", msg.into()))
}

/// Geometry from the superblock, validated once at open.
#[derive(Debug, Clone)]
struct Geometry {
    blocksize: u64,
    blocklog: u32,
    agblocks: u64,
    agcount: u64,
    agblklog: u32,
    inopblog: u32,
    inodesize: u64,
    dirblksize: u64,
    v5: bool,
    ftype: bool,
    /// mkfs.xfs -n version=ci: names compare ASCII case-insensitively.
    ascii_ci: bool,
    rootino: u64,
    label: Option<String>,
    uuid: [u8; 16],
}

#[derive(Debug, Clone, Copy)]
struct Extent {
    /// Logical block in the file.
    startoff: u64,
    /// Filesystem block number (agno << agblklog | agbno).
    startblock: u64,
    count: u64,
    unwritten: bool,
}

#[derive(Debug)]
struct Inode {
    mode: u16,
    format: u8,
    size: u64,
    /// The data fork as stored in the inode (local data, extent records or the
    /// bmbt root).
    fork: Vec<u8>,
    /// Data fork extents, sorted by `startoff` (empty for local format).
    extents: Vec<Extent>,
}

impl Inode {
    fn file_type(&self) -> FileType {
        match self.mode & 0o170000 {
            0o040000 => FileType::Dir,
            0o100000 => FileType::File,
            0o120000 => FileType::Symlink,
            _ => FileType::Other,
        }
    }
}

struct Xfs {
    disk: Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
    geo: Geometry,
    /// Parsed inodes and the number of extents they hold.
    cache: Mutex<(HashMap<u64, Arc<Inode>>, usize)>,
}

/// Probe for an XFS superblock at `offset` and open it.
pub fn open(
    disk: Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
) -> Result<Option<Box<dyn super::Filesystem>>, FsError> {
    if len < 512 {
        return Ok(None);
    }
    let mut sb = [0u8; 512];
    disk.read_at(offset, &mut sb)?;
    if u32_be(&sb, 0)? != SB_MAGIC {
        return Ok(None);
    }
    let geo = parse_superblock(&sb)?;
    let fs = Xfs {
        disk,
        offset,
        len,
        geo,
        cache: Mutex::new((HashMap::new(), 0)),
    };
    // The root must be a directory, or nothing else will make sense.
    let root = fs.inode(fs.geo.rootino)?;
    if root.file_type() != FileType::Dir {
        return Err(corrupt("root inode is not a directory"));
    }
    Ok(Some(Box::new(fs)))
}

fn parse_superblock(sb: &[u8]) -> Result<Geometry, FsError> {
    let blocksize = u64::from(u32_be(sb, 4)?);
    let rootino = u64_be(sb, 56)?;
    let agblocks = u64::from(u32_be(sb, 84)?);
    let agcount = u64::from(u32_be(sb, 88)?);
    let versionnum = u16_be(sb, 100)?;
    let inodesize = u64::from(u16_be(sb, 104)?);
    let blocklog = u32::from(sb[120]);
    let inodelog = u32::from(sb[122]);
    let inopblog = u32::from(sb[123]);
    let agblklog = u32::from(sb[124]);
    let dirblklog = u32::from(sb[192]);
    let features2 = u32_be(sb, 200)?;
    let incompat = u32_be(sb, 216)?;

    let version = versionnum & 0xf;
    let v5 = match version {
        4 => false,
        5 => true,
        _ => {
            return Err(FsError::Unsupported(format!(
                "xfs: superblock version {version}"
            )))
        }
    };
    if !v5 && versionnum & 0x2000 == 0 {
        return Err(FsError::Unsupported("xfs: version 1 directories".into()));
    }
    if v5 && incompat & !V5_INCOMPAT_KNOWN != 0 {
        return Err(FsError::Unsupported(format!(
            "xfs: incompatible features {:#x}",
            incompat & !V5_INCOMPAT_KNOWN
        )));
    }
    if !(9..=16).contains(&blocklog) || blocksize != 1 << blocklog {
        return Err(corrupt(format!("block size {blocksize}")));
    }
    if !(8..=11).contains(&inodelog) || inodesize != 1 << inodelog || inodelog > blocklog {
        return Err(corrupt(format!("inode size {inodesize}")));
    }
    if inopblog != blocklog - inodelog {
        return Err(corrupt("inodes per block log"));
    }
    if agcount == 0 || agblocks < 16 || agblklog > 31 || agblocks > 1 << agblklog {
        return Err(corrupt("allocation group geometry"));
    }
    if agblklog == 0 || agblocks <= 1 << (agblklog - 1) {
        return Err(corrupt("allocation group size log"));
    }
    if blocklog + dirblklog > 16 {
        return Err(corrupt("directory block size"));
    }
    let ftype = if v5 {
        incompat & V5_INCOMPAT_FTYPE != 0
    } else {
        versionnum & 0x8000 != 0 && features2 & 0x200 != 0
    };
    let label_bytes = &sb[108..120];
    let label_end = label_bytes.iter().position(|&b| b == 0).unwrap_or(12);
    let label = String::from_utf8_lossy(&label_bytes[..label_end])
        .trim()
        .to_string();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[32..48]);
    Ok(Geometry {
        blocksize,
        blocklog,
        agblocks,
        agcount,
        agblklog,
        inopblog,
        inodesize,
        dirblksize: blocksize << dirblklog,
        v5,
        ftype,
        ascii_ci: versionnum & 0x4000 != 0,
        rootino,
        label: (!label.is_empty()).then_some(label),
        uuid,
    })
}

impl Xfs {
    /// Read `buf.len()` bytes at byte `pos` of the filesystem.
    fn read_bytes(&self, pos: u64, buf: &mut [u8]) -> Result<(), FsError> {
        pos.checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| corrupt(format!("read at {pos} beyond the filesystem")))?;
        let abs = self
            .offset
            .checked_add(pos)
            .ok_or_else(|| corrupt("offset overflow"))?;
        self.disk.read_at(abs, buf)?;
        Ok(())
    }

    /// Byte position of a filesystem block, checking it lies in an AG.
    fn fsb_to_byte(&self, fsb: u64) -> Result<u64, FsError> {
        let g = &self.geo;
        let agno = fsb >> g.agblklog;
        let agbno = fsb & ((1u64 << g.agblklog) - 1);
        if agno >= g.agcount || agbno >= g.agblocks {
            return Err(corrupt(format!("block {fsb} outside the filesystem")));
        }
        (agno * g.agblocks + agbno)
            .checked_mul(g.blocksize)
            .ok_or_else(|| corrupt("block number overflow"))
    }

    fn read_fsb(&self, fsb: u64) -> Result<Vec<u8>, FsError> {
        let pos = self.fsb_to_byte(fsb)?;
        let mut buf = vec![0u8; self.geo.blocksize as usize];
        self.read_bytes(pos, &mut buf)?;
        Ok(buf)
    }

    fn inode(&self, ino: u64) -> Result<Arc<Inode>, FsError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some(i) = cache.0.get(&ino) {
                return Ok(i.clone());
            }
        }
        let inode = Arc::new(self.load_inode(ino)?);
        let n = inode.extents.len();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.0.len() >= INODE_CACHE || cache.1 + n > CACHED_EXTENTS {
                *cache = (HashMap::new(), 0);
            }
            if n <= CACHED_EXTENTS {
                cache.0.insert(ino, inode.clone());
                cache.1 += n;
            }
        }
        Ok(inode)
    }

    fn load_inode(&self, ino: u64) -> Result<Inode, FsError> {
        let g = &self.geo;
        let bits = g.agblklog + g.inopblog;
        let agno = ino >> bits;
        let agbno = (ino >> g.inopblog) & ((1u64 << g.agblklog) - 1);
        let idx = ino & ((1u64 << g.inopblog) - 1);
        if agno >= g.agcount || agbno >= g.agblocks {
            return Err(corrupt(format!(
                "inode number {ino} outside the filesystem"
            )));
        }
        let pos = (agno * g.agblocks + agbno)
            .checked_mul(g.blocksize)
            .and_then(|p| p.checked_add(idx * g.inodesize))
            .ok_or_else(|| corrupt("inode position overflow"))?;
        let mut raw = vec![0u8; g.inodesize as usize];
        self.read_bytes(pos, &mut raw)?;

        if u16_be(&raw, 0)? != DINODE_MAGIC {
            return Err(corrupt(format!("inode {ino}: bad magic")));
        }
        let mode = u16_be(&raw, 2)?;
        let version = raw[4];
        let format = raw[5];
        let core = match (version, g.v5) {
            (1 | 2, false) => 100usize,
            (3, true) => 176usize,
            _ => return Err(corrupt(format!("inode {ino}: version {version}"))),
        };
        if version == 3 && u64_be(&raw, 152)? != ino {
            return Err(corrupt(format!(
                "inode {ino}: records another inode number"
            )));
        }
        let size = u64_be(&raw, 56)?;
        let forkoff = usize::from(raw[82]);
        let flags = u16_be(&raw, 90)?;
        let flags2 = if version == 3 { u64_be(&raw, 120)? } else { 0 };
        let nextents = if flags2 & DIFLAG2_NREXT64 != 0 {
            u64_be(&raw, 24)?
        } else {
            u64::from(u32_be(&raw, 76)?)
        };
        let fork_len = if forkoff == 0 {
            raw.len() - core
        } else {
            forkoff * 8
        };
        let fork = raw
            .get(core..core + fork_len)
            .ok_or_else(|| corrupt(format!("inode {ino}: attribute fork offset")))?
            .to_vec();
        if size > i64::MAX as u64 {
            return Err(corrupt(format!("inode {ino}: size {size}")));
        }
        let mut inode = Inode {
            mode,
            format,
            size,
            fork,
            extents: Vec::new(),
        };
        let ft = inode.file_type();
        match format {
            FMT_LOCAL => {
                if ft == FileType::File && size > fork_len as u64 {
                    return Err(corrupt(format!("inode {ino}: inline size")));
                }
            }
            FMT_EXTENTS | FMT_BTREE => {
                if flags & DIFLAG_REALTIME != 0 && ft == FileType::File {
                    return Err(FsError::Unsupported("xfs: realtime files".into()));
                }
                let mut extents = if format == FMT_EXTENTS {
                    self.fork_extents(&inode.fork, nextents)?
                } else {
                    self.btree_extents(&inode.fork)?
                };
                extents.sort_by_key(|e| e.startoff);
                for w in extents.windows(2) {
                    if w[0].startoff + w[0].count > w[1].startoff {
                        return Err(corrupt(format!("inode {ino}: overlapping extents")));
                    }
                }
                inode.extents = extents;
            }
            // Device inodes and FIFOs carry no data fork worth reading.
            0 if ft == FileType::Other => {}
            _ => return Err(corrupt(format!("inode {ino}: data fork format {format}"))),
        }
        Ok(inode)
    }

    fn check_extent(&self, e: &Extent) -> Result<(), FsError> {
        if e.count == 0 {
            return Err(corrupt("zero-length extent"));
        }
        e.startoff
            .checked_add(e.count)
            .filter(|&end| end <= 1 << 54)
            .ok_or_else(|| corrupt("extent beyond the largest file"))?;
        let agbno = e.startblock & ((1u64 << self.geo.agblklog) - 1);
        let agno = e.startblock >> self.geo.agblklog;
        if agno >= self.geo.agcount || agbno + e.count > self.geo.agblocks {
            return Err(corrupt(format!(
                "extent of {} blocks at {} outside its allocation group",
                e.count, e.startblock
            )));
        }
        Ok(())
    }

    fn fork_extents(&self, fork: &[u8], nextents: u64) -> Result<Vec<Extent>, FsError> {
        let n = usize::try_from(nextents).unwrap_or(usize::MAX);
        if n > fork.len() / 16 {
            return Err(corrupt(format!(
                "{nextents} extents do not fit in the inode"
            )));
        }
        let mut out = Vec::with_capacity(n);
        for rec in fork.chunks_exact(16).take(n) {
            let e = parse_extent(rec)?;
            self.check_extent(&e)?;
            out.push(e);
        }
        Ok(out)
    }

    /// Walk a B+tree-format data fork: the root lives in the inode, interior
    /// and leaf blocks on disk. Levels must strictly descend to 0, so the walk
    /// ends after at most the root's level steps down any path.
    fn btree_extents(&self, fork: &[u8]) -> Result<Vec<Extent>, FsError> {
        let level = u16_be(fork, 0)?;
        let numrecs = usize::from(u16_be(fork, 2)?);
        if level == 0 || level > MAX_BTREE_DEPTH {
            return Err(corrupt(format!("bmbt root level {level}")));
        }
        let maxrecs = fork.len().saturating_sub(4) / 16;
        if numrecs == 0 || numrecs > maxrecs {
            return Err(corrupt("bmbt root record count"));
        }
        let mut out = Vec::new();
        let mut visited = 0usize;
        for i in 0..numrecs {
            let ptr = u64_be(fork, 4 + maxrecs * 8 + i * 8)?;
            self.btree_walk(ptr, level - 1, &mut out, &mut visited)?;
        }
        Ok(out)
    }

    fn btree_walk(
        &self,
        fsb: u64,
        level: u16,
        out: &mut Vec<Extent>,
        visited: &mut usize,
    ) -> Result<(), FsError> {
        *visited += 1;
        if *visited > MAX_BTREE_BLOCKS {
            return Err(FsError::Limit("xfs: too many bmbt blocks".into()));
        }
        let block = self.read_fsb(fsb)?;
        let (magic, hdr) = if self.geo.v5 {
            (BMA3_MAGIC, 72usize)
        } else {
            (BMAP_MAGIC, 24usize)
        };
        if u32_be(&block, 0)? != magic {
            return Err(corrupt(format!("bmbt block {fsb}: bad magic")));
        }
        if u16_be(&block, 4)? != level {
            return Err(corrupt(format!("bmbt block {fsb}: unexpected level")));
        }
        let numrecs = usize::from(u16_be(&block, 6)?);
        let maxrecs = (block.len() - hdr) / 16;
        if numrecs > maxrecs {
            return Err(corrupt(format!("bmbt block {fsb}: record count")));
        }
        if level == 0 {
            for i in 0..numrecs {
                let off = hdr + i * 16;
                let e = parse_extent(&block[off..off + 16])?;
                self.check_extent(&e)?;
                if out.len() >= MAX_EXTENTS {
                    return Err(FsError::Limit("xfs: too many extents".into()));
                }
                out.push(e);
            }
        } else {
            for i in 0..numrecs {
                let ptr = u64_be(&block, hdr + maxrecs * 8 + i * 8)?;
                self.btree_walk(ptr, level - 1, out, visited)?;
            }
        }
        Ok(())
    }

    /// Copy file bytes at `offset` from the inode's extents; holes and
    /// unwritten extents read as zeros. `buf` must already be clipped to the
    /// range the caller wants.
    fn read_extents(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let bs = self.geo.blocksize;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let lblk = pos >> self.geo.blocklog;
            let within = pos & (bs - 1);
            // First extent that ends after `lblk`.
            let idx = inode
                .extents
                .partition_point(|e| e.startoff + e.count <= lblk);
            let remaining = buf.len() - done;
            let step = match inode.extents.get(idx) {
                Some(e) if e.startoff <= lblk => {
                    let avail = (e.startoff + e.count - lblk).saturating_mul(bs) - within;
                    let n = remaining.min(usize::try_from(avail).unwrap_or(usize::MAX));
                    if e.unwritten {
                        buf[done..done + n].fill(0);
                    } else {
                        let phys = self.fsb_to_byte(e.startblock + (lblk - e.startoff))?;
                        self.read_bytes(phys + within, &mut buf[done..done + n])?;
                    }
                    n
                }
                next => {
                    // A hole up to the next extent (or to the end).
                    let hole_end = next
                        .map(|e| e.startoff.saturating_mul(bs))
                        .unwrap_or(u64::MAX);
                    let n = remaining.min(usize::try_from(hole_end - pos).unwrap_or(usize::MAX));
                    buf[done..done + n].fill(0);
                    n
                }
            };
            done += step;
        }
        Ok(())
    }

    fn dir_entries(&self, inode: &Inode, limit: usize) -> Result<Vec<DirEntry>, FsError> {
        let mut out = Vec::new();
        match inode.format {
            FMT_LOCAL => self.shortform_dir(&inode.fork, limit, &mut out)?,
            FMT_EXTENTS | FMT_BTREE => {
                let fsb_per_dirblk = self.geo.dirblksize >> self.geo.blocklog;
                let leaf_blk = DIR2_LEAF_OFFSET >> self.geo.blocklog;
                let mut dirblocks = BTreeSet::new();
                for e in &inode.extents {
                    let mut b = e.startoff / fsb_per_dirblk;
                    let end = (e.startoff + e.count).min(leaf_blk);
                    while b * fsb_per_dirblk < end {
                        if dirblocks.len() >= MAX_DIR_BLOCKS {
                            return Err(FsError::Limit("xfs: directory too large".into()));
                        }
                        dirblocks.insert(b);
                        b += 1;
                    }
                }
                let mut block = vec![0u8; self.geo.dirblksize as usize];
                for db in dirblocks {
                    self.read_extents(inode, db * self.geo.dirblksize, &mut block)?;
                    self.data_block_entries(&block, limit, &mut out)?;
                }
            }
            f => return Err(corrupt(format!("directory in fork format {f}"))),
        }
        Ok(out)
    }

    fn shortform_dir(
        &self,
        fork: &[u8],
        limit: usize,
        out: &mut Vec<DirEntry>,
    ) -> Result<(), FsError> {
        let count = *fork
            .first()
            .ok_or_else(|| corrupt("short-form directory"))?;
        let i8count = *fork.get(1).ok_or_else(|| corrupt("short-form directory"))?;
        let inosize = if i8count > 0 { 8 } else { 4 };
        let mut pos = 2 + inosize;
        for _ in 0..count {
            let namelen = usize::from(*fork.get(pos).ok_or_else(|| corrupt("short-form entry"))?);
            let name_start = pos + 3;
            let name = fork
                .get(name_start..name_start + namelen)
                .ok_or_else(|| corrupt("short-form name"))?;
            if namelen == 0 {
                return Err(corrupt("empty name in short-form directory"));
            }
            let ino_pos = name_start + namelen + usize::from(self.geo.ftype);
            let inode = if inosize == 8 {
                u64_be(fork, ino_pos)?
            } else {
                u64::from(u32_be(fork, ino_pos)?)
            };
            push_entry(out, name, inode, limit)?;
            pos = ino_pos + inosize;
        }
        Ok(())
    }

    /// Entries of one directory data block (block format or a leaf/node
    /// format data block).
    fn data_block_entries(
        &self,
        block: &[u8],
        limit: usize,
        out: &mut Vec<DirEntry>,
    ) -> Result<(), FsError> {
        let magic = u32_be(block, 0)?;
        let hdr = if self.geo.v5 { 64usize } else { 16usize };
        let (block_magic, data_magic) = if self.geo.v5 {
            (DIR3_BLOCK_MAGIC, DIR3_DATA_MAGIC)
        } else {
            (DIR2_BLOCK_MAGIC, DIR2_DATA_MAGIC)
        };
        let end = if magic == block_magic {
            // Block form: the hash leaf and a tail share the block's end.
            let count = u32_be(block, block.len() - 8)? as usize;
            count
                .checked_mul(8)
                .and_then(|l| block.len().checked_sub(8 + l))
                .filter(|&e| e >= hdr)
                .ok_or_else(|| corrupt("directory block leaf count"))?
        } else if magic == data_magic {
            block.len()
        } else {
            return Err(corrupt("directory data block: bad magic"));
        };
        let mut pos = hdr;
        while pos < end {
            if pos + 8 > end {
                return Err(corrupt("directory block ends inside an entry"));
            }
            if u16_be(block, pos)? == 0xffff {
                let len = usize::from(u16_be(block, pos + 2)?);
                if len < 8 || !len.is_multiple_of(8) || pos + len > end {
                    return Err(corrupt("directory free space entry"));
                }
                pos += len;
                continue;
            }
            let inode = u64_be(block, pos)?;
            let namelen = usize::from(
                *block
                    .get(pos + 8)
                    .ok_or_else(|| corrupt("directory entry"))?,
            );
            if namelen == 0 {
                return Err(corrupt("empty name in directory block"));
            }
            let len = (8 + 1 + namelen + usize::from(self.geo.ftype) + 2).next_multiple_of(8);
            if pos + len > end {
                return Err(corrupt("directory entry crosses its block"));
            }
            let name = &block[pos + 9..pos + 9 + namelen];
            if name != b"." && name != b".." {
                push_entry(out, name, inode, limit)?;
            }
            pos += len;
        }
        Ok(())
    }

    fn symlink_target(&self, inode: &Inode) -> Result<Vec<u8>, FsError> {
        if inode.size == 0 || inode.size > SYMLINK_MAXLEN {
            return Err(corrupt(format!("symlink length {}", inode.size)));
        }
        let size = inode.size as usize;
        match inode.format {
            FMT_LOCAL => inode
                .fork
                .get(..size)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| corrupt("inline symlink longer than its fork")),
            FMT_EXTENTS | FMT_BTREE => {
                let hdr = if self.geo.v5 { 56usize } else { 0 };
                let per_block = self.geo.blocksize as usize - hdr;
                let mut out = Vec::with_capacity(size);
                let mut lblk = 0u64;
                while out.len() < size {
                    let mut block = vec![0u8; self.geo.blocksize as usize];
                    self.read_extents(inode, lblk << self.geo.blocklog, &mut block)?;
                    if self.geo.v5 && u32_be(&block, 0)? != SYMLINK_MAGIC {
                        return Err(corrupt("symlink block: bad magic"));
                    }
                    let take = per_block.min(size - out.len());
                    out.extend_from_slice(&block[hdr..hdr + take]);
                    lblk += 1;
                }
                Ok(out)
            }
            f => Err(corrupt(format!("symlink in fork format {f}"))),
        }
    }
}

fn push_entry(
    out: &mut Vec<DirEntry>,
    name: &[u8],
    inode: u64,
    limit: usize,
) -> Result<(), FsError> {
    if out.len() >= limit {
        return Err(FsError::Limit(format!(
            "xfs: directory has more than {limit} entries"
        )));
    }
    out.push(DirEntry {
        name: name.to_vec(),
        inode,
    });
    Ok(())
}

/// A packed 128-bit bmbt record: flag:1, startoff:54, startblock:52, count:21.
fn parse_extent(rec: &[u8]) -> Result<Extent, FsError> {
    let l0 = u64_be(rec, 0)?;
    let l1 = u64_be(rec, 8)?;
    Ok(Extent {
        unwritten: l0 >> 63 != 0,
        startoff: (l0 & ((1 << 63) - 1)) >> 9,
        startblock: ((l0 & 0x1ff) << 43) | (l1 >> 21),
        count: l1 & ((1 << 21) - 1),
    })
}

fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl super::Filesystem for Xfs {
    fn kind(&self) -> &'static str {
        "xfs"
    }
    fn label(&self) -> Option<String> {
        self.geo.label.clone()
    }
    fn uuid(&self) -> Option<String> {
        Some(format_uuid(&self.geo.uuid))
    }
    fn case_insensitive(&self) -> bool {
        self.geo.ascii_ci
    }
    fn root(&self) -> InodeId {
        self.geo.rootino
    }
    fn stat(&self, inode: InodeId) -> Result<Stat, FsError> {
        let i = self.inode(inode)?;
        Ok(Stat {
            file_type: i.file_type(),
            size: i.size,
        })
    }
    fn read_dir(&self, inode: InodeId, limit: usize) -> Result<Vec<DirEntry>, FsError> {
        let i = self.inode(inode)?;
        if i.file_type() != FileType::Dir {
            return Err(FsError::NotADirectory(format!("xfs inode {inode}")));
        }
        self.dir_entries(&i, limit)
    }
    fn read(&self, inode: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let i = self.inode(inode)?;
        if i.file_type() == FileType::Dir {
            return Err(FsError::Unsupported("xfs: read of a directory".into()));
        }
        if offset >= i.size {
            return Ok(0);
        }
        let n = usize::try_from(i.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let buf = &mut buf[..n];
        if i.format == FMT_LOCAL {
            let start = usize::try_from(offset).map_err(|_| corrupt("inline offset"))?;
            let src = i
                .fork
                .get(start..start + n)
                .ok_or_else(|| corrupt("inline data shorter than the file"))?;
            buf.copy_from_slice(src);
        } else {
            self.read_extents(&i, offset, buf)?;
        }
        Ok(n)
    }
    fn read_link(&self, inode: InodeId) -> Result<Vec<u8>, FsError> {
        let i = self.inode(inode)?;
        if i.file_type() != FileType::Symlink {
            return Err(FsError::Unsupported(format!(
                "xfs inode {inode} is not a symlink"
            )));
        }
        self.symlink_target(&i)
    }
}
