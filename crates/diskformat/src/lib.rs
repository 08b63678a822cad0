//! Disk image containers, read and written in pure Rust.
//!
//! `detect` recognises a container by its content (never by a name), `open`
//! inspects it with the safety rules before anything in it is trusted, and
//! the returned [`DiskImage`] reads guest blocks. [`qcow2::writer`] writes the
//! stored form. No network, no database, and never a second file: every byte
//! comes through the one [`ReadAt`] the caller hands in.
//!
//! Safety checks, per format (each refusal is a named [`FormatError`]):
//! - detection: every probe runs on the first and last 64 KiB; two matches
//!   are `Ambiguous`, none is raw.
//! - qcow2: magic, version 2|3, cluster_bits 9..=21, header_length, virtual
//!   size ≤ limit, L1 large enough and ≤ 32 MiB, L1/refcount tables aligned,
//!   inside the file, clear of the header and of each other, refcount_order
//!   ≤ 6, header extensions bounded by the first cluster; refused: backing
//!   file (offset or format extension), external data file (bit or name
//!   extension), encryption (crypt_method or crypto extension), corrupt bit,
//!   unknown incompatible bits, compression other than zlib/zstd. L2 tables
//!   aligned, inside, not on metadata, not shared; data clusters aligned and
//!   not on metadata; a compressed cluster decodes to exactly one cluster.
//! - raw / ISO: the file is the disk; its length is the virtual size.
//! - QED, VDI: recognised and refused. LUKS: recognised, refused as
//!   encrypted.
//! - VMDK, VHD, VHDX: see their modules.

#![forbid(unsafe_code)]

pub mod bytes;
pub mod convert;
pub mod detect;
pub mod error;
pub mod export;
pub mod iso;
pub mod luks;
pub mod qcow2;
pub mod qed;
pub mod raw;
pub mod source;
pub mod util;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

pub use convert::{convert, convert_with, ConvertStats};
pub use detect::{detect, Detection};
pub use error::FormatError;
pub use export::{export, ExportError, ExportFormat, ExportSink, ExportSummary, FileSink};
pub use source::{FileSource, Hint, PrefetchedTail, ReadAt, SliceSource};
pub use util::is_zero;

/// Detect the container, inspect it with its safety rules, and return the
/// guest disk. QED, VDI and LUKS are refused by name; an ISO opens as a raw
/// disk reported as `Format::Iso` (the service requires `Force` for it).
/// Every format refuses a virtual size above `limits.max_virtual_size`.
pub fn open(
    src: std::sync::Arc<dyn ReadAt>,
    limits: &Limits,
) -> Result<Box<dyn DiskImage>, FormatError> {
    let detection = detect(&*src)?;
    open_as(detection.format, src, limits)
}

/// Open `src` as `format`, which must come from detection (`detect`, or
/// `detect::detect_bytes` on head and tail bytes the caller fetched first,
/// e.g. with two range requests before the body streams). Never pass a
/// format taken from a URL or a user's claim: that is how the qcow2/VMDK
/// host-file leaks of the past happened.
pub fn open_as(
    format: Format,
    src: std::sync::Arc<dyn ReadAt>,
    limits: &Limits,
) -> Result<Box<dyn DiskImage>, FormatError> {
    let img = match format {
        Format::Raw => raw::open(src, limits)?,
        Format::Qcow2 => qcow2::open(src, limits)?,
        Format::Vmdk => vmdk::open(src, limits)?,
        Format::Vhd => vhd::open(src, limits)?,
        Format::Vhdx => vhdx::open(src, limits)?,
        Format::Iso => iso::open(src, limits)?,
        Format::Qed => qed::open(src, limits)?,
        Format::Vdi => vdi::open(src, limits)?,
        Format::Luks => luks::open(src, limits)?,
    };
    // Belt and braces: whatever a format module decided, the limit holds.
    if img.virtual_size() > limits.max_virtual_size {
        return Err(FormatError::TooLarge(format!(
            "virtual size {} bytes exceeds the limit of {} bytes",
            img.virtual_size(),
            limits.max_virtual_size
        )));
    }
    Ok(img)
}

use serde::Serialize;

/// Container formats that can be recognised. Only some can be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Iso,
    Qed,
    Vdi,
    Luks,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Iso => "iso",
            Format::Qed => "qed",
            Format::Vdi => "vdi",
            Format::Luks => "luks",
        }
    }
}

/// Limits applied while inspecting. A header claiming more is refused before
/// any allocation is made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest guest (virtual) disk accepted. Tencent: 500 GiB.
    pub max_virtual_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_virtual_size: 500 << 30,
        }
    }
}

/// What inspection found about a container, before and independent of the
/// guest data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    pub format: Format,
    /// e.g. "v3", "v2", "monolithicSparse", "streamOptimized", "fixed", "dynamic".
    pub subformat: Option<String>,
    /// Guest-visible disk size in bytes.
    pub virtual_size: u64,
    /// Size of the container file in bytes.
    pub file_size: u64,
    /// Allocation unit of the container (qcow2 cluster, VMDK grain, VHD block).
    pub cluster_size: Option<u64>,
    /// Compression used by data clusters, if any ("zlib", "zstd", "deflate").
    pub compression: Option<String>,
    /// Facts worth showing a person (e.g. "qcow2 refcount_bits=16").
    pub notes: Vec<String>,
}

/// What a run of guest bytes is, as the container maps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Stored data (it may still happen to be all zeros).
    Data,
    /// Reads as zeros: unallocated, or explicitly zero.
    Zero,
}

/// A run of guest bytes `[offset, offset + len)` of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub kind: ExtentKind,
}

/// An opened, inspected container: the guest disk it holds.
///
/// Implementations are `Send + Sync` so one opened image can be read by the
/// converter and the guest inspector at once.
pub trait DiskImage: Send + Sync {
    fn info(&self) -> &ImageInfo;

    fn virtual_size(&self) -> u64 {
        self.info().virtual_size
    }

    /// The extent that contains guest offset `offset` (< virtual size),
    /// clipped to at most `max_len` bytes. Extents are merged as far as the
    /// container's metadata allows cheaply (at least one cluster/grain/block).
    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError>;

    /// Read guest bytes `[offset, offset + buf.len())`; must lie inside the
    /// virtual size. Unallocated ranges read as zeros.
    fn read_guest(&self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError>;
}

/// The guest view of any [`DiskImage`] as a plain [`ReadAt`], which is what
/// partition and filesystem readers take.
pub struct GuestReader<'a>(pub &'a dyn DiskImage);

impl ReadAt for GuestReader<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_guest(offset, buf).map_err(FormatError::into_io)
    }

    fn len(&self) -> u64 {
        self.0.virtual_size()
    }
}
