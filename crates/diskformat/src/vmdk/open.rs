//! Opening a sparse extent: the header, the embedded descriptor, the
//! geometry, the grain directory (from the footer for a streamOptimized
//! file written as a stream), and every grain table, each checked against
//! the file and the limits before a reader is returned.

use std::sync::{Arc, Mutex};

use super::descriptor::Descriptor;
use super::*;

/// Full inspection with every safety rule, then a reader of the guest disk.
pub fn open(src: Arc<dyn ReadAt>, limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    let file_len = src.len();
    let header = read_header(&*src)?;
    // The descriptor decides what kind of VMDK this is: read it first, so a
    // file that names other files is refused before anything else.
    let (stream, extent_sectors) = read_descriptor(&*src, &header)?;
    let virtual_size = check_geometry(&header, extent_sectors, limits)?;
    let compressed = header.flags & FLAG_COMPRESSED != 0;
    let mut notes = vec![format!("vmdk version {}", header.version)];
    let gd_offset = grain_directory_offset(&*src, &header, stream, &mut notes)?;

    let grain_bytes = header.grain_sectors * SECTOR;
    let n_grains = virtual_size.div_ceil(grain_bytes);
    let n_gts = n_grains.div_ceil(GTES_PER_GT);
    let gd = read_grain_directory(&*src, gd_offset, n_gts)?;
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
    let allocated = vmdk.count_allocated(n_gts)?;
    vmdk.info
        .notes
        .push(format!("vmdk {allocated} of {n_grains} grains allocated"));
    Ok(Box::new(vmdk))
}

/// The sparse extent header at offset 0; a text descriptor (which names
/// other files) is refused here.
fn read_header(src: &dyn ReadAt) -> Result<Header, FormatError> {
    let mut first = [0u8; HEADER_LEN];
    let n = first
        .len()
        .min(usize::try_from(src.len()).unwrap_or(HEADER_LEN));
    read(src, 0, &mut first[..n], "the VMDK header")?;
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
    Ok(header)
}

/// The embedded descriptor, read and checked: whether the file is
/// streamOptimized, and the size its extent line gives (sectors).
fn read_descriptor(src: &dyn ReadAt, header: &Header) -> Result<(bool, Option<u64>), FormatError> {
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
    check_inside(desc_at, desc_len, src.len(), "the VMDK embedded descriptor")?;
    // At most 1 MiB (checked above), and the file holds it.
    let mut desc = vec![0u8; desc_len as usize];
    read(src, desc_at, &mut desc, "the VMDK embedded descriptor")?;
    Descriptor::parse(&desc)?.check()
}

/// The virtual size (bytes), once the capacity, the extent line, the grain
/// size and the grain table size agree with each other and the limits.
fn check_geometry(
    header: &Header,
    extent_sectors: Option<u64>,
    limits: &Limits,
) -> Result<u64, FormatError> {
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
    Ok(virtual_size)
}

/// Where the grain directory is (sectors): the header's, or for a
/// streamOptimized file that says `GD_AT_END`, the footer's. The flags must
/// match the subformat the descriptor named.
fn grain_directory_offset(
    src: &dyn ReadAt,
    header: &Header,
    stream: bool,
    notes: &mut Vec<String>,
) -> Result<u64, FormatError> {
    let compressed = header.flags & FLAG_COMPRESSED != 0;
    let markers = header.flags & FLAG_MARKERS != 0;
    if !stream {
        if compressed || markers {
            return Err(FormatError::Unsupported(
                "monolithicSparse VMDK with compressed grains or markers".into(),
            ));
        }
        if header.gd_offset == GD_AT_END {
            return Err(FormatError::Corrupt(
                "monolithicSparse VMDK with its grain directory at the end".into(),
            ));
        }
        return Ok(header.gd_offset);
    }
    if !compressed || !markers {
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
        return read_footer(src, header);
    }
    Ok(header.gd_offset)
}

/// The grain directory of `n_gts` entries at sector `gd_offset`, bounded by
/// [`MAX_GD_BYTES`] and inside the file.
fn read_grain_directory(
    src: &dyn ReadAt,
    gd_offset: u64,
    n_gts: u64,
) -> Result<Vec<u32>, FormatError> {
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
    check_inside(gd_at, gd_bytes, src.len(), "the VMDK grain directory")?;
    // Bounded by MAX_GD_BYTES, and the file holds it.
    let mut raw = vec![0u8; gd_bytes as usize];
    read(src, gd_at, &mut raw, "the VMDK grain directory")?;
    let gd = raw
        .chunks_exact(4)
        .map(|c| u32_le(c, 0))
        .collect::<Result<_, _>>()?;
    Ok(gd)
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
