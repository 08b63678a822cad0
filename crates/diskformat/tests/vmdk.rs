//! VMDK reader against qemu-img fixtures (monolithicSparse, streamOptimized,
//! and a streamOptimized file with its grain directory in the footer, as
//! VMware writes it, checked against qemu-img too). Hostile descriptors that
//! name host files, parents or extra extents are refused; damaged tables and
//! grains are refused without panicking.

mod common_fmt;

use common_fmt::*;
use diskformat::{vmdk, Format, FormatError};
use proptest::prelude::*;
use std::io::Write;
use std::sync::OnceLock;

const RAW_SIZE: usize = 9 * MIB + 61 * 512;

fn check(path: &std::path::Path, raw: &[u8], subformat: &str, grain: u64) {
    let expected = oracle(path, "vmdk");
    assert!(expected == raw, "qemu-img reads the source back");
    let bytes = std::fs::read(path).unwrap();
    let n = bytes.len().min(64 << 10);
    assert!(vmdk::probe(
        &bytes[..n],
        &bytes[bytes.len() - n..],
        bytes.len() as u64
    ));
    let img = open_path(vmdk::open, path).unwrap();
    let info = img.info();
    assert_eq!(info.format, Format::Vmdk);
    assert_eq!(info.subformat.as_deref(), Some(subformat));
    assert_eq!(info.cluster_size, Some(grain));
    assert_guest_eq(&*img, &expected);
}

fn qemu_fixture(raw: &[u8], subformat: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = make_fixture(
        dir.path(),
        raw,
        "vmdk",
        &format!("subformat={subformat}"),
        "d.vmdk",
    );
    check(&path, raw, subformat, 64 << 10);
    std::fs::read(path).unwrap()
}

#[test]
fn monolithic_sparse_matches_qemu() {
    qemu_fixture(&mixed_raw(RAW_SIZE), "monolithicSparse");
}

#[test]
fn stream_optimized_matches_qemu() {
    qemu_fixture(&mixed_raw(RAW_SIZE), "streamOptimized");
}

/// 40 MiB: two grain tables (32 MiB each at 64 KiB grains), the second
/// partly used, with data right at its start and at the very end.
fn sparse_40m() -> Vec<u8> {
    let mut raw = vec![0u8; 40 * MIB + 512];
    raw[..RAW_SIZE].copy_from_slice(&mixed_raw(RAW_SIZE));
    let mut rng = common_fmt::Rng::new(7);
    rng.fill(&mut raw[32 * MIB - 4096..32 * MIB + 70_000]);
    let n = raw.len();
    rng.fill(&mut raw[n - 1536..]);
    raw
}

#[test]
fn two_grain_tables_match_qemu() {
    let raw = sparse_40m();
    qemu_fixture(&raw, "monolithicSparse");
    qemu_fixture(&raw, "streamOptimized");
}

// --- A streamOptimized writer in VMware's layout: grain directory at the end.

fn header(capacity: u64, grain_sectors: u64, gd: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[0..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12].copy_from_slice(&0x0003_0001u32.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&grain_sectors.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes());
    h[36..44].copy_from_slice(&20u64.to_le_bytes());
    h[44..48].copy_from_slice(&512u32.to_le_bytes());
    h[56..64].copy_from_slice(&gd.to_le_bytes());
    h[64..72].copy_from_slice(&128u64.to_le_bytes());
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&1u16.to_le_bytes());
    h
}

fn pad(f: &mut Vec<u8>) {
    f.resize(f.len().div_ceil(512) * 512, 0);
}

fn marker(f: &mut Vec<u8>, sectors: u64, kind: u32) {
    let mut m = vec![0u8; 512];
    m[0..8].copy_from_slice(&sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    f.extend_from_slice(&m);
}

fn stream_with_footer(raw: &[u8], grain_sectors: u64) -> Vec<u8> {
    let capacity = raw.len() as u64 / 512;
    let gb = (grain_sectors * 512) as usize;
    let n_grains = raw.len().div_ceil(gb);
    let n_gts = n_grains.div_ceil(512);
    let mut f = header(capacity, grain_sectors, u64::MAX);
    let desc = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n# Extent description\nRW {capacity} SPARSE \"disk.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n"
    );
    f.extend_from_slice(desc.as_bytes());
    f.resize(128 * 512, 0);
    let mut gts = vec![vec![0u32; 512]; n_gts];
    for g in 0..n_grains {
        let mut chunk = raw[g * gb..raw.len().min((g + 1) * gb)].to_vec();
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        chunk.resize(gb, 0);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&chunk).unwrap();
        let data = z.finish().unwrap();
        gts[g / 512][g % 512] = (f.len() / 512) as u32;
        f.extend_from_slice(&(g as u64 * grain_sectors).to_le_bytes());
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(&data);
        pad(&mut f);
    }
    let mut gd = vec![0u32; n_gts];
    for (t, gt) in gts.iter().enumerate() {
        if gt.iter().all(|&e| e == 0) {
            continue;
        }
        marker(&mut f, 4, 1);
        gd[t] = (f.len() / 512) as u32;
        for e in gt {
            f.extend_from_slice(&e.to_le_bytes());
        }
    }
    marker(&mut f, (n_gts as u64 * 4).div_ceil(512), 2);
    let gd_at = (f.len() / 512) as u64;
    for e in &gd {
        f.extend_from_slice(&e.to_le_bytes());
    }
    pad(&mut f);
    marker(&mut f, 1, 3);
    f.extend_from_slice(&header(capacity, grain_sectors, gd_at));
    marker(&mut f, 0, 0);
    f
}

/// 8 KiB grains: several grain tables, one of them absent from the GD.
fn footer_stream() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| {
        let mut raw = sparse_40m();
        raw.truncate(13 * MIB + 512);
        raw[9 * MIB..13 * MIB].fill(0); // a grain table's worth of zeros
        stream_with_footer(&raw, 16)
    })
}

#[test]
fn footer_stream_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("footer.vmdk");
    std::fs::write(&path, footer_stream()).unwrap();
    let expected = oracle(&path, "vmdk");
    assert_eq!(expected.len(), 13 * MIB + 512);
    check(&path, &expected, "streamOptimized", 8192);
}

#[test]
fn each_probe_matches_only_its_own_format() {
    use diskformat::{vhd, vhdx};
    let dir = tempfile::tempdir().unwrap();
    let mut raw = mixed_raw(RAW_SIZE);
    raw.truncate(8 * MIB);
    let cases = [
        ("vmdk", "subformat=monolithicSparse", 0),
        ("vmdk", "subformat=streamOptimized", 0),
        ("vpc", "subformat=dynamic", 1),
        ("vpc", "subformat=fixed", 1),
        ("vhdx", "subformat=dynamic", 2),
        ("vhdx", "subformat=fixed", 2),
    ];
    let probes = [vmdk::probe, vhd::probe, vhdx::probe];
    let ends = |b: &[u8]| {
        let n = b.len().min(64 << 10);
        (b[..n].to_vec(), b[b.len() - n..].to_vec())
    };
    for (i, (fmt, opts, own)) in cases.iter().enumerate() {
        let path = make_fixture(dir.path(), &raw, fmt, opts, &format!("p{i}"));
        // Through the crate's front door: detection picks this module.
        let src = std::sync::Arc::new(diskformat::FileSource::open(&path).unwrap());
        let opened = diskformat::open(src, &diskformat::Limits::default()).unwrap();
        let want = [Format::Vmdk, Format::Vhd, Format::Vhdx][*own];
        assert_eq!(opened.info().format, want, "{fmt} {opts}");
        let bytes = std::fs::read(&path).unwrap();
        let (head, tail) = ends(&bytes);
        for (k, probe) in probes.iter().enumerate() {
            assert_eq!(
                probe(&head, &tail, bytes.len() as u64),
                k == *own,
                "{fmt} {opts}, probe {k}"
            );
        }
    }
    let (head, tail) = ends(&raw);
    assert!(probes.iter().all(|p| !p(&head, &tail, raw.len() as u64)));
    assert!(probes.iter().all(|p| !p(&[], &[], 0)));
}

fn refused(img: Vec<u8>) -> FormatError {
    match open_bytes(vmdk::open, img) {
        Ok(_) => panic!("a hostile VMDK was opened"),
        Err(e) => e,
    }
}

#[test]
fn footer_must_agree_with_header() {
    let base = footer_stream();
    let n = base.len();
    // capacity, grain size, descriptor offset in the footer header
    for field in [12usize, 20, 28] {
        let mut img = base.to_vec();
        img[n - 1024 + field] ^= 0x40;
        assert!(
            matches!(refused(img), FormatError::Corrupt(_)),
            "field {field}"
        );
    }
    // footer marker type, end-of-stream marker
    for at in [n - 1536 + 12, n - 512 + 12, n - 512] {
        let mut img = base.to_vec();
        img[at] ^= 1;
        assert!(matches!(refused(img), FormatError::Corrupt(_)), "byte {at}");
    }
    // a footer that again says "at the end"
    let mut img = base.to_vec();
    img[n - 1024 + 56..n - 1024 + 64].fill(0xff);
    assert!(matches!(refused(img), FormatError::Corrupt(_)));
}

/// The sector of grain `g`'s marker in a streamOptimized image.
fn grain_sector(img: &[u8], g: usize) -> usize {
    let mut gd = le64(img, 56);
    if gd == u64::MAX {
        gd = le64(img, img.len() - 1024 + 56);
    }
    let gt = le32(img, gd as usize * 512 + 4 * (g / 512)) as usize;
    le32(img, gt * 512 + 4 * (g % 512)) as usize
}

#[test]
fn bad_grains_fail_the_read() {
    let base = footer_stream();
    let at = grain_sector(base, 0) * 512;
    assert!(at > 0);
    let read0 = |img: Vec<u8>| {
        let opened = open_bytes(vmdk::open, img).unwrap();
        let mut b = vec![0u8; 4096];
        opened.read_guest(0, &mut b).expect_err("read refused")
    };
    // A marker for another LBA.
    let mut img = base.to_vec();
    img[at..at + 8].copy_from_slice(&(999u64 * 16).to_le_bytes());
    assert!(matches!(read0(img), FormatError::Corrupt(_)));
    // A grain that inflates to twice the grain size: output stays bounded.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&vec![0u8; 16384]).unwrap();
    let bomb = z.finish().unwrap();
    let mut img = base.to_vec();
    img[at + 8..at + 12].copy_from_slice(&(bomb.len() as u32).to_le_bytes());
    img[at + 12..at + 12 + bomb.len()].copy_from_slice(&bomb);
    assert!(matches!(read0(img), FormatError::Corrupt(_)));
    // Garbage instead of deflate data.
    let mut img = base.to_vec();
    img[at + 12..at + 40].fill(0x77);
    assert!(matches!(read0(img), FormatError::Corrupt(_)));
    // A size past the end of the file.
    let mut img = base.to_vec();
    img[at + 8..at + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    assert!(read0(img).to_string().contains("compressed bytes"));
}

fn monolithic() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| qemu_fixture(&mixed_raw(RAW_SIZE), "monolithicSparse"))
}

fn stream() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| qemu_fixture(&mixed_raw(RAW_SIZE), "streamOptimized"))
}

fn descriptor(img: &[u8]) -> String {
    let at = le64(img, 28) as usize * 512;
    let len = le64(img, 36) as usize * 512;
    let d = &img[at..at + len];
    let end = d.iter().position(|&b| b == 0).unwrap_or(len);
    String::from_utf8(d[..end].to_vec()).unwrap()
}

fn with_descriptor(img: &[u8], text: &str) -> Vec<u8> {
    let at = le64(img, 28) as usize * 512;
    let len = le64(img, 36) as usize * 512;
    assert!(text.len() < len);
    let mut out = img.to_vec();
    out[at..at + len].fill(0);
    out[at..at + text.len()].copy_from_slice(text.as_bytes());
    out
}

#[test]
fn text_descriptor_naming_a_host_file_is_refused() {
    let text = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 2048 FLAT \"/etc/hostname\" 0\n\n# The Disk Data Base\n#DDB\nddb.adapterType = \"ide\"\n";
    assert!(vmdk::probe(text, text, text.len() as u64));
    let e = refused(text.to_vec());
    assert!(matches!(e, FormatError::ExternalReference(_)), "{e}");
    assert_eq!(e.code(), "ExternalReferenceRefused");
}

#[test]
fn embedded_descriptors_naming_other_files_are_refused() {
    for base in [monolithic(), stream()] {
        let d = descriptor(base);
        let ct = if d.contains("streamOptimized") {
            "streamOptimized"
        } else {
            "monolithicSparse"
        };
        let extent = d
            .lines()
            .find(|l| l.starts_with("RW "))
            .unwrap()
            .to_string();
        let sectors = extent.split_whitespace().nth(1).unwrap().to_string();
        let flat_line = format!("RW {sectors} FLAT \"/etc/hostname\" 0");

        // createType flipped to monolithicFlat, extent line unchanged.
        let img = with_descriptor(base, &d.replace(ct, "monolithicFlat"));
        let e = refused(img);
        assert!(matches!(e, FormatError::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("monolithicFlat"), "{e}");
        // ... and with its extent naming a host file.
        let img = with_descriptor(
            base,
            &d.replace(ct, "monolithicFlat").replace(&extent, &flat_line),
        );
        let e = refused(img);
        assert!(
            matches!(
                e,
                FormatError::Unsupported(_) | FormatError::ExternalReference(_)
            ),
            "{e}"
        );

        // Other create types, case-insensitively named.
        for other in [
            "twoGbMaxExtentSparse",
            "vmfsSparse",
            "seSparse",
            "MONOLITHICFLAT",
        ] {
            let e = refused(with_descriptor(base, &d.replace(ct, other)));
            assert!(matches!(e, FormatError::Unsupported(_)), "{other}: {e}");
        }
        // ... while the allowed ones are matched case-insensitively.
        assert!(open_bytes(
            vmdk::open,
            with_descriptor(base, &d.replace(ct, &ct.to_uppercase()))
        )
        .is_ok());

        // A second extent naming a host file.
        let two = d.replace(&extent, &format!("{extent}\n{flat_line}"));
        let e = refused(with_descriptor(base, &two));
        assert!(matches!(e, FormatError::ExternalReference(_)), "{e}");

        // The one extent replaced by a flat host file.
        let e = refused(with_descriptor(base, &d.replace(&extent, &flat_line)));
        assert!(matches!(e, FormatError::ExternalReference(_)), "{e}");

        // A sparse extent whose name is a path.
        let path_line = format!("RW {sectors} SPARSE \"/etc/hostname\"");
        let e = refused(with_descriptor(base, &d.replace(&extent, &path_line)));
        assert!(matches!(e, FormatError::ExternalReference(_)), "{e}");

        // Parents.
        let e = refused(with_descriptor(
            base,
            &d.replace("parentCID=ffffffff", "parentCID=1234abcd"),
        ));
        assert!(matches!(e, FormatError::ExternalReference(_)), "{e}");
        let hint = d.replace(
            "parentCID=ffffffff",
            "parentCID=ffffffff\nparentFileNameHint=\"/etc/hostname\"",
        );
        let e = refused(with_descriptor(base, &hint));
        assert!(matches!(e, FormatError::ExternalReference(_)), "{e}");

        // Lines that are none of comment, ddb, key=value or extent.
        let e = refused(with_descriptor(
            base,
            &d.replace("# Extent description", "include /etc/hostname"),
        ));
        assert!(matches!(e, FormatError::Corrupt(_)), "{e}");
        // No extent at all.
        let e = refused(with_descriptor(base, &d.replace(&extent, "")));
        assert!(matches!(e, FormatError::Corrupt(_)), "{e}");
        // An extent size that is not the header's capacity.
        let e = refused(with_descriptor(
            base,
            &d.replace(&extent, &extent.replace(&sectors, "2048")),
        ));
        assert!(matches!(e, FormatError::Corrupt(_)), "{e}");
    }
}

#[test]
fn tables_outside_the_file_are_refused() {
    let base = monolithic();
    let gd = le64(base, 56) as usize * 512;
    let gt = le32(base, gd) as usize * 512;
    // GD entry past the end.
    let mut img = base.to_vec();
    img[gd..gd + 4].copy_from_slice(&((base.len() / 512) as u32 + 1).to_le_bytes());
    assert!(matches!(refused(img), FormatError::Truncated(_)));
    // GT entry past the end.
    let mut img = base.to_vec();
    img[gt..gt + 4].copy_from_slice(&((base.len() / 512) as u32 - 1).to_le_bytes());
    assert!(matches!(refused(img), FormatError::Truncated(_)));
    // GD itself past the end.
    let mut img = base.to_vec();
    img[56..64].copy_from_slice(&(base.len() as u64 / 512).to_le_bytes());
    assert!(matches!(refused(img), FormatError::Truncated(_)));
    // Descriptor past the end, or claiming more than 1 MiB.
    let mut img = base.to_vec();
    img[28..36].copy_from_slice(&(base.len() as u64 / 512).to_le_bytes());
    assert!(matches!(refused(img), FormatError::Truncated(_)));
    let mut img = base.to_vec();
    img[36..44].copy_from_slice(&4096u64.to_le_bytes());
    assert!(matches!(refused(img), FormatError::Corrupt(_)));
}

#[test]
fn a_zero_grain_entry_reads_as_zeros() {
    let base = monolithic();
    let gd = le64(base, 56) as usize * 512;
    let gt = le32(base, gd) as usize * 512;
    assert!(le32(base, gt) > 1, "grain 0 holds data");
    let mut img = base.to_vec();
    img[gt..gt + 4].copy_from_slice(&1u32.to_le_bytes());
    let opened = open_bytes(vmdk::open, img).unwrap();
    let mut b = vec![0xffu8; 70_000];
    opened.read_guest(0, &mut b).unwrap();
    assert!(b[..65536].iter().all(|&x| x == 0));
    assert_eq!(&b[65536..], &mixed_raw(RAW_SIZE)[65536..70_000]);
    let e = opened.extent_at(0, u64::MAX).unwrap();
    assert_eq!((e.kind, e.len), (diskformat::ExtentKind::Zero, 65536));
}

#[test]
fn truncated_files_are_refused() {
    for base in [monolithic(), stream()] {
        for len in [0usize, 100, 511, 700, base.len() / 2] {
            let e = refused(base[..len].to_vec());
            assert!(matches!(e, FormatError::Truncated(_)), "{len}: {e}");
        }
    }
    let base = footer_stream();
    let e = refused(base[..base.len() - 700].to_vec());
    assert!(
        matches!(e, FormatError::Corrupt(_) | FormatError::Truncated(_)),
        "{e}"
    );
}

#[test]
fn one_pib_claim_is_too_large() {
    // Only the header's capacity changed: refused on size before anything else.
    let mut img = monolithic()[..64 << 10].to_vec();
    img[12..20].copy_from_slice(&((1u64 << 50) / 512).to_le_bytes());
    let e = refused(img);
    assert!(matches!(e, FormatError::TooLarge(_)), "{e}");
    assert_eq!(e.code(), "InvalidFormatSize");

    // A consistent one: descriptor extent and header agree on 1 PiB.
    let base = monolithic();
    let sectors = (1u64 << 50) / 512;
    let d = descriptor(base);
    let extent = d
        .lines()
        .find(|l| l.starts_with("RW "))
        .unwrap()
        .to_string();
    let old = extent.split_whitespace().nth(1).unwrap().to_string();
    let mut img = with_descriptor(
        base,
        &d.replace(&extent, &extent.replace(&old, &sectors.to_string())),
    );
    img[12..20].copy_from_slice(&sectors.to_le_bytes());
    img.truncate(64 << 10);
    let e = refused(img);
    assert!(matches!(e, FormatError::TooLarge(_)), "{e}");
}

/// Byte edits in the header, descriptor, GD, first GT (and the footer of
/// the footer-form stream).
fn mutate(base: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut img = base.to_vec();
    let n = img.len();
    let mut gd = le64(&img, 56);
    if gd == u64::MAX {
        gd = le64(&img, n - 1024 + 56);
    }
    let gd = gd as usize * 512;
    let gt = le32(&img, gd) as usize * 512;
    let regions = [(0, 80), (512, 512), (gd, 16), (gt, 512), (n - 1536, 1536)];
    for &(pos, val) in edits {
        let (start, len) = regions[pos % regions.len()];
        img[start + (pos / regions.len()) % len] = val;
    }
    img
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn mutated_structures_never_panic(
        edits in prop::collection::vec((0usize..8192, any::<u8>()), 1..8),
        which in 0usize..3,
    ) {
        let base = [monolithic(), stream(), footer_stream()][which];
        exercise(vmdk::open, mutate(base, &edits));
    }
}
