//! Stored blobs in the catalog. A blob is named by the `image_disks` rows of
//! every image that uses it: an imported image's disks name their own blob,
//! a SyncImages copy names its source's, so a copy costs no bytes. The
//! `blobs` table lists each key once; its row goes, in the transaction that
//! deletes the last disk naming the key, and only then is the blob itself
//! removed from the store (after the commit: a crash in between leaves a
//! blob no row names, which the reaper removes; never a row without a blob).
//! Writing and deleting blob bytes goes through `crate::blobstore`.

use super::{col, CatalogError};
use sqlx::Any;
use std::path::{Path, PathBuf};

/// `<data_dir>/images`: local blobs live here as `<blob_key>`.
pub fn local_blob_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

/// Of `keys` (whose disk rows this transaction just deleted), those that no
/// disk names any more: their `blobs` rows are deleted here, and the caller
/// removes the blobs from the store after committing.
pub(super) async fn release_unreferenced(
    tx: &mut sqlx::Transaction<'_, Any>,
    keys: &[String],
) -> Result<Vec<String>, CatalogError> {
    let mut released = Vec::new();
    for key in keys {
        if released.contains(key) {
            continue;
        }
        let r = sqlx::query("SELECT COUNT(*) AS refs FROM image_disks WHERE blob_key = $1")
            .bind(key)
            .fetch_one(&mut **tx)
            .await?;
        if col::<i64>(&r, "refs")? == 0 {
            sqlx::query("DELETE FROM blobs WHERE blob_key = $1")
                .bind(key)
                .execute(&mut **tx)
                .await?;
            released.push(key.clone());
        }
    }
    Ok(released)
}
