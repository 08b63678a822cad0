//! Fixed-width fields read out of byte buffers, the one way every parser of
//! the project (here and in `guestinspect`) decodes them.
//!
//! A field that does not fit in its buffer is an error, [`Truncated`], never
//! a zero and never a panic: hostile bytes choose the offsets, and a silent
//! zero can turn "absent" into "present". Each crate maps `Truncated` into
//! its own error (`FormatError` here, `FsError` in `guestinspect`), naming
//! the structure where that helps.
//!
//! ```
//! use diskformat::bytes::{u16_le, u32_be, Truncated};
//! let b = [0x12, 0x34, 0x56, 0x78];
//! assert_eq!(u32_be(&b, 0), Ok(0x1234_5678));
//! assert_eq!(u16_le(&b, 2), Ok(0x7856));
//! assert_eq!(u16_le(&b, 3), Err(Truncated { at: 3, len: 4, need: 2 }));
//! ```

/// A field of `need` bytes at offset `at` does not fit in a `len`-byte
/// buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {need}-byte field at offset {at} lies beyond the {len}-byte structure")]
pub struct Truncated {
    pub at: usize,
    pub len: usize,
    pub need: usize,
}

/// `b[at..at + need]`, or `Truncated`.
pub fn slice(b: &[u8], at: usize, need: usize) -> Result<&[u8], Truncated> {
    at.checked_add(need)
        .and_then(|end| b.get(at..end))
        .ok_or(Truncated {
            at,
            len: b.len(),
            need,
        })
}

/// The `N` bytes at `at`, or `Truncated`.
pub fn array<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], Truncated> {
    let mut a = [0u8; N];
    a.copy_from_slice(slice(b, at, N)?);
    Ok(a)
}

/// The byte at `at`, or `Truncated`.
pub fn u8_at(b: &[u8], at: usize) -> Result<u8, Truncated> {
    Ok(array::<1>(b, at)?[0])
}

pub fn u16_le(b: &[u8], at: usize) -> Result<u16, Truncated> {
    array(b, at).map(u16::from_le_bytes)
}

pub fn u32_le(b: &[u8], at: usize) -> Result<u32, Truncated> {
    array(b, at).map(u32::from_le_bytes)
}

pub fn u64_le(b: &[u8], at: usize) -> Result<u64, Truncated> {
    array(b, at).map(u64::from_le_bytes)
}

pub fn u16_be(b: &[u8], at: usize) -> Result<u16, Truncated> {
    array(b, at).map(u16::from_be_bytes)
}

pub fn u32_be(b: &[u8], at: usize) -> Result<u32, Truncated> {
    array(b, at).map(u32::from_be_bytes)
}

pub fn u64_be(b: &[u8], at: usize) -> Result<u64, Truncated> {
    array(b, at).map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_decode_in_both_orders() {
        let b: Vec<u8> = (1..=8).collect();
        assert_eq!(u8_at(&b, 7), Ok(8));
        assert_eq!(u16_le(&b, 0), Ok(0x0201));
        assert_eq!(u16_be(&b, 0), Ok(0x0102));
        assert_eq!(u32_le(&b, 4), Ok(0x0807_0605));
        assert_eq!(u32_be(&b, 4), Ok(0x0506_0708));
        assert_eq!(u64_le(&b, 0), Ok(0x0807_0605_0403_0201));
        assert_eq!(u64_be(&b, 0), Ok(0x0102_0304_0506_0708));
        assert_eq!(array::<3>(&b, 5), Ok([6, 7, 8]));
    }

    #[test]
    fn short_input_is_an_error_never_a_panic() {
        let b = [0u8; 8];
        let t = |at, need| Truncated { at, len: 8, need };
        assert_eq!(u8_at(&b, 8), Err(t(8, 1)));
        assert_eq!(u16_be(&b, 7), Err(t(7, 2)));
        assert_eq!(u32_le(&b, 5), Err(t(5, 4)));
        assert_eq!(u64_le(&b, 1), Err(t(1, 8)));
        assert_eq!(u64_be(&b, usize::MAX), Err(t(usize::MAX, 8)));
        assert_eq!(slice(&b, usize::MAX, 2).map(|_| ()), Err(t(usize::MAX, 2)));
        assert_eq!(slice(&b, 8, 0), Ok(&[][..]));
        assert!(u32_le(&[], 0).is_err());
    }
}
