//! VHD ("vpc", Microsoft Virtual Hard Disk 1.0) reader: fixed and dynamic disks.
//!
//! A VHD is identified by its 512-byte `conectix` footer at the very end of
//! the file. A fixed disk is the guest bytes followed by that footer; a
//! dynamic disk starts with a copy of the footer, has a `cxsparse` header and
//! a block allocation table (BAT) whose entries point at blocks, each a
//! sector bitmap followed by the block's data. Differencing disks (type 4)
//! name a parent file and are refused before anything else is read.
//!
//! Every table is bounded by the virtual size (itself bounded by the
//! limits) and must lie inside the file before it is read; blocks are
//! checked for overlap once, at open, so reads need no further checks.

use std::sync::Arc;

use crate::bytes::{u32_be, u64_be};
use crate::util::{block_extent, check_guest_range, extent_limit, read_exact_at as read};
use crate::{DiskImage, Extent, Format, FormatError, ImageInfo, Limits, ReadAt};

const FOOTER_LEN: u64 = 512;
const DYN_HEADER_LEN: usize = 1024;
const COOKIE: &[u8; 8] = b"conectix";
const DYN_COOKIE: &[u8; 8] = b"cxsparse";
const VERSION_1_0: u32 = 0x0001_0000;
const BAT_UNALLOCATED: u32 = 0xffff_ffff;
const SECTOR: u64 = 512;
/// Largest block size accepted. Virtual PC and Hyper-V use 512 KiB or 2 MiB.
const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Largest BAT loaded into memory: 1 Mi entries, 2 TiB at 2 MiB blocks
/// (the format's own limit is 2040 GiB) and 500 GiB at 512 KiB blocks.
const MAX_BAT_BYTES: u64 = 4 << 20;

const DISK_FIXED: u32 = 2;
const DISK_DYNAMIC: u32 = 3;
const DISK_DIFFERENCING: u32 = 4;

/// Cheap signature check on the first and last (up to) 64 KiB of the file.
pub fn probe(head: &[u8], tail: &[u8], file_len: u64) -> bool {
    if file_len < FOOTER_LEN {
        return false;
    }
    // A dynamic disk also has the footer copy at offset 0; a fixed one only
    // at the end (its head is guest data).
    let at_end = tail.len() >= FOOTER_LEN as usize
        && tail[tail.len() - FOOTER_LEN as usize..].starts_with(COOKIE);
    at_end || head.starts_with(COOKIE)
}

/// Full inspection with every safety rule, then a reader of the guest disk.
pub fn open(src: Arc<dyn ReadAt>, limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    let file_len = src.len();
    let footer = read_footer(&*src)?;
    let (disk_type, virtual_size) = check_footer(&footer, limits)?;
    let footer_at = file_len - FOOTER_LEN;
    let mut info = ImageInfo {
        format: Format::Vhd,
        subformat: None,
        virtual_size,
        file_size: file_len,
        cluster_size: None,
        compression: None,
        notes: footer_notes(&footer, virtual_size)?,
    };

    if disk_type == DISK_FIXED {
        if virtual_size > footer_at {
            return Err(FormatError::Truncated(format!(
                "fixed VHD declares {virtual_size} bytes of data but the file holds {footer_at}"
            )));
        }
        info.subformat = Some("fixed".into());
        return Ok(Box::new(Vhd {
            src,
            info,
            layout: Layout::Fixed,
        }));
    }

    let dynamic = read_dynamic_header(&*src, &footer, virtual_size)?;
    let bat = read_bat(&*src, &dynamic)?;
    // One bit per sector, padded to whole sectors.
    let bitmap_len = (dynamic.block_size / SECTOR).div_ceil(8).div_ceil(SECTOR) * SECTOR;
    let allocated = check_blocks(&dynamic, &bat, bitmap_len, virtual_size)?;
    info.subformat = Some("dynamic".into());
    info.cluster_size = Some(dynamic.block_size);
    info.notes.push(format!(
        "vhd {allocated} of {} blocks allocated",
        dynamic.blocks
    ));
    Ok(Box::new(Vhd {
        src,
        info,
        layout: Layout::Dynamic {
            block_size: dynamic.block_size,
            bitmap_len,
            bat,
        },
    }))
}

/// The footer in the last 512 bytes, its cookie and checksum checked.
fn read_footer(src: &dyn ReadAt) -> Result<[u8; FOOTER_LEN as usize], FormatError> {
    let file_len = src.len();
    if file_len < FOOTER_LEN {
        return Err(FormatError::Truncated(
            "a VHD needs at least its 512-byte footer".into(),
        ));
    }
    let mut footer = [0u8; FOOTER_LEN as usize];
    read(src, file_len - FOOTER_LEN, &mut footer, "the VHD footer")?;
    if !footer.starts_with(COOKIE) {
        return Err(FormatError::Corrupt(
            "no VHD footer (\"conectix\") in the last 512 bytes".into(),
        ));
    }
    let stored = u32_be(&footer, 64)?;
    let computed = checksum(&footer, 64);
    if stored != computed {
        return Err(FormatError::Corrupt(format!(
            "VHD footer checksum {stored:#010x} does not match its content ({computed:#010x})"
        )));
    }
    Ok(footer)
}

/// The footer's version, disk type (fixed or dynamic; a differencing disk
/// names a parent and is refused) and virtual size, within the limits.
fn check_footer(footer: &[u8], limits: &Limits) -> Result<(u32, u64), FormatError> {
    let version = u32_be(footer, 12)?;
    if version != VERSION_1_0 {
        return Err(FormatError::Unsupported(format!(
            "VHD file format version {version:#010x} (only 1.0 is known)"
        )));
    }
    let disk_type = u32_be(footer, 60)?;
    match disk_type {
        DISK_FIXED | DISK_DYNAMIC => {}
        DISK_DIFFERENCING => {
            return Err(FormatError::ExternalReference(
                "VHD differencing disk: its parent disk is never opened".into(),
            ))
        }
        other => {
            return Err(FormatError::Unsupported(format!(
                "VHD disk type {other} (only fixed (2) and dynamic (3) are imported)"
            )))
        }
    }
    let virtual_size = u64_be(footer, 48)?;
    if virtual_size > limits.max_virtual_size {
        return Err(FormatError::TooLarge(format!(
            "VHD virtual size {virtual_size} bytes exceeds the limit of {} bytes",
            limits.max_virtual_size
        )));
    }
    if !virtual_size.is_multiple_of(SECTOR) {
        return Err(FormatError::Corrupt(format!(
            "VHD current size {virtual_size} is not a whole number of sectors"
        )));
    }
    Ok((disk_type, virtual_size))
}

/// What the footer says about where the disk was made.
fn footer_notes(footer: &[u8], virtual_size: u64) -> Result<Vec<String>, FormatError> {
    let mut notes = Vec::new();
    let creator = String::from_utf8_lossy(&footer[28..32])
        .trim_end_matches(['\0', ' '])
        .to_string();
    if !creator.is_empty() {
        notes.push(format!(
            "vhd creator application \"{}\"",
            creator.escape_default()
        ));
    }
    // Virtual PC sizes a disk by its CHS geometry, Hyper-V and qemu
    // (force_size) by the current size: say so when the two disagree.
    let geometry = u32_be(footer, 56)?;
    let chs_size = u64::from(geometry >> 16)
        * u64::from((geometry >> 8) & 0xff)
        * u64::from(geometry & 0xff)
        * SECTOR;
    if chs_size != virtual_size {
        notes.push(format!(
            "vhd CHS geometry gives {chs_size} bytes; the footer's current size {virtual_size} is used"
        ));
    }
    Ok(notes)
}

/// A dynamic disk's header, checked: where it and the block table are, and
/// the block geometry.
struct DynamicHeader {
    /// Offset of the dynamic header itself.
    at: u64,
    bat_at: u64,
    block_size: u64,
    /// Blocks the virtual size needs (the table's entries that are used).
    blocks: u64,
    /// Where the footer is: nothing of the disk may reach into it.
    footer_at: u64,
}

fn read_dynamic_header(
    src: &dyn ReadAt,
    footer: &[u8; FOOTER_LEN as usize],
    virtual_size: u64,
) -> Result<DynamicHeader, FormatError> {
    let footer_at = src.len() - FOOTER_LEN;
    // The copy of the footer at offset 0 must be the same footer.
    let mut copy = [0u8; FOOTER_LEN as usize];
    read(src, 0, &mut copy, "the VHD footer copy")?;
    if &copy != footer {
        return Err(FormatError::Corrupt(
            "dynamic VHD: the footer copy at offset 0 differs from the footer at the end".into(),
        ));
    }
    let at = u64_be(footer, 16)?;
    if at < FOOTER_LEN || !at.is_multiple_of(SECTOR) {
        return Err(FormatError::Corrupt(format!(
            "dynamic VHD header offset {at} is not a sector after the footer copy"
        )));
    }
    check_inside(
        at,
        DYN_HEADER_LEN as u64,
        footer_at,
        "the dynamic VHD header",
    )?;
    let mut dh = [0u8; DYN_HEADER_LEN];
    read(src, at, &mut dh, "the dynamic VHD header")?;
    if !dh.starts_with(DYN_COOKIE) {
        return Err(FormatError::Corrupt(
            "dynamic VHD header lacks its \"cxsparse\" cookie".into(),
        ));
    }
    let stored = u32_be(&dh, 36)?;
    let computed = checksum(&dh, 36);
    if stored != computed {
        return Err(FormatError::Corrupt(format!(
            "dynamic VHD header checksum {stored:#010x} does not match its content ({computed:#010x})"
        )));
    }
    let hversion = u32_be(&dh, 24)?;
    if hversion != VERSION_1_0 {
        return Err(FormatError::Unsupported(format!(
            "dynamic VHD header version {hversion:#010x} (only 1.0 is known)"
        )));
    }
    let bat_at = u64_be(&dh, 16)?;
    let max_entries = u64::from(u32_be(&dh, 28)?);
    let block_size = u32_be(&dh, 32)?;
    if !block_size.is_power_of_two()
        || u64::from(block_size) < SECTOR
        || block_size > MAX_BLOCK_SIZE
    {
        return Err(FormatError::Corrupt(format!(
            "dynamic VHD block size {block_size} is not a power of two between 512 bytes and 256 MiB"
        )));
    }
    let block_size = u64::from(block_size);
    let blocks = virtual_size.div_ceil(block_size);
    if max_entries < blocks {
        return Err(FormatError::Corrupt(format!(
            "dynamic VHD table has {max_entries} entries but {blocks} blocks of {block_size} bytes are needed for {virtual_size} bytes"
        )));
    }
    Ok(DynamicHeader {
        at,
        bat_at,
        block_size,
        blocks,
        footer_at,
    })
}

/// The block table's used entries, bounded by [`MAX_BAT_BYTES`] and inside
/// the file.
fn read_bat(src: &dyn ReadAt, h: &DynamicHeader) -> Result<Vec<u32>, FormatError> {
    let bat_bytes = h.blocks * 4;
    if bat_bytes > MAX_BAT_BYTES {
        return Err(FormatError::TooLarge(format!(
            "dynamic VHD block table of {} entries exceeds the limit",
            h.blocks
        )));
    }
    if !h.bat_at.is_multiple_of(SECTOR) {
        return Err(FormatError::Corrupt(format!(
            "dynamic VHD block table offset {} is not sector aligned",
            h.bat_at
        )));
    }
    check_inside(
        h.bat_at,
        bat_bytes,
        h.footer_at,
        "the dynamic VHD block table",
    )?;
    // Bounded by the virtual size (≤ limit) and MAX_BAT_BYTES, and the file
    // holds that many bytes.
    let mut raw = vec![0u8; bat_bytes as usize];
    read(src, h.bat_at, &mut raw, "the dynamic VHD block table")?;
    let bat = raw
        .chunks_exact(4)
        .map(|c| u32_be(c, 0))
        .collect::<Result<_, _>>()?;
    Ok(bat)
}

/// Proves that every allocated block lies inside the file and shares no
/// byte with another block or with the metadata; the blocks allocated.
fn check_blocks(
    h: &DynamicHeader,
    bat: &[u32],
    bitmap_len: u64,
    virtual_size: u64,
) -> Result<u64, FormatError> {
    let mut ranges: Vec<(u64, u64, Owner)> = vec![
        (0, FOOTER_LEN, Owner::Meta("the footer copy")),
        (
            h.at,
            h.at + DYN_HEADER_LEN as u64,
            Owner::Meta("the dynamic header"),
        ),
        (
            h.bat_at,
            h.bat_at + h.blocks * 4,
            Owner::Meta("the block table"),
        ),
    ];
    let mut allocated = 0u64;
    let mut claimed = 0u64;
    for (i, &e) in bat.iter().enumerate() {
        if e == BAT_UNALLOCATED {
            continue;
        }
        allocated += 1;
        let i = i as u64;
        let start = u64::from(e) * SECTOR;
        let data_len = h.block_size.min(virtual_size - i * h.block_size);
        let len = bitmap_len + data_len;
        check_inside(start, len, h.footer_at, &format!("dynamic VHD block {i}"))?;
        // Blocks that do not overlap fit in the file together: refusing
        // early keeps the range list as small as the file.
        claimed += len;
        if claimed > h.footer_at {
            return Err(FormatError::Corrupt(
                "dynamic VHD blocks claim more bytes than the file holds".into(),
            ));
        }
        ranges.push((start, start + len, Owner::Block(i)));
    }
    check_overlaps(&mut ranges)?;
    Ok(allocated)
}

#[derive(Clone, Copy)]
enum Owner {
    Meta(&'static str),
    Block(u64),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Meta(s) => f.write_str(s),
            Owner::Block(i) => write!(f, "block {i}"),
        }
    }
}

fn check_overlaps(ranges: &mut [(u64, u64, Owner)]) -> Result<(), FormatError> {
    ranges.sort_unstable_by_key(|r| r.0);
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(FormatError::Corrupt(format!(
                "dynamic VHD: {} and {} share bytes of the file",
                w[0].2, w[1].2
            )));
        }
    }
    Ok(())
}

fn check_inside(start: u64, len: u64, end: u64, what: &str) -> Result<(), FormatError> {
    match start.checked_add(len) {
        Some(e) if e <= end => Ok(()),
        _ => Err(FormatError::Truncated(format!(
            "{what} ({len} bytes at offset {start}) lies beyond the data area of the file ({end} bytes)"
        ))),
    }
}

enum Layout {
    Fixed,
    Dynamic {
        block_size: u64,
        bitmap_len: u64,
        /// Sector offset of each block's bitmap, or `BAT_UNALLOCATED`.
        /// Validated at open: inside the file, no overlaps.
        bat: Vec<u32>,
    },
}

struct Vhd {
    src: Arc<dyn ReadAt>,
    info: ImageInfo,
    layout: Layout,
}

impl Vhd {
    /// File offset where block `block`'s data starts, if allocated (a fixed
    /// disk is one block at offset 0).
    fn block_data(&self, block: u64) -> Option<u64> {
        match &self.layout {
            Layout::Fixed => Some(0),
            Layout::Dynamic {
                bitmap_len, bat, ..
            } => {
                let e = *bat.get(usize::try_from(block).ok()?)?;
                (e != BAT_UNALLOCATED).then(|| u64::from(e) * SECTOR + bitmap_len)
            }
        }
    }
}

impl DiskImage for Vhd {
    fn info(&self) -> &ImageInfo {
        &self.info
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        let limit = extent_limit(offset, max_len, self.info.virtual_size)?;
        let block_size = match &self.layout {
            // The guest bytes are the file's first bytes.
            Layout::Fixed => return Ok(crate::raw::hinted_extent(&*self.src, offset, limit)?),
            Layout::Dynamic { block_size, .. } => *block_size,
        };
        Ok(block_extent(offset, limit, block_size, |b| {
            self.block_data(b).is_some()
        }))
    }

    fn read_guest(&self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let len = buf.len() as u64;
        check_guest_range(offset, len, self.info.virtual_size)?;
        let block_size = match &self.layout {
            Layout::Fixed => return read(&*self.src, offset, buf, "VHD data"),
            Layout::Dynamic { block_size, .. } => *block_size,
        };
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / block_size;
            let within = pos % block_size;
            let n = (block_size - within).min((buf.len() - done) as u64) as usize;
            let out = &mut buf[done..done + n];
            match self.block_data(block) {
                Some(data) => read(&*self.src, data + within, out, "a dynamic VHD block")?,
                None => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }
}

/// One's complement of the byte sum, the checksum field counted as zero.
fn checksum(bytes: &[u8], field: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}
