//! VHD export: a dynamic VHD, written strictly sequentially.
//!
//! Why dynamic, not fixed: a fixed VHD is the whole disk plus a footer, so
//! a 500 GiB disk holding 2 GiB would upload 500 GiB; a dynamic one stores
//! only the 2 MiB blocks holding data, and Hyper-V, qemu, Azure tooling and
//! VirtualBox all read it. The BAT is planned from the allocation map
//! before any data, so the file is written in order:
//!
//!   footer copy | dynamic header | BAT | blocks (bitmap + 2 MiB) | footer
//!
//! Every stored block has a full sector bitmap (all sectors present, as
//! qemu writes them); its unallocated or zero units are zeros (holes in a
//! file). Why creator application "win " (Hyper-V): readers size a VHD
//! either by its CHS geometry (Virtual PC; qemu for creators "vpc " and
//! "qemu") or by the footer's current size (Hyper-V; qemu for "win ",
//! "qem2", "d2v ", "tap", "CTXS"). CHS cannot express most sizes exactly,
//! so a geometry-sized reader would see a shorter disk; "win " makes Hyper-V
//! and qemu both read the exact current size. The geometry field is still
//! computed as the VHD specification (and qemu) do, for readers that show it.
//! Threat model: see `export`; every size derives from the virtual size.

use std::time::{SystemTime, UNIX_EPOCH};

use super::map::{AllocMap, UNIT};
use super::pipeline::{run, Out, Plain, Window};
use super::{ExportError, ExportOptions};
use crate::util::is_zero;
use crate::DiskImage;

const SECTOR: u64 = 512;
const BLOCK: u64 = 2 << 20;
const UNITS_PER_BLOCK: u64 = BLOCK / UNIT;
/// One bit per sector of a block.
const BITMAP: u64 = BLOCK / SECTOR / 8;
/// The format's largest disk (its 32-bit sector counts and the spec).
const MAX_SIZE: u64 = 2040 << 30;
/// Seconds from the Unix epoch to 2000-01-01, the VHD epoch.
const VHD_EPOCH: u64 = 946_684_800;
const HEADER_AT: u64 = 512;
const BAT_AT: u64 = 1536;

pub(super) fn write(
    disk: &dyn DiskImage,
    map: &AllocMap,
    out: &mut Out<'_>,
    opts: &ExportOptions,
) -> Result<u64, ExportError> {
    let size = map.virtual_size().div_ceil(SECTOR) * SECTOR;
    if size > MAX_SIZE {
        return Err(ExportError::Unsupported(format!(
            "VHD holds at most 2040 GiB; the disk has {size} bytes"
        )));
    }
    let blocks = size.div_ceil(BLOCK);
    let footer = footer(size, opts);
    out.write(&footer)?;
    out.write(&dynamic_header(blocks))?;
    let data_at = write_bat(map, blocks, out)?;
    debug_assert_eq!(out.pos(), data_at);
    let units = map.units();
    let read = run(disk, map, opts.workers, &|| Plain, &mut |w: &Window| {
        for (b, block) in w.data.chunks(BLOCK as usize).enumerate() {
            let index = w.start / BLOCK + b as u64;
            if allocated_block(map, index) {
                write_block(out, w, b, block, units - index * UNITS_PER_BLOCK)?;
            }
        }
        out.progress(w.start + w.len as u64)
    })?;
    out.write(&footer)?;
    Ok(read)
}

fn allocated_block(map: &AllocMap, b: u64) -> bool {
    let first = b * UNITS_PER_BLOCK;
    map.count(first, first + UNITS_PER_BLOCK) > 0
}

/// The BAT: each allocated block's bitmap sector, in order after the BAT.
/// Returns the offset of the first block.
fn write_bat(map: &AllocMap, blocks: u64, out: &mut Out<'_>) -> Result<u64, ExportError> {
    let bat_len = (blocks * 4).div_ceil(SECTOR) * SECTOR;
    let data_at = BAT_AT + bat_len;
    let mut next = data_at;
    let mut bat = Vec::with_capacity(bat_len as usize);
    for b in 0..blocks {
        let e = if allocated_block(map, b) {
            let sector = u32::try_from(next / SECTOR)
                .map_err(|_| ExportError::Unsupported("VHD block beyond 2 TiB".into()))?;
            next += BITMAP + BLOCK;
            sector
        } else {
            u32::MAX
        };
        bat.extend_from_slice(&e.to_be_bytes());
    }
    bat.resize(bat_len as usize, 0xff);
    out.write(&bat)?;
    Ok(data_at)
}

/// Block `b` of window `w` (`data` its bytes; `units_left` units of the
/// disk from its start): bitmap, then 2 MiB with zeros for holes.
fn write_block(
    out: &mut Out<'_>,
    w: &Window,
    b: usize,
    data: &[u8],
    units_left: u64,
) -> Result<(), ExportError> {
    out.write(&[0xff; BITMAP as usize])?;
    let mut written = 0u64;
    let mut run: Option<(usize, usize)> = None;
    for (k, unit) in data.chunks(UNIT as usize).enumerate() {
        let i = (b as u64 * UNITS_PER_BLOCK) as u32 + k as u32;
        if (k as u64) < units_left && w.allocated(i) && !is_zero(unit) {
            let from = k * UNIT as usize;
            run = Some(match run {
                Some((f, _)) => (f, from + unit.len()),
                None => (from, from + unit.len()),
            });
            continue;
        }
        if let Some((f, t)) = run.take() {
            out.write(&data[f..t])?;
            written += (t - f) as u64;
        }
        out.zeros(unit.len() as u64)?;
        written += unit.len() as u64;
    }
    if let Some((f, t)) = run {
        out.write(&data[f..t])?;
        written += (t - f) as u64;
    }
    // The last block of the disk is stored whole.
    out.zeros(BLOCK - written)
}

/// One's complement of the byte sum (the checksum field reads as zero).
fn checksum(b: &[u8]) -> u32 {
    !b.iter().fold(0u32, |s, &x| s.wrapping_add(u32::from(x)))
}

fn footer(size: u64, opts: &ExportOptions) -> [u8; 512] {
    let mut f = [0u8; 512];
    let mut put = |at: usize, v: &[u8]| f[at..at + v.len()].copy_from_slice(v);
    put(0, b"conectix");
    put(8, &2u32.to_be_bytes()); // features: reserved bit, always set
    put(12, &0x0001_0000u32.to_be_bytes());
    put(16, &HEADER_AT.to_be_bytes());
    let now = opts.created_unix.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    put(24, &(now.saturating_sub(VHD_EPOCH) as u32).to_be_bytes());
    put(28, b"win ");
    put(32, &0x000a_0000u32.to_be_bytes());
    put(36, b"Wi2k");
    put(40, &size.to_be_bytes());
    put(48, &size.to_be_bytes());
    let (c, h, s) = geometry(size / SECTOR);
    put(56, &c.to_be_bytes());
    put(58, &[h, s]);
    put(60, &3u32.to_be_bytes()); // dynamic
    put(68, &opts.disk_id());
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

fn dynamic_header(blocks: u64) -> [u8; 1024] {
    let mut d = [0u8; 1024];
    let mut put = |at: usize, v: &[u8]| d[at..at + v.len()].copy_from_slice(v);
    put(0, b"cxsparse");
    put(8, &u64::MAX.to_be_bytes());
    put(16, &BAT_AT.to_be_bytes());
    put(24, &0x0001_0000u32.to_be_bytes());
    put(28, &(blocks as u32).to_be_bytes());
    put(32, &(BLOCK as u32).to_be_bytes());
    let sum = checksum(&d);
    d[36..40].copy_from_slice(&sum.to_be_bytes());
    d
}

/// CHS geometry for `sectors`, as the VHD specification (appendix) and
/// qemu's `calculate_geometry` compute it.
fn geometry(sectors: u64) -> (u16, u8, u8) {
    let total = sectors.min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        (spt, heads, cth) = (s, h, c);
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_the_specification() {
        // qemu-img create -f vpc (creator "qemu") sizes, read back.
        assert_eq!(geometry(4 << 21), (8322, 16, 63));
        assert_eq!(geometry(20480), (301, 4, 17));
        assert_eq!(geometry(u64::MAX), (65535, 16, 255));
    }

    #[test]
    fn checksums_verify() {
        let f = footer(1 << 30, &ExportOptions::default());
        let mut z = f;
        z[64..68].fill(0);
        assert_eq!(crate::bytes::u32_be(&f, 64), Ok(checksum(&z)));
    }
}
