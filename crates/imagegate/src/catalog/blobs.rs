//! Removal of stored image blobs when their image is deleted.
//!
//! Until the pipeline's blob store lands, blobs live in `<data_dir>/images/`;
//! this is the one place that knows it, so it can be swapped for the store's
//! delete without touching the actions.

use std::path::{Path, PathBuf};

/// Where local blobs live.
pub fn local_blob_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

/// A blob key is a relative name we generated (`img-xxxxxxxx.qcow2`); refuse
/// anything that could name a file outside the blob folder.
pub fn is_safe_blob_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Deletes a local blob if it exists. A missing file is not an error: an
/// image that failed early never had one.
pub async fn remove_local_blob(data_dir: &Path, key: &str) -> std::io::Result<()> {
    if !is_safe_blob_key(key) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("refusing to delete unsafe blob key {key:?}"),
        ));
    }
    match tokio::fs::remove_file(local_blob_dir(data_dir).join(key)).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_keys_are_refused() {
        assert!(is_safe_blob_key("img-12345678.qcow2"));
        assert!(is_safe_blob_key("img-12345678-1.qcow2"));
        for bad in ["", "../x", "a/b", "..", ".hidden", "/etc/passwd", "a\0b"] {
            assert!(!is_safe_blob_key(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn removes_present_and_tolerates_absent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(local_blob_dir(dir.path())).unwrap();
        let f = local_blob_dir(dir.path()).join("img-aaaaaaaa.qcow2");
        std::fs::write(&f, b"x").unwrap();
        remove_local_blob(dir.path(), "img-aaaaaaaa.qcow2")
            .await
            .unwrap();
        assert!(!f.exists());
        remove_local_blob(dir.path(), "img-aaaaaaaa.qcow2")
            .await
            .unwrap();
        assert!(remove_local_blob(dir.path(), "../x").await.is_err());
    }
}
