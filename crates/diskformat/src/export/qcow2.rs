//! QCOW2 export (being written; refused until it lands).

use super::map::AllocMap;
use super::pipeline::Out;
use super::ExportError;
use crate::DiskImage;

pub(super) fn write(
    _disk: &dyn DiskImage,
    _map: &AllocMap,
    _out: &mut Out<'_>,
    _workers: usize,
) -> Result<u64, ExportError> {
    Err(ExportError::Unsupported(
        "QCOW2 export is not available yet".into(),
    ))
}
