//! What is inside a disk image: partition tables, LVM, filesystems, the OS,
//! cloud-init and virtio, read from the guest bytes alone through
//! `diskformat`'s block reader. Nothing is booted or run.

#![forbid(unsafe_code)]

pub mod budget;
pub mod fs;
pub mod lvm;
pub mod os;
pub mod part;
pub mod report;
pub mod window;
pub mod windows;

pub use report::{FilesystemReport, GuestReport, Location, OsReport, ReadStats};
pub use window::{CountingReader, Window};

use diskformat::ReadAt;
use fs::Filesystem;
use part::TableKind;
use std::sync::Arc;
use std::time::Instant;

/// Limits and switches for [`inspect`].
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// Filesystems opened at most (partitions + logical volumes).
    pub max_filesystems: usize,
    /// Detect the OS (off: only partitions, LVM and filesystems).
    pub detect_os: bool,
    /// The whole inspection's time limit (`None`: none).
    pub deadline: Option<std::time::Duration>,
    /// Bytes the whole inspection may read (`None`: no cap).
    pub max_read_bytes: Option<u64>,
}

/// Default deadline of one inspection: generous, since its reads may wait
/// for a download; a hostile layout that makes it crawl is stopped.
pub const DEFAULT_DEADLINE_SECS: u64 = 600;
/// Default cap on what one inspection reads (a real guest needs tens of MiB).
pub const DEFAULT_MAX_READ_BYTES: u64 = 2 << 30;

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            max_filesystems: 64,
            detect_os: true,
            deadline: Some(std::time::Duration::from_secs(DEFAULT_DEADLINE_SECS)),
            max_read_bytes: Some(DEFAULT_MAX_READ_BYTES),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The disk could not be read at all (the source failed, not the
    /// content): inspection has no answer.
    #[error("reading the disk failed: {0}")]
    Io(#[from] std::io::Error),
    /// The inspection's deadline or read budget ran out.
    #[error("{0}")]
    Budget(budget::BudgetExceeded),
}

/// A volume to probe: where it is and its bytes.
struct Volume {
    location: Location,
    disk: Arc<dyn ReadAt>,
    /// GPT unique partition GUID (for fstab PARTUUID=).
    partuuid: Option<String>,
}

/// An opened filesystem with its report entry.
struct Opened {
    report: FilesystemReport,
    fs: Box<dyn Filesystem>,
    partuuid: Option<String>,
}

/// An I/O error that is not "past the end" means the source itself broke
/// (a stream that failed): stop. Past-the-end reads are the content's fault.
fn fatal(e: &std::io::Error) -> bool {
    e.kind() != std::io::ErrorKind::UnexpectedEof && e.kind() != std::io::ErrorKind::InvalidData
}

/// Inspect a guest disk: partition table, LVM, filesystems, the OS on its
/// root, cloud-init and virtio. Damage found on the way becomes a warning
/// in the report; only a failing source is an error.
pub fn inspect(disk: Arc<dyn ReadAt>, opts: &InspectOptions) -> Result<GuestReport, InspectError> {
    let budgeted = Arc::new(budget::Budgeted::new(
        disk,
        opts.deadline,
        opts.max_read_bytes,
    ));
    let result = inspect_within(budgeted.clone(), opts);
    // Parsers may have taken the failing reads for damage: the budget wins.
    match budgeted.exceeded() {
        Some(e) => Err(InspectError::Budget(e)),
        None => result,
    }
}

fn inspect_within(
    disk: Arc<dyn ReadAt>,
    opts: &InspectOptions,
) -> Result<GuestReport, InspectError> {
    let started = Instant::now();
    let counter = Arc::new(CountingReader::new(disk));
    let disk: Arc<dyn ReadAt> = counter.clone();
    let mut warnings = Vec::new();

    let table = match part::detect(&*disk) {
        Ok(t) => t,
        Err(part::PartError::Io(e)) if fatal(&e) => return Err(e.into()),
        Err(e) => {
            warnings.push(e.to_string());
            part::PartitionTable {
                kind: TableKind::None,
                sector_size: 512,
                gpt_header: None,
                disk_id: None,
                partitions: Vec::new(),
                warnings: Vec::new(),
            }
        }
    };
    warnings.extend(table.warnings.iter().cloned());

    // Partitions (or the whole disk), then the LVs of any PV among them.
    let mut volumes = Vec::new();
    if table.kind == TableKind::None {
        volumes.push(Volume {
            location: Location::Disk,
            disk: disk.clone(),
            partuuid: None,
        });
    }
    for p in table.partitions.iter().filter(|p| !p.extended) {
        match Window::new(disk.clone(), p.start, p.size) {
            Ok(w) => volumes.push(Volume {
                location: Location::Partition { index: p.index },
                disk: Arc::new(w),
                partuuid: p.guid.clone(),
            }),
            Err(e) => warnings.push(format!("partition {}: {e}", p.index)),
        }
    }
    let mut lvs = Vec::new();
    let mut lv_volumes = Vec::new();
    for v in &volumes {
        match lvm::read_pv(&*v.disk) {
            Ok(None) => {}
            Ok(Some(pv)) => {
                for lv in pv.lvs {
                    if lv.readable {
                        match window::Window::from_pieces(v.disk.clone(), &lv.pieces) {
                            Ok(w) => lv_volumes.push(Volume {
                                location: Location::Lv {
                                    vg: lv.vg.clone(),
                                    lv: lv.lv.clone(),
                                },
                                disk: Arc::new(w),
                                partuuid: None,
                            }),
                            Err(e) => warnings.push(format!("LV {}/{}: {e}", lv.vg, lv.lv)),
                        }
                    }
                    lvs.push(lv);
                }
            }
            Err(lvm::LvmError::Io(e)) if fatal(&e) => return Err(e.into()),
            Err(e) => warnings.push(format!("{}: {e}", describe(&v.location))),
        }
    }
    volumes.extend(lv_volumes);

    let mut opened: Vec<Opened> = Vec::new();
    for v in volumes {
        if opened.len() >= opts.max_filesystems {
            warnings.push(format!(
                "more than {} filesystems: the rest are not opened",
                opts.max_filesystems
            ));
            break;
        }
        let len = v.disk.len();
        match fs::probe(v.disk.clone(), 0, len) {
            Ok(Some(f)) => opened.push(Opened {
                report: FilesystemReport {
                    location: v.location,
                    kind: f.kind().to_string(),
                    label: f.label(),
                    uuid: f.uuid(),
                    size: len,
                    mountpoint: None,
                },
                fs: f,
                partuuid: v.partuuid,
            }),
            Ok(None) => {}
            Err(fs::FsError::Io(e)) if fatal(&e) => return Err(e.into()),
            Err(e) => warnings.push(format!("{}: {e}", describe(&v.location))),
        }
    }

    let mut report = GuestReport {
        partition_table: table,
        lvm: lvs,
        filesystems: Vec::new(),
        root: None,
        os: None,
        cloud_init: false,
        virtio: os::Virtio::default(),
        warnings: Vec::new(),
        stats: ReadStats {
            bytes_read: 0,
            read_calls: 0,
            elapsed_ms: 0.0,
        },
    };
    if opts.detect_os {
        detect_os(&mut opened, &mut report, &mut warnings);
    }
    report.filesystems = opened.into_iter().map(|o| o.report).collect();
    report.warnings = warnings;
    report.stats = ReadStats {
        bytes_read: counter.bytes_read(),
        read_calls: counter.read_calls(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    Ok(report)
}

fn describe(l: &Location) -> String {
    match l {
        Location::Disk => "the whole disk".to_string(),
        Location::Partition { index } => format!("partition {index}"),
        Location::Lv { vg, lv } => format!("LV {vg}/{lv}"),
    }
}

/// Find the root among the opened filesystems, mount the others by the
/// root's fstab, and read the OS facts.
fn detect_os(opened: &mut [Opened], report: &mut GuestReport, warnings: &mut Vec<String>) {
    // Linux roots with an os-release come first; then any Linux-looking
    // root; then Windows.
    let mut linux: Vec<usize> = Vec::new();
    let mut windows: Vec<usize> = Vec::new();
    for (i, o) in opened.iter().enumerate() {
        if os::is_linux_root(&*o.fs) {
            linux.push(i);
        }
        match os::is_windows_root(&*o.fs) {
            Ok(true) => windows.push(i),
            Ok(false) => {}
            Err(e) => warnings.push(format!("{}: {e}", describe(&o.report.location))),
        }
    }
    if linux.len() > 1 {
        let with_release: Vec<usize> = linux
            .iter()
            .copied()
            .filter(|&i| {
                os::Guest::new(&*opened[i].fs)
                    .exists("/etc/os-release")
                    .unwrap_or(false)
            })
            .collect();
        if !with_release.is_empty() {
            linux = with_release;
        }
        if linux.len() > 1 {
            warnings.push(format!(
                "{} filesystems look like a Linux root: the first is used",
                linux.len()
            ));
        }
    }
    if let Some(&root) = linux.first() {
        detect_linux_os(opened, root, report, warnings);
    } else if let Some(&root) = windows.first() {
        detect_windows_os(opened, root, report, warnings);
    }
}

/// Which opened filesystem an fstab spec names.
fn fstab_match(spec: &str, o: &Opened) -> bool {
    let eq = |a: &Option<String>, b: &str| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b));
    if let Some(u) = spec.strip_prefix("UUID=") {
        return eq(&o.report.uuid, u.trim_matches('"'));
    }
    if let Some(l) = spec.strip_prefix("LABEL=") {
        return o.report.label.as_deref() == Some(l.trim_matches('"'));
    }
    if let Some(u) = spec.strip_prefix("PARTUUID=") {
        return eq(&o.partuuid, u.trim_matches('"'));
    }
    match &o.report.location {
        Location::Lv { vg, lv } => {
            // /dev/mapper doubles dashes inside names.
            let mapper = format!(
                "/dev/mapper/{}-{}",
                vg.replace('-', "--"),
                lv.replace('-', "--")
            );
            spec == mapper || spec == format!("/dev/{vg}/{lv}")
        }
        Location::Partition { index } => {
            let digits: String = spec
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            let known = [
                "/dev/sda",
                "/dev/vda",
                "/dev/hda",
                "/dev/xvda",
                "/dev/nvme0n1p",
            ];
            let stem = &spec[..spec.len() - digits.len()];
            !digits.is_empty()
                && known.contains(&stem)
                && digits.chars().rev().collect::<String>() == index.to_string()
        }
        Location::Disk => false,
    }
}

fn detect_linux_os(
    opened: &mut [Opened],
    root: usize,
    report: &mut GuestReport,
    warnings: &mut Vec<String>,
) {
    opened[root].report.mountpoint = Some("/".to_string());
    let fstab = os::Guest::new(&*opened[root].fs)
        .read_file("/etc/fstab", 64 << 10)
        .unwrap_or_else(|e| {
            warnings.push(format!("reading /etc/fstab: {e}"));
            None
        })
        .map(|b| os::parse_fstab(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    for (i, o) in opened.iter_mut().enumerate() {
        if i == root {
            continue;
        }
        if let Some(e) = fstab.iter().find(|e| {
            e.mountpoint.starts_with('/') && e.mountpoint != "/" && fstab_match(&e.spec, o)
        }) {
            o.report.mountpoint = Some(e.mountpoint.clone());
        }
    }
    // Not in fstab: guess /boot and /boot/efi from their content.
    for (i, o) in opened.iter_mut().enumerate() {
        if i == root || o.report.mountpoint.is_some() {
            continue;
        }
        let g = os::Guest::new(&*o.fs);
        if o.fs.kind() == "vfat" && g.is_dir("/EFI").unwrap_or(false) {
            o.report.mountpoint = Some("/boot/efi".to_string());
        } else if g
            .list("/")
            .unwrap_or_default()
            .iter()
            .any(|n| n.starts_with("vmlinuz-") || n == "grub" || n == "grub2")
        {
            o.report.mountpoint = Some("/boot".to_string());
        }
    }
    let mut g = os::Guest::new(&*opened[root].fs);
    for (i, o) in opened.iter().enumerate() {
        if let (false, Some(mp)) = (i == root, &o.report.mountpoint) {
            g.mount(mp, &*o.fs);
        }
    }
    let f = os::detect_linux(&g);
    warnings.extend(f.warnings.iter().cloned());
    let rel = f.release.clone().unwrap_or_default();
    let version = rel.precise_version.clone().or(rel.version_id.clone());
    report.root = Some(opened[root].report.location.clone());
    report.os = Some(OsReport {
        platform: "Linux".to_string(),
        os_type: f.os_type,
        major: rel.version_id.as_deref().and_then(os::release::major),
        version,
        name: rel.name,
        pretty: rel.pretty,
        id: rel.id,
        id_like: rel.id_like,
        os_name: f.os_name,
        architecture: f.architecture.map(str::to_string),
        architecture_from: f.architecture_from,
        release_file: f.release.map(|r| r.source),
        kernels: f.kernels,
        windows: None,
    });
    report.cloud_init = f.cloud_init;
    report.virtio = f.virtio;
}

fn detect_windows_os(
    opened: &mut [Opened],
    root: usize,
    report: &mut GuestReport,
    warnings: &mut Vec<String>,
) {
    opened[root].report.mountpoint = Some("C:".to_string());
    report.root = Some(opened[root].report.location.clone());
    let info = match windows::inspect(&*opened[root].fs) {
        Ok(info) => info,
        Err(e) => {
            warnings.push(format!("reading the Windows registry: {e}"));
            None
        }
    };
    let Some(w) = info else {
        report.os = Some(OsReport {
            platform: "Windows".to_string(),
            os_type: "Windows".to_string(),
            version: None,
            major: None,
            name: None,
            pretty: None,
            id: None,
            id_like: Vec::new(),
            os_name: "Windows".to_string(),
            architecture: None,
            architecture_from: None,
            release_file: None,
            kernels: Vec::new(),
            windows: None,
        });
        return;
    };
    report.cloud_init = w.cloudbase_init;
    report.virtio = os::Virtio {
        block: w.virtio_block,
        net: w.virtio_net,
        kernels: Vec::new(),
    };
    report.os = Some(OsReport {
        platform: "Windows".to_string(),
        os_type: w
            .tencent_os_type
            .clone()
            .unwrap_or_else(|| "Windows".to_string()),
        major: w.version.as_deref().and_then(os::release::major),
        version: w.version.clone(),
        name: w.product_name.clone(),
        pretty: w.product_name.as_ref().map(|p| match &w.build {
            Some(b) => format!("{p} (build {b})"),
            None => p.clone(),
        }),
        id: Some("windows".to_string()),
        id_like: Vec::new(),
        os_name: w.tencent_os_name.clone(),
        architecture: w.architecture.clone(),
        architecture_from: w.architecture_from.clone(),
        release_file: Some("/Windows/System32/config/SOFTWARE".to_string()),
        kernels: Vec::new(),
        windows: Some(w),
    });
}
