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

use crate::bytes::{u16_le, u32_le, u64_le};
use crate::{DiskImage, Extent, ExtentKind, Format, FormatError, ImageInfo, Limits, ReadAt};

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

/// Full inspection with every safety rule, then a reader of the guest disk.
pub fn open(src: Arc<dyn ReadAt>, limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    let file_len = src.len();
    let mut sig = [0u8; 8];
    read(&*src, 0, &mut sig, "the VHDX file identifier")?;
    if &sig != SIGNATURE {
        return Err(FormatError::Corrupt(
            "no \"vhdxfile\" identifier at offset 0".into(),
        ));
    }
    let mut notes = Vec::new();

    // Headers: the valid one with the higher sequence number is current.
    let mut headers: [Option<(u64, Vec<u8>)>; 2] = [None, None];
    for (slot, &at) in headers.iter_mut().zip(HEADER_OFFSETS.iter()) {
        let mut h = vec![0u8; HEADER_LEN];
        read(&*src, at, &mut h, "the VHDX headers")?;
        if &h[0..4] == b"head" && crc_ok(&h) {
            *slot = Some((u64_le(&h, 8)?, h));
        }
    }
    let header = match headers {
        [None, None] => {
            return Err(FormatError::Corrupt(
                "neither VHDX header has a valid signature and CRC-32C".into(),
            ))
        }
        [Some((_, h)), None] | [None, Some((_, h))] => h,
        [Some((s1, h1)), Some((s2, h2))] => {
            if s1 > s2 {
                h1
            } else if s2 > s1 {
                h2
            } else if h1 == h2 {
                h1
            } else {
                return Err(FormatError::Corrupt(
                    "the two VHDX headers differ but carry the same sequence number".into(),
                ));
            }
        }
    };
    let version = u16_le(&header, 66)?;
    if version != 1 {
        return Err(FormatError::Unsupported(format!(
            "VHDX header version {version}"
        )));
    }
    if header[48..64].iter().any(|&b| b != 0) {
        return Err(FormatError::Unsupported(
            "VHDX log not replayed: open and close the disk in Hyper-V, or run `qemu-img check -r all` on a trusted machine first".into(),
        ));
    }
    // File ranges in use, checked for overlaps once everything is known.
    let mut used: Vec<(u64, u64, Owner)> = vec![(0, MIB, Owner::Headers)];
    let log_len = u64::from(u32_le(&header, 68)?);
    let log_at = u64_le(&header, 72)?;
    if log_len != 0 {
        if !log_at.is_multiple_of(MIB) || !log_len.is_multiple_of(MIB) {
            return Err(FormatError::Corrupt(format!(
                "VHDX log ({log_len} bytes at {log_at}) is not 1 MiB aligned"
            )));
        }
        check_inside(log_at, log_len, file_len, "the VHDX log")?;
        used.push((log_at, log_at + log_len, Owner::Log));
    }

    // Region tables: the first valid one; a second valid one must agree.
    let mut tables: Vec<Vec<u8>> = Vec::with_capacity(2);
    for &at in &REGION_OFFSETS {
        let mut t = vec![0u8; REGION_TABLE_LEN];
        read(&*src, at, &mut t, "the VHDX region tables")?;
        if &t[0..4] == b"regi" && crc_ok(&t) {
            let count = u32_le(&t, 8)? as usize;
            if count > MAX_ENTRIES {
                return Err(FormatError::Corrupt(format!(
                    "VHDX region table claims {count} entries (at most {MAX_ENTRIES})"
                )));
            }
            t.truncate(16 + 32 * count);
            tables.push(t);
        }
    }
    let table = match tables.as_slice() {
        [] => {
            return Err(FormatError::Corrupt(
                "neither VHDX region table has a valid signature and CRC-32C".into(),
            ))
        }
        [t] => t,
        [a, b, ..] => {
            if a[8..] != b[8..] {
                return Err(FormatError::Corrupt(
                    "the two VHDX region tables are both valid but differ".into(),
                ));
            }
            a
        }
    };
    let mut bat_region = None;
    let mut meta_region = None;
    for (i, e) in table[16..].chunks_exact(32).enumerate() {
        let id: [u8; 16] = e[0..16].try_into().unwrap_or_default();
        let at = u64_le(e, 16)?;
        let len = u64::from(u32_le(e, 24)?);
        let required = u32_le(e, 28)? & 1 != 0;
        if !at.is_multiple_of(MIB) || !len.is_multiple_of(MIB) || len == 0 || at < MIB {
            return Err(FormatError::Corrupt(format!(
                "VHDX region {i} ({len} bytes at {at}) is not a 1 MiB aligned range after the headers"
            )));
        }
        check_inside(at, len, file_len, &format!("VHDX region {i}"))?;
        let slot = if id == BAT_GUID {
            &mut bat_region
        } else if id == METADATA_GUID {
            &mut meta_region
        } else if required {
            return Err(FormatError::Unsupported(format!(
                "VHDX region {} is required but unknown",
                guid_string(&id)
            )));
        } else {
            notes.push(format!(
                "vhdx unknown optional region {} ignored",
                guid_string(&id)
            ));
            used.push((at, at + len, Owner::Region(id)));
            continue;
        };
        if slot.replace((at, len)).is_some() {
            return Err(FormatError::Corrupt(format!(
                "VHDX region {} is listed twice",
                guid_string(&id)
            )));
        }
        used.push((at, at + len, Owner::Region(id)));
    }
    let (bat_at, bat_len) =
        bat_region.ok_or_else(|| FormatError::Corrupt("VHDX has no BAT region".into()))?;
    let (meta_at, meta_len) =
        meta_region.ok_or_else(|| FormatError::Corrupt("VHDX has no metadata region".into()))?;

    let meta = read_metadata(&*src, meta_at, meta_len)?;
    if meta.has_parent {
        return Err(FormatError::ExternalReference(
            "VHDX differencing disk (HasParent): its parent disk is never opened".into(),
        ));
    }
    let vsize = meta.virtual_size;
    if vsize > limits.max_virtual_size {
        return Err(FormatError::TooLarge(format!(
            "VHDX virtual size {vsize} bytes exceeds the limit of {} bytes",
            limits.max_virtual_size
        )));
    }
    if vsize == 0 || vsize > MAX_VHDX_SIZE || !vsize.is_multiple_of(u64::from(meta.logical_sector))
    {
        return Err(FormatError::Corrupt(format!(
            "VHDX virtual size {vsize} is not a non-zero multiple of the {}-byte logical sector up to 64 TiB",
            meta.logical_sector
        )));
    }
    let block_size = u64::from(meta.block_size);
    let chunk_ratio = ((1u64 << 23) * u64::from(meta.logical_sector)) / block_size;
    let data_blocks = vsize.div_ceil(block_size);
    let bat_entries = data_blocks + (data_blocks - 1) / chunk_ratio;
    let bat_bytes = bat_entries * 8;
    if bat_bytes > bat_len {
        return Err(FormatError::Corrupt(format!(
            "VHDX BAT region holds {bat_len} bytes but {bat_entries} entries are needed"
        )));
    }
    if bat_bytes > MAX_BAT_BYTES {
        return Err(FormatError::TooLarge(format!(
            "VHDX BAT of {bat_entries} entries exceeds the limit"
        )));
    }
    // Bounded by MAX_BAT_BYTES and inside the BAT region, itself inside the file.
    let mut raw = vec![0u8; bat_bytes as usize];
    read(&*src, bat_at, &mut raw, "the VHDX BAT")?;
    let mut blocks: Vec<u64> = Vec::with_capacity(data_blocks as usize);
    let mut present = 0u64;
    let mut claimed = 0u64;
    for (j, e) in raw.chunks_exact(8).enumerate() {
        let (j, e) = (j as u64, u64_le(e, 0)?);
        let state = e & 7;
        let at = e & BAT_OFFSET_MASK;
        if (j + 1).is_multiple_of(chunk_ratio + 1) {
            // A sector bitmap entry: only differencing disks use them.
            match state {
                SB_NOT_PRESENT => {}
                SB_PRESENT => {
                    if at == 0 {
                        return Err(FormatError::Corrupt(format!(
                            "VHDX sector bitmap entry {j} is present at offset 0"
                        )));
                    }
                    check_inside(at, MIB, file_len, &format!("VHDX sector bitmap block {j}"))?;
                    used.push((at, at + MIB, Owner::SectorBitmap(j)));
                }
                s => {
                    return Err(FormatError::Corrupt(format!(
                        "VHDX sector bitmap entry {j} has invalid state {s}"
                    )))
                }
            }
            continue;
        }
        let block = blocks.len() as u64;
        match state {
            PAYLOAD_NOT_PRESENT | PAYLOAD_UNDEFINED | PAYLOAD_ZERO | PAYLOAD_UNMAPPED => {
                blocks.push(0)
            }
            PAYLOAD_FULLY_PRESENT => {
                if at == 0 {
                    return Err(FormatError::Corrupt(format!(
                        "VHDX block {block} is present at offset 0"
                    )));
                }
                let len = block_size.min(vsize - block * block_size);
                check_inside(at, len, file_len, &format!("VHDX block {block}"))?;
                // Blocks that do not overlap fit in the file together:
                // refusing early keeps the range list as small as the file.
                claimed += len;
                if claimed > file_len {
                    return Err(FormatError::Corrupt(
                        "VHDX blocks claim more bytes than the file holds".into(),
                    ));
                }
                used.push((at, at + len, Owner::Block(block)));
                blocks.push(at);
                present += 1;
            }
            PAYLOAD_PARTIALLY_PRESENT => {
                return Err(FormatError::ExternalReference(format!(
                    "VHDX block {block} is partially present: only differencing disks use that, and their parents are never opened"
                )))
            }
            s => {
                return Err(FormatError::Corrupt(format!(
                    "VHDX block {block} has invalid state {s}"
                )))
            }
        }
    }
    drop(raw);
    used.sort_unstable_by_key(|r| r.0);
    for w in used.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(FormatError::Corrupt(format!(
                "VHDX: {} and {} share bytes of the file",
                w[0].2, w[1].2
            )));
        }
    }

    let subformat = if meta.leave_allocated {
        "fixed"
    } else {
        "dynamic"
    };
    notes.push(format!(
        "vhdx logical sector {} bytes, physical sector {} bytes",
        meta.logical_sector, meta.physical_sector
    ));
    notes.push(format!("vhdx {present} of {data_blocks} blocks present"));
    Ok(Box::new(Vhdx {
        src,
        info: ImageInfo {
            format: Format::Vhdx,
            subformat: Some(subformat.into()),
            virtual_size: vsize,
            file_size: file_len,
            cluster_size: Some(block_size),
            compression: None,
            notes,
        },
        block_size,
        blocks,
    }))
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

struct Metadata {
    block_size: u32,
    leave_allocated: bool,
    has_parent: bool,
    virtual_size: u64,
    logical_sector: u32,
    physical_sector: u32,
}

fn read_metadata(
    src: &dyn ReadAt,
    region_at: u64,
    region_len: u64,
) -> Result<Metadata, FormatError> {
    // Regions are at least 1 MiB, so the 64 KiB table is inside the file.
    let mut t = vec![0u8; METADATA_TABLE_LEN];
    read(src, region_at, &mut t, "the VHDX metadata table")?;
    if &t[0..8] != b"metadata" {
        return Err(FormatError::Corrupt(
            "VHDX metadata region lacks its \"metadata\" signature".into(),
        ));
    }
    let count = usize::from(u16_le(&t, 10)?);
    if count > MAX_ENTRIES {
        return Err(FormatError::Corrupt(format!(
            "VHDX metadata table claims {count} entries (at most {MAX_ENTRIES})"
        )));
    }
    let mut seen: Vec<([u8; 16], bool)> = Vec::with_capacity(count);
    let mut values: [Option<Vec<u8>>; 5] = Default::default();
    let known = [
        (FILE_PARAMETERS, 8usize, "file parameters"),
        (VIRTUAL_DISK_SIZE, 8, "virtual disk size"),
        (LOGICAL_SECTOR, 4, "logical sector size"),
        (PHYSICAL_SECTOR, 4, "physical sector size"),
        (PAGE_83, 16, "page 83 data"),
    ];
    for e in t[32..32 + 32 * count].chunks_exact(32) {
        let id: [u8; 16] = e[0..16].try_into().unwrap_or_default();
        let at = u64::from(u32_le(e, 16)?);
        let len = u64::from(u32_le(e, 20)?);
        let flags = u32_le(e, 24)?;
        let is_user = flags & 1 != 0;
        let required = flags & 4 != 0;
        if seen.contains(&(id, is_user)) {
            return Err(FormatError::Corrupt(format!(
                "VHDX metadata item {} is listed twice",
                guid_string(&id)
            )));
        }
        seen.push((id, is_user));
        if len != 0 && (at < KIB64 || at.checked_add(len).is_none_or(|end| end > region_len)) {
            return Err(FormatError::Corrupt(format!(
                "VHDX metadata item {} ({len} bytes at {at}) lies outside its region",
                guid_string(&id)
            )));
        }
        if id == PARENT_LOCATOR && !is_user {
            return Err(FormatError::ExternalReference(
                "VHDX parent locator: a differencing disk's parent is never opened".into(),
            ));
        }
        let Some(k) = known.iter().position(|k| k.0 == id && !is_user) else {
            if required {
                return Err(FormatError::Unsupported(format!(
                    "VHDX metadata item {} is required but unknown",
                    guid_string(&id)
                )));
            }
            continue;
        };
        let (_, want, name) = known[k];
        if len != want as u64 {
            return Err(FormatError::Corrupt(format!(
                "VHDX {name} metadata is {len} bytes, expected {want}"
            )));
        }
        let mut v = vec![0u8; want];
        read(src, region_at + at, &mut v, "VHDX metadata")?;
        values[k] = Some(v);
    }
    let [Some(fp), Some(vs), Some(ls), Some(ps), Some(_page83)] = values else {
        return Err(FormatError::Corrupt(
            "VHDX metadata lacks a required item (file parameters, virtual disk size, sector sizes, page 83 data)".into(),
        ));
    };
    let block_size = u32_le(&fp, 0)?;
    let flags = u32_le(&fp, 4)?;
    if !block_size.is_power_of_two() || !(MIB..=256 * MIB).contains(&u64::from(block_size)) {
        return Err(FormatError::Corrupt(format!(
            "VHDX block size {block_size} is not a power of two between 1 MiB and 256 MiB"
        )));
    }
    let logical_sector = u32_le(&ls, 0)?;
    let physical_sector = u32_le(&ps, 0)?;
    for (what, v) in [("logical", logical_sector), ("physical", physical_sector)] {
        if v != 512 && v != 4096 {
            return Err(FormatError::Corrupt(format!(
                "VHDX {what} sector size {v} (512 or 4096 expected)"
            )));
        }
    }
    Ok(Metadata {
        block_size,
        leave_allocated: flags & 1 != 0,
        has_parent: flags & 2 != 0,
        virtual_size: u64_le(&vs, 0)?,
        logical_sector,
        physical_sector,
    })
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
        let size = self.info.virtual_size;
        if offset >= size {
            return Err(out_of_range(offset, 1, size));
        }
        let limit = max_len.min(size - offset);
        let bs = self.block_size;
        let kind_of = |b: u64| {
            if self.block(b) != 0 {
                ExtentKind::Data
            } else {
                ExtentKind::Zero
            }
        };
        let first = offset / bs;
        let kind = kind_of(first);
        let mut end = (first + 1) * bs;
        let mut b = first + 1;
        while end < offset + limit && kind_of(b) == kind {
            end += bs;
            b += 1;
        }
        Ok(Extent {
            offset,
            len: (end - offset).min(limit),
            kind,
        })
    }

    fn read_guest(&self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let size = self.info.virtual_size;
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(out_of_range(offset, len, size));
        }
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

fn check_inside(start: u64, len: u64, file_len: u64, what: &str) -> Result<(), FormatError> {
    match start.checked_add(len) {
        Some(e) if e <= file_len => Ok(()),
        _ => Err(FormatError::Truncated(format!(
            "{what} ({len} bytes at offset {start}) lies beyond the end of the file ({file_len} bytes)"
        ))),
    }
}

fn out_of_range(offset: u64, len: u64, size: u64) -> FormatError {
    FormatError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("guest range {offset}+{len} is outside the {size}-byte disk"),
    ))
}

fn read(src: &dyn ReadAt, offset: u64, buf: &mut [u8], what: &str) -> Result<(), FormatError> {
    src.read_at(offset, buf)
        .map_err(|e| FormatError::from_read(e, what))
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
