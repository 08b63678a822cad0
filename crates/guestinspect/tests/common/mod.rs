//! Test-disk builders shared by the guest-inspection tests (and reusable by
//! the service's tests): distribution-like trees written from the real
//! release files, real ELF binaries copied from the host, disks laid out
//! with sfdisk, filesystems made with mkfs.ext4 -d / mkfs.vfat + mcopy, LVM
//! made with pvcreate/vgcreate on a loop device and vgcfgrestore (no
//! device-mapper needed). Every builder works in a caller's temp dir.
//!
//! A missing tool is a skip with a printed reason naming the package, never
//! a silent pass: tests call `require(&[...])` first. Under scripts/test
//! (`IMAGEGATE_REQUIRE_TOOLS=1`, see skip.rs) it is a failure instead.

#![allow(dead_code)]

pub mod skip;

use diskformat::ReadAt;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

pub const MIB: u64 = 1 << 20;

/// Package that provides each tool we call.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "sfdisk" | "fdisk" => "fdisk",
        "mkfs.ext4" | "debugfs" => "e2fsprogs",
        "mkfs.vfat" => "dosfstools",
        "mcopy" | "mmd" => "mtools",
        "pvcreate" | "vgcreate" | "vgcfgbackup" | "vgcfgrestore" | "vgchange" | "vgremove" => {
            "lvm2"
        }
        "losetup" => "mount",
        "mkfs.xfs" => "xfsprogs",
        "mkntfs" | "ntfs-3g" => "ntfs-3g",
        "fusermount" => "fuse3",
        "e2fsck" => "e2fsprogs",
        "qemu-img" => "qemu-utils",
        "debootstrap" => "debootstrap",
        _ => "?",
    }
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True if every tool is there; otherwise prints why the test is skipped.
pub fn require(test: &str, tools: &[&str]) -> bool {
    for t in tools {
        if !have(t) {
            skip::skip(&format!(
                "{test}: `{t}` is not installed (apt-get install {})",
                package_of(t)
            ));
            return false;
        }
    }
    true
}

pub fn run(cmd: &str, args: &[&str]) {
    run_stdin(cmd, args, None)
}

pub fn run_stdin(cmd: &str, args: &[&str], stdin: Option<&str>) {
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(s.as_bytes())
            .expect("writing stdin");
    }
    let out = child.wait_with_output().expect("waiting for the tool");
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sparse file of `size` bytes.
pub fn sparse_file(path: &Path, size: u64) {
    let f = fs::File::create(path).expect("create disk");
    f.set_len(size).expect("size disk");
}

/// Partition `disk` with an sfdisk script (sectors of 512 bytes).
pub fn sfdisk(disk: &Path, script: &str) {
    run_stdin(
        "sfdisk",
        &[
            "-q",
            "--no-reread",
            "--no-tell-kernel",
            disk.to_str().unwrap(),
        ],
        Some(script),
    );
}

/// Copy `len` bytes of `src` into `dst` at `offset`, skipping zero blocks
/// so that `dst` stays sparse.
pub fn copy_into(src: &Path, dst: &Path, offset: u64) {
    let mut s = fs::File::open(src).expect("open source image");
    let mut d = fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .expect("open disk");
    let mut buf = vec![0u8; 1 << 16];
    let mut pos = 0u64;
    loop {
        let n = s.read(&mut buf).expect("read image");
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            d.seek(SeekFrom::Start(offset + pos)).expect("seek");
            d.write_all(&buf[..n]).expect("write");
        }
        pos += n as u64;
    }
}

/// Options for [`mkfs_ext4`].
#[derive(Default, Clone)]
pub struct Ext4 {
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// Extra -O features, e.g. "^has_journal".
    pub features: Option<String>,
    /// ext2/ext3 instead of ext4.
    pub fs_type: Option<&'static str>,
}

/// Make an ext filesystem holding `tree` at byte `offset` of `disk`, `size`
/// bytes long (mkfs.ext4 -d -E offset=...).
pub fn mkfs_ext4(disk: &Path, offset: u64, size: u64, tree: &Path, o: &Ext4) {
    let mut args: Vec<String> = vec!["-F".into(), "-q".into()];
    if let Some(t) = o.fs_type {
        args.push("-t".into());
        args.push(t.into());
    }
    if let Some(l) = &o.label {
        args.push("-L".into());
        args.push(l.clone());
    }
    if let Some(u) = &o.uuid {
        args.push("-U".into());
        args.push(u.clone());
    }
    if let Some(f) = &o.features {
        args.push("-O".into());
        args.push(f.clone());
    }
    args.push("-d".into());
    args.push(tree.to_str().unwrap().into());
    args.push("-E".into());
    args.push(format!("offset={offset}"));
    args.push(disk.to_str().unwrap().into());
    args.push(format!("{}k", size / 1024));
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    run("mkfs.ext4", &refs);
}

/// Make a FAT filesystem (`size` bytes) holding `files` (path inside,
/// content) at `offset` of `disk`.
pub fn mkfs_vfat(
    work: &Path,
    disk: &Path,
    offset: u64,
    size: u64,
    label: &str,
    files: &[(&str, &[u8])],
) {
    let img = work.join(format!("fat-{offset}.img"));
    let _ = fs::remove_file(&img);
    run(
        "mkfs.vfat",
        &[
            "-C",
            "-n",
            label,
            img.to_str().unwrap(),
            &(size / 1024).to_string(),
        ],
    );
    let i = img.to_str().unwrap();
    let mut made: Vec<String> = Vec::new();
    for (path, content) in files {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut dir = String::new();
        for d in &parts[..parts.len() - 1] {
            dir.push('/');
            dir.push_str(d);
            if !made.contains(&dir) {
                run("mmd", &["-i", i, &format!("::{dir}")]);
                made.push(dir.clone());
            }
        }
        let src = work.join("fat-src");
        fs::write(&src, content).unwrap();
        run(
            "mcopy",
            &["-i", i, src.to_str().unwrap(), &format!("::{path}")],
        );
    }
    copy_into(&img, disk, offset);
    fs::remove_file(&img).ok();
}

/// An in-memory disk for property tests.
pub struct MemDisk(pub Vec<u8>);

impl ReadAt for MemDisk {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the end");
        let s = usize::try_from(offset).map_err(|_| eof())?;
        let e = s.checked_add(buf.len()).ok_or_else(eof)?;
        buf.copy_from_slice(self.0.get(s..e).ok_or_else(eof)?);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

pub fn open_disk(path: &Path) -> Arc<dyn ReadAt> {
    Arc::new(diskformat::FileSource::open(path).expect("open disk"))
}

// ---------------------------------------------------------------------------
// Distribution trees

/// Which distribution a tree imitates (real release files of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distro {
    CentOS7,
    Ubuntu2204,
    Debian12,
    OpenSuseLeap15,
    Rocky9,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Virtio {
    /// virtio_blk.ko / virtio_net.ko files under the kernel's modules.
    Modules,
    /// Listed in modules.builtin.
    Builtin,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Arm64,
}

#[derive(Clone, Debug)]
pub struct TreeOpts {
    pub cloud_init: bool,
    pub virtio: Virtio,
    pub arch: Arch,
    /// Put /boot's content in a separate tree (returned) instead.
    pub separate_boot: bool,
    /// fstab lines written to /etc/fstab.
    pub fstab: String,
}

impl Default for TreeOpts {
    fn default() -> Self {
        TreeOpts {
            cloud_init: true,
            virtio: Virtio::Modules,
            arch: Arch::X86_64,
            separate_boot: false,
            fstab: String::new(),
        }
    }
}

pub const CENTOS7_OS_RELEASE: &str = r#"NAME="CentOS Linux"
VERSION="7 (Core)"
ID="centos"
ID_LIKE="rhel fedora"
VERSION_ID="7"
PRETTY_NAME="CentOS Linux 7 (Core)"
ANSI_COLOR="0;31"
CPE_NAME="cpe:/o:centos:centos:7"
HOME_URL="https://www.centos.org/"
BUG_REPORT_URL="https://bugs.centos.org/"

CENTOS_MANTISBT_PROJECT="CentOS-7"
CENTOS_MANTISBT_PROJECT_VERSION="7"
REDHAT_SUPPORT_PRODUCT="centos"
REDHAT_SUPPORT_PRODUCT_VERSION="7"

"#;

pub const UBUNTU2204_OS_RELEASE: &str = r#"PRETTY_NAME="Ubuntu 22.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.3 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
"#;

pub const DEBIAN12_OS_RELEASE: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"#;

pub const LEAP15_OS_RELEASE: &str = r#"NAME="openSUSE Leap"
VERSION="15.5"
ID="opensuse-leap"
ID_LIKE="suse opensuse"
VERSION_ID="15.5"
PRETTY_NAME="openSUSE Leap 15.5"
ANSI_COLOR="0;32"
CPE_NAME="cpe:/o:opensuse:leap:15.5"
BUG_REPORT_URL="https://bugs.opensuse.org"
HOME_URL="https://www.opensuse.org/"
DOCUMENTATION_URL="https://en.opensuse.org/Portal:Leap"
LOGO="distributor-logo-Leap"
"#;

pub const ROCKY9_OS_RELEASE: &str = r#"NAME="Rocky Linux"
VERSION="9.3 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"
ANSI_COLOR="0;32"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
HOME_URL="https://rockylinux.org/"
BUG_REPORT_URL="https://bugs.rockylinux.org/"
SUPPORT_END="2032-05-31"
ROCKY_SUPPORT_PRODUCT="Rocky-Linux-9"
ROCKY_SUPPORT_PRODUCT_VERSION="9.3"
REDHAT_SUPPORT_PRODUCT="Rocky Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.3"
"#;

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

fn mkdir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel.trim_start_matches('/'))).unwrap();
}

/// A real x86_64 ELF executable from the host (/bin/sh resolves to dash).
pub fn host_elf() -> Vec<u8> {
    let p = fs::canonicalize("/bin/sh").expect("host /bin/sh");
    fs::read(p).expect("read host /bin/sh")
}

/// A minimal but well-formed aarch64 ELF64 executable header (no segments
/// to run: inspection only reads the header).
pub fn aarch64_elf() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[0..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // little-endian
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    h[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    h[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    h
}

pub fn kernel_version(d: Distro) -> &'static str {
    match d {
        Distro::CentOS7 => "3.10.0-1160.el7.x86_64",
        Distro::Ubuntu2204 => "5.15.0-91-generic",
        Distro::Debian12 => "6.1.0-18-amd64",
        Distro::OpenSuseLeap15 => "5.14.21-150500.55.39-default",
        Distro::Rocky9 => "5.14.0-362.8.1.el9_3.x86_64",
    }
}

/// Build a distribution-like root under `dir/root` (and `dir/boot` when
/// /boot is separate). Returns (root tree, boot tree if separate).
pub fn linux_tree(dir: &Path, distro: Distro, o: &TreeOpts) -> (PathBuf, Option<PathBuf>) {
    let root = dir.join("root");
    let boot = if o.separate_boot {
        dir.join("boot")
    } else {
        root.join("boot")
    };
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&boot).unwrap();
    for d in [
        "etc", "usr/bin", "usr/sbin", "usr/lib", "var/log", "tmp", "home", "root", "dev", "proc",
        "sys", "boot",
    ] {
        mkdir(&root, d);
    }
    // Merged /usr everywhere except openSUSE Leap 15.
    let merged = distro != Distro::OpenSuseLeap15;
    let elf = match o.arch {
        Arch::X86_64 => host_elf(),
        Arch::Arm64 => aarch64_elf(),
    };
    if merged {
        link(&root, "/bin", "usr/bin");
        link(&root, "/sbin", "usr/sbin");
        link(&root, "/lib", "usr/lib");
        link(&root, "/lib64", "usr/lib64");
        mkdir(&root, "usr/lib64");
        write(&root, "/usr/bin/bash", &elf);
        let sh_target = if matches!(distro, Distro::Debian12 | Distro::Ubuntu2204) {
            "dash"
        } else {
            "bash"
        };
        if sh_target == "dash" {
            write(&root, "/usr/bin/dash", &elf);
        }
        link(&root, "/usr/bin/sh", sh_target);
        write(&root, "/usr/lib/systemd/systemd", &elf);
        link(&root, "/usr/sbin/init", "../lib/systemd/systemd");
    } else {
        write(&root, "/bin/bash", &elf);
        link(&root, "/bin/sh", "bash");
        write(&root, "/usr/lib/systemd/systemd", &elf);
        link(&root, "/sbin/init", "/usr/lib/systemd/systemd");
        mkdir(&root, "lib");
    }
    let (os_release, extra): (&str, Vec<(&str, &str)>) = match distro {
        Distro::CentOS7 => (
            CENTOS7_OS_RELEASE,
            vec![("/etc/centos-release", "CentOS Linux release 7.9.2009 (Core)\n")],
        ),
        Distro::Ubuntu2204 => (
            UBUNTU2204_OS_RELEASE,
            vec![
                ("/etc/debian_version", "bookworm/sid\n"),
                (
                    "/etc/lsb-release",
                    "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\nDISTRIB_DESCRIPTION=\"Ubuntu 22.04.3 LTS\"\n",
                ),
            ],
        ),
        Distro::Debian12 => (DEBIAN12_OS_RELEASE, vec![("/etc/debian_version", "12.5\n")]),
        Distro::OpenSuseLeap15 => (LEAP15_OS_RELEASE, vec![]),
        Distro::Rocky9 => (
            ROCKY9_OS_RELEASE,
            vec![
                ("/etc/rocky-release", "Rocky Linux release 9.3 (Blue Onyx)\n"),
                ("/etc/redhat-release", "Rocky Linux release 9.3 (Blue Onyx)\n"),
            ],
        ),
    };
    // Like the distributions: /etc/os-release links to /usr/lib/os-release.
    write(&root, "/usr/lib/os-release", os_release.as_bytes());
    link(&root, "/etc/os-release", "../usr/lib/os-release");
    for (p, c) in extra {
        write(&root, p, c.as_bytes());
    }
    if distro == Distro::CentOS7 {
        link(&root, "/etc/redhat-release", "centos-release");
        link(&root, "/etc/system-release", "centos-release");
    }
    write(&root, "/etc/hostname", b"localhost\n");
    write(&root, "/etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n");
    write(&root, "/etc/fstab", o.fstab.as_bytes());

    // A kernel with its modules.
    let kv = kernel_version(distro);
    fs::write(boot.join(format!("vmlinuz-{kv}")), b"not really a kernel").unwrap();
    fs::write(boot.join(format!("config-{kv}")), b"CONFIG_VIRTIO_BLK=m\n").unwrap();
    fs::create_dir_all(boot.join("grub2")).unwrap();
    let mods = if merged {
        format!("/usr/lib/modules/{kv}")
    } else {
        format!("/lib/modules/{kv}")
    };
    let ext = match distro {
        Distro::CentOS7 | Distro::Rocky9 | Distro::OpenSuseLeap15 => ".ko.xz",
        _ => ".ko",
    };
    write(
        &root,
        &format!("{mods}/kernel/drivers/block/loop{ext}"),
        b"",
    );
    write(&root, &format!("{mods}/kernel/drivers/net/dummy{ext}"), b"");
    let mut builtin = String::from("kernel/drivers/char/mem.ko\nkernel/fs/ext4/ext4.ko\n");
    match o.virtio {
        Virtio::Modules => {
            write(
                &root,
                &format!("{mods}/kernel/drivers/block/virtio_blk{ext}"),
                b"",
            );
            write(
                &root,
                &format!("{mods}/kernel/drivers/net/virtio_net{ext}"),
                b"",
            );
        }
        Virtio::Builtin => {
            builtin
                .push_str("kernel/drivers/block/virtio_blk.ko\nkernel/drivers/net/virtio_net.ko\n");
        }
        Virtio::None => {}
    }
    write(
        &root,
        &format!("{mods}/modules.builtin"),
        builtin.as_bytes(),
    );

    if o.cloud_init {
        write(
            &root,
            "/usr/bin/cloud-init",
            b"#!/usr/bin/python3\nimport cloudinit\n",
        );
        write(&root, "/etc/cloud/cloud.cfg", b"users:\n - default\n");
        let py = match distro {
            Distro::Debian12 | Distro::Ubuntu2204 => {
                "/usr/lib/python3/dist-packages/cloudinit/__init__.py"
            }
            Distro::CentOS7 => "/usr/lib/python2.7/site-packages/cloudinit/__init__.py",
            _ => "/usr/lib/python3.9/site-packages/cloudinit/__init__.py",
        };
        write(&root, py, b"");
    }
    (root, o.separate_boot.then_some(boot))
}

// ---------------------------------------------------------------------------
// LVM

/// Make `dev_file` (a partition image file) a PV of VG `vg` holding one
/// linear LV `lv` of `extents` 4 MiB extents, using a loop device and
/// vgcfgrestore (lvcreate needs device-mapper, which is not here).
/// Returns the LV's byte offset inside the PV. Err(reason) when loop
/// devices or LVM cannot be used here.
pub fn make_linear_lv(
    work: &Path,
    dev_file: &Path,
    vg: &str,
    lv: &str,
    extents: u32,
    segments: &[(u32, u32)],
) -> Result<Vec<(u64, u64)>, String> {
    let size = fs::metadata(dev_file).map_err(|e| e.to_string())?.len();
    let lv = LinearLv {
        vg,
        lv,
        extents,
        segments,
    };
    make_linear_lv_at(work, dev_file, 0..size, &lv)
}

/// A volume group holding one linear logical volume.
#[derive(Clone, Copy)]
pub struct LinearLv<'a> {
    pub vg: &'a str,
    pub lv: &'a str,
    /// Its size in 4 MiB extents.
    pub extents: u32,
    /// `(first physical extent, count)` per segment; empty: one from 0.
    pub segments: &'a [(u32, u32)],
}

/// Attach `size` bytes at `offset` of `file` to a free loop device.
pub fn loop_attach(file: &Path, offset: u64, size: u64) -> Result<String, String> {
    let out = Command::new("losetup")
        .args([
            "-f",
            "--show",
            "-o",
            &offset.to_string(),
            "--sizelimit",
            &size.to_string(),
            file.to_str().unwrap(),
        ])
        .output()
        .map_err(|e| format!("losetup: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// [`make_linear_lv`] on the partition at byte range `partition` of a disk
/// file; returned offsets are relative to the partition.
pub fn make_linear_lv_at(
    work: &Path,
    dev_file: &Path,
    partition: std::ops::Range<u64>,
    layout: &LinearLv<'_>,
) -> Result<Vec<(u64, u64)>, String> {
    let LinearLv {
        vg,
        lv,
        extents,
        segments,
    } = *layout;
    let loopdev = loop_attach(dev_file, partition.start, partition.end - partition.start)?;
    let result = (|| -> Result<Vec<(u64, u64)>, String> {
        let lvm = |args: &[&str]| -> Result<String, String> {
            let o = Command::new(args[0])
                .args(&args[1..])
                .env("LVM_SUPPRESS_FD_WARNINGS", "1")
                .output()
                .map_err(|e| format!("{}: {e}", args[0]))?;
            if !o.status.success() {
                return Err(format!(
                    "{:?} failed: {}",
                    args,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        };
        // Restrict LVM to this loop device so other engineers' loop
        // devices and the host's disks are left alone.
        let filter = format!("devices {{ filter = [ \"a|^{loopdev}$|\", \"r|.*|\" ] obtain_device_list_from_udev = 0 }}");
        let cfg = |cmd: &str| vec![cmd.to_string(), "--config".to_string(), filter.clone()];
        let a = |cmd: &str, rest: &[&str]| -> Result<String, String> {
            let mut v = cfg(cmd);
            v.extend(rest.iter().map(|s| s.to_string()));
            let r: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
            lvm(&r)
        };
        a("pvcreate", &["-ff", "-y", &loopdev])?;
        a("vgcreate", &[vg, &loopdev])?;
        let meta = work.join(format!("{vg}.meta"));
        a("vgcfgbackup", &["-f", meta.to_str().unwrap(), vg])?;
        let text = fs::read_to_string(&meta).map_err(|e| e.to_string())?;
        let segs: Vec<(u32, u32)> = if segments.is_empty() {
            vec![(0, extents)]
        } else {
            segments.to_vec()
        };
        let mut block = format!(
            "logical_volumes {{\n{lv} {{\nid = \"aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nflags = []\nsegment_count = {}\n",
            segs.len()
        );
        let mut le = 0u32;
        for (i, (pe, n)) in segs.iter().enumerate() {
            block.push_str(&format!(
                "segment{} {{\nstart_extent = {le}\nextent_count = {n}\ntype = \"striped\"\nstripe_count = 1\nstripes = [\n\"pv0\", {pe}\n]\n}}\n",
                i + 1
            ));
            le += n;
        }
        block.push_str("}\n}\n");
        // Insert the block before the VG section's closing brace: the last
        // '}' before "# Generated by LVM2".
        let gen = text.find("\n# Generated by").unwrap_or(text.len());
        let close = text[..gen]
            .rfind('}')
            .ok_or("no VG section in the backup")?;
        let new = format!("{}{}{}", &text[..close], block, &text[close..]);
        fs::write(&meta, new).map_err(|e| e.to_string())?;
        a("vgcfgrestore", &["-f", meta.to_str().unwrap(), vg])?;
        let pe_start: u64 = a(
            "pvs",
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "pe_start",
                &loopdev,
            ],
        )?
        .trim()
        .parse()
        .map_err(|e| format!("pe_start: {e}"))?;
        Ok(segs
            .iter()
            .map(|(pe, n)| (pe_start + u64::from(*pe) * 4 * MIB, u64::from(*n) * 4 * MIB))
            .collect())
    })();
    // Leave no trace on the host: deactivate, forget, detach.
    let _ = Command::new("vgchange").args(["-an", vg]).output();
    let _ = Command::new("losetup").args(["-d", &loopdev]).output();
    result
}

/// Copy `len` bytes at `src_off` of `src` to `dst_off` of `dst` (sparse).
pub fn copy_range(src: &Path, src_off: u64, len: u64, dst: &Path, dst_off: u64) {
    let mut s = fs::File::open(src).expect("open source");
    let mut d = fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .expect("open destination");
    s.seek(SeekFrom::Start(src_off)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        s.read_exact(&mut buf[..n]).expect("read source");
        if buf[..n].iter().any(|&b| b != 0) {
            d.seek(SeekFrom::Start(dst_off + done)).unwrap();
            d.write_all(&buf[..n]).unwrap();
        }
        done += n as u64;
    }
}

/// Overwrite bytes of a file.
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

/// The real Debian tree built by scripts/fixtures/debootstrap.sh, or the
/// reason it cannot be had.
pub fn debootstrap_tree() -> Result<PathBuf, String> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fixtures/debootstrap.sh");
    let out = Command::new("sh")
        .arg(&script)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `debugfs -R CMD IMAGE` output (read-only unless `write`).
pub fn debugfs(image: &Path, cmd: &str, write: bool) -> String {
    let mut args = vec![];
    if write {
        args.push("-w");
    }
    args.extend(["-R", cmd, image.to_str().unwrap()]);
    let out = Command::new("debugfs")
        .args(&args)
        .output()
        .expect("debugfs");
    assert!(
        out.status.success(),
        "debugfs {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Byte offset of an inode inside an ext image (`debugfs imap`).
pub fn inode_offset(image: &Path, spec: &str) -> u64 {
    let out = debugfs(image, &format!("imap {spec}"), false);
    // "Inode 12 is part of block group 0\n\tlocated at block 37, offset 0x0b00"
    let block: u64 = out
        .split("located at block ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("imap output: {out}"));
    let off = out
        .split("offset 0x")
        .nth(1)
        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
        .unwrap_or_else(|| panic!("imap output: {out}"));
    block * fs_block_size(image) as u64 + off
}

/// Block size of an ext image (`debugfs stats`).
pub fn fs_block_size(image: &Path) -> usize {
    debugfs(image, "stats", false)
        .lines()
        .find_map(|l| {
            l.strip_prefix("Block size:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("block size")
}

/// A small tree for hostile and property tests: a Debian-like root with a
/// few symlinks, directories and files.
pub fn small_tree(dir: &Path) -> PathBuf {
    let o = TreeOpts::default();
    let (root, _) = linux_tree(dir, Distro::Debian12, &o);
    for i in 0..40 {
        write(
            &root,
            &format!("/etc/many/file-{i:03}"),
            format!("content {i}\n").as_bytes(),
        );
    }
    root
}

/// An XFS protofile (mkfs.xfs -p) describing the tree at `root`.
pub fn xfs_protofile(root: &Path) -> String {
    fn dir(p: &Path, out: &mut String) {
        let mut entries: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                let t = fs::read_link(e.path()).unwrap();
                out.push_str(&format!("{name} l--777 0 0 {}\n", t.display()));
            } else if ft.is_dir() {
                out.push_str(&format!("{name} d--755 0 0\n"));
                dir(&e.path(), out);
                out.push_str("$\n");
            } else if ft.is_file() {
                out.push_str(&format!("{name} ---644 0 0 {}\n", e.path().display()));
            }
        }
    }
    let mut out = String::from("/dev/null\n0 0\nd--755 0 0\n");
    dir(root, &mut out);
    out.push_str("$\n");
    out
}

/// Make an XFS holding `tree` at `offset` of `disk` (`size` bytes; XFS
/// needs at least 300 MiB, sparse). Err(reason) if a loop device is needed
/// and unavailable.
pub fn mkfs_xfs(
    work: &Path,
    disk: &Path,
    offset: u64,
    size: u64,
    tree: &Path,
) -> Result<(), String> {
    let proto = work.join("xfs.proto");
    fs::write(&proto, xfs_protofile(tree)).unwrap();
    if offset == 0 && fs::metadata(disk).map(|m| m.len()).unwrap_or(0) == size {
        run(
            "mkfs.xfs",
            &[
                "-q",
                "-f",
                "-p",
                proto.to_str().unwrap(),
                disk.to_str().unwrap(),
            ],
        );
        return Ok(());
    }
    let dev = loop_attach(disk, offset, size)?;
    let out = Command::new("mkfs.xfs")
        .args(["-q", "-f", "-p", proto.to_str().unwrap(), &dev])
        .output();
    let _ = Command::new("losetup").args(["-d", &dev]).output();
    let out = out.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "mkfs.xfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// An opened container's guest disk as an owned `ReadAt` (diskformat's
/// `GuestReader` borrows; inspection wants an `Arc<dyn ReadAt>`).
pub struct OwnedGuest(pub Box<dyn diskformat::DiskImage>);

impl ReadAt for OwnedGuest {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0
            .read_guest(offset, buf)
            .map_err(diskformat::FormatError::into_io)
    }
    fn len(&self) -> u64 {
        self.0.virtual_size()
    }
}

/// Open any container file through diskformat (detected by content).
pub fn open_container(path: &Path) -> Result<Arc<dyn ReadAt>, diskformat::FormatError> {
    let src: Arc<dyn ReadAt> = Arc::new(diskformat::FileSource::open(path)?);
    let img = diskformat::open(src, &diskformat::Limits::default())?;
    Ok(Arc::new(OwnedGuest(img)))
}
