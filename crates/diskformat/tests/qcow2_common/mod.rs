//! Helpers for the qcow2/raw/detection tests: deterministic source disks,
//! qemu-img to make fixtures and to judge results, and a file-backed
//! `AppendSink` the way the service uses the writer.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use diskformat::qcow2::{AppendSink, Qcow2Writer};
use diskformat::{DiskImage, FileSource, FormatError, Limits, ReadAt};

pub const MIB: u64 = 1 << 20;

/// qemu-img present? If not, the caller prints why it skips.
pub fn have_qemu_img() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: qemu-img not found (Debian package qemu-utils)");
    }
    ok
}

/// Run qemu-img with `args`; returns (exit code, stdout+stderr).
pub fn qemu_img(args: &[&str]) -> (i32, String) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

pub fn qemu_img_ok(args: &[&str]) {
    let (code, text) = qemu_img(args);
    assert_eq!(code, 0, "qemu-img {args:?} failed: {text}");
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

/// A guest disk of `size` bytes mixing random runs (incompressible), text
/// runs (compressible), zero runs, and single non-zero bytes inside zero
/// clusters, at offsets that cross cluster and 512 MiB boundaries poorly.
pub fn mixed_disk(size: usize, seed: u64) -> Vec<u8> {
    let mut d = vec![0u8; size];
    let mut rng = Rng::new(seed);
    let text = b"The quick brown fox jumps over the lazy dog; imagegate qcow2 test. ";
    let mut pos = 0usize;
    while pos < size {
        let run = (rng.next() % (300 * 1024) + 1) as usize;
        let end = (pos + run).min(size);
        match rng.next() % 4 {
            0 => rng.fill(&mut d[pos..end]),
            1 => {
                for (i, b) in d[pos..end].iter_mut().enumerate() {
                    *b = text[(pos + i) % text.len()];
                }
            }
            2 => {
                // A lone byte in an otherwise zero stretch.
                let at = pos + (rng.next() as usize % (end - pos));
                d[at] = 0x5a;
            }
            _ => {}
        }
        pos = end;
    }
    // The very last byte non-zero: the tail of a non-aligned disk matters.
    if let Some(b) = d.last_mut() {
        *b = 0xee;
    }
    d
}

pub fn write_file(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
}

/// Appends to a file, the way the local blob store does.
pub struct FileSink(pub File);

impl AppendSink for FileSink {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(data)
    }
}

pub fn open_file(path: &Path) -> Result<Box<dyn DiskImage>, FormatError> {
    open_file_limits(path, &Limits::default())
}

pub fn open_file_limits(path: &Path, limits: &Limits) -> Result<Box<dyn DiskImage>, FormatError> {
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(path).unwrap());
    diskformat::open(src, limits)
}

/// Convert `img` into a qcow2 at `out` with the project's writer; the head
/// is written last with pwrite at offset 0, as the service does.
pub fn convert_to(img: &dyn DiskImage, out: &Path, min_head: u64) -> diskformat::ConvertStats {
    let file = File::create(out).unwrap();
    let mut w = Qcow2Writer::new(
        FileSink(file.try_clone().unwrap()),
        img.virtual_size(),
        min_head,
    )
    .unwrap();
    // Reserve the head: appends land after it.
    file.set_len(w.head_len()).unwrap();
    let mut f2 = file.try_clone().unwrap();
    use std::io::Seek;
    f2.seek(std::io::SeekFrom::Start(w.head_len())).unwrap();
    let mut last = 0;
    let stats = diskformat::convert(img, &mut w, &mut |done| {
        assert!(done >= last, "progress goes forward");
        last = done;
        true
    })
    .unwrap();
    assert_eq!(last, img.virtual_size());
    let written = w.bytes_written();
    let (sink, head, ws) = w.finish().unwrap();
    assert!(ws.file_size >= written);
    drop(sink);
    file.write_all_at(&head, 0).unwrap();
    assert_eq!(file.metadata().unwrap().len(), ws.file_size);
    stats
}

/// Read the whole guest disk through `read_guest` in uneven chunks.
pub fn read_all(img: &dyn DiskImage) -> Vec<u8> {
    let size = img.virtual_size() as usize;
    let mut out = vec![0u8; size];
    let chunks = [1 << 20, 4096 + 512, 65536 * 3 + 17, 511, 2 << 20];
    let mut pos = 0usize;
    let mut i = 0;
    while pos < size {
        let n = chunks[i % chunks.len()].min(size - pos);
        img.read_guest(pos as u64, &mut out[pos..pos + n]).unwrap();
        pos += n;
        i += 1;
    }
    out
}

/// Every extent reported must agree with the data: zero extents read as
/// zeros, and the extents tile the disk.
pub fn check_extents(img: &dyn DiskImage, data: &[u8]) {
    let size = img.virtual_size();
    let mut pos = 0u64;
    while pos < size {
        let e = img.extent_at(pos, size - pos).unwrap();
        assert_eq!(e.offset, pos);
        assert!(e.len > 0 && e.len <= size - pos);
        if e.kind == diskformat::ExtentKind::Zero {
            let s = &data[pos as usize..(pos + e.len) as usize];
            assert!(diskformat::is_zero(s), "zero extent at {pos} holds data");
        }
        pos += e.len;
    }
}

pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}
