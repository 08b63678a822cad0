//! Where the local blob store keeps image blobs inside the data directory.
//! Deleting and writing blobs goes through `crate::blobstore`; this only
//! names the folder so that `serve` can create it at start.

use std::path::{Path, PathBuf};

/// `<data_dir>/images`: local blobs live here as `<blob_key>`.
pub fn local_blob_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}
