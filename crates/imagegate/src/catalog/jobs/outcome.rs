//! How an attempt ends: success recorded with the image becoming NORMAL
//! (the account's byte quota checked again in the same transaction), or a
//! failure recorded with the image becoming IMPORTFAILED; both only while
//! the attempt still holds the lease.

use crate::catalog::{col, now_ms, Backend, Catalog, CatalogError};
use crate::domain::{FailureCode, JobDetails, TaskState};

/// The final facts of a successful import.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSuccess {
    pub sha256: String,
    pub source_format: String,
    pub virtual_size: i64,
    pub bytes_fetched: i64,
    pub image_size_gib: i64,
    /// Bytes the image keeps in the blob store, all disks together.
    pub stored_bytes: i64,
    /// The account's byte quota, checked again as the image is recorded (two
    /// imports of one account may finish at once); `None`: unlimited.
    pub storage_quota: Option<i64>,
    /// (disk_index, size_gib)
    pub disk_sizes: Vec<(i64, i64)>,
    pub os_name: Option<String>,
    pub platform: Option<String>,
    pub is_support_cloudinit: bool,
    pub details: JobDetails,
}

/// How recording a successful import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The image is NORMAL.
    Recorded,
    /// Another attempt owns the job: nothing was recorded.
    LeaseLost,
    /// The account's other images already use this much of its byte quota,
    /// and this image does not fit: nothing was recorded.
    OverQuota { used: i64 },
}

/// Guest facts recorded with a failure (they are kept whatever the outcome).
#[derive(Debug, Clone, PartialEq)]
pub struct FailureFacts {
    pub os_name: Option<String>,
    pub platform: Option<String>,
    pub is_support_cloudinit: bool,
    /// The job's details with the guest report merged in.
    pub details: JobDetails,
}

impl Catalog {
    /// Record a successful import: the job succeeds and the image becomes
    /// NORMAL, in one transaction, only if `owner` still holds the lease.
    pub async fn finish_job_ok(
        &self,
        image_id: &str,
        owner: &str,
        ok: &ImportSuccess,
    ) -> Result<Finish, CatalogError> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let mut tx = self.pool().begin().await?;
        if let Some(quota) = ok.storage_quota {
            let used = self.stored_bytes_in(&mut tx, image_id).await?;
            if used.saturating_add(ok.stored_bytes) > quota {
                tx.rollback().await?;
                return Ok(Finish::OverQuota { used });
            }
        }
        let job = sqlx::query(
            "UPDATE import_jobs SET state = 'SUCCEEDED', phase = 'DONE', lease_owner = NULL, \
             lease_until = NULL, finished_at = $1, updated_at = $1, sha256 = $2, source_format = $3, \
             virtual_size = $4, bytes_fetched = $5, bytes_total = $5, details = $6, \
             failure_code = NULL, failure_message = NULL \
             WHERE image_id = $7 AND lease_owner = $8 AND state = 'RUNNING'",
        )
        .bind(now)
        .bind(&ok.sha256)
        .bind(&ok.source_format)
        .bind(ok.virtual_size)
        .bind(ok.bytes_fetched)
        .bind(ok.details.to_column())
        .bind(image_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if job.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Finish::LeaseLost);
        }
        sqlx::query(
            "UPDATE images SET state = 'NORMAL', image_size_gib = $1, \
             os_name = COALESCE($2, os_name), platform = COALESCE($3, platform), \
             is_support_cloudinit = $4, updated_at = $5, stored_bytes = $7 WHERE image_id = $6",
        )
        .bind(ok.image_size_gib)
        .bind(ok.os_name.as_deref())
        .bind(ok.platform.as_deref())
        .bind(i64::from(ok.is_support_cloudinit))
        .bind(now)
        .bind(image_id)
        .bind(ok.stored_bytes)
        .execute(&mut *tx)
        .await?;
        for (index, size_gib) in &ok.disk_sizes {
            sqlx::query(
                "UPDATE image_disks SET size_gib = $1 WHERE image_id = $2 AND disk_index = $3",
            )
            .bind(size_gib)
            .bind(image_id)
            .bind(index)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.note_change();
        Ok(Finish::Recorded)
    }

    /// Bytes the account stores in its images (NORMAL ones, and any other
    /// that has recorded its bytes): what `accounts.storage_quota_gib` limits.
    pub async fn stored_bytes(&self, account_uin: &str) -> Result<i64, CatalogError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(stored_bytes), 0) AS BIGINT) AS n FROM images \
             WHERE account_uin = $1 AND state <> 'IMPORTFAILED'",
        )
        .bind(account_uin)
        .fetch_one(self.pool())
        .await?;
        Ok(col(&row, "n")?)
    }

    /// The stored bytes of the account owning `image_id`, inside `tx`. On
    /// PostgreSQL an advisory lock per account serialises the imports of one
    /// account that finish at once (SQLite's single writer already does).
    async fn stored_bytes_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        image_id: &str,
    ) -> Result<i64, CatalogError> {
        if self.backend() == Backend::Postgres {
            sqlx::query(
                "SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtext(account_uin)) \
                 FROM images WHERE image_id = $1) AS l",
            )
            .bind(image_id)
            .fetch_all(&mut **tx)
            .await?;
        }
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(o.stored_bytes), 0) AS BIGINT) AS n FROM images o \
             WHERE o.account_uin = (SELECT i.account_uin FROM images i WHERE i.image_id = $1) \
             AND o.state <> 'IMPORTFAILED' AND o.image_id <> $1",
        )
        .bind(image_id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(col(&row, "n")?)
    }

    /// Record a failed (or cancelled) import, only if `owner` still holds the
    /// lease. The caller removes the image's blobs afterwards.
    pub async fn finish_job_failed(
        &self,
        image_id: &str,
        owner: &str,
        code: FailureCode,
        message: &str,
        facts: Option<&FailureFacts>,
    ) -> Result<bool, CatalogError> {
        let state = if code.is_cancel() {
            TaskState::Cancelled
        } else {
            TaskState::Failed
        };
        let done = self
            .finish_job_failed_if(image_id, Some(owner), code, message, state)
            .await?;
        if let (true, Some(f)) = (done, facts) {
            let _gate = self.write_gate().await;
            let now = now_ms();
            sqlx::query(
                "UPDATE images SET os_name = COALESCE($1, os_name), platform = COALESCE($2, platform), \
                 is_support_cloudinit = $3, updated_at = $4 WHERE image_id = $5",
            )
            .bind(f.os_name.as_deref())
            .bind(f.platform.as_deref())
            .bind(i64::from(f.is_support_cloudinit))
            .bind(now)
            .bind(image_id)
            .execute(self.pool())
            .await?;
            sqlx::query("UPDATE import_jobs SET details = $1 WHERE image_id = $2")
                .bind(f.details.to_column())
                .bind(image_id)
                .execute(self.pool())
                .await?;
            self.note_change();
        }
        Ok(done)
    }

    pub(super) async fn finish_job_failed_if(
        &self,
        image_id: &str,
        owner: Option<&str>,
        code: FailureCode,
        message: &str,
        state: TaskState,
    ) -> Result<bool, CatalogError> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let mut tx = self.pool().begin().await?;
        const SET: &str = "UPDATE import_jobs SET state = $1, phase = 'DONE', lease_owner = NULL, \
             lease_until = NULL, finished_at = $2, updated_at = $2, failure_code = $3, \
             failure_message = $4 WHERE image_id = $5";
        let query = match owner {
            Some(owner) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "{SET} AND lease_owner = $6 AND state = 'RUNNING'"
            )))
            .bind(state)
            .bind(now)
            .bind(code)
            .bind(message)
            .bind(image_id)
            .bind(owner),
            None => sqlx::query(sqlx::AssertSqlSafe(format!(
                "{SET} AND state IN ('RUNNING', 'QUEUED')"
            )))
            .bind(state)
            .bind(now)
            .bind(code)
            .bind(message)
            .bind(image_id),
        };
        let job = query.execute(&mut *tx).await?;
        if job.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE images SET state = 'IMPORTFAILED', updated_at = $1 WHERE image_id = $2",
        )
        .bind(now)
        .bind(image_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.note_change();
        Ok(true)
    }
}
