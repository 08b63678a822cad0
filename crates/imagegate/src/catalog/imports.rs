//! Queuing imports: an IMPORTING image, its tags, its disks and its QUEUED
//! job, written in one transaction.
//!
//! Group commit: concurrent ImportImage calls hand their rows to one
//! batcher task, which writes everything that is waiting (up to
//! [`MAX_BATCH`]) as one transaction of multi-row INSERTs. On SQLite every
//! statement is a round trip to the connection's thread and there is one
//! writer at a time, so a transaction per call caps the rate at about 700
//! calls/s on 2 cores; a batch costs about the same as one call. Nothing
//! waits to fill a batch: a lone call is written at once.
//!
//! The batch is all or nothing. When it cannot commit as a whole (a name
//! taken, a quota that cannot take all its images, a random id that
//! collided), it is rolled back and each call is written on its own, which
//! gives every call the exact answer it would have had alone.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::Any;
use tokio::sync::{mpsc, oneshot};

use super::images::Sql;
use super::{
    blob_key_for, is_unique_violation, now_ms, random_id, Catalog, CatalogError, InsertOutcome,
    NewImage,
};

/// Most imports written by one transaction.
pub const MAX_BATCH: usize = 64;

/// One queued call: its rows, its account's quota, where to answer.
struct Request {
    image: NewImage,
    quota: u32,
    reply: oneshot::Sender<Result<InsertOutcome, CatalogError>>,
}

/// The batcher's inbox; the task starts with the first call.
#[derive(Debug, Default)]
pub(super) struct Batcher {
    inbox: std::sync::OnceLock<mpsc::UnboundedSender<Request>>,
}

impl Catalog {
    /// Writes an IMPORTING image, its tags, its disks and its QUEUED job in
    /// one transaction (shared with concurrent calls, see the module doc).
    /// The quota is taken by a conditional UPDATE whose row count decides;
    /// a duplicate name is caught by the UNIQUE index.
    pub async fn insert_import(
        &self,
        img: &NewImage,
        quota: u32,
    ) -> Result<InsertOutcome, CatalogError> {
        let inbox = self.batcher.inbox.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // The task's handle shares the pool but not this inbox: when the
            // last handle holding the sender is dropped, the task ends.
            let mut writer = self.clone();
            writer.batcher = Arc::default();
            tokio::spawn(writer.run_batcher(rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let request = Request {
            image: img.clone(),
            quota,
            reply,
        };
        if inbox.send(request).is_err() {
            // The batcher is gone (its runtime shut down): write alone.
            return self.insert_one(img, quota).await;
        }
        match answer.await {
            Ok(outcome) => outcome,
            Err(_) => self.insert_one(img, quota).await,
        }
    }

    async fn run_batcher(self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.write_batch(std::mem::take(&mut batch)).await;
        }
    }

    async fn write_batch(&self, batch: Vec<Request>) {
        let written = if batch.len() > 1 {
            let items: Vec<(String, &NewImage, u32)> = batch
                .iter()
                .map(|r| (random_id("img"), &r.image, r.quota))
                .collect();
            match self.try_insert_imports(&items).await {
                Ok(true) => Some(items.into_iter().map(|(id, _, _)| id).collect::<Vec<_>>()),
                _ => None,
            }
        } else {
            None
        };
        if let Some(ids) = written {
            for (r, image_id) in batch.into_iter().zip(ids) {
                let _ = r.reply.send(Ok(InsertOutcome::Created { image_id }));
            }
            return;
        }
        for r in batch {
            let outcome = self.insert_one(&r.image, r.quota).await;
            let _ = r.reply.send(outcome);
        }
    }

    /// One import in its own transaction, with the exact outcome.
    async fn insert_one(&self, img: &NewImage, quota: u32) -> Result<InsertOutcome, CatalogError> {
        // A fresh random id collides with an existing one very rarely; draw
        // again then (the whole transaction is retried).
        for _ in 0..8 {
            let image_id = random_id("img");
            match self
                .try_insert_imports(&[(image_id.clone(), img, quota)])
                .await
            {
                Ok(true) => return Ok(InsertOutcome::Created { image_id }),
                Ok(false) => return Ok(InsertOutcome::QuotaExceeded),
                Err(e) if is_unique_violation(&e) => {
                    if self
                        .name_taken(&img.account_uin, &img.region, &img.image_name, None)
                        .await?
                    {
                        return Ok(InsertOutcome::DuplicateName);
                    }
                    // Otherwise an image or snapshot id collided: retry.
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CatalogError::IdSpaceExhausted("image"))
    }

    /// Writes every item (image id, rows, quota) in one transaction, or
    /// nothing: `Ok(false)` when some account's quota cannot take all of
    /// its items, an error (a UNIQUE violation for a taken name or id) when
    /// a row cannot be written.
    async fn try_insert_imports(
        &self,
        items: &[(String, &NewImage, u32)],
    ) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        // The first statement writes, so SQLite takes its write lock now
        // instead of failing a later upgrade.
        images_insert(items, now).query().execute(&mut *tx).await?;
        if !take_quotas(&mut tx, items).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(sql) = tags_insert(items) {
            sql.query().execute(&mut *tx).await?;
        }
        disks_insert(items).query().execute(&mut *tx).await?;
        // A key some copy still holds collides here like a taken id: retried.
        blobs_insert(items, now).query().execute(&mut *tx).await?;
        jobs_insert(items, now).query().execute(&mut *tx).await?;
        tx.commit().await?;
        self.note_change();
        Ok(true)
    }
}

fn images_insert(items: &[(String, &NewImage, u32)], now: i64) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "INSERT INTO images (image_id, account_uin, region, image_name, description, os_type, \
         os_version, architecture, platform, os_name, state, image_size_gib, license_type, \
         boot_mode, image_family, deprecated, force, is_support_cloudinit, created_at, updated_at) \
         VALUES ",
    );
    for (n, (image_id, img, _)) in items.iter().enumerate() {
        sql.push(if n == 0 { "(" } else { ", (" });
        for (i, text) in [
            image_id,
            &img.account_uin,
            &img.region,
            &img.image_name,
            &img.description,
            &img.os_type,
            &img.os_version,
            &img.architecture,
            &img.platform,
            &img.os_name,
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                sql.push(", ");
            }
            sql.arg(text.as_str());
        }
        sql.push(", 'IMPORTING', 0, ")
            .arg(img.license_type.as_str())
            .push(", ")
            .arg(img.boot_mode.as_str())
            .push(", ")
            .arg(img.image_family.as_str())
            .push(", 0, ")
            .int(img.force as i64)
            .push(", ")
            .int(img.is_support_cloudinit as i64)
            .push(", ")
            .int(now)
            .push(", ")
            .int(now)
            .push(")");
    }
    sql
}

fn tags_insert(items: &[(String, &NewImage, u32)]) -> Option<Sql> {
    let mut sql = Sql::default();
    sql.push("INSERT INTO image_tags (image_id, tag_key, tag_value) VALUES ");
    let mut rows = 0;
    for (image_id, img, _) in items {
        for (key, value) in &img.tags {
            sql.push(if rows == 0 { "(" } else { ", (" })
                .arg(image_id.as_str())
                .push(", ")
                .arg(key.as_str())
                .push(", ")
                .arg(value.as_str())
                .push(")");
            rows += 1;
        }
    }
    (rows > 0).then_some(sql)
}

fn disks_insert(items: &[(String, &NewImage, u32)]) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "INSERT INTO image_disks (image_id, disk_index, disk_usage, source_url, size_gib, \
         snapshot_id, blob_key) VALUES ",
    );
    let mut rows = 0;
    for (image_id, img, _) in items {
        for (index, url) in img.disk_urls.iter().enumerate() {
            let usage = if index == 0 {
                "SYSTEM_DISK"
            } else {
                "DATA_DISK"
            };
            sql.push(if rows == 0 { "(" } else { ", (" })
                .arg(image_id.as_str())
                .push(", ")
                .int(index as i64)
                .push(", ")
                .arg(usage)
                .push(", ")
                .arg(url.as_str())
                .push(", 0, ")
                .arg(random_id("snap"))
                .push(", ")
                .arg(blob_key_for(image_id, index))
                .push(")");
            rows += 1;
        }
    }
    sql
}

/// Registers each disk's blob key (see `visibility` for the reference rule).
fn blobs_insert(items: &[(String, &NewImage, u32)], now: i64) -> Sql {
    let mut sql = Sql::default();
    sql.push("INSERT INTO blobs (blob_key, created_at) VALUES ");
    let mut rows = 0;
    for (image_id, img, _) in items {
        for index in 0..img.disk_urls.len() {
            sql.push(if rows == 0 { "(" } else { ", (" })
                .arg(blob_key_for(image_id, index))
                .push(", ")
                .int(now)
                .push(")");
            rows += 1;
        }
    }
    sql
}

fn jobs_insert(items: &[(String, &NewImage, u32)], now: i64) -> Sql {
    let mut sql = Sql::default();
    sql.push(
        "INSERT INTO import_jobs (image_id, account_uin, state, phase, attempts, run_after, \
         cancel_requested, bytes_fetched, created_at, updated_at) VALUES ",
    );
    for (n, (image_id, image, _)) in items.iter().enumerate() {
        sql.push(if n == 0 { "(" } else { ", (" })
            .arg(image_id.as_str())
            .push(", ")
            .arg(image.account_uin.as_str())
            .push(", 'QUEUED', 'QUEUED', 0, ")
            .int(now)
            .push(", 0, 0, ")
            .int(now)
            .push(", ")
            .int(now)
            .push(")");
    }
    sql
}

/// Takes each account's images of the batch from its quota in the region,
/// inside `tx`; false when some account's quota cannot take them all. The
/// conditional UPDATE's row count decides, so concurrent writers can never
/// exceed a quota.
async fn take_quotas(
    tx: &mut sqlx::Transaction<'_, Any>,
    items: &[(String, &NewImage, u32)],
) -> Result<bool, sqlx::Error> {
    let mut wanted: HashMap<(&str, &str), (i64, u32)> = HashMap::new();
    for (_, img, quota) in items {
        let e = wanted
            .entry((img.account_uin.as_str(), img.region.as_str()))
            .or_insert((0, *quota));
        e.0 += 1;
    }
    for ((uin, region), (count, quota)) in wanted {
        if !take_quota(tx, uin, region, count, quota).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Takes `count` images of the account's quota in the region inside `tx`
/// (false when the quota cannot take them): a conditional UPDATE, so
/// concurrent writers never exceed it.
pub(super) async fn take_quota(
    tx: &mut sqlx::Transaction<'_, Any>,
    uin: &str,
    region: &str,
    count: i64,
    quota: u32,
) -> Result<bool, sqlx::Error> {
    let take = || {
        sqlx::query(
            "UPDATE quota_usage SET used = used + $1 \
             WHERE account_uin = $2 AND region = $3 AND used + $1 <= $4",
        )
        .bind(count)
        .bind(uin)
        .bind(region)
        .bind(i64::from(quota))
    };
    if take().execute(&mut **tx).await?.rows_affected() == 1 {
        return Ok(true);
    }
    // The account's first images in the region: create its row, retry.
    sqlx::query(
        "INSERT INTO quota_usage (account_uin, region, used) VALUES ($1, $2, 0) \
         ON CONFLICT (account_uin, region) DO NOTHING",
    )
    .bind(uin)
    .bind(region)
    .execute(&mut **tx)
    .await?;
    Ok(take().execute(&mut **tx).await?.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(uin: &str, name: &str) -> NewImage {
        NewImage {
            account_uin: uin.into(),
            region: "ap-guangzhou".into(),
            image_name: name.into(),
            description: String::new(),
            os_type: "CentOS".into(),
            os_version: "7".into(),
            architecture: "x86_64".into(),
            platform: "CentOS".into(),
            os_name: "CentOS 7 64bit".into(),
            license_type: "TencentCloud".into(),
            boot_mode: "Legacy BIOS".into(),
            image_family: String::new(),
            force: false,
            is_support_cloudinit: true,
            tags: vec![("team".into(), name.into())],
            disk_urls: vec!["https://a-1250000000.cos.ap-guangzhou.myqcloud.com/d".into(); 2],
        }
    }

    async fn catalog(dir: &std::path::Path) -> Catalog {
        let config = crate::config::Config {
            data_dir: dir.to_path_buf(),
            ..Default::default()
        };
        Catalog::open(&config).await.unwrap()
    }

    /// Runs one batch through the batcher's own code path; the outcomes in
    /// request order.
    async fn batch(c: &Catalog, items: Vec<(NewImage, u32)>) -> Vec<InsertOutcome> {
        let mut answers = Vec::new();
        let mut requests = Vec::new();
        for (image, quota) in items {
            let (reply, answer) = oneshot::channel();
            requests.push(Request {
                image,
                quota,
                reply,
            });
            answers.push(answer);
        }
        c.write_batch(requests).await;
        let mut out = Vec::new();
        for a in answers {
            out.push(a.await.unwrap().unwrap());
        }
        out
    }

    fn created(outcomes: &[InsertOutcome]) -> usize {
        outcomes
            .iter()
            .filter(|o| matches!(o, InsertOutcome::Created { .. }))
            .count()
    }

    async fn count(c: &Catalog, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(c.pool())
            .await
            .unwrap();
        super::super::col(&row, "n").unwrap()
    }

    #[tokio::test]
    async fn a_clean_batch_writes_every_row_in_one_go() {
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path()).await;
        let items = (0..10)
            .map(|i| (image("u1", &format!("n{i}")), 500))
            .collect();
        let out = batch(&c, items).await;
        assert_eq!(created(&out), 10);
        let ids: std::collections::HashSet<_> = out
            .iter()
            .map(|o| match o {
                InsertOutcome::Created { image_id } => image_id.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids.len(), 10);
        assert_eq!(count(&c, "images").await, 10);
        assert_eq!(count(&c, "image_tags").await, 10);
        assert_eq!(count(&c, "image_disks").await, 20);
        assert_eq!(count(&c, "import_jobs").await, 10);
        assert_eq!(c.quota_used("u1", "ap-guangzhou").await.unwrap(), 10);
    }

    #[tokio::test]
    async fn a_taken_name_falls_back_to_exact_answers() {
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path()).await;
        assert_eq!(
            created(&batch(&c, vec![(image("u1", "old"), 500)]).await),
            1
        );
        // One name already taken, one twice in the batch, three fresh.
        let out = batch(
            &c,
            vec![
                (image("u1", "a"), 500),
                (image("u1", "old"), 500),
                (image("u1", "b"), 500),
                (image("u1", "b"), 500),
                (image("u1", "c"), 500),
            ],
        )
        .await;
        assert!(matches!(out[0], InsertOutcome::Created { .. }));
        assert_eq!(out[1], InsertOutcome::DuplicateName);
        assert!(matches!(out[2], InsertOutcome::Created { .. }));
        assert_eq!(out[3], InsertOutcome::DuplicateName);
        assert!(matches!(out[4], InsertOutcome::Created { .. }));
        assert_eq!(count(&c, "images").await, 4);
        assert_eq!(count(&c, "import_jobs").await, 4);
        assert_eq!(c.quota_used("u1", "ap-guangzhou").await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_quota_that_cannot_take_the_whole_batch_is_filled_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path()).await;
        // u1 may hold 3; u2 (quota 500) is in the same batch and unaffected.
        let mut items: Vec<_> = (0..5).map(|i| (image("u1", &format!("n{i}")), 3)).collect();
        items.push((image("u2", "n0"), 500));
        let out = batch(&c, items).await;
        assert_eq!(created(&out[..5]), 3);
        assert_eq!(
            out[..5]
                .iter()
                .filter(|o| **o == InsertOutcome::QuotaExceeded)
                .count(),
            2
        );
        assert!(matches!(out[5], InsertOutcome::Created { .. }));
        assert_eq!(c.quota_used("u1", "ap-guangzhou").await.unwrap(), 3);
        assert_eq!(c.quota_used("u2", "ap-guangzhou").await.unwrap(), 1);
        assert_eq!(count(&c, "images").await, 4);
    }

    #[tokio::test]
    async fn concurrent_callers_share_transactions_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path()).await;
        let calls = (0..200).map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                // Every tenth name is used twice.
                let name = format!("n{}", if i % 10 == 0 { 0 } else { i });
                c.insert_import(&image("u1", &name), 150).await.unwrap()
            })
        });
        let out: Vec<_> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        // 181 distinct names for a quota of 150.
        assert_eq!(created(&out), 150);
        assert_eq!(count(&c, "images").await, 150);
        assert_eq!(count(&c, "import_jobs").await, 150);
        assert_eq!(c.quota_used("u1", "ap-guangzhou").await.unwrap(), 150);
    }

    #[tokio::test]
    async fn claims_serve_accounts_in_turn_and_respect_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path()).await;
        let backlog = (0..3)
            .map(|i| (image("u1", &format!("a{i}")), 500))
            .collect();
        assert_eq!(created(&batch(&c, backlog).await), 3);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(created(&batch(&c, vec![(image("u2", "b0"), 500)]).await), 1);
        let claim = |cap| {
            let c = c.clone();
            async move { c.claim_job("n", 60_000, 3, cap).await.unwrap() }
        };
        // The oldest job first; then u2, whose account runs nothing, before u1's backlog.
        assert_eq!(claim(0).await.unwrap().account_uin, "u1");
        assert_eq!(claim(0).await.unwrap().account_uin, "u2");
        // With a cap of one running job per account, u1's backlog waits.
        assert!(claim(1).await.is_none());
        assert_eq!(claim(0).await.unwrap().account_uin, "u1");
    }
}
