//! The inspection report: what `inspect` returns and what
//! `imagegate inspect --json` prints. Field names are a stable schema
//! (documented in the crate's README.md): add fields, never rename them.

use crate::lvm::LogicalVolume;
use crate::os::{Kernel, Virtio};
use crate::part::PartitionTable;
use serde::Serialize;

/// Where a filesystem lies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Location {
    /// The whole disk (no partition table).
    Disk,
    /// A partition, by its Linux number.
    Partition { index: u32 },
    /// A logical volume.
    Lv { vg: String, lv: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilesystemReport {
    #[serde(rename = "where")]
    pub location: Location,
    /// "ext4", "ext3", "ext2", "vfat", "xfs", "btrfs", "ntfs".
    pub kind: String,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// Size of the partition/volume holding it, in bytes.
    pub size: u64,
    /// From the root's /etc/fstab, or guessed from the content ("/boot",
    /// "/boot/efi") when fstab does not say.
    pub mountpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsReport {
    /// "Linux" or "Windows".
    pub platform: String,
    /// Tencent's OsType ("CentOS", "Ubuntu", ..., "Other Linux", or the
    /// Windows family).
    pub os_type: String,
    /// The version as the guest states it ("7", "22.04", "12", "15.5").
    pub version: Option<String>,
    /// The major version, comparable with ImportImage's OsVersion.
    pub major: Option<String>,
    /// os-release NAME.
    pub name: Option<String>,
    /// os-release PRETTY_NAME.
    pub pretty: Option<String>,
    /// os-release ID and ID_LIKE.
    pub id: Option<String>,
    pub id_like: Vec<String>,
    /// As Tencent writes it: "CentOS 7.9 64bit".
    pub os_name: String,
    /// "x86_64", "i386", "arm_64" (Tencent's names), or another machine.
    pub architecture: Option<String>,
    /// The file the architecture was read from.
    pub architecture_from: Option<String>,
    /// The file the release facts were read from.
    pub release_file: Option<String>,
    pub kernels: Vec<Kernel>,
    /// Windows only: everything the registry said (product, edition,
    /// build, cloudbase-init, the virtio drivers found).
    pub windows: Option<crate::windows::WindowsInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadStats {
    /// Bytes read from the disk by the inspection.
    pub bytes_read: u64,
    pub read_calls: u64,
    pub elapsed_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuestReport {
    pub partition_table: PartitionTable,
    pub lvm: Vec<LogicalVolume>,
    pub filesystems: Vec<FilesystemReport>,
    /// Where the root filesystem is (None: no root was recognised).
    pub root: Option<Location>,
    pub os: Option<OsReport>,
    /// Linux cloud-init, or Windows cloudbase-init.
    pub cloud_init: bool,
    pub virtio: Virtio,
    pub warnings: Vec<String>,
    pub stats: ReadStats,
}
