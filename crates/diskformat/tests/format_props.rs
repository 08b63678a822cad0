//! Property tests in the spirit of a fuzzer: detect + open + read the whole
//! guest disk of mutated qcow2 images (qemu-made, with compressed and
//! extended-L2 clusters, and our writer's) and of arbitrary bytes carrying
//! each format's magic. Whatever the bytes, nothing panics, each case ends
//! quickly, and no case holds more than a few MiB live.

mod qcow2_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use diskformat::qcow2::Qcow2Writer;
use diskformat::{Limits, SliceSource};
use proptest::prelude::*;
use qcow2_common::*;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + delta;
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Guest disks are at most this large in these tests, so a whole-disk read
/// stays cheap whatever a mutated header claims.
const LIMIT: u64 = 8 << 20;
/// Live bytes a case may hold beyond its input and the guest read buffer.
const MEMORY_BOUND: isize = 12 << 20;

/// Detect, open and read everything; returns the peak live bytes beyond the
/// input. Errors are fine; panics, hangs and big allocations are not.
fn exercise(bytes: &[u8]) -> isize {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let start = Instant::now();
    let src = Arc::new(SliceSource(Box::leak(bytes.to_vec().into_boxed_slice())));
    let input = bytes.len() as isize;
    let limits = Limits {
        max_virtual_size: LIMIT,
    };
    if let Ok(img) = diskformat::open(src, &limits) {
        let size = img.virtual_size();
        assert!(size <= LIMIT);
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0u64;
        while pos < size {
            let n = (size - pos).min(buf.len() as u64);
            if img.read_guest(pos, &mut buf[..n as usize]).is_err() {
                break;
            }
            pos += n;
        }
        let mut pos = 0u64;
        let mut steps = 0u64;
        while pos < size {
            match img.extent_at(pos, size - pos) {
                Ok(e) => {
                    assert_eq!(e.offset, pos);
                    assert!(e.len > 0 && e.len <= size - pos, "{e:?}");
                    pos += e.len;
                }
                Err(_) => break,
            }
            steps += 1;
            assert!(steps <= size, "extent walk does not advance");
        }
        // And the converter (bounded by the same limits).
        if let Ok(mut w) = Qcow2Writer::new(Vec::new(), size, 0) {
            let _ = diskformat::convert(&*img, &mut w, &mut |_| true);
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "a case took {:?}",
        start.elapsed()
    );
    // The leaked input copy is counted: discount it.
    PEAK.with(|p| p.get()) - base - input
}

/// Seeds: qemu-made images with compressed (zlib, zstd), extended-L2 and
/// 4 KiB clusters, plus our writer's output. Empty without qemu-img.
fn seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut out = Vec::new();
        let data = mixed_disk(2 << 20, 3);
        let mut w = Qcow2Writer::new(Vec::new(), data.len() as u64, 0).unwrap();
        for (i, c) in data.chunks(65536).enumerate() {
            if !diskformat::is_zero(c) {
                w.write_cluster(i as u64 * 65536, c).unwrap();
            }
        }
        let (tail, mut head, _) = w.finish().unwrap();
        head.extend_from_slice(&tail);
        out.push(head);
        if have_qemu_img() {
            let dir = tmpdir();
            let src = p(dir.path(), "src.raw");
            write_file(&src, &data);
            let variants: [&[&str]; 5] = [
                &["-c"],
                &["-c", "-o", "compression_type=zstd"],
                &["-o", "extended_l2=on,cluster_size=16k"],
                &["-o", "cluster_size=4096"],
                &["-o", "compat=0.10,cluster_size=512"],
            ];
            for (i, v) in variants.iter().enumerate() {
                let dst = p(dir.path(), &format!("v{i}.qcow2"));
                let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
                args.extend_from_slice(v);
                args.push(s(&src));
                args.push(s(&dst));
                qemu_img_ok(&args);
                out.push(std::fs::read(&dst).unwrap());
            }
        }
        out
    })
}

/// A mutation: where (a fraction of the interesting area) and what.
#[derive(Debug, Clone)]
enum Mutation {
    Byte(usize, u8),
    Be32(usize, u32),
    Be64(usize, u64),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting_u64 = prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(1 << 63),
        Just(1 << 62),
        Just(0x00ff_ffff_ffff_fe00),
        any::<u64>(),
        (0u64..(4 << 20)),
    ];
    let interesting_u32 = prop_oneof![
        Just(0u32),
        Just(u32::MAX),
        Just(9u32),
        Just(21u32),
        Just(1u32 << 31),
        any::<u32>(),
        0u32..64,
    ];
    // Header fields live in the first 112 bytes (extensions after);
    // tables at a few clusters in; anywhere else too, less often.
    let pos = prop_oneof![
        4 => 0usize..128,
        2 => 128usize..1024,
        3 => 0usize..(256 << 10),
        1 => any::<usize>(),
    ];
    prop_oneof![
        (pos.clone(), any::<u8>()).prop_map(|(p, v)| Mutation::Byte(p, v)),
        (pos.clone().prop_map(|p| p & !3), interesting_u32).prop_map(|(p, v)| Mutation::Be32(p, v)),
        (pos.clone().prop_map(|p| p & !7), interesting_u64).prop_map(|(p, v)| Mutation::Be64(p, v)),
        pos.prop_map(Mutation::Truncate),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    let len = buf.len();
    if len == 0 {
        return;
    }
    match *m {
        Mutation::Byte(p, v) => buf[p % len] = v,
        Mutation::Be32(p, v) => {
            let p = (p % len).min(len.saturating_sub(4));
            let n = 4.min(len - p);
            buf[p..p + n].copy_from_slice(&v.to_be_bytes()[..n]);
        }
        Mutation::Be64(p, v) => {
            let p = (p % len).min(len.saturating_sub(8));
            let n = 8.min(len - p);
            buf[p..p + n].copy_from_slice(&v.to_be_bytes()[..n]);
        }
        Mutation::Truncate(p) => buf.truncate(p % (len + 1)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn mutated_qcow2_never_panics(seed in any::<prop::sample::Index>(),
                                  muts in prop::collection::vec(mutation(), 1..6)) {
        let seeds = seeds();
        let mut img = seeds[seed.index(seeds.len())].clone();
        for m in &muts {
            apply(&mut img, m);
        }
        let peak = exercise(&img);
        prop_assert!(peak < MEMORY_BOUND, "held {} bytes", peak);
    }
}

fn magic_prefixed() -> impl Strategy<Value = Vec<u8>> {
    let magics: Vec<(usize, &'static [u8])> = vec![
        (0, b"QFI\xfb\x00\x00\x00\x03"),
        (0, b"QFI\xfb\x00\x00\x00\x02"),
        (0, b"QED\0"),
        (0, b"KDMV"),
        (0, b"# Disk DescriptorFile"),
        (0, b"vhdxfile"),
        (0, b"LUKS\xba\xbe"),
        (0x40, &[0x7f, 0x10, 0xda, 0xbe]),
        (32769, b"CD001"),
    ];
    (
        prop::sample::select(magics),
        prop::collection::vec(any::<u8>(), 0..(96 << 10)),
        any::<bool>(),
    )
        .prop_map(|((at, magic), mut body, footer)| {
            if body.len() < at + magic.len() {
                body.resize(at + magic.len(), 0);
            }
            body[at..at + magic.len()].copy_from_slice(magic);
            if footer {
                // A VHD footer signature at the end as well.
                let n = body.len();
                if n >= 512 {
                    body[n - 512..n - 504].copy_from_slice(b"conectix");
                }
            }
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in magic_prefixed()) {
        let peak = exercise(&bytes);
        prop_assert!(peak < MEMORY_BOUND, "held {} bytes", peak);
    }

    #[test]
    fn detection_is_total(head in prop::collection::vec(any::<u8>(), 0..70000),
                          tail in prop::collection::vec(any::<u8>(), 0..70000),
                          len in any::<u64>()) {
        let _ = diskformat::detect::detect_bytes(&head, &tail, len);
    }
}

/// One 64 KiB cluster of compressible data, zstd- and deflate-compressed.
fn compressed_clusters() -> &'static (Vec<u8>, Vec<u8>) {
    static C: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    C.get_or_init(|| {
        let data = mixed_disk(65536, 17);
        let zstd = ruzstd::encoding::compress_to_vec(
            &data[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &data).unwrap();
        let deflate = e.finish().unwrap();
        // The undamaged streams decode to the cluster (so mutations start
        // from something the decoders accept).
        use diskformat::qcow2::compress::decompress;
        use diskformat::qcow2::header::Compression;
        let mut out = vec![0u8; 65536];
        decompress(Compression::Zstd, &zstd, &mut out).unwrap();
        assert!(out == data);
        decompress(Compression::Zlib, &deflate, &mut out).unwrap();
        assert!(out == data);
        (zstd, deflate)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, .. ProptestConfig::default() })]

    /// The decoders themselves on damaged streams: an error or exactly one
    /// cluster, never a panic, never more than a few MiB.
    #[test]
    fn damaged_compressed_clusters(zstd in any::<bool>(),
                                   muts in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                   cut in any::<usize>()) {
        use diskformat::qcow2::compress::Decompressor;
        use diskformat::qcow2::header::Compression;
        let (z, d) = compressed_clusters();
        let mut input = if zstd { z.clone() } else { d.clone() };
        for (at, v) in &muts {
            let n = input.len();
            input[at % n] ^= v | 1;
        }
        input.truncate(cut % (input.len() + 1));
        let base = LIVE.with(|l| l.get());
        PEAK.with(|p| p.set(base));
        let mut out = vec![0u8; 65536];
        let kind = if zstd { Compression::Zstd } else { Compression::Zlib };
        let _ = Decompressor::new(kind).decompress(&input, &mut out);
        let peak = PEAK.with(|p| p.get()) - base;
        prop_assert!(peak < MEMORY_BOUND, "held {} bytes", peak);
    }
}
