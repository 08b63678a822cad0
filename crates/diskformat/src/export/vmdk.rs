//! VMDK export (being written; refused until it lands).

use super::map::AllocMap;
use super::pipeline::Out;
use super::{ExportError, ExportOptions};
use crate::DiskImage;

pub(super) fn write(
    _disk: &dyn DiskImage,
    _map: &AllocMap,
    _out: &mut Out<'_>,
    _opts: &ExportOptions,
) -> Result<u64, ExportError> {
    Err(ExportError::Unsupported(
        "VMDK export is not available yet".into(),
    ))
}
