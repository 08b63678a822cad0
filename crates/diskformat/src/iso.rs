//! ISO 9660 / UDF recognition. An ISO is imported only with `Force`; it is
//! opened as a raw disk whose `info().format` is `Format::Iso`.

use std::sync::Arc;

use crate::raw::RawImage;
use crate::{DiskImage, Format, FormatError, Limits, ReadAt};

/// Volume descriptors start at 32 KiB, one per 2 KiB sector; the standard
/// identifier sits at byte 1 of each. ISO 9660 says "CD001", UDF's volume
/// recognition sequence "BEA01"/"NSR02"/"NSR03". Look at the first few
/// descriptors (all inside the 64 KiB head).
pub fn probe(head: &[u8], _tail: &[u8], _file_len: u64) -> bool {
    (0..8).any(|i| {
        let at = 32768 + i * 2048 + 1;
        matches!(head.get(at..at + 5), Some(b"CD001" | b"NSR02" | b"NSR03"))
    })
}

pub fn open(src: Arc<dyn ReadAt>, limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    let mut img = RawImage::new(src, limits, Format::Iso)?;
    img.add_note("ISO 9660/UDF image: imported only with Force".into());
    Ok(Box::new(img))
}
