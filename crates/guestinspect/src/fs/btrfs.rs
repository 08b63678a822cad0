//! Btrfs, read-only: openSUSE's default root filesystem.
//!
//! Bootstraps logical→physical mapping from the superblock's
//! sys_chunk_array, reads the chunk tree for the full map (single device,
//! SINGLE or DUP profiles only), finds the default subvolume through the
//! root tree's `default` directory item, and reads inodes, directories
//! (DIR_INDEX) and file extents (inline, regular, prealloc; zlib and zstd
//! compression) from the subvolume trees.
//!
//! Subvolumes appear as directories: a directory entry whose location is a
//! ROOT_ITEM opens that subvolume's tree, so openSUSE's `@/.snapshots`,
//! `@/home` and the like are browsable. Inode ids are `subvolume index << 48
//! | objectid`, the index being the order in which this reader met the
//! subvolume (the default subvolume is index 0).
//!
//! Bounded: tree descent checks that levels strictly decrease and that each
//! node names its own address; node visits, item counts and copied item
//! bytes per search are capped; compressed extents are limited to Btrfs's
//! own 128 KiB; the subvolume table is capped.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use diskformat::bytes::{u16_le, u32_le, u64_le, u8_at};
use diskformat::ReadAt;

use super::{DirEntry, FileType, FsError, InodeId, Stat};

const SUPER_OFFSET: u64 = 0x10000;
const MAGIC: &[u8; 8] = b"_BHRfS_M";
const HEADER_LEN: usize = 101;

const INODE_ITEM: u8 = 1;
const DIR_ITEM: u8 = 84;
const DIR_INDEX: u8 = 96;
const EXTENT_DATA: u8 = 108;
const ROOT_ITEM: u8 = 132;
const CHUNK_ITEM: u8 = 228;

const FS_TREE: u64 = 5;
const ROOT_TREE_DIR: u64 = 6;
const FIRST_FREE_OBJECTID: u64 = 256;
const FIRST_CHUNK_TREE: u64 = 256;

/// Block group profile bits other than SINGLE (none) and DUP (0x20).
const PROFILE_UNSUPPORTED: u64 = 0x08 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400;
/// Incompat features that change structures read here: extent tree v2,
/// raid stripe tree.
const INCOMPAT_UNSUPPORTED: u64 = 0x2000 | 0x4000;

/// BTRFS_MAX_LEVEL.
const MAX_LEVEL: u8 = 8;
const MAX_NODES_PER_SEARCH: usize = 1 << 14;
const MAX_ITEMS_PER_SEARCH: usize = 1 << 17;
/// Item bytes one search may copy out of the leaves.
const MAX_BYTES_PER_SEARCH: usize = 32 << 20;
const MAX_CHUNKS: usize = 1 << 16;
const MAX_SUBVOLUMES: usize = 4096;
/// Compressed extents never exceed 128 KiB of either side.
const MAX_COMPRESSED: u64 = 128 << 10;
/// BTRFS_MAX_EXTENT_SIZE: an extent covering `offset` starts at most this
/// far before it.
const MAX_EXTENT: u64 = 128 << 20;
const NODE_CACHE: usize = 512;
const OBJECTID_BITS: u32 = 48;

fn corrupt(msg: impl Into<String>) -> FsError {
    FsError::Corrupt(format!("btrfs: {}", msg.into()))
}

/// One bounded tree search: the key range, what it found, what it cost.
struct Search {
    lo: Key,
    hi: Key,
    max_items: usize,
    found: Vec<(Key, Vec<u8>)>,
    nodes_visited: usize,
    bytes_copied: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    objectid: u64,
    ty: u8,
    offset: u64,
}

impl Key {
    fn parse(b: &[u8], off: usize) -> Result<Key, FsError> {
        Ok(Key {
            objectid: u64_le(b, off)?,
            ty: u8_at(b, off + 8)?,
            offset: u64_le(b, off + 9)?,
        })
    }
    fn new(objectid: u64, ty: u8, offset: u64) -> Key {
        Key {
            objectid,
            ty,
            offset,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Chunk {
    logical: u64,
    length: u64,
    physical: u64,
}

#[derive(Debug, Clone, Copy)]
struct TreeRoot {
    bytenr: u64,
    level: u8,
}

struct Subvol {
    id: u64,
    root: Option<TreeRoot>,
}

struct Btrfs {
    disk: Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
    nodesize: u64,
    label: Option<String>,
    fsid: [u8; 16],
    chunks: Vec<Chunk>,
    root_tree: TreeRoot,
    subvols: Mutex<Vec<Subvol>>,
    nodes: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
}

/// Probe for a Btrfs superblock at 64 KiB into the partition and open it.
pub fn open(
    disk: Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
) -> Result<Option<Box<dyn super::Filesystem>>, FsError> {
    if len < SUPER_OFFSET + 4096 {
        return Ok(None);
    }
    let mut sb = vec![0u8; 4096];
    disk.read_at(offset + SUPER_OFFSET, &mut sb)?;
    if &sb[0x40..0x48] != MAGIC {
        return Ok(None);
    }
    let mut fs = Btrfs::from_superblock(disk, offset, len, &sb)?;
    fs.load_chunk_tree(u64_le(&sb, 0x58)?, u8_at(&sb, 0xc7)?)?;
    let default = fs.default_subvolume()?;
    let root = fs.find_root(default)?;
    if let Ok(mut s) = fs.subvols.lock() {
        s.push(Subvol {
            id: default,
            root: Some(root),
        });
    }
    let root_ino = super::Filesystem::root(&fs);
    if super::Filesystem::stat(&fs, root_ino)?.file_type != FileType::Dir {
        return Err(corrupt("root of the default subvolume is not a directory"));
    }
    Ok(Some(Box::new(fs)))
}

impl Btrfs {
    fn from_superblock(
        disk: Arc<dyn ReadAt>,
        offset: u64,
        len: u64,
        sb: &[u8],
    ) -> Result<Btrfs, FsError> {
        let sectorsize = u64::from(u32_le(sb, 0x90)?);
        let nodesize = u64::from(u32_le(sb, 0x94)?);
        let num_devices = u64_le(sb, 0x88)?;
        let incompat = u64_le(sb, 0xbc)?;
        let sys_len = u32_le(sb, 0xa0)? as usize;
        let root_level = u8_at(sb, 0xc6)?;
        if !sectorsize.is_power_of_two() || !(512..=65536).contains(&sectorsize) {
            return Err(corrupt(format!("sector size {sectorsize}")));
        }
        if !nodesize.is_power_of_two() || nodesize < sectorsize || nodesize > 65536 {
            return Err(corrupt(format!("node size {nodesize}")));
        }
        if num_devices != 1 {
            return Err(FsError::Unsupported(format!(
                "btrfs: {num_devices} devices (only single-device filesystems)"
            )));
        }
        if incompat & INCOMPAT_UNSUPPORTED != 0 {
            return Err(FsError::Unsupported(format!(
                "btrfs: incompatible features {:#x}",
                incompat & INCOMPAT_UNSUPPORTED
            )));
        }
        if root_level >= MAX_LEVEL {
            return Err(corrupt("root tree level"));
        }
        let label_raw = &sb[0x12b..0x22b];
        let end = label_raw
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(label_raw.len());
        let label = String::from_utf8_lossy(&label_raw[..end]).into_owned();
        let mut fsid = [0u8; 16];
        fsid.copy_from_slice(&sb[0x20..0x30]);

        // The bootstrap chunks: (key, chunk item) pairs.
        let sys = sb
            .get(0x32b..0x32b + sys_len)
            .filter(|_| sys_len <= 2048)
            .ok_or_else(|| corrupt("sys_chunk_array size"))?;
        let mut chunks = Vec::new();
        let mut pos = 0usize;
        while pos < sys.len() {
            let key = Key::parse(sys, pos)?;
            if key.ty != CHUNK_ITEM {
                return Err(corrupt("sys_chunk_array holds a non-chunk item"));
            }
            let (chunk, used) = parse_chunk(key.offset, &sys[pos + 17..])?;
            chunks.push(chunk);
            pos += 17 + used;
        }
        let fs = Btrfs {
            disk,
            offset,
            len,
            nodesize,
            label: (!label.is_empty()).then_some(label),
            fsid,
            chunks: sort_chunks(chunks)?,
            root_tree: TreeRoot {
                bytenr: u64_le(sb, 0x50)?,
                level: root_level,
            },
            subvols: Mutex::new(Vec::new()),
            nodes: Mutex::new(HashMap::new()),
        };
        Ok(fs)
    }

    fn load_chunk_tree(&mut self, bytenr: u64, level: u8) -> Result<(), FsError> {
        let root = TreeRoot { bytenr, level };
        let lo = Key::new(FIRST_CHUNK_TREE, CHUNK_ITEM, 0);
        let hi = Key::new(FIRST_CHUNK_TREE, CHUNK_ITEM, u64::MAX);
        let items = self.search(root, lo, hi, MAX_CHUNKS)?;
        let mut chunks = Vec::with_capacity(items.len());
        for (key, data) in &items {
            chunks.push(parse_chunk(key.offset, data)?.0);
        }
        self.chunks = sort_chunks(chunks)?;
        // Cached nodes were read through the bootstrap map; they are the same
        // bytes, but keep the cache honest.
        if let Ok(mut n) = self.nodes.lock() {
            n.clear();
        }
        Ok(())
    }

    /// The subvolume the filesystem mounts by default: the root tree
    /// directory's `default` entry, else the top-level FS tree.
    fn default_subvolume(&self) -> Result<u64, FsError> {
        let lo = Key::new(ROOT_TREE_DIR, DIR_ITEM, 0);
        let hi = Key::new(ROOT_TREE_DIR, DIR_ITEM, u64::MAX);
        for (_, data) in self.search(self.root_tree, lo, hi, 1024)? {
            for item in parse_dir_items(&data)? {
                if item.name == b"default" && item.location.ty == ROOT_ITEM {
                    return Ok(item.location.objectid);
                }
            }
        }
        Ok(FS_TREE)
    }

    fn find_root(&self, tree_id: u64) -> Result<TreeRoot, FsError> {
        let lo = Key::new(tree_id, ROOT_ITEM, 0);
        let hi = Key::new(tree_id, ROOT_ITEM, u64::MAX);
        let items = self.search(self.root_tree, lo, hi, 16)?;
        let (_, data) = items
            .last()
            .ok_or_else(|| FsError::NotFound(format!("btrfs: subvolume {tree_id}")))?;
        let level = u8_at(data, 238)?;
        if level >= MAX_LEVEL {
            return Err(corrupt(format!("subvolume {tree_id}: tree level {level}")));
        }
        Ok(TreeRoot {
            bytenr: u64_le(data, 176)?,
            level,
        })
    }

    /// Logical address to a byte position in the partition.
    fn map(&self, logical: u64) -> Result<(u64, u64), FsError> {
        let idx = self
            .chunks
            .partition_point(|c| c.logical + c.length <= logical);
        match self.chunks.get(idx) {
            Some(c) if c.logical <= logical => {
                let within = logical - c.logical;
                let phys = c
                    .physical
                    .checked_add(within)
                    .ok_or_else(|| corrupt("chunk physical address overflow"))?;
                Ok((phys, c.length - within))
            }
            _ => Err(corrupt(format!("logical address {logical} in no chunk"))),
        }
    }

    fn read_logical(&self, logical: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = logical
                .checked_add(done as u64)
                .ok_or_else(|| corrupt("address overflow"))?;
            let (phys, avail) = self.map(at)?;
            let n = (buf.len() - done).min(usize::try_from(avail).unwrap_or(usize::MAX));
            phys.checked_add(n as u64)
                .filter(|&e| e <= self.len)
                .ok_or_else(|| corrupt(format!("chunk maps beyond the device ({phys})")))?;
            self.disk.read_at(
                self.offset
                    .checked_add(phys)
                    .ok_or_else(|| corrupt("device offset overflow"))?,
                &mut buf[done..done + n],
            )?;
            done += n;
        }
        Ok(())
    }

    fn node(&self, bytenr: u64, level: u8) -> Result<Arc<Vec<u8>>, FsError> {
        let cached = self.nodes.lock().ok().and_then(|c| c.get(&bytenr).cloned());
        let node = match cached {
            Some(n) => n,
            None => {
                let mut buf = vec![0u8; self.nodesize as usize];
                self.read_logical(bytenr, &mut buf)?;
                let n = Arc::new(buf);
                if let Ok(mut c) = self.nodes.lock() {
                    if c.len() >= NODE_CACHE {
                        c.clear();
                    }
                    c.insert(bytenr, n.clone());
                }
                n
            }
        };
        // A node names its own address and level: this catches misdirected
        // pointers and pointer cycles before they are followed.
        if u64_le(&node, 0x30)? != bytenr {
            return Err(corrupt(format!("node at {bytenr} records another address")));
        }
        if u8_at(&node, 0x64)? != level {
            return Err(corrupt(format!("node at {bytenr}: unexpected level")));
        }
        Ok(node)
    }

    /// Items with `lo <= key <= hi` in the tree at `root`, in key order.
    fn search(
        &self,
        root: TreeRoot,
        lo: Key,
        hi: Key,
        max_items: usize,
    ) -> Result<Vec<(Key, Vec<u8>)>, FsError> {
        let mut search = Search {
            lo,
            hi,
            max_items,
            found: Vec::new(),
            nodes_visited: 0,
            bytes_copied: 0,
        };
        self.search_node(root.bytenr, root.level, &mut search)?;
        Ok(search.found)
    }

    fn search_node(&self, bytenr: u64, level: u8, s: &mut Search) -> Result<(), FsError> {
        s.nodes_visited += 1;
        if s.nodes_visited > MAX_NODES_PER_SEARCH {
            return Err(FsError::Limit(
                "btrfs: too many tree nodes in one search".into(),
            ));
        }
        let node = self.node(bytenr, level)?;
        let nritems = u32_le(&node, 0x60)? as usize;
        let body = node.len() - HEADER_LEN;
        if level == 0 {
            if nritems > body / 25 {
                return Err(corrupt(format!("leaf at {bytenr}: item count")));
            }
            for i in 0..nritems {
                let at = HEADER_LEN + i * 25;
                let key = Key::parse(&node, at)?;
                if key < s.lo {
                    continue;
                }
                if key > s.hi {
                    break;
                }
                let off = u32_le(&node, at + 17)? as usize;
                let size = u32_le(&node, at + 21)? as usize;
                let data = off
                    .checked_add(size)
                    .filter(|&e| e <= body)
                    .map(|_| &node[HEADER_LEN + off..HEADER_LEN + off + size])
                    .ok_or_else(|| corrupt(format!("leaf at {bytenr}: item data")))?;
                s.bytes_copied += data.len();
                if s.found.len() >= s.max_items || s.bytes_copied > MAX_BYTES_PER_SEARCH {
                    return Err(FsError::Limit("btrfs: too many items".into()));
                }
                s.found.push((key, data.to_vec()));
            }
        } else {
            if nritems == 0 || nritems > body / 33 {
                return Err(corrupt(format!("node at {bytenr}: pointer count")));
            }
            for i in 0..nritems {
                let at = HEADER_LEN + i * 33;
                let key = Key::parse(&node, at)?;
                if key > s.hi {
                    break;
                }
                if i + 1 < nritems && Key::parse(&node, at + 33)? <= s.lo {
                    continue;
                }
                let child = u64_le(&node, at + 17)?;
                self.search_node(child, level - 1, s)?;
            }
        }
        Ok(())
    }

    /// (subvolume tree, objectid) of an inode id.
    fn split(&self, inode: InodeId) -> Result<(TreeRoot, u64), FsError> {
        let idx = (inode >> OBJECTID_BITS) as usize;
        let objectid = inode & ((1 << OBJECTID_BITS) - 1);
        let id = {
            let subvols = self.subvols.lock().map_err(|_| corrupt("poisoned lock"))?;
            let s = subvols
                .get(idx)
                .ok_or_else(|| FsError::NotFound(format!("btrfs inode {inode}")))?;
            if let Some(r) = s.root {
                return Ok((r, objectid));
            }
            s.id
        };
        let root = self.find_root(id)?;
        if let Ok(mut subvols) = self.subvols.lock() {
            if let Some(s) = subvols.get_mut(idx) {
                s.root = Some(root);
            }
        }
        Ok((root, objectid))
    }

    /// The inode id of a subvolume's top directory, registering it.
    fn subvol_inode(&self, id: u64) -> Result<InodeId, FsError> {
        let mut subvols = self.subvols.lock().map_err(|_| corrupt("poisoned lock"))?;
        let idx = match subvols.iter().position(|s| s.id == id) {
            Some(i) => i,
            None => {
                if subvols.len() >= MAX_SUBVOLUMES {
                    return Err(FsError::Limit("btrfs: too many subvolumes".into()));
                }
                subvols.push(Subvol { id, root: None });
                subvols.len() - 1
            }
        };
        Ok(((idx as u64) << OBJECTID_BITS) | FIRST_FREE_OBJECTID)
    }

    fn inode_item(&self, inode: InodeId) -> Result<(TreeRoot, u64, Vec<u8>), FsError> {
        let (root, obj) = self.split(inode)?;
        let key = Key::new(obj, INODE_ITEM, 0);
        let mut items = self.search(root, key, key, 1)?;
        let (_, data) = items
            .pop()
            .ok_or_else(|| FsError::NotFound(format!("btrfs inode {obj}")))?;
        if data.len() < 160 {
            return Err(corrupt("short inode item"));
        }
        Ok((root, obj, data))
    }

    /// Copy the file's bytes in [offset, offset + buf.len()) (already clipped
    /// to the file size); `buf` starts zeroed so holes need no work.
    fn read_extents(
        &self,
        root: TreeRoot,
        obj: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), FsError> {
        let end = offset + buf.len() as u64;
        let lo = Key::new(obj, EXTENT_DATA, offset.saturating_sub(MAX_EXTENT));
        let hi = Key::new(obj, EXTENT_DATA, end - 1);
        for (key, data) in self.search(root, lo, hi, MAX_ITEMS_PER_SEARCH)? {
            let ram_bytes = u64_le(&data, 8)?;
            let compression = u8_at(&data, 16)?;
            if u8_at(&data, 17)? != 0 || u16_le(&data, 18)? != 0 {
                return Err(FsError::Unsupported(
                    "btrfs: encrypted or encoded extent".into(),
                ));
            }
            let ty = u8_at(&data, 20)?;
            let ext_start = key.offset;
            match ty {
                0 => {
                    let inline = &data[21.min(data.len())..];
                    let plain;
                    let bytes: &[u8] = if compression == 0 {
                        inline
                    } else {
                        plain = decompress(compression, inline, ram_bytes)?;
                        &plain
                    };
                    copy_range(buf, offset, ext_start, bytes);
                }
                1 | 2 => {
                    let disk_bytenr = u64_le(&data, 21)?;
                    let disk_num = u64_le(&data, 29)?;
                    let ext_off = u64_le(&data, 37)?;
                    let num = u64_le(&data, 45)?;
                    let ext_end = ext_start
                        .checked_add(num)
                        .ok_or_else(|| corrupt("extent end overflow"))?;
                    let s = offset.max(ext_start);
                    let e = end.min(ext_end);
                    if ty == 2 || disk_bytenr == 0 || s >= e {
                        continue; // prealloc or hole: zeros
                    }
                    let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
                    let within = ext_off
                        .checked_add(s - ext_start)
                        .ok_or_else(|| corrupt("extent offset overflow"))?;
                    if compression == 0 {
                        let at = disk_bytenr
                            .checked_add(within)
                            .ok_or_else(|| corrupt("extent address overflow"))?;
                        self.read_logical(at, dst)?;
                    } else {
                        if disk_num > MAX_COMPRESSED || disk_num == 0 {
                            return Err(corrupt(format!("compressed extent of {disk_num} bytes")));
                        }
                        let mut raw = vec![0u8; disk_num as usize];
                        self.read_logical(disk_bytenr, &mut raw)?;
                        let plain = decompress(compression, &raw, ram_bytes)?;
                        let from = usize::try_from(within).unwrap_or(usize::MAX);
                        let src = plain
                            .get(from..)
                            .ok_or_else(|| corrupt("extent offset beyond its data"))?;
                        let n = src.len().min(dst.len());
                        dst[..n].copy_from_slice(&src[..n]);
                    }
                }
                t => return Err(corrupt(format!("file extent type {t}"))),
            }
        }
        Ok(())
    }
}

/// Copy the part of `src` (file bytes starting at `src_start`) that overlaps
/// `buf` (file bytes starting at `buf_start`).
fn copy_range(buf: &mut [u8], buf_start: u64, src_start: u64, src: &[u8]) {
    let s = buf_start.max(src_start);
    let e = (buf_start + buf.len() as u64).min(src_start.saturating_add(src.len() as u64));
    if s >= e {
        return;
    }
    let d = (s - buf_start) as usize;
    let f = (s - src_start) as usize;
    let n = (e - s) as usize;
    buf[d..d + n].copy_from_slice(&src[f..f + n]);
}

fn decompress(kind: u8, data: &[u8], ram_bytes: u64) -> Result<Vec<u8>, FsError> {
    if ram_bytes > MAX_COMPRESSED {
        return Err(corrupt(format!(
            "compressed extent expands to {ram_bytes} bytes"
        )));
    }
    let mut out = Vec::with_capacity(ram_bytes as usize);
    let res = match kind {
        1 => flate2::read::ZlibDecoder::new(data)
            .take(ram_bytes)
            .read_to_end(&mut out),
        3 => {
            zstd_window_ok(data)?;
            let dec = ruzstd::decoding::StreamingDecoder::new(data)
                .map_err(|e| corrupt(format!("zstd extent: {e}")))?;
            dec.take(ram_bytes).read_to_end(&mut out)
        }
        2 => return Err(FsError::Unsupported("btrfs: lzo-compressed extent".into())),
        k => return Err(corrupt(format!("compression type {k}"))),
    };
    res.map_err(|e| corrupt(format!("compressed extent: {e}")))?;
    // Btrfs may store a compressed extent shorter than ram_bytes only at the
    // file's end; missing bytes read as zeros, like the kernel does.
    out.resize(ram_bytes as usize, 0);
    Ok(out)
}

/// ruzstd reserves the window a frame header claims before decoding: check
/// it first. Btrfs itself never uses a window above 128 KiB.
fn zstd_window_ok(data: &[u8]) -> Result<(), FsError> {
    const MAX_WINDOW: u64 = 8 << 20;
    if u32_le(data, 0)? != 0xfd2f_b528 {
        return Err(corrupt("zstd extent: bad frame magic"));
    }
    let fhd = u8_at(data, 4)?;
    let window = if fhd & 0x20 != 0 {
        // Single segment: the window is the content size that follows the
        // (optional) dictionary id.
        let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
        let at = 5 + dict_len;
        match fhd >> 6 {
            0 => u64::from(u8_at(data, at)?),
            1 => u64::from(u16_le(data, at)?) + 256,
            2 => u64::from(u32_le(data, at)?),
            _ => u64_le(data, at)?,
        }
    } else {
        let wd = u8_at(data, 5)?;
        let base = 1u64 << (10 + u32::from(wd >> 3));
        base + (base / 8) * u64::from(wd & 7)
    };
    if window > MAX_WINDOW {
        return Err(corrupt(format!("zstd extent: window of {window} bytes")));
    }
    Ok(())
}

fn parse_chunk(logical: u64, b: &[u8]) -> Result<(Chunk, usize), FsError> {
    let length = u64_le(b, 0)?;
    let ty = u64_le(b, 24)?;
    let num_stripes = usize::from(u16_le(b, 44)?);
    if num_stripes == 0 {
        return Err(corrupt("chunk without stripes"));
    }
    if ty & PROFILE_UNSUPPORTED != 0 {
        return Err(FsError::Unsupported(format!(
            "btrfs: chunk profile {:#x} (only SINGLE and DUP)",
            ty & PROFILE_UNSUPPORTED
        )));
    }
    if length == 0 || logical.checked_add(length).is_none() {
        return Err(corrupt("chunk length"));
    }
    // SINGLE has one stripe; DUP two copies on the one device: the first
    // stripe is as good as the second.
    let physical = u64_le(b, 48 + 8)?;
    let used = 48 + num_stripes * 32;
    if b.len() < used {
        return Err(corrupt("chunk item truncated"));
    }
    Ok((
        Chunk {
            logical,
            length,
            physical,
        },
        used,
    ))
}

fn sort_chunks(mut chunks: Vec<Chunk>) -> Result<Vec<Chunk>, FsError> {
    chunks.sort_by_key(|c| c.logical);
    chunks.dedup_by_key(|c| c.logical);
    for w in chunks.windows(2) {
        if w[0].logical + w[0].length > w[1].logical {
            return Err(corrupt("overlapping chunks"));
        }
    }
    Ok(chunks)
}

struct DirItem {
    location: Key,
    name: Vec<u8>,
}

/// One DIR_ITEM/DIR_INDEX item payload holds one or more entries.
fn parse_dir_items(data: &[u8]) -> Result<Vec<DirItem>, FsError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let location = Key::parse(data, pos)?;
        let data_len = usize::from(u16_le(data, pos + 25)?);
        let name_len = usize::from(u16_le(data, pos + 27)?);
        let name_at = pos + 30;
        let name = data
            .get(name_at..name_at + name_len)
            .ok_or_else(|| corrupt("directory item name"))?;
        if name.is_empty() {
            return Err(corrupt("empty directory entry name"));
        }
        out.push(DirItem {
            location,
            name: name.to_vec(),
        });
        pos = name_at + name_len + data_len;
    }
    Ok(out)
}

fn file_type(mode: u32) -> FileType {
    match mode & 0o170000 {
        0o040000 => FileType::Dir,
        0o100000 => FileType::File,
        0o120000 => FileType::Symlink,
        _ => FileType::Other,
    }
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

impl super::Filesystem for Btrfs {
    fn kind(&self) -> &'static str {
        "btrfs"
    }
    fn label(&self) -> Option<String> {
        self.label.clone()
    }
    fn uuid(&self) -> Option<String> {
        Some(format_uuid(&self.fsid))
    }
    fn root(&self) -> InodeId {
        FIRST_FREE_OBJECTID
    }
    fn stat(&self, inode: InodeId) -> Result<Stat, FsError> {
        let (_, _, item) = self.inode_item(inode)?;
        Ok(Stat {
            file_type: file_type(u32_le(&item, 52)?),
            size: u64_le(&item, 16)?,
        })
    }
    fn read_dir(&self, inode: InodeId, limit: usize) -> Result<Vec<DirEntry>, FsError> {
        let (root, obj, item) = self.inode_item(inode)?;
        if file_type(u32_le(&item, 52)?) != FileType::Dir {
            return Err(FsError::NotADirectory(format!("btrfs inode {obj}")));
        }
        let subvol = inode & !((1 << OBJECTID_BITS) - 1);
        let lo = Key::new(obj, DIR_INDEX, 0);
        let hi = Key::new(obj, DIR_INDEX, u64::MAX);
        let items = self
            .search(root, lo, hi, limit.saturating_add(1))
            .map_err(|e| match e {
                FsError::Limit(_) => {
                    FsError::Limit(format!("btrfs: directory has more than {limit} entries"))
                }
                e => e,
            })?;
        let mut out = Vec::with_capacity(items.len());
        for (_, data) in items {
            for d in parse_dir_items(&data)? {
                let id = match d.location.ty {
                    INODE_ITEM => {
                        if d.location.objectid >> OBJECTID_BITS != 0 {
                            return Err(FsError::Unsupported("btrfs: objectid beyond 2^48".into()));
                        }
                        subvol | d.location.objectid
                    }
                    ROOT_ITEM => self.subvol_inode(d.location.objectid)?,
                    _ => continue,
                };
                if out.len() >= limit {
                    return Err(FsError::Limit(format!(
                        "btrfs: directory has more than {limit} entries"
                    )));
                }
                out.push(DirEntry {
                    name: d.name,
                    inode: id,
                });
            }
        }
        Ok(out)
    }
    fn read(&self, inode: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let (root, obj, item) = self.inode_item(inode)?;
        if file_type(u32_le(&item, 52)?) == FileType::Dir {
            return Err(FsError::Unsupported("btrfs: read of a directory".into()));
        }
        let size = u64_le(&item, 16)?;
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let buf = &mut buf[..n];
        buf.fill(0);
        self.read_extents(root, obj, offset, buf)?;
        Ok(n)
    }
    fn read_link(&self, inode: InodeId) -> Result<Vec<u8>, FsError> {
        let (root, obj, item) = self.inode_item(inode)?;
        if file_type(u32_le(&item, 52)?) != FileType::Symlink {
            return Err(FsError::Unsupported(format!(
                "btrfs inode {obj} is not a symlink"
            )));
        }
        let size = u64_le(&item, 16)?;
        if size == 0 || size > 4096 {
            return Err(corrupt(format!("symlink length {size}")));
        }
        let mut buf = vec![0u8; size as usize];
        self.read_extents(root, obj, 0, &mut buf)?;
        Ok(buf)
    }
}
