//! Opening a VHDX: the current header, the region table, the metadata, the
//! BAT; every range they name checked against the file, and against each
//! other for overlaps, before a reader is returned.

use std::sync::Arc;

use super::metadata::{read_metadata, Metadata};
use super::*;

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
    // File ranges in use, checked for overlaps once everything is known.
    let mut used = FileUse(vec![(0, MIB, Owner::Headers)]);
    let header = current_header(&*src)?;
    check_header(&header, file_len, &mut used)?;
    let table = region_table(&*src)?;
    let regions = regions(&table, file_len, &mut used, &mut notes)?;

    let meta = read_metadata(&*src, regions.meta.0, regions.meta.1)?;
    if meta.has_parent {
        return Err(FormatError::ExternalReference(
            "VHDX differencing disk (HasParent): its parent disk is never opened".into(),
        ));
    }
    let vsize = check_virtual_size(&meta, limits)?;
    let block_size = u64::from(meta.block_size);
    let bat = Bat {
        at: regions.bat.0,
        len: regions.bat.1,
        block_size,
        chunk_ratio: ((1u64 << 23) * u64::from(meta.logical_sector)) / block_size,
        virtual_size: vsize,
        file_len,
    };
    let (blocks, present) = bat.read(&*src, &mut used)?;
    used.check_overlaps()?;

    let subformat = if meta.leave_allocated {
        "fixed"
    } else {
        "dynamic"
    };
    notes.push(format!(
        "vhdx logical sector {} bytes, physical sector {} bytes",
        meta.logical_sector, meta.physical_sector
    ));
    notes.push(format!(
        "vhdx {present} of {} blocks present",
        bat.data_blocks()
    ));
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

/// The ranges of the file that hold something, and what.
struct FileUse(Vec<(u64, u64, Owner)>);

impl FileUse {
    fn add(&mut self, at: u64, len: u64, owner: Owner) {
        self.0.push((at, at + len, owner));
    }

    /// No two ranges share a byte.
    fn check_overlaps(&mut self) -> Result<(), FormatError> {
        self.0.sort_unstable_by_key(|r| r.0);
        for w in self.0.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(FormatError::Corrupt(format!(
                    "VHDX: {} and {} share bytes of the file",
                    w[0].2, w[1].2
                )));
            }
        }
        Ok(())
    }
}

/// Of the two headers, the valid one with the higher sequence number.
fn current_header(src: &dyn ReadAt) -> Result<Vec<u8>, FormatError> {
    let mut headers: [Option<(u64, Vec<u8>)>; 2] = [None, None];
    for (slot, &at) in headers.iter_mut().zip(HEADER_OFFSETS.iter()) {
        let mut h = vec![0u8; HEADER_LEN];
        read(src, at, &mut h, "the VHDX headers")?;
        if &h[0..4] == b"head" && crc_ok(&h) {
            *slot = Some((u64_le(&h, 8)?, h));
        }
    }
    match headers {
        [None, None] => Err(FormatError::Corrupt(
            "neither VHDX header has a valid signature and CRC-32C".into(),
        )),
        [Some((_, h)), None] | [None, Some((_, h))] => Ok(h),
        [Some((s1, h1)), Some((s2, h2))] => {
            if s1 > s2 {
                Ok(h1)
            } else if s2 > s1 || h1 == h2 {
                Ok(h2)
            } else {
                Err(FormatError::Corrupt(
                    "the two VHDX headers differ but carry the same sequence number".into(),
                ))
            }
        }
    }
}

/// The header's version, an empty log (an unreplayed log is refused), and
/// the log's place in the file.
fn check_header(header: &[u8], file_len: u64, used: &mut FileUse) -> Result<(), FormatError> {
    let version = u16_le(header, 66)?;
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
    let log_len = u64::from(u32_le(header, 68)?);
    let log_at = u64_le(header, 72)?;
    if log_len != 0 {
        if !log_at.is_multiple_of(MIB) || !log_len.is_multiple_of(MIB) {
            return Err(FormatError::Corrupt(format!(
                "VHDX log ({log_len} bytes at {log_at}) is not 1 MiB aligned"
            )));
        }
        check_inside(log_at, log_len, file_len, "the VHDX log")?;
        used.add(log_at, log_len, Owner::Log);
    }
    Ok(())
}

/// The first valid region table; a second valid one must agree.
fn region_table(src: &dyn ReadAt) -> Result<Vec<u8>, FormatError> {
    let mut tables: Vec<Vec<u8>> = Vec::with_capacity(2);
    for &at in &REGION_OFFSETS {
        let mut t = vec![0u8; REGION_TABLE_LEN];
        read(src, at, &mut t, "the VHDX region tables")?;
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
    let mut tables = tables.into_iter();
    let (Some(first), second) = (tables.next(), tables.next()) else {
        return Err(FormatError::Corrupt(
            "neither VHDX region table has a valid signature and CRC-32C".into(),
        ));
    };
    if second.is_some_and(|second| first[8..] != second[8..]) {
        return Err(FormatError::Corrupt(
            "the two VHDX region tables are both valid but differ".into(),
        ));
    }
    Ok(first)
}

/// Where the BAT and the metadata are: (offset, length) each.
struct Regions {
    bat: (u64, u64),
    meta: (u64, u64),
}

/// The region table's entries: each aligned and inside the file, the BAT
/// and the metadata once each, an unknown region refused if required.
fn regions(
    table: &[u8],
    file_len: u64,
    used: &mut FileUse,
    notes: &mut Vec<String>,
) -> Result<Regions, FormatError> {
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
        used.add(at, len, Owner::Region(id));
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
            continue;
        };
        if slot.replace((at, len)).is_some() {
            return Err(FormatError::Corrupt(format!(
                "VHDX region {} is listed twice",
                guid_string(&id)
            )));
        }
    }
    Ok(Regions {
        bat: bat_region.ok_or_else(|| FormatError::Corrupt("VHDX has no BAT region".into()))?,
        meta: meta_region
            .ok_or_else(|| FormatError::Corrupt("VHDX has no metadata region".into()))?,
    })
}

/// The metadata's virtual size, within the limits and whole logical sectors.
fn check_virtual_size(meta: &Metadata, limits: &Limits) -> Result<u64, FormatError> {
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
    Ok(vsize)
}

/// The block allocation table's region and the geometry that reads it:
/// after every `chunk_ratio` payload entries comes one sector bitmap entry.
struct Bat {
    at: u64,
    len: u64,
    block_size: u64,
    chunk_ratio: u64,
    virtual_size: u64,
    file_len: u64,
}

impl Bat {
    fn data_blocks(&self) -> u64 {
        self.virtual_size.div_ceil(self.block_size)
    }

    /// Each payload block's file offset (0: reads as zeros), and how many
    /// are present; every present block and sector bitmap is added to `used`.
    fn read(&self, src: &dyn ReadAt, used: &mut FileUse) -> Result<(Vec<u64>, u64), FormatError> {
        let data_blocks = self.data_blocks();
        let bat_entries = data_blocks + (data_blocks - 1) / self.chunk_ratio;
        let bat_bytes = bat_entries * 8;
        if bat_bytes > self.len {
            return Err(FormatError::Corrupt(format!(
                "VHDX BAT region holds {} bytes but {bat_entries} entries are needed",
                self.len
            )));
        }
        if bat_bytes > MAX_BAT_BYTES {
            return Err(FormatError::TooLarge(format!(
                "VHDX BAT of {bat_entries} entries exceeds the limit"
            )));
        }
        // Bounded by MAX_BAT_BYTES and inside the BAT region, itself inside the file.
        let mut raw = vec![0u8; bat_bytes as usize];
        read(src, self.at, &mut raw, "the VHDX BAT")?;
        let mut blocks: Vec<u64> = Vec::with_capacity(data_blocks as usize);
        let mut claimed = 0u64;
        for (j, e) in raw.chunks_exact(8).enumerate() {
            let (j, e) = (j as u64, u64_le(e, 0)?);
            if (j + 1).is_multiple_of(self.chunk_ratio + 1) {
                self.sector_bitmap_entry(j, e, used)?;
                continue;
            }
            let block = blocks.len() as u64;
            let at = self.payload_entry(block, e)?;
            if at != 0 {
                let len = self
                    .block_size
                    .min(self.virtual_size - block * self.block_size);
                // Blocks that do not overlap fit in the file together:
                // refusing early keeps the range list as small as the file.
                claimed += len;
                if claimed > self.file_len {
                    return Err(FormatError::Corrupt(
                        "VHDX blocks claim more bytes than the file holds".into(),
                    ));
                }
                used.add(at, len, Owner::Block(block));
            }
            blocks.push(at);
        }
        let present = blocks.iter().filter(|&&at| at != 0).count() as u64;
        Ok((blocks, present))
    }

    /// A sector bitmap entry: only differencing disks use them.
    fn sector_bitmap_entry(&self, j: u64, e: u64, used: &mut FileUse) -> Result<(), FormatError> {
        let at = e & BAT_OFFSET_MASK;
        match e & 7 {
            SB_NOT_PRESENT => Ok(()),
            SB_PRESENT => {
                if at == 0 {
                    return Err(FormatError::Corrupt(format!(
                        "VHDX sector bitmap entry {j} is present at offset 0"
                    )));
                }
                check_inside(
                    at,
                    MIB,
                    self.file_len,
                    &format!("VHDX sector bitmap block {j}"),
                )?;
                used.add(at, MIB, Owner::SectorBitmap(j));
                Ok(())
            }
            s => Err(FormatError::Corrupt(format!(
                "VHDX sector bitmap entry {j} has invalid state {s}"
            ))),
        }
    }

    /// A payload entry: the block's file offset, 0 when it reads as zeros.
    fn payload_entry(&self, block: u64, e: u64) -> Result<u64, FormatError> {
        let at = e & BAT_OFFSET_MASK;
        match e & 7 {
            PAYLOAD_NOT_PRESENT | PAYLOAD_UNDEFINED | PAYLOAD_ZERO | PAYLOAD_UNMAPPED => Ok(0),
            PAYLOAD_FULLY_PRESENT => {
                if at == 0 {
                    return Err(FormatError::Corrupt(format!(
                        "VHDX block {block} is present at offset 0"
                    )));
                }
                let len = self.block_size.min(self.virtual_size - block * self.block_size);
                check_inside(at, len, self.file_len, &format!("VHDX block {block}"))?;
                Ok(at)
            }
            PAYLOAD_PARTIALLY_PRESENT => Err(FormatError::ExternalReference(format!(
                "VHDX block {block} is partially present: only differencing disks use that, and their parents are never opened"
            ))),
            s => Err(FormatError::Corrupt(format!(
                "VHDX block {block} has invalid state {s}"
            ))),
        }
    }
}
