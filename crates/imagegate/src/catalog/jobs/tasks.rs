//! The tenant's view of its jobs: DescribeImportImageTasks and
//! CancelImportImageTask.

use sqlx::Row;

use crate::catalog::{col, now_ms, Catalog, CatalogError};
use crate::domain::{FailureCode, ImageState, ImportPhase, JobDetails, TaskState};

/// One row of `DescribeImportImageTasks`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub image_id: String,
    pub image_name: String,
    pub image_state: ImageState,
    pub state: TaskState,
    pub phase: Option<ImportPhase>,
    pub attempts: i64,
    pub bytes_fetched: i64,
    pub bytes_total: Option<i64>,
    pub source_format: Option<String>,
    pub virtual_size: Option<i64>,
    pub sha256: Option<String>,
    pub failure_code: Option<FailureCode>,
    pub failure_message: Option<String>,
    pub details: JobDetails,
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
    AlreadyFinished,
    NotFound,
}

impl Catalog {
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
        let state: TaskState = col(&row, "state")?;
        match state {
            TaskState::Queued => {
                let message =
                    "The import was cancelled by CancelImportImageTask before it started.";
                if self
                    .finish_job_failed_if(
                        image_id,
                        None,
                        FailureCode::ImportCancelled,
                        message,
                        TaskState::Cancelled,
                    )
                    .await?
                {
                    Ok(CancelOutcome::Cancelled)
                } else {
                    // It was claimed in between: ask the worker.
                    self.request_cancel(image_id).await
                }
            }
            TaskState::Running => self.request_cancel(image_id).await,
            _finished => Ok(CancelOutcome::AlreadyFinished),
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
            CancelOutcome::AlreadyFinished
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
            .map(task_from_row)
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok((total, tasks))
    }
}

/// One row of the task listing.
fn task_from_row(r: &sqlx::any::AnyRow) -> Result<TaskRow, sqlx::Error> {
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
        details: JobDetails::from_column(col::<Option<String>>(r, "details")?.as_deref()),
        node: col(r, "node")?,
        cancel_requested: cancel != 0,
        created_at: col(r, "created_at")?,
        started_at: col(r, "started_at")?,
        finished_at: col(r, "finished_at")?,
    })
}
