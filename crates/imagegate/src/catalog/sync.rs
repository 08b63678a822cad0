//! SyncImages in the catalog: a copy is a new image row (new id, new
//! snapshot ids, the caller as owner, the destination region, its quota
//! taken there) whose disks name the source's blobs. No byte is copied, so
//! the copy is NORMAL when its transaction commits; the shared blob lives
//! until the last disk naming it is deleted (see `blobs`).

use super::images::{image_from_row, Sql, IMAGE_COLUMNS};
use super::imports::take_quota;
use super::visibility::push_visible;
use super::{col, is_unique_violation, now_ms, random_id, Catalog, CatalogError, ImageRow};
use crate::domain::ImageState;
use sqlx::Any;

/// One SyncImages call, already validated.
#[derive(Debug, Clone)]
pub struct SyncRequest<'a> {
    /// The caller: owner of the copies.
    pub uin: &'a str,
    /// The caller's quota per region.
    pub quota: u32,
    /// The source image (visible to the caller in `source_region`).
    pub image_id: &'a str,
    pub source_region: &'a str,
    pub destinations: &'a [String],
    /// Name of the copies (default: the source's).
    pub name: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// `(region, new image id)` per destination, in order.
    Copied(Vec<(String, String)>),
    /// The source is gone, not visible, or no longer NORMAL (a race).
    SourceUnavailable,
    DuplicateName(String),
    QuotaExceeded(String),
}

impl Catalog {
    /// Makes every copy, or none, in one transaction.
    pub async fn sync_image(&self, req: &SyncRequest<'_>) -> Result<SyncOutcome, CatalogError> {
        // A fresh id (or snapshot id) collides very rarely: draw again then.
        for _ in 0..8 {
            let ids: Vec<String> = req.destinations.iter().map(|_| random_id("img")).collect();
            match self.try_sync(req, &ids).await {
                Err(CatalogError::Db(e)) if is_unique_violation(&e) => continue,
                other => return other,
            }
        }
        Err(CatalogError::IdSpaceExhausted("image"))
    }

    async fn try_sync(
        &self,
        req: &SyncRequest<'_>,
        ids: &[String],
    ) -> Result<SyncOutcome, CatalogError> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let mut tx = self.pool().begin().await?;
        // Lock the source first: a concurrent delete of it waits for this
        // transaction (and then sees the copies' references), or has won.
        let mut lock = Sql::default();
        lock.push("UPDATE images SET updated_at = ")
            .int(now)
            .push(" WHERE image_id = ")
            .arg(req.image_id)
            .push(" AND region = ")
            .arg(req.source_region)
            .push(" AND state = 'NORMAL' AND image_id IN (SELECT i.image_id FROM images i WHERE ");
        push_visible(&mut lock, req.uin);
        lock.push(")");
        if lock.query().execute(&mut *tx).await?.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(SyncOutcome::SourceUnavailable);
        }
        let source = load_source(&mut tx, req.image_id).await?;
        let name = req.name.unwrap_or(&source.image_name);
        let mut copies = Vec::with_capacity(ids.len());
        for (region, id) in req.destinations.iter().zip(ids) {
            if name_taken(&mut tx, req.uin, region, name).await? {
                tx.rollback().await?;
                return Ok(SyncOutcome::DuplicateName(region.clone()));
            }
            if !take_quota(&mut tx, req.uin, region, 1, req.quota).await? {
                tx.rollback().await?;
                return Ok(SyncOutcome::QuotaExceeded(region.clone()));
            }
            insert_copy(&mut tx, &source, req.uin, region, id, name, now).await?;
            copies.push((region.clone(), id.clone()));
        }
        tx.commit().await?;
        self.note_change();
        Ok(SyncOutcome::Copied(copies))
    }
}

async fn load_source(
    tx: &mut sqlx::Transaction<'_, Any>,
    image_id: &str,
) -> Result<ImageRow, CatalogError> {
    let mut sql = Sql::default();
    sql.push("SELECT ")
        .push(IMAGE_COLUMNS)
        .push(" FROM images i WHERE i.image_id = ")
        .arg(image_id);
    let row = sql.query().fetch_one(&mut **tx).await?;
    Ok(image_from_row(&row)?)
}

async fn name_taken(
    tx: &mut sqlx::Transaction<'_, Any>,
    uin: &str,
    region: &str,
    name: &str,
) -> Result<bool, CatalogError> {
    let row = sqlx::query(
        "SELECT image_id FROM images WHERE account_uin = $1 AND region = $2 AND image_name = $3",
    )
    .bind(uin)
    .bind(region)
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

/// The copy's image row (attributes of the source, NORMAL at once) and its
/// disks, which name the source's blobs.
async fn insert_copy(
    tx: &mut sqlx::Transaction<'_, Any>,
    source: &ImageRow,
    uin: &str,
    region: &str,
    id: &str,
    name: &str,
    now: i64,
) -> Result<(), CatalogError> {
    let s = source;
    let mut sql = Sql::default();
    sql.push(
        "INSERT INTO images (image_id, account_uin, region, image_name, description, os_type, \
         os_version, architecture, platform, os_name, state, image_size_gib, license_type, \
         boot_mode, image_family, deprecated, force, is_support_cloudinit, created_at, \
         updated_at) VALUES (",
    );
    for (n, v) in [
        id,
        uin,
        region,
        name,
        &s.description,
        &s.os_type,
        &s.os_version,
        &s.architecture,
        &s.platform,
        &s.os_name,
        ImageState::Normal.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        if n > 0 {
            sql.push(", ");
        }
        sql.arg(v);
    }
    sql.push(", ")
        .int(s.image_size_gib)
        .push(", ")
        .arg(s.license_type.as_str())
        .push(", ")
        .arg(s.boot_mode.as_str())
        .push(", ")
        .arg(s.image_family.as_str())
        .push(", ")
        .int(s.deprecated as i64)
        .push(", ")
        .int(s.force as i64)
        .push(", ")
        .int(s.is_support_cloudinit as i64)
        .push(", ")
        .int(now)
        .push(", ")
        .int(now)
        .push(")");
    sql.query().execute(&mut **tx).await?;
    copy_disks(tx, &s.image_id, id).await
}

/// The copy's disks: the source's, each with a snapshot id of its own and
/// the same stored blob (its `blob_key`).
async fn copy_disks(
    tx: &mut sqlx::Transaction<'_, Any>,
    source_id: &str,
    id: &str,
) -> Result<(), CatalogError> {
    let disks = sqlx::query(
        "SELECT disk_index, disk_usage, source_url, size_gib, blob_key FROM image_disks \
         WHERE image_id = $1 ORDER BY disk_index",
    )
    .bind(source_id)
    .fetch_all(&mut **tx)
    .await?;
    for d in &disks {
        sqlx::query(
            "INSERT INTO image_disks (image_id, disk_index, disk_usage, source_url, size_gib, \
             snapshot_id, blob_key) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(col::<i64>(d, "disk_index")?)
        .bind(col::<String>(d, "disk_usage")?)
        .bind(col::<String>(d, "source_url")?)
        .bind(col::<i64>(d, "size_gib")?)
        .bind(random_id("snap"))
        .bind(col::<Option<String>>(d, "blob_key")?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
