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

use crate::bytes::{u16_le, u32_le, u64_le};
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

/// Full inspection with every safety rule, then a reader of the guest disk.
pub fn open(src: Arc<dyn ReadAt>, limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    let file_len = src.len();
    let mut first = [0u8; HEADER_LEN];
    let n = first
        .len()
        .min(usize::try_from(file_len).unwrap_or(HEADER_LEN));
    read(&*src, 0, &mut first[..n], "the VMDK header")?;
    if first.starts_with(TEXT_DESCRIPTOR) {
        return Err(FormatError::ExternalReference(
            "VMDK text descriptor: extents in other files are never opened".into(),
        ));
    }
    if n < HEADER_LEN {
        return Err(FormatError::Truncated(
            "the VMDK sparse header is cut short".into(),
        ));
    }
    let header = Header::parse(&first)?
        .ok_or_else(|| FormatError::Corrupt("no VMDK sparse extent magic \"KDMV\"".into()))?;
    if !(1..=3).contains(&header.version) {
        return Err(FormatError::Unsupported(format!(
            "VMDK sparse extent version {}",
            header.version
        )));
    }

    // The descriptor decides what kind of VMDK this is: read it first, so a
    // file that names other files is refused before anything else.
    if header.descriptor_offset == 0 || header.descriptor_sectors == 0 {
        return Err(FormatError::ExternalReference(
            "VMDK sparse extent without an embedded descriptor: it belongs to a descriptor file, which is never opened".into(),
        ));
    }
    if header.descriptor_sectors > MAX_DESCRIPTOR_SECTORS {
        return Err(FormatError::Corrupt(format!(
            "VMDK embedded descriptor of {} sectors exceeds 1 MiB",
            header.descriptor_sectors
        )));
    }
    let desc_at = sectors_to_bytes(header.descriptor_offset, "the VMDK descriptor offset")?;
    let desc_len = header.descriptor_sectors * SECTOR;
    check_inside(desc_at, desc_len, file_len, "the VMDK embedded descriptor")?;
    // At most 1 MiB (checked above), and the file holds it.
    let mut desc = vec![0u8; desc_len as usize];
    read(&*src, desc_at, &mut desc, "the VMDK embedded descriptor")?;
    let descriptor = Descriptor::parse(&desc)?;
    drop(desc);
    let (stream, extent_sectors) = descriptor.check()?;

    let virtual_size = sectors_to_bytes(header.capacity, "the VMDK capacity")?;
    if virtual_size > limits.max_virtual_size {
        return Err(FormatError::TooLarge(format!(
            "VMDK capacity {virtual_size} bytes exceeds the limit of {} bytes",
            limits.max_virtual_size
        )));
    }
    if extent_sectors != Some(header.capacity) {
        return Err(FormatError::Corrupt(format!(
            "VMDK extent line size does not match the header capacity of {} sectors",
            header.capacity
        )));
    }
    let gs = header.grain_sectors;
    if !gs.is_power_of_two() || gs < 8 {
        return Err(FormatError::Corrupt(format!(
            "VMDK grain size of {gs} sectors is not a power of two of at least 8"
        )));
    }
    if gs > MAX_GRAIN_SECTORS {
        return Err(FormatError::Unsupported(format!(
            "VMDK grain size of {gs} sectors (at most {MAX_GRAIN_SECTORS} are accepted)"
        )));
    }
    if u64::from(header.gtes_per_gt) != GTES_PER_GT {
        return Err(FormatError::Unsupported(format!(
            "VMDK grain tables of {} entries (only 512 is known)",
            header.gtes_per_gt
        )));
    }

    let compressed = header.flags & FLAG_COMPRESSED != 0;
    let mut notes = vec![format!("vmdk version {}", header.version)];
    let gd_offset = if stream {
        if !compressed || header.flags & FLAG_MARKERS == 0 {
            return Err(FormatError::Corrupt(
                "streamOptimized VMDK without the compressed-grain and marker flags".into(),
            ));
        }
        if header.compress_algorithm != COMPRESS_DEFLATE {
            return Err(FormatError::Unsupported(format!(
                "VMDK compression algorithm {}",
                header.compress_algorithm
            )));
        }
        if header.gd_offset == GD_AT_END {
            notes.push("vmdk grain directory read from the footer".into());
            read_footer(&*src, &header)?
        } else {
            header.gd_offset
        }
    } else {
        if compressed || header.flags & FLAG_MARKERS != 0 {
            return Err(FormatError::Unsupported(
                "monolithicSparse VMDK with compressed grains or markers".into(),
            ));
        }
        if header.gd_offset == GD_AT_END {
            return Err(FormatError::Corrupt(
                "monolithicSparse VMDK with its grain directory at the end".into(),
            ));
        }
        header.gd_offset
    };

    let grain_bytes = gs * SECTOR;
    let n_grains = virtual_size.div_ceil(grain_bytes);
    let n_gts = n_grains.div_ceil(GTES_PER_GT);
    let gd_bytes = n_gts * 4;
    if gd_bytes > MAX_GD_BYTES {
        return Err(FormatError::TooLarge(format!(
            "VMDK grain directory of {n_gts} entries exceeds the limit"
        )));
    }
    let gd_at = sectors_to_bytes(gd_offset, "the VMDK grain directory offset")?;
    if gd_at == 0 && n_gts > 0 {
        return Err(FormatError::Corrupt(
            "VMDK grain directory at offset 0".into(),
        ));
    }
    check_inside(gd_at, gd_bytes, file_len, "the VMDK grain directory")?;
    // Bounded by MAX_GD_BYTES, and the file holds it.
    let mut raw = vec![0u8; gd_bytes as usize];
    read(&*src, gd_at, &mut raw, "the VMDK grain directory")?;
    let gd: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32_le(c, 0))
        .collect::<Result<_, _>>()?;
    drop(raw);

    let mut vmdk = Vmdk {
        src,
        info: ImageInfo {
            format: Format::Vmdk,
            subformat: Some(
                if stream {
                    "streamOptimized"
                } else {
                    "monolithicSparse"
                }
                .into(),
            ),
            virtual_size,
            file_size: file_len,
            cluster_size: Some(grain_bytes),
            compression: compressed.then(|| "deflate".to_string()),
            notes,
        },
        compressed,
        grain_bytes,
        n_grains,
        gd,
        gts: Mutex::new(Vec::with_capacity(GT_CACHE_ENTRIES)),
        grain_cache: Mutex::new(None),
    };
    // Check every grain table now, so a table pointing outside the file is
    // refused before any data is converted.
    let mut allocated = 0u64;
    for t in 0..n_gts {
        if let Some(gt) = vmdk.load_gt(t)? {
            let used = (n_grains - t * GTES_PER_GT).min(GTES_PER_GT) as usize;
            allocated += gt[..used].iter().filter(|&&e| e > GTE_ZERO).count() as u64;
        }
    }
    vmdk.info
        .notes
        .push(format!("vmdk {allocated} of {n_grains} grains allocated"));
    Ok(Box::new(vmdk))
}

/// Reads the footer of a streamOptimized file whose header says
/// `GD_AT_END`: footer marker, footer header, end-of-stream marker, in the
/// last three sectors. Returns the footer's grain directory offset.
fn read_footer(src: &dyn ReadAt, header: &Header) -> Result<u64, FormatError> {
    let file_len = src.len();
    let at = file_len.checked_sub(3 * SECTOR).ok_or_else(|| {
        FormatError::Truncated("streamOptimized VMDK too short for its footer".into())
    })?;
    let mut f = [0u8; 3 * SECTOR as usize];
    read(src, at, &mut f, "the VMDK footer")?;
    let (marker, rest) = f.split_at(SECTOR as usize);
    let (footer, eos) = rest.split_at(SECTOR as usize);
    if u32_le(marker, 8)? != 0 || u32_le(marker, 12)? != MARKER_FOOTER {
        return Err(FormatError::Corrupt(
            "streamOptimized VMDK: no footer marker three sectors before the end".into(),
        ));
    }
    if u64_le(eos, 0)? != 0 || u32_le(eos, 8)? != 0 || u32_le(eos, 12)? != MARKER_EOS {
        return Err(FormatError::Corrupt(
            "streamOptimized VMDK: the file does not end with an end-of-stream marker".into(),
        ));
    }
    let footer = Header::parse(footer)?.ok_or_else(|| {
        FormatError::Corrupt("streamOptimized VMDK footer lacks the \"KDMV\" magic".into())
    })?;
    let agree = footer.version == header.version
        && footer.capacity == header.capacity
        && footer.grain_sectors == header.grain_sectors
        && footer.descriptor_offset == header.descriptor_offset
        && footer.descriptor_sectors == header.descriptor_sectors
        && footer.gtes_per_gt == header.gtes_per_gt
        && footer.compress_algorithm == header.compress_algorithm;
    if !agree {
        return Err(FormatError::Corrupt(
            "streamOptimized VMDK: header and footer disagree (version, capacity, grain size or descriptor)".into(),
        ));
    }
    if footer.gd_offset == GD_AT_END {
        return Err(FormatError::Corrupt(
            "streamOptimized VMDK footer points to yet another footer".into(),
        ));
    }
    Ok(footer.gd_offset)
}

/// What the embedded descriptor says, after its syntax was checked.
struct Descriptor {
    create_type: Option<String>,
    parent_cid: Option<String>,
    parent_hint: bool,
    extents: Vec<ExtentLine>,
}

struct ExtentLine {
    sectors: Option<u64>,
    kind: String,
    file_name: String,
}

impl Descriptor {
    fn parse(raw: &[u8]) -> Result<Descriptor, FormatError> {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = std::str::from_utf8(&raw[..end])
            .map_err(|_| FormatError::Corrupt("VMDK descriptor is not UTF-8 text".into()))?;
        let mut d = Descriptor {
            create_type: None,
            parent_cid: None,
            parent_hint: false,
            extents: Vec::new(),
        };
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with("ddb.") {
                continue;
            }
            let word = line.split_whitespace().next().unwrap_or("");
            if matches!(word, "RW" | "RDONLY" | "NOACCESS") {
                d.extents.push(ExtentLine::parse(line, no + 1)?);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(FormatError::Corrupt(format!(
                    "invalid VMDK descriptor data on line {}",
                    no + 1
                )));
            };
            let key = key.trim();
            let value = value.trim().trim_matches('"').to_string();
            let slot = if key.eq_ignore_ascii_case("createType") {
                &mut d.create_type
            } else if key.eq_ignore_ascii_case("parentCID") {
                &mut d.parent_cid
            } else {
                if key.eq_ignore_ascii_case("parentFileNameHint") {
                    d.parent_hint = true;
                }
                continue;
            };
            if slot.replace(value).is_some() {
                return Err(FormatError::Corrupt(format!(
                    "VMDK descriptor sets {key} twice"
                )));
            }
        }
        Ok(d)
    }

    /// Applies the policy. Returns true for streamOptimized (false for
    /// monolithicSparse) and the extent's size in sectors.
    fn check(&self) -> Result<(bool, Option<u64>), FormatError> {
        if self.parent_hint {
            return Err(FormatError::ExternalReference(
                "VMDK descriptor names a parent (parentFileNameHint), which is never opened".into(),
            ));
        }
        if let Some(cid) = &self.parent_cid {
            if !cid.eq_ignore_ascii_case("ffffffff") {
                return Err(FormatError::ExternalReference(format!(
                    "VMDK parentCID {} means a parent disk, which is never opened",
                    cid.escape_default()
                )));
            }
        }
        let create_type = self
            .create_type
            .as_deref()
            .ok_or_else(|| FormatError::Corrupt("VMDK descriptor has no createType".into()))?;
        let stream = if create_type.eq_ignore_ascii_case("streamOptimized") {
            true
        } else if create_type.eq_ignore_ascii_case("monolithicSparse") {
            false
        } else {
            return Err(FormatError::Unsupported(format!(
                "VMDK createType \"{}\" (only monolithicSparse and streamOptimized are imported)",
                create_type.escape_default()
            )));
        };
        let extent = match self.extents.as_slice() {
            [e] => e,
            [] => {
                return Err(FormatError::Corrupt(
                    "VMDK descriptor lists no extent".into(),
                ))
            }
            many => {
                return Err(FormatError::ExternalReference(format!(
                "VMDK descriptor lists {} extents: extents beyond the file itself are never opened",
                many.len()
            )))
            }
        };
        if !extent.kind.eq_ignore_ascii_case("SPARSE") {
            return Err(FormatError::ExternalReference(format!(
                "VMDK extent of type {} names a file (\"{}\") that is never opened",
                extent.kind.escape_default(),
                extent.file_name.escape_default()
            )));
        }
        // The name is never used: the extent is this file. A path in it is
        // still a sign of a crafted file (and what Glance refuses).
        if extent.file_name.contains(['/', '\\']) {
            return Err(FormatError::ExternalReference(format!(
                "VMDK extent names a path (\"{}\"); it is never opened",
                extent.file_name.escape_default()
            )));
        }
        Ok((stream, extent.sectors))
    }
}

impl ExtentLine {
    /// `ACCESS SECTORS TYPE "FILE" [OFFSET]`.
    fn parse(line: &str, no: usize) -> Result<ExtentLine, FormatError> {
        let bad = || FormatError::Corrupt(format!("invalid VMDK extent line {no}"));
        let mut rest = line;
        let mut words = [""; 3];
        for w in &mut words {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            *w = &rest[..end];
            rest = &rest[end..];
        }
        let rest = rest.trim();
        let file_name = rest
            .strip_prefix('"')
            .and_then(|r| r.split_once('"'))
            .map(|(name, _)| name.to_string())
            .ok_or_else(bad)?;
        if words[2].is_empty() {
            return Err(bad());
        }
        Ok(ExtentLine {
            sectors: words[1].parse().ok(),
            kind: words[2].to_string(),
            file_name,
        })
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
        let size = self.info.virtual_size;
        if offset >= size {
            return Err(out_of_range(offset, 1, size));
        }
        let end_limit = offset + max_len.min(size - offset);
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
        let size = self.info.virtual_size;
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(out_of_range(offset, len, size));
        }
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
