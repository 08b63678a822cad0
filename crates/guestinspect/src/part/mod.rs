//! Partition tables: MBR (with the extended/logical chain), GPT (checked by
//! CRC, with the backup header when the primary is damaged), or none (a bare
//! filesystem at offset 0).
//!
//! [`detect`] never trusts a count or an offset without a bound: the logical
//! chain is capped and loop-checked, GPT entry arrays are size-limited before
//! they are read, and every partition must lie inside the disk.

mod gpt;
mod mbr;

use diskformat::ReadAt;
use serde::Serialize;

pub use gpt::guid_to_string;

/// Partitions beyond this many (primary + logical, or GPT entries in use)
/// are ignored with a warning: real disks have a handful.
pub const MAX_PARTITIONS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Mbr,
    Gpt,
    None,
}

/// Which GPT header the partitions were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GptHeader {
    Primary,
    Backup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// Linux numbering: MBR primaries 1–4, logicals from 5; GPT entry index + 1.
    pub index: u32,
    /// Byte offset on the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// MBR type as "0x83", or the GPT type GUID in upper case.
    pub type_id: String,
    /// A short name for well-known types ("linux", "lvm", "efi", "swap",
    /// "ntfs", "fat32", "extended", "bios-boot", ...).
    pub type_name: Option<&'static str>,
    /// MBR active flag; GPT "legacy BIOS bootable" attribute (bit 2).
    pub bootable: bool,
    /// GPT partition name.
    pub name: Option<String>,
    /// GPT unique partition GUID.
    pub guid: Option<String>,
    /// An MBR logical partition (inside the extended one).
    pub logical: bool,
    /// An MBR extended container: holds logicals, not a filesystem.
    pub extended: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionTable {
    pub kind: TableKind,
    /// Sector size the table was found with (512 or 4096).
    pub sector_size: u32,
    /// GPT only: which header was used.
    pub gpt_header: Option<GptHeader>,
    /// GPT disk GUID, or the MBR disk signature as 8 hex digits.
    pub disk_id: Option<String>,
    pub partitions: Vec<Partition>,
    /// Things that were wrong but did not stop reading (damaged primary
    /// GPT, entries outside the disk, a looping logical chain...).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("I/O error reading the partition table: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt partition table: {0}")]
    Corrupt(String),
}

impl From<diskformat::bytes::Truncated> for PartError {
    fn from(t: diskformat::bytes::Truncated) -> Self {
        PartError::Corrupt(t.to_string())
    }
}

/// Read the partition table of `disk`.
///
/// A disk with neither a valid MBR nor a GPT is `TableKind::None`: the
/// caller then probes for a bare filesystem at offset 0.
pub fn detect(disk: &dyn ReadAt) -> Result<PartitionTable, PartError> {
    if disk.len() < 512 {
        return Ok(none_table());
    }
    let mut sector0 = [0u8; 512];
    disk.read_at(0, &mut sector0)?;
    let mbr = mbr::parse_sector0(&sector0)?;

    // A protective (0xEE) entry, or a GPT header without one (some tools
    // write none), means GPT. GPT wins over a hybrid MBR.
    let protective = mbr.as_ref().is_some_and(|m| m.protective);
    let mut warnings = Vec::new();
    for ss in [512u32, 4096] {
        match gpt::read(disk, ss, &mut warnings)? {
            Some(mut t) => {
                if !protective {
                    t.warnings
                        .push("GPT without a protective MBR entry".to_string());
                }
                return Ok(t);
            }
            None => continue,
        }
    }
    if protective {
        return Err(PartError::Corrupt(format!(
            "protective MBR but neither GPT header is valid ({})",
            warnings.join("; ")
        )));
    }
    match mbr {
        Some(m) if !m.entries.is_empty() => mbr::read_table(disk, &sector0, m),
        _ => Ok(none_table()),
    }
}

fn none_table() -> PartitionTable {
    PartitionTable {
        kind: TableKind::None,
        sector_size: 512,
        gpt_header: None,
        disk_id: None,
        partitions: Vec::new(),
        warnings: Vec::new(),
    }
}

pub(crate) fn mbr_type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0x83 => "linux",
        0x8e => "lvm",
        0x82 => "swap",
        0xfd => "raid",
        0x07 => "ntfs",
        0x0b | 0x0c => "fat32",
        0x01 | 0x04 | 0x06 | 0x0e => "fat",
        0xef => "efi",
        0x05 | 0x0f | 0x85 => "extended",
        0xee => "gpt-protective",
        0xa5 => "freebsd",
        0x27 => "windows-recovery",
        _ => return None,
    })
}

pub(crate) fn gpt_type_name(guid: &str) -> Option<&'static str> {
    Some(match guid {
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "linux",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "lvm",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "efi",
        "21686148-6449-6E6F-744E-656564454649" => "bios-boot",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "swap",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "microsoft-basic-data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "microsoft-reserved",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "windows-recovery",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "linux-root-x86-64",
        "44479540-F297-41B2-9AF7-D131D5F0458A" => "linux-root-x86",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" => "linux-root-arm64",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "linux-home",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "linux-xbootldr",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "raid",
        "516E7CB6-6ECF-11D6-8FF8-00022D09712B" => "freebsd",
        "83BD6B9D-7F41-11DC-BE0B-001560B84F0F" => "freebsd-boot",
        "516E7CBA-6ECF-11D6-8FF8-00022D09712B" => "freebsd-zfs",
        "516E7CB6-6ECF-11D6-8FF8-00022D09712C" => "freebsd-ufs",
        _ => return None,
    })
}
