//! The machine type of a PE (Windows executable) header, for the
//! architecture of an installation whose SYSTEM hive is not available.

use diskformat::bytes::{u16_le, u32_le};

/// Bytes to read from the start of a PE file: the DOS header's e_lfanew
/// points at "PE\0\0" within the first pages in every real binary.
pub const HEADER_READ: usize = 4096;

/// Tencent's architecture name for the PE Machine field, or None if `head`
/// is not a PE header (or one this reader does not map).
pub fn architecture(head: &[u8]) -> Option<&'static str> {
    if head.get(..2)? != b"MZ" {
        return None;
    }
    // Anything too short to hold a field is not a PE header: None.
    let lfanew = u32_le(head, 0x3c).ok()? as usize;
    let sig = head.get(lfanew..lfanew.checked_add(6)?)?;
    if &sig[..4] != b"PE\0\0" {
        return None;
    }
    match u16_le(sig, 4).ok()? {
        0x8664 => Some("x86_64"),
        0x014c => Some("i386"),
        0xaa64 => Some("arm_64"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::architecture;

    fn pe(machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..2].copy_from_slice(b"MZ");
        h[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        h[0x80..0x84].copy_from_slice(b"PE\0\0");
        h[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn machines() {
        assert_eq!(architecture(&pe(0x8664)), Some("x86_64"));
        assert_eq!(architecture(&pe(0x14c)), Some("i386"));
        assert_eq!(architecture(&pe(0xaa64)), Some("arm_64"));
        assert_eq!(architecture(&pe(0x1c4)), None);
        let mut bad = pe(0x8664);
        bad[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(architecture(&bad), None);
        assert_eq!(architecture(b"MZ"), None);
        assert_eq!(architecture(b"\x7fELF"), None);
    }
}
