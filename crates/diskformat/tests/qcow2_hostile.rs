//! Hostile images: each must be refused with its named reason, without
//! reading another file, without allocating from claimed sizes and without
//! panicking. A per-thread counting allocator measures what opening and
//! reading them costs.

mod qcow2_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use diskformat::qcow2::Qcow2Writer;
use diskformat::{DiskImage, Format, FormatError, Limits, ReadAt, SliceSource};
use qcow2_common::*;

// ---- per-thread allocation accounting -------------------------------------

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

/// Run `f` and return its result with the peak extra bytes it held live.
fn measured<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(|p| p.get()) - base;
    (r, peak)
}

// ---- helpers ----------------------------------------------------------------

fn open_vec(bytes: Vec<u8>) -> Result<Box<dyn DiskImage>, FormatError> {
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    diskformat::open(Arc::new(SliceSource(bytes)), &Limits::default())
}

/// Open and read the whole guest disk; the first error wins.
fn open_and_read(bytes: Vec<u8>) -> Result<Vec<u8>, FormatError> {
    let img = open_vec(bytes)?;
    let mut out = vec![0u8; img.virtual_size() as usize];
    for (i, chunk) in out.chunks_mut(1 << 20).enumerate() {
        img.read_guest((i as u64) << 20, chunk)?;
    }
    Ok(out)
}

/// A small valid qcow2 from the project's writer: 4 MiB disk, clusters 0..4
/// hold 0x10+i. Layout (64 KiB clusters): header 0, L1 64K, refcount table
/// 128K, data 192K.., then the L2 table, then the refcount block.
fn small_image() -> Vec<u8> {
    let mut w = Qcow2Writer::new(Vec::new(), 4 << 20, 0).unwrap();
    for i in 0..4u64 {
        w.write_cluster(i * 65536, &vec![0x10 + i as u8; 65536])
            .unwrap();
    }
    let (tail, mut head, _) = w.finish().unwrap();
    head.extend_from_slice(&tail);
    head
}

const L1_OFF: usize = 65536;
const RT_OFF: usize = 131072;
const DATA_OFF: u64 = 196608;

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn l2_offset(img: &[u8]) -> usize {
    (be64(img, L1_OFF) & 0x00ff_ffff_ffff_fe00) as usize
}

fn expect_err(r: Result<impl Sized, FormatError>, pred: fn(&FormatError) -> bool, what: &str) {
    match r {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => assert!(pred(&e), "{what}: wrong refusal: {e:?}"),
    }
}

fn is_corrupt(e: &FormatError) -> bool {
    matches!(e, FormatError::Corrupt(_))
}

// ---- the baseline --------------------------------------------------------------

#[test]
fn small_image_is_valid() {
    let data = open_and_read(small_image()).unwrap();
    for i in 0..4 {
        assert!(data[i * 65536..(i + 1) * 65536]
            .iter()
            .all(|&b| b == 0x10 + i as u8));
    }
    assert!(data[4 * 65536..].iter().all(|&b| b == 0));
}

// ---- refusals made with qemu-img ----------------------------------------------

#[test]
fn backing_file_is_refused_and_never_read() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let host = p(dir.path(), "host-secret.raw");
    write_file(&host, &vec![0x42u8; 1 << 20]);
    let img = p(dir.path(), "backed.qcow2");
    qemu_img_ok(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        s(&host),
        "-F",
        "raw",
        s(&img),
        "1M",
    ]);
    // Make the named file unreadable: if anything tried to open it, the
    // error would differ from the refusal.
    std::fs::remove_file(&host).unwrap();
    expect_err(
        open_file(&img),
        |e| matches!(e, FormatError::ExternalReference(m) if m.contains("backing")),
        "backing file",
    );
}

#[test]
fn external_data_file_is_refused() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let host = p(dir.path(), "host-secret.raw");
    write_file(&host, &vec![0x42u8; 1 << 20]);
    let img = p(dir.path(), "datafile.qcow2");
    let opt = format!("data_file={},data_file_raw=on", s(&host));
    qemu_img_ok(&["create", "-f", "qcow2", "-o", &opt, s(&img), "1M"]);
    expect_err(
        open_file(&img),
        |e| matches!(e, FormatError::ExternalReference(m) if m.contains("data file")),
        "data file",
    );
    // With the feature bit cleared, the name extension alone still refuses.
    let mut b = std::fs::read(&img).unwrap();
    let incompat = be64(&b, 72) & !4;
    put64(&mut b, 72, incompat);
    expect_err(
        open_vec(b),
        |e| matches!(e, FormatError::ExternalReference(m) if m.contains("data file")),
        "data file name extension",
    );
}

#[test]
fn one_pebibyte_claim_is_too_large_without_allocating() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let img = p(dir.path(), "huge.qcow2");
    qemu_img_ok(&["create", "-f", "qcow2", s(&img), "1P"]);
    assert!(std::fs::metadata(&img).unwrap().len() < 64 << 20);
    let bytes = std::fs::read(&img).unwrap();
    let (r, peak) = measured(|| open_vec(bytes).map(|_| ()));
    expect_err(r, |e| matches!(e, FormatError::TooLarge(_)), "1 PiB");
    assert!(peak < 1 << 20, "refusing cost {peak} bytes");
    // With the limit raised it opens (qemu really wrote the 16 MiB L1
    // table), and what it costs is bounded by what the file holds.
    let bytes = std::fs::read(&img).unwrap();
    let file_len = bytes.len() as isize;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let big = Limits {
        max_virtual_size: u64::MAX,
    };
    let (r, peak) = measured(|| diskformat::open(Arc::new(SliceSource(bytes)), &big).map(|_| ()));
    assert!(r.is_ok(), "{r:?}");
    assert!(
        peak < file_len + (1 << 20),
        "opening cost {peak} bytes for a {file_len}-byte file"
    );
    // Cut the file inside that L1 table: refused, before allocating it.
    let cut = &bytes[..(4 << 20)];
    let (r, peak) = measured(|| diskformat::open(Arc::new(SliceSource(cut)), &big).map(|_| ()));
    expect_err(
        r,
        |e| matches!(e, FormatError::Truncated(_)),
        "L1 beyond the end",
    );
    assert!(peak < 1 << 20, "refusing cost {peak} bytes");
}

#[test]
fn encryption_is_refused() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let img = p(dir.path(), "enc.qcow2");
    qemu_img_ok(&[
        "create",
        "-f",
        "qcow2",
        "--object",
        "secret,id=sec0,data=123456",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        s(&img),
        "16M",
    ]);
    expect_err(
        open_file(&img),
        |e| matches!(e, FormatError::Encrypted(_)),
        "qcow2 luks",
    );
    // The encryption header extension alone (crypt_method cleared) too.
    let mut b = std::fs::read(&img).unwrap();
    put32(&mut b, 32, 0);
    expect_err(
        open_vec(b),
        |e| matches!(e, FormatError::Encrypted(_)),
        "crypto extension",
    );
}

#[test]
fn qed_vdi_luks_are_refused_by_name() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let qed = p(dir.path(), "x.qed");
    qemu_img_ok(&["create", "-f", "qed", s(&qed), "16M"]);
    expect_err(
        open_file(&qed),
        |e| matches!(e, FormatError::Unsupported(m) if m.contains("QED")),
        "qed",
    );
    let vdi = p(dir.path(), "x.vdi");
    qemu_img_ok(&["create", "-f", "vdi", s(&vdi), "16M"]);
    expect_err(
        open_file(&vdi),
        |e| matches!(e, FormatError::Unsupported(m) if m.contains("VDI")),
        "vdi",
    );
    let luks = p(dir.path(), "x.luks");
    qemu_img_ok(&[
        "create",
        "-f",
        "luks",
        "--object",
        "secret,id=s0,data=x",
        "-o",
        "key-secret=s0,iter-time=10",
        s(&luks),
        "16M",
    ]);
    expect_err(
        open_file(&luks),
        |e| matches!(e, FormatError::Encrypted(m) if m.contains("LUKS")),
        "luks",
    );
    assert_eq!(
        diskformat::detect(&diskformat::FileSource::open(&luks).unwrap())
            .unwrap()
            .format,
        Format::Luks
    );
}

/// A fixed VHD is raw data plus a footer: if the guest data starts with a
/// qcow2 header, the file matches both and must be refused.
#[test]
fn fixed_vhd_holding_a_qcow2_is_ambiguous() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let inner = p(dir.path(), "inner.qcow2");
    qemu_img_ok(&["create", "-f", "qcow2", s(&inner), "1M"]);
    let vhd = p(dir.path(), "outer.vhd");
    qemu_img_ok(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "subformat=fixed,force_size=on",
        s(&inner),
        s(&vhd),
    ]);
    expect_err(
        open_file(&vhd),
        |e| matches!(e, FormatError::Ambiguous(m) if m.contains("qcow2") && m.contains("vhd")),
        "vhd+qcow2",
    );
}

#[test]
fn internal_snapshots_are_ignored_with_a_note() {
    if !have_qemu_img() {
        return;
    }
    let dir = tmpdir();
    let img = p(dir.path(), "snap.qcow2");
    qemu_img_ok(&["create", "-f", "qcow2", s(&img), "4M"]);
    let io = |op: &str| {
        let o = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", op, s(&img)])
            .output()
            .expect("qemu-io runs");
        assert!(o.status.success(), "{o:?}");
    };
    io("write -P 0x01 0 64k");
    qemu_img_ok(&["snapshot", "-c", "before", s(&img)]);
    io("write -P 0x02 0 64k");
    let d = open_file(&img).unwrap();
    assert!(
        d.info().notes.iter().any(|n| n.contains("snapshot")),
        "{:?}",
        d.info().notes
    );
    let mut b = vec![0u8; 65536];
    d.read_guest(0, &mut b).unwrap();
    assert!(
        b.iter().all(|&x| x == 2),
        "the active disk is read, not the snapshot"
    );
}

// ---- hand-made header damage ------------------------------------------------------

#[test]
fn header_field_refusals() {
    let base = small_image();
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Vec<u8>)>,
        fn(&FormatError) -> bool,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown incompatible bit",
            Box::new(|b| put64(b, 72, 1 << 9)),
            |e| matches!(e, FormatError::Unsupported(m) if m.contains("incompatible")),
        ),
        (
            "corrupt bit",
            Box::new(|b| put64(b, 72, 2)),
            |e| matches!(e, FormatError::Corrupt(m) if m.contains("corrupt bit")),
        ),
        ("version 4", Box::new(|b| put32(b, 4, 4)), |e| {
            matches!(e, FormatError::Unsupported(_))
        }),
        (
            "cluster_bits 22",
            Box::new(|b| put32(b, 20, 22)),
            is_corrupt,
        ),
        ("cluster_bits 8", Box::new(|b| put32(b, 20, 8)), is_corrupt),
        (
            "refcount_order 7",
            Box::new(|b| put32(b, 96, 7)),
            is_corrupt,
        ),
        (
            "header_length 100",
            Box::new(|b| put32(b, 100, 100)),
            is_corrupt,
        ),
        (
            "compression type 2",
            Box::new(|b| {
                b[104] = 2;
                put64(b, 72, 8);
            }),
            |e| matches!(e, FormatError::Unsupported(m) if m.contains("compression")),
        ),
        ("L1 too small", Box::new(|b| put32(b, 36, 0)), is_corrupt),
        (
            "L1 unaligned",
            Box::new(|b| put64(b, 40, 65536 + 8)),
            is_corrupt,
        ),
        (
            "L1 in the header",
            Box::new(|b| put64(b, 40, 0)),
            is_corrupt,
        ),
        (
            "L1 past the end",
            Box::new(|b| put64(b, 40, 1 << 40)),
            |e| matches!(e, FormatError::Truncated(_)),
        ),
        (
            "L1 overlaps the refcount table",
            Box::new(|b| put64(b, 40, RT_OFF as u64)),
            is_corrupt,
        ),
        (
            "refcount table past the end",
            Box::new(|b| put32(b, 56, 1 << 20)),
            |e| matches!(e, FormatError::Truncated(_)),
        ),
        (
            "L2 table outside the file",
            Box::new(|b| put64(b, L1_OFF, (1 << 30) | (1 << 63))),
            is_corrupt,
        ),
        (
            "L2 table on the L1 table",
            Box::new(|b| put64(b, L1_OFF, L1_OFF as u64)),
            is_corrupt,
        ),
        (
            "L2 table unaligned",
            Box::new(|b| {
                let l2 = be64(b, L1_OFF);
                put64(b, L1_OFF, l2 + 512);
            }),
            is_corrupt,
        ),
        (
            "backing format extension",
            Box::new(|b| {
                put32(b, 112, 0xe279_2aca);
                put32(b, 116, 3);
                b[120..123].copy_from_slice(b"raw");
            }),
            |e| matches!(e, FormatError::ExternalReference(_)),
        ),
        (
            "extension longer than the cluster",
            Box::new(|b| {
                put32(b, 112, 0x1234_5678);
                put32(b, 116, 0xffff_fff0);
            }),
            is_corrupt,
        ),
    ];
    for (name, patch, pred) in cases {
        let mut b = base.clone();
        patch(&mut b);
        let (r, peak) = measured(|| open_and_read(b));
        expect_err(r, pred, name);
        assert!(peak < 8 << 20, "{name}: cost {peak} bytes");
    }
}

#[test]
fn dirty_bit_is_accepted_with_a_note() {
    let mut b = small_image();
    put64(&mut b, 72, 1);
    let img = open_vec(b).unwrap();
    assert!(img.info().notes.iter().any(|n| n.contains("dirty")));
}

#[test]
fn bad_l2_entries_fail_the_read() {
    let base = small_image();
    let l2 = l2_offset(&base);
    let cases: Vec<(&str, u64)> = vec![
        ("data outside the file", (1u64 << 40) | (1 << 63)),
        ("data unaligned", (DATA_OFF + 512) | (1 << 63)),
        ("data on the refcount table", RT_OFF as u64 | (1 << 63)),
        ("data on the L1 table", L1_OFF as u64 | (1 << 63)),
        ("data on its own L2 table", l2 as u64 | (1 << 63)),
        ("compressed data in the header", (1 << 62) | 100),
    ];
    for (name, entry) in cases {
        let mut b = base.clone();
        put64(&mut b, l2 + 8, entry);
        let img = open_vec(b).unwrap();
        let mut buf = vec![0u8; 65536];
        // Cluster 0 is intact; cluster 1 is the damaged one.
        img.read_guest(0, &mut buf).unwrap();
        expect_err(img.read_guest(65536, &mut buf), is_corrupt, name);
        expect_err(img.extent_at(65536, 65536), is_corrupt, name);
    }
    // The "zero" flag is undefined in version 2: refused.
    let mut b = base.clone();
    put32(&mut b, 4, 2);
    put64(&mut b, l2 + 8, 1);
    let img = open_vec(b).unwrap();
    let mut buf = vec![0u8; 512];
    expect_err(img.read_guest(65536, &mut buf), is_corrupt, "v2 zero flag");
}

#[test]
fn two_l1_entries_sharing_an_l2_table_are_refused() {
    // A 1 GiB disk has two L1 entries.
    let mut w = Qcow2Writer::new(Vec::new(), 1 << 30, 0).unwrap();
    w.write_cluster(0, &[1u8; 65536]).unwrap();
    w.write_cluster(512 << 20, &[2u8; 65536]).unwrap();
    let (tail, mut b, _) = w.finish().unwrap();
    b.extend_from_slice(&tail);
    let first = be64(&b, L1_OFF);
    put64(&mut b, L1_OFF + 8, first);
    expect_err(open_vec(b), is_corrupt, "shared L2");
}

#[test]
fn truncation_is_refused_or_harmless() {
    let base = small_image();
    let data = open_and_read(base.clone()).unwrap();
    for cut in [
        0usize,
        50,
        71,
        80,
        103,
        4096,
        65536,
        70000,
        131072,
        200000,
        base.len() - 1,
    ] {
        let r = open_and_read(base[..cut].to_vec());
        match r {
            // Fewer than 4 bytes carry no magic: that is a (tiny) raw disk.
            Ok(d) if cut < 4 => assert_eq!(d.len(), cut),
            Ok(d) => assert!(d == data, "cut {cut}: read different data"),
            Err(FormatError::Truncated(_))
            | Err(FormatError::Corrupt(_))
            | Err(FormatError::Io(_)) => {}
            Err(e) => panic!("cut {cut}: unexpected {e:?}"),
        }
    }
    // Cuts inside the header and the L1 table are Truncated (or raw when
    // too short to even carry the magic).
    for cut in [50usize, 80, 70000] {
        expect_err(
            open_vec(base[..cut].to_vec()).map(|_| ()),
            |e| matches!(e, FormatError::Truncated(_)),
            "truncated header",
        );
    }
    // Cutting off data clusters fails the read that needs them.
    let r = open_and_read(base[..(DATA_OFF as usize + 100_000)].to_vec());
    assert!(r.is_err());
}

// ---- compressed-cluster bombs -----------------------------------------------

/// A qcow2 (v3, 64 KiB clusters, 1 cluster disk) whose only cluster is
/// compressed with `payload` (the compression type byte set by `zstd`).
fn compressed_image(payload: &[u8], zstd: bool) -> Vec<u8> {
    let cs = 65536usize;
    let mut b = vec![0u8; 4 * cs];
    b[0..4].copy_from_slice(b"QFI\xfb");
    put32(&mut b, 4, 3);
    put32(&mut b, 20, 16);
    put64(&mut b, 24, cs as u64);
    put32(&mut b, 36, 1);
    put64(&mut b, 40, cs as u64); // L1
    put64(&mut b, 48, 2 * cs as u64); // refcount table
    put32(&mut b, 56, 1);
    put32(&mut b, 96, 4);
    put32(&mut b, 100, 112);
    if zstd {
        put64(&mut b, 72, 8);
        b[104] = 1;
    }
    put64(&mut b, cs, (3 * cs as u64) | (1 << 63)); // L1[0] -> L2 at 3 clusters
    let coff = 4 * cs as u64;
    // Size field: sectors beyond the first, at most 255 for 64 KiB clusters.
    let sectors = (payload.len() as u64).div_ceil(512).clamp(1, 256) - 1;
    let shift = 62 - (16 - 8);
    put64(&mut b, 3 * cs, (1 << 62) | (sectors << shift) | coff);
    b.extend_from_slice(payload);
    b
}

#[test]
fn deflate_bomb_is_corrupt_with_bounded_memory() {
    use std::io::Write;
    // 1 GiB of zeros deflates to ~1 MiB; the cluster can only name 128 KiB
    // of it, which alone would inflate to ~128 MiB.
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    let bomb = &bomb[..bomb.len().min(128 << 10)];
    let img = compressed_image(bomb, false);
    let start = std::time::Instant::now();
    let (r, peak) = measured(|| open_and_read(img));
    expect_err(
        r,
        |e| matches!(e, FormatError::Corrupt(m) if m.contains("beyond")),
        "deflate bomb",
    );
    assert!(peak < 2 << 20, "bomb cost {peak} bytes");
    assert!(start.elapsed().as_secs() < 2);
}

#[test]
fn zstd_bomb_is_corrupt_with_bounded_memory() {
    // A frame with a 64 KiB window and thousands of 64 KiB RLE blocks:
    // 4 bytes of input per 64 KiB of output.
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 6 << 3];
    for i in 0..30000u32 {
        let last = u32::from(i == 29999);
        let header = (65536u32 << 3) | (1 << 1) | last;
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0xAA);
    }
    let payload = &f[..f.len().min(128 << 10)];
    let img = compressed_image(payload, true);
    let start = std::time::Instant::now();
    let (r, peak) = measured(|| open_and_read(img));
    expect_err(r, is_corrupt, "zstd bomb");
    assert!(peak < 4 << 20, "bomb cost {peak} bytes");
    assert!(start.elapsed().as_secs() < 2);
}

#[test]
fn valid_hand_made_compressed_clusters_read() {
    use std::io::Write;
    let cluster: Vec<u8> = (0..65536u32).map(|i| (i % 97) as u8).collect();
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&cluster).unwrap();
    let img = compressed_image(&e.finish().unwrap(), false);
    assert!(open_and_read(img).unwrap() == cluster);
    // A zstd frame of one raw block of the whole cluster... is > 128 KiB
    // limit? No: 64 KiB raw block + headers fits in 129 sectors.
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 6 << 3];
    let header = (65536u32 << 3) | 1;
    f.extend_from_slice(&header.to_le_bytes()[..3]);
    f.extend_from_slice(&cluster);
    let img = compressed_image(&f, true);
    assert!(open_and_read(img).unwrap() == cluster);
}

// ---- ISO ----------------------------------------------------------------------

#[test]
fn iso_volume_descriptor_is_recognised() {
    let mut b = vec![0u8; 48 * 2048];
    // Primary volume descriptor at sector 16, terminator at 17.
    b[32768] = 1;
    b[32769..32774].copy_from_slice(b"CD001");
    b[32774] = 1;
    b[34816] = 255;
    b[34817..34822].copy_from_slice(b"CD001");
    b[34822] = 1;
    b[40000] = 0x77;
    let img = open_vec(b.clone()).unwrap();
    assert_eq!(img.info().format, Format::Iso);
    assert_eq!(img.virtual_size(), b.len() as u64);
    let mut back = vec![0u8; b.len()];
    img.read_guest(0, &mut back).unwrap();
    assert!(back == b);
}

#[test]
fn raw_over_the_limit_is_too_large() {
    let b = vec![1u8; 8192];
    let b: &'static [u8] = Box::leak(b.into_boxed_slice());
    let r = diskformat::open(
        Arc::new(SliceSource(b)),
        &Limits {
            max_virtual_size: 4096,
        },
    );
    expect_err(
        r.map(|_| ()),
        |e| matches!(e, FormatError::TooLarge(_)),
        "raw limit",
    );
    let _ = SliceSource(b).len();
}

// ---- the writer's memory ----------------------------------------------------------

/// A 500 GiB disk with data in three places: the writer holds three L2
/// tables and its append buffer, never anything per unused gigabyte, and
/// qemu-img finds the result consistent.
#[test]
fn writer_memory_follows_touched_regions_only() {
    let dir = tmpdir();
    let out = p(dir.path(), "big.qcow2");
    let file = std::fs::File::create(&out).unwrap();
    let vs = 500u64 << 30;
    let cluster = vec![0x3cu8; 65536];
    let ((), peak) = measured(|| {
        let mut w = Qcow2Writer::new(FileSink(file.try_clone().unwrap()), vs, 0).unwrap();
        use std::io::Seek;
        let mut f = file.try_clone().unwrap();
        f.seek(std::io::SeekFrom::Start(w.head_len())).unwrap();
        for off in [0u64, 200 << 30, vs - 65536] {
            w.write_cluster(off, &cluster).unwrap();
        }
        let (_sink, head, stats) = w.finish().unwrap();
        assert_eq!(stats.l2_tables, 3);
        assert_eq!(stats.data_clusters, 3);
        std::os::unix::fs::FileExt::write_all_at(&file, &head, 0).unwrap();
    });
    assert!(
        peak < 4 << 20,
        "writer held {peak} bytes for a 500 GiB disk"
    );
    assert!(std::fs::metadata(&out).unwrap().len() < 1 << 20);
    if have_qemu_img() {
        let (code, text) = qemu_img(&["check", "-f", "qcow2", s(&out)]);
        assert_eq!(code, 0, "qemu-img check: {text}");
    }
    let img = open_file(&out).unwrap();
    assert_eq!(img.virtual_size(), vs);
    let mut b = vec![0u8; 65536];
    img.read_guest(200 << 30, &mut b).unwrap();
    assert_eq!(b, cluster);
}
