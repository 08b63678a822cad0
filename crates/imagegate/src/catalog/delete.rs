//! DeleteImages in the catalog: rows, shares, jobs and quota in one
//! transaction, and the blobs no remaining disk names (reference counts are
//! the `image_disks` rows themselves, see `blobs`).

use super::{col, now_ms, Catalog, CatalogError, DeleteOutcome};
use sqlx::Any;

impl Catalog {
    /// Deletes the owner's images (all or none) with their tags, disks and
    /// jobs, and gives their quota back, in one transaction. An id that is not
    /// the account's, an image that is busy or shared, fails the whole call.
    /// Returns the blob keys that no image references any more.
    pub async fn delete_images(
        &self,
        uin: &str,
        region: &str,
        ids: &[String],
    ) -> Result<DeleteOutcome, CatalogError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        let mut blob_keys = Vec::new();
        for id in ids {
            if let Some(refused) = lock_deletable(&mut tx, uin, region, id).await? {
                tx.rollback().await?;
                return Ok(refused);
            }
            let rows =
                sqlx::query("DELETE FROM image_disks WHERE image_id = $1 RETURNING blob_key")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            for r in rows {
                if let Some(k) = col::<Option<String>>(&r, "blob_key")? {
                    blob_keys.push(k);
                }
            }
            for table in ["images", "image_tags", "import_jobs", "image_shares"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE image_id = $1"
                )))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "UPDATE quota_usage SET used = CASE WHEN used > $3 THEN used - $3 ELSE 0 END \
             WHERE account_uin = $1 AND region = $2",
        )
        .bind(uin)
        .bind(region)
        .bind(ids.len() as i64)
        .execute(&mut *tx)
        .await?;
        let released = super::blobs::release_unreferenced(&mut tx, &blob_keys).await?;
        tx.commit().await?;
        self.note_change();
        Ok(DeleteOutcome::Deleted {
            blob_keys: released,
        })
    }
}

/// Locks the image row (a write, so a concurrent share or sync of it waits
/// for this transaction or this one for it), then checks that it may go:
/// `Some(refusal)` when it may not.
async fn lock_deletable(
    tx: &mut sqlx::Transaction<'_, Any>,
    uin: &str,
    region: &str,
    id: &str,
) -> Result<Option<DeleteOutcome>, CatalogError> {
    let locked = sqlx::query(
        "UPDATE images SET updated_at = $4 WHERE image_id = $1 AND account_uin = $2 \
         AND region = $3 AND state NOT IN ('IMPORTING', 'CREATING', 'SYNCING')",
    )
    .bind(id)
    .bind(uin)
    .bind(region)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if locked == 0 {
        // Either it is not there (for this account) or it is busy; the
        // caller checked before, so this is a race: say which.
        let state = sqlx::query(
            "SELECT state FROM images WHERE image_id = $1 AND account_uin = $2 AND region = $3",
        )
        .bind(id)
        .bind(uin)
        .bind(region)
        .fetch_optional(&mut **tx)
        .await?;
        return Ok(Some(match state {
            Some(_) => DeleteOutcome::IncorrectState(id.to_owned()),
            None => DeleteOutcome::NotFound(id.to_owned()),
        }));
    }
    // A statement of its own after the lock: it sees a share committed while
    // this transaction waited for the row.
    let shared = sqlx::query("SELECT account_uin FROM image_shares WHERE image_id = $1 LIMIT 1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(shared.map(|_| DeleteOutcome::InShared(id.to_owned())))
}
