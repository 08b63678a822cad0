//! Property tests: every parser, fed real fixtures (built once per run with
//! Debian's tools) with random bytes overwritten in its metadata, returns a
//! result or an error within a time bound, and never panics. The whole
//! inspection runs on each mutant, and the filesystem readers are also
//! walked over every reachable entry.

mod common;

use common::skip;
use common::*;
use diskformat::ReadAt;
use guestinspect::fs::{self, FileType, Filesystem};
use guestinspect::{inspect, lvm, part, InspectOptions};
use proptest::prelude::*;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Per mutant, generous for a loaded 2-core machine; a hang would blow it.
const TIME_BOUND: Duration = Duration::from_secs(5);

struct Fixture {
    bytes: Vec<u8>,
    /// Where the metadata lies: each mutation picks one of these ranges,
    /// so that the small structures (headers, superblocks, descriptors)
    /// are hit as often as the large ones.
    hot: Vec<(u64, u64)>,
}

/// An MBR disk with an extended partition and a logical ext4 (p5).
fn ext_fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        if !require("proptest ext fixture", &["sfdisk", "mkfs.ext4"]) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = small_tree(dir.path());
        let disk = dir.path().join("d.raw");
        sparse_file(&disk, 8 * MIB);
        sfdisk(
            &disk,
            "label: dos\nstart=2048, size=14336, type=5\nstart=4096, size=12288, type=83\n",
        );
        mkfs_ext4(&disk, 4096 * 512, 12288 * 512, &root, &Ext4::default());
        let p = 4096 * 512;
        let hot = vec![
            (0, 512),
            (2048 * 512, 512),
            (p + 1024, 1024),
            (p + 2048, 2048),
            (p, 1024 * 1024),
        ];
        Some(Fixture {
            bytes: std::fs::read(&disk).unwrap(),
            hot,
        })
    })
    .as_ref()
}

/// A GPT disk with a FAT partition holding nested directories and long names.
fn fat_fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        if !require(
            "proptest fat fixture",
            &["sfdisk", "mkfs.vfat", "mcopy", "mmd"],
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.raw");
        sparse_file(&disk, 8 * MIB);
        sfdisk(&disk, "label: gpt\nstart=2048, size=8192, type=U\n");
        let files: Vec<(String, Vec<u8>)> = (0..30)
            .map(|i| {
                (
                    format!("/EFI/vendor-{}/a long file name {i}.efi", i % 3),
                    vec![i as u8; 3000 + i * 100],
                )
            })
            .collect();
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        mkfs_vfat(dir.path(), &disk, 2048 * 512, 4 * MIB, "ESP", &refs);
        let p = 2048 * 512;
        // Protective MBR, GPT header, entry array, backup header, boot
        // sector, FATs and directories.
        let hot = vec![
            (0, 512),
            (512, 512),
            (1024, 16384),
            (8 * MIB - 512, 512),
            (p, 512),
            (p, 256 * 1024),
        ];
        Some(Fixture {
            bytes: std::fs::read(&disk).unwrap(),
            hot,
        })
    })
    .as_ref()
}

/// A whole-disk LVM PV with a linear LV holding ext4.
fn lvm_fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        if !require(
            "proptest lvm fixture",
            &["losetup", "pvcreate", "mkfs.ext4"],
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let pv = dir.path().join("pv.img");
        sparse_file(&pv, 16 * MIB);
        let pieces = match make_linear_lv(dir.path(), &pv, "vgprop", "root", 2, &[]) {
            Ok(p) => p,
            Err(why) => {
                skip::skip(&format!("proptest lvm fixture: {why}"));
                return None;
            }
        };
        let root = small_tree(dir.path());
        mkfs_ext4(&pv, pieces[0].0, pieces[0].1, &root, &Ext4::default());
        // Label, metadata area header and text, the LV's superblock.
        let hot = vec![
            (0, 2048),
            (4096, 512),
            (4608, 8192),
            (pieces[0].0 + 1024, 4096),
        ];
        Some(Fixture {
            bytes: std::fs::read(&pv).unwrap(),
            hot,
        })
    })
    .as_ref()
}

fn mutate(f: &Fixture, muts: &[(u8, u64, u8)]) -> Vec<u8> {
    let mut d = f.bytes.clone();
    for (range, off, b) in muts {
        let (lo, len) = f.hot[usize::from(*range) % f.hot.len()];
        let at = (lo + off % len) as usize;
        if let Some(x) = d.get_mut(at) {
            *x = *b;
        }
    }
    d
}

/// Visit every reachable entry (bounded), exercising stat, read_dir, read
/// and read_link on whatever the mutant holds.
fn walk(fs: &dyn Filesystem) {
    let mut seen = HashSet::new();
    let mut queue = vec![(fs.root(), 0)];
    while let Some((ino, depth)) = queue.pop() {
        if !seen.insert(ino) || seen.len() > 400 || depth > 8 {
            continue;
        }
        let Ok(entries) = fs.read_dir(ino, 1000) else {
            continue;
        };
        for e in entries {
            match fs.stat(e.inode).map(|s| s.file_type) {
                Ok(FileType::Dir) => queue.push((e.inode, depth + 1)),
                Ok(FileType::File) => {
                    let mut buf = [0u8; 4096];
                    let _ = fs.read(e.inode, 0, &mut buf);
                }
                Ok(FileType::Symlink) => {
                    let _ = fs.read_link(e.inode);
                }
                _ => {}
            }
        }
    }
    let _ = fs::path::read_small_file(fs, "/etc/os-release", 65536);
}

fn check_inspect(d: Vec<u8>) {
    let start = Instant::now();
    let disk: Arc<dyn ReadAt> = Arc::new(MemDisk(d));
    let _ = inspect(disk, &InspectOptions::default());
    assert!(
        start.elapsed() < TIME_BOUND,
        "inspection took {:?}",
        start.elapsed()
    );
}

fn mutations() -> impl Strategy<Value = Vec<(u8, u64, u8)>> {
    prop::collection::vec((any::<u8>(), any::<u64>(), any::<u8>()), 1..16)
}

proptest! {
    // PROPTEST_CASES=N runs a longer search than the default 96 per parser.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mbr_and_ext4_mutants(muts in mutations()) {
        let Some(f) = ext_fixture() else { return Ok(()) };
        let d = mutate(f, &muts);
        let start = Instant::now();
        let _ = part::detect(&MemDisk(d.clone()));
        let disk: Arc<dyn ReadAt> = Arc::new(MemDisk(d.clone()));
        if let Ok(Some(fs)) = fs::ext::open(disk, 4096 * 512, 12288 * 512) {
            walk(&*fs);
        }
        prop_assert!(start.elapsed() < TIME_BOUND);
        check_inspect(d);
    }

    #[test]
    fn gpt_and_fat_mutants(muts in mutations()) {
        let Some(f) = fat_fixture() else { return Ok(()) };
        let d = mutate(f, &muts);
        let start = Instant::now();
        let _ = part::detect(&MemDisk(d.clone()));
        let disk: Arc<dyn ReadAt> = Arc::new(MemDisk(d.clone()));
        if let Ok(Some(fs)) = fs::fat::open(disk, 2048 * 512, 8192 * 512) {
            walk(&*fs);
        }
        prop_assert!(start.elapsed() < TIME_BOUND);
        check_inspect(d);
    }

    #[test]
    fn lvm_mutants(muts in mutations()) {
        let Some(f) = lvm_fixture() else { return Ok(()) };
        let d = mutate(f, &muts);
        let start = Instant::now();
        let _ = lvm::read_pv(&MemDisk(d.clone()));
        prop_assert!(start.elapsed() < TIME_BOUND);
        check_inspect(d);
    }

    /// The metadata text parser on mutated real metadata (the checksum
    /// would stop these before the parser on a disk).
    #[test]
    fn lvm_text_mutants(muts in prop::collection::vec((any::<u64>(), any::<u8>()), 1..16), cut in any::<u16>()) {
        let text = lvm_text();
        let mut t = text.into_bytes();
        let n = t.len() as u64;
        for (off, b) in &muts {
            t[(off % n) as usize] = *b;
        }
        t.truncate((cut as usize).max(1).min(t.len()));
        let _ = lvm::text::parse(&t);
    }
}

/// Real metadata text from the LVM fixture, or a realistic stand-in when
/// LVM cannot run here.
fn lvm_text() -> String {
    if let Some(f) = lvm_fixture() {
        let d = &f.bytes;
        if let Some(start) = d.windows(11).position(|w| w == b"vgprop {\nid") {
            let end = d[start..]
                .iter()
                .position(|&b| b == 0)
                .map_or(d.len(), |e| start + e);
            return String::from_utf8_lossy(&d[start..end]).into_owned();
        }
    }
    "vg0 {\nid = \"x\"\nseqno = 2\nextent_size = 8192\nphysical_volumes {\npv0 {\nid = \"a\"\npe_start = 2048\n}\n}\nlogical_volumes {\nroot {\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 2\ntype = \"striped\"\nstripe_count = 1\nstripes = [\n\"pv0\", 0\n]\n}\n}\n}\n}\n".to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// The text parsers for files a guest controls take any bytes: real
    /// release files with random edits, and arbitrary strings.
    #[test]
    fn release_and_fstab_parsers_take_any_text(
        base in prop::sample::select(vec![
            CENTOS7_OS_RELEASE, UBUNTU2204_OS_RELEASE, DEBIAN12_OS_RELEASE, LEAP15_OS_RELEASE, ROCKY9_OS_RELEASE,
            "CentOS Linux release 7.9.2009 (Core)\n",
            "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n",
            "UUID=0a5ab0e3 / ext4 defaults 0 1\n/dev/mapper/centos-root /home xfs defaults 0 0\n",
        ]),
        edits in prop::collection::vec((any::<usize>(), any::<char>()), 0..12),
        junk in ".{0,200}",
    ) {
        use guestinspect::os::{self, release};
        let mut chars: Vec<char> = base.chars().collect();
        for (at, c) in edits {
            let n = chars.len();
            chars[at % n] = c;
        }
        for text in [chars.into_iter().collect::<String>(), junk] {
            let r = release::from_os_release(&text, "x");
            let t = release::tencent_os_type(&r);
            let _ = release::tencent_os_name(&r, t, Some("x86_64"));
            let r = release::from_redhat_release(&text, "x");
            let _ = release::tencent_os_name(&r, release::tencent_os_type(&r), None);
            let _ = release::from_suse_release(&text, "x");
            let _ = release::from_lsb_release(&text, "x");
            let _ = release::first_version(&text).map(|v| release::major_minor(&v));
            let _ = os::parse_fstab(&text);
            let _ = os::elf::architecture(text.as_bytes());
        }
    }
}
