//! FAT12/16/32 with VFAT long names, read-only: enough for EFI system
//! partitions. A file or directory is identified by the byte offset of its
//! 32-byte directory entry (the root by 0), so `stat` needs no table.
//! Cluster chains are followed at most as many steps as the volume has
//! clusters, so a chain that loops ends in an error.

use super::blockcache::BlockCache;
use super::{DirEntry, FileType, Filesystem, FsError, InodeId, Stat};
use crate::window::Window;
use diskformat::bytes::{u16_le, u32_le, u8_at};
use diskformat::ReadAt;
use std::sync::Arc;

const ROOT: InodeId = 0;
const ATTR_DIR: u8 = 0x10;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_LFN: u8 = 0x0f;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bits {
    Fat12,
    Fat16,
    Fat32,
}

pub struct FatFs {
    disk: Window,
    cache: BlockCache,
    bits: Bits,
    bytes_per_sector: u64,
    cluster_size: u64,
    fat_offset: u64,
    fat_bytes: u64,
    /// FAT12/16: the fixed root directory region.
    root_offset: u64,
    root_bytes: u64,
    /// FAT32: the root directory's first cluster.
    root_cluster: u32,
    data_offset: u64,
    cluster_count: u32,
    label: Option<String>,
    volume_id: u32,
}

fn corrupt(msg: impl Into<String>) -> FsError {
    FsError::Corrupt(msg.into())
}

/// Open a FAT filesystem at `offset` (length `len`) of `disk`. Ok(None)
/// when the boot sector is not a FAT one.
pub fn open(
    disk: Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
) -> Result<Option<Box<dyn Filesystem>>, FsError> {
    Ok(FatFs::open(disk, offset, len)?.map(|f| Box::new(f) as Box<dyn Filesystem>))
}

struct Entry {
    attr: u8,
    cluster: u32,
    size: u32,
}

impl FatFs {
    pub fn open(disk: Arc<dyn ReadAt>, offset: u64, len: u64) -> Result<Option<FatFs>, FsError> {
        if len < 512 {
            return Ok(None);
        }
        let disk = Window::new(disk, offset, len)?;
        let mut bs = [0u8; 512];
        disk.read_at(0, &mut bs)?;
        // A FAT boot sector: a jump, the 0x55AA signature, and a BPB whose
        // fields are all in range. Anything else is "not FAT".
        if !(bs[0] == 0xeb || bs[0] == 0xe9) || bs[510] != 0x55 || bs[511] != 0xaa {
            return Ok(None);
        }
        let bps = u64::from(u16_le(&bs, 11)?);
        let spc = u64::from(bs[13]);
        let reserved = u64::from(u16_le(&bs, 14)?);
        let nfats = u64::from(bs[16]);
        let root_entries = u64::from(u16_le(&bs, 17)?);
        let total16 = u64::from(u16_le(&bs, 19)?);
        let fat16_size = u64::from(u16_le(&bs, 22)?);
        let total32 = u64::from(u32_le(&bs, 32)?);
        if !(512..=4096).contains(&bps)
            || !bps.is_power_of_two()
            || spc == 0
            || !spc.is_power_of_two()
            || reserved == 0
            || !(1..=4).contains(&nfats)
        {
            return Ok(None);
        }
        let fat_size = if fat16_size != 0 {
            fat16_size
        } else {
            u64::from(u32_le(&bs, 36)?)
        };
        let total = if total16 != 0 { total16 } else { total32 };
        if fat_size == 0 || total == 0 {
            return Ok(None);
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let meta = reserved + nfats * fat_size + root_sectors;
        if meta >= total {
            return Err(corrupt("FAT metadata is larger than the volume"));
        }
        let clusters = (total - meta) / spc;
        let bits = if clusters < 4085 {
            Bits::Fat12
        } else if clusters < 65525 {
            Bits::Fat16
        } else {
            Bits::Fat32
        };
        if bits == Bits::Fat32 && root_entries != 0 {
            return Err(corrupt("FAT32 with a fixed root directory"));
        }
        if bits != Bits::Fat32 && root_entries == 0 {
            return Err(corrupt("FAT12/16 without a root directory"));
        }
        let (label_at, id_at) = if bits == Bits::Fat32 {
            (71, 67)
        } else {
            (43, 39)
        };
        let label = String::from_utf8_lossy(&bs[label_at..label_at + 11])
            .trim()
            .to_string();
        let label = (!label.is_empty() && label != "NO NAME").then_some(label);
        let fat_bytes = fat_size * bps;
        let needed_fat = match bits {
            Bits::Fat12 => (clusters + 2) * 3 / 2,
            Bits::Fat16 => (clusters + 2) * 2,
            Bits::Fat32 => (clusters + 2) * 4,
        };
        if needed_fat > fat_bytes + bps {
            return Err(corrupt("the FAT is too small for the cluster count"));
        }
        Ok(Some(FatFs {
            disk,
            cache: BlockCache::new(256),
            bits,
            bytes_per_sector: bps,
            cluster_size: spc * bps,
            fat_offset: reserved * bps,
            fat_bytes,
            root_offset: (reserved + nfats * fat_size) * bps,
            root_bytes: root_entries * 32,
            root_cluster: u32_le(&bs, 44)?,
            data_offset: meta * bps,
            cluster_count: clusters as u32,
            label,
            volume_id: u32_le(&bs, id_at)?,
        }))
    }

    fn valid_cluster(&self, c: u32) -> bool {
        c >= 2 && c - 2 < self.cluster_count
    }

    /// The FAT entry for cluster `c`: the next cluster, or None at the end
    /// of the chain.
    fn next(&self, c: u32) -> Result<Option<u32>, FsError> {
        let byte = match self.bits {
            Bits::Fat12 => u64::from(c) * 3 / 2,
            Bits::Fat16 => u64::from(c) * 2,
            Bits::Fat32 => u64::from(c) * 4,
        };
        let entry_len = if self.bits == Bits::Fat32 { 4 } else { 2 };
        if byte + entry_len > self.fat_bytes {
            return Err(corrupt(format!("cluster {c} is beyond the FAT")));
        }
        let sector = byte / self.bytes_per_sector;
        let within = (byte % self.bytes_per_sector) as usize;
        // Read two sectors so that a FAT12 entry straddling them is whole.
        let mut two = self
            .cache
            .get(
                &self.disk,
                self.fat_offset + sector * self.bytes_per_sector,
                self.bytes_per_sector as usize,
            )?
            .to_vec();
        if within + 4 > two.len() {
            let n = self.cache.get(
                &self.disk,
                self.fat_offset + (sector + 1) * self.bytes_per_sector,
                self.bytes_per_sector as usize,
            )?;
            two.extend_from_slice(&n);
        }
        let v = match self.bits {
            Bits::Fat12 => {
                let raw = u32::from(u16_le(&two, within)?);
                let v = if c & 1 == 1 { raw >> 4 } else { raw & 0xfff };
                if v >= 0xff8 {
                    return Ok(None);
                }
                v
            }
            Bits::Fat16 => {
                let v = u32::from(u16_le(&two, within)?);
                if v >= 0xfff8 {
                    return Ok(None);
                }
                v
            }
            Bits::Fat32 => {
                let v = u32_le(&two, within)? & 0x0fff_ffff;
                if v >= 0x0fff_fff8 {
                    return Ok(None);
                }
                v
            }
        };
        if !self.valid_cluster(v) {
            return Err(corrupt(format!("cluster chain points to {v}")));
        }
        Ok(Some(v))
    }

    /// A FAT directory holds at most 65536 entries of 32 bytes (2 MiB):
    /// a longer chain is not followed, however long the FAT makes it.
    fn max_dir_clusters(&self) -> u64 {
        ((2u64 << 20) / self.cluster_size).max(1)
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c - 2) * self.cluster_size
    }

    /// The disk offsets of a chain's clusters, at most `max` of them.
    fn chain(&self, first: u32, max: u64) -> Result<Vec<u64>, FsError> {
        let mut out = Vec::new();
        if !self.valid_cluster(first) {
            return Err(corrupt(format!("chain starts at invalid cluster {first}")));
        }
        let mut c = first;
        loop {
            if out.len() as u64 >= max.min(u64::from(self.cluster_count)) {
                if out.len() as u64 >= u64::from(self.cluster_count) {
                    return Err(corrupt("cluster chain loops"));
                }
                return Ok(out);
            }
            out.push(self.cluster_offset(c));
            match self.next(c)? {
                Some(n) => c = n,
                None => return Ok(out),
            }
        }
    }

    fn entry(&self, id: InodeId) -> Result<Entry, FsError> {
        let b = self.cache.get(&self.disk, id, 32)?;
        Ok(Entry {
            attr: u8_at(&b, 11)?,
            cluster: (u32::from(u16_le(&b, 20)?) << 16) | u32::from(u16_le(&b, 26)?),
            size: u32_le(&b, 28)?,
        })
    }

    /// The byte ranges holding a directory's entries.
    fn dir_ranges(&self, inode: InodeId) -> Result<Vec<(u64, u64)>, FsError> {
        if inode == ROOT {
            if self.bits == Bits::Fat32 {
                let c = self.chain(self.root_cluster, self.max_dir_clusters())?;
                return Ok(c.into_iter().map(|o| (o, self.cluster_size)).collect());
            }
            return Ok(vec![(self.root_offset, self.root_bytes)]);
        }
        let e = self.entry(inode)?;
        if e.attr & ATTR_DIR == 0 {
            return Err(FsError::NotADirectory(format!("entry at {inode}")));
        }
        if e.cluster == 0 {
            // ".." of a first-level directory points at the root as 0.
            return self.dir_ranges(ROOT);
        }
        let c = self.chain(e.cluster, self.max_dir_clusters())?;
        Ok(c.into_iter().map(|o| (o, self.cluster_size)).collect())
    }
}

fn lfn_checksum(short: &[u8]) -> u8 {
    short
        .iter()
        .fold(0u8, |s, &b| s.rotate_right(1).wrapping_add(b))
}

fn short_name(e: &[u8]) -> Vec<u8> {
    let case = e[12];
    let mut base: Vec<u8> = e[0..8].to_vec();
    let mut ext: Vec<u8> = e[8..11].to_vec();
    while base.last() == Some(&b' ') {
        base.pop();
    }
    while ext.last() == Some(&b' ') {
        ext.pop();
    }
    if base.first() == Some(&0x05) {
        base[0] = 0xe5;
    }
    if case & 0x08 != 0 {
        base.make_ascii_lowercase();
    }
    if case & 0x10 != 0 {
        ext.make_ascii_lowercase();
    }
    if !ext.is_empty() {
        base.push(b'.');
        base.extend_from_slice(&ext);
    }
    base
}

impl Filesystem for FatFs {
    fn kind(&self) -> &'static str {
        "vfat"
    }
    fn label(&self) -> Option<String> {
        self.label.clone()
    }
    fn uuid(&self) -> Option<String> {
        Some(format!(
            "{:04X}-{:04X}",
            self.volume_id >> 16,
            self.volume_id & 0xffff
        ))
    }
    fn case_insensitive(&self) -> bool {
        true
    }
    fn root(&self) -> InodeId {
        ROOT
    }

    fn stat(&self, inode: InodeId) -> Result<Stat, FsError> {
        if inode == ROOT {
            return Ok(Stat {
                file_type: FileType::Dir,
                size: 0,
            });
        }
        let e = self.entry(inode)?;
        Ok(Stat {
            file_type: if e.attr & ATTR_DIR != 0 {
                FileType::Dir
            } else {
                FileType::File
            },
            size: if e.attr & ATTR_DIR != 0 {
                0
            } else {
                u64::from(e.size)
            },
        })
    }

    fn read_dir(&self, inode: InodeId, limit: usize) -> Result<Vec<DirEntry>, FsError> {
        let mut out = Vec::new();
        // Long-name pieces gathered before their short entry: (checksum,
        // UTF-16 units by sequence number).
        let mut lfn: Vec<(u8, u8, [u16; 13])> = Vec::new();
        for (start, len) in self.dir_ranges(inode)? {
            let mut pos = start;
            while pos + 32 <= start + len {
                let sector_start = pos - (pos - start) % self.bytes_per_sector;
                let sec =
                    self.cache
                        .get(&self.disk, sector_start, self.bytes_per_sector as usize)?;
                let o = (pos - sector_start) as usize;
                let e = &sec[o..o + 32];
                let id = pos;
                pos += 32;
                match e[0] {
                    0x00 => return Ok(out),
                    0xe5 => {
                        lfn.clear();
                        continue;
                    }
                    _ => {}
                }
                let attr = e[11];
                if attr & 0x3f == ATTR_LFN {
                    let mut units = [0u16; 13];
                    for (i, at) in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
                        .iter()
                        .enumerate()
                    {
                        units[i] = u16_le(e, *at)?;
                    }
                    if lfn.len() < 20 {
                        lfn.push((e[13], e[0] & 0x1f, units));
                    }
                    continue;
                }
                if attr & ATTR_VOLUME != 0 {
                    lfn.clear();
                    continue;
                }
                let short = short_name(e);
                let sum = lfn_checksum(&e[0..11]);
                let mut name = short.clone();
                if !lfn.is_empty() && lfn.iter().all(|p| p.0 == sum) {
                    lfn.sort_by_key(|p| p.1);
                    let units: Vec<u16> = lfn
                        .iter()
                        .flat_map(|p| p.2)
                        .take_while(|&u| u != 0 && u != 0xffff)
                        .collect();
                    name = String::from_utf16_lossy(&units).into_bytes();
                }
                lfn.clear();
                if name == b"." || name == b".." {
                    continue;
                }
                if out.len() >= limit {
                    return Err(FsError::Limit(format!(
                        "directory has more than {limit} entries"
                    )));
                }
                out.push(DirEntry { name, inode: id });
            }
        }
        Ok(out)
    }

    fn read(&self, inode: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        if inode == ROOT {
            return Err(FsError::Unsupported("the root is a directory".into()));
        }
        let e = self.entry(inode)?;
        if e.attr & ATTR_DIR != 0 {
            return Err(FsError::Unsupported(format!(
                "entry at {inode} is a directory"
            )));
        }
        let size = u64::from(e.size);
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let want = (size - offset).min(buf.len() as u64);
        let last_cluster = (offset + want - 1) / self.cluster_size;
        let clusters = self.chain(e.cluster, last_cluster + 1)?;
        let mut done = 0u64;
        while done < want {
            let pos = offset + done;
            let ci = (pos / self.cluster_size) as usize;
            let within = pos % self.cluster_size;
            let Some(&c) = clusters.get(ci) else {
                return Err(corrupt("file is longer than its cluster chain"));
            };
            let n = (self.cluster_size - within).min(want - done);
            self.disk
                .read_at(c + within, &mut buf[done as usize..(done + n) as usize])?;
            done += n;
        }
        Ok(done as usize)
    }

    fn read_link(&self, _inode: InodeId) -> Result<Vec<u8>, FsError> {
        Err(FsError::Unsupported("FAT has no symbolic links".into()))
    }
}
