//! Windows detection: a minimal but valid REGF writer (base block with
//! checksum, one hive bin, nk/vk/lh/li/ri cells) makes the SOFTWARE and
//! SYSTEM hives, since no tool here creates a hive from nothing. The hives
//! go onto a real NTFS volume (mkntfs + ntfs-3g) and into an in-memory
//! filesystem for the product/edition/architecture mapping cases; mutated
//! hives must fail cleanly.

#[path = "common/skip.rs"]
mod skip;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskformat::ReadAt;
use guestinspect::fs::{ntfs, DirEntry, FileType, Filesystem, FsError, InodeId, Stat};
use guestinspect::windows::hive::{Hive, Value};
use guestinspect::windows::{inspect, WindowsInfo};
use proptest::prelude::*;

// ---------------------------------------------------------------- REGF writer

enum RegVal {
    Sz(&'static str),
    Dword(u32),
    Binary(Vec<u8>),
}

struct RegKey {
    name: String,
    values: Vec<(String, RegVal)>,
    subkeys: Vec<RegKey>,
}

fn key(name: &str, values: Vec<(&str, RegVal)>, subkeys: Vec<RegKey>) -> RegKey {
    RegKey {
        name: name.to_string(),
        values: values
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
        subkeys,
    }
}

/// A key path "A\B\C" holding `values`, wrapped into its parents.
fn path_key(path: &str, values: Vec<(&str, RegVal)>) -> RegKey {
    let mut parts: Vec<&str> = path.split('\\').collect();
    let last = parts.pop().unwrap();
    let mut k = key(last, values, vec![]);
    while let Some(p) = parts.pop() {
        k = key(p, vec![], vec![k]);
    }
    k
}

struct Writer {
    bins: Vec<u8>,
}

impl Writer {
    /// Append an allocated cell; returns its offset in the hive-bins area.
    fn cell(&mut self, data: &[u8]) -> u32 {
        let off = self.bins.len() as u32;
        let size = (4 + data.len()).next_multiple_of(8);
        self.bins.extend_from_slice(&(-(size as i32)).to_le_bytes());
        self.bins.extend_from_slice(data);
        self.bins.resize(off as usize + size, 0);
        off
    }

    fn patch32(&mut self, at: u32, v: u32) {
        let at = at as usize;
        self.bins[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn key(&mut self, k: &RegKey, parent: u32, root: bool) -> u32 {
        let mut nk = vec![0u8; 76];
        nk[..2].copy_from_slice(b"nk");
        let flags: u16 = if root { 0x2c } else { 0x20 };
        nk[2..4].copy_from_slice(&flags.to_le_bytes());
        nk[16..20].copy_from_slice(&parent.to_le_bytes());
        for f in [28usize, 32, 40, 44, 48] {
            nk[f..f + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        }
        nk[72..74].copy_from_slice(&(k.name.len() as u16).to_le_bytes());
        nk.extend_from_slice(k.name.as_bytes());
        let off = self.cell(&nk);
        let field = |f: u32| off + 4 + f;

        let mut subs: Vec<&RegKey> = k.subkeys.iter().collect();
        subs.sort_by_key(|s| s.name.to_uppercase());
        let child_offs: Vec<u32> = subs.iter().map(|s| self.key(s, off, false)).collect();
        if !child_offs.is_empty() {
            let list = if child_offs.len() > 8 {
                // An index root over two "li" leaves, as large keys have.
                let (a, b) = child_offs.split_at(child_offs.len() / 2);
                let leaves: Vec<u32> = [a, b].iter().map(|part| self.li(part)).collect();
                let mut ri = b"ri".to_vec();
                ri.extend_from_slice(&(leaves.len() as u16).to_le_bytes());
                for l in leaves {
                    ri.extend_from_slice(&l.to_le_bytes());
                }
                self.cell(&ri)
            } else {
                let mut lh = b"lh".to_vec();
                lh.extend_from_slice(&(child_offs.len() as u16).to_le_bytes());
                for (o, s) in child_offs.iter().zip(&subs) {
                    lh.extend_from_slice(&o.to_le_bytes());
                    let hash = s
                        .name
                        .to_uppercase()
                        .bytes()
                        .fold(0u32, |h, c| h.wrapping_mul(37).wrapping_add(c as u32));
                    lh.extend_from_slice(&hash.to_le_bytes());
                }
                self.cell(&lh)
            };
            self.patch32(field(20), child_offs.len() as u32);
            self.patch32(field(28), list);
        }

        let vals: Vec<u32> = k.values.iter().map(|(n, v)| self.value(n, v)).collect();
        if !vals.is_empty() {
            let list: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            let l = self.cell(&list);
            self.patch32(field(36), vals.len() as u32);
            self.patch32(field(40), l);
        }
        off
    }

    fn li(&mut self, offs: &[u32]) -> u32 {
        let mut li = b"li".to_vec();
        li.extend_from_slice(&(offs.len() as u16).to_le_bytes());
        for o in offs {
            li.extend_from_slice(&o.to_le_bytes());
        }
        self.cell(&li)
    }

    fn value(&mut self, name: &str, v: &RegVal) -> u32 {
        let (ty, data): (u32, Vec<u8>) = match v {
            RegVal::Sz(s) => (
                1,
                s.encode_utf16()
                    .chain([0])
                    .flat_map(|u| u.to_le_bytes())
                    .collect(),
            ),
            RegVal::Dword(d) => (4, d.to_le_bytes().to_vec()),
            RegVal::Binary(b) => (3, b.clone()),
        };
        let mut vk = vec![0u8; 20];
        vk[..2].copy_from_slice(b"vk");
        vk[2..4].copy_from_slice(&(name.len() as u16).to_le_bytes());
        if data.len() <= 4 {
            vk[4..8].copy_from_slice(&(0x8000_0000u32 | data.len() as u32).to_le_bytes());
            vk[8..8 + data.len()].copy_from_slice(&data);
        } else {
            let d = self.cell(&data);
            vk[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
            vk[8..12].copy_from_slice(&d.to_le_bytes());
        }
        vk[12..16].copy_from_slice(&ty.to_le_bytes());
        vk[16..18].copy_from_slice(&1u16.to_le_bytes());
        vk.extend_from_slice(name.as_bytes());
        self.cell(&vk)
    }
}

/// A REGF file holding `root` (the hive's root key).
fn write_hive(root: &RegKey) -> Vec<u8> {
    let mut w = Writer {
        bins: vec![0u8; 32],
    };
    let root_off = w.key(root, u32::MAX, true);
    // The rest of the bin is one free cell.
    let used = w.bins.len();
    let size = used.next_multiple_of(4096).max(4096);
    if size > used {
        let free = (size - used) as u32;
        w.bins.extend_from_slice(&free.to_le_bytes());
        w.bins.resize(size, 0);
    }
    w.bins[..4].copy_from_slice(b"hbin");
    w.bins[8..12].copy_from_slice(&(size as u32).to_le_bytes());

    let mut base = vec![0u8; 4096];
    base[..4].copy_from_slice(b"regf");
    for (at, v) in [
        (4, 1u32),
        (8, 1),
        (0x14, 1),
        (0x18, 5),
        (0x1c, 0),
        (0x20, 1),
    ] {
        base[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    base[0x24..0x28].copy_from_slice(&root_off.to_le_bytes());
    base[0x28..0x2c].copy_from_slice(&(size as u32).to_le_bytes());
    base[0x2c..0x30].copy_from_slice(&1u32.to_le_bytes());
    let sum = base[..0x1fc]
        .chunks_exact(4)
        .fold(0u32, |x, c| x ^ u32::from_le_bytes(c.try_into().unwrap()));
    base[0x1fc..0x200].copy_from_slice(&sum.to_le_bytes());
    base.extend_from_slice(&w.bins);
    base
}

fn software(values: Vec<(&str, RegVal)>) -> Vec<u8> {
    let mut root = key("ROOT", vec![], vec![]);
    let mut microsoft = path_key("Microsoft\\Windows NT\\CurrentVersion", values);
    // Neighbours, so that lookups pick among several subkeys (one list big
    // enough for an "ri").
    for i in 0..12 {
        microsoft.subkeys.push(key(
            &format!("Component{i:02}"),
            vec![("X", RegVal::Dword(i))],
            vec![],
        ));
    }
    root.subkeys.push(microsoft);
    root.subkeys.push(key("Classes", vec![], vec![]));
    root.subkeys.push(key(
        "Policies",
        vec![("Blob", RegVal::Binary(vec![7; 100]))],
        vec![],
    ));
    write_hive(&root)
}

fn system_hive(arch: &'static str, current: u32) -> Vec<u8> {
    let mut root = key("ROOT", vec![], vec![]);
    root.subkeys.push(key(
        "Select",
        vec![("Current", RegVal::Dword(current))],
        vec![],
    ));
    for set in 1..=2u32 {
        // Only the current control set carries the right value.
        let a = if set == current { arch } else { "bogus" };
        let mut cs = path_key(
            "Control\\Session Manager\\Environment",
            vec![("PROCESSOR_ARCHITECTURE", RegVal::Sz(a))],
        );
        cs.name = "Control".into();
        root.subkeys
            .push(key(&format!("ControlSet{set:03}"), vec![], vec![cs]));
    }
    write_hive(&root)
}

fn server_2019() -> Vec<(&'static str, RegVal)> {
    vec![
        ("ProductName", RegVal::Sz("Windows Server 2019 Datacenter")),
        ("EditionID", RegVal::Sz("ServerDatacenter")),
        ("InstallationType", RegVal::Sz("Server")),
        ("CurrentBuild", RegVal::Sz("17763")),
        ("CurrentBuildNumber", RegVal::Sz("17763")),
        ("CurrentMajorVersionNumber", RegVal::Dword(10)),
        ("CurrentMinorVersionNumber", RegVal::Dword(0)),
        ("CurrentVersion", RegVal::Sz("6.3")),
    ]
}

fn pe(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 1024];
    h[..2].copy_from_slice(b"MZ");
    h[0x3c..0x40].copy_from_slice(&0xe8u32.to_le_bytes());
    h[0xe8..0xec].copy_from_slice(b"PE\0\0");
    h[0xec..0xee].copy_from_slice(&machine.to_le_bytes());
    h
}

// ---------------------------------------------------------------- hive reader

#[test]
fn hive_lookups() {
    let bytes = software(server_2019());
    let hive = Hive::parse(&bytes).unwrap();
    let root = hive.root().unwrap();
    assert_eq!(root.name(), "ROOT");
    // Case-insensitive, like Windows.
    let cv = root
        .subpath("MICROSOFT\\windows nt\\currentversion")
        .unwrap()
        .unwrap();
    assert_eq!(cv.name(), "CurrentVersion");
    assert_eq!(
        cv.value("productname").unwrap(),
        Some(Value::String("Windows Server 2019 Datacenter".into()))
    );
    assert_eq!(
        cv.value("CurrentMajorVersionNumber").unwrap(),
        Some(Value::Dword(10))
    );
    assert_eq!(cv.value("Missing").unwrap(), None);
    // Found through the "ri" index root.
    let ms = root.subkey("Microsoft").unwrap().unwrap();
    let c = ms.subkey("component11").unwrap().unwrap();
    assert_eq!(c.value("X").unwrap(), Some(Value::Dword(11)));
    assert!(ms.subkey("Component12").unwrap().is_none());
    let pol = root.subkey("Policies").unwrap().unwrap();
    assert_eq!(pol.value("Blob").unwrap(), Some(Value::Other(3)));
    assert!(root
        .subpath("Microsoft\\Nope\\CurrentVersion")
        .unwrap()
        .is_none());
}

#[test]
fn not_a_hive() {
    assert!(Hive::parse(b"").is_err());
    assert!(Hive::parse(&[0u8; 8192]).is_err());
    let mut bytes = software(server_2019());
    // Hive-bins size beyond the file.
    bytes[0x28..0x2c].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Hive::parse(&bytes), Err(FsError::Corrupt(_))));
    let mut bytes = software(server_2019());
    // Root offset outside the bins.
    bytes[0x24..0x28].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let hive = Hive::parse(&bytes).unwrap();
    assert!(hive.root().is_err());
}

/// Walk everything a caller might ask a hive for.
fn exercise(bytes: &[u8]) {
    let Ok(hive) = Hive::parse(bytes) else { return };
    let Ok(root) = hive.root() else { return };
    let _ = root.name();
    for p in [
        "Microsoft\\Windows NT\\CurrentVersion",
        "Microsoft",
        "Policies",
        "Select",
    ] {
        if let Ok(Some(k)) = root.subpath(p) {
            for v in [
                "ProductName",
                "CurrentMajorVersionNumber",
                "Blob",
                "Current",
                "X",
            ] {
                let _ = k.value(v);
            }
            for i in 0..12 {
                let _ = k.subkey(&format!("Component{i:02}"));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn mutated_hives_never_panic(
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        sys in any::<bool>(),
    ) {
        let mut bytes = if sys { system_hive("AMD64", 1) } else { software(server_2019()) };
        let n = bytes.len();
        for (i, b) in &muts {
            // Mostly the base block's fields and the cells.
            let at = i.index(n);
            bytes[at] = *b;
        }
        let start = Instant::now();
        exercise(&bytes);
        prop_assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..12000)) {
        let mut bytes = software(server_2019())[..4096].to_vec();
        bytes.extend_from_slice(b"hbin");
        bytes.extend_from_slice(&body);
        exercise(&bytes);
    }
}

// ------------------------------------------------------ in-memory filesystem

/// A node: directory entries (name, index), and contents if a file.
type MemNode = (Vec<(String, u64)>, Option<Vec<u8>>);

/// A tiny case-insensitive in-memory tree for the mapping cases.
#[derive(Default)]
struct MemFs {
    nodes: Vec<MemNode>,
}

impl MemFs {
    fn new() -> Self {
        MemFs {
            nodes: vec![(vec![], None)],
        }
    }
    fn add(&mut self, path: &str, data: Option<Vec<u8>>) {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut cur = 0usize;
        for (i, p) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let found = self.nodes[cur]
                .0
                .iter()
                .find(|(n, _)| n == p)
                .map(|e| e.1 as usize);
            cur = match found {
                Some(c) => c,
                None => {
                    let id = self.nodes.len();
                    let content = if last { data.clone() } else { None };
                    self.nodes.push((vec![], content));
                    self.nodes[cur].0.push((p.to_string(), id as u64));
                    id
                }
            };
        }
    }
}

impl Filesystem for MemFs {
    fn kind(&self) -> &'static str {
        "mem"
    }
    fn label(&self) -> Option<String> {
        None
    }
    fn uuid(&self) -> Option<String> {
        None
    }
    fn case_insensitive(&self) -> bool {
        true
    }
    fn root(&self) -> InodeId {
        0
    }
    fn stat(&self, inode: InodeId) -> Result<Stat, FsError> {
        let n = self
            .nodes
            .get(inode as usize)
            .ok_or(FsError::NotFound("inode".into()))?;
        Ok(match &n.1 {
            Some(d) => Stat {
                file_type: FileType::File,
                size: d.len() as u64,
            },
            None => Stat {
                file_type: FileType::Dir,
                size: 0,
            },
        })
    }
    fn read_dir(&self, inode: InodeId, _limit: usize) -> Result<Vec<DirEntry>, FsError> {
        let n = self
            .nodes
            .get(inode as usize)
            .ok_or(FsError::NotFound("inode".into()))?;
        Ok(n.0
            .iter()
            .map(|(name, id)| DirEntry {
                name: name.clone().into_bytes(),
                inode: *id,
            })
            .collect())
    }
    fn read(&self, inode: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let d = self.nodes[inode as usize]
            .1
            .as_ref()
            .ok_or(FsError::NotADirectory("x".into()))?;
        let start = (offset as usize).min(d.len());
        let n = buf.len().min(d.len() - start);
        buf[..n].copy_from_slice(&d[start..start + n]);
        Ok(n)
    }
    fn read_link(&self, _inode: InodeId) -> Result<Vec<u8>, FsError> {
        Err(FsError::Unsupported("no links".into()))
    }
}

fn mem_windows(sw: Vec<u8>) -> MemFs {
    let mut fs = MemFs::new();
    fs.add("/Windows/System32/config/SOFTWARE", Some(sw));
    fs
}

#[test]
fn server_2019_datacenter_from_registry() {
    let mut fs = mem_windows(software(server_2019()));
    fs.add(
        "/Windows/System32/config/SYSTEM",
        Some(system_hive("AMD64", 2)),
    );
    fs.add(
        "/Windows/System32/drivers/viostor.sys",
        Some(b"MZ".to_vec()),
    );
    fs.add("/Windows/System32/drivers/netkvm.sys", Some(b"MZ".to_vec()));
    fs.add(
        "/Program Files/Cloudbase Solutions/Cloudbase-Init/bin",
        None,
    );
    let info = inspect(&fs).unwrap().unwrap();
    assert_eq!(
        info,
        WindowsInfo {
            product_name: Some("Windows Server 2019 Datacenter".into()),
            edition_id: Some("ServerDatacenter".into()),
            installation_type: Some("Server".into()),
            version: Some("10.0".into()),
            build: Some("17763".into()),
            architecture: Some("x86_64".into()),
            architecture_from: Some("registry".into()),
            tencent_os_type: Some("Windows Server 2019".into()),
            tencent_os_name: "Windows Server 2019 DataCenter 64bit".into(),
            cloudbase_init: true,
            virtio_drivers: vec!["viostor.sys".into(), "netkvm.sys".into()],
            virtio_block: true,
            virtio_net: true,
        }
    );
    fn serialisable<T: serde::Serialize>(_: &T) {}
    serialisable(&info);
}

#[test]
fn server_2012_r2_from_current_version_and_pe() {
    // Pre-10 releases have no CurrentMajorVersionNumber; no SYSTEM hive, so
    // the architecture comes from ntoskrnl.exe.
    let mut fs = mem_windows(software(vec![
        ("ProductName", RegVal::Sz("Windows Server 2012 R2 Standard")),
        ("EditionID", RegVal::Sz("ServerStandard")),
        ("InstallationType", RegVal::Sz("Server")),
        ("CurrentBuildNumber", RegVal::Sz("9600")),
        ("CurrentVersion", RegVal::Sz("6.3")),
    ]));
    fs.add("/Windows/System32/ntoskrnl.exe", Some(pe(0x8664)));
    fs.add(
        "/Windows/System32/drivers/vioscsi.sys",
        Some(b"MZ".to_vec()),
    );
    let info = inspect(&fs).unwrap().unwrap();
    assert_eq!(info.version.as_deref(), Some("6.3"));
    assert_eq!(info.build.as_deref(), Some("9600"));
    assert_eq!(info.architecture.as_deref(), Some("x86_64"));
    assert_eq!(
        info.architecture_from.as_deref(),
        Some("Windows/System32/ntoskrnl.exe")
    );
    assert_eq!(info.tencent_os_type.as_deref(), Some("Windows Server 2012"));
    assert_eq!(
        info.tencent_os_name,
        "Windows Server 2012 R2 Standard 64bit"
    );
    assert!(!info.cloudbase_init);
    assert!(info.virtio_block && !info.virtio_net);
}

#[test]
fn family_from_build_when_product_name_is_vague() {
    for (build, version, want_type, want_name) in [
        (
            "14393",
            "10.0",
            "Windows Server 2016",
            "Windows Server 2016 DataCenter 32bit",
        ),
        (
            "20348",
            "10.0",
            "Windows Server 2022",
            "Windows Server 2022 DataCenter 32bit",
        ),
        (
            "7601",
            "6.1",
            "Windows Server 2008",
            "Windows Server 2008 R2 DataCenter 32bit",
        ),
    ] {
        let mut fs = mem_windows(software(vec![
            ("ProductName", RegVal::Sz("Windows Server")),
            ("EditionID", RegVal::Sz("ServerDatacenterCore")),
            ("InstallationType", RegVal::Sz("Server Core")),
            ("CurrentBuildNumber", RegVal::Sz(build)),
            ("CurrentVersion", RegVal::Sz(version)),
        ]));
        fs.add("/Windows/System32/kernel32.dll", Some(pe(0x14c)));
        let info = inspect(&fs).unwrap().unwrap();
        assert_eq!(info.architecture.as_deref(), Some("i386"));
        assert_eq!(info.tencent_os_type.as_deref(), Some(want_type), "{build}");
        assert_eq!(info.tencent_os_name, want_name);
    }
}

#[test]
fn windows_11_client_and_arm64() {
    let mut fs = mem_windows(software(vec![
        // Windows 11 still says "Windows 10" here; the build tells.
        ("ProductName", RegVal::Sz("Windows 10 Pro")),
        ("EditionID", RegVal::Sz("Professional")),
        ("InstallationType", RegVal::Sz("Client")),
        ("CurrentBuildNumber", RegVal::Sz("22631")),
        ("CurrentMajorVersionNumber", RegVal::Dword(10)),
        ("CurrentMinorVersionNumber", RegVal::Dword(0)),
    ]));
    fs.add(
        "/Windows/System32/config/SYSTEM",
        Some(system_hive("ARM64", 1)),
    );
    let info = inspect(&fs).unwrap().unwrap();
    assert_eq!(info.architecture.as_deref(), Some("arm_64"));
    assert_eq!(info.tencent_os_type.as_deref(), Some("Windows 11"));
    assert_eq!(info.tencent_os_name, "Windows 11 Pro 64bit");
    assert!(info.virtio_drivers.is_empty());
}

#[test]
fn not_windows_or_broken_hive() {
    let mut fs = MemFs::new();
    fs.add("/etc/os-release", Some(b"ID=debian\n".to_vec()));
    assert_eq!(inspect(&fs).unwrap(), None);
    // A SOFTWARE hive without CurrentVersion, and one that is not a hive.
    let fs = mem_windows(write_hive(&key(
        "ROOT",
        vec![],
        vec![key("Classes", vec![], vec![])],
    )));
    assert!(matches!(inspect(&fs), Err(FsError::Corrupt(_))));
    let fs = mem_windows(vec![0u8; 10_000]);
    assert!(matches!(inspect(&fs), Err(FsError::Corrupt(_))));
}

// ------------------------------------------------------------ on real NTFS

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

#[test]
fn windows_server_on_ntfs() {
    if !tools("windows_server_on_ntfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("win.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    run(Command::new("mkntfs")
        .args(["-F", "-f", "-q", "-s", "512", "-c", "4096"])
        .arg(&img))
    .unwrap();
    let fill = |m: &Path| -> std::io::Result<()> {
        // Windows' own capitalisation; inspection asks in another.
        let sys = m.join("Windows/System32");
        std::fs::create_dir_all(sys.join("config"))?;
        std::fs::create_dir_all(sys.join("drivers"))?;
        std::fs::write(sys.join("config/SOFTWARE"), software(server_2019()))?;
        std::fs::write(sys.join("config/SYSTEM"), system_hive("AMD64", 1))?;
        std::fs::write(sys.join("ntoskrnl.exe"), pe(0x8664))?;
        std::fs::write(sys.join("drivers/viostor.sys"), b"MZ")?;
        std::fs::write(sys.join("drivers/netkvm.sys"), b"MZ")?;
        std::fs::create_dir_all(m.join("Program Files/Cloudbase Solutions/Cloudbase-Init/conf"))
    };
    if let Err(e) = populate(&img, fill) {
        skip::skip(&format!(
            "windows_server_on_ntfs: cannot populate NTFS through ntfs-3g/FUSE here: {e}"
        ));
        return;
    }

    let src: Arc<dyn ReadAt> = Arc::new(diskformat::source::FileSource::open(&img).unwrap());
    let len = src.len();
    let fs = ntfs::open(src, 0, len).unwrap().unwrap();
    let info = inspect(&*fs).unwrap().unwrap();
    assert_eq!(info.tencent_os_name, "Windows Server 2019 DataCenter 64bit");
    assert_eq!(info.architecture_from.as_deref(), Some("registry"));
    assert!(info.cloudbase_init && info.virtio_block && info.virtio_net);
    assert_eq!(info.build.as_deref(), Some("17763"));
}

#[test]
fn hive_size_is_capped_not_trusted() {
    // A filesystem claiming a 1 TiB SOFTWARE file: refused before reading.
    struct Huge(MemFs);
    impl Filesystem for Huge {
        fn kind(&self) -> &'static str {
            "mem"
        }
        fn label(&self) -> Option<String> {
            None
        }
        fn uuid(&self) -> Option<String> {
            None
        }
        fn case_insensitive(&self) -> bool {
            true
        }
        fn root(&self) -> InodeId {
            0
        }
        fn stat(&self, inode: InodeId) -> Result<Stat, FsError> {
            let mut s = self.0.stat(inode)?;
            if s.file_type == FileType::File {
                s.size = 1 << 40;
            }
            Ok(s)
        }
        fn read_dir(&self, inode: InodeId, limit: usize) -> Result<Vec<DirEntry>, FsError> {
            self.0.read_dir(inode, limit)
        }
        fn read(&self, inode: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
            self.0.read(inode, offset, buf)
        }
        fn read_link(&self, inode: InodeId) -> Result<Vec<u8>, FsError> {
            self.0.read_link(inode)
        }
    }
    let fs = Huge(mem_windows(software(server_2019())));
    assert!(matches!(inspect(&fs), Err(FsError::Limit(_))));
}

/// Not a check: writes this file's hives as seeds of the `registry_hive`
/// fuzz target. `scripts/make-fuzz-seeds` runs it (`--ignored`) with
/// FUZZ_SEED_DIR set.
#[test]
#[ignore = "seed writer for scripts/make-fuzz-seeds"]
fn write_fuzz_seed_hives() {
    let dir = std::env::var("FUZZ_SEED_DIR").expect("FUZZ_SEED_DIR");
    let dir = Path::new(&dir);
    std::fs::write(dir.join("software"), software(server_2019())).unwrap();
    std::fs::write(dir.join("system"), system_hive("AMD64", 1)).unwrap();
}
