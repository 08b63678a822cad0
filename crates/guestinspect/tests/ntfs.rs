//! The NTFS reader against volumes made by Debian's `mkntfs` and populated
//! through `ntfs-3g` (FUSE) with a Windows-like tree; and mutations of that
//! real image.

#[path = "common/skip.rs"]
mod skip;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use diskformat::ReadAt;
use guestinspect::fs::{ntfs, path, FileType, Filesystem, FsError, InodeId};
use proptest::prelude::*;

const MANY: usize = 1500;
const SOFTWARE_LEN: usize = 3 << 20;

/// The tools the fixtures are made with; a test without them says so and
/// passes (CI must install them: ntfs-3g fuse3).
fn missing_tool() -> Option<&'static str> {
    static MISSING: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *MISSING.get_or_init(|| {
        ["mkntfs", "ntfs-3g", "fusermount"].into_iter().find(|t| {
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
                "{test}: `{t}` is not installed (apt-get install ntfs-3g fuse3)"
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

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Populate a fresh NTFS image through ntfs-3g (FUSE). ntfs-3g runs in the
/// foreground as a child process, so that waiting for it after `fusermount
/// -u` guarantees every write has reached the image file. Err(reason) when
/// FUSE is not usable here.
fn populate(img: &Path, fill: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<(), String> {
    let mnt = img.with_extension("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let mnt = mnt.canonicalize().map_err(|e| e.to_string())?;
    let log = img.with_extension("ntfs-3g.log");
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut child = Command::new("ntfs-3g")
        .args(["-o", "no_detach"])
        .arg(img)
        .arg(&mnt)
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| e.to_string())?;
    let why = || std::fs::read_to_string(&log).unwrap_or_default();
    let target = mnt.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("ntfs-3g exited ({status}): {}", why().trim()));
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
        {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("ntfs-3g did not mount within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let res = fill(&mnt);
    let um = run(Command::new("fusermount").arg("-u").arg(&mnt));
    if um.is_err() {
        let _ = child.kill();
    }
    let exit = child.wait().map_err(|e| e.to_string())?;
    res.map_err(|e| e.to_string())?;
    um?;
    if !exit.success() {
        return Err(format!("ntfs-3g exited ({exit}): {}", why().trim()));
    }
    Ok(())
}

fn mkntfs(img: &Path, mib: u64) {
    std::fs::File::create(img)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    run(Command::new("mkntfs")
        .args(["-F", "-f", "-q", "-s", "512", "-c", "4096", "-L", "WINROOT"])
        .arg(img))
    .unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    bytes: Vec<u8>,
}

/// Ok(None) with a printed reason when FUSE is unavailable.
fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let img: PathBuf = dir.path().join("ntfs.img");
        mkntfs(&img, 48);
        let res = populate(&img, |m| {
            let sys = m.join("Windows/System32");
            std::fs::create_dir_all(sys.join("config"))?;
            std::fs::create_dir_all(sys.join("drivers"))?;
            std::fs::write(sys.join("config/SOFTWARE"), pattern(SOFTWARE_LEN, 1))?;
            std::fs::write(sys.join("drivers/viostor.sys"), b"MZ viostor")?;
            std::fs::write(sys.join("drivers/netkvm.sys"), b"MZ netkvm")?;
            let cb = m.join("Program Files/Cloudbase Solutions/Cloudbase-Init/conf");
            std::fs::create_dir_all(&cb)?;
            std::fs::write(
                cb.join("cloudbase-init.conf"),
                "[DEFAULT]\nusername=Admin\n",
            )?;
            std::fs::write(m.join("Ünïcödé naïve.txt"), "utf-16 names\n")?;
            let many = m.join("Windows/WinSxS");
            std::fs::create_dir_all(&many)?;
            for i in 0..MANY {
                std::fs::write(many.join(format!("amd64_component-{i:05}.manifest")), b"")?;
            }
            // Sparse: ntfs-3g leaves the gap unallocated.
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::create(m.join("sparse.bin"))?;
            f.write_all_at(b"head", 0)?;
            f.write_all_at(b"tail", 5 << 20)?;
            Ok(())
        });
        match res {
            Ok(()) => Some(Fixture {
                bytes: std::fs::read(&img).unwrap(),
                _dir: dir,
            }),
            Err(e) => {
                skip::skip(&format!(
                    "ntfs fixture: cannot populate NTFS through ntfs-3g/FUSE here: {e}"
                ));
                None
            }
        }
    })
    .as_ref()
}

fn open_bytes(bytes: &'static [u8]) -> Box<dyn Filesystem> {
    let src: Arc<dyn ReadAt> = Arc::new(diskformat::source::SliceSource(bytes));
    ntfs::open(src, 0, bytes.len() as u64)
        .unwrap()
        .expect("ntfs signature")
}

fn read_all(fs: &dyn Filesystem, ino: InodeId) -> Result<Vec<u8>, FsError> {
    let size = fs.stat(ino)?.size;
    let mut out = vec![0u8; size as usize];
    let mut done = 0;
    while done < out.len() {
        let end = (done + 100_003).min(out.len());
        let n = fs.read(ino, done as u64, &mut out[done..end])?;
        assert!(n > 0);
        done += n;
    }
    Ok(out)
}

#[test]
fn windows_tree() {
    if !tools("windows_tree") {
        return;
    }
    let Some(fx) = fixture() else { return };
    let fs = open_bytes(&fx.bytes);
    assert_eq!(fs.kind(), "ntfs");
    assert_eq!(fs.label().as_deref(), Some("WINROOT"));
    assert!(fs.case_insensitive());
    assert_eq!(fs.uuid().unwrap().len(), 16);

    let root: Vec<String> = fs
        .read_dir(fs.root(), 100)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    for want in ["Windows", "Program Files", "Ünïcödé naïve.txt", "$MFT"] {
        assert!(root.iter().any(|n| n == want), "{want} in {root:?}");
    }
    assert!(!root.iter().any(|n| n == "."));

    // Case-insensitive resolution through the shared path code.
    let sw = path::resolve(&*fs, "/windows/SYSTEM32/Config/software", true).unwrap();
    assert_eq!(fs.stat(sw).unwrap().file_type, FileType::File);
    assert_eq!(fs.stat(sw).unwrap().size, SOFTWARE_LEN as u64);
    assert_eq!(read_all(&*fs, sw).unwrap(), pattern(SOFTWARE_LEN, 1));
    let mut buf = [0u8; 10];
    assert_eq!(fs.read(sw, SOFTWARE_LEN as u64 - 4, &mut buf).unwrap(), 4);
    assert_eq!(fs.read(sw, SOFTWARE_LEN as u64, &mut buf).unwrap(), 0);

    let vio = path::resolve(&*fs, "/Windows/System32/drivers/viostor.sys", true).unwrap();
    assert_eq!(read_all(&*fs, vio).unwrap(), b"MZ viostor");
    let conf = path::resolve(
        &*fs,
        "/Program Files/Cloudbase Solutions/Cloudbase-Init/conf/cloudbase-init.conf",
        true,
    )
    .unwrap();
    assert!(read_all(&*fs, conf).unwrap().starts_with(b"[DEFAULT]"));
    let uni = path::resolve(&*fs, "/Ünïcödé naïve.txt", true).unwrap();
    assert_eq!(read_all(&*fs, uni).unwrap(), b"utf-16 names\n");

    let sparse = path::resolve(&*fs, "/sparse.bin", true).unwrap();
    let data = read_all(&*fs, sparse).unwrap();
    assert_eq!(data.len(), (5 << 20) + 4);
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[5 << 20..], b"tail");
    assert!(data[4..5 << 20].iter().all(|&b| b == 0));

    // Large enough for an index allocation B-tree.
    let sxs = path::resolve(&*fs, "/Windows/WinSxS", true).unwrap();
    let mut names: Vec<Vec<u8>> = fs
        .read_dir(sxs, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    let want: Vec<Vec<u8>> = (0..MANY)
        .map(|i| format!("amd64_component-{i:05}.manifest").into_bytes())
        .collect();
    assert_eq!(names, want);
    assert!(matches!(fs.read_dir(sxs, 100), Err(FsError::Limit(_))));
    assert!(matches!(
        fs.read_dir(sw, 100),
        Err(FsError::NotADirectory(_))
    ));
    assert!(fs.read_link(sw).is_err());
}

#[test]
fn not_ntfs() {
    let zeros: &'static [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
    let src: Arc<dyn ReadAt> = Arc::new(diskformat::source::SliceSource(zeros));
    assert!(ntfs::open(src.clone(), 0, 1 << 20).unwrap().is_none());
    assert!(ntfs::open(src, 0, 100).unwrap().is_none());
}

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

fn walk(fs: &dyn Filesystem) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(fs.root(), 0usize)];
    let mut buf = vec![0u8; 16 << 10];
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
            _ => {}
        }
    }
    seen.len()
}

type Opened = Result<Option<Box<dyn Filesystem>>, FsError>;

fn open_patched(bytes: &'static [u8], patches: Vec<(u64, u8)>) -> (Arc<Patched>, Opened) {
    let src = Arc::new(Patched {
        base: bytes,
        patches,
        reads: Default::default(),
    });
    let r = ntfs::open(src.clone(), 0, bytes.len() as u64);
    (src, r)
}

/// Small reads a clean walk makes: boot sector, MFT records, index records.
fn metadata_reads(fx: &'static Fixture) -> &'static [(u64, usize)] {
    static R: OnceLock<Vec<(u64, usize)>> = OnceLock::new();
    R.get_or_init(|| {
        let (src, fs) = open_patched(&fx.bytes, vec![]);
        assert!(walk(&*fs.unwrap().unwrap()) > MANY);
        let mut reads = src.reads.lock().unwrap().clone();
        reads.retain(|&(_, len)| len <= 4096);
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
        let Some(fx) = fixture() else { return Ok(()) };
        let reads = metadata_reads(fx);
        let patches = muts
            .iter()
            .map(|(r, o, b)| {
                let (off, len) = reads[r.index(reads.len())];
                (off + o.index(len) as u64, *b)
            })
            .collect();
        let start = Instant::now();
        if let (_, Ok(Some(fs))) = open_patched(&fx.bytes, patches) {
            walk(&*fs);
        }
        prop_assert!(start.elapsed() < Duration::from_secs(10));
    }
}

/// An internal index record whose first entry's subnode pointer names the
/// record itself: the `ntfs` crate would descend forever; the reader's read
/// budget ends it with `FsError::Limit`.
#[test]
fn index_subnode_cycle_is_a_limit() {
    if !tools("index_subnode_cycle_is_a_limit") {
        return;
    }
    let Some(fx) = fixture() else { return };
    let name: Vec<u8> = "amd64_component"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let b = &fx.bytes;
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let u16_at = |at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize;
    // An INDX record of WinSxS whose node header says "has children".
    let rec = (0..b.len())
        .step_by(4096)
        .find(|&r| {
            &b[r..r + 4] == b"INDX"
                && b[r + 0x24] & 1 != 0
                && b[r..r + 4096].windows(name.len()).any(|w| w == name)
        })
        .expect("an internal index record in the fixture");
    let vcn = &b[rec + 0x10..rec + 0x18];
    let entry = rec + 0x18 + u32_at(rec + 0x18);
    assert_ne!(u16_at(entry + 12) & 1, 0, "first entry has a subnode");
    let ptr = entry + u16_at(entry + 8) - 8;
    // The pointer must not cover a sector's last two bytes (fixups).
    assert!((ptr - rec) % 512 < 502);
    let patches = (0..8).map(|i| ((ptr + i) as u64, vcn[i])).collect();

    let (_, fs) = open_patched(&fx.bytes, patches);
    let fs = fs.unwrap().unwrap();
    let start = Instant::now();
    let sxs = path::resolve(&*fs, "/Windows/WinSxS", true).unwrap();
    let err = fs.read_dir(sxs, 100_000).unwrap_err();
    assert!(matches!(err, FsError::Limit(_)), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}
