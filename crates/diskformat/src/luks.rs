//! LUKS: an encrypted container. Recognised (so its ciphertext is never
//! taken for a raw disk) and refused: the service holds no keys.

use std::sync::Arc;

use crate::{DiskImage, FormatError, Limits, ReadAt};

pub fn probe(head: &[u8], _tail: &[u8], _file_len: u64) -> bool {
    head.starts_with(b"LUKS\xba\xbe")
}

pub fn open(_src: Arc<dyn ReadAt>, _limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    Err(FormatError::Encrypted(
        "LUKS encrypted container (import the decrypted disk instead)".into(),
    ))
}
