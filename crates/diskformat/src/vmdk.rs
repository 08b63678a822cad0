//! VMDK reader (in progress).
use std::sync::Arc;
use crate::{DiskImage, FormatError, Limits, ReadAt};
pub fn probe(head: &[u8], _tail: &[u8], _file_len: u64) -> bool { head.starts_with(b"KDMV") }
pub fn open(_src: Arc<dyn ReadAt>, _limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    Err(FormatError::Unsupported("VMDK reader not written yet".into()))
}
