//! What operating system a set of filesystems holds: which one is the root,
//! the distribution and its Tencent names, the architecture (from the ELF
//! headers of the system's own binaries), the installed kernels, cloud-init
//! and the virtio drivers. Windows is read by `crate::windows` (SOFTWARE
//! hive); this module only finds its root and hands it over.

pub mod elf;
pub mod release;

use crate::fs::path;
use crate::fs::{FileType, Filesystem, FsError, InodeId};
use serde::Serialize;

/// Files read for facts are small; anything larger is not what we expect.
const MAX_SMALL_FILE: usize = 64 << 10;
/// modules.builtin of a distribution kernel is ~20–60 KiB.
const MAX_BUILTIN_FILE: usize = 2 << 20;
/// Entries read from one directory when listing (/boot, /lib/modules).
const MAX_LIST: usize = 10_000;

/// The guest's filesystems as mounted at their mount points, so that
/// `/boot/...` reads the separate /boot partition and symlinks may cross
/// from one filesystem into another.
pub struct Guest<'a> {
    mounts: Vec<(String, &'a dyn Filesystem)>,
}

impl<'a> Guest<'a> {
    pub fn new(root: &'a dyn Filesystem) -> Guest<'a> {
        Guest {
            mounts: vec![("/".to_string(), root)],
        }
    }

    /// Mount `fs` at `mountpoint` (an absolute path without a trailing '/').
    pub fn mount(&mut self, mountpoint: &str, fs: &'a dyn Filesystem) {
        let normal: String = split_rev(mountpoint)
            .into_iter()
            .rev()
            .map(|c| format!("/{c}"))
            .collect();
        if mountpoint.starts_with('/')
            && !normal.is_empty()
            && !normal.split('/').any(|c| c == "." || c == "..")
        {
            self.mounts.push((normal, fs));
        }
    }

    /// The filesystem mounted exactly at `dir` (an absolute, normalised
    /// path), if any.
    fn mounted_at(&self, dir: &str) -> Option<&'a dyn Filesystem> {
        self.mounts
            .iter()
            .find(|(mp, _)| mp == dir)
            .map(|(_, fs)| *fs)
    }

    /// Resolve an absolute guest path across mount points: a symlink on
    /// the root may lead into /usr or /boot on another filesystem, and
    /// `..` leads back out. Bounded like `fs::path::resolve`.
    pub fn resolve(&self, p: &str, follow: bool) -> Result<(&'a dyn Filesystem, InodeId), FsError> {
        let root = self.mounts[0].1;
        // The walk so far: (name, filesystem, inode) from the root down.
        let mut stack: Vec<(String, &'a dyn Filesystem, InodeId)> =
            vec![(String::new(), root, root.root())];
        let mut todo: Vec<String> = split_rev(p);
        let (mut hops, mut walked) = (0usize, 0usize);
        while let Some(comp) = todo.pop() {
            walked += 1;
            if walked > path::MAX_COMPONENTS {
                return Err(FsError::Limit(format!(
                    "resolving {p}: too many components"
                )));
            }
            match comp.as_str() {
                "." => continue,
                ".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let dir_path: String = stack
                .iter()
                .skip(1)
                .map(|(n, _, _)| format!("/{n}"))
                .collect();
            let child_path = format!("{dir_path}/{comp}");
            if let Some(fs) = self.mounted_at(&child_path) {
                stack.push((comp, fs, fs.root()));
                continue;
            }
            let (_, fs, dir) = stack[stack.len() - 1];
            if fs.stat(dir)?.file_type != FileType::Dir {
                return Err(FsError::NotADirectory(p.to_string()));
            }
            let child = path::lookup(fs, dir, comp.as_bytes())?
                .ok_or_else(|| FsError::NotFound(p.to_string()))?;
            if fs.stat(child)?.file_type == FileType::Symlink && (follow || !todo.is_empty()) {
                hops += 1;
                if hops > path::MAX_SYMLINK_HOPS {
                    return Err(FsError::Limit(format!("resolving {p}: too many symlinks")));
                }
                let target = String::from_utf8_lossy(&fs.read_link(child)?).into_owned();
                if target.starts_with('/') {
                    stack.truncate(1);
                }
                let more = split_rev(&target);
                if todo.len() + more.len() > path::MAX_COMPONENTS {
                    return Err(FsError::Limit(format!("resolving {p}: path too long")));
                }
                todo.extend(more);
                continue;
            }
            stack.push((comp, fs, child));
        }
        let (_, fs, ino) = stack[stack.len() - 1];
        Ok((fs, ino))
    }

    /// Resolve, with "absent" as None.
    fn find(&self, p: &str) -> Result<Option<(&'a dyn Filesystem, InodeId)>, FsError> {
        match self.resolve(p, true) {
            Ok(x) => Ok(Some(x)),
            Err(FsError::NotFound(_)) | Err(FsError::NotADirectory(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn exists(&self, p: &str) -> Result<bool, FsError> {
        Ok(self.find(p)?.is_some())
    }

    pub fn is_dir(&self, p: &str) -> Result<bool, FsError> {
        match self.find(p)? {
            Some((fs, i)) => Ok(fs.stat(i)?.file_type == FileType::Dir),
            None => Ok(false),
        }
    }

    /// Contents of a small regular file; None if it does not exist.
    pub fn read_file(&self, p: &str, max: usize) -> Result<Option<Vec<u8>>, FsError> {
        let Some((fs, ino)) = self.find(p)? else {
            return Ok(None);
        };
        let st = fs.stat(ino)?;
        if st.file_type != FileType::File {
            return Ok(None);
        }
        if st.size > max as u64 {
            return Err(FsError::Limit(format!(
                "{p} is {} bytes, more than {max}",
                st.size
            )));
        }
        Ok(Some(path::read_prefix(fs, ino, st.size as usize)?))
    }

    /// The first `n` bytes of a file; None if it does not exist.
    pub fn read_head(&self, p: &str, n: usize) -> Result<Option<Vec<u8>>, FsError> {
        match self.find(p)? {
            Some((fs, i)) if fs.stat(i)?.file_type == FileType::File => {
                Ok(Some(path::read_prefix(fs, i, n)?))
            }
            _ => Ok(None),
        }
    }

    /// Names in a directory; empty if it does not exist.
    pub fn list(&self, p: &str) -> Result<Vec<String>, FsError> {
        let Some((fs, ino)) = self.find(p)? else {
            return Ok(Vec::new());
        };
        if fs.stat(ino)?.file_type != FileType::Dir {
            return Ok(Vec::new());
        }
        Ok(fs
            .read_dir(ino, MAX_LIST)?
            .into_iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect())
    }
}

/// Components of `p`, reversed, empty ones dropped.
fn split_rev(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect()
}

/// Whether `fs` looks like a Linux root: /etc/os-release, or /etc with
/// /bin, /usr/bin, /etc/fstab or /etc/passwd.
/// A check that fails (a symlink loop on /etc/os-release, a corrupt
/// directory) counts as "not there", so one damaged path does not hide an
/// otherwise recognisable root; the OS reader reports the damage.
pub fn is_linux_root(fs: &dyn Filesystem) -> bool {
    let g = Guest::new(fs);
    let yes = |r: Result<bool, FsError>| r.unwrap_or(false);
    if yes(g.exists("/etc/os-release")) || yes(g.exists("/usr/lib/os-release")) {
        return true;
    }
    // With /usr on its own filesystem, /bin and /etc/os-release lead into
    // it and dangle here: /etc/fstab or /etc/passwd still mark a root.
    yes(g.is_dir("/etc"))
        && (yes(g.is_dir("/bin"))
            || yes(g.is_dir("/usr/bin"))
            || yes(g.exists("/etc/fstab"))
            || yes(g.exists("/etc/passwd")))
}

/// Whether `fs` looks like a Windows system volume.
pub fn is_windows_root(fs: &dyn Filesystem) -> Result<bool, FsError> {
    if !fs.case_insensitive() {
        return Ok(false);
    }
    Guest::new(fs).exists("/Windows/System32/config/SOFTWARE")
}

/// One line of /etc/fstab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    pub spec: String,
    pub mountpoint: String,
    pub fstype: String,
}

pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .take(1000)
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let mut f = l.split_whitespace();
            let (spec, mp, ty) = (f.next()?, f.next()?, f.next()?);
            Some(FstabEntry {
                spec: spec.to_string(),
                mountpoint: mp.replace("\\040", " "),
                fstype: ty.to_string(),
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// "6.1.0-18-amd64"
    pub version: String,
    /// The kernel image, e.g. "/boot/vmlinuz-6.1.0-18-amd64".
    pub image: Option<String>,
    /// Whether `/lib/modules/<version>` exists.
    pub modules: bool,
}

/// How a driver is present in a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverPresence {
    Module,
    Builtin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelVirtio {
    pub kernel: String,
    pub block: Option<DriverPresence>,
    pub net: Option<DriverPresence>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Virtio {
    /// Some installed kernel (Linux) or the driver store (Windows) has a
    /// virtio block driver.
    pub block: bool,
    pub net: bool,
    /// Linux: per installed kernel.
    pub kernels: Vec<KernelVirtio>,
}

/// What the Linux root says about itself.
#[derive(Debug, Clone, Default)]
pub struct LinuxFacts {
    pub release: Option<release::Release>,
    pub os_type: String,
    pub os_name: String,
    pub architecture: Option<&'static str>,
    /// The binary the architecture was read from.
    pub architecture_from: Option<String>,
    pub kernels: Vec<Kernel>,
    pub cloud_init: bool,
    pub virtio: Virtio,
    pub warnings: Vec<String>,
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

/// Read the release files: os-release first, completed by the older files
/// (which give CentOS's and Debian's minor versions).
pub fn read_release(g: &Guest) -> Result<Option<release::Release>, FsError> {
    let mut rel = None;
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(b) = g.read_file(p, MAX_SMALL_FILE)? {
            rel = Some(release::from_os_release(&text(b), p));
            break;
        }
    }
    let centos = g.read_file("/etc/centos-release", MAX_SMALL_FILE)?;
    let redhat = g.read_file("/etc/redhat-release", MAX_SMALL_FILE)?;
    let rh_file = centos
        .map(|b| (text(b), "/etc/centos-release"))
        .or_else(|| redhat.map(|b| (text(b), "/etc/redhat-release")));
    if let Some((t, p)) = &rh_file {
        let old = release::from_redhat_release(t, p);
        match &mut rel {
            Some(r) => {
                // Only take the minor version if the file agrees on the major.
                if old.version_id.is_some()
                    && old.version_id == r.version_id.as_deref().and_then(release::major)
                {
                    r.precise_version = old.precise_version;
                }
            }
            None => rel = Some(old),
        }
    }
    if let Some(b) = g.read_file("/etc/debian_version", MAX_SMALL_FILE)? {
        let t = text(b);
        let v = t.trim();
        let numeric = release::first_version(v).filter(|n| v.starts_with(n.as_str()));
        match &mut rel {
            Some(r) if r.id.as_deref() == Some("debian") => {
                if let Some(n) = &numeric {
                    if r.version_id.is_none() || release::major(n) == r.version_id.clone() {
                        r.precise_version = Some(n.clone());
                        r.version_id
                            .get_or_insert_with(|| release::major(n).unwrap_or_default());
                    }
                }
            }
            Some(_) => {}
            None => {
                rel = Some(release::Release {
                    id: Some("debian".into()),
                    name: Some("Debian GNU/Linux".into()),
                    version_id: numeric.as_deref().and_then(release::major),
                    precise_version: numeric,
                    source: "/etc/debian_version".into(),
                    ..Default::default()
                })
            }
        }
    }
    if rel.is_none() {
        if let Some(b) = g.read_file("/etc/SuSE-release", MAX_SMALL_FILE)? {
            rel = Some(release::from_suse_release(&text(b), "/etc/SuSE-release"));
        }
    }
    if rel.is_none() {
        if let Some(b) = g.read_file("/etc/lsb-release", MAX_SMALL_FILE)? {
            rel = Some(release::from_lsb_release(&text(b), "/etc/lsb-release"));
        }
    }
    Ok(rel)
}

/// The architecture of the system's own binaries.
pub fn read_architecture(g: &Guest) -> Result<Option<(&'static str, String)>, FsError> {
    for p in [
        "/bin/sh",
        "/usr/bin/sh",
        "/sbin/init",
        "/lib/systemd/systemd",
        "/usr/lib/systemd/systemd",
        "/bin/bash",
        "/usr/bin/bash",
        "/bin/ls",
        "/usr/bin/ls",
        "/bin/busybox",
    ] {
        if let Some(head) = g.read_head(p, 64)? {
            if let Some(a) = elf::architecture(&head) {
                return Ok(Some((a, p.to_string())));
            }
        }
    }
    Ok(None)
}

/// Installed kernels: /boot/vmlinuz-* and /lib/modules/*.
pub fn read_kernels(g: &Guest) -> Result<Vec<Kernel>, FsError> {
    let mut kernels: Vec<Kernel> = Vec::new();
    for name in g.list("/boot")? {
        for prefix in ["vmlinuz-", "vmlinux-"] {
            if let Some(v) = name.strip_prefix(prefix) {
                if !v.is_empty() && !kernels.iter().any(|k| k.version == v) {
                    kernels.push(Kernel {
                        version: v.to_string(),
                        image: Some(format!("/boot/{name}")),
                        modules: false,
                    });
                }
            }
        }
    }
    let mut mod_root = "/lib/modules";
    let mut mods = g.list(mod_root)?;
    if mods.is_empty() {
        mod_root = "/usr/lib/modules";
        mods = g.list(mod_root)?;
    }
    for v in mods {
        if !g.is_dir(&format!("{mod_root}/{v}"))? {
            continue;
        }
        match kernels.iter_mut().find(|k| k.version == v) {
            Some(k) => k.modules = true,
            None => kernels.push(Kernel {
                version: v,
                image: None,
                modules: true,
            }),
        }
    }
    kernels.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(kernels)
}

/// virtio_blk and virtio_net in each kernel: as a module file
/// (virtio_blk.ko, .ko.xz, .ko.zst, .ko.gz) or listed in modules.builtin.
pub fn read_virtio(g: &Guest, kernels: &[Kernel]) -> Result<Virtio, FsError> {
    let mut out = Virtio::default();
    let mod_root = if g.is_dir("/lib/modules")? {
        "/lib/modules"
    } else {
        "/usr/lib/modules"
    };
    for k in kernels.iter().filter(|k| k.modules) {
        let base = format!("{mod_root}/{}", k.version);
        let has_module = |dir: &str, stem: &str| -> Result<bool, FsError> {
            let want = format!("{stem}.ko");
            Ok(g.list(&format!("{base}/kernel/drivers/{dir}"))?
                .iter()
                .any(|n| {
                    n == &want
                        || n.strip_prefix(want.as_str())
                            .is_some_and(|r| matches!(r, ".xz" | ".zst" | ".gz"))
                }))
        };
        let builtin = match g.read_file(&format!("{base}/modules.builtin"), MAX_BUILTIN_FILE) {
            Ok(b) => text(b.unwrap_or_default()),
            Err(FsError::Limit(_)) => String::new(),
            Err(e) => return Err(e),
        };
        let in_builtin = |path: &str| builtin.lines().any(|l| l.trim() == path);
        let block = if has_module("block", "virtio_blk")? {
            Some(DriverPresence::Module)
        } else if in_builtin("kernel/drivers/block/virtio_blk.ko") {
            Some(DriverPresence::Builtin)
        } else {
            None
        };
        let net = if has_module("net", "virtio_net")? {
            Some(DriverPresence::Module)
        } else if in_builtin("kernel/drivers/net/virtio_net.ko") {
            Some(DriverPresence::Builtin)
        } else {
            None
        };
        out.block |= block.is_some();
        out.net |= net.is_some();
        out.kernels.push(KernelVirtio {
            kernel: k.version.clone(),
            block,
            net,
        });
    }
    Ok(out)
}

/// cloud-init: its command, its config, or its Python package.
pub fn read_cloud_init(g: &Guest) -> Result<bool, FsError> {
    for p in [
        "/usr/bin/cloud-init",
        "/usr/local/bin/cloud-init",
        "/etc/cloud/cloud.cfg",
    ] {
        if g.exists(p)? {
            return Ok(true);
        }
    }
    for lib in ["/usr/lib", "/usr/lib64", "/usr/local/lib"] {
        for py in g.list(lib)?.iter().filter(|n| n.starts_with("python3")) {
            for sub in ["dist-packages", "site-packages"] {
                if g.is_dir(&format!("{lib}/{py}/{sub}/cloudinit"))? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Everything about a Linux guest whose filesystems are mounted in `g`.
/// A fact that cannot be read becomes a warning, not a failure.
pub fn detect_linux(g: &Guest) -> LinuxFacts {
    let mut f = LinuxFacts::default();
    let mut warn = |what: &str, e: FsError| f.warnings.push(format!("{what}: {e}"));
    let rel = read_release(g).unwrap_or_else(|e| {
        warn("reading the release files", e);
        None
    });
    let arch = read_architecture(g).unwrap_or_else(|e| {
        warn("reading the architecture", e);
        None
    });
    let kernels = read_kernels(g).unwrap_or_else(|e| {
        warn("listing kernels", e);
        Vec::new()
    });
    let virtio = read_virtio(g, &kernels).unwrap_or_else(|e| {
        warn("looking for virtio drivers", e);
        Virtio::default()
    });
    let cloud_init = read_cloud_init(g).unwrap_or_else(|e| {
        warn("looking for cloud-init", e);
        false
    });
    let empty = release::Release::default();
    let r = rel.as_ref().unwrap_or(&empty);
    f.os_type = release::tencent_os_type(r).to_string();
    f.os_name = release::tencent_os_name(r, &f.os_type, arch.as_ref().map(|a| a.0));
    f.architecture = arch.as_ref().map(|a| a.0);
    f.architecture_from = arch.map(|a| a.1);
    f.release = rel;
    f.kernels = kernels;
    f.virtio = virtio;
    f.cloud_init = cloud_init;
    f
}
