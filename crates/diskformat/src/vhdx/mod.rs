//! VHDX (Microsoft Virtual Hard Disk v2) reader: fixed and dynamic disks.
//!
//! Layout: the `vhdxfile` identifier at 0, two 4 KiB headers (64 KiB, 128 KiB)
//! and two 64 KiB region tables (192 KiB, 256 KiB), all CRC-32C protected;
//! the region table locates the block allocation table (BAT) and the
//! metadata region (block size, virtual size, sector sizes, parent flag).
//! Fixed and dynamic disks both map guest blocks through the BAT.
//!
//! Refused: differencing disks (HasParent, parent locator, partially present
//! blocks), a log that still needs replaying, unknown required regions or
//! metadata items. Everything the BAT points at is checked at open to lie
//! inside the file, 1 MiB aligned, without overlaps; the BAT is bounded by
//! the virtual size (itself bounded by the limits) and by the file.

use std::sync::Arc;

mod metadata;
mod open;

pub use open::open;

use crate::bytes::{u16_le, u32_le, u64_le};
use crate::util::{
    block_extent, check_guest_range, check_inside, extent_limit, read_exact_at as read,
};
use crate::{DiskImage, Extent, Format, FormatError, ImageInfo, Limits, ReadAt};

const MIB: u64 = 1 << 20;
const KIB64: u64 = 64 << 10;
const SIGNATURE: &[u8; 8] = b"vhdxfile";
const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
const HEADER_LEN: usize = 4096;
const REGION_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
const REGION_TABLE_LEN: usize = 64 << 10;
const METADATA_TABLE_LEN: usize = 64 << 10;
const MAX_ENTRIES: usize = 2047;
/// Largest BAT loaded into memory: 2 Mi entries, 2 TiB at 1 MiB blocks and
/// 64 TiB (the format's limit) at 32 MiB blocks.
const MAX_BAT_BYTES: u64 = 16 << 20;
/// The specification's maximum virtual disk size.
const MAX_VHDX_SIZE: u64 = 64 << 40;

const BAT_GUID: [u8; 16] = guid("2DC27766-F623-4200-9D64-115E9BFD4A08");
const METADATA_GUID: [u8; 16] = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E");
const FILE_PARAMETERS: [u8; 16] = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const VIRTUAL_DISK_SIZE: [u8; 16] = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const PAGE_83: [u8; 16] = guid("BECA12AB-B2E6-4523-93EF-C309E000C746");
const LOGICAL_SECTOR: [u8; 16] = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
const PHYSICAL_SECTOR: [u8; 16] = guid("CDA348C7-445D-4471-9CC9-E9885251C556");
const PARENT_LOCATOR: [u8; 16] = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");

// BAT entry states (low 3 bits).
const PAYLOAD_NOT_PRESENT: u64 = 0;
const PAYLOAD_UNDEFINED: u64 = 1;
const PAYLOAD_ZERO: u64 = 2;
const PAYLOAD_UNMAPPED: u64 = 3;
const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;
const SB_NOT_PRESENT: u64 = 0;
const SB_PRESENT: u64 = 6;
const BAT_OFFSET_MASK: u64 = !(MIB - 1);

/// Cheap signature check on the first and last (up to) 64 KiB of the file.
pub fn probe(head: &[u8], _tail: &[u8], _file_len: u64) -> bool {
    head.starts_with(SIGNATURE)
}

/// What a range of the file holds, for overlap messages.
enum Owner {
    Headers,
    Log,
    Region([u8; 16]),
    SectorBitmap(u64),
    Block(u64),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Headers => f.write_str("the headers"),
            Owner::Log => f.write_str("the log"),
            Owner::Region(id) => write!(f, "region {}", guid_string(id)),
            Owner::SectorBitmap(j) => write!(f, "sector bitmap entry {j}"),
            Owner::Block(b) => write!(f, "block {b}"),
        }
    }
}

struct Vhdx {
    src: Arc<dyn ReadAt>,
    info: ImageInfo,
    block_size: u64,
    /// File offset of each payload block's data, 0 when it reads as zeros.
    /// Validated at open: inside the file, aligned, no overlaps.
    blocks: Vec<u64>,
}

impl Vhdx {
    fn block(&self, b: u64) -> u64 {
        usize::try_from(b)
            .ok()
            .and_then(|b| self.blocks.get(b))
            .copied()
            .unwrap_or(0)
    }
}

impl DiskImage for Vhdx {
    fn info(&self) -> &ImageInfo {
        &self.info
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        let limit = extent_limit(offset, max_len, self.info.virtual_size)?;
        Ok(block_extent(offset, limit, self.block_size, |b| {
            self.block(b) != 0
        }))
    }

    fn read_guest(&self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let len = buf.len() as u64;
        check_guest_range(offset, len, self.info.virtual_size)?;
        let bs = self.block_size;
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let b = pos / bs;
            let within = pos % bs;
            let at = self.block(b);
            // Extend the run over following blocks that continue it: the
            // same kind and, for data, the next bytes of the file.
            let mut run = (bs - within).min(len - done);
            let mut next = b + 1;
            while done + run < len {
                let n = self.block(next);
                let continues = if at == 0 {
                    n == 0
                } else {
                    n != 0 && n == at + (next - b) * bs
                };
                if !continues {
                    break;
                }
                run += bs.min(len - done - run);
                next += 1;
            }
            let out = &mut buf[done as usize..(done + run) as usize];
            if at == 0 {
                out.fill(0);
            } else {
                read(&*self.src, at + within, out, "a VHDX block")?;
            }
            done += run;
        }
        Ok(())
    }
}

fn crc_ok(block: &[u8]) -> bool {
    // Too short to hold its checksum: not a valid block.
    let Ok(stored) = u32_le(block, 4) else {
        return false;
    };
    let crc = crc32c::crc32c(&block[0..4]);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4]);
    crc32c::crc32c_append(crc, &block[8..]) == stored
}

/// A GUID in its on-disk byte order (first three fields little-endian).
const fn guid(s: &str) -> [u8; 16] {
    const fn hex(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not a hex digit"),
        }
    }
    let s = s.as_bytes();
    let mut text = [0u8; 16];
    let (mut i, mut n) = (0, 0);
    while i < s.len() {
        if s[i] != b'-' {
            text[n / 2] |= hex(s[i]) << if n.is_multiple_of(2) { 4 } else { 0 };
            n += 1;
        }
        i += 1;
    }
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = [0u8; 16];
    let mut k = 0;
    while k < 16 {
        out[k] = text[order[k]];
        k += 1;
    }
    out
}

fn guid_string(b: &[u8; 16]) -> String {
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut s = String::with_capacity(36);
    for (k, &i) in order.iter().enumerate() {
        if matches!(k, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{:02X}", b[i]));
    }
    s
}
