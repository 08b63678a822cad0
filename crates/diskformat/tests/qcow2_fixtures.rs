//! qemu-img makes qcow2 fixtures in every variant (v2, v3, zlib, zstd,
//! extended L2, 4 KiB and 2 MiB clusters, zero clusters and partial
//! subclusters written by qemu-io); every guest byte must read back as the
//! source raw, and the project's writer must turn each into a qcow2 that
//! `qemu-img check` finds clean and `qemu-img compare` finds identical.

mod qcow2_common;

use diskformat::{Format, FormatError};
use qcow2_common::*;

/// 20 MiB + 7 sectors: not a multiple of any cluster size used.
const SIZE: usize = 20 * (1 << 20) + 7 * 512;

fn roundtrip(name: &str, opts: &[&str]) {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let src = p(dir.path(), "src.raw");
    let data = mixed_disk(SIZE, name.len() as u64 * 7919);
    write_file(&src, &data);
    let img_path = p(dir.path(), "img.qcow2");
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.push(s(&src));
    args.push(s(&img_path));
    qemu_img_ok(&args);

    let img = open_file(&img_path).unwrap();
    assert_eq!(img.info().format, Format::Qcow2, "{name}");
    assert_eq!(img.virtual_size(), SIZE as u64, "{name}");
    let zstd = opts.iter().any(|o| o.contains("compression_type=zstd"));
    assert_eq!(img.info().compression.is_some(), zstd, "{name}");
    assert_eq!(
        img.info().subformat.as_deref(),
        Some(if opts.iter().any(|o| o.contains("compat=0.10")) {
            "v2"
        } else {
            "v3"
        }),
        "{name}"
    );
    let back = read_all(&*img);
    assert!(back == data, "{name}: guest bytes differ from the source");
    check_extents(&*img, &data);

    let out = p(dir.path(), "out.qcow2");
    let stats = convert_to(&*img, &out, 0);
    assert_eq!(stats.guest_bytes, SIZE as u64);
    let (code, text) = qemu_img(&["check", "-f", "qcow2", s(&out)]);
    assert_eq!(code, 0, "{name}: qemu-img check: {text}");
    let (code, text) = qemu_img(&["compare", "-f", "raw", "-F", "qcow2", s(&src), s(&out)]);
    assert_eq!(code, 0, "{name}: qemu-img compare: {text}");

    // And our reader agrees with our writer.
    let again = open_file(&out).unwrap();
    assert!(
        read_all(&*again) == data,
        "{name}: re-read of our output differs"
    );
}

#[test]
fn v2_compat_0_10() {
    roundtrip("v2", &["-o", "compat=0.10"]);
}

#[test]
fn v3_default() {
    roundtrip("v3", &[]);
}

#[test]
fn v3_zlib_compressed() {
    roundtrip("zlib", &["-c"]);
}

#[test]
fn v3_zstd_compressed() {
    roundtrip("zstd", &["-c", "-o", "compression_type=zstd"]);
}

#[test]
fn v2_zlib_compressed() {
    roundtrip("v2zlib", &["-c", "-o", "compat=0.10"]);
}

#[test]
fn extended_l2() {
    roundtrip("extl2", &["-o", "extended_l2=on"]);
}

#[test]
fn extended_l2_compressed_2m() {
    roundtrip("extl2c", &["-c", "-o", "extended_l2=on,cluster_size=2M"]);
}

#[test]
fn cluster_4k() {
    roundtrip("c4k", &["-o", "cluster_size=4096"]);
}

#[test]
fn cluster_2m() {
    roundtrip("c2m", &["-o", "cluster_size=2M"]);
}

#[test]
fn cluster_512_zstd() {
    roundtrip(
        "c512",
        &["-c", "-o", "cluster_size=512,compression_type=zstd"],
    );
}

#[test]
fn preallocated_metadata() {
    roundtrip("prealloc", &["-o", "preallocation=metadata"]);
}

#[test]
fn lazy_refcounts_and_refcount_bits_64() {
    roundtrip("lazy", &["-o", "lazy_refcounts=on,refcount_bits=64"]);
}

#[test]
fn refcount_bits_1() {
    roundtrip("rc1", &["-o", "refcount_bits=1"]);
}

/// Zero clusters (v3 zero flag over allocated data) and partially written
/// subclusters, made with qemu-io on top of data.
fn qemu_io_variant(name: &str, create_opts: &str, from_empty: bool, ops: &[&str]) {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let src = p(dir.path(), "src.raw");
    let data = mixed_disk(SIZE, 4242);
    write_file(&src, &data);
    let img_path = p(dir.path(), "img.qcow2");
    if from_empty {
        let size = SIZE.to_string();
        qemu_img_ok(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            create_opts,
            s(&img_path),
            &size,
        ]);
    } else {
        qemu_img_ok(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            create_opts,
            s(&src),
            s(&img_path),
        ]);
    }
    for op in ops {
        let out = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", op, s(&img_path)])
            .output();
        match out {
            Ok(o) => assert!(o.status.success(), "qemu-io {op}: {o:?}"),
            Err(_) => {
                eprintln!("SKIP: qemu-io not found (Debian package qemu-utils)");
                return;
            }
        }
    }
    // The oracle for the expected guest content is qemu-img itself.
    let expect_path = p(dir.path(), "expect.raw");
    qemu_img_ok(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        s(&img_path),
        s(&expect_path),
    ]);
    let expect = std::fs::read(&expect_path).unwrap();

    let img = open_file(&img_path).unwrap();
    let back = read_all(&*img);
    assert!(
        back == expect,
        "{name}: guest bytes differ from qemu-img's view"
    );
    check_extents(&*img, &expect);
    let out = p(dir.path(), "out.qcow2");
    convert_to(&*img, &out, 0);
    let (code, text) = qemu_img(&["check", "-f", "qcow2", s(&out)]);
    assert_eq!(code, 0, "{name}: qemu-img check: {text}");
    let (code, text) = qemu_img(&[
        "compare",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        s(&img_path),
        s(&out),
    ]);
    assert_eq!(code, 0, "{name}: qemu-img compare: {text}");
}

#[test]
fn zero_flag_clusters() {
    qemu_io_variant(
        "zeroflag",
        "compat=1.1",
        false,
        &["write -z 0 1M", "write -z 3M 192k", "write -P 0x11 5M 4k"],
    );
}

#[test]
fn extended_l2_partial_subclusters() {
    qemu_io_variant(
        "subclusters",
        "extended_l2=on,cluster_size=128k",
        true,
        &[
            "write -P 0x33 17M 4k",
            "write -P 0x44 18M 8k",
            "write -P 0x66 0 128k",
            "write -z 4k 12k",
            "write -P 0x55 260k 1k",
            "write -P 0x77 19M 128k",
            "write -z 19M 64k",
        ],
    );
}

/// A raw source whose size is not a multiple of the cluster size converts
/// to a qcow2 identical to it; the head can be padded (S3 first part).
#[test]
fn raw_source_converts_with_padded_head() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let src = p(dir.path(), "src.raw");
    let data = mixed_disk(SIZE, 99);
    write_file(&src, &data);
    let img = open_file(&src).unwrap();
    assert_eq!(img.info().format, Format::Raw);
    let out = p(dir.path(), "out.qcow2");
    let stats = convert_to(&*img, &out, 5 << 20);
    assert!(
        stats.zero_clusters_skipped > 0,
        "the mixed disk has zero clusters"
    );
    assert!(stats.data_clusters > 0);
    let (code, text) = qemu_img(&["check", "-f", "qcow2", s(&out)]);
    assert_eq!(code, 0, "qemu-img check: {text}");
    let (code, text) = qemu_img(&["compare", "-f", "raw", "-F", "qcow2", s(&src), s(&out)]);
    assert_eq!(code, 0, "qemu-img compare: {text}");
    // Zero clusters stay unallocated: the output is smaller than the data.
    let out_len = std::fs::metadata(&out).unwrap().len();
    assert!(
        out_len < (5 << 20) + (stats.data_clusters + 64) * 65536,
        "output {out_len} bytes holds more than the data clusters"
    );
}

/// A disk whose size is not even a multiple of 512: the qcow2 records it
/// rounded up (as qemu does) and the tail reads as zeros.
#[test]
fn odd_sized_raw_source() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let src = p(dir.path(), "src.raw");
    let data = mixed_disk(3 * (1 << 20) + 1000, 5);
    write_file(&src, &data);
    let img = open_file(&src).unwrap();
    let out = p(dir.path(), "out.qcow2");
    convert_to(&*img, &out, 0);
    let (code, text) = qemu_img(&["check", "-f", "qcow2", s(&out)]);
    assert_eq!(code, 0, "qemu-img check: {text}");
    let (code, text) = qemu_img(&["compare", "-f", "raw", "-F", "qcow2", s(&src), s(&out)]);
    assert_eq!(code, 0, "qemu-img compare: {text}");
}

/// A disk with data beyond the first 512 MiB L2 region and nothing in
/// between: the writer touches only two L2 tables, and the empty space
/// costs neither reads nor output.
#[test]
fn sparse_large_disk() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let img_path = p(dir.path(), "img.qcow2");
    qemu_img_ok(&["create", "-f", "qcow2", s(&img_path), "3G"]);
    for op in [
        "write -P 0x61 0 64k",
        "write -P 0x62 2G 1M",
        "write -P 0x63 3071M 1M",
    ] {
        let o = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", op, s(&img_path)])
            .output()
            .expect("qemu-io runs");
        assert!(o.status.success(), "{o:?}");
    }
    let img = open_file(&img_path).unwrap();
    let out = p(dir.path(), "out.qcow2");
    let stats = convert_to(&*img, &out, 0);
    assert_eq!(stats.data_clusters, 1 + 16 + 16);
    assert!(
        stats.bytes_read <= 3 << 20,
        "read {} bytes",
        stats.bytes_read
    );
    let (code, text) = qemu_img(&["check", "-f", "qcow2", s(&out)]);
    assert_eq!(code, 0, "qemu-img check: {text}");
    let (code, text) = qemu_img(&[
        "compare",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        s(&img_path),
        s(&out),
    ]);
    assert_eq!(code, 0, "qemu-img compare: {text}");
}

#[test]
fn cancel_stops_the_conversion() {
    let data = mixed_disk(8 << 20, 1);
    let data: &'static [u8] = Box::leak(data.into_boxed_slice());
    let img = diskformat::open(
        std::sync::Arc::new(diskformat::SliceSource(data)),
        &diskformat::Limits::default(),
    )
    .unwrap();
    let mut w = diskformat::qcow2::Qcow2Writer::new(Vec::new(), img.virtual_size(), 0).unwrap();
    let mut calls = 0;
    let err = diskformat::convert(&*img, &mut w, &mut |_| {
        calls += 1;
        false
    })
    .unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert_eq!(calls, 1);
    assert!(matches!(err, FormatError::Io(_)));
}

/// An empty source still makes a valid (empty) qcow2.
#[test]
fn empty_source() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let src = p(dir.path(), "empty.raw");
    write_file(&src, &[]);
    let img = open_file(&src).unwrap();
    assert_eq!(img.virtual_size(), 0);
    let out = p(dir.path(), "out.qcow2");
    let stats = convert_to(&*img, &out, 0);
    assert_eq!(stats.data_clusters, 0);
    let (code, text) = qemu_img(&["check", "-f", "qcow2", s(&out)]);
    assert_eq!(code, 0, "qemu-img check: {text}");
    let (code, text) = qemu_img(&["compare", "-f", "raw", "-F", "qcow2", s(&src), s(&out)]);
    assert_eq!(code, 0, "qemu-img compare: {text}");
    assert_eq!(open_file(&out).unwrap().virtual_size(), 0);
}

/// Sizes at and around cluster and L2-region boundaries, with data in the
/// first, last and boundary clusters, written out of order: qemu-img finds
/// each output clean and equal to a sparse raw holding the same bytes.
#[test]
fn writer_edge_sizes() {
    if !have_qemu_img() {
        return;
    }
    use diskformat::qcow2::Qcow2Writer;
    use std::os::unix::fs::FileExt;
    let dir = tmpdir();
    let region = 512u64 << 20;
    for vs in [
        512u64,
        65536,
        65536 + 512,
        region - 512,
        region,
        region + 512,
        2 * region + 65536 * 3,
    ] {
        let raw = p(dir.path(), "edge.raw");
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(vs).unwrap();
        let mut clusters: Vec<u64> = vec![0, vs.div_ceil(65536) - 1];
        for b in [region / 65536 - 1, region / 65536, 2 * region / 65536] {
            if b * 65536 < vs {
                clusters.push(b);
            }
        }
        clusters.sort_unstable();
        clusters.dedup();
        clusters.reverse();
        let out = p(dir.path(), "edge.qcow2");
        let of = std::fs::File::create(&out).unwrap();
        let mut w = Qcow2Writer::new(FileSink(of.try_clone().unwrap()), vs, 0).unwrap();
        {
            use std::io::Seek;
            let mut g = of.try_clone().unwrap();
            g.seek(std::io::SeekFrom::Start(w.head_len())).unwrap();
        }
        for c in &clusters {
            let off = c * 65536;
            let n = (vs - off).min(65536) as usize;
            let data = vec![(*c as u8) | 1; n];
            f.write_all_at(&data, off).unwrap();
            w.write_cluster(off, &data).unwrap();
        }
        let (_, head, stats) = w.finish().unwrap();
        assert_eq!(stats.data_clusters, clusters.len() as u64);
        of.write_all_at(&head, 0).unwrap();
        let (code, text) = qemu_img(&["check", "-f", "qcow2", s(&out)]);
        assert_eq!(code, 0, "size {vs}: qemu-img check: {text}");
        let (code, text) = qemu_img(&["compare", "-f", "raw", "-F", "qcow2", s(&raw), s(&out)]);
        assert_eq!(code, 0, "size {vs}: qemu-img compare: {text}");
    }
}

/// Persistent dirty bitmaps (a header extension and an autoclear bit) are
/// metadata only: the image opens, with a note, and reads as before.
#[test]
fn persistent_bitmaps_are_ignored() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let src = p(dir.path(), "src.raw");
    let data = mixed_disk(4 << 20, 11);
    write_file(&src, &data);
    let img_path = p(dir.path(), "img.qcow2");
    qemu_img_ok(&["convert", "-f", "raw", "-O", "qcow2", s(&src), s(&img_path)]);
    qemu_img_ok(&["bitmap", "--add", s(&img_path), "b0"]);
    let img = open_file(&img_path).unwrap();
    assert!(
        img.info().notes.iter().any(|n| n.contains("bitmaps")),
        "{:?}",
        img.info().notes
    );
    assert!(read_all(&*img) == data);
}

/// The parallel converter writes exactly what the serial one writes.
#[test]
fn parallel_and_serial_outputs_are_identical() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let src = p(dir.path(), "src.raw");
    let data = mixed_disk(SIZE, 77);
    write_file(&src, &data);
    let img_path = p(dir.path(), "img.qcow2");
    qemu_img_ok(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        s(&src),
        s(&img_path),
    ]);
    let img = open_file(&img_path).unwrap();
    let run = |workers: usize| {
        let mut w = diskformat::qcow2::Qcow2Writer::new(Vec::new(), img.virtual_size(), 0).unwrap();
        let mut seen = Vec::new();
        let stats = diskformat::convert_with(
            &*img,
            &mut w,
            &mut |d| {
                seen.push(d);
                true
            },
            workers,
        )
        .unwrap();
        assert!(
            seen.windows(2).all(|p| p[0] <= p[1]),
            "progress goes forward"
        );
        assert_eq!(seen.last(), Some(&img.virtual_size()));
        let (tail, head, _) = w.finish().unwrap();
        (stats, head, tail)
    };
    let one = run(1);
    for workers in [2, 3, 8] {
        let many = run(workers);
        assert_eq!(one.0, many.0, "{workers} workers: stats");
        assert!(
            one.1 == many.1 && one.2 == many.2,
            "{workers} workers: output differs"
        );
    }
    // And cancelling a parallel run stops it cleanly.
    let mut w = diskformat::qcow2::Qcow2Writer::new(Vec::new(), img.virtual_size(), 0).unwrap();
    let mut n = 0;
    let err = diskformat::convert_with(
        &*img,
        &mut w,
        &mut |_| {
            n += 1;
            n < 3
        },
        4,
    )
    .unwrap_err();
    assert!(err.is_cancelled());
}

/// Several threads reading small, overlapping ranges of a compressed image
/// at once (the converter's workers and the guest inspector do) all see the
/// source bytes.
#[test]
fn concurrent_reads_of_compressed_clusters() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let src = p(dir.path(), "src.raw");
    let data = mixed_disk(8 << 20, 123);
    write_file(&src, &data);
    let img_path = p(dir.path(), "img.qcow2");
    qemu_img_ok(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        s(&src),
        s(&img_path),
    ]);
    let img = open_file(&img_path).unwrap();
    std::thread::scope(|scope| {
        for t in 0..6u64 {
            let img = &img;
            let data = &data;
            scope.spawn(move || {
                let mut rng = Rng::new(t + 1);
                let mut buf = vec![0u8; 70000];
                for _ in 0..300 {
                    let len = (rng.next() % 70000) as usize + 1;
                    let off = rng.next() % (data.len() - len) as u64;
                    img.read_guest(off, &mut buf[..len]).unwrap();
                    assert!(
                        buf[..len] == data[off as usize..off as usize + len],
                        "thread {t} at {off}+{len}"
                    );
                }
            });
        }
    });
}
