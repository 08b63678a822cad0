//! qcow2, versions 2 and 3: the paranoid reader (`header`, `reader`,
//! `compress`) and the writer of the stored form (`writer`).
//!
//! Refused by name: backing files, external data files, encryption, the
//! corrupt bit, unknown incompatible features and compression types other
//! than zlib and zstd. Internal snapshots are tolerated and ignored (only
//! the active L1 table is read).

pub mod compress;
pub mod header;
pub mod reader;
pub mod writer;

use std::sync::Arc;

pub use header::Header;
pub use reader::Qcow2Image;
pub use writer::{AppendSink, Qcow2Writer, WriteStats};

use crate::{DiskImage, FormatError, Limits, ReadAt};

/// The qcow2 magic at offset 0.
pub fn probe(head: &[u8], _tail: &[u8], _file_len: u64) -> bool {
    head.starts_with(header::MAGIC)
}

/// Validate the header and L1 table, then return the guest disk.
pub fn open(src: Arc<dyn ReadAt>, limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    let hdr = Header::parse(&*src, limits)?;
    Ok(Box::new(Qcow2Image::open(src, hdr)?))
}
