//! Decompression of one qcow2 compressed cluster, bounded in memory and CPU.
//!
//! The compressed size in an L2 entry is only an upper bound (whole
//! sectors), so the input may carry trailing bytes of the next cluster.
//! Output is produced into exactly one cluster; a stream that wants to
//! produce more ("decompression bomb") or fewer bytes is `Corrupt`. The
//! input is at most two clusters long, so work per cluster is bounded.

use std::io::Read;

use super::header::Compression;
use crate::bytes::{u16_le, u32_le, u64_le, u8_at};
use crate::FormatError;

/// Decompress `input` into `out` (exactly one cluster).
pub fn decompress(kind: Compression, input: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    Decompressor::new(kind).decompress(input, out)
}

/// A reusable decompressor: the inflate state and zstd frame decoder are
/// allocated once per image, not once per cluster.
pub struct Decompressor {
    kind: Compression,
    zlib: Option<flate2::Decompress>,
    zstd: Option<ruzstd::decoding::FrameDecoder>,
}

impl Decompressor {
    pub fn new(kind: Compression) -> Self {
        Decompressor {
            kind,
            zlib: None,
            zstd: None,
        }
    }

    /// Decompress `input` into `out` (exactly one cluster).
    pub fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
        match self.kind {
            Compression::Zlib => {
                let d = self
                    .zlib
                    .get_or_insert_with(|| flate2::Decompress::new(false));
                d.reset(false);
                inflate(d, input, out)
            }
            Compression::Zstd => {
                let d = self
                    .zstd
                    .get_or_insert_with(ruzstd::decoding::FrameDecoder::new);
                unzstd(d, input, out)
            }
        }
    }
}

fn corrupt(msg: &str) -> FormatError {
    FormatError::Corrupt(format!("qcow2 compressed cluster: {msg}"))
}

/// qcow2's zlib clusters are raw deflate streams (no zlib header).
fn inflate(d: &mut flate2::Decompress, input: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    use flate2::{FlushDecompress, Status};
    let mut filled = 0usize;
    // Every round either consumes input, produces output, or stops: the
    // total is bounded by input.len() + out.len() rounds.
    loop {
        let before_in = d.total_in();
        let before_out = d.total_out();
        let in_pos = before_in as usize;
        let status = d
            .decompress(
                input.get(in_pos..).unwrap_or(&[]),
                &mut out[filled..],
                FlushDecompress::None,
            )
            .map_err(|_| corrupt("invalid deflate stream"))?;
        filled = d.total_out() as usize;
        if filled == out.len() || status == Status::StreamEnd {
            break;
        }
        if d.total_in() == before_in && d.total_out() == before_out {
            break;
        }
    }
    if filled < out.len() {
        return Err(corrupt("deflate stream ends before filling the cluster"));
    }
    // One more byte of output would mean the stream expands beyond the
    // cluster: refuse it instead of silently truncating.
    let mut extra = [0u8; 1];
    let in_pos = d.total_in() as usize;
    match d.decompress(
        input.get(in_pos..).unwrap_or(&[]),
        &mut extra,
        FlushDecompress::None,
    ) {
        Ok(_) if d.total_out() as usize > out.len() => {
            Err(corrupt("deflate stream expands beyond the cluster size"))
        }
        _ => Ok(()),
    }
}

/// Window size a zstd frame header declares, so an absurd window is refused
/// before the decoder reserves memory for it. `None` for a malformed header.
fn zstd_window(frame: &[u8]) -> Option<(u64, bool)> {
    const MAGIC: u32 = 0xFD2F_B528;
    // Too short for magic and descriptor: malformed, as a wrong magic is.
    let magic = u32_le(frame, 0).ok()?;
    let desc = u8_at(frame, 4).ok()?;
    if magic != MAGIC || frame.len() < 6 {
        return None;
    }
    let fcs_flag = desc >> 6;
    let single = desc & 0x20 != 0;
    let has_dict = desc & 0x03 != 0;
    let mut pos = 5usize;
    if single {
        let fcs_len = match fcs_flag {
            0 => 1,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let dict_len = [0usize, 1, 2, 4][(desc & 3) as usize];
        pos += dict_len;
        let size = match fcs_len {
            1 => u64::from(u8_at(frame, pos).ok()?),
            2 => u64::from(u16_le(frame, pos).ok()?) + 256,
            4 => u64::from(u32_le(frame, pos).ok()?),
            _ => u64_le(frame, pos).ok()?,
        };
        Some((size, has_dict))
    } else {
        let wd = *frame.get(pos)?;
        let exp = u64::from(wd >> 3);
        let mant = u64::from(wd & 7);
        let log = 10 + exp;
        if log > 41 {
            return Some((u64::MAX, has_dict));
        }
        let base = 1u64 << log;
        Some((base + (base / 8) * mant, has_dict))
    }
}

/// qcow2's zstd clusters: one or more zstd frames, together exactly one
/// cluster of output.
fn unzstd(
    decoder: &mut ruzstd::decoding::FrameDecoder,
    input: &[u8],
    out: &mut [u8],
) -> Result<(), FormatError> {
    use ruzstd::decoding::StreamingDecoder;
    // The decoder keeps a window of history; a cluster never needs more
    // than itself (≤ 2 MiB), so anything over 8 MiB is hostile.
    const MAX_WINDOW: u64 = 8 << 20;
    let mut rest = input;
    let mut filled = 0usize;
    let mut frames = 0u32;
    while filled < out.len() {
        // Bounded: each frame consumes ≥ 6 bytes of a ≤ 4 MiB input.
        frames += 1;
        let (window, has_dict) =
            zstd_window(rest).ok_or_else(|| corrupt("bad zstd frame header"))?;
        if has_dict {
            return Err(corrupt("zstd frame needs a dictionary"));
        }
        if window > MAX_WINDOW {
            return Err(corrupt("zstd window size too large"));
        }
        let mut src = rest;
        let mut dec = StreamingDecoder::new_with_decoder(&mut src, &mut *decoder)
            .map_err(|_| corrupt("bad zstd frame"))?;
        loop {
            if filled == out.len() {
                break;
            }
            let n = dec
                .read(&mut out[filled..])
                .map_err(|_| corrupt("invalid zstd stream"))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == out.len() {
            // The frame must not hold more output than the cluster.
            let mut extra = [0u8; 1];
            if let Ok(n) = dec.read(&mut extra) {
                if n > 0 {
                    return Err(corrupt("zstd stream expands beyond the cluster size"));
                }
            }
            return Ok(());
        }
        // The decoder's borrow of `src` has ended; `src` now points past
        // the frame it decoded.
        if src.len() >= rest.len() {
            return Err(corrupt("zstd frame consumed no input"));
        }
        rest = src;
        if frames > 4096 {
            return Err(corrupt("too many zstd frames in one cluster"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::DeflateEncoder, Compression as Level};
    use std::io::Write;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Level::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflate_exact_cluster_with_trailing_garbage() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut c = deflate(&data);
        c.extend_from_slice(&[0xAB; 300]);
        let mut out = vec![0u8; 65536];
        decompress(Compression::Zlib, &c, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn inflate_bomb_is_refused_with_one_cluster_of_output() {
        // 64 MiB of zeros compress to ~64 KiB; the cluster is 64 KiB.
        let mut e = DeflateEncoder::new(Vec::new(), Level::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        let mut out = vec![0u8; 65536];
        let err =
            decompress(Compression::Zlib, &bomb[..bomb.len().min(131072)], &mut out).unwrap_err();
        assert!(matches!(err, FormatError::Corrupt(_)), "{err}");
    }

    #[test]
    fn inflate_short_stream_is_refused() {
        let c = deflate(&[1u8; 1000]);
        let mut out = vec![0u8; 4096];
        assert!(matches!(
            decompress(Compression::Zlib, &c, &mut out),
            Err(FormatError::Corrupt(_))
        ));
    }

    #[test]
    fn zstd_bad_input_is_corrupt() {
        let mut out = vec![0u8; 4096];
        for input in [
            &b""[..],
            b"\x28\xb5\x2f\xfd",
            b"\x28\xb5\x2f\xfd\x00\xff\xff\xff",
        ] {
            assert!(matches!(
                decompress(Compression::Zstd, input, &mut out),
                Err(FormatError::Corrupt(_))
            ));
        }
    }

    /// A zstd frame holding `data` as one raw block.
    fn raw_frame(data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 6 << 3];
        let header = ((data.len() as u32) << 3) | 1;
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn zstd_several_frames_fill_one_cluster() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 13) as u8).collect();
        let mut input = raw_frame(&data[..20000]);
        input.extend_from_slice(&raw_frame(&data[20000..]));
        input.extend_from_slice(&[0u8; 100]); // sector padding
        let mut out = vec![0u8; 65536];
        let mut d = Decompressor::new(Compression::Zstd);
        d.decompress(&input, &mut out).unwrap();
        assert_eq!(out, data);
        // The decoder is reusable, including after a failure.
        assert!(d.decompress(&input[..30000], &mut out).is_err());
        out.fill(0);
        d.decompress(&input, &mut out).unwrap();
        assert_eq!(out, data);
        // A stream longer than the cluster (by one byte) is refused.
        let mut over = input.clone();
        over.truncate(input.len() - 100);
        over.extend_from_slice(&raw_frame(&[1, 2, 3]));
        let mut small = vec![0u8; 65536 - 1];
        assert!(d.decompress(&over, &mut small).is_err());
    }

    #[test]
    fn zstd_huge_window_is_refused() {
        // Frame header: magic, descriptor without single segment, window
        // descriptor exponent 31 (2 TiB window).
        let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 31 << 3];
        f.extend_from_slice(&[0; 16]);
        let mut out = vec![0u8; 4096];
        assert!(matches!(
            decompress(Compression::Zstd, &f, &mut out),
            Err(FormatError::Corrupt(_))
        ));
    }
}
