//! Tencent's import checks, judged from the guest inspection report: a
//! partition table or a bare filesystem, a root filesystem, the declared OS
//! and architecture, GPT only with UEFI, virtio, cloud-init. `Force` skips
//! the cloud-init requirement only, as Tencent documents for forced imports.

use guestinspect::part::TableKind;
use guestinspect::{GuestReport, OsReport};

use super::failure::ImportFailure;
use crate::domain::{FailureCode, OsPlatform};

/// What ImportImage declared about the system disk.
#[derive(Debug, Clone)]
pub struct Declared<'a> {
    pub os_type: &'a str,
    pub os_version: &'a str,
    /// `x86_64`, `i386` or `arm_64`.
    pub architecture: &'a str,
    /// `Legacy BIOS` or `UEFI`.
    pub boot_mode: &'a str,
    pub force: bool,
}

/// Facts kept whatever the outcome (DescribeImages fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFacts {
    pub platform: Option<String>,
    pub os_name: Option<String>,
    pub is_support_cloudinit: bool,
}

/// Tencent's `Platform` is the distribution ("CentOS", "Ubuntu") or "Windows".
pub fn facts(report: &GuestReport) -> GuestFacts {
    GuestFacts {
        platform: report
            .os
            .as_ref()
            .map(|o| OsPlatform::of_report(&o.platform).image_platform(&o.os_type)),
        os_name: report.os.as_ref().map(|o| o.os_name.clone()),
        is_support_cloudinit: report.cloud_init,
    }
}

/// Names that mean the same family in DescribeImportImageOs and in the
/// detector (Tencent lists "Redhat"; os-release says "rhel").
fn family(name: &str) -> String {
    let n = name
        .trim()
        .to_ascii_lowercase()
        .replace([' ', '-', '_'], "");
    match n.as_str() {
        "rhel" | "redhat" | "redhatenterpriselinux" => "redhat".into(),
        "opensuse" | "opensuseleap" | "opensusetumbleweed" => "opensuse".into(),
        "sles" | "suse" | "suselinuxenterpriseserver" => "suse".into(),
        "rocky" | "rockylinux" => "rocky".into(),
        "alma" | "almalinux" => "almalinux".into(),
        "centosstream" => "centosstream".into(),
        other => other.to_string(),
    }
}

fn major(v: &str) -> &str {
    v.trim().split(['.', ' ']).next().unwrap_or("")
}

/// The checks of a non-forced import (and of a forced one, less cloud-init).
pub fn check(report: &GuestReport, d: &Declared) -> Result<(), ImportFailure> {
    let os = recognised_os(report)?;
    let platform = same_system(os, d)?;
    bootable_on_cvm(report, d, platform)
}

/// A partition table or filesystem, a root filesystem, an OS on it.
fn recognised_os(report: &GuestReport) -> Result<&OsReport, ImportFailure> {
    let table = report.partition_table.kind;
    if table == TableKind::None && report.filesystems.is_empty() {
        return Err(ImportFailure::new(
            FailureCode::PartitionNotPresent,
            "The disk has no partition table and no filesystem at its start. The image may be \
             incomplete, encrypted, or not a disk at all: export the whole system disk (including its \
             MBR) and import it again.",
        ));
    }
    let Some(_root) = &report.root else {
        let found: Vec<String> = report
            .filesystems
            .iter()
            .map(|f| match &f.mountpoint {
                Some(m) => format!("{} ({m})", f.kind),
                None => f.kind.clone(),
            })
            .collect();
        return Err(ImportFailure::new(
            FailureCode::RootPartitionNotFound,
            format!(
                "No root filesystem was found (filesystems seen: {}). An installer, a data disk or a \
                 lone /boot partition was uploaded instead of the system disk; import the system disk, \
                 or import this one as a data disk.",
                if found.is_empty() { "none".to_string() } else { found.join(", ") }
            ),
        ));
    };
    let Some(os) = &report.os else {
        return Err(ImportFailure::new(
            FailureCode::RootPartitionNotFound,
            "A root filesystem was found but no operating system could be recognised on it \
             (no /etc/os-release or release file, no Windows registry).",
        ));
    };
    Ok(os)
}

/// The OS family, major version and architecture the import declared;
/// the detected platform.
fn same_system(os: &OsReport, d: &Declared) -> Result<OsPlatform, ImportFailure> {
    let platform = OsPlatform::of_report(&os.platform);
    let declared_other = family(d.os_type) == "otherlinux";
    let same_family = family(d.os_type) == family(&os.os_type)
        || (declared_other && platform == OsPlatform::Linux);
    let detected_major = os.major.as_deref().unwrap_or("");
    let same_version = declared_other
        || platform == OsPlatform::Windows
        || major(d.os_version) == major(detected_major);
    if !same_family || !same_version {
        return Err(ImportFailure::new(
            FailureCode::OsMismatch,
            format!(
                "The image contains {} {} ({}), but ImportImage declared {} {}. Import it again with \
                 OsType={} OsVersion={}, or check that the right disk was uploaded.",
                os.os_type,
                os.version.as_deref().unwrap_or("(unknown version)"),
                os.release_file.as_deref().unwrap_or("release facts"),
                d.os_type,
                d.os_version,
                os.os_type,
                if detected_major.is_empty() { "?" } else { detected_major },
            ),
        ));
    }
    if let Some(arch) = &os.architecture {
        if arch != d.architecture {
            return Err(ImportFailure::new(
                FailureCode::ArchitectureMismatch,
                format!(
                    "The system's binaries are {arch} ({}), but ImportImage declared Architecture={}. \
                     Import it again with Architecture={arch}.",
                    os.architecture_from.as_deref().unwrap_or("ELF/PE headers"),
                    d.architecture
                ),
            ));
        }
    }
    Ok(platform)
}

/// Boot mode for the partition table, virtio drivers, cloud-init.
fn bootable_on_cvm(
    report: &GuestReport,
    d: &Declared,
    platform: OsPlatform,
) -> Result<(), ImportFailure> {
    let table = report.partition_table.kind;
    if table == TableKind::Gpt && !d.boot_mode.eq_ignore_ascii_case("UEFI") {
        return Err(ImportFailure::new(
            FailureCode::GptRequiresUefi,
            "The disk has a GPT partition table, which Tencent boots only in UEFI mode, but the \
             import asked for BootMode=Legacy BIOS. Import it with BootMode=UEFI, or convert the \
             disk to an MBR partition table.",
        ));
    }
    if !report.virtio.block || !report.virtio.net {
        let missing = match (report.virtio.block, report.virtio.net) {
            (false, false) => "virtio block and network drivers",
            (false, true) => "the virtio block driver (virtio_blk / viostor)",
            _ => "the virtio network driver (virtio_net / netkvm)",
        };
        return Err(ImportFailure::new(
            FailureCode::VirtioNotInstall,
            format!(
                "The image has no {missing}. CVM disks and NICs are virtio devices: install the \
                 drivers (Linux: a kernel with virtio_blk and virtio_net, in the initramfs; Windows: \
                 Tencent's virtio package) and export the image again."
            ),
        ));
    }
    if !report.cloud_init && !d.force {
        return Err(ImportFailure::new(
            FailureCode::CloudInitNotInstalled,
            if platform == OsPlatform::Windows {
                "The image has no cloudbase-init. Install it before exporting the image, or import \
                 with Force=true (then Tencent does no guest initialisation: see the README)."
            } else {
                "The image has no cloud-init. Install cloud-init before exporting the image, or \
                 import with Force=true (then Tencent does no guest initialisation: see the README)."
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_match_across_spellings() {
        assert_eq!(family("Redhat"), family("rhel"));
        assert_eq!(family("OpenSUSE"), family("opensuse-leap"));
        assert_eq!(family("Other Linux"), "otherlinux");
        assert_ne!(family("CentOS"), family("Rocky"));
    }

    #[test]
    fn majors_compare_leading_numbers() {
        assert_eq!(major("7.9"), "7");
        assert_eq!(major("22.04"), "22");
        assert_eq!(major("12"), "12");
    }
}
