//! Container targets: detection, and each format opened by its own module
//! (as `open_as` does after detection) and then read: extents and guest
//! bytes at a bounded number of places spread over the virtual size.

use crate::input::OwnedBytes;
use diskformat::{Format, Limits};
use std::sync::Arc;

/// Places read per image: enough to reach every table level, few enough
/// that a 500 GiB virtual size costs what a small one does.
const PROBES: u64 = 64;
const READ_LEN: usize = 4096;

pub fn detect(data: &[u8]) {
    let _ = diskformat::detect(&OwnedBytes(data.to_vec()));
}

pub fn qcow2(data: &[u8]) {
    open_and_read(Format::Qcow2, data);
}

pub fn vmdk(data: &[u8]) {
    open_and_read(Format::Vmdk, data);
}

pub fn vhd(data: &[u8]) {
    open_and_read(Format::Vhd, data);
}

pub fn vhdx(data: &[u8]) {
    open_and_read(Format::Vhdx, data);
}

/// QED, VDI and LUKS are recognised only to be refused, ISO and raw open
/// as the file itself: the first byte picks which one this input goes to.
pub fn refused_formats(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let format = match pick % 5 {
        0 => Format::Qed,
        1 => Format::Vdi,
        2 => Format::Luks,
        3 => Format::Iso,
        _ => Format::Raw,
    };
    open_and_read(format, rest);
}

fn open_and_read(format: Format, data: &[u8]) {
    let src = Arc::new(OwnedBytes(data.to_vec()));
    let Ok(image) = diskformat::open_as(format, src, &Limits::default()) else {
        return;
    };
    let size = image.virtual_size();
    if size == 0 {
        return;
    }
    let step = (size / PROBES).max(1);
    let mut buf = vec![0u8; READ_LEN];
    let mut offset = 0;
    while offset < size {
        let _ = image.extent_at(offset, 1 << 30);
        let len = (size - offset).min(READ_LEN as u64) as usize;
        let _ = image.read_guest(offset, &mut buf[..len]);
        offset = offset.saturating_add(step);
    }
}
