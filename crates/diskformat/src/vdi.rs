//! VDI (VirtualBox): recognised by its signature and refused; it is not a
//! format the CVM API imports.

use std::sync::Arc;

use crate::{DiskImage, FormatError, Limits, ReadAt};

const SIGNATURE: u32 = 0xbeda_107f;

pub fn probe(head: &[u8], _tail: &[u8], _file_len: u64) -> bool {
    crate::bytes::u32_le(head, 0x40) == Ok(SIGNATURE)
}

pub fn open(_src: Arc<dyn ReadAt>, _limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    Err(FormatError::Unsupported(
        "VDI (VirtualBox) images are refused (convert to qcow2, VMDK, VHD or raw first)".into(),
    ))
}
