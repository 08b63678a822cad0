//! raw: the file is the guest disk, byte for byte. Also serves ISO images,
//! which are opened the same way but reported as `Format::Iso` so the
//! service can demand `Force` for them.

use std::sync::Arc;

use crate::{DiskImage, Extent, ExtentKind, Format, FormatError, ImageInfo, Limits, ReadAt};

pub struct RawImage {
    src: Arc<dyn ReadAt>,
    info: ImageInfo,
}

impl RawImage {
    /// The file as a guest disk reported as `format` (Raw or Iso).
    pub fn new(src: Arc<dyn ReadAt>, limits: &Limits, format: Format) -> Result<Self, FormatError> {
        let len = src.len();
        if len > limits.max_virtual_size {
            return Err(FormatError::TooLarge(format!(
                "{} image of {len} bytes exceeds the limit of {} bytes",
                format.name(),
                limits.max_virtual_size
            )));
        }
        Ok(RawImage {
            src,
            info: ImageInfo {
                format,
                subformat: None,
                virtual_size: len,
                file_size: len,
                cluster_size: None,
                compression: None,
                notes: Vec::new(),
            },
        })
    }
}

impl RawImage {
    pub fn add_note(&mut self, note: String) {
        self.info.notes.push(note);
    }
}

/// The extent at `offset` (at most `len` bytes, `len ≥ 1`, inside the
/// source) of a container whose guest bytes are the file's bytes there.
pub(crate) fn hinted_extent(src: &dyn ReadAt, offset: u64, len: u64) -> std::io::Result<Extent> {
    let hint = src.extent_hint(offset, len)?;
    Ok(Extent {
        offset,
        // A source's hint is clamped again: a wrong one must not make the
        // converter loop or overrun.
        len: hint.len.clamp(1, len),
        kind: if hint.zero {
            ExtentKind::Zero
        } else {
            ExtentKind::Data
        },
    })
}

/// raw has no signature: it is what matches nothing else.
pub fn open(src: Arc<dyn ReadAt>, limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    Ok(Box::new(RawImage::new(src, limits, Format::Raw)?))
}

impl DiskImage for RawImage {
    fn info(&self) -> &ImageInfo {
        &self.info
    }

    /// The file's bytes are the guest's: what the source knows about its
    /// zeros (see [`ReadAt::extent_hint`]) is known about the guest; the
    /// converter finds any other zeros itself.
    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        let size = self.info.virtual_size;
        if offset >= size {
            return Err(FormatError::Corrupt(format!(
                "extent at {offset} beyond the virtual size {size}"
            )));
        }
        Ok(hinted_extent(
            &*self.src,
            offset,
            max_len.min(size - offset),
        )?)
    }

    fn read_guest(&self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        self.src.read_at(offset, buf).map_err(FormatError::Io)
    }
}
