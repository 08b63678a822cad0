//! GPT: the primary header at LBA 1, its entry array, and the backup header
//! at the last LBA when the primary is damaged. Both the header and the
//! entry array are checked by CRC32; sizes and counts are bounded before
//! anything is allocated from them.

use super::{
    gpt_type_name, GptHeader, PartError, Partition, PartitionTable, TableKind, MAX_PARTITIONS,
};
use diskformat::bytes::{u16_le, u32_le, u64_le};
use diskformat::ReadAt;

/// The entry array may not exceed this: the spec's minimum is 16 KiB and
/// every real tool writes 16 KiB (128 × 128 bytes).
const MAX_ARRAY_BYTES: u64 = 1 << 20;

/// A GUID as text, with the first three fields little-endian (as GPT stores
/// them): "0FC63DAF-8483-4772-8E79-3D69D8477DE4".
pub fn guid_to_string(b: &[u8]) -> String {
    if b.len() < 16 {
        return String::new();
    }
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
        b[15]
    )
}

struct Header {
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: String,
}

/// Parse and check the header at `lba`. Err(reason) when it is not a valid
/// GPT header.
fn header(disk: &dyn ReadAt, ss: u32, lba: u64) -> Result<Result<Header, String>, PartError> {
    let off = match lba.checked_mul(u64::from(ss)) {
        Some(o)
            if o.checked_add(u64::from(ss))
                .is_some_and(|e| e <= disk.len()) =>
        {
            o
        }
        _ => return Ok(Err(format!("header LBA {lba} is outside the disk"))),
    };
    let mut buf = vec![0u8; ss as usize];
    disk.read_at(off, &mut buf)?;
    if &buf[0..8] != b"EFI PART" {
        return Ok(Err(format!("no GPT signature at LBA {lba}")));
    }
    let hsize = u32_le(&buf, 12)? as usize;
    if hsize < 92 || hsize > ss as usize {
        return Ok(Err(format!("header size {hsize} out of range")));
    }
    let stored_crc = u32_le(&buf, 16)?;
    let mut h = buf[..hsize].to_vec();
    h[16..20].fill(0);
    if crc32fast::hash(&h) != stored_crc {
        return Ok(Err(format!("header CRC mismatch at LBA {lba}")));
    }
    let my_lba = u64_le(&buf, 24)?;
    if my_lba != lba {
        return Ok(Err(format!(
            "header at LBA {lba} says it is at LBA {my_lba}"
        )));
    }
    let num_entries = u32_le(&buf, 80)?;
    let entry_size = u32_le(&buf, 84)?;
    if entry_size < 128 || !entry_size.is_multiple_of(8) || entry_size > 4096 {
        return Ok(Err(format!("entry size {entry_size} out of range")));
    }
    if u64::from(num_entries) * u64::from(entry_size) > MAX_ARRAY_BYTES {
        return Ok(Err(format!(
            "entry array of {num_entries} × {entry_size} bytes is larger than {MAX_ARRAY_BYTES}"
        )));
    }
    Ok(Ok(Header {
        alternate_lba: u64_le(&buf, 32)?,
        first_usable: u64_le(&buf, 40)?,
        last_usable: u64_le(&buf, 48)?,
        disk_guid: guid_to_string(&buf[56..72]),
        entries_lba: u64_le(&buf, 72)?,
        num_entries,
        entry_size,
        entries_crc: u32_le(&buf, 88)?,
    }))
}

/// The header's entry array, or Err(reason) when it does not match its CRC.
fn entries(disk: &dyn ReadAt, ss: u32, h: &Header) -> Result<Result<Vec<u8>, String>, PartError> {
    let bytes = u64::from(h.num_entries) * u64::from(h.entry_size);
    let off = match h.entries_lba.checked_mul(u64::from(ss)) {
        Some(o) if o.checked_add(bytes).is_some_and(|e| e <= disk.len()) => o,
        _ => return Ok(Err("entry array is outside the disk".to_string())),
    };
    let mut buf = vec![0u8; bytes as usize];
    disk.read_at(off, &mut buf)?;
    if crc32fast::hash(&buf) != h.entries_crc {
        return Ok(Err("entry array CRC mismatch".to_string()));
    }
    Ok(Ok(buf))
}

/// The GPT of `disk` with sector size `ss`, or None if neither header is
/// valid. Reasons for rejecting headers go into `notes` for the caller.
pub(super) fn read(
    disk: &dyn ReadAt,
    ss: u32,
    notes: &mut Vec<String>,
) -> Result<Option<PartitionTable>, PartError> {
    let sectors = disk.len() / u64::from(ss);
    if sectors < 3 {
        return Ok(None);
    }
    let mut warnings = Vec::new();
    let mut alternate = sectors - 1;
    let primary = header(disk, ss, 1)?;
    let mut chosen = None;
    match primary {
        Ok(h) => {
            if h.alternate_lba != 0 && h.alternate_lba < sectors {
                alternate = h.alternate_lba;
            }
            match entries(disk, ss, &h)? {
                Ok(arr) => chosen = Some((GptHeader::Primary, h, arr)),
                Err(why) => warnings.push(format!("primary GPT: {why}")),
            }
        }
        Err(why) => {
            // No signature at all with this sector size is simply "not GPT
            // here"; anything else is damage worth reporting.
            if !why.starts_with("no GPT signature") {
                warnings.push(format!("primary GPT: {why}"));
            }
        }
    }
    if chosen.is_none() {
        let mut tried = vec![alternate];
        if alternate != sectors - 1 {
            tried.push(sectors - 1);
        }
        for lba in tried {
            match header(disk, ss, lba)? {
                Ok(h) => match entries(disk, ss, &h)? {
                    Ok(arr) => {
                        chosen = Some((GptHeader::Backup, h, arr));
                        break;
                    }
                    Err(why) => warnings.push(format!("backup GPT: {why}")),
                },
                Err(why) => {
                    if !why.starts_with("no GPT signature") || !warnings.is_empty() {
                        warnings.push(format!("backup GPT: {why}"));
                    }
                }
            }
        }
    }
    let Some((which, h, arr)) = chosen else {
        notes.extend(warnings.iter().map(|w| format!("{ss}-byte sectors: {w}")));
        return Ok(None);
    };
    if which == GptHeader::Backup {
        warnings.push("the primary GPT is damaged: the backup header was used".to_string());
    }

    let mut partitions = Vec::new();
    for (i, e) in arr.chunks_exact(h.entry_size as usize).enumerate() {
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        if partitions.len() >= MAX_PARTITIONS {
            warnings.push(format!(
                "more than {MAX_PARTITIONS} partitions: the rest are ignored"
            ));
            break;
        }
        let type_guid = guid_to_string(&e[0..16]);
        let first = u64_le(e, 32)?;
        let last = u64_le(e, 40)?;
        let attrs = u64_le(e, 48)?;
        let index = i as u32 + 1;
        if last < first || first < h.first_usable || last > h.last_usable || last >= sectors {
            warnings.push(format!(
                "partition {index}: LBA {first}..={last} is outside the usable area: ignored"
            ));
            continue;
        }
        let name_units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map_while(|c| u16_le(c, 0).ok().filter(|&u| u != 0))
            .collect();
        let name = String::from_utf16_lossy(&name_units);
        partitions.push(Partition {
            index,
            start: first * u64::from(ss),
            size: (last - first + 1) * u64::from(ss),
            type_name: gpt_type_name(&type_guid),
            type_id: type_guid,
            bootable: attrs & (1 << 2) != 0,
            name: (!name.is_empty()).then_some(name),
            guid: Some(guid_to_string(&e[16..32])),
            logical: false,
            extended: false,
        });
    }
    Ok(Some(PartitionTable {
        kind: TableKind::Gpt,
        sector_size: ss,
        gpt_header: Some(which),
        disk_id: Some(h.disk_guid),
        partitions,
        warnings,
    }))
}
