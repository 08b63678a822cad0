//! QED: recognised so it is never mistaken for raw, and always refused
//! (QEMU deprecated it; it can name a backing file; no reason to import it).

use std::sync::Arc;

use crate::{DiskImage, FormatError, Limits, ReadAt};

pub fn probe(head: &[u8], _tail: &[u8], _file_len: u64) -> bool {
    head.starts_with(b"QED\0")
}

pub fn open(_src: Arc<dyn ReadAt>, _limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    Err(FormatError::Unsupported(
        "QED images are refused (convert to qcow2 or raw first)".into(),
    ))
}
