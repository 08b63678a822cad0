//! Fixture helpers for the VMDK, VHD and VHDX tests: a raw disk with mixed
//! random, text and zero data, qemu-img to wrap it in each container, and
//! qemu-img again as the oracle (`convert -O raw`) for what a guest reads.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use diskformat::{DiskImage, ExtentKind, FormatError, Limits, ReadAt};

pub const MIB: usize = 1 << 20;

/// An owned in-memory image (mutated fixtures).
pub struct VecSource(pub Vec<u8>);

impl ReadAt for VecSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the end");
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        buf.copy_from_slice(self.0.get(start..end).ok_or_else(eof)?);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

pub type OpenFn = fn(Arc<dyn ReadAt>, &Limits) -> Result<Box<dyn DiskImage>, FormatError>;

pub fn open_bytes(open: OpenFn, bytes: Vec<u8>) -> Result<Box<dyn DiskImage>, FormatError> {
    open(Arc::new(VecSource(bytes)), &Limits::default())
}

pub fn open_path(open: OpenFn, path: &Path) -> Result<Box<dyn DiskImage>, FormatError> {
    let src = diskformat::FileSource::open(path).expect("fixture opens");
    open(Arc::new(src), &Limits::default())
}

/// xorshift64*: deterministic bytes without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A guest disk of `size` bytes (a multiple of 512, deliberately not of
/// 64 KiB or 1 MiB): random runs across block boundaries, text, scattered
/// 4 KiB chunks, long zero runs and data in the last partial grain/block.
pub fn mixed_raw(size: usize) -> Vec<u8> {
    assert!(size.is_multiple_of(512) && size > 7 * MIB);
    let mut d = vec![0u8; size];
    let mut rng = Rng::new(0x5eed);
    rng.fill(&mut d[..192 << 10]);
    let text = b"imagegate fixture text: the quick brown fox jumps over the lazy dog\n";
    for (i, b) in d[2 * MIB..2 * MIB + (64 << 10)].iter_mut().enumerate() {
        *b = text[i % text.len()];
    }
    rng.fill(&mut d[5 * MIB - 4096..6 * MIB + (300 << 10)]);
    let mut at = 6 * MIB + (512 << 10);
    while at + 4096 < size - 4096 {
        rng.fill(&mut d[at..at + 4096]);
        at += 512 << 10;
    }
    rng.fill(&mut d[size - 1000..]);
    d
}

pub fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `raw` to `dir/src.raw` and converts it to `name` with qemu-img.
pub fn make_fixture(dir: &Path, raw: &[u8], fmt: &str, opts: &str, name: &str) -> PathBuf {
    let src = dir.join(format!("{name}.src.raw"));
    std::fs::write(&src, raw).unwrap();
    let out = dir.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    let (s, o) = (src.to_str().unwrap(), out.to_str().unwrap());
    args.extend([s, o]);
    qemu_img(&args);
    out
}

/// The oracle: what qemu-img reads as the guest disk of `path`.
pub fn oracle(path: &Path, fmt: &str) -> Vec<u8> {
    let out = path.with_extension("oracle.raw");
    qemu_img(&[
        "convert",
        "-f",
        fmt,
        "-O",
        "raw",
        path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

/// Every guest byte of `img` equals `expected`: read whole, in odd-sized
/// pieces at odd offsets, and through the extent map (Zero extents must
/// read as zeros; extents tile the disk).
pub fn assert_guest_eq(img: &dyn DiskImage, expected: &[u8]) {
    assert_eq!(img.virtual_size(), expected.len() as u64, "virtual size");
    let size = expected.len();
    let mut all = vec![0xa5u8; size];
    img.read_guest(0, &mut all).unwrap();
    assert!(
        all == expected,
        "whole-disk read differs at byte {:?}",
        first_diff(&all, expected)
    );

    for piece in [4096usize, 65536 + 513, 1 << 20, 3 * MIB + 7] {
        let mut off = 511 % piece; // unaligned start
        let mut buf = vec![0u8; piece];
        while off < size {
            let n = piece.min(size - off);
            img.read_guest(off as u64, &mut buf[..n]).unwrap();
            assert!(
                buf[..n] == expected[off..off + n],
                "read of {n} at {off} differs"
            );
            off += n;
        }
    }

    let mut off = 0u64;
    let mut data_seen = false;
    while off < size as u64 {
        let e = img.extent_at(off, u64::MAX).unwrap();
        assert_eq!(e.offset, off);
        assert!(e.len > 0 && e.offset + e.len <= size as u64, "extent {e:?}");
        let range = &expected[off as usize..(off + e.len) as usize];
        match e.kind {
            ExtentKind::Zero => assert!(
                range.iter().all(|&b| b == 0),
                "zero extent {e:?} holds data"
            ),
            ExtentKind::Data => data_seen = true,
        }
        off += e.len;
    }
    assert!(data_seen);
    // A short max_len clips the extent.
    let e = img.extent_at(1, 100).unwrap();
    assert_eq!((e.offset, e.len), (1, 100));

    // Out of range is an error, not a panic.
    let mut b = [0u8; 2];
    assert!(img.read_guest(size as u64 - 1, &mut b).is_err());
    assert!(img.read_guest(u64::MAX, &mut b).is_err());
    assert!(img.extent_at(size as u64, 1).is_err());
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Opens a mutated image and, if it opens, reads every guest byte and the
/// extent map: whatever the bytes, no panic and bounded work.
pub fn exercise(open: OpenFn, bytes: Vec<u8>) {
    let limits = Limits {
        max_virtual_size: 64 << 20,
    };
    let Ok(img) = open(Arc::new(VecSource(bytes)), &limits) else {
        return;
    };
    let size = img.virtual_size();
    assert!(size <= 64 << 20);
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64);
        if img.read_guest(off, &mut buf[..n as usize]).is_err() {
            break;
        }
        off += n;
    }
    let mut off = 0u64;
    while off < size {
        match img.extent_at(off, u64::MAX) {
            Ok(e) if e.len > 0 => off += e.len,
            _ => break,
        }
    }
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
