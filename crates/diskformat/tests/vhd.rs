//! VHD reader against qemu-img fixtures: guest bytes equal qemu-img's view
//! for fixed and dynamic disks (CHS-rounded and force_size), and hostile or
//! damaged files are refused without panicking.

mod common_fmt;

use common_fmt::*;
use diskformat::{vhd, Format, FormatError};
use proptest::prelude::*;
use std::sync::OnceLock;

const RAW_SIZE: usize = 9 * MIB + 61 * 512;

fn checksum(b: &[u8], field: usize) -> u32 {
    let mut s = 0u32;
    for (i, &x) in b.iter().enumerate() {
        if !(field..field + 4).contains(&i) {
            s = s.wrapping_add(u32::from(x));
        }
    }
    !s
}

/// Rewrites the footer (and, for a dynamic disk, its copy at 0) after `f`
/// edits it, with a correct checksum.
fn edit_footer(img: &mut [u8], f: impl Fn(&mut [u8])) {
    let at = img.len() - 512;
    let dynamic = img.starts_with(b"conectix");
    f(&mut img[at..]);
    let c = checksum(&img[at..], 64);
    img[at + 64..at + 68].copy_from_slice(&c.to_be_bytes());
    if dynamic {
        let footer = img[at..].to_vec();
        img[..512].copy_from_slice(&footer);
    }
}

fn roundtrip(opts: &str, subformat: &str) {
    let dir = tempfile::tempdir().unwrap();
    let raw = mixed_raw(RAW_SIZE);
    let path = make_fixture(dir.path(), &raw, "vpc", opts, "d.vhd");
    let expected = oracle(&path, "vpc");
    let bytes = std::fs::read(&path).unwrap();
    let (head, tail) = (&bytes[..64 << 10], &bytes[bytes.len() - (64 << 10)..]);
    assert!(vhd::probe(head, tail, bytes.len() as u64));
    let img = open_path(vhd::open, &path).unwrap();
    let info = img.info();
    assert_eq!(info.format, Format::Vhd);
    assert_eq!(info.subformat.as_deref(), Some(subformat));
    assert_eq!(info.file_size, bytes.len() as u64);
    assert_guest_eq(&*img, &expected);
    // The guest data itself survives (qemu may only add a zero tail).
    assert_eq!(&expected[..RAW_SIZE], &raw[..]);
    if opts.contains("force_size") {
        assert_eq!(expected.len(), RAW_SIZE);
    }
}

#[test]
fn fixed_matches_qemu() {
    roundtrip("subformat=fixed", "fixed");
}

#[test]
fn fixed_force_size_matches_qemu() {
    roundtrip("subformat=fixed,force_size=on", "fixed");
}

#[test]
fn dynamic_matches_qemu() {
    roundtrip("subformat=dynamic", "dynamic");
}

#[test]
fn dynamic_force_size_matches_qemu() {
    roundtrip("subformat=dynamic,force_size=on", "dynamic");
}

/// A dynamic fixture (2 MiB blocks) kept in memory for the hostile tests.
fn dynamic_bytes() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = make_fixture(
            dir.path(),
            &mixed_raw(RAW_SIZE),
            "vpc",
            "subformat=dynamic",
            "d.vhd",
        );
        std::fs::read(path).unwrap()
    })
}

fn fixed_bytes() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = make_fixture(
            dir.path(),
            &mixed_raw(RAW_SIZE),
            "vpc",
            "subformat=fixed",
            "f.vhd",
        );
        std::fs::read(path).unwrap()
    })
}

fn dyn_layout(img: &[u8]) -> (usize, usize) {
    let dyn_at = u64::from_be_bytes(img[16..24].try_into().unwrap()) as usize;
    let bat_at = u64::from_be_bytes(img[dyn_at + 16..dyn_at + 24].try_into().unwrap()) as usize;
    (dyn_at, bat_at)
}

#[test]
fn differencing_disk_is_refused() {
    for base in [dynamic_bytes(), fixed_bytes()] {
        let mut img = base.to_vec();
        edit_footer(&mut img, |f| f[60..64].copy_from_slice(&4u32.to_be_bytes()));
        let err = open_bytes(vhd::open, img).err().expect("refused");
        assert!(matches!(err, FormatError::ExternalReference(_)), "{err}");
        assert_eq!(err.code(), "ExternalReferenceRefused");
    }
    let mut img = dynamic_bytes().to_vec();
    edit_footer(&mut img, |f| f[60..64].copy_from_slice(&5u32.to_be_bytes()));
    assert!(matches!(
        open_bytes(vhd::open, img),
        Err(FormatError::Unsupported(_))
    ));
}

#[test]
fn bad_checksums_are_refused() {
    let mut img = fixed_bytes().to_vec();
    let at = img.len() - 512 + 40;
    img[at] ^= 1;
    assert!(matches!(
        open_bytes(vhd::open, img),
        Err(FormatError::Corrupt(_))
    ));
    let mut img = dynamic_bytes().to_vec();
    let (dyn_at, _) = dyn_layout(&img);
    img[dyn_at + 32] ^= 0x80; // block size, checksum left stale
    assert!(matches!(
        open_bytes(vhd::open, img),
        Err(FormatError::Corrupt(_))
    ));
}

#[test]
fn footer_copy_must_match() {
    let mut img = dynamic_bytes().to_vec();
    img[100] ^= 1; // inside the unique id of the copy at offset 0
    assert!(matches!(
        open_bytes(vhd::open, img),
        Err(FormatError::Corrupt(_))
    ));
}

#[test]
fn shared_blocks_are_refused() {
    let mut img = dynamic_bytes().to_vec();
    let (_, bat_at) = dyn_layout(&img);
    let first = be32(&img, bat_at);
    assert_ne!(first, u32::MAX, "block 0 holds data");
    // Point block 1 at block 0's bytes.
    img[bat_at + 4..bat_at + 8].copy_from_slice(&first.to_be_bytes());
    let err = open_bytes(vhd::open, img).err().expect("refused");
    assert!(matches!(err, FormatError::Corrupt(_)), "{err}");
}

#[test]
fn block_over_the_bat_is_refused() {
    let mut img = dynamic_bytes().to_vec();
    let (_, bat_at) = dyn_layout(&img);
    img[bat_at + 4..bat_at + 8].copy_from_slice(&((bat_at / 512) as u32).to_be_bytes());
    assert!(matches!(
        open_bytes(vhd::open, img),
        Err(FormatError::Corrupt(_))
    ));
}

#[test]
fn truncated_files_are_refused() {
    // Dynamic disk cut in half, a valid footer put back at the new end:
    // blocks now point past the data area.
    let base = dynamic_bytes();
    let footer = &base[base.len() - 512..];
    let mut img = base[..base.len() / 2].to_vec();
    img.extend_from_slice(footer);
    let err = open_bytes(vhd::open, img).err().expect("refused");
    assert!(matches!(err, FormatError::Truncated(_)), "{err}");
    // Fixed disk whose data was cut short.
    let base = fixed_bytes();
    let mut img = base[..base.len() / 2].to_vec();
    img.extend_from_slice(&base[base.len() - 512..]);
    assert!(matches!(
        open_bytes(vhd::open, img),
        Err(FormatError::Truncated(_))
    ));
    // Not even a footer.
    assert!(open_bytes(vhd::open, base[..300].to_vec()).is_err());
    assert!(open_bytes(vhd::open, Vec::new()).is_err());
}

#[test]
fn one_pib_claim_is_too_large() {
    // A 512-byte file: nothing but a fixed-disk footer claiming 1 PiB.
    let base = fixed_bytes();
    let mut tiny = base[base.len() - 512..].to_vec();
    edit_footer(&mut tiny, |f| {
        f[48..56].copy_from_slice(&(1u64 << 50).to_be_bytes())
    });
    let err = open_bytes(vhd::open, tiny).err().expect("refused");
    assert!(matches!(err, FormatError::TooLarge(_)), "{err}");

    for base in [dynamic_bytes(), fixed_bytes()] {
        let mut img = base.to_vec();
        edit_footer(&mut img, |f| {
            f[40..48].copy_from_slice(&(1u64 << 50).to_be_bytes());
            f[48..56].copy_from_slice(&(1u64 << 50).to_be_bytes());
        });
        let err = open_bytes(vhd::open, img).err().expect("refused");
        assert!(matches!(err, FormatError::TooLarge(_)), "{err}");
        assert_eq!(err.code(), "InvalidFormatSize");
    }
}

#[test]
fn bat_too_small_for_the_size_is_refused() {
    let mut img = dynamic_bytes().to_vec();
    let (dyn_at, _) = dyn_layout(&img);
    img[dyn_at + 28..dyn_at + 32].copy_from_slice(&1u32.to_be_bytes());
    let c = checksum(&img[dyn_at..dyn_at + 1024], 36);
    img[dyn_at + 36..dyn_at + 40].copy_from_slice(&c.to_be_bytes());
    assert!(matches!(
        open_bytes(vhd::open, img),
        Err(FormatError::Corrupt(_))
    ));
}

/// Mutate bytes of the footer, its copy, the dynamic header and the BAT;
/// with `fix` the checksums are recomputed so the mutation reaches the
/// deeper checks.
fn mutate(base: &[u8], edits: &[(usize, u8)], fix: bool) -> Vec<u8> {
    let mut img = base.to_vec();
    let len = img.len();
    let dynamic = img.starts_with(b"conectix");
    let (dyn_at, bat_at) = if dynamic { dyn_layout(&img) } else { (0, 0) };
    // Regions: footer, then dynamic header and first 4 KiB of BAT.
    let regions: Vec<(usize, usize)> = if dynamic {
        vec![(len - 512, 512), (dyn_at, 1024), (bat_at, 64)]
    } else {
        vec![(len - 512, 512)]
    };
    for &(pos, val) in edits {
        let (start, n) = regions[pos % regions.len()];
        img[start + (pos / regions.len()) % n] = val;
    }
    if fix {
        let c = checksum(&img[len - 512..], 64);
        img[len - 448..len - 444].copy_from_slice(&c.to_be_bytes());
        if dynamic {
            let footer = img[len - 512..].to_vec();
            img[..512].copy_from_slice(&footer);
            let c = checksum(&img[dyn_at..dyn_at + 1024], 36);
            img[dyn_at + 36..dyn_at + 40].copy_from_slice(&c.to_be_bytes());
        }
    }
    img
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn mutated_headers_never_panic(
        edits in prop::collection::vec((0usize..4096, any::<u8>()), 1..8),
        fix in any::<bool>(),
        dynamic in any::<bool>(),
    ) {
        let base = if dynamic { dynamic_bytes() } else { fixed_bytes() };
        exercise(vhd::open, mutate(base, &edits, fix));
    }
}
