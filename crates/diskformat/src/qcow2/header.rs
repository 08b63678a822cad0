//! The qcow2 header and its extensions, parsed and validated before any
//! table is read. Everything here is checked against the file length and
//! the caller's limits; a field that could make the reader touch another
//! file (backing file, external data file) or decrypt is refused by name.

use crate::bytes::{u32_be, u64_be};
use crate::util::{add, div_ceil, mul, overlaps, read_exact_at};
use crate::{FormatError, Limits, ReadAt};

pub const MAGIC: &[u8; 4] = b"QFI\xfb";

/// Incompatible feature bits (qcow2 spec, "incompatible_features").
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// qemu refuses L1 tables above 32 MiB; so do we (it also bounds the one
/// allocation made from a header field, and only after the file is known
/// to hold that many bytes).
pub const MAX_L1_BYTES: u64 = 32 << 20;

/// Compression used by compressed clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// A validated qcow2 header.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub incompatible: u64,
    pub compatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
    pub extended_l2: bool,
    /// Number of L1 entries the virtual size needs (≤ `l1_size`).
    pub l1_needed: u64,
    pub notes: Vec<String>,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// Bytes per L2 entry: 8, or 16 with extended L2 entries.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    /// Guest bytes one L2 table maps.
    pub fn l2_coverage(&self) -> u64 {
        (self.cluster_size() / self.l2_entry_size()) << self.cluster_bits
    }

    pub fn l1_bytes(&self) -> u64 {
        u64::from(self.l1_size) * 8
    }

    pub fn refcount_table_bytes(&self) -> u64 {
        u64::from(self.refcount_table_clusters) << self.cluster_bits
    }

    /// Read and validate the header (first cluster) of `src`.
    pub fn parse(src: &dyn ReadAt, limits: &Limits) -> Result<Header, FormatError> {
        let file_len = src.len();
        let fixed = read_fixed(src)?;
        let f = Fields::read(&fixed, file_len)?;
        // Refusals that name what the image would make us do, checked first
        // so a hostile image gets the precise reason.
        f.refuse_references_and_encryption()?;
        f.check_geometry(limits)?;
        let compression = f.compression(&fixed, file_len)?;
        let notes = f.notes(compression)?;
        let l1_needed = f.check_tables(file_len)?;
        let mut hdr = Header {
            version: f.version,
            cluster_bits: f.cluster_bits,
            size: f.size,
            l1_size: f.l1_size,
            l1_table_offset: f.l1_table_offset,
            refcount_table_offset: f.refcount_table_offset,
            refcount_table_clusters: f.refcount_table_clusters,
            nb_snapshots: f.nb_snapshots,
            incompatible: f.incompatible,
            compatible: f.compatible,
            autoclear: f.autoclear,
            refcount_order: f.refcount_order,
            header_length: f.header_length,
            compression,
            extended_l2: f.extended_l2(),
            l1_needed,
            notes,
        };
        hdr.parse_extensions(src)?;
        Ok(hdr)
    }

    /// Walk the header extensions (between the header and the end of the
    /// first cluster). Each is bounded by the cluster; unknown ones are
    /// skipped, the dangerous ones refused.
    fn parse_extensions(&mut self, src: &dyn ReadAt) -> Result<(), FormatError> {
        let cluster_size = self.cluster_size();
        let start = u64::from(self.header_length);
        let end = cluster_size.min(src.len());
        if start >= end {
            return Ok(());
        }
        // At most one cluster (≤ 2 MiB), and only as much as the file holds.
        let mut area = vec![0u8; (end - start) as usize];
        read_exact_at(src, start, &mut area, "qcow2 header extensions")?;
        let mut pos = 0usize;
        // Each iteration advances by ≥ 8 bytes, so this terminates.
        while pos + 8 <= area.len() {
            let ty = u32_be(&area, pos)?;
            let len = u32_be(&area, pos + 4)? as usize;
            if ty == EXT_END {
                return Ok(());
            }
            let data_start = pos + 8;
            let data_end = data_start
                .checked_add(len)
                .filter(|&e| e <= area.len())
                .ok_or_else(|| {
                    FormatError::Corrupt(format!(
                        "qcow2 header extension {ty:#x} of {len} bytes runs past the first cluster"
                    ))
                })?;
            match ty {
                EXT_BACKING_FORMAT => {
                    return Err(FormatError::ExternalReference(
                        "qcow2 backing file format extension (a backing file is named)".into(),
                    ))
                }
                EXT_DATA_FILE => {
                    return Err(FormatError::ExternalReference(
                        "qcow2 external data file name extension".into(),
                    ))
                }
                EXT_CRYPTO => {
                    return Err(FormatError::Encrypted(
                        "qcow2 full disk encryption header extension".into(),
                    ))
                }
                EXT_BITMAPS => self
                    .notes
                    .push("qcow2 persistent dirty bitmaps present (ignored)".into()),
                EXT_FEATURE_TABLE => {}
                _ => self
                    .notes
                    .push(format!("qcow2 unknown header extension {ty:#x} ignored")),
            }
            // Data is padded to a multiple of 8.
            pos = data_end
                .checked_next_multiple_of(8)
                .unwrap_or(usize::MAX)
                .min(area.len());
        }
        Ok(())
    }
}

/// The fixed part of the header (112 bytes, or the file if shorter, but at
/// least the 72 bytes of a version 2 header), its magic checked.
fn read_fixed(src: &dyn ReadAt) -> Result<[u8; 112], FormatError> {
    let file_len = src.len();
    let mut fixed = [0u8; 112];
    if file_len < 72 {
        return Err(FormatError::Truncated(
            "qcow2 header (72 bytes) lies beyond the end of the file".into(),
        ));
    }
    let fixed_len = file_len.min(112) as usize;
    read_exact_at(src, 0, &mut fixed[..fixed_len], "qcow2 header")?;
    if &fixed[0..4] != MAGIC {
        return Err(FormatError::Corrupt("not a qcow2 file (bad magic)".into()));
    }
    Ok(fixed)
}

/// The header's fields as read, before any of them is trusted (version 2
/// headers get version 3's defaults for the fields they lack).
struct Fields {
    version: u32,
    backing_file_offset: u64,
    cluster_bits: u32,
    size: u64,
    crypt_method: u32,
    l1_size: u32,
    l1_table_offset: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u32,
    nb_snapshots: u32,
    snapshots_offset: u64,
    incompatible: u64,
    compatible: u64,
    autoclear: u64,
    refcount_order: u32,
    header_length: u32,
}

impl Fields {
    fn read(h: &[u8], file_len: u64) -> Result<Fields, FormatError> {
        let version = u32_be(h, 4)?;
        if version != 2 && version != 3 {
            return Err(FormatError::Unsupported(format!(
                "qcow2 version {version} (only 2 and 3 exist)"
            )));
        }
        let mut f = Fields {
            version,
            backing_file_offset: u64_be(h, 8)?,
            cluster_bits: u32_be(h, 20)?,
            size: u64_be(h, 24)?,
            crypt_method: u32_be(h, 32)?,
            l1_size: u32_be(h, 36)?,
            l1_table_offset: u64_be(h, 40)?,
            refcount_table_offset: u64_be(h, 48)?,
            refcount_table_clusters: u32_be(h, 56)?,
            nb_snapshots: u32_be(h, 60)?,
            snapshots_offset: u64_be(h, 64)?,
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: 72,
        };
        if version == 3 {
            if file_len < 104 {
                return Err(FormatError::Truncated(
                    "qcow2 v3 header (104 bytes) lies beyond the end of the file".into(),
                ));
            }
            f.incompatible = u64_be(h, 72)?;
            f.compatible = u64_be(h, 80)?;
            f.autoclear = u64_be(h, 88)?;
            f.refcount_order = u32_be(h, 96)?;
            f.header_length = u32_be(h, 100)?;
        }
        Ok(f)
    }

    fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }

    /// Another file to read (backing file, external data file), encryption,
    /// the corrupt bit and unknown incompatible features: refused by name.
    fn refuse_references_and_encryption(&self) -> Result<(), FormatError> {
        if self.backing_file_offset != 0 {
            return Err(FormatError::ExternalReference(
                "qcow2 backing file (the image names another file to read from)".into(),
            ));
        }
        if self.incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(FormatError::ExternalReference(
                "qcow2 external data file (incompatible feature bit 2)".into(),
            ));
        }
        if self.crypt_method != 0 {
            return Err(FormatError::Encrypted(format!(
                "qcow2 encryption (crypt_method {})",
                self.crypt_method
            )));
        }
        if self.incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(FormatError::Corrupt(
                "qcow2 corrupt bit is set (qemu found an inconsistency in it)".into(),
            ));
        }
        let unknown = self.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(FormatError::Unsupported(format!(
                "qcow2 unknown incompatible features {unknown:#x}"
            )));
        }
        Ok(())
    }

    /// Cluster size, virtual size, refcount width, header length and
    /// extended L2 entries within what the format and the limits allow.
    fn check_geometry(&self, limits: &Limits) -> Result<(), FormatError> {
        let cluster_bits = self.cluster_bits;
        if !(9..=21).contains(&cluster_bits) {
            return Err(FormatError::Corrupt(format!(
                "qcow2 cluster_bits {cluster_bits} outside 9..=21"
            )));
        }
        if self.size > limits.max_virtual_size {
            return Err(FormatError::TooLarge(format!(
                "qcow2 virtual size {} bytes exceeds the limit of {} bytes",
                self.size, limits.max_virtual_size
            )));
        }
        if self.refcount_order > 6 {
            return Err(FormatError::Corrupt(format!(
                "qcow2 refcount_order {} > 6",
                self.refcount_order
            )));
        }
        let header_length = self.header_length;
        if self.version == 3 {
            if header_length < 104 || !header_length.is_multiple_of(8) {
                return Err(FormatError::Corrupt(format!(
                    "qcow2 header_length {header_length} (must be ≥ 104 and a multiple of 8)"
                )));
            }
            if u64::from(header_length) > self.cluster_size() {
                return Err(FormatError::Corrupt(format!(
                    "qcow2 header_length {header_length} exceeds the cluster size"
                )));
            }
        }
        if self.extended_l2() && cluster_bits < 14 {
            return Err(FormatError::Corrupt(
                "qcow2 extended L2 entries need clusters of at least 16 KiB".into(),
            ));
        }
        Ok(())
    }

    /// The compression type (the byte at 104 exists only if header_length >
    /// 104), which must agree with its incompatible feature bit.
    fn compression(&self, h: &[u8], file_len: u64) -> Result<Compression, FormatError> {
        let compression_byte = if self.version == 3 && self.header_length > 104 {
            if file_len < 105 {
                return Err(FormatError::Truncated(
                    "qcow2 compression type field".into(),
                ));
            }
            h[104]
        } else {
            0
        };
        let compression = match compression_byte {
            0 => Compression::Zlib,
            1 => Compression::Zstd,
            other => {
                return Err(FormatError::Unsupported(format!(
                    "qcow2 compression type {other} (only zlib=0 and zstd=1 are supported)"
                )))
            }
        };
        if (compression != Compression::Zlib) != (self.incompatible & INCOMPAT_COMPRESSION != 0) {
            return Err(FormatError::Corrupt(
                "qcow2 compression type and its incompatible feature bit disagree".into(),
            ));
        }
        Ok(compression)
    }

    /// What the report says about the header; a snapshot table must be
    /// cluster aligned (it is never read).
    fn notes(&self, compression: Compression) -> Result<Vec<String>, FormatError> {
        let mut notes = vec![format!(
            "qcow2 v{} cluster_size={} refcount_bits={} compression_type={}",
            self.version,
            self.cluster_size(),
            1u32 << self.refcount_order,
            compression.name()
        )];
        if self.incompatible & INCOMPAT_DIRTY != 0 {
            notes.push(
                "qcow2 dirty bit set (refcounts may be stale; only L1/L2 are read, so this is harmless)"
                    .into(),
            );
        }
        if self.nb_snapshots != 0 {
            notes.push(format!(
                "qcow2 has {} internal snapshot(s); they are ignored, only the active disk is imported",
                self.nb_snapshots
            ));
            if !self.snapshots_offset.is_multiple_of(self.cluster_size()) {
                return Err(FormatError::Corrupt(
                    "qcow2 snapshot table offset is not cluster aligned".into(),
                ));
            }
        }
        if self.extended_l2() {
            notes.push("qcow2 extended L2 entries (32 subclusters per cluster)".into());
        }
        Ok(notes)
    }

    /// The L1 table large enough for the virtual size, bounded, aligned and
    /// inside the file; the refcount table aligned, inside, and apart from
    /// it. Returns the L1 entries the virtual size needs.
    fn check_tables(&self, file_len: u64) -> Result<u64, FormatError> {
        let cluster_size = self.cluster_size();
        let l2_entry = if self.extended_l2() { 16 } else { 8 };
        let l2_coverage = (cluster_size / l2_entry) << self.cluster_bits;
        let l1_needed = div_ceil(self.size, l2_coverage);
        let l1_size = self.l1_size;
        if u64::from(l1_size) < l1_needed {
            return Err(FormatError::Corrupt(format!(
                "qcow2 L1 table has {l1_size} entries, the virtual size needs {l1_needed}"
            )));
        }
        let l1_bytes = u64::from(l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(FormatError::TooLarge(format!(
                "qcow2 L1 table of {l1_bytes} bytes exceeds {MAX_L1_BYTES}"
            )));
        }
        check_table(
            "L1 table",
            self.l1_table_offset,
            l1_bytes,
            cluster_size,
            file_len,
        )?;
        let rt_bytes = mul(
            u64::from(self.refcount_table_clusters),
            cluster_size,
            "qcow2 refcount table size",
        )?;
        check_table(
            "refcount table",
            self.refcount_table_offset,
            rt_bytes,
            cluster_size,
            file_len,
        )?;
        if overlaps(
            self.l1_table_offset,
            l1_bytes,
            self.refcount_table_offset,
            rt_bytes,
        ) {
            return Err(FormatError::Corrupt(
                "qcow2 L1 table and refcount table overlap".into(),
            ));
        }
        Ok(l1_needed)
    }
}

/// A metadata table must start cluster aligned, after the header cluster,
/// and end inside the file.
fn check_table(
    what: &str,
    offset: u64,
    len: u64,
    cluster_size: u64,
    file_len: u64,
) -> Result<(), FormatError> {
    if len == 0 {
        return Ok(());
    }
    if !offset.is_multiple_of(cluster_size) {
        return Err(FormatError::Corrupt(format!(
            "qcow2 {what} offset {offset:#x} is not cluster aligned"
        )));
    }
    if offset < cluster_size {
        return Err(FormatError::Corrupt(format!(
            "qcow2 {what} overlaps the header"
        )));
    }
    let end = add(offset, len, what)?;
    if end > file_len {
        return Err(FormatError::Truncated(format!(
            "qcow2 {what} ({len} bytes at {offset:#x}) lies beyond the end of the file ({file_len} bytes)"
        )));
    }
    Ok(())
}
