//! The Btrfs reader against filesystems made by Debian's `mkfs.btrfs
//! --rootdir` (an openSUSE Leap 15 tree; DUP metadata, SINGLE data), and,
//! where loop mounting works, a kernel-written one with openSUSE's
//! subvolume layout and zlib/zstd compressed files; plus mutations.

#[path = "common/skip.rs"]
mod skip;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use diskformat::source::FileSource;
use diskformat::ReadAt;
use guestinspect::fs::{btrfs, path, FileType, Filesystem, FsError, InodeId};
use proptest::prelude::*;

const LEAP_OS_RELEASE: &str = "NAME=\"openSUSE Leap\"\nVERSION=\"15.5\"\nID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\nVERSION_ID=\"15.5\"\nPRETTY_NAME=\"openSUSE Leap 15.5\"\nANSI_COLOR=\"0;32\"\nCPE_NAME=\"cpe:/o:opensuse:leap:15.5\"\n";
const BIG_DIR: usize = 2000;

/// The tools the fixtures are made with; a test without them says so and
/// passes (CI must install them: btrfs-progs).
fn missing_tool() -> Option<&'static str> {
    static MISSING: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *MISSING.get_or_init(|| {
        ["mkfs.btrfs", "btrfs"].into_iter().find(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    })
}

fn tools(test: &str) -> bool {
    match missing_tool() {
        Some(t) => {
            skip::skip(&format!(
                "{test}: `{t}` is not installed (apt-get install btrfs-progs)"
            ));
            false
        }
        None => true,
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    img: PathBuf,
}

/// An openSUSE Leap 15 tree: /etc/os-release is a relative symlink into
/// /usr/lib as on the real system.
fn make_tree(root: &Path) {
    let mk = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
    mk("etc");
    mk("usr/lib");
    mk("usr/bin");
    mk("var/big");
    std::fs::write(root.join("usr/lib/os-release"), LEAP_OS_RELEASE).unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::write(root.join("etc/hostname"), "leap\n").unwrap();
    std::fs::write(root.join("usr/bin/bash"), pattern(1_000_003, 3)).unwrap();
    for i in 0..BIG_DIR {
        std::fs::write(root.join(format!("var/big/entry-{i:05}")), format!("{i}\n")).unwrap();
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        make_tree(&root);
        let img = dir.path().join("btrfs.img");
        // mkfs.btrfs wants ~110 MB: the file is sparse, ~10 MB on disk.
        let out = Command::new("mkfs.btrfs")
            .args(["-q", "-L", "leap-root", "-r"])
            .arg(&root)
            .arg(&img)
            .output()
            .expect("run mkfs.btrfs");
        assert!(
            out.status.success(),
            "mkfs.btrfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Fixture { _dir: dir, img }
    })
}

fn open_file(img: &Path) -> Box<dyn Filesystem> {
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(img).unwrap());
    let len = src.len();
    btrfs::open(src, 0, len).unwrap().expect("btrfs signature")
}

fn read_all(fs: &dyn Filesystem, ino: InodeId) -> Result<Vec<u8>, FsError> {
    let size = fs.stat(ino)?.size;
    let mut out = vec![0u8; size as usize];
    let mut done = 0;
    while done < out.len() {
        let end = (done + 10_007).min(out.len());
        let n = fs.read(ino, done as u64, &mut out[done..end])?;
        assert!(n > 0);
        done += n;
    }
    Ok(out)
}

fn cat(fs: &dyn Filesystem, p: &str) -> Vec<u8> {
    read_all(fs, path::resolve(fs, p, true).unwrap()).unwrap()
}

#[test]
fn opensuse_tree_from_rootdir() {
    if !tools("opensuse_tree_from_rootdir") {
        return;
    }
    let fx = fixture();
    let fs = open_file(&fx.img);
    assert_eq!(fs.kind(), "btrfs");
    assert_eq!(fs.label().as_deref(), Some("leap-root"));
    assert_eq!(fs.uuid().unwrap().len(), 36);

    let mut names: Vec<String> = fs
        .read_dir(fs.root(), 100)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["bin", "etc", "usr", "var"]);

    let osr = path::resolve(&*fs, "/etc/os-release", false).unwrap();
    assert_eq!(fs.stat(osr).unwrap().file_type, FileType::Symlink);
    assert_eq!(fs.read_link(osr).unwrap(), b"../usr/lib/os-release");
    assert_eq!(cat(&*fs, "/etc/os-release"), LEAP_OS_RELEASE.as_bytes());
    assert_eq!(cat(&*fs, "/etc/hostname"), b"leap\n");
    // Through the bin -> usr/bin symlink; a regular (non-inline) extent.
    assert_eq!(cat(&*fs, "/bin/bash"), pattern(1_000_003, 3));

    let big = path::resolve(&*fs, "/var/big", true).unwrap();
    let mut entries = fs.read_dir(big, 10_000).unwrap();
    assert_eq!(entries.len(), BIG_DIR);
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(entries[1234].name, b"entry-01234");
    assert_eq!(read_all(&*fs, entries[1234].inode).unwrap(), b"1234\n");
    assert!(matches!(fs.read_dir(big, 10), Err(FsError::Limit(_))));
    let bash = path::resolve(&*fs, "/usr/bin/bash", true).unwrap();
    assert!(matches!(
        fs.read_dir(bash, 10),
        Err(FsError::NotADirectory(_))
    ));
    let mut buf = [0u8; 8];
    assert_eq!(fs.read(bash, 1_000_003, &mut buf).unwrap(), 0);
}

#[test]
fn not_btrfs() {
    let zeros: &'static [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
    let src: Arc<dyn ReadAt> = Arc::new(diskformat::source::SliceSource(zeros));
    assert!(btrfs::open(src.clone(), 0, 1 << 20).unwrap().is_none());
    assert!(btrfs::open(src, 0, 4096).unwrap().is_none());
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// openSUSE's layout: top level holds `@`, `@/.snapshots`, the default
/// subvolume `@/.snapshots/1/snapshot`, and nested subvolumes (`@/home`,
/// here also `snapshot/srv` inside the default one); compressed files.
/// Needs loop mounting, which the kernel allows on this kind of machine.
#[test]
fn opensuse_subvolumes_and_compression() {
    if !tools("opensuse_subvolumes_and_compression") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("c.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    run(Command::new("mkfs.btrfs").arg("-q").arg(&img)).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    if let Err(e) = run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt))
    {
        skip::skip(&format!(
            "opensuse_subvolumes_and_compression: cannot loop-mount btrfs here: {e}"
        ));
        return;
    }
    let build = || -> Result<(), String> {
        let sv = |p: &str| {
            run(Command::new("btrfs")
                .args(["-q", "subvolume", "create"])
                .arg(mnt.join(p)))
        };
        sv("@")?;
        sv("@/.snapshots")?;
        std::fs::create_dir(mnt.join("@/.snapshots/1")).map_err(|e| e.to_string())?;
        sv("@/.snapshots/1/snapshot")?;
        sv("@/home")?;
        let snap = mnt.join("@/.snapshots/1/snapshot");
        sv("@/.snapshots/1/snapshot/srv")?;
        let w = |p: &Path, data: &[u8]| std::fs::write(p, data).map_err(|e| e.to_string());
        std::fs::create_dir_all(snap.join("etc")).map_err(|e| e.to_string())?;
        w(&snap.join("etc/os-release"), LEAP_OS_RELEASE.as_bytes())?;
        w(&snap.join("srv/www.txt"), b"served\n")?;
        w(&mnt.join("@/home/not-in-root"), b"x")?;
        // Compressible data with some variety, in several 128 KiB extents.
        let text: Vec<u8> = (0..600_000u32)
            .flat_map(|i| format!("{} ", i % 977).into_bytes())
            .take(700_000)
            .collect();
        for algo in ["zlib", "zstd"] {
            let f = snap.join(format!("{algo}.txt"));
            w(&f, b"")?;
            run(Command::new("btrfs")
                .args(["property", "set"])
                .arg(&f)
                .args(["compression", algo]))?;
            w(&f, &text)?;
            // A small compressed file becomes a compressed inline extent.
            let g = snap.join(format!("{algo}-small.txt"));
            w(&g, b"")?;
            run(Command::new("btrfs")
                .args(["property", "set"])
                .arg(&g)
                .args(["compression", algo]))?;
            w(&g, &text[..2000])?;
        }
        run(Command::new("btrfs")
            .args(["subvolume", "set-default"])
            .arg(&snap))?;
        run(&mut Command::new("sync"))
    };
    let res = build();
    let um = run(Command::new("umount").arg(&mnt));
    res.unwrap();
    um.unwrap();

    let text: Vec<u8> = (0..600_000u32)
        .flat_map(|i| format!("{} ", i % 977).into_bytes())
        .take(700_000)
        .collect();
    // The kernel really compressed them (btrfs-progs as the oracle).
    let dump = Command::new("btrfs")
        .args(["inspect-internal", "dump-tree"])
        .arg(&img)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("compression 1 (zlib)") && dump.contains("compression 3 (zstd)"));
    assert!(dump.contains("type 0 (inline)"));

    let fs = open_file(&img);
    assert_eq!(cat(&*fs, "/etc/os-release"), LEAP_OS_RELEASE.as_bytes());
    assert_eq!(cat(&*fs, "/srv/www.txt"), b"served\n");
    let srv = path::resolve(&*fs, "/srv", true).unwrap();
    assert_eq!(fs.stat(srv).unwrap().file_type, FileType::Dir);
    assert!(path::resolve(&*fs, "/home/not-in-root", true).is_err());
    for algo in ["zlib", "zstd"] {
        assert_eq!(cat(&*fs, &format!("/{algo}.txt")), text, "{algo}");
        assert_eq!(
            cat(&*fs, &format!("/{algo}-small.txt")),
            &text[..2000],
            "{algo} inline"
        );
    }
    // Partial reads inside a compressed extent.
    let z = path::resolve(&*fs, "/zstd.txt", true).unwrap();
    let mut buf = vec![0u8; 333];
    assert_eq!(fs.read(z, 200_001, &mut buf).unwrap(), 333);
    assert_eq!(buf, &text[200_001..200_334]);
}

/// Reads through a file, recording ranges, or with some bytes patched.
struct Patched {
    base: FileSource,
    patches: Vec<(u64, u8)>,
    reads: std::sync::Mutex<Vec<(u64, usize)>>,
}

impl ReadAt for Patched {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.base.read_at(offset, buf)?;
        self.reads.lock().unwrap().push((offset, buf.len()));
        for &(at, b) in &self.patches {
            if at >= offset && at < offset + buf.len() as u64 {
                buf[(at - offset) as usize] = b;
            }
        }
        Ok(())
    }
    fn len(&self) -> u64 {
        self.base.len()
    }
}

type Opened = Result<Option<Box<dyn Filesystem>>, FsError>;

fn open_patched(patches: Vec<(u64, u8)>) -> (Arc<Patched>, Opened) {
    let src = Arc::new(Patched {
        base: FileSource::open(&fixture().img).unwrap(),
        patches,
        reads: Default::default(),
    });
    let len = src.len();
    let r = btrfs::open(src.clone(), 0, len);
    (src, r)
}

fn walk(fs: &dyn Filesystem) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(fs.root(), 0usize)];
    let mut buf = vec![0u8; 64 << 10];
    while let Some((ino, depth)) = stack.pop() {
        if depth > 32 || !seen.insert(ino) || seen.len() > 5000 {
            continue;
        }
        let Ok(st) = fs.stat(ino) else { continue };
        match st.file_type {
            FileType::Dir => {
                if let Ok(entries) = fs.read_dir(ino, 5000) {
                    stack.extend(entries.into_iter().map(|e| (e.inode, depth + 1)));
                }
            }
            FileType::File => {
                let _ = fs.read(ino, 0, &mut buf);
            }
            FileType::Symlink => {
                let _ = fs.read_link(ino);
            }
            FileType::Other => {}
        }
    }
    seen.len()
}

fn metadata_reads() -> &'static [(u64, usize)] {
    static R: OnceLock<Vec<(u64, usize)>> = OnceLock::new();
    R.get_or_init(|| {
        let (src, fs) = open_patched(vec![]);
        assert!(walk(&*fs.unwrap().unwrap()) > BIG_DIR);
        let mut reads = src.reads.lock().unwrap().clone();
        // Tree nodes (16 KiB) and the superblock; not file data.
        reads.retain(|&(_, len)| len == 16384 || len == 4096);
        reads.sort();
        reads.dedup();
        reads
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn mutated_metadata_never_hangs_or_panics(
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        // The other tests of this file print why they skip.
        if missing_tool().is_some() {
            return Ok(());
        }
        let reads = metadata_reads();
        let patches = muts
            .iter()
            .map(|(r, o, b)| {
                let (off, len) = reads[r.index(reads.len())];
                (off + o.index(len) as u64, *b)
            })
            .collect();
        let start = Instant::now();
        if let (_, Ok(Some(fs))) = open_patched(patches) {
            walk(&*fs);
        }
        prop_assert!(start.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn hostile_superblock_and_nodes() {
    if !tools("hostile_superblock_and_nodes") {
        return;
    }
    const SB: u64 = 0x10000;
    // A bootstrap chunk claiming RAID1: refused as unsupported.
    let (_, r) = open_patched(vec![(SB + 0x32b + 17 + 24, 0x12)]);
    assert!(matches!(r, Err(FsError::Unsupported(_))), "{:?}", r.err());
    // Two devices.
    let (_, r) = open_patched(vec![(SB + 0x88, 2)]);
    assert!(matches!(r, Err(FsError::Unsupported(_))));
    // The root tree pointer moved by one node: that node names another
    // address (or none), so it is not followed.
    let sb = {
        let mut b = vec![0u8; 4096];
        FileSource::open(&fixture().img)
            .unwrap()
            .read_at(SB, &mut b)
            .unwrap();
        b
    };
    let root = u64::from_le_bytes(sb[0x50..0x58].try_into().unwrap()) + 16384;
    let patches = root
        .to_le_bytes()
        .iter()
        .enumerate()
        .map(|(i, &b)| (SB + 0x50 + i as u64, b))
        .collect();
    let (_, r) = open_patched(patches);
    assert!(matches!(r, Err(FsError::Corrupt(_))), "{:?}", r.err());
}

/// An interior node of the FS tree whose first child pointer names the node
/// itself: followed once, the child's level is wrong, so the walk stops with
/// a corruption error instead of looping.
#[test]
fn child_pointer_cycle_is_corrupt() {
    if !tools("child_pointer_cycle_is_corrupt") {
        return;
    }
    let img = std::fs::read(&fixture().img).unwrap();
    let u64_at = |at: usize| u64::from_le_bytes(img[at..at + 8].try_into().unwrap());
    // Interior FS-tree nodes (owner 5, level >= 1); DUP metadata keeps two
    // copies, so patch every copy of the chosen node.
    let nodes: Vec<usize> = (0..img.len() - 16384)
        .step_by(16384)
        .filter(|&n| u64_at(n + 0x58) == 5 && img[n + 0x64] >= 1 && u64_at(n + 0x30) != 0)
        .collect();
    let first = *nodes
        .first()
        .expect("an interior FS-tree node (2000-entry directory)");
    let bytenr = u64_at(first + 0x30);
    let patches: Vec<(u64, u8)> = nodes
        .iter()
        .filter(|&&n| u64_at(n + 0x30) == bytenr)
        .flat_map(|&n| {
            // First key pointer: 17-byte key, then the child's address.
            let ptr = n + 101 + 17;
            (0..8).map(move |i| ((ptr + i) as u64, bytenr.to_le_bytes()[i]))
        })
        .collect();
    let start = Instant::now();
    let (_, r) = open_patched(patches);
    let err = match r {
        Err(e) => e,
        Ok(Some(fs)) => path::resolve(&*fs, "/var/big/entry-00000", true).unwrap_err(),
        Ok(None) => panic!("signature lost"),
    };
    assert!(
        matches!(&err, FsError::Corrupt(m) if m.contains("level")),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}
