//! The XFS reader against filesystems made by Debian's `mkfs.xfs -p`
//! (protofile population, no mount needed), v5 and v4, with short-form,
//! block and node directories, local and extent symlinks and a file split
//! across allocation groups; a kernel-made sparse file for the B+tree fork
//! when loop mounting is available; and mutations of the real images.

#[path = "common/skip.rs"]
mod skip;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use diskformat::ReadAt;
use guestinspect::fs::{xfs, FileType, Filesystem, FsError, InodeId};
use proptest::prelude::*;

const CENTOS_OS_RELEASE: &str = "NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\nANSI_COLOR=\"0;31\"\nCPE_NAME=\"cpe:/o:centos:centos:7\"\nHOME_URL=\"https://www.centos.org/\"\n";
const REDHAT_RELEASE: &str = "CentOS Linux release 7.9.2009 (Core)\n";
const BIG_DIR: usize = 2000;
// Less than one AG: mkfs.xfs 6.1 mis-writes protofile files larger than an
// AG (it overwrites the next AG's headers; xfs_repair agrees).
const DATA_LEN: usize = 4 << 20;

struct Image {
    bytes: Vec<u8>,
    /// xfs_db's view of /etc/medium and /etc/big (the oracle for which
    /// directory formats the fixture holds).
    medium_db: String,
    big_db: String,
    long_link: String,
    bash: Vec<u8>,
}

/// The tools the fixtures are made with; a test without them says so and
/// passes (CI must install them: xfsprogs).
fn missing_tool() -> Option<&'static str> {
    static MISSING: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *MISSING.get_or_init(|| ["mkfs.xfs", "xfs_db"].into_iter().find(|t| !have(t)))
}

fn tools(test: &str) -> bool {
    match missing_tool() {
        Some(t) => {
            skip::skip(&format!(
                "{test}: `{t}` is not installed (apt-get install xfsprogs)"
            ));
            false
        }
        None => true,
    }
}

/// A deterministic, non-repeating byte pattern so misplaced blocks show.
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

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Small filesystems need the fstests escape hatch in mkfs.xfs ≥ 5.19,
/// which otherwise refuses anything under 300 MB.
fn mkfs_xfs(args: &[&str], img: &Path) {
    let out = Command::new("mkfs.xfs")
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1")
        .args(["-q", "-f"])
        .args(args)
        .arg(img)
        .output()
        .expect("run mkfs.xfs");
    assert!(
        out.status.success(),
        "mkfs.xfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn xfs_db(img: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new("xfs_db");
    c.arg("-r");
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(img).output().expect("run xfs_db");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CentOS-7-like tree described as a protofile.
fn build(v5: bool) -> Image {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("os-release"), CENTOS_OS_RELEASE).unwrap();
    std::fs::write(d.join("redhat-release"), REDHAT_RELEASE).unwrap();
    std::fs::write(d.join("empty"), b"").unwrap();
    let bash = pattern(1_234_567, 7);
    std::fs::write(d.join("bash"), &bash).unwrap();
    std::fs::write(d.join("agfile"), pattern(DATA_LEN, 9)).unwrap();
    let long_link: String = (0..90).map(|i| format!("dir{i:05}/")).collect::<String>() + "end";
    let src = |n: &str| d.join(n).display().to_string();

    let mut p = String::from("/dummy\n0 0\nd--755 0 0\n");
    p += "bin l--777 0 0 usr/bin\nlib64 l--777 0 0 usr/lib64\n";
    p += "etc d--755 0 0\n";
    p += &format!("os-release ---644 0 0 {}\n", src("os-release"));
    p += &format!("redhat-release ---644 0 0 {}\n", src("redhat-release"));
    p += "centos-release l--777 0 0 redhat-release\n";
    p += "system-release l--777 0 0 /etc/redhat-release\n";
    // mkfs.xfs 6.1 writes remote symlinks without the v5 block header
    // (xfs_repair flags them), so the v5 one is made by the kernel below.
    if !v5 {
        p += &format!("longlink l--777 0 0 {long_link}\n");
    }
    p += "medium d--755 0 0\n";
    for i in 0..40 {
        p += &format!("entry-{i:03} ---644 0 0 {}\n", src("empty"));
    }
    p += "$\n";
    p += "big d--755 0 0\n";
    for i in 0..BIG_DIR {
        p += &format!(
            "file-with-a-longish-name-{i:05} ---644 0 0 {}\n",
            src("empty")
        );
    }
    p += "$\n$\n";
    p += "usr d--755 0 0\nbin d--755 0 0\n";
    p += &format!("bash ---755 0 0 {}\n", src("bash"));
    p += "sh l--777 0 0 bash\n$\nlib64 d--755 0 0\n$\n$\n";
    p += "var d--755 0 0\n";
    p += &format!("agfile ---644 0 0 {}\n", src("agfile"));
    p += "$\n$\n";
    std::fs::write(d.join("proto"), p).unwrap();

    let img = d.join("xfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let proto = src("proto");
    // Four 16 MiB AGs: inodes in several AGs exercise the inode numbering.
    let mut args = vec!["-d", "agcount=4", "-L", "centos-root", "-p", &proto];
    if !v5 {
        args.extend(["-m", "crc=0", "-i", "size=256"]);
    }
    mkfs_xfs(&args, &img);
    let medium_db = xfs_db(&img, &["path /etc/medium", "print core.format core.size"]);
    let big_db = xfs_db(&img, &["path /etc/big", "print core.format", "bmap"]);
    Image {
        medium_db,
        big_db,
        bytes: std::fs::read(&img).unwrap(),
        long_link,
        bash,
    }
}

fn fixture(v5: bool) -> &'static Image {
    static V5: OnceLock<Image> = OnceLock::new();
    static V4: OnceLock<Image> = OnceLock::new();
    if v5 {
        V5.get_or_init(|| build(true))
    } else {
        V4.get_or_init(|| build(false))
    }
}

fn open_bytes(bytes: &'static [u8]) -> Box<dyn Filesystem> {
    let disk: Arc<dyn ReadAt> = Arc::new(diskformat::source::SliceSource(bytes));
    xfs::open(disk, 0, bytes.len() as u64)
        .unwrap()
        .expect("xfs signature")
}

/// Walk a path component by component over `read_dir` (no symlinks).
fn lookup(fs: &dyn Filesystem, path: &str) -> Result<InodeId, FsError> {
    let mut ino = fs.root();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let entries = fs.read_dir(ino, 100_000)?;
        ino = entries
            .iter()
            .find(|e| e.name == comp.as_bytes())
            .map(|e| e.inode)
            .ok_or_else(|| FsError::NotFound(comp.to_string()))?;
    }
    Ok(ino)
}

fn read_all(fs: &dyn Filesystem, ino: InodeId) -> Result<Vec<u8>, FsError> {
    let size = fs.stat(ino)?.size;
    let mut out = vec![0u8; size as usize];
    let mut done = 0;
    // Odd chunk size: reads straddle block and extent boundaries.
    while done < out.len() {
        let end = (done + 10_007).min(out.len());
        let n = fs.read(ino, done as u64, &mut out[done..end])?;
        assert!(n > 0, "short read at {done}");
        done += n;
    }
    Ok(out)
}

fn check_tree(img: &'static Image) {
    let fs = open_bytes(&img.bytes);

    assert_eq!(fs.kind(), "xfs");
    assert_eq!(fs.label().as_deref(), Some("centos-root"));
    assert!(!fs.case_insensitive());

    let mut root: Vec<String> = fs
        .read_dir(fs.root(), 100)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    root.sort();
    assert_eq!(root, ["bin", "etc", "lib64", "usr", "var"]);

    let osr = lookup(&*fs, "etc/os-release").unwrap();
    assert_eq!(fs.stat(osr).unwrap().file_type, FileType::File);
    assert_eq!(read_all(&*fs, osr).unwrap(), CENTOS_OS_RELEASE.as_bytes());
    let rr = lookup(&*fs, "etc/redhat-release").unwrap();
    assert_eq!(read_all(&*fs, rr).unwrap(), REDHAT_RELEASE.as_bytes());

    let bin = lookup(&*fs, "bin").unwrap();
    assert_eq!(fs.stat(bin).unwrap().file_type, FileType::Symlink);
    assert_eq!(fs.read_link(bin).unwrap(), b"usr/bin");
    let sys = lookup(&*fs, "etc/system-release").unwrap();
    assert_eq!(fs.read_link(sys).unwrap(), b"/etc/redhat-release");
    // Too long for the inode: stored in an extent.
    if let Ok(long) = lookup(&*fs, "etc/longlink") {
        assert_eq!(fs.read_link(long).unwrap(), img.long_link.as_bytes());
    }
    assert!(fs.read_link(osr).is_err());

    let bash = lookup(&*fs, "usr/bin/bash").unwrap();
    assert_eq!(fs.stat(bash).unwrap().size, img.bash.len() as u64);
    assert_eq!(read_all(&*fs, bash).unwrap(), img.bash);
    // Reads past the end return 0; a read at the end's edge is clipped.
    let mut buf = [0u8; 16];
    assert_eq!(fs.read(bash, img.bash.len() as u64, &mut buf).unwrap(), 0);
    assert_eq!(
        fs.read(bash, img.bash.len() as u64 - 3, &mut buf).unwrap(),
        3
    );

    let agf = lookup(&*fs, "var/agfile").unwrap();
    assert_eq!(read_all(&*fs, agf).unwrap(), pattern(DATA_LEN, 9));

    // /etc/medium is one directory block (block form); /etc/big has data
    // blocks plus leaf blocks at the 32 GiB leaf offset (leaf/node form).
    let dirblk = u32::from_be_bytes(img.bytes[4..8].try_into().unwrap()) << img.bytes[192];
    assert!(img.medium_db.contains("extents"), "{}", img.medium_db);
    assert!(
        img.medium_db.contains(&format!("core.size = {dirblk}")),
        "{}",
        img.medium_db
    );
    let leaf_blk =
        (32u64 << 30) / u64::from(u32::from_be_bytes(img.bytes[4..8].try_into().unwrap()));
    assert!(
        img.big_db.contains(&format!("data offset {leaf_blk} ")),
        "{}",
        img.big_db
    );
    let medium = lookup(&*fs, "etc/medium").unwrap();
    assert_eq!(fs.read_dir(medium, 100).unwrap().len(), 40);
    let big = lookup(&*fs, "etc/big").unwrap();
    let mut names: Vec<Vec<u8>> = fs
        .read_dir(big, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    let want: Vec<Vec<u8>> = (0..BIG_DIR)
        .map(|i| format!("file-with-a-longish-name-{i:05}").into_bytes())
        .collect();
    assert_eq!(names, want);
    assert!(matches!(fs.read_dir(big, 100), Err(FsError::Limit(_))));
    assert!(matches!(
        fs.read_dir(osr, 100),
        Err(FsError::NotADirectory(_))
    ));
}

#[test]
fn v5_centos_tree() {
    if !tools("v5_centos_tree") {
        return;
    }
    check_tree(fixture(true));
}

#[test]
fn v4_tree() {
    if !tools("v4_tree") {
        return;
    }
    check_tree(fixture(false));
}

#[test]
fn ascii_ci_names() {
    if !tools("ascii_ci_names") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("f"), b"ci\n").unwrap();
    let proto = format!(
        "/d\n0 0\nd--755 0 0\nMixedCase ---644 0 0 {}\n$\n",
        d.join("f").display()
    );
    std::fs::write(d.join("proto"), proto).unwrap();
    let img = d.join("ci.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    mkfs_xfs(
        &[
            "-n",
            "version=ci",
            "-p",
            &d.join("proto").display().to_string(),
        ],
        &img,
    );
    let bytes: &'static [u8] = Box::leak(std::fs::read(&img).unwrap().into_boxed_slice());
    let fs = open_bytes(bytes);
    assert!(fs.case_insensitive());
    let ino = guestinspect::fs::path::resolve(&*fs, "/mixedCASE", true).unwrap();
    assert_eq!(read_all(&*fs, ino).unwrap(), b"ci\n");
    assert!(!open_bytes(&fixture(true).bytes).case_insensitive());
}

#[test]
fn other_signatures_are_not_xfs() {
    let zeros = vec![0u8; 1 << 20];
    let disk: Arc<dyn ReadAt> = Arc::new(diskformat::source::SliceSource(Box::leak(
        zeros.into_boxed_slice(),
    )));
    assert!(xfs::open(disk.clone(), 0, 1 << 20).unwrap().is_none());
    assert!(xfs::open(disk, 0, 100).unwrap().is_none());
}

#[test]
fn filesystem_at_an_offset() {
    if !tools("filesystem_at_an_offset") {
        return;
    }
    let img = fixture(true);
    let mut disk = vec![0u8; 1 << 20];
    disk.extend_from_slice(&img.bytes);
    let bytes: &'static [u8] = Box::leak(disk.into_boxed_slice());
    let src: Arc<dyn ReadAt> = Arc::new(diskformat::source::SliceSource(bytes));
    let fs = xfs::open(src, 1 << 20, img.bytes.len() as u64)
        .unwrap()
        .unwrap();
    let osr = lookup(&*fs, "etc/os-release").unwrap();
    assert_eq!(read_all(&*fs, osr).unwrap(), CENTOS_OS_RELEASE.as_bytes());
}

/// A sparse file with more extents than the inode holds gets a B+tree data
/// fork. mkfs.xfs copies files densely, so this one is written by the kernel
/// through a loop mount when the machine allows it.
#[test]
fn btree_fork_sparse_file() {
    if !tools("btree_fork_sparse_file") {
        return;
    }
    if !have("mount") {
        skip::skip("btree_fork_sparse_file: no mount(8)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    mkfs_xfs(&[], &img);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .output()
        .unwrap();
    if !out.status.success() {
        skip::skip(&format!(
            "btree_fork_sparse_file: cannot loop-mount XFS here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return;
    }
    let long_target: String = (0..90).map(|i| format!("dir{i:05}/")).collect::<String>() + "end";
    // 4 islands: an extent list in the inode; 60: more than the inode
    // holds, so a B+tree fork.
    let write = |name: &str, islands: usize| -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(mnt.join(name))?;
        for i in 0..islands {
            f.write_all_at(&pattern(4096, i as u32), (i * 65536) as u64)?;
        }
        f.set_len((islands * 65536) as u64)?;
        f.sync_all()
    };
    let res = write("sparse4", 4)
        .and_then(|_| write("sparse60", 60))
        .and_then(|_| {
            // Too long for the inode: one extent block with the v5 header.
            std::os::unix::fs::symlink(&long_target, mnt.join("longlink"))
        });
    let umount = Command::new("umount").arg(&mnt).status().unwrap();
    res.unwrap();
    assert!(umount.success());
    let fmt = xfs_db(&img, &["path /sparse4", "print core.format"]);
    assert!(
        fmt.contains("extents"),
        "expected an extent fork, xfs_db says {fmt}"
    );
    let fmt = xfs_db(&img, &["path /sparse60", "print core.format"]);
    assert!(
        fmt.contains("btree"),
        "expected a btree fork, xfs_db says {fmt}"
    );

    let bytes: &'static [u8] = Box::leak(std::fs::read(&img).unwrap().into_boxed_slice());
    let fs = open_bytes(bytes);
    for (name, islands) in [("sparse4", 4), ("sparse60", 60)] {
        let ino = lookup(&*fs, name).unwrap();
        let data = read_all(&*fs, ino).unwrap();
        assert_eq!(data.len(), islands * 65536);
        for i in 0..islands {
            let at = i * 65536;
            assert_eq!(
                &data[at..at + 4096],
                &pattern(4096, i as u32)[..],
                "{name} island {i}"
            );
            assert!(
                data[at + 4096..at + 65536].iter().all(|&b| b == 0),
                "{name} hole {i}"
            );
        }
    }
    let link = lookup(&*fs, "longlink").unwrap();
    assert_eq!(fs.read_link(link).unwrap(), long_target.as_bytes());
}

/// A reader of the image that records what was read, or patches bytes.
struct Patched {
    base: &'static [u8],
    patches: Vec<(u64, u8)>,
    reads: std::sync::Mutex<Vec<(u64, usize)>>,
}

impl ReadAt for Patched {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        diskformat::source::SliceSource(self.base).read_at(offset, buf)?;
        self.reads.lock().unwrap().push((offset, buf.len()));
        for &(at, b) in &self.patches {
            if at >= offset && at < offset + buf.len() as u64 {
                buf[(at - offset) as usize] = b;
            }
        }
        Ok(())
    }
    fn len(&self) -> u64 {
        self.base.len() as u64
    }
}

/// Everything a caller would do to a hostile image, with its own bounds:
/// the walk stops at a depth and at a visit count, so only the reader can
/// hang or panic.
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
                let _ = fs.read(ino, st.size.saturating_sub(100), &mut buf);
            }
            FileType::Symlink => {
                let _ = fs.read_link(ino);
            }
            FileType::Other => {}
        }
    }
    seen.len()
}

/// Byte ranges of the image that a clean walk reads: the metadata worth
/// mutating (file contents are skipped as they change nothing).
fn metadata_reads(img: &'static Image) -> &'static [(u64, usize)] {
    static READS: OnceLock<Vec<(u64, usize)>> = OnceLock::new();
    READS.get_or_init(|| {
        let src = Arc::new(Patched {
            base: &img.bytes,
            patches: vec![],
            reads: Default::default(),
        });
        let fs = xfs::open(src.clone(), 0, img.bytes.len() as u64)
            .unwrap()
            .unwrap();
        assert!(walk(&*fs) > BIG_DIR);
        let mut reads = src.reads.lock().unwrap().clone();
        reads.retain(|&(_, len)| len <= 4096);
        reads.sort();
        reads.dedup();
        reads
    })
}

fn open_patched(
    img: &'static Image,
    patches: Vec<(u64, u8)>,
) -> Result<Option<Box<dyn Filesystem>>, FsError> {
    let src = Arc::new(Patched {
        base: &img.bytes,
        patches,
        reads: Default::default(),
    });
    xfs::open(src, 0, img.bytes.len() as u64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn mutated_metadata_never_hangs_or_panics(
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        // The other tests of this file print why they skip.
        if missing_tool().is_some() {
            return Ok(());
        }
        let img = fixture(true);
        let reads = metadata_reads(img);
        let patches = muts
            .iter()
            .map(|(r, o, b)| {
                let (off, len) = reads[r.index(reads.len())];
                (off + o.index(len) as u64, *b)
            })
            .collect();
        let start = Instant::now();
        if let Ok(Some(fs)) = open_patched(img, patches) {
            walk(&*fs);
        }
        prop_assert!(start.elapsed() < Duration::from_secs(10));
    }
}

/// Find `needle` in the image (metadata structures have recognisable bytes).
fn find(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn hostile_superblock_fields() {
    if !tools("hostile_superblock_fields") {
        return;
    }
    let img = fixture(true);
    // Block size not a power of two.
    let r = open_patched(img, vec![(6, 0x11)]);
    assert!(
        matches!(r, Err(FsError::Corrupt(_))),
        "{r:?}",
        r = r.as_ref().map(|_| ())
    );
    // Unknown incompatible feature bit.
    let r = open_patched(img, vec![(216, 0x80)]);
    assert!(matches!(r, Err(FsError::Unsupported(_))));
    // Root inode number outside every AG.
    let r = open_patched(img, vec![(56, 0x7f)]);
    assert!(matches!(r, Err(FsError::Corrupt(_))));
}

#[test]
fn directory_entry_pointing_at_an_ancestor() {
    if !tools("directory_entry_pointing_at_an_ancestor") {
        return;
    }
    // Point the short-form entry "bin" of /usr at the root inode: reading it
    // works (it is one level), and a bounded walker sees the cycle.
    let img = fixture(true);
    let fs = open_bytes(&img.bytes);
    let usr_bin = lookup(&*fs, "usr/bin").unwrap();
    let root = fs.root();
    let usr = lookup(&*fs, "usr").unwrap();
    // The short-form entry in /usr is: namelen 3, offset (2), "bin", ftype, ino (4).
    let hits: Vec<usize> = find(&img.bytes, b"bin")
        .into_iter()
        .filter(|&i| {
            i >= 3
                && img.bytes[i - 3] == 3
                && img.bytes.get(i + 4..i + 8) == Some(&(usr_bin as u32).to_be_bytes()[..])
        })
        .collect();
    assert_eq!(hits.len(), 1, "one short-form entry for usr/bin");
    let at = (hits[0] + 4) as u64;
    let patches = (0..4)
        .map(|k| (at + k, (root as u32).to_be_bytes()[k as usize]))
        .collect();
    let fs = open_patched(img, patches).unwrap().unwrap();
    let entries = fs.read_dir(usr, 100).unwrap();
    assert!(entries.iter().any(|e| e.name == b"bin" && e.inode == root));
    let start = Instant::now();
    walk(&*fs);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn huge_extent_length_is_refused() {
    if !tools("huge_extent_length_is_refused") {
        return;
    }
    let img = fixture(true);
    let fs = open_bytes(&img.bytes);
    let agf = lookup(&*fs, "var/agfile").unwrap();
    // The first extent record of the inode sits right after the v5 core
    // (176 bytes); set its 21-bit block count to the maximum.
    let out = xfs_inode_byte(img, agf);
    let rec = out + 176;
    let patches = vec![(rec + 13, 0x1f), (rec + 14, 0xff), (rec + 15, 0xff)];
    let fs = open_patched(img, patches).unwrap().unwrap();
    let err = fs.stat(agf).unwrap_err();
    assert!(matches!(err, FsError::Corrupt(_)), "{err}");
}

/// Byte position of an inode in a fixture (v5, 512-byte inodes).
fn xfs_inode_byte(img: &Image, ino: u64) -> u64 {
    let sb = &img.bytes;
    let bs = u32::from_be_bytes(sb[4..8].try_into().unwrap()) as u64;
    let agblocks = u32::from_be_bytes(sb[84..88].try_into().unwrap()) as u64;
    let isize = u16::from_be_bytes(sb[104..106].try_into().unwrap()) as u64;
    let inopblog = sb[123] as u32;
    let agblklog = sb[124] as u32;
    let agno = ino >> (agblklog + inopblog);
    let agbno = (ino >> inopblog) & ((1 << agblklog) - 1);
    let idx = ino & ((1 << inopblog) - 1);
    (agno * agblocks + agbno) * bs + idx * isize
}
