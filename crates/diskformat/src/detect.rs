//! Format detection by content, never by name.
//!
//! Only the first and last 64 KiB of the file are read, and every format's
//! `probe` runs on them; the verdict is the set of matches. More than one
//! match is refused (`Ambiguous`): a fixed VHD whose guest disk starts with
//! a qcow2 header must not be opened as either. No match means raw.

use crate::{Format, FormatError, ReadAt};

/// How much of each end of the file the probes see.
pub const PROBE_LEN: u64 = 64 << 10;

/// A format's signature check on the head and tail of the file.
pub type Probe = fn(head: &[u8], tail: &[u8], file_len: u64) -> bool;

/// Every recognisable format and its probe. Raw has none (it is the
/// fallback).
pub const PROBES: &[(Format, Probe)] = &[
    (Format::Qcow2, crate::qcow2::probe),
    (Format::Qed, crate::qed::probe),
    (Format::Vdi, crate::vdi::probe),
    (Format::Luks, crate::luks::probe),
    (Format::Iso, crate::iso::probe),
    (Format::Vmdk, crate::vmdk::probe),
    (Format::Vhd, crate::vhd::probe),
    (Format::Vhdx, crate::vhdx::probe),
];

/// The result of detection: the one format the content matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub format: Format,
}

/// Read the head and tail of `src` and run every probe on them.
pub fn detect(src: &dyn ReadAt) -> Result<Detection, FormatError> {
    let len = src.len();
    let head_len = len.min(PROBE_LEN) as usize;
    let mut head = vec![0u8; head_len];
    src.read_at(0, &mut head)
        .map_err(|e| FormatError::from_read(e, "the image head"))?;
    let tail_len = len.min(PROBE_LEN);
    let mut tail = vec![0u8; tail_len as usize];
    src.read_at(len - tail_len, &mut tail)
        .map_err(|e| FormatError::from_read(e, "the image tail"))?;
    detect_bytes(&head, &tail, len)
}

/// Detection on head/tail bytes already in memory.
pub fn detect_bytes(head: &[u8], tail: &[u8], file_len: u64) -> Result<Detection, FormatError> {
    let matched: Vec<Format> = PROBES
        .iter()
        .filter(|(_, probe)| probe(head, tail, file_len))
        .map(|(f, _)| *f)
        .collect();
    match matched.as_slice() {
        [] => Ok(Detection {
            format: Format::Raw,
        }),
        [one] => Ok(Detection { format: *one }),
        many => Err(FormatError::Ambiguous(
            many.iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(" and "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SliceSource;

    #[test]
    fn small_and_empty_files_are_raw() {
        for len in [0usize, 1, 511, 4096] {
            let data = vec![0u8; len];
            assert_eq!(detect(&SliceSource(&data)).unwrap().format, Format::Raw);
        }
    }

    #[test]
    fn two_signatures_are_ambiguous() {
        // A LUKS magic at 0 and an ISO descriptor at 32 KiB.
        let mut data = vec![0u8; 40000];
        data[..6].copy_from_slice(b"LUKS\xba\xbe");
        data[32769..32774].copy_from_slice(b"CD001");
        let err = detect(&SliceSource(&data)).unwrap_err();
        assert!(
            matches!(err, FormatError::Ambiguous(ref m) if m.contains("luks") && m.contains("iso")),
            "{err}"
        );
    }
}
