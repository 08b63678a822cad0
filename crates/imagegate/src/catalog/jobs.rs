//! The import job queue, in the catalog's own database.
//!
//! A job is claimed by one worker at a time under a lease that its heartbeat
//! extends. A worker that dies stops heartbeating; once its lease expires,
//! the job is claimable again (the next attempt starts over, or resumes the
//! download from the spool when it runs on the same node). Every state change
//! of a running job is guarded by `lease_owner`, so an attempt that lost its
//! lease can never overwrite the outcome of the attempt that replaced it.
//!
//! Claims are one statement: `UPDATE … WHERE image_id = (SELECT … LIMIT 1)`;
//! on PostgreSQL the inner select adds `FOR UPDATE SKIP LOCKED` so concurrent
//! claimers on several nodes never take the same row, and on SQLite the
//! single writer serialises them.
//!
//! The queue is fair between accounts: a claim takes a job of the account
//! with the fewest running jobs, among those the account whose last claim is
//! oldest, and only then the oldest job. One account's backlog therefore
//! delays another account's job by at most the time one running job needs to
//! free its slot. `limits.max_running_per_account` can cap an account's
//! running jobs besides.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{col, now_ms, Backend, Catalog, CatalogError};

/// The advisory lock class of capped claims (the two-key form: apart from
/// the per-account `hashtext` locks, which use the one-key form).
const CLAIM_LOCK_CLASS: i32 = 0x1a6e_0001;

/// A claimed job with what the worker needs to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub image_id: String,
    pub account_uin: String,
    pub region: String,
    pub os_type: String,
    pub os_version: String,
    pub architecture: String,
    pub boot_mode: String,
    pub force: bool,
    /// 1 for the first attempt.
    pub attempts: i64,
    pub disks: Vec<JobDisk>,
    /// Attempts so far, as recorded in `details` (node, start, outcome).
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDisk {
    pub disk_index: i64,
    pub disk_usage: String,
    pub source_url: String,
    pub blob_key: String,
}

/// Progress written by each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub phase: String,
    pub bytes_fetched: i64,
    pub bytes_total: Option<i64>,
    pub source_format: Option<String>,
    pub virtual_size: Option<i64>,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Lease extended; keep going.
    Held,
    /// Lease extended, and the user asked to cancel.
    CancelRequested,
    /// Another worker owns the job now (or it finished): stop at once.
    Lost,
}

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
    pub details: serde_json::Value,
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
    pub details: serde_json::Value,
}

/// One row of `DescribeImportImageTasks`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub image_id: String,
    pub image_name: String,
    pub image_state: String,
    pub state: String,
    pub phase: Option<String>,
    pub attempts: i64,
    pub bytes_fetched: i64,
    pub bytes_total: Option<i64>,
    pub source_format: Option<String>,
    pub virtual_size: Option<i64>,
    pub sha256: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub details: serde_json::Value,
    pub node: Option<String>,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job had not started: it is cancelled and the image failed.
    Cancelled,
    /// The job is running: its worker stops within one heartbeat.
    Requested,
    /// Already finished (NORMAL, failed or cancelled): nothing to cancel.
    AlreadyFinished(String),
    NotFound,
}

/// Failure code of a job whose workers kept dying.
pub const INTERRUPTED_CODE: &str = "ImportInterrupted";

fn parse_details(text: Option<String>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| serde_json::json!({}))
}

impl Catalog {
    /// Claim the oldest runnable job: queued, or running under a lease that
    /// has expired (its worker died). Jobs that already used `max_attempts`
    /// are failed instead of claimed.
    pub async fn claim_job(
        &self,
        node: &str,
        lease_ms: i64,
        max_attempts: i64,
        max_running_per_account: u32,
    ) -> Result<Option<ClaimedJob>, CatalogError> {
        self.fail_exhausted_jobs(max_attempts).await?;
        let _gate = self.write_gate().await;
        let now = now_ms();
        let sql = claim_sql(self.backend(), max_running_per_account);
        // One transaction: a claim cut short (the database restarting) leaves
        // the job queued rather than held by a worker that never learnt of it.
        let mut tx = self.pool().begin().await?;
        if self.backend() == Backend::Postgres && max_running_per_account > 0 {
            // Two claimers would both count an account's running jobs before
            // either committed and both take one: with a cap, PostgreSQL
            // claims queue on one lock (SQLite's single writer already does).
            sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock($1, 1)) AS l")
                .bind(CLAIM_LOCK_CLASS)
                .fetch_all(&mut *tx)
                .await?;
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(node)
            .bind(now + lease_ms)
            .bind(now)
            .bind(max_attempts)
            .bind(i64::from(max_running_per_account))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let image_id: String = col(&row, "image_id")?;
        let attempts: i64 = col(&row, "attempts")?;
        let mut details = parse_details(col(&row, "details")?);
        // Record which node runs this attempt (DescribeImportImageTasks shows it).
        let entry = serde_json::json!({"attempt": attempts, "node": node, "started_at": now});
        match details.get_mut("attempts").and_then(|a| a.as_array_mut()) {
            Some(list) => list.push(entry),
            None => {
                details["attempts"] = serde_json::json!([entry]);
            }
        }
        sqlx::query("UPDATE import_jobs SET details = $1 WHERE image_id = $2 AND lease_owner = $3")
            .bind(details.to_string())
            .bind(&image_id)
            .bind(node)
            .execute(&mut *tx)
            .await?;

        let image = sqlx::query(
            "SELECT account_uin, region, os_type, os_version, architecture, boot_mode, force \
             FROM images WHERE image_id = $1",
        )
        .bind(&image_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(image) = image else {
            // The image vanished under the job (cannot happen through the API:
            // IMPORTING images cannot be deleted). Drop the orphan job.
            sqlx::query("DELETE FROM import_jobs WHERE image_id = $1")
                .bind(&image_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(None);
        };
        let disks = sqlx::query(
            "SELECT disk_index, disk_usage, source_url, blob_key FROM image_disks \
             WHERE image_id = $1 ORDER BY disk_index",
        )
        .bind(&image_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r: &AnyRow| {
            let index: i64 = col(r, "disk_index")?;
            let blob_key: Option<String> = col(r, "blob_key")?;
            Ok(JobDisk {
                disk_index: index,
                disk_usage: col(r, "disk_usage")?,
                source_url: col(r, "source_url")?,
                blob_key: blob_key.unwrap_or_else(|| default_blob_key(&image_id, index)),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let force: i64 = col(&image, "force")?;
        tx.commit().await?;
        Ok(Some(ClaimedJob {
            image_id,
            account_uin: col(&image, "account_uin")?,
            region: col(&image, "region")?,
            os_type: col(&image, "os_type")?,
            os_version: col(&image, "os_version")?,
            architecture: col(&image, "architecture")?,
            boot_mode: col(&image, "boot_mode")?,
            force: force != 0,
            attempts,
            disks,
            details,
        }))
    }

    /// Jobs whose workers died `max_attempts` times are failed, not retried
    /// forever.
    async fn fail_exhausted_jobs(&self, max_attempts: i64) -> Result<(), CatalogError> {
        let now = now_ms();
        let stuck = sqlx::query(
            "SELECT image_id FROM import_jobs WHERE state = 'RUNNING' AND lease_until < $1 \
             AND attempts >= $2",
        )
        .bind(now)
        .bind(max_attempts)
        .fetch_all(self.pool())
        .await?;
        for row in stuck {
            let image_id: String = col(&row, "image_id")?;
            let message = format!(
                "The import was interrupted {max_attempts} times (the worker running it stopped \
                 without finishing). Delete the image and import it again; if it keeps failing, \
                 check the workers' logs and memory limits."
            );
            self.finish_job_failed_if(&image_id, None, INTERRUPTED_CODE, &message, "FAILED")
                .await?;
        }
        Ok(())
    }

    /// Extend the lease and record progress. `Lost` means another attempt
    /// owns the job now: the caller must stop without touching the outcome.
    pub async fn heartbeat_job(
        &self,
        image_id: &str,
        owner: &str,
        lease_ms: i64,
        progress: &JobProgress,
    ) -> Result<Heartbeat, CatalogError> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let done = sqlx::query(
            "UPDATE import_jobs SET lease_until = $1, heartbeat_at = $2, updated_at = $2, \
             phase = $3, bytes_fetched = $4, bytes_total = $5, source_format = $6, \
             virtual_size = $7, details = $8 \
             WHERE image_id = $9 AND lease_owner = $10 AND state = 'RUNNING'",
        )
        .bind(now + lease_ms)
        .bind(now)
        .bind(&progress.phase)
        .bind(progress.bytes_fetched)
        .bind(progress.bytes_total)
        .bind(progress.source_format.as_deref())
        .bind(progress.virtual_size)
        .bind(progress.details.to_string())
        .bind(image_id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Ok(Heartbeat::Lost);
        }
        let cancel: i64 =
            sqlx::query("SELECT cancel_requested FROM import_jobs WHERE image_id = $1")
                .bind(image_id)
                .fetch_one(self.pool())
                .await?
                .try_get("cancel_requested")?;
        Ok(if cancel != 0 {
            Heartbeat::CancelRequested
        } else {
            Heartbeat::Held
        })
    }

    /// What [`Catalog::heartbeat_job`] would answer, without writing: the
    /// heartbeat asks this between writes, so a cancel or a lost lease is
    /// seen at once while unchanged progress costs no write.
    pub async fn job_standing(
        &self,
        image_id: &str,
        owner: &str,
    ) -> Result<Heartbeat, CatalogError> {
        let row = sqlx::query(
            "SELECT cancel_requested, lease_owner, state FROM import_jobs WHERE image_id = $1",
        )
        .bind(image_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(Heartbeat::Lost);
        };
        let lease_owner: Option<String> = col(&row, "lease_owner")?;
        let state: String = col(&row, "state")?;
        if lease_owner.as_deref() != Some(owner) || state != "RUNNING" {
            return Ok(Heartbeat::Lost);
        }
        let cancel: i64 = col(&row, "cancel_requested")?;
        Ok(if cancel != 0 {
            Heartbeat::CancelRequested
        } else {
            Heartbeat::Held
        })
    }

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
        .bind(ok.details.to_string())
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
        code: &str,
        message: &str,
        facts: Option<&FailureFacts>,
    ) -> Result<bool, CatalogError> {
        let state = if code == "ImportCancelled" {
            "CANCELLED"
        } else {
            "FAILED"
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
                .bind(f.details.to_string())
                .bind(image_id)
                .execute(self.pool())
                .await?;
            self.note_change();
        }
        Ok(done)
    }

    async fn finish_job_failed_if(
        &self,
        image_id: &str,
        owner: Option<&str>,
        code: &str,
        message: &str,
        state: &str,
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

    /// Hand a running job back to the queue (graceful shutdown). The attempt
    /// does not count: it was stopped on purpose.
    pub async fn release_job(&self, image_id: &str, owner: &str) -> Result<bool, CatalogError> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let done = sqlx::query(
            "UPDATE import_jobs SET state = 'QUEUED', lease_owner = NULL, lease_until = NULL, \
             run_after = $1, updated_at = $1, phase = 'QUEUED', \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
             WHERE image_id = $2 AND lease_owner = $3 AND state = 'RUNNING'",
        )
        .bind(now)
        .bind(image_id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// CancelImportImageTask.
    pub async fn cancel_job(
        &self,
        account_uin: &str,
        region: &str,
        image_id: &str,
    ) -> Result<CancelOutcome, CatalogError> {
        let row = sqlx::query(
            "SELECT j.state AS state FROM import_jobs j JOIN images i ON i.image_id = j.image_id \
             WHERE j.image_id = $1 AND i.account_uin = $2 AND i.region = $3",
        )
        .bind(image_id)
        .bind(account_uin)
        .bind(region)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(CancelOutcome::NotFound);
        };
        let state: String = col(&row, "state")?;
        match state.as_str() {
            "QUEUED" => {
                let message =
                    "The import was cancelled by CancelImportImageTask before it started.";
                if self
                    .finish_job_failed_if(image_id, None, "ImportCancelled", message, "CANCELLED")
                    .await?
                {
                    Ok(CancelOutcome::Cancelled)
                } else {
                    // It was claimed in between: ask the worker.
                    self.request_cancel(image_id).await
                }
            }
            "RUNNING" => self.request_cancel(image_id).await,
            other => Ok(CancelOutcome::AlreadyFinished(other.to_string())),
        }
    }

    async fn request_cancel(&self, image_id: &str) -> Result<CancelOutcome, CatalogError> {
        let _gate = self.write_gate().await;
        let done = sqlx::query(
            "UPDATE import_jobs SET cancel_requested = 1, updated_at = $1 \
             WHERE image_id = $2 AND state IN ('RUNNING', 'QUEUED')",
        )
        .bind(now_ms())
        .bind(image_id)
        .execute(self.pool())
        .await?;
        Ok(if done.rows_affected() == 1 {
            CancelOutcome::Requested
        } else {
            CancelOutcome::AlreadyFinished("finished".into())
        })
    }

    /// DescribeImportImageTasks: the caller's jobs in a region, newest first.
    pub async fn describe_tasks(
        &self,
        account_uin: &str,
        region: &str,
        image_ids: Option<&[String]>,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<TaskRow>), CatalogError> {
        let mut filter = String::from("i.account_uin = $1 AND i.region = $2");
        if let Some(ids) = image_ids {
            filter.push_str(" AND j.image_id IN (");
            for n in 0..ids.len() {
                if n > 0 {
                    filter.push_str(", ");
                }
                filter.push_str(&format!("${}", n + 3));
            }
            filter.push(')');
        }
        let ids: &[String] = image_ids.unwrap_or(&[]);
        let count_sql = format!(
            "SELECT COUNT(*) AS n FROM import_jobs j JOIN images i ON i.image_id = j.image_id WHERE {filter}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(count_sql))
            .bind(account_uin)
            .bind(region);
        for id in ids {
            q = q.bind(id);
        }
        let total: i64 = q.fetch_one(self.pool()).await?.try_get("n")?;

        let n = ids.len() + 3;
        let sql = format!(
            "SELECT j.image_id AS image_id, i.image_name AS image_name, i.state AS image_state, \
             j.state AS state, j.phase AS phase, j.attempts AS attempts, j.bytes_fetched AS bytes_fetched, \
             j.bytes_total AS bytes_total, j.source_format AS source_format, j.virtual_size AS virtual_size, \
             j.sha256 AS sha256, j.failure_code AS failure_code, j.failure_message AS failure_message, \
             j.details AS details, j.node AS node, j.cancel_requested AS cancel_requested, \
             j.created_at AS created_at, j.started_at AS started_at, j.finished_at AS finished_at \
             FROM import_jobs j JOIN images i ON i.image_id = j.image_id WHERE {filter} \
             ORDER BY j.created_at DESC, j.image_id DESC LIMIT ${n} OFFSET ${}",
            n + 1
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_uin)
            .bind(region);
        for id in ids {
            q = q.bind(id);
        }
        let rows = q.bind(limit).bind(offset).fetch_all(self.pool()).await?;
        let tasks = rows
            .iter()
            .map(|r| {
                let cancel: i64 = col(r, "cancel_requested")?;
                Ok(TaskRow {
                    image_id: col(r, "image_id")?,
                    image_name: col(r, "image_name")?,
                    image_state: col(r, "image_state")?,
                    state: col(r, "state")?,
                    phase: col(r, "phase")?,
                    attempts: col(r, "attempts")?,
                    bytes_fetched: col(r, "bytes_fetched")?,
                    bytes_total: col(r, "bytes_total")?,
                    source_format: col(r, "source_format")?,
                    virtual_size: col(r, "virtual_size")?,
                    sha256: col(r, "sha256")?,
                    failure_code: col(r, "failure_code")?,
                    failure_message: col(r, "failure_message")?,
                    details: parse_details(col(r, "details")?),
                    node: col(r, "node")?,
                    cancel_requested: cancel != 0,
                    created_at: col(r, "created_at")?,
                    started_at: col(r, "started_at")?,
                    finished_at: col(r, "finished_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok((total, tasks))
    }

    /// Blob keys that must be kept: those of images that are NORMAL or still
    /// importing. Everything else in the blob store is an orphan.
    pub async fn live_blob_keys(&self) -> Result<std::collections::HashSet<String>, CatalogError> {
        let rows = sqlx::query(
            "SELECT d.image_id AS image_id, d.disk_index AS disk_index, d.blob_key AS blob_key \
             FROM image_disks d JOIN images i ON i.image_id = d.image_id \
             WHERE i.state IN ('NORMAL', 'IMPORTING')",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let image_id: String = col(r, "image_id")?;
                let index: i64 = col(r, "disk_index")?;
                let key: Option<String> = col(r, "blob_key")?;
                Ok(key.unwrap_or_else(|| default_blob_key(&image_id, index)))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(CatalogError::from)
    }

    /// Images whose job is running under a lease that has not expired.
    pub async fn live_job_ids(&self) -> Result<std::collections::HashSet<String>, CatalogError> {
        let rows = sqlx::query(
            "SELECT image_id FROM import_jobs WHERE state = 'RUNNING' AND lease_until >= $1",
        )
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| col(r, "image_id"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(CatalogError::from)
    }

    /// Number of jobs per state (metrics, tests).
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>, CatalogError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM import_jobs GROUP BY state ORDER BY state",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((col(r, "state")?, col(r, "n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(CatalogError::from)
    }
}

/// The claim statement (see the module's comment on fairness). Binds: $1
/// node, $2 lease end, $3 now, $4 max attempts, $5 the per-account cap (0:
/// none).
fn claim_sql(backend: Backend, max_running_per_account: u32) -> String {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    // Jobs of j's account running under a live lease, and its last claim.
    let running = "(SELECT COUNT(*) FROM import_jobs r WHERE r.account_uin = j.account_uin \
                   AND r.state = 'RUNNING' AND r.lease_until >= $3)";
    let last_claim = "(SELECT COALESCE(MAX(c.claimed_at), 0) FROM import_jobs c \
                      WHERE c.account_uin = j.account_uin)";
    let cap = if max_running_per_account > 0 {
        format!(" AND {running} < $5")
    } else {
        // $5 is bound either way; keep it referenced so both dialects accept it.
        " AND $5 >= 0".to_string()
    };
    format!(
        "UPDATE import_jobs SET state = 'RUNNING', lease_owner = $1, lease_until = $2, \
         heartbeat_at = $3, claimed_at = $3, attempts = attempts + 1, node = $1, \
         started_at = COALESCE(started_at, $3), updated_at = $3, phase = 'FETCHING' \
         WHERE image_id = (SELECT j.image_id FROM import_jobs j \
            WHERE ((j.state = 'QUEUED' AND j.run_after <= $3) \
                   OR (j.state = 'RUNNING' AND j.lease_until < $3)) \
              AND j.attempts < $4{cap} \
            ORDER BY {running}, {last_claim}, j.created_at, j.image_id LIMIT 1{lock}) \
         RETURNING image_id, attempts, details"
    )
}

/// The blob key of a disk when the row does not name one.
pub fn default_blob_key(image_id: &str, disk_index: i64) -> String {
    super::blob_key_for(image_id, usize::try_from(disk_index).unwrap_or(0))
}
