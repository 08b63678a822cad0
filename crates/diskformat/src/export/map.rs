//! The allocation map of the source: one bit per 64 KiB unit of guest
//! space, set when any byte of the unit lies in a Data extent.
//!
//! Contract: built once, before any output, from `DiskImage::extent_at`;
//! every writer plans its metadata from it. One `u64` word covers one 4 MiB
//! window (64 units), which is what the pipeline reads at a time. Memory is
//! virtual size / 512 Ki (1 MiB for 500 GiB). Threat model: extents come
//! from a possibly hostile container; each must start where asked, be
//! non-empty and end inside the disk, or the build fails with `Corrupt`
//! (so it always advances and ends).

use crate::{DiskImage, ExtentKind, FormatError};

/// The map's unit, and the cluster/grain size of the writers.
pub(crate) const UNIT: u64 = 64 << 10;
/// Units per word, and so per pipeline window.
pub(crate) const UNITS_PER_WORD: u64 = 64;
/// Guest bytes per word (4 MiB).
pub(crate) const WORD_SPAN: u64 = UNIT * UNITS_PER_WORD;

pub(crate) struct AllocMap {
    virtual_size: u64,
    words: Vec<u64>,
}

impl AllocMap {
    pub(crate) fn build(disk: &dyn DiskImage) -> Result<Self, FormatError> {
        let vs = disk.virtual_size();
        let nwords = usize::try_from(vs.div_ceil(WORD_SPAN))
            .map_err(|_| FormatError::TooLarge("virtual size".into()))?;
        let mut map = AllocMap {
            virtual_size: vs,
            words: vec![0u64; nwords],
        };
        let mut pos = 0u64;
        while pos < vs {
            let e = disk.extent_at(pos, vs - pos)?;
            if e.offset != pos || e.len == 0 || e.len > vs - pos {
                return Err(FormatError::Corrupt(format!(
                    "container returned an invalid extent at {pos}: {e:?}"
                )));
            }
            if e.kind == ExtentKind::Data {
                map.set_range(pos / UNIT, (pos + e.len).div_ceil(UNIT));
            }
            pos += e.len;
        }
        Ok(map)
    }

    /// Sets units `[first, end)`.
    fn set_range(&mut self, first: u64, end: u64) {
        let mut u = first;
        while u < end {
            let w = (u / UNITS_PER_WORD) as usize;
            let bit = u % UNITS_PER_WORD;
            let n = (UNITS_PER_WORD - bit).min(end - u);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            self.words[w] |= mask;
            u += n;
        }
    }

    pub(crate) fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// Units covering the disk (the last may be partial).
    pub(crate) fn units(&self) -> u64 {
        self.virtual_size.div_ceil(UNIT)
    }

    /// The 64 unit bits of window `w` (bit i = unit `w * 64 + i`).
    pub(crate) fn word(&self, w: usize) -> u64 {
        self.words.get(w).copied().unwrap_or(0)
    }

    pub(crate) fn words(&self) -> usize {
        self.words.len()
    }

    pub(crate) fn is_set(&self, unit: u64) -> bool {
        self.word((unit / UNITS_PER_WORD) as usize) >> (unit % UNITS_PER_WORD) & 1 == 1
    }

    /// Allocated units in `[first, end)`.
    pub(crate) fn count(&self, first: u64, end: u64) -> u64 {
        let end = end.min(self.units());
        let mut n = 0u64;
        let mut u = first;
        while u < end {
            let bit = u % UNITS_PER_WORD;
            let k = (UNITS_PER_WORD - bit).min(end - u);
            let word = self.word((u / UNITS_PER_WORD) as usize) >> bit;
            let word = if k == 64 { word } else { word & ((1 << k) - 1) };
            n += u64::from(word.count_ones());
            u += k;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_counts() {
        let mut m = AllocMap {
            virtual_size: 3 * WORD_SPAN + 5,
            words: vec![0; 4],
        };
        m.set_range(3, 70);
        m.set_range(190, 193);
        assert_eq!(m.count(0, m.units()), 67 + 3);
        assert!(m.is_set(3) && m.is_set(69) && !m.is_set(70) && !m.is_set(2));
        assert_eq!(m.count(60, 66), 6);
        assert_eq!(m.word(0), u64::MAX << 3);
        assert_eq!(m.word(1), 0b11_1111);
        assert_eq!(m.count(192, 1000), 1);
    }
}
