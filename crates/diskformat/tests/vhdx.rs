//! VHDX reader against qemu-img fixtures: guest bytes equal qemu-img's view
//! for fixed and dynamic disks (default and 1 MiB blocks); parents, logs to
//! replay, unknown required parts, overlaps and truncation are refused.

mod common_fmt;

use common_fmt::*;
use diskformat::{vhdx, Format, FormatError};
use proptest::prelude::*;
use std::sync::OnceLock;

const RAW_SIZE: usize = 9 * MIB + 61 * 512;
const KIB64: usize = 64 << 10;

fn roundtrip(opts: &str, subformat: &str, block: u64) {
    let dir = tempfile::tempdir().unwrap();
    let raw = mixed_raw(RAW_SIZE);
    let path = make_fixture(dir.path(), &raw, "vhdx", opts, "d.vhdx");
    let expected = oracle(&path, "vhdx");
    assert_eq!(expected, raw);
    let bytes = std::fs::read(&path).unwrap();
    assert!(vhdx::probe(
        &bytes[..KIB64],
        &bytes[bytes.len() - KIB64..],
        bytes.len() as u64
    ));
    let img = open_path(vhdx::open, &path).unwrap();
    let info = img.info();
    assert_eq!(info.format, Format::Vhdx);
    assert_eq!(info.subformat.as_deref(), Some(subformat));
    assert_eq!(info.cluster_size, Some(block));
    assert_guest_eq(&*img, &expected);
}

#[test]
fn dynamic_matches_qemu() {
    roundtrip("subformat=dynamic", "dynamic", 8 << 20);
}

#[test]
fn dynamic_1m_blocks_matches_qemu() {
    roundtrip("subformat=dynamic,block_size=1M", "dynamic", 1 << 20);
}

#[test]
fn fixed_matches_qemu() {
    roundtrip("subformat=fixed", "fixed", 8 << 20);
}

#[test]
fn fixed_1m_blocks_matches_qemu() {
    roundtrip("subformat=fixed,block_size=1M", "fixed", 1 << 20);
}

fn fixture(opts: &'static str, cell: &'static OnceLock<Vec<u8>>) -> &'static [u8] {
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = make_fixture(dir.path(), &mixed_raw(RAW_SIZE), "vhdx", opts, "d.vhdx");
        std::fs::read(path).unwrap()
    })
}

/// Dynamic, 1 MiB blocks: several present and several absent blocks.
fn dyn1m() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    fixture("subformat=dynamic,block_size=1M", &D)
}

fn fixed() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    fixture("subformat=fixed,block_size=1M", &D)
}

const BAT_GUID: [u8; 16] = [
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
];
const FILE_PARAMS: [u8; 16] = [
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b,
];
const VDISK_SIZE: [u8; 16] = [
    0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8,
];
const PAGE83: [u8; 16] = [
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46,
];
const PARENT_LOCATOR: [u8; 16] = [
    0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c,
];

/// File offset of the region with `guid` (from region table 1).
fn region(img: &[u8], guid: &[u8; 16]) -> usize {
    let t = 192 << 10;
    let n = le32(img, t + 8) as usize;
    (0..n)
        .map(|i| t + 16 + 32 * i)
        .find(|&e| &img[e..e + 16] == guid)
        .map(|e| le64(img, e + 16) as usize)
        .expect("region present")
}

/// File offset of metadata item `guid`'s table entry.
fn meta_entry(img: &[u8], guid: &[u8; 16]) -> usize {
    let m = region(img, &METADATA_GUID);
    let n = u16::from_le_bytes([img[m + 10], img[m + 11]]) as usize;
    (0..n)
        .map(|i| m + 32 + 32 * i)
        .find(|&e| &img[e..e + 16] == guid)
        .expect("metadata item present")
}

const METADATA_GUID: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];

/// File offset of metadata item `guid`'s value.
fn meta_value(img: &[u8], guid: &[u8; 16]) -> usize {
    region(img, &METADATA_GUID) + le32(img, meta_entry(img, guid) + 16) as usize
}

fn fix_crc(img: &mut [u8], at: usize, len: usize) {
    img[at + 4..at + 8].fill(0);
    let c = crc32c::crc32c(&img[at..at + len]);
    img[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
}

fn fix_all_crcs(img: &mut [u8]) {
    for h in [64 << 10, 128 << 10] {
        fix_crc(img, h, 4096);
    }
    for r in [192 << 10, 256 << 10] {
        fix_crc(img, r, 64 << 10);
    }
}

fn refused(img: Vec<u8>) -> FormatError {
    match open_bytes(vhdx::open, img) {
        Ok(_) => panic!("a hostile VHDX was opened"),
        Err(e) => e,
    }
}

#[test]
fn has_parent_is_refused() {
    let mut img = dyn1m().to_vec();
    let fp = meta_value(&img, &FILE_PARAMS);
    img[fp + 4] |= 2;
    let e = refused(img);
    assert!(matches!(e, FormatError::ExternalReference(_)), "{e}");
}

#[test]
fn parent_locator_is_refused() {
    let mut img = dyn1m().to_vec();
    let e = meta_entry(&img, &PAGE83);
    img[e..e + 16].copy_from_slice(&PARENT_LOCATOR);
    let err = refused(img);
    assert!(matches!(err, FormatError::ExternalReference(_)), "{err}");
}

#[test]
fn log_to_replay_is_refused() {
    let mut img = dyn1m().to_vec();
    for h in [64 << 10, 128 << 10] {
        img[h + 48..h + 64].copy_from_slice(&[0x5a; 16]);
    }
    fix_all_crcs(&mut img);
    let e = refused(img);
    assert!(matches!(e, FormatError::Unsupported(_)), "{e}");
    assert!(e.to_string().contains("log not replayed"), "{e}");
}

#[test]
fn one_valid_header_or_region_table_is_enough() {
    let expected = mixed_raw(RAW_SIZE);
    for damaged in [64usize << 10, 128 << 10, 192 << 10, 256 << 10] {
        let mut img = dyn1m().to_vec();
        img[damaged + 20] ^= 0xff;
        let opened = open_bytes(vhdx::open, img).unwrap();
        let mut buf = vec![0u8; expected.len()];
        opened.read_guest(0, &mut buf).unwrap();
        assert!(buf == expected);
    }
    let mut img = dyn1m().to_vec();
    img[(64 << 10) + 20] ^= 0xff;
    img[(128 << 10) + 20] ^= 0xff;
    assert!(matches!(refused(img), FormatError::Corrupt(_)));
}

#[test]
fn unknown_required_parts_are_refused() {
    // A third region, required, of a kind nobody knows.
    let mut img = dyn1m().to_vec();
    for t in [192usize << 10, 256 << 10] {
        let n = le32(&img, t + 8) as usize;
        let e = t + 16 + 32 * n;
        img[e..e + 16].copy_from_slice(&[0x11; 16]);
        img[e + 16..e + 24].copy_from_slice(&(32u64 << 20).to_le_bytes());
        img[e + 24..e + 28].copy_from_slice(&(1u32 << 20).to_le_bytes());
        img[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes());
        img[t + 8..t + 12].copy_from_slice(&(n as u32 + 1).to_le_bytes());
    }
    img.resize(40 << 20, 0);
    fix_all_crcs(&mut img);
    let e = refused(img);
    assert!(matches!(e, FormatError::Unsupported(_)), "{e}");

    // An unknown metadata item flagged required.
    let mut img = dyn1m().to_vec();
    let e = meta_entry(&img, &PAGE83);
    img[e] ^= 0xff;
    assert_eq!(
        le32(&img, e + 24) & 4,
        4,
        "qemu marks page 83 data required"
    );
    let err = refused(img);
    assert!(matches!(err, FormatError::Unsupported(_)), "{err}");
}

#[test]
fn bat_hazards_are_refused() {
    let base = dyn1m();
    let bat = region(base, &BAT_GUID);
    let e0 = le64(base, bat);
    assert_eq!(e0 & 7, 6, "block 0 is fully present");
    // qemu marks the all-zero block 1 (1-2 MiB) ZERO rather than present.
    assert_ne!(le64(base, bat + 8) & 7, 6, "block 1 holds no data");

    // Two payload blocks on the same bytes.
    let mut img = base.to_vec();
    img[bat + 8..bat + 16].copy_from_slice(&e0.to_le_bytes());
    assert!(matches!(refused(img), FormatError::Corrupt(_)));

    // A block on top of the BAT region.
    let mut img = base.to_vec();
    img[bat + 8..bat + 16].copy_from_slice(&(bat as u64 | 6).to_le_bytes());
    assert!(matches!(refused(img), FormatError::Corrupt(_)));

    // A block past the end of the file.
    let mut img = base.to_vec();
    let past = (base.len() as u64 + (1 << 20)) & !((1 << 20) - 1);
    img[bat + 8..bat + 16].copy_from_slice(&(past | 6).to_le_bytes());
    assert!(matches!(refused(img), FormatError::Truncated(_)));

    // Partially present blocks belong to differencing disks.
    let mut img = base.to_vec();
    img[bat..bat + 8].copy_from_slice(&((e0 & !7) | 7).to_le_bytes());
    assert!(matches!(refused(img), FormatError::ExternalReference(_)));

    // Reserved states.
    let mut img = base.to_vec();
    img[bat + 8..bat + 16].copy_from_slice(&4u64.to_le_bytes());
    assert!(matches!(refused(img), FormatError::Corrupt(_)));
}

#[test]
fn truncated_files_are_refused() {
    let base = dyn1m();
    for len in [
        0usize,
        100,
        70 << 10,
        300 << 10,
        2 << 20,
        base.len() - (1 << 20),
    ] {
        let e = refused(base[..len].to_vec());
        assert!(
            matches!(e, FormatError::Truncated(_) | FormatError::Corrupt(_)),
            "{len}: {e}"
        );
    }
    let e = refused(base[..2 << 20].to_vec());
    assert!(matches!(e, FormatError::Truncated(_)), "{e}");
}

#[test]
fn one_pib_claim_is_too_large() {
    let mut img = fixed().to_vec();
    let v = meta_value(&img, &VDISK_SIZE);
    img[v..v + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    let e = refused(img);
    assert!(matches!(e, FormatError::TooLarge(_)), "{e}");
}

/// Byte edits in the headers, region tables, metadata table and values
/// and the BAT; with `fix` the CRCs are recomputed.
fn mutate(base: &[u8], edits: &[(usize, u8)], fix: bool) -> Vec<u8> {
    let mut img = base.to_vec();
    let meta = region(&img, &METADATA_GUID);
    let bat = region(&img, &BAT_GUID);
    let regions = [
        (64 << 10, 128),
        (128 << 10, 128),
        (192 << 10, 96),
        (256 << 10, 96),
        (meta, 200),
        (meta + KIB64, 48),
        (bat, 128),
    ];
    for &(pos, val) in edits {
        let (start, n) = regions[pos % regions.len()];
        img[start + (pos / regions.len()) % n] = val;
    }
    if fix {
        fix_all_crcs(&mut img);
    }
    img
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn mutated_structures_never_panic(
        edits in prop::collection::vec((0usize..4096, any::<u8>()), 1..8),
        fix in any::<bool>(),
        dynamic in any::<bool>(),
    ) {
        let base = if dynamic { dyn1m() } else { fixed() };
        exercise(vhdx::open, mutate(base, &edits, fix));
    }
}
