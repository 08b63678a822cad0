//! Throughput of `open` + `convert` into the project's qcow2 writer, against
//! `qemu-img convert -O qcow2` on the same source in the same run.
//!
//! cargo run --release -p diskformat --example convert_bench -- \
//!     [--data-mib N] [--compressed zlib|zstd] [--image PATH]
//!
//! Without `--image`, builds a 2×N MiB-virtual disk holding N MiB of mixed
//! data (random and text in alternate 4 MiB stripes between zero stripes)
//! and wraps it as qcow2 with qemu-img; with `--image`, uses that file (any
//! format diskformat opens). Then times both converters (page cache warm
//! for both, outputs synced), the converter alone with the source in RAM
//! and the output discarded, and checks the output with `qemu-img compare`
//! and `qemu-img check`. Throughput counts guest data bytes.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use diskformat::qcow2::{AppendSink, Qcow2Writer};
use diskformat::{FileSource, Limits, ReadAt};

struct FileSink(File);

/// Discards what it is given: measures the converter's own CPU cost.
struct NullSink(u64);

impl AppendSink for NullSink {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0 += data.len() as u64;
        Ok(())
    }
}

impl AppendSink for FileSink {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(data)
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("qemu-img runs (package qemu-utils)");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

fn main() {
    let mut data_mib: u64 = 1024;
    let mut compressed: Option<String> = None;
    let mut given: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data-mib" => data_mib = args.next().and_then(|v| v.parse().ok()).unwrap_or(1024),
            "--compressed" => compressed = args.next(),
            "--image" => given = args.next().map(Into::into),
            _ => {
                eprintln!(
                    "usage: convert_bench [--data-mib N] [--compressed zlib|zstd] [--image PATH]"
                );
                std::process::exit(2);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let ours = dir.path().join("ours.qcow2");
    let theirs = dir.path().join("theirs.qcow2");

    let virtual_size = (2 * data_mib) << 20;
    let src = match &given {
        Some(path) => path.clone(),
        None => {
            let src = dir.path().join("src.qcow2");
            // 4 MiB stripes: data in every other one, alternating random and text.
            let stripe = 4u64 << 20;
            {
                let f = File::create(&raw).unwrap();
                f.set_len(virtual_size).unwrap();
                let mut rng = 0x9e37_79b9_7f4a_7c15u64;
                let text = b"imagegate converts disk images in pure Rust. ";
                let mut buf = vec![0u8; stripe as usize];
                for i in 0..(virtual_size / stripe / 2) {
                    if i % 2 == 0 {
                        for c in buf.chunks_mut(8) {
                            rng ^= rng >> 12;
                            rng ^= rng << 25;
                            rng ^= rng >> 27;
                            c.copy_from_slice(
                                &rng.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes(),
                            );
                        }
                    } else {
                        for (j, b) in buf.iter_mut().enumerate() {
                            *b = text[(j + i as usize) % text.len()];
                        }
                    }
                    f.write_all_at(&buf, 2 * i * stripe).unwrap();
                }
            }
            let mut c = Command::new("qemu-img");
            c.args(["convert", "-f", "raw", "-O", "qcow2"]);
            if let Some(kind) = &compressed {
                c.args(["-c", "-o", &format!("compression_type={kind}")]);
            }
            run(c.arg(&raw).arg(&src));
            src
        }
    };
    // Warm the page cache for both contenders.
    let _ = std::fs::read(&src).unwrap();

    let t = Instant::now();
    let source: Arc<dyn ReadAt> = Arc::new(FileSource::open(&src).unwrap());
    let img = diskformat::open(source, &Limits::default()).unwrap();
    // qemu-img's name for the detected format (it must be told: a fixed
    // VHD probes as raw).
    let qfmt = match img.info().format {
        diskformat::Format::Vhd => "vpc",
        f => f.name(),
    };
    let out = File::create(&ours).unwrap();
    let mut w =
        Qcow2Writer::new(FileSink(out.try_clone().unwrap()), img.virtual_size(), 0).unwrap();
    out.set_len(w.head_len()).unwrap();
    let mut pos_file = out.try_clone().unwrap();
    std::io::Seek::seek(&mut pos_file, std::io::SeekFrom::Start(w.head_len())).unwrap();
    let stats = diskformat::convert(&*img, &mut w, &mut |_| true).unwrap();
    let (sink, head, ws) = w.finish().unwrap();
    drop(sink);
    out.write_all_at(&head, 0).unwrap();
    out.sync_all().unwrap();
    let ours_s = t.elapsed().as_secs_f64();

    // The converter alone: source in memory, output discarded.
    let bytes: &'static [u8] = Box::leak(std::fs::read(&src).unwrap().into_boxed_slice());
    let t = Instant::now();
    let img =
        diskformat::open(Arc::new(diskformat::SliceSource(bytes)), &Limits::default()).unwrap();
    let mut w = Qcow2Writer::new(NullSink(0), img.virtual_size(), 0).unwrap();
    diskformat::convert(&*img, &mut w, &mut |_| true).unwrap();
    let (null, _, _) = w.finish().unwrap();
    let cpu_s = t.elapsed().as_secs_f64();
    assert!(null.0 > 0);

    let t = Instant::now();
    run(Command::new("qemu-img")
        .args(["convert", "-f", qfmt, "-O", "qcow2"])
        .arg(&src)
        .arg(&theirs));
    File::open(&theirs).unwrap().sync_all().unwrap();
    let theirs_s = t.elapsed().as_secs_f64();

    run(Command::new("qemu-img")
        .args(["compare", "-f", qfmt, "-F", "qcow2"])
        .arg(&src)
        .arg(&ours));
    run(Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&ours));

    // Throughput is counted in guest data bytes (what had to be copied).
    let data_bytes = stats.data_clusters * 65536;
    let mib = data_bytes as f64 / f64::from(1 << 20);
    println!(
        "source: {}{} {} MiB virtual, {} MiB data; {} clusters written, {} zero clusters skipped, output {} MiB",
        img.info().format.name(),
        compressed.map(|k| format!(" ({k})")).unwrap_or_default(),
        img.virtual_size() >> 20,
        data_bytes >> 20,
        stats.data_clusters,
        stats.zero_clusters_skipped,
        ws.file_size >> 20
    );
    println!(
        "diskformat open+convert: {ours_s:.2} s ({:.0} MiB/s of data)",
        mib / ours_s
    );
    println!(
        "diskformat in memory (source in RAM, output discarded): {cpu_s:.2} s ({:.0} MiB/s of data)",
        mib / cpu_s
    );
    println!(
        "qemu-img convert -O qcow2: {theirs_s:.2} s ({:.0} MiB/s of data)",
        mib / theirs_s
    );
    println!("ratio ours/qemu-img: {:.2}", ours_s / theirs_s);
}
