//! Export tasks, the API's side: ExportImages writes a QUEUED task with its
//! objects in one transaction (under the account's cap on unfinished tasks),
//! DescribeExportImageTasks reads them, CancelExportImageTask stops them.
//! The workers' side (claim, heartbeat, outcome) is `export_jobs`.
//!
//! TaskIds are random integers below 2^53, so that every JSON client (the
//! web console's JavaScript included) reads them exactly.

use rand::Rng;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{col, is_unique_violation, now_ms, Catalog, CatalogError};
use crate::domain::{ExportPhase, FailureCode, TaskState};

/// Largest TaskId handed out (JavaScript's largest exact integer).
const MAX_TASK_ID: i64 = (1 << 53) - 1;

/// States of a task that still holds a worker or waits for one.
pub const ACTIVE_STATES: &str = "('QUEUED', 'RUNNING')";

/// One object an export writes: a disk of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportObject {
    pub seq: i64,
    pub image_id: String,
    pub disk_index: i64,
    pub snapshot_id: String,
    pub blob_key: String,
    /// Key in the bucket, without a leading `/`.
    pub object_key: String,
    /// Guest (virtual) size, once a worker opened the disk; 0 before.
    pub guest_size: i64,
    /// Visible in the bucket (an attempt published it).
    pub published: bool,
}

/// Everything ExportImages writes, already validated.
#[derive(Debug, Clone)]
pub struct NewExport {
    pub account_uin: String,
    pub region: String,
    pub bucket: String,
    pub format: String,
    /// In writing order; `seq` is assigned here.
    pub objects: Vec<ExportObject>,
    /// Unfinished tasks the account may have (`LimitExceeded.ExportImageTaskLimitExceeded`).
    pub max_active: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportInsert {
    Created { task_id: i64 },
    TooManyTasks,
}

/// One row of DescribeExportImageTasks.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportTaskRow {
    pub task_id: i64,
    pub bucket: String,
    pub format: String,
    pub state: TaskState,
    pub phase: ExportPhase,
    pub attempts: i64,
    pub cancel_requested: bool,
    pub bytes_written: i64,
    pub guest_done: i64,
    pub guest_total: i64,
    pub failure_code: Option<FailureCode>,
    pub failure_message: Option<String>,
    pub node: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub objects: Vec<ExportObject>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportCancel {
    /// Not started: cancelled at once.
    Cancelled,
    /// Running: its worker stops within one heartbeat and removes its output.
    Requested,
    /// Already finished: its state, `None` when it ended while being
    /// cancelled.
    AlreadyFinished(Option<TaskState>),
    NotFound,
}

/// DescribeExportImageTasks selection.
#[derive(Debug, Clone, Default)]
pub struct ExportQuery {
    pub task_ids: Option<Vec<i64>>,
    pub image_ids: Option<Vec<String>>,
    pub offset: i64,
    pub limit: i64,
}

impl Catalog {
    /// Writes a QUEUED task and its objects, unless the account already has
    /// `max_active` unfinished tasks.
    pub async fn insert_export(&self, new: &NewExport) -> Result<ExportInsert, CatalogError> {
        for _ in 0..8 {
            let task_id = rand::rng().random_range(1..=MAX_TASK_ID);
            match self.try_insert_export(new, task_id).await {
                Err(CatalogError::Db(e)) if is_unique_violation(&e) => continue,
                other => return other,
            }
        }
        Err(CatalogError::IdSpaceExhausted("export task"))
    }

    async fn try_insert_export(
        &self,
        new: &NewExport,
        task_id: i64,
    ) -> Result<ExportInsert, CatalogError> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let mut tx = self.pool().begin().await?;
        let active: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM export_tasks WHERE account_uin = $1 AND region = $2 \
             AND state IN {ACTIVE_STATES}"
        )))
        .bind(&new.account_uin)
        .bind(&new.region)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if active >= new.max_active {
            tx.rollback().await?;
            return Ok(ExportInsert::TooManyTasks);
        }
        sqlx::query(
            "INSERT INTO export_tasks (task_id, account_uin, region, bucket, export_format, state, \
             phase, run_after, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'QUEUED', 'QUEUED', $6, $6, $6)",
        )
        .bind(task_id)
        .bind(&new.account_uin)
        .bind(&new.region)
        .bind(&new.bucket)
        .bind(&new.format)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (seq, o) in new.objects.iter().enumerate() {
            sqlx::query(
                "INSERT INTO export_objects (task_id, seq, image_id, disk_index, snapshot_id, \
                 blob_key, object_key) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(task_id)
            .bind(seq as i64)
            .bind(&o.image_id)
            .bind(o.disk_index)
            .bind(&o.snapshot_id)
            .bind(&o.blob_key)
            .bind(&o.object_key)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ExportInsert::Created { task_id })
    }

    /// The objects of a task, in writing order.
    pub async fn export_objects(&self, task_id: i64) -> Result<Vec<ExportObject>, CatalogError> {
        let rows = sqlx::query(
            "SELECT seq, image_id, disk_index, snapshot_id, blob_key, object_key, guest_size, published \
             FROM export_objects WHERE task_id = $1 ORDER BY seq",
        )
        .bind(task_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(object_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(CatalogError::from)
    }

    /// The bucket of a task (`None`: no such task).
    pub async fn export_bucket(&self, task_id: i64) -> Result<Option<String>, CatalogError> {
        let row = sqlx::query("SELECT bucket FROM export_tasks WHERE task_id = $1")
            .bind(task_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => Some(col(&r, "bucket")?),
            None => None,
        })
    }

    /// DescribeExportImageTasks: the caller's tasks in a region, newest first.
    pub async fn describe_exports(
        &self,
        uin: &str,
        region: &str,
        q: &ExportQuery,
    ) -> Result<(i64, Vec<ExportTaskRow>), CatalogError> {
        let mut filter = String::from("t.account_uin = $1 AND t.region = $2");
        let mut n = 2;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if let Some(ids) = &q.task_ids {
            let marks: Vec<String> = ids.iter().map(|_| next()).collect();
            filter.push_str(&format!(" AND t.task_id IN ({})", marks.join(", ")));
        }
        if let Some(ids) = &q.image_ids {
            let marks: Vec<String> = ids.iter().map(|_| next()).collect();
            filter.push_str(&format!(
                " AND t.task_id IN (SELECT task_id FROM export_objects WHERE image_id IN ({}))",
                marks.join(", ")
            ));
        }
        let (limit_mark, offset_mark) = (next(), next());
        let bind_all = |sql: String| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(uin).bind(region);
            for id in q.task_ids.iter().flatten() {
                query = query.bind(*id);
            }
            for id in q.image_ids.iter().flatten() {
                query = query.bind(id.clone());
            }
            query
        };
        let total: i64 = bind_all(format!(
            "SELECT COUNT(*) AS n FROM export_tasks t WHERE {filter}"
        ))
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        let rows = bind_all(format!(
            "SELECT t.* FROM export_tasks t WHERE {filter} \
             ORDER BY t.created_at DESC, t.task_id DESC LIMIT {limit_mark} OFFSET {offset_mark}"
        ))
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(self.pool())
        .await?;
        let mut tasks = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut task = task_from_row(r)?;
            task.objects = self.export_objects(task.task_id).await?;
            tasks.push(task);
        }
        Ok((total, tasks))
    }

    /// CancelExportImageTask.
    pub async fn cancel_export(
        &self,
        uin: &str,
        region: &str,
        task_id: i64,
    ) -> Result<ExportCancel, CatalogError> {
        let row = sqlx::query(
            "SELECT state FROM export_tasks WHERE task_id = $1 AND account_uin = $2 AND region = $3",
        )
        .bind(task_id)
        .bind(uin)
        .bind(region)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(ExportCancel::NotFound);
        };
        let state: TaskState = col(&row, "state")?;
        let now = now_ms();
        let _gate = self.write_gate().await;
        match state {
            TaskState::Queued | TaskState::Running => {
                let cancelled = sqlx::query(
                    "UPDATE export_tasks SET state = 'CANCELLED', phase = 'DONE', \
                     failure_code = 'ExportCancelled', \
                     failure_message = 'The export was cancelled by CancelExportImageTask before it started.', \
                     finished_at = $1, updated_at = $1 WHERE task_id = $2 AND state = 'QUEUED'",
                )
                .bind(now)
                .bind(task_id)
                .execute(self.pool())
                .await?;
                if cancelled.rows_affected() == 1 {
                    self.note_change();
                    return Ok(ExportCancel::Cancelled);
                }
                let asked = sqlx::query(
                    "UPDATE export_tasks SET cancel_requested = 1, updated_at = $1 \
                     WHERE task_id = $2 AND state = 'RUNNING'",
                )
                .bind(now)
                .bind(task_id)
                .execute(self.pool())
                .await?;
                Ok(if asked.rows_affected() == 1 {
                    ExportCancel::Requested
                } else {
                    ExportCancel::AlreadyFinished(None)
                })
            }
            finished => Ok(ExportCancel::AlreadyFinished(Some(finished))),
        }
    }

    /// Whether one of `image_ids` is being exported (DeleteImages refuses it).
    pub async fn exporting_image(
        &self,
        image_ids: &[String],
    ) -> Result<Option<String>, CatalogError> {
        for id in image_ids {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT 1 AS x FROM export_objects o JOIN export_tasks t ON t.task_id = o.task_id \
                 WHERE o.image_id = $1 AND t.state IN {ACTIVE_STATES} LIMIT 1"
            )))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
            if row.is_some() {
                return Ok(Some(id.clone()));
            }
        }
        Ok(None)
    }
}

pub(super) fn object_from_row(r: &AnyRow) -> Result<ExportObject, sqlx::Error> {
    let published: i64 = col(r, "published")?;
    Ok(ExportObject {
        published: published != 0,
        seq: col(r, "seq")?,
        image_id: col(r, "image_id")?,
        disk_index: col(r, "disk_index")?,
        snapshot_id: col(r, "snapshot_id")?,
        blob_key: col(r, "blob_key")?,
        object_key: col(r, "object_key")?,
        guest_size: col(r, "guest_size")?,
    })
}

fn task_from_row(r: &AnyRow) -> Result<ExportTaskRow, sqlx::Error> {
    let cancel: i64 = col(r, "cancel_requested")?;
    Ok(ExportTaskRow {
        task_id: col(r, "task_id")?,
        bucket: col(r, "bucket")?,
        format: col(r, "export_format")?,
        state: col(r, "state")?,
        phase: col(r, "phase")?,
        attempts: col(r, "attempts")?,
        cancel_requested: cancel != 0,
        bytes_written: col(r, "bytes_written")?,
        guest_done: col(r, "guest_done")?,
        guest_total: col(r, "guest_total")?,
        failure_code: col(r, "failure_code")?,
        failure_message: col(r, "failure_message")?,
        node: col(r, "node")?,
        created_at: col(r, "created_at")?,
        started_at: col(r, "started_at")?,
        finished_at: col(r, "finished_at")?,
        objects: Vec::new(),
    })
}
