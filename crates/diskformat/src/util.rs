//! Small helpers every parser uses: zero detection for the converter, and
//! checked arithmetic so no parser can overflow on hostile numbers. Field
//! decoding lives in [`crate::bytes`].

use crate::FormatError;

/// True when every byte of `buf` is zero. Compares 16-byte chunks (the
/// compiler vectorises this), so a 64 KiB cluster costs a few microseconds.
pub fn is_zero(buf: &[u8]) -> bool {
    let (chunks, rest) = buf.as_chunks::<16>();
    // Fold with OR instead of returning early inside the loop: the loop then
    // vectorises, and a non-zero cluster is usually caught by the cheap
    // prefix check below anyway.
    if let Some(first) = chunks.first() {
        if u128::from_ne_bytes(*first) != 0 {
            return false;
        }
    }
    for block in chunks.chunks(64) {
        let mut acc = 0u128;
        for c in block {
            acc |= u128::from_ne_bytes(*c);
        }
        if acc != 0 {
            return false;
        }
    }
    rest.iter().all(|&b| b == 0)
}

/// `a + b`, or `Corrupt` naming what overflowed.
pub fn add(a: u64, b: u64, what: &str) -> Result<u64, FormatError> {
    a.checked_add(b)
        .ok_or_else(|| FormatError::Corrupt(format!("{what} overflows")))
}

/// `a * b`, or `Corrupt` naming what overflowed.
pub fn mul(a: u64, b: u64, what: &str) -> Result<u64, FormatError> {
    a.checked_mul(b)
        .ok_or_else(|| FormatError::Corrupt(format!("{what} overflows")))
}

/// `a` rounded up to a multiple of `align` (a power of two), or `Corrupt`.
pub fn align_up(a: u64, align: u64, what: &str) -> Result<u64, FormatError> {
    debug_assert!(align.is_power_of_two());
    Ok(add(a, align - 1, what)? & !(align - 1))
}

/// `ceil(a / b)` for `b > 0`.
pub fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// `[a, a + alen)` and `[b, b + blen)` share at least one byte.
pub fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    let a_end = a.saturating_add(alen);
    let b_end = b.saturating_add(blen);
    alen != 0 && blen != 0 && a < b_end && b < a_end
}

/// `[start, start + len)` lies within the first `file_len` bytes, or
/// `Truncated` naming `what`.
pub fn check_inside(start: u64, len: u64, file_len: u64, what: &str) -> Result<(), FormatError> {
    match start.checked_add(len) {
        Some(e) if e <= file_len => Ok(()),
        _ => Err(FormatError::Truncated(format!(
            "{what} ({len} bytes at offset {start}) lies beyond the end of the file ({file_len} bytes)"
        ))),
    }
}

/// A guest read of `len` bytes at `offset` that leaves the `size`-byte disk.
pub fn out_of_range(offset: u64, len: u64, size: u64) -> FormatError {
    FormatError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("guest range {offset}+{len} is outside the {size}-byte disk"),
    ))
}

/// How many bytes an extent asked for at `offset` (at most `max_len`) may
/// cover of the `size`-byte disk; an offset at or past its end is an error.
pub fn extent_limit(offset: u64, max_len: u64, size: u64) -> Result<u64, FormatError> {
    if offset >= size {
        return Err(out_of_range(offset, 1, size));
    }
    Ok(max_len.min(size - offset))
}

/// `Ok` when a guest read of `len` bytes at `offset` stays within the
/// `size`-byte disk.
pub fn check_guest_range(offset: u64, len: u64, size: u64) -> Result<(), FormatError> {
    if offset.checked_add(len).is_none_or(|e| e > size) {
        return Err(out_of_range(offset, len, size));
    }
    Ok(())
}

/// The extent at `offset`, at most `limit` bytes, of a disk mapped in
/// blocks of `block_size` bytes where `has_data(block)` tells which hold
/// data: the following blocks of the same kind are merged into it (the map
/// is in memory, so the walk is cheap and bounded by `limit`).
pub fn block_extent(
    offset: u64,
    limit: u64,
    block_size: u64,
    has_data: impl Fn(u64) -> bool,
) -> crate::Extent {
    let kind_of = |b: u64| {
        if has_data(b) {
            crate::ExtentKind::Data
        } else {
            crate::ExtentKind::Zero
        }
    };
    let first = offset / block_size;
    let kind = kind_of(first);
    let mut end = (first + 1) * block_size;
    let mut b = first + 1;
    while end < offset + limit && kind_of(b) == kind {
        end += block_size;
        b += 1;
    }
    crate::Extent {
        offset,
        len: (end - offset).min(limit),
        kind,
    }
}

/// Reads `buf.len()` bytes at `offset` of the container; a short file is
/// `Truncated` naming `what`.
pub fn read_exact_at(
    src: &dyn crate::ReadAt,
    offset: u64,
    buf: &mut [u8],
    what: &str,
) -> Result<(), FormatError> {
    src.read_at(offset, buf)
        .map_err(|e| FormatError::from_read(e, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_finds_any_nonzero_byte() {
        for len in [0usize, 1, 15, 16, 17, 1024, 65536 + 7] {
            let mut v = vec![0u8; len];
            assert!(is_zero(&v));
            for pos in [0, len / 2, len.saturating_sub(1)] {
                if len == 0 {
                    continue;
                }
                v[pos] = 1;
                assert!(!is_zero(&v), "len {len} pos {pos}");
                v[pos] = 0;
            }
        }
    }

    #[test]
    fn arithmetic_refuses_overflow() {
        assert!(add(u64::MAX, 1, "x").is_err());
        assert!(mul(u64::MAX, 2, "x").is_err());
        assert!(align_up(u64::MAX - 3, 512, "x").is_err());
        assert_eq!(align_up(513, 512, "x").unwrap(), 1024);
        assert!(overlaps(0, 10, 9, 1));
        assert!(!overlaps(0, 10, 10, 1));
        assert!(!overlaps(0, 0, 0, 1));
    }
}
