//! The MBR: four primary entries in sector 0, and a chain of extended boot
//! records for logical partitions. The chain is followed with a visited set
//! and a cap, so a hostile chain that loops or never ends stops with a
//! warning instead of a hang.

use super::{mbr_type_name, PartError, Partition, PartitionTable, TableKind, MAX_PARTITIONS};
use diskformat::bytes::{u32_le, u8_at, Truncated};
use diskformat::ReadAt;
use std::collections::HashSet;

pub(super) struct Entry {
    pub status: u8,
    pub ptype: u8,
    pub lba: u32,
    pub sectors: u32,
}

pub(super) struct Mbr {
    pub entries: Vec<(u32, Entry)>,
    pub protective: bool,
}

fn entry(sector: &[u8; 512], i: usize) -> Result<Entry, Truncated> {
    let o = 446 + 16 * i;
    Ok(Entry {
        status: u8_at(sector, o)?,
        ptype: u8_at(sector, o + 4)?,
        lba: u32_le(sector, o + 8)?,
        sectors: u32_le(sector, o + 12)?,
    })
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// Sector 0 as an MBR, or None if it is not one. The 0x55AA signature alone
/// is not enough: a FAT boot sector (a bare EFI partition image) has it too,
/// so every entry must also be plausible (status 0x00/0x80, non-empty
/// entries starting after sector 0).
pub(super) fn parse_sector0(sector: &[u8; 512]) -> Result<Option<Mbr>, Truncated> {
    if sector[510] != 0x55 || sector[511] != 0xaa {
        return Ok(None);
    }
    let mut entries = Vec::new();
    let mut protective = false;
    for i in 0..4 {
        let e = entry(sector, i)?;
        if e.status != 0 && e.status != 0x80 {
            return Ok(None);
        }
        if e.ptype == 0 {
            continue;
        }
        if e.lba == 0 || e.sectors == 0 {
            return Ok(None);
        }
        if e.ptype == 0xee {
            protective = true;
        }
        entries.push((i as u32 + 1, e));
    }
    Ok(Some(Mbr {
        entries,
        protective,
    }))
}

pub(super) fn read_table(
    disk: &dyn ReadAt,
    sector0: &[u8; 512],
    mbr: Mbr,
) -> Result<PartitionTable, PartError> {
    let disk_sectors = disk.len() / 512;
    let mut warnings = Vec::new();
    let mut partitions = Vec::new();
    let mut extended_start: Option<u64> = None;

    for (index, e) in &mbr.entries {
        let start = u64::from(e.lba);
        let size = u64::from(e.sectors);
        if start + size > disk_sectors {
            warnings.push(format!(
                "partition {index} ends at sector {} beyond the disk ({} sectors)",
                start + size,
                disk_sectors
            ));
        }
        let ext = is_extended(e.ptype);
        if ext {
            if extended_start.is_some() {
                warnings.push(format!("second extended partition {index} ignored"));
            } else {
                extended_start = Some(start);
            }
        }
        partitions.push(Partition {
            index: *index,
            start: start * 512,
            size: size * 512,
            type_id: format!("0x{:02x}", e.ptype),
            type_name: mbr_type_name(e.ptype),
            bootable: e.status == 0x80,
            name: None,
            guid: None,
            logical: false,
            extended: ext,
        });
    }

    if let Some(ext_start) = extended_start {
        read_logicals(disk, ext_start, &mut partitions, &mut warnings)?;
    }

    Ok(PartitionTable {
        kind: TableKind::Mbr,
        sector_size: 512,
        gpt_header: None,
        disk_id: Some(format!("{:08x}", u32_le(sector0, 440)?)),
        partitions,
        warnings,
    })
}

/// Walk the EBR chain. Each EBR's first entry is a logical partition
/// relative to that EBR; its second entry points to the next EBR relative
/// to the start of the extended partition.
fn read_logicals(
    disk: &dyn ReadAt,
    ext_start: u64,
    partitions: &mut Vec<Partition>,
    warnings: &mut Vec<String>,
) -> Result<(), PartError> {
    let disk_sectors = disk.len() / 512;
    let mut visited = HashSet::new();
    let mut ebr = ext_start;
    let mut index = 5u32;
    loop {
        if partitions.len() >= MAX_PARTITIONS {
            warnings.push(format!(
                "more than {MAX_PARTITIONS} partitions: the rest of the logical chain is ignored"
            ));
            return Ok(());
        }
        if !visited.insert(ebr) {
            warnings.push(format!(
                "the logical partition chain loops back to sector {ebr}: stopped"
            ));
            return Ok(());
        }
        if ebr >= disk_sectors {
            warnings.push(format!(
                "extended boot record at sector {ebr} is beyond the disk"
            ));
            return Ok(());
        }
        let mut sector = [0u8; 512];
        disk.read_at(ebr * 512, &mut sector)?;
        if sector[510] != 0x55 || sector[511] != 0xaa {
            warnings.push(format!(
                "extended boot record at sector {ebr} has no signature: chain stopped"
            ));
            return Ok(());
        }
        let first = entry(&sector, 0)?;
        if first.ptype != 0 && first.sectors != 0 {
            let start = ebr + u64::from(first.lba);
            let size = u64::from(first.sectors);
            if start + size > disk_sectors {
                warnings.push(format!("logical partition {index} ends beyond the disk"));
            }
            partitions.push(Partition {
                index,
                start: start * 512,
                size: size * 512,
                type_id: format!("0x{:02x}", first.ptype),
                type_name: mbr_type_name(first.ptype),
                bootable: first.status == 0x80,
                name: None,
                guid: None,
                logical: true,
                extended: false,
            });
            index += 1;
        }
        let next = entry(&sector, 1)?;
        if next.ptype == 0 || !is_extended(next.ptype) || next.lba == 0 {
            return Ok(());
        }
        ebr = ext_start + u64::from(next.lba);
    }
}
