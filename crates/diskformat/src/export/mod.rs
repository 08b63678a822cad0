//! Export: any opened [`DiskImage`] written out as RAW, QCOW2, VHD or VMDK
//! (streamOptimized), in pure Rust, streaming.
//!
//! Contract:
//! - Every format is written strictly in file order through an
//!   [`ExportSink`]: nothing is ever written twice or seeked back to, so the
//!   same code feeds a local file and an S3 multipart upload. Runs of zeros
//!   go through [`ExportSink::write_zeros`], which a seekable sink
//!   ([`FileSink`]) turns into holes and a sequential one writes out.
//! - Holes cost nothing: the source's allocation map (its Zero extents) is
//!   read first, at 64 KiB granularity, and only allocated units are read.
//!   Metadata that depends on what is allocated (qcow2 L2 tables and
//!   refcounts, the VHD BAT) is computed from that map before any data.
//! - Memory is bounded whatever the disk size: the map costs one bit per
//!   64 KiB (1 MiB for 500 GiB), plus a few 4 MiB windows in flight.
//! - The guest bytes of the output equal the source's, and the output's
//!   virtual size equals the source's (VHD and VMDK round it up to 512-byte
//!   sectors, the unit those formats count in).
//!
//! Threat model: the source may be hostile. It was opened by diskformat's
//! readers, which enforce their safety rules; here every extent it reports
//! is checked (inside the disk, advancing), so a lying container fails with
//! a [`FormatError`] instead of looping, and no size taken from it allocates
//! more than the map above. Nothing here opens a file or runs a program.

mod map;
mod pipeline;
mod qcow2;
mod raw;
mod sink;
mod vhd;
mod vmdk;

use std::fmt;
use std::str::FromStr;

pub use sink::{ExportSink, FileSink, SequentialSink};

use crate::{DiskImage, FormatError};
use pipeline::Out;

/// The formats an image can be exported to (ExportImages' `ExportFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    Raw,
    Qcow2,
    Vhd,
    /// VMDK streamOptimized: the subformat VMware and ESXi import.
    Vmdk,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 4] = [Self::Raw, Self::Qcow2, Self::Vhd, Self::Vmdk];

    /// The API's spelling: "RAW", "QCOW2", "VHD", "VMDK".
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Raw => "RAW",
            Self::Qcow2 => "QCOW2",
            Self::Vhd => "VHD",
            Self::Vmdk => "VMDK",
        }
    }

    /// File extension, lower case, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vhd => "vhd",
            Self::Vmdk => "vmdk",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

/// An `ExportFormat` that is none of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown export format {0:?} (RAW, QCOW2, VHD or VMDK)")]
pub struct UnknownExportFormat(pub String);

impl FromStr for ExportFormat {
    type Err = UnknownExportFormat;

    /// Case-insensitive, as the API accepts it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.api_name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownExportFormat(s.to_string()))
    }
}

/// Why an export stopped. The sink may hold a partial output: the caller
/// discards it (temporary name, aborted multipart upload).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the source image failed or it proved corrupt.
    #[error("reading the source image failed: {0}")]
    Source(#[from] FormatError),
    /// Writing the output failed.
    #[error("writing the export failed: {0}")]
    Sink(std::io::Error),
    /// The progress callback asked to stop.
    #[error("the export was cancelled")]
    Cancelled,
    /// The disk cannot be expressed in the format (e.g. a VHD above 2040 GiB).
    #[error("the image cannot be exported in this format: {0}")]
    Unsupported(String),
}

impl ExportError {
    /// A stable code for task outcomes.
    pub fn code(&self) -> &'static str {
        match self {
            ExportError::Source(e) => e.code(),
            ExportError::Sink(_) => "ExportWriteError",
            ExportError::Cancelled => "ExportCancelled",
            ExportError::Unsupported(_) => "ExportFormatUnsupported",
        }
    }
}

/// Where an export stands; handed to the progress callback after every
/// step (a few MiB of guest data at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Guest bytes done, of `virtual_size` (percent = done / virtual_size).
    pub guest_done: u64,
    pub virtual_size: u64,
    /// Bytes handed to the sink so far (holes included).
    pub bytes_written: u64,
}

/// What a finished export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    pub format: ExportFormat,
    pub virtual_size: u64,
    /// Length of the output (holes included).
    pub bytes_written: u64,
    /// Guest bytes read from the source (its allocated units).
    pub bytes_read: u64,
}

/// Tuning; `Default` is what the service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Threads that read (and for VMDK compress) ahead of the writer; 0 or
    /// 1 does everything on the calling thread.
    pub workers: usize,
    /// Creation time written into VHD footers (Unix seconds); `None` is now.
    pub created_unix: Option<u64>,
    /// The disk's identity: VHD UUID, VMDK CID. `None` draws a random one
    /// (two exports of one image attached to one VM must differ).
    pub disk_id: Option<[u8; 16]>,
}

impl ExportOptions {
    /// `disk_id`, or 16 random bytes (from the std hasher's random keys:
    /// unique, not secret, and no dependency).
    pub(crate) fn disk_id(&self) -> [u8; 16] {
        use std::hash::{BuildHasher, Hasher};
        self.disk_id.unwrap_or_else(|| {
            let mut id = [0u8; 16];
            for half in id.chunks_mut(8) {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u128(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos()),
                );
                half.copy_from_slice(&h.finish().to_le_bytes());
            }
            // RFC 4122 version 4, variant 1.
            id[6] = (id[6] & 0x0f) | 0x40;
            id[8] = (id[8] & 0x3f) | 0x80;
            id
        })
    }
}

impl Default for ExportOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ExportOptions {
            workers: cores.clamp(2, 4),
            created_unix: None,
            disk_id: None,
        }
    }
}

/// Write the guest disk of `disk` to `sink` as `format`, strictly in file
/// order, then call `sink.finish()`. `progress` is called after every step;
/// returning `false` cancels with [`ExportError::Cancelled`].
pub fn export(
    disk: &dyn DiskImage,
    format: ExportFormat,
    sink: &mut dyn ExportSink,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<ExportSummary, ExportError> {
    export_with(disk, format, sink, progress, &ExportOptions::default())
}

/// [`export`] with explicit options.
pub fn export_with(
    disk: &dyn DiskImage,
    format: ExportFormat,
    sink: &mut dyn ExportSink,
    progress: &mut dyn FnMut(Progress) -> bool,
    opts: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    let map = map::AllocMap::build(disk)?;
    let mut out = Out::new(sink, disk.virtual_size(), progress);
    let bytes_read = match format {
        ExportFormat::Raw => raw::write(disk, &map, &mut out, opts)?,
        ExportFormat::Qcow2 => qcow2::write(disk, &map, &mut out, opts)?,
        ExportFormat::Vhd => vhd::write(disk, &map, &mut out, opts)?,
        ExportFormat::Vmdk => vmdk::write(disk, &map, &mut out, opts)?,
    };
    let bytes_written = out.finish()?;
    Ok(ExportSummary {
        format,
        virtual_size: disk.virtual_size(),
        bytes_written,
        bytes_read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_case_insensitively() {
        assert_eq!("raw".parse(), Ok(ExportFormat::Raw));
        assert_eq!("Qcow2".parse(), Ok(ExportFormat::Qcow2));
        assert_eq!("VHD".parse(), Ok(ExportFormat::Vhd));
        assert_eq!("vmdk".parse(), Ok(ExportFormat::Vmdk));
        assert!("vhdx".parse::<ExportFormat>().is_err());
        assert!("".parse::<ExportFormat>().is_err());
        for f in ExportFormat::ALL {
            assert_eq!(f.to_string().parse(), Ok(f));
        }
    }
}
