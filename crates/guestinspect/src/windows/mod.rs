//! What a Windows system volume is: product, version, build, edition and
//! architecture from the registry (SOFTWARE, and SYSTEM when present) or the
//! PE headers of the kernel, the names Tencent gives it (OsType such as
//! "Windows Server 2019", OsName such as "Windows Server 2019 DataCenter
//! 64bit"), and whether cloudbase-init and the virtio drivers are installed.
//!
//! Works on any [`Filesystem`] (NTFS in practice); paths resolve
//! case-insensitively through the shared path code. Hives are read whole,
//! up to [`MAX_HIVE`] bytes, growing the buffer only as data is read.

pub mod hive;
pub mod pe;

use crate::fs::{path, FileType, Filesystem, FsError};
use hive::{Hive, Value};

/// Real SOFTWARE hives are tens of MiB; anything above this is refused.
pub const MAX_HIVE: u64 = 128 << 20;

const SOFTWARE: &str = "/Windows/System32/config/SOFTWARE";
const SYSTEM: &str = "/Windows/System32/config/SYSTEM";
const CURRENT_VERSION: &str = "Microsoft\\Windows NT\\CurrentVersion";
const CLOUDBASE_DIRS: &[&str] = &[
    "/Program Files/Cloudbase Solutions/Cloudbase-Init",
    "/Program Files (x86)/Cloudbase Solutions/Cloudbase-Init",
];
const VIRTIO_BLOCK: &[&str] = &["viostor.sys", "vioscsi.sys"];
const VIRTIO_NET: &[&str] = &["netkvm.sys"];

/// Facts about a Windows installation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WindowsInfo {
    /// ProductName as the registry has it, e.g. "Windows Server 2019 Datacenter".
    pub product_name: Option<String>,
    /// EditionID, e.g. "ServerDatacenter".
    pub edition_id: Option<String>,
    /// InstallationType: "Server", "Server Core" or "Client".
    pub installation_type: Option<String>,
    /// "major.minor" (CurrentMajor/MinorVersionNumber, else CurrentVersion),
    /// e.g. "10.0" or "6.3".
    pub version: Option<String>,
    /// CurrentBuildNumber (or CurrentBuild), e.g. "17763".
    pub build: Option<String>,
    /// "x86_64", "i386" or "arm_64" (Tencent's names), when known.
    pub architecture: Option<String>,
    /// Where the architecture came from: "registry" or the PE file read.
    pub architecture_from: Option<String>,
    /// Tencent's OsType family ("Windows Server 2008" … "Windows Server
    /// 2022"; "Windows Server 2025", "Windows 10", "Windows 11" beyond
    /// Tencent's list), when the product is recognised.
    pub tencent_os_type: Option<String>,
    /// Tencent's OsName, e.g. "Windows Server 2019 DataCenter 64bit".
    pub tencent_os_name: String,
    /// Program Files/Cloudbase Solutions/Cloudbase-Init exists.
    pub cloudbase_init: bool,
    /// The virtio drivers found in System32/drivers (lower case).
    pub virtio_drivers: Vec<String>,
    /// viostor.sys or vioscsi.sys is installed.
    pub virtio_block: bool,
    /// netkvm.sys is installed.
    pub virtio_net: bool,
}

/// Inspect `fs` as a Windows system volume. Ok(None) when it has no
/// SOFTWARE hive (not Windows); errors when the hive is there but cannot be
/// read or parsed.
pub fn inspect(fs: &dyn Filesystem) -> Result<Option<WindowsInfo>, FsError> {
    let Some(software) = read_optional(fs, SOFTWARE)? else {
        return Ok(None);
    };
    let hive = Hive::parse(&software)?;
    let root = hive.root()?;
    let cv = root
        .subpath(CURRENT_VERSION)?
        .ok_or_else(|| FsError::Corrupt(format!("SOFTWARE hive has no {CURRENT_VERSION}")))?;
    let string = |name: &str| -> Result<Option<String>, FsError> {
        Ok(cv
            .value(name)?
            .as_ref()
            .and_then(Value::as_str)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    };
    let product_name = string("ProductName")?;
    let edition_id = string("EditionID")?;
    let installation_type = string("InstallationType")?;
    let build = match string("CurrentBuildNumber")? {
        Some(b) => Some(b),
        None => string("CurrentBuild")?,
    };
    let major = cv
        .value("CurrentMajorVersionNumber")?
        .and_then(|v| v.as_dword());
    let minor = cv
        .value("CurrentMinorVersionNumber")?
        .and_then(|v| v.as_dword());
    let version = match (major, minor) {
        (Some(a), Some(b)) => Some(format!("{a}.{b}")),
        _ => string("CurrentVersion")?,
    };

    let (architecture, architecture_from) = match architecture(fs)? {
        Some((a, from)) => (Some(a.to_string()), Some(from)),
        None => (None, None),
    };

    let mut cloudbase_init = false;
    for dir in CLOUDBASE_DIRS {
        if is_dir(fs, dir)? {
            cloudbase_init = true;
        }
    }
    let mut virtio_drivers = Vec::new();
    for drv in VIRTIO_BLOCK.iter().chain(VIRTIO_NET) {
        if exists(fs, &format!("/Windows/System32/drivers/{drv}"))? {
            virtio_drivers.push(drv.to_string());
        }
    }
    let virtio_block = VIRTIO_BLOCK
        .iter()
        .any(|d| virtio_drivers.iter().any(|v| v == d));
    let virtio_net = VIRTIO_NET
        .iter()
        .any(|d| virtio_drivers.iter().any(|v| v == d));

    let build_no = build.as_deref().and_then(|b| b.parse::<u32>().ok());
    let server = is_server(
        product_name.as_deref(),
        installation_type.as_deref(),
        edition_id.as_deref(),
    );
    let family = family(
        product_name.as_deref(),
        version.as_deref(),
        build_no,
        server,
    );
    let tencent_os_type = family.as_ref().map(|f| f.tencent_os_type.to_string());
    let tencent_os_name = os_name(
        family.as_ref(),
        product_name.as_deref(),
        edition_id.as_deref(),
        architecture.as_deref(),
    );
    Ok(Some(WindowsInfo {
        product_name,
        edition_id,
        installation_type,
        version,
        build,
        architecture,
        architecture_from,
        tencent_os_type,
        tencent_os_name,
        cloudbase_init,
        virtio_drivers,
        virtio_block,
        virtio_net,
    }))
}

/// The architecture from SYSTEM's PROCESSOR_ARCHITECTURE (in the current
/// control set), else from the Machine field of the kernel's PE header.
fn architecture(fs: &dyn Filesystem) -> Result<Option<(&'static str, String)>, FsError> {
    if let Some(system) = read_optional(fs, SYSTEM)? {
        let hive = Hive::parse(&system)?;
        let root = hive.root()?;
        let current = root
            .subpath("Select")?
            .and_then(|k| k.value("Current").ok().flatten())
            .and_then(|v| v.as_dword())
            .filter(|&n| (1..=999).contains(&n))
            .unwrap_or(1);
        let env = format!("ControlSet{current:03}\\Control\\Session Manager\\Environment");
        if let Some(env) = root.subpath(&env)? {
            let arch = env
                .value("PROCESSOR_ARCHITECTURE")?
                .and_then(|v| v.as_str().map(str::to_ascii_uppercase));
            let mapped = match arch.as_deref() {
                Some("AMD64") => Some("x86_64"),
                Some("X86") => Some("i386"),
                Some("ARM64") => Some("arm_64"),
                _ => None,
            };
            if let Some(a) = mapped {
                return Ok(Some((a, "registry".to_string())));
            }
        }
    }
    for file in [
        "/Windows/System32/ntoskrnl.exe",
        "/Windows/System32/kernel32.dll",
    ] {
        let Some(head) = read_head(fs, file, pe::HEADER_READ)? else {
            continue;
        };
        if let Some(a) = pe::architecture(&head) {
            return Ok(Some((a, file.trim_start_matches('/').to_string())));
        }
    }
    Ok(None)
}

fn is_server(product: Option<&str>, installation: Option<&str>, edition: Option<&str>) -> bool {
    let has = |s: Option<&str>, w: &str| s.is_some_and(|s| s.to_ascii_lowercase().contains(w));
    has(product, "server") || has(installation, "server") || has(edition, "server")
}

struct Family {
    tencent_os_type: &'static str,
    /// The name OsName starts with ("Windows Server 2012 R2").
    display: &'static str,
}

/// The product family, from ProductName first (it names the server release)
/// and otherwise from the version and build numbers.
fn family(
    product: Option<&str>,
    version: Option<&str>,
    build: Option<u32>,
    server: bool,
) -> Option<Family> {
    let f = |t, d| {
        Some(Family {
            tencent_os_type: t,
            display: d,
        })
    };
    if let Some(p) = product {
        let p = p.to_ascii_lowercase();
        if p.contains("server") {
            for (year, t) in [
                ("2025", "Windows Server 2025"),
                ("2022", "Windows Server 2022"),
                ("2019", "Windows Server 2019"),
                ("2016", "Windows Server 2016"),
                ("2012", "Windows Server 2012"),
                ("2008", "Windows Server 2008"),
            ] {
                if p.contains(year) {
                    let r2 = p.contains(" r2");
                    let display = match (year, r2) {
                        ("2012", true) => "Windows Server 2012 R2",
                        ("2008", true) => "Windows Server 2008 R2",
                        _ => t,
                    };
                    return f(t, display);
                }
            }
        }
    }
    if server {
        return match (version, build) {
            (_, Some(b)) if b >= 26100 => f("Windows Server 2025", "Windows Server 2025"),
            (_, Some(b)) if b >= 20348 => f("Windows Server 2022", "Windows Server 2022"),
            (_, Some(b)) if b >= 17763 => f("Windows Server 2019", "Windows Server 2019"),
            (_, Some(b)) if b >= 14393 => f("Windows Server 2016", "Windows Server 2016"),
            (Some("6.3"), _) => f("Windows Server 2012", "Windows Server 2012 R2"),
            (Some("6.2"), _) => f("Windows Server 2012", "Windows Server 2012"),
            (Some("6.1"), _) => f("Windows Server 2008", "Windows Server 2008 R2"),
            (Some("6.0"), _) => f("Windows Server 2008", "Windows Server 2008"),
            _ => None,
        };
    }
    // Client Windows: not importable as a Tencent OS, but named correctly
    // (Windows 11 still calls itself "Windows 10" in ProductName).
    match (version, build) {
        (Some("10.0"), Some(b)) if b >= 22000 => f("Windows 11", "Windows 11"),
        (Some("10.0"), _) => f("Windows 10", "Windows 10"),
        _ => None,
    }
}

/// Tencent's OsName: family, edition and word size.
fn os_name(
    family: Option<&Family>,
    product: Option<&str>,
    edition: Option<&str>,
    arch: Option<&str>,
) -> String {
    let bits = match arch {
        Some("i386") => " 32bit",
        Some(_) => " 64bit",
        None => "",
    };
    let edition_name = edition.and_then(|e| {
        let e = e.to_ascii_lowercase();
        [
            ("datacenter", "DataCenter"),
            ("standard", "Standard"),
            ("enterprise", "Enterprise"),
            ("essentials", "Essentials"),
            ("web", "Web"),
            ("professional", "Pro"),
            ("core", "Home"),
        ]
        .iter()
        .find(|(k, _)| e.contains(k))
        .map(|(_, v)| *v)
    });
    match family {
        Some(f) => match edition_name {
            Some(ed) => format!("{} {ed}{bits}", f.display),
            None => format!("{}{bits}", f.display),
        },
        None => format!("{}{bits}", product.unwrap_or("Windows")),
    }
}

fn not_there(e: &FsError) -> bool {
    matches!(e, FsError::NotFound(_) | FsError::NotADirectory(_))
}

fn exists(fs: &dyn Filesystem, p: &str) -> Result<bool, FsError> {
    match path::resolve(fs, p, true) {
        Ok(_) => Ok(true),
        Err(e) if not_there(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

fn is_dir(fs: &dyn Filesystem, p: &str) -> Result<bool, FsError> {
    match path::resolve(fs, p, true) {
        Ok(ino) => Ok(fs.stat(ino)?.file_type == FileType::Dir),
        Err(e) if not_there(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A whole file up to [`MAX_HIVE`], or None when it does not exist.
fn read_optional(fs: &dyn Filesystem, p: &str) -> Result<Option<Vec<u8>>, FsError> {
    let ino = match path::resolve(fs, p, true) {
        Ok(ino) => ino,
        Err(e) if not_there(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = fs.stat(ino)?;
    if st.file_type != FileType::File {
        return Ok(None);
    }
    if st.size > MAX_HIVE {
        return Err(FsError::Limit(format!(
            "{p}: {} bytes (cap {MAX_HIVE})",
            st.size
        )));
    }
    // Grow with the data actually read, not with the size the volume claims.
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    while (out.len() as u64) < st.size {
        let want = chunk.len().min((st.size - out.len() as u64) as usize);
        let n = fs.read(ino, out.len() as u64, &mut chunk[..want])?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(out))
}

fn read_head(fs: &dyn Filesystem, p: &str, n: usize) -> Result<Option<Vec<u8>>, FsError> {
    let ino = match path::resolve(fs, p, true) {
        Ok(ino) => ino,
        Err(e) if not_there(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; n];
    let got = fs.read(ino, 0, &mut buf)?;
    buf.truncate(got);
    Ok(Some(buf))
}
