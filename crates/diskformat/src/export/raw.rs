//! RAW export: the guest disk byte for byte.
//!
//! Contract: exactly `virtual_size` bytes. Unallocated units and allocated
//! units that read as all zeros go through `write_zeros` (holes in a
//! [`super::FileSink`], zeros on a sequential sink); runs of data units are
//! written with one call each. Threat model: see `export`; nothing here
//! sizes anything from the source beyond the checked map.

use super::map::{AllocMap, UNIT};
use super::pipeline::{run, Out, Plain, Window};
use super::{ExportError, ExportOptions};
use crate::util::is_zero;
use crate::DiskImage;

pub(super) fn write(
    disk: &dyn DiskImage,
    map: &AllocMap,
    out: &mut Out<'_>,
    opts: &ExportOptions,
) -> Result<u64, ExportError> {
    let vs = map.virtual_size();
    let mut pos = 0u64;
    let read = run(disk, map, opts.workers, &|| Plain, &mut |w: &Window| {
        out.zeros(w.start - pos)?;
        write_window(out, w)?;
        pos = w.start + w.len as u64;
        out.progress(pos)
    })?;
    out.zeros(vs - pos)?;
    Ok(read)
}

/// Writes `w.data[..w.len]`: data runs as they are, zero units as zeros.
fn write_window(out: &mut Out<'_>, w: &Window) -> Result<(), ExportError> {
    let data = &w.data[..w.len];
    // Start of the pending data run, if any.
    let mut run_from: Option<usize> = None;
    let mut zeros = 0u64;
    for (i, _, unit) in w.units() {
        let b = i as usize * UNIT as usize;
        let unit = &unit[..unit.len().min(w.len.saturating_sub(b))];
        if w.allocated(i) && !is_zero(unit) {
            if run_from.is_none() {
                out.zeros(zeros)?;
                zeros = 0;
                run_from = Some(b);
            }
        } else {
            if let Some(from) = run_from.take() {
                out.write(&data[from..b])?;
            }
            zeros += unit.len() as u64;
        }
    }
    if let Some(from) = run_from {
        out.write(&data[from..])?;
    }
    out.zeros(zeros)
}
