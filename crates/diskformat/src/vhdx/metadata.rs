//! The metadata region: its table and the items this reader knows (file
//! parameters, virtual size, sector sizes, the parent locator that refuses a
//! differencing disk); an unknown required item is refused.

use super::*;

pub(super) struct Metadata {
    pub(super) block_size: u32,
    pub(super) leave_allocated: bool,
    pub(super) has_parent: bool,
    pub(super) virtual_size: u64,
    pub(super) logical_sector: u32,
    pub(super) physical_sector: u32,
}

pub(super) fn read_metadata(
    src: &dyn ReadAt,
    region_at: u64,
    region_len: u64,
) -> Result<Metadata, FormatError> {
    // Regions are at least 1 MiB, so the 64 KiB table is inside the file.
    let mut t = vec![0u8; METADATA_TABLE_LEN];
    read(src, region_at, &mut t, "the VHDX metadata table")?;
    if &t[0..8] != b"metadata" {
        return Err(FormatError::Corrupt(
            "VHDX metadata region lacks its \"metadata\" signature".into(),
        ));
    }
    let count = usize::from(u16_le(&t, 10)?);
    if count > MAX_ENTRIES {
        return Err(FormatError::Corrupt(format!(
            "VHDX metadata table claims {count} entries (at most {MAX_ENTRIES})"
        )));
    }
    let mut seen: Vec<([u8; 16], bool)> = Vec::with_capacity(count);
    let mut values: [Option<Vec<u8>>; 5] = Default::default();
    let known = [
        (FILE_PARAMETERS, 8usize, "file parameters"),
        (VIRTUAL_DISK_SIZE, 8, "virtual disk size"),
        (LOGICAL_SECTOR, 4, "logical sector size"),
        (PHYSICAL_SECTOR, 4, "physical sector size"),
        (PAGE_83, 16, "page 83 data"),
    ];
    for e in t[32..32 + 32 * count].chunks_exact(32) {
        let id: [u8; 16] = e[0..16].try_into().unwrap_or_default();
        let at = u64::from(u32_le(e, 16)?);
        let len = u64::from(u32_le(e, 20)?);
        let flags = u32_le(e, 24)?;
        let is_user = flags & 1 != 0;
        let required = flags & 4 != 0;
        if seen.contains(&(id, is_user)) {
            return Err(FormatError::Corrupt(format!(
                "VHDX metadata item {} is listed twice",
                guid_string(&id)
            )));
        }
        seen.push((id, is_user));
        if len != 0 && (at < KIB64 || at.checked_add(len).is_none_or(|end| end > region_len)) {
            return Err(FormatError::Corrupt(format!(
                "VHDX metadata item {} ({len} bytes at {at}) lies outside its region",
                guid_string(&id)
            )));
        }
        if id == PARENT_LOCATOR && !is_user {
            return Err(FormatError::ExternalReference(
                "VHDX parent locator: a differencing disk's parent is never opened".into(),
            ));
        }
        let Some(k) = known.iter().position(|k| k.0 == id && !is_user) else {
            if required {
                return Err(FormatError::Unsupported(format!(
                    "VHDX metadata item {} is required but unknown",
                    guid_string(&id)
                )));
            }
            continue;
        };
        let (_, want, name) = known[k];
        if len != want as u64 {
            return Err(FormatError::Corrupt(format!(
                "VHDX {name} metadata is {len} bytes, expected {want}"
            )));
        }
        let mut v = vec![0u8; want];
        read(src, region_at + at, &mut v, "VHDX metadata")?;
        values[k] = Some(v);
    }
    let [Some(fp), Some(vs), Some(ls), Some(ps), Some(_page83)] = values else {
        return Err(FormatError::Corrupt(
            "VHDX metadata lacks a required item (file parameters, virtual disk size, sector sizes, page 83 data)".into(),
        ));
    };
    let block_size = u32_le(&fp, 0)?;
    let flags = u32_le(&fp, 4)?;
    if !block_size.is_power_of_two() || !(MIB..=256 * MIB).contains(&u64::from(block_size)) {
        return Err(FormatError::Corrupt(format!(
            "VHDX block size {block_size} is not a power of two between 1 MiB and 256 MiB"
        )));
    }
    let logical_sector = u32_le(&ls, 0)?;
    let physical_sector = u32_le(&ps, 0)?;
    for (what, v) in [("logical", logical_sector), ("physical", physical_sector)] {
        if v != 512 && v != 4096 {
            return Err(FormatError::Corrupt(format!(
                "VHDX {what} sector size {v} (512 or 4096 expected)"
            )));
        }
    }
    Ok(Metadata {
        block_size,
        leave_allocated: flags & 1 != 0,
        has_parent: flags & 2 != 0,
        virtual_size: u64_le(&vs, 0)?,
        logical_sector,
        physical_sector,
    })
}
