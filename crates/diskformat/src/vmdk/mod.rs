//! VMDK reader: a single hosted sparse extent (`KDMV`) with its descriptor
//! embedded, created as `monolithicSparse` or `streamOptimized`.
//!
//! Everything else a VMDK can be (a text descriptor, flat or split extents,
//! VMFS, snapshots with a parent, several extents) makes the reader open
//! other files named by the image: CVE-2022-47951 is exactly that. Those are
//! refused after reading only the descriptor; no file name from the image is
//! ever used, and this module has no way to open anything but the one
//! `ReadAt` it is given.
//!
//! Guest data is mapped by a grain directory (GD) of grain tables (GT, 512
//! entries each). monolithicSparse grains are stored raw; streamOptimized
//! grains are deflate-compressed behind a 12-byte marker (LBA, size), and
//! the real GD may live in a footer at the end of the file (the header at 0
//! then says `GD_AT_END`). All GTs are checked once at open; reads load them
//! again through a small cache so memory does not grow with the disk.

use std::sync::{Arc, Mutex};

use flate2::{Decompress, FlushDecompress, Status};

mod descriptor;
mod open;

pub use open::open;

use crate::bytes::{u16_le, u32_le, u64_le};
use crate::util::{check_guest_range, check_inside, extent_limit, read_exact_at as read};
use crate::{DiskImage, Extent, ExtentKind, Format, FormatError, ImageInfo, Limits, ReadAt};

const MAGIC: &[u8; 4] = b"KDMV";
const TEXT_DESCRIPTOR: &[u8] = b"# Disk DescriptorFile";
const SECTOR: u64 = 512;
const HEADER_LEN: usize = 512;
const GD_AT_END: u64 = u64::MAX;
const MAX_DESCRIPTOR_SECTORS: u64 = 2048;
const GTES_PER_GT: u64 = 512;
const GT_BYTES: u64 = GTES_PER_GT * 4;
/// Grains above 1 MiB are refused: a grain is the unit of decompression
/// (one grain buffer per read). VMware and qemu always write 64 KiB.
const MAX_GRAIN_SECTORS: u64 = 2048;
/// Largest grain directory loaded into memory.
const MAX_GD_BYTES: u64 = 16 << 20;
const GT_CACHE_ENTRIES: usize = 64;

const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESS_DEFLATE: u16 = 1;
const MARKER_EOS: u32 = 0;
const MARKER_FOOTER: u32 = 3;
/// A grain table entry of 1 is a grain that reads as zeros.
const GTE_ZERO: u32 = 1;

/// Cheap signature check on the first and last (up to) 64 KiB of the file.
pub fn probe(head: &[u8], _tail: &[u8], _file_len: u64) -> bool {
    head.starts_with(MAGIC) || head.starts_with(TEXT_DESCRIPTOR)
}

/// The fields of a sparse extent header that the reader uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    version: u32,
    flags: u32,
    capacity: u64,
    grain_sectors: u64,
    descriptor_offset: u64,
    descriptor_sectors: u64,
    gtes_per_gt: u32,
    gd_offset: u64,
    compress_algorithm: u16,
}

impl Header {
    /// `None` when `b` does not start with a sparse header.
    fn parse(b: &[u8]) -> Result<Option<Header>, FormatError> {
        if !b.starts_with(MAGIC) || b.len() < 79 {
            return Ok(None);
        }
        Ok(Some(Header {
            version: u32_le(b, 4)?,
            flags: u32_le(b, 8)?,
            capacity: u64_le(b, 12)?,
            grain_sectors: u64_le(b, 20)?,
            descriptor_offset: u64_le(b, 28)?,
            descriptor_sectors: u64_le(b, 36)?,
            gtes_per_gt: u32_le(b, 44)?,
            gd_offset: u64_le(b, 56)?,
            compress_algorithm: u16_le(b, 77)?,
        }))
    }
}

type Gt = Arc<[u32]>;

struct Vmdk {
    src: Arc<dyn ReadAt>,
    info: ImageInfo,
    compressed: bool,
    grain_bytes: u64,
    n_grains: u64,
    /// Sector offset of each grain table, 0 when absent (all zero).
    gd: Vec<u32>,
    /// Recently used grain tables, most recent last.
    gts: Mutex<Vec<(u64, Gt)>>,
    /// The last decompressed grain (streamOptimized): readers often ask
    /// for less than a grain at a time.
    grain_cache: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl Vmdk {
    /// Loads (and so checks) every grain table; the grains allocated.
    fn count_allocated(&self, n_gts: u64) -> Result<u64, FormatError> {
        let mut allocated = 0u64;
        for t in 0..n_gts {
            if let Some(gt) = self.load_gt(t)? {
                let used = (self.n_grains - t * GTES_PER_GT).min(GTES_PER_GT) as usize;
                allocated += gt[..used].iter().filter(|&&e| e > GTE_ZERO).count() as u64;
            }
        }
        Ok(allocated)
    }

    /// Grain table `t`, validated, or `None` when the GD has no table.
    fn load_gt(&self, t: u64) -> Result<Option<Gt>, FormatError> {
        let Some(&gde) = usize::try_from(t).ok().and_then(|i| self.gd.get(i)) else {
            return Ok(None);
        };
        if gde == 0 {
            return Ok(None);
        }
        {
            let mut cache = self.gts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = cache.iter().position(|(k, _)| *k == t) {
                let hit = cache.remove(i);
                let gt = hit.1.clone();
                cache.push(hit);
                return Ok(Some(gt));
            }
        }
        let file_len = self.src.len();
        let at = u64::from(gde) * SECTOR;
        check_inside(at, GT_BYTES, file_len, &format!("VMDK grain table {t}"))?;
        let mut raw = [0u8; GT_BYTES as usize];
        read(&*self.src, at, &mut raw, "a VMDK grain table")?;
        let gt: Gt = raw
            .chunks_exact(4)
            .map(|c| u32_le(c, 0))
            .collect::<Result<_, _>>()?;
        // Entries past the last grain of the disk are never used.
        let used = (self.n_grains - t * GTES_PER_GT).min(GTES_PER_GT);
        for (i, &e) in gt.iter().take(used as usize).enumerate() {
            if e <= GTE_ZERO {
                continue;
            }
            let g = t * GTES_PER_GT + i as u64;
            let at = u64::from(e) * SECTOR;
            // A stored grain: raw data for the part of the grain inside the
            // disk, or at least a compressed grain's marker.
            let need = if self.compressed {
                12
            } else {
                self.grain_bytes
                    .min(self.info.virtual_size - g * self.grain_bytes)
            };
            check_inside(at, need, file_len, &format!("VMDK grain {g}"))?;
        }
        let mut cache = self.gts.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= GT_CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push((t, gt.clone()));
        Ok(Some(gt))
    }

    /// The grain table entry of grain `g` (0 when unallocated).
    fn gte(&self, g: u64) -> Result<u32, FormatError> {
        let gt = self.load_gt(g / GTES_PER_GT)?;
        Ok(gt.map_or(0, |gt| gt[(g % GTES_PER_GT) as usize]))
    }

    /// Grain `g` decompressed, from the one-grain cache or inflated into it.
    fn inflate_grain(&self, g: u64, gte: u32) -> Result<Arc<Vec<u8>>, FormatError> {
        if let Some(data) = self.cached_grain(g) {
            return Ok(data);
        }
        let mut out = vec![0u8; self.grain_bytes as usize];
        self.inflate_into(g, gte, &mut out)?;
        let data = Arc::new(out);
        *self.grain_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((g, data.clone()));
        Ok(data)
    }

    fn cached_grain(&self, g: u64) -> Option<Arc<Vec<u8>>> {
        let cache = self.grain_cache.lock().unwrap_or_else(|p| p.into_inner());
        match &*cache {
            Some((k, data)) if *k == g => Some(data.clone()),
            _ => None,
        }
    }

    /// Decompresses grain `g`, stored behind the marker at sector `gte`,
    /// into `out` (exactly one grain long; what the stream does not cover
    /// reads as zeros).
    fn inflate_into(&self, g: u64, gte: u32, out: &mut [u8]) -> Result<(), FormatError> {
        let at = u64::from(gte) * SECTOR;
        let mut marker = [0u8; 12];
        read(&*self.src, at, &mut marker, "a VMDK grain marker")?;
        let lba = u64_le(&marker, 0)?;
        let size = u64::from(u32_le(&marker, 8)?);
        let grain_sectors = self.grain_bytes / SECTOR;
        if g.checked_mul(grain_sectors) != Some(lba) {
            return Err(FormatError::Corrupt(format!(
                "VMDK grain {g} is stored with the marker of sector {lba}"
            )));
        }
        // Deflate grows incompressible input by a few bytes per 16 KiB block;
        // anything far beyond that is not a grain.
        let max_size = self.grain_bytes + self.grain_bytes / 16 + 4096;
        if size == 0 || size > max_size {
            return Err(FormatError::Corrupt(format!(
                "VMDK grain {g} claims {size} compressed bytes"
            )));
        }
        check_inside(
            at + 12,
            size,
            self.src.len(),
            &format!("VMDK compressed grain {g}"),
        )?;
        let mut input = vec![0u8; size as usize];
        read(&*self.src, at + 12, &mut input, "a VMDK compressed grain")?;
        // qemu and VMware write zlib streams; accept bare deflate as well.
        let zlib = input.len() >= 2
            && input[0] & 0x0f == 8
            && input[0] >> 4 <= 7
            && (u16::from(input[0]) << 8 | u16::from(input[1])).is_multiple_of(31);
        let mut z = Decompress::new(zlib);
        // The output slice is the bound: inflating cannot write past it.
        let status = z
            .decompress(&input, out, FlushDecompress::Finish)
            .map_err(|e| FormatError::Corrupt(format!("VMDK grain {g} does not inflate: {e}")))?;
        if status != Status::StreamEnd {
            // Either the output is full and more would follow (a grain
            // inflating past its size), or the input ended early.
            return Err(FormatError::Corrupt(format!(
                "VMDK grain {g} does not inflate to at most one grain"
            )));
        }
        let produced = z.total_out();
        let needed = self
            .grain_bytes
            .min(self.info.virtual_size - g * self.grain_bytes);
        if produced < needed {
            return Err(FormatError::Corrupt(format!(
                "VMDK grain {g} inflates to {produced} bytes, {needed} expected"
            )));
        }
        out[produced as usize..].fill(0);
        Ok(())
    }
}

impl DiskImage for Vmdk {
    fn info(&self) -> &ImageInfo {
        &self.info
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        let end_limit = offset + extent_limit(offset, max_len, self.info.virtual_size)?;
        let gb = self.grain_bytes;
        let kind_of = |e: u32| {
            if e > GTE_ZERO {
                ExtentKind::Data
            } else {
                ExtentKind::Zero
            }
        };
        let mut g = offset / gb;
        let kind = kind_of(self.gte(g)?);
        let mut end = (g + 1) * gb;
        g += 1;
        while end < end_limit {
            // A missing grain table is 512 zero grains at once.
            if kind == ExtentKind::Zero && g.is_multiple_of(GTES_PER_GT) {
                let t = g / GTES_PER_GT;
                if self.gd.get(t as usize).is_some_and(|&e| e == 0) {
                    end += gb * GTES_PER_GT;
                    g += GTES_PER_GT;
                    continue;
                }
            }
            if kind_of(self.gte(g)?) != kind {
                break;
            }
            end += gb;
            g += 1;
        }
        Ok(Extent {
            offset,
            len: end.min(end_limit) - offset,
            kind,
        })
    }

    fn read_guest(&self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let len = buf.len() as u64;
        check_guest_range(offset, len, self.info.virtual_size)?;
        let gb = self.grain_bytes;
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let g = pos / gb;
            let within = pos % gb;
            let e = self.gte(g)?;
            let mut run = (gb - within).min(len - done);
            if e <= GTE_ZERO {
                buf[done as usize..(done + run) as usize].fill(0);
            } else if self.compressed && run == gb && self.cached_grain(g).is_none() {
                // A whole grain asked for: inflate straight into the caller's
                // buffer, no copy and no cache churn.
                self.inflate_into(g, e, &mut buf[done as usize..(done + run) as usize])?;
            } else if self.compressed {
                let data = self.inflate_grain(g, e)?;
                let from = within as usize;
                buf[done as usize..(done + run) as usize]
                    .copy_from_slice(&data[from..from + run as usize]);
            } else {
                // Raw grains often follow each other in the file: one read.
                let at = u64::from(e) * SECTOR;
                let mut next = g + 1;
                while done + run < len {
                    let n = self.gte(next)?;
                    if n <= GTE_ZERO || u64::from(n) * SECTOR != at + (next - g) * gb {
                        break;
                    }
                    run += gb.min(len - done - run);
                    next += 1;
                }
                read(
                    &*self.src,
                    at + within,
                    &mut buf[done as usize..(done + run) as usize],
                    "VMDK grain data",
                )?;
            }
            done += run;
        }
        Ok(())
    }
}

fn sectors_to_bytes(sectors: u64, what: &str) -> Result<u64, FormatError> {
    sectors
        .checked_mul(SECTOR)
        .ok_or_else(|| FormatError::Corrupt(format!("{what} overflows")))
}
