//! LVM2 physical volumes: the label, the PV header, the metadata area and
//! its text VG config. Linear logical volumes whose extents all lie on this
//! PV become [`Piece`] lists, to be read as a [`crate::window::Window`];
//! anything else (striped over several PVs, thin, RAID, mirror, a PV that is
//! not this disk) is reported as unreadable, never guessed at.

pub mod text;

use crate::window::Piece;
use diskformat::bytes::{u32_le, u64_le};
use diskformat::ReadAt;
use serde::Serialize;
use text::{Section, Value};

/// Metadata text larger than this is refused (LVM's default area is 1 MiB).
const MAX_METADATA: u64 = 4 << 20;
/// Logical volumes and segments beyond these counts are refused.
const MAX_LVS: usize = 1024;
const MAX_SEGMENTS: i64 = 1024;

const LVM_CRC_INIT: u32 = 0xf597_a6cf;
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";

#[derive(Debug, thiserror::Error)]
pub enum LvmError {
    #[error("I/O error reading LVM metadata: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt LVM metadata: {0}")]
    Corrupt(String),
}

impl From<diskformat::bytes::Truncated> for LvmError {
    fn from(t: diskformat::bytes::Truncated) -> Self {
        LvmError::Corrupt(t.to_string())
    }
}

/// LVM's checksum: CRC-32 (reflected 0xEDB88320) seeded with 0xf597a6cf and
/// without the final inversion. crc32fast inverts on entry and exit, so the
/// seed and the result are inverted around it.
pub fn lvm_crc(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!LVM_CRC_INIT);
    h.update(data);
    !h.finalize()
}

/// A logical volume as found in the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogicalVolume {
    pub vg: String,
    pub lv: String,
    /// Size in bytes (extent count × extent size).
    pub size: u64,
    pub segments: u32,
    /// "linear", "striped", "thin", "raid1", "mirror", ... (LVM's segment
    /// type; "linear" for striped with one stripe).
    pub segment_type: String,
    /// Whether its bytes can be read from this disk.
    pub readable: bool,
    /// Why not, when not readable.
    pub reason: Option<String>,
    /// The LV's bytes as ranges of the PV's container (partition or disk),
    /// in LV order. Empty when not readable.
    #[serde(skip)]
    pub pieces: Vec<Piece>,
}

/// What a PV says about itself and its VG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalVolume {
    pub pv_uuid: String,
    pub vg: Option<String>,
    /// Extent size in bytes.
    pub extent_size: u64,
    pub lvs: Vec<LogicalVolume>,
}

/// Find the PV label in the first four sectors. None when `disk` is not a PV.
pub fn is_pv(disk: &dyn ReadAt) -> Result<Option<(u64, Vec<u8>)>, LvmError> {
    if disk.len() < 2048 {
        return Ok(None);
    }
    let mut buf = [0u8; 2048];
    disk.read_at(0, &mut buf)?;
    for s in 0..4u64 {
        let sec = &buf[s as usize * 512..(s as usize + 1) * 512];
        if &sec[0..8] == b"LABELONE" && &sec[24..32] == b"LVM2 001" {
            return Ok(Some((s, sec.to_vec())));
        }
    }
    Ok(None)
}

/// Read the PV on `disk` (a partition or a whole disk). Ok(None) when it is
/// not a PV.
pub fn read_pv(disk: &dyn ReadAt) -> Result<Option<PhysicalVolume>, LvmError> {
    let Some((sector, label)) = is_pv(disk)? else {
        return Ok(None);
    };
    let claimed = u64_le(&label, 8)?;
    if claimed != sector {
        return Err(LvmError::Corrupt(format!(
            "label in sector {sector} claims sector {claimed}"
        )));
    }
    if lvm_crc(&label[20..512]) != u32_le(&label, 16)? {
        return Err(LvmError::Corrupt("label checksum mismatch".into()));
    }
    let hdr = u32_le(&label, 20)? as usize;
    // pv_header: uuid[32], device_size u64, then disk_locn lists.
    if !(32..=512 - 48).contains(&hdr) {
        return Err(LvmError::Corrupt(format!(
            "PV header offset {hdr} out of range"
        )));
    }
    let pv_uuid = String::from_utf8_lossy(&label[hdr..hdr + 32]).into_owned();
    let mut pos = hdr + 40;
    // Data areas, then metadata areas; each list ends with a zero entry.
    let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for list in lists.iter_mut() {
        loop {
            if pos + 16 > 512 {
                return Err(LvmError::Corrupt(
                    "PV header area lists overrun the label sector".into(),
                ));
            }
            let off = u64_le(&label, pos)?;
            let size = u64_le(&label, pos + 8)?;
            pos += 16;
            if off == 0 {
                break;
            }
            list.push((off, size));
        }
    }
    let mdas = &lists[1];
    if mdas.is_empty() {
        return Ok(Some(PhysicalVolume {
            pv_uuid,
            vg: None,
            extent_size: 0,
            lvs: Vec::new(),
        }));
    }
    let mut last_err = None;
    for &(off, size) in mdas {
        match read_metadata(disk, off, size) {
            Ok(text) => return interpret(&text, pv_uuid).map(Some),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| LvmError::Corrupt("no metadata area".into())))
}

/// The current metadata text of the area at `off` (size `size`): the mda
/// header's first raw location, possibly wrapping round the circular buffer
/// that starts after the 512-byte header.
fn read_metadata(disk: &dyn ReadAt, off: u64, size: u64) -> Result<Vec<u8>, LvmError> {
    if size < 1024 || off.checked_add(size).is_none_or(|e| e > disk.len()) {
        return Err(LvmError::Corrupt(format!(
            "metadata area {off}+{size} does not fit the device"
        )));
    }
    let mut h = [0u8; 512];
    disk.read_at(off, &mut h)?;
    if &h[4..20] != MDA_MAGIC {
        return Err(LvmError::Corrupt(
            "metadata area header has no magic".into(),
        ));
    }
    if lvm_crc(&h[4..512]) != u32_le(&h, 0)? {
        return Err(LvmError::Corrupt(
            "metadata area header checksum mismatch".into(),
        ));
    }
    let rl_off = u64_le(&h, 40)?;
    let rl_size = u64_le(&h, 48)?;
    let rl_crc = u32_le(&h, 56)?;
    if rl_off == 0 || rl_size == 0 {
        return Err(LvmError::Corrupt("metadata area holds no metadata".into()));
    }
    if rl_size > MAX_METADATA || rl_size > size - 512 {
        return Err(LvmError::Corrupt(format!(
            "metadata of {rl_size} bytes is too large"
        )));
    }
    if rl_off < 512 || rl_off >= size {
        return Err(LvmError::Corrupt(format!(
            "metadata offset {rl_off} outside its area"
        )));
    }
    let mut text = vec![0u8; rl_size as usize];
    let first = (size - rl_off).min(rl_size);
    disk.read_at(off + rl_off, &mut text[..first as usize])?;
    if first < rl_size {
        disk.read_at(off + 512, &mut text[first as usize..])?;
    }
    if lvm_crc(&text) != rl_crc {
        return Err(LvmError::Corrupt("metadata text checksum mismatch".into()));
    }
    // The text is NUL-terminated inside its recorded size.
    if let Some(nul) = text.iter().position(|&b| b == 0) {
        text.truncate(nul);
    }
    Ok(text)
}

fn undash(s: &str) -> String {
    s.chars().filter(|&c| c != '-').collect()
}

fn nonneg(sec: &Section, key: &str, what: &str) -> Result<u64, LvmError> {
    match sec.int(key) {
        Some(v) if v >= 0 => Ok(v as u64),
        Some(v) => Err(LvmError::Corrupt(format!(
            "{what}: {key} = {v} is negative"
        ))),
        None => Err(LvmError::Corrupt(format!("{what}: {key} missing"))),
    }
}

/// Turn the VG config into logical volumes on this PV.
fn interpret(text: &[u8], pv_uuid: String) -> Result<PhysicalVolume, LvmError> {
    let top = text::parse(text).map_err(|e| LvmError::Corrupt(e.to_string()))?;
    let (vg_name, vg) = top
        .sections()
        .next()
        .ok_or_else(|| LvmError::Corrupt("metadata names no volume group".into()))?;
    let extent_sectors = nonneg(vg, "extent_size", "volume group")?;
    // LVM allows extents from 1 KiB up to 16 GiB (in 512-byte sectors).
    if !(2..=(1 << 25)).contains(&extent_sectors) {
        return Err(LvmError::Corrupt(format!(
            "extent_size {extent_sectors} out of range"
        )));
    }
    let extent_size = extent_sectors * 512;

    // Which pvN is this disk, and where do its extents start?
    let mut this_pv: Option<(String, u64)> = None;
    if let Some(pvs) = vg.section("physical_volumes") {
        for (name, pv) in pvs.sections() {
            if pv.str("id").map(undash) == Some(undash(&pv_uuid)) {
                let pe_start = nonneg(pv, "pe_start", name)?;
                this_pv = Some((name.to_string(), pe_start.saturating_mul(512)));
            }
        }
    }

    let mut lvs = Vec::new();
    if let Some(lv_sec) = vg.section("logical_volumes") {
        for (lv_name, lv) in lv_sec.sections() {
            if lvs.len() >= MAX_LVS {
                return Err(LvmError::Corrupt(format!(
                    "more than {MAX_LVS} logical volumes"
                )));
            }
            lvs.push(logical_volume(
                vg_name,
                lv_name,
                lv,
                extent_size,
                this_pv.as_ref(),
            )?);
        }
    }
    Ok(PhysicalVolume {
        pv_uuid,
        vg: Some(vg_name.to_string()),
        extent_size,
        lvs,
    })
}

fn logical_volume(
    vg: &str,
    name: &str,
    lv: &Section,
    extent_size: u64,
    this_pv: Option<&(String, u64)>,
) -> Result<LogicalVolume, LvmError> {
    let what = format!("LV {vg}/{name}");
    let count = lv.int("segment_count").unwrap_or(0);
    if !(0..=MAX_SEGMENTS).contains(&count) {
        return Err(LvmError::Corrupt(format!(
            "{what}: segment_count {count} out of range"
        )));
    }
    // (start_extent, extent_count, Some(pv start extent) when linear on this PV)
    let mut segs: Vec<(u64, u64, Result<u64, String>)> = Vec::new();
    let mut types: Vec<String> = Vec::new();
    for i in 1..=count {
        let seg = lv
            .section(&format!("segment{i}"))
            .ok_or_else(|| LvmError::Corrupt(format!("{what}: segment{i} missing")))?;
        let start = nonneg(seg, "start_extent", &what)?;
        let n = nonneg(seg, "extent_count", &what)?;
        let ty = seg.str("type").unwrap_or("?").to_string();
        let stripe_count = seg.int("stripe_count").unwrap_or(0);
        let stripes = seg.list("stripes").unwrap_or(&[]);
        let placement = if ty != "striped" {
            Err(format!("segment type \"{ty}\" is not read"))
        } else if stripe_count != 1 {
            Err(format!("striped over {stripe_count} stripes"))
        } else {
            match stripes {
                [Value::Str(pv), Value::Int(pe)] if *pe >= 0 => match this_pv {
                    Some((me, _)) if me == pv => Ok(*pe as u64),
                    _ => Err(format!(
                        "extents on {pv}, a physical volume not on this disk"
                    )),
                },
                _ => Err("malformed stripes list".to_string()),
            }
        };
        let ty = if ty == "striped" && stripe_count == 1 {
            "linear".to_string()
        } else {
            ty
        };
        if !types.contains(&ty) {
            types.push(ty);
        }
        segs.push((start, n, placement));
    }
    segs.sort_by_key(|s| s.0);

    let mut total: u64 = 0;
    let mut reason = None;
    let mut pieces = Vec::new();
    for (start, n, placement) in &segs {
        if *start != total && reason.is_none() {
            reason = Some(format!("segments leave a gap or overlap at extent {total}"));
        }
        total = total
            .checked_add(*n)
            .ok_or_else(|| LvmError::Corrupt(format!("{what}: extent counts overflow")))?;
        match placement {
            Ok(pe) => {
                let pe_start = this_pv.map(|p| p.1).unwrap_or(0);
                let off = pe
                    .checked_mul(extent_size)
                    .and_then(|o| o.checked_add(pe_start));
                let len = n.checked_mul(extent_size);
                match (off, len) {
                    (Some(disk_offset), Some(len)) => pieces.push(Piece { disk_offset, len }),
                    _ => {
                        reason.get_or_insert_with(|| "extent numbers overflow".to_string());
                    }
                }
            }
            Err(why) => {
                reason.get_or_insert_with(|| why.clone());
            }
        }
    }
    let size = total.saturating_mul(extent_size);
    let readable = reason.is_none() && !segs.is_empty();
    if segs.is_empty() {
        reason = Some("no segments".to_string());
    }
    Ok(LogicalVolume {
        vg: vg.to_string(),
        lv: name.to_string(),
        size,
        segments: segs.len() as u32,
        segment_type: types.join(","),
        readable,
        reason,
        pieces: if readable { pieces } else { Vec::new() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = r#"vg0 {
extent_size = 8192
physical_volumes { pv0 { id = "AAAA-BB" pe_start = 2048 } pv1 { id = "other" pe_start = 2048 } }
logical_volumes {
root { segment_count = 2
 segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 5] }
 segment2 { start_extent = 2 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 1] } }
data { segment_count = 1
 segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 1 stripes = ["pv1", 0] } }
pool { segment_count = 1
 segment1 { start_extent = 0 extent_count = 4 type = "thin-pool" } }
huge { segment_count = 1
 segment1 { start_extent = 0 extent_count = 9223372036854775807 type = "striped" stripe_count = 1 stripes = ["pv0", 9223372036854775807] } }
}
}
"#;

    #[test]
    fn linear_segments_map_to_pieces() {
        let pv = interpret(META.as_bytes(), "AAAABB".into()).unwrap();
        let root = &pv.lvs[0];
        assert!(root.readable, "{:?}", root.reason);
        assert_eq!(root.size, 3 * (4 << 20));
        assert_eq!(
            root.pieces,
            vec![
                Piece {
                    disk_offset: (1 << 20) + 5 * (4 << 20),
                    len: 2 * (4 << 20)
                },
                Piece {
                    disk_offset: (1 << 20) + (4 << 20),
                    len: 4 << 20
                },
            ]
        );
        let data = &pv.lvs[1];
        assert!(!data.readable);
        assert!(data.reason.as_deref().unwrap().contains("pv1"));
        assert!(!pv.lvs[2].readable);
        assert_eq!(pv.lvs[2].segment_type, "thin-pool");
        assert!(!pv.lvs[3].readable);
    }

    #[test]
    fn absurd_numbers_are_errors() {
        let bad = META.replace("extent_size = 8192", "extent_size = -1");
        assert!(interpret(bad.as_bytes(), "AAAABB".into()).is_err());
        let bad = META.replace("segment_count = 2", "segment_count = 4000000000");
        assert!(interpret(bad.as_bytes(), "AAAABB".into()).is_err());
    }
}
