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
//!
//! The module's parts: `claim.rs` (the fair claim and the failing of jobs
//! whose workers kept dying), `outcome.rs` (recording success or failure,
//! with the byte quota checked as the image is recorded), `tasks.rs`
//! (DescribeImportImageTasks and CancelImportImageTask); here the running
//! job's side: heartbeat, standing, release, and what the sweeper keeps.

mod claim;
mod outcome;
mod tasks;

pub use outcome::{FailureFacts, Finish, ImportSuccess};
pub use tasks::{CancelOutcome, TaskRow};

use sqlx::Row;

use super::{col, now_ms, Catalog, CatalogError};
use crate::domain::{ImportPhase, JobDetails, TaskState};

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
    /// Attempts so far (node, start), this one included.
    pub details: JobDetails,
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
    pub phase: ImportPhase,
    pub bytes_fetched: i64,
    pub bytes_total: Option<i64>,
    pub source_format: Option<String>,
    pub virtual_size: Option<i64>,
    pub details: JobDetails,
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

impl Catalog {
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
        .bind(progress.phase)
        .bind(progress.bytes_fetched)
        .bind(progress.bytes_total)
        .bind(progress.source_format.as_deref())
        .bind(progress.virtual_size)
        .bind(progress.details.to_column())
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
        let state: TaskState = col(&row, "state")?;
        if lease_owner.as_deref() != Some(owner) || state != TaskState::Running {
            return Ok(Heartbeat::Lost);
        }
        let cancel: i64 = col(&row, "cancel_requested")?;
        Ok(if cancel != 0 {
            Heartbeat::CancelRequested
        } else {
            Heartbeat::Held
        })
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
    pub async fn job_counts(&self) -> Result<Vec<(TaskState, i64)>, CatalogError> {
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

/// The blob key of a disk when the row does not name one.
pub fn default_blob_key(image_id: &str, disk_index: i64) -> String {
    super::blob_key_for(image_id, usize::try_from(disk_index).unwrap_or(0))
}
