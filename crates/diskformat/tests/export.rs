//! Export to every format, judged by qemu-img: a mixed disk (data runs,
//! text, scattered bytes, a 16 MiB hole, a partial last unit) is made a
//! qcow2 by qemu-img, opened by diskformat, exported, and then
//! `qemu-img check` (where the format has one) and `qemu-img compare`
//! against the source raw must pass, the virtual size must be exact, and
//! diskformat's own reader must read the source's bytes back. A strictly
//! sequential sink must produce the same bytes as the file sink.

mod qcow2_common;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use diskformat::export::{export_with, ExportOptions, Progress, SequentialSink};
use diskformat::{DiskImage, ExportFormat, FileSink};
use qcow2_common::*;

/// 40 MiB + 3 sectors: not a multiple of a cluster, grain or VHD block.
const SIZE: usize = 40 * (1 << 20) + 3 * 512;
const HOLE: std::ops::Range<usize> = (8 << 20)..(24 << 20);

/// qemu-img present; a missing one fails under IMAGEGATE_REQUIRE_TOOLS.
fn tools() -> bool {
    if have_qemu_img() {
        return true;
    }
    assert!(
        std::env::var_os("IMAGEGATE_REQUIRE_TOOLS").is_none(),
        "IMAGEGATE_REQUIRE_TOOLS is set, so this test may not skip: no qemu-img"
    );
    false
}

/// The source raw and the qcow2 qemu-img made of it.
fn source(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let mut data = mixed_disk(SIZE, 14);
    data[HOLE].fill(0);
    let raw = p(dir, "src.raw");
    write_file(&raw, &data);
    let qcow2 = p(dir, "src.qcow2");
    qemu_img_ok(&["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&qcow2)]);
    (raw, qcow2, data)
}

fn qemu_name(f: ExportFormat) -> &'static str {
    match f {
        ExportFormat::Raw => "raw",
        ExportFormat::Qcow2 => "qcow2",
        ExportFormat::Vhd => "vpc",
        ExportFormat::Vmdk => "vmdk",
    }
}

fn run(
    img: &dyn DiskImage,
    f: ExportFormat,
    sink: &mut dyn diskformat::ExportSink,
    workers: usize,
) {
    let mut last = Progress {
        guest_done: 0,
        virtual_size: 0,
        bytes_written: 0,
    };
    let summary = export_with(
        img,
        f,
        sink,
        &mut |p| {
            assert!(p.guest_done >= last.guest_done && p.bytes_written >= last.bytes_written);
            assert!(p.guest_done <= p.virtual_size);
            last = p;
            true
        },
        &ExportOptions {
            workers,
            created_unix: Some(1_700_000_000),
            disk_id: Some([7; 16]),
        },
    )
    .unwrap_or_else(|e| panic!("{f}: {e}"));
    assert_eq!(
        last.guest_done,
        img.virtual_size(),
        "{f}: progress ends at 100%"
    );
    assert_eq!(summary.bytes_written, last.bytes_written);
    assert!(
        summary.bytes_read < SIZE as u64 - HOLE.len() as u64 / 2,
        "{f}: hole read"
    );
}

/// qemu-img's and diskformat's verdicts on `out`.
fn judge(f: ExportFormat, raw: &Path, out: &Path, data: &[u8]) {
    let q = qemu_name(f);
    if matches!(f, ExportFormat::Qcow2 | ExportFormat::Vmdk) {
        let (code, text) = qemu_img(&["check", "-f", q, s(out)]);
        assert_eq!(code, 0, "{f}: qemu-img check: {text}");
    }
    let (code, text) = qemu_img(&["compare", "-f", "raw", "-F", q, s(raw), s(out)]);
    assert_eq!(code, 0, "{f}: qemu-img compare: {text}");
    let (code, text) = qemu_img(&["info", "--output=json", "-f", q, s(out)]);
    assert_eq!(code, 0, "{f}: qemu-img info: {text}");
    assert!(
        text.contains(&format!("\"virtual-size\": {SIZE},")),
        "{f}: virtual size: {text}"
    );
    let back = open_file(out).unwrap_or_else(|e| panic!("{f}: own reader: {e}"));
    assert_eq!(back.info().format.name(), q.replace("vpc", "vhd"));
    assert!(
        read_all(&*back) == data,
        "{f}: own reader reads other bytes"
    );
}

fn through(f: ExportFormat) {
    if !tools() {
        return;
    }
    let dir = tmpdir();
    let (raw, qcow2, data) = source(dir.path());
    let img = open_file(&qcow2).unwrap();

    let out = p(dir.path(), &format!("out.{}", f.extension()));
    let mut sink = FileSink::create(&out).unwrap();
    run(&*img, f, &mut sink, 3);
    judge(f, &raw, &out, &data);

    // Strictly sequential, one thread: the very same bytes.
    let seq = p(dir.path(), &format!("seq.{}", f.extension()));
    let mut sink = SequentialSink(File::create(&seq).unwrap());
    run(&*img, f, &mut sink, 1);
    drop(sink);
    assert!(
        std::fs::read(&seq).unwrap() == std::fs::read(&out).unwrap(),
        "{f}: sequential sink wrote other bytes"
    );
}

#[test]
fn raw() {
    through(ExportFormat::Raw);
}

#[test]
fn qcow2() {
    through(ExportFormat::Qcow2);
}

#[test]
fn vhd() {
    through(ExportFormat::Vhd);
}

#[test]
fn vmdk_stream_optimized() {
    through(ExportFormat::Vmdk);
}

#[test]
fn raw_file_sink_keeps_holes() {
    if !tools() {
        return;
    }
    let dir = tmpdir();
    let (_, qcow2, _) = source(dir.path());
    let img = open_file(&qcow2).unwrap();
    let out = p(dir.path(), "holes.raw");
    let mut sink = FileSink::create(&out).unwrap();
    run(&*img, ExportFormat::Raw, &mut sink, 2);
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), SIZE as u64);
    let on_disk = meta.blocks() * 512;
    assert!(
        on_disk <= (SIZE - HOLE.len()) as u64,
        "{on_disk} bytes allocated for {SIZE} with a {} byte hole",
        HOLE.len()
    );
}

#[test]
fn cancel_stops_the_export() {
    if !tools() {
        return;
    }
    let dir = tmpdir();
    let (_, qcow2, _) = source(dir.path());
    let img = open_file(&qcow2).unwrap();
    for f in ExportFormat::ALL {
        let mut sink = SequentialSink(Vec::new());
        let r = export_with(
            &*img,
            f,
            &mut sink,
            &mut |p| p.guest_done < 4 << 20,
            &ExportOptions {
                workers: 2,
                ..ExportOptions::default()
            },
        );
        assert!(
            matches!(r, Err(diskformat::ExportError::Cancelled)),
            "{f}: {r:?}"
        );
    }
}
