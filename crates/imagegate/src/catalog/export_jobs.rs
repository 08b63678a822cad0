//! Export tasks, the workers' side: the same lease discipline as import
//! jobs (`jobs`). A task is claimed by one worker under a lease its
//! heartbeat extends; a worker that dies leaves the lease to expire and the
//! task is claimed again (the attempt starts over: objects are published
//! whole or not at all, so there is nothing to resume). Every change of a
//! running task is guarded by `lease_owner`.

use sqlx::Row;

use super::exports::ExportObject;
use super::jobs::Heartbeat;
use super::{col, now_ms, Backend, Catalog, CatalogError};
use crate::domain::{FailureCode, TaskState};

/// A claimed task with what the worker needs to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedExport {
    pub task_id: i64,
    pub account_uin: String,
    pub bucket: String,
    pub format: String,
    /// 1 for the first attempt.
    pub attempts: i64,
    pub objects: Vec<ExportObject>,
}

/// What each heartbeat records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportProgressRow {
    pub bytes_written: i64,
    pub guest_done: i64,
    pub guest_total: i64,
}

impl Catalog {
    /// Claim the oldest runnable export: queued, or running under an expired
    /// lease. Tasks that used `max_attempts` are failed instead.
    pub async fn claim_export(
        &self,
        node: &str,
        lease_ms: i64,
        max_attempts: i64,
    ) -> Result<Option<ClaimedExport>, CatalogError> {
        let _gate = self.write_gate().await;
        let now = now_ms();
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE export_tasks SET state = 'RUNNING', phase = 'EXPORTING', lease_owner = $1, \
             lease_until = $2, attempts = attempts + 1, node = $1, \
             started_at = COALESCE(started_at, $3), updated_at = $3, \
             bytes_written = 0, guest_done = 0 \
             WHERE task_id = (SELECT task_id FROM export_tasks \
                WHERE ((state = 'QUEUED' AND run_after <= $3) OR (state = 'RUNNING' AND lease_until < $3)) \
                  AND attempts < $4 \
                ORDER BY created_at, task_id LIMIT 1{lock}) \
             RETURNING task_id, account_uin, bucket, export_format, attempts"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(node)
            .bind(now + lease_ms)
            .bind(now)
            .bind(max_attempts)
            .fetch_optional(self.pool())
            .await?;
        drop(_gate);
        let Some(row) = row else {
            return Ok(None);
        };
        let task_id: i64 = col(&row, "task_id")?;
        Ok(Some(ClaimedExport {
            task_id,
            account_uin: col(&row, "account_uin")?,
            bucket: col(&row, "bucket")?,
            format: col(&row, "export_format")?,
            attempts: col(&row, "attempts")?,
            objects: self.export_objects(task_id).await?,
        }))
    }

    /// Fails the tasks whose workers died `max_attempts` times; returns
    /// them, so the caller removes what their attempts published.
    pub async fn fail_exhausted_exports(
        &self,
        max_attempts: i64,
    ) -> Result<Vec<i64>, CatalogError> {
        let now = now_ms();
        let stuck = sqlx::query(
            "SELECT task_id FROM export_tasks WHERE state = 'RUNNING' AND lease_until < $1 \
             AND attempts >= $2",
        )
        .bind(now)
        .bind(max_attempts)
        .fetch_all(self.pool())
        .await?;
        let message = format!(
            "The export was interrupted {max_attempts} times (the worker running it stopped \
             without finishing); nothing was left in the bucket. Export the image again; if it \
             keeps failing, check the workers' logs."
        );
        let mut failed = Vec::new();
        for row in stuck {
            let task_id: i64 = col(&row, "task_id")?;
            let _gate = self.write_gate().await;
            let done = sqlx::query(
                "UPDATE export_tasks SET state = 'FAILED', phase = 'DONE', lease_owner = NULL, \
                 lease_until = NULL, finished_at = $1, updated_at = $1, failure_code = $2, \
                 failure_message = $3 \
                 WHERE task_id = $4 AND state = 'RUNNING' AND lease_until < $1",
            )
            .bind(now)
            .bind(FailureCode::ExportInterrupted)
            .bind(&message)
            .bind(task_id)
            .execute(self.pool())
            .await?;
            if done.rows_affected() == 1 {
                failed.push(task_id);
            }
        }
        Ok(failed)
    }

    /// Marks an object visible in the bucket (so a failure removes it).
    pub async fn mark_published(
        &self,
        task_id: i64,
        seq: i64,
        published: bool,
    ) -> Result<(), CatalogError> {
        let _gate = self.write_gate().await;
        sqlx::query("UPDATE export_objects SET published = $1 WHERE task_id = $2 AND seq = $3")
            .bind(i64::from(published))
            .bind(task_id)
            .bind(seq)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records the disks' guest sizes once the worker opened them.
    pub async fn record_export_sizes(
        &self,
        task_id: i64,
        owner: &str,
        sizes: &[(i64, i64)],
    ) -> Result<(), CatalogError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool().begin().await?;
        let total: i64 = sizes.iter().map(|(_, s)| s).sum();
        let held = sqlx::query(
            "UPDATE export_tasks SET guest_total = $1 \
             WHERE task_id = $2 AND lease_owner = $3 AND state = 'RUNNING'",
        )
        .bind(total)
        .bind(task_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() == 1 {
            for (seq, size) in sizes {
                sqlx::query(
                    "UPDATE export_objects SET guest_size = $1 WHERE task_id = $2 AND seq = $3",
                )
                .bind(size)
                .bind(task_id)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Extend the lease and record progress; `Lost` means stop at once.
    pub async fn heartbeat_export(
        &self,
        task_id: i64,
        owner: &str,
        lease_ms: i64,
        p: ExportProgressRow,
    ) -> Result<Heartbeat, CatalogError> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let done = sqlx::query(
            "UPDATE export_tasks SET lease_until = $1, updated_at = $2, bytes_written = $3, \
             guest_done = $4 WHERE task_id = $5 AND lease_owner = $6 AND state = 'RUNNING'",
        )
        .bind(now + lease_ms)
        .bind(now)
        .bind(p.bytes_written)
        .bind(p.guest_done)
        .bind(task_id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        drop(_gate);
        if done.rows_affected() == 0 {
            return Ok(Heartbeat::Lost);
        }
        let cancel: i64 =
            sqlx::query("SELECT cancel_requested FROM export_tasks WHERE task_id = $1")
                .bind(task_id)
                .fetch_one(self.pool())
                .await?
                .try_get("cancel_requested")?;
        Ok(if cancel != 0 {
            Heartbeat::CancelRequested
        } else {
            Heartbeat::Held
        })
    }

    /// Record the outcome, only if `owner` still holds the lease: `Ok` is
    /// success, `Err((code, message))` a failure (`ExportCancelled`: CANCELLED).
    pub async fn finish_export(
        &self,
        task_id: i64,
        owner: &str,
        outcome: Result<ExportProgressRow, (FailureCode, &str)>,
    ) -> Result<bool, CatalogError> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let done = match outcome {
            Ok(p) => sqlx::query(
                "UPDATE export_tasks SET state = 'SUCCEEDED', phase = 'DONE', lease_owner = NULL, \
                 lease_until = NULL, finished_at = $1, updated_at = $1, bytes_written = $2, \
                 guest_done = $3, failure_code = NULL, failure_message = NULL \
                 WHERE task_id = $4 AND lease_owner = $5 AND state = 'RUNNING'",
            )
            .bind(now)
            .bind(p.bytes_written)
            .bind(p.guest_total)
            .bind(task_id)
            .bind(owner)
            .execute(self.pool())
            .await?,
            Err((code, message)) => {
                let state = if code.is_cancel() {
                    TaskState::Cancelled
                } else {
                    TaskState::Failed
                };
                sqlx::query(
                    "UPDATE export_tasks SET state = $1, phase = 'DONE', lease_owner = NULL, \
                     lease_until = NULL, finished_at = $2, updated_at = $2, failure_code = $3, \
                     failure_message = $4 \
                     WHERE task_id = $5 AND lease_owner = $6 AND state = 'RUNNING'",
                )
                .bind(state)
                .bind(now)
                .bind(code)
                .bind(message)
                .bind(task_id)
                .bind(owner)
                .execute(self.pool())
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Hand a running task back to the queue (graceful shutdown); the
    /// attempt does not count.
    pub async fn release_export(&self, task_id: i64, owner: &str) -> Result<bool, CatalogError> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let done = sqlx::query(
            "UPDATE export_tasks SET state = 'QUEUED', phase = 'QUEUED', lease_owner = NULL, \
             lease_until = NULL, run_after = $1, updated_at = $1, \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
             WHERE task_id = $2 AND lease_owner = $3 AND state = 'RUNNING'",
        )
        .bind(now)
        .bind(task_id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether an unfinished task other than `task_id` writes `object_key`
    /// in `bucket` (its upload there may be live: not to be aborted).
    pub async fn export_key_shared(
        &self,
        task_id: i64,
        bucket: &str,
        object_key: &str,
    ) -> Result<bool, CatalogError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM export_objects o JOIN export_tasks t ON t.task_id = o.task_id \
             WHERE t.bucket = $1 AND o.object_key = $2 AND t.task_id <> $3 \
             AND t.state IN ('QUEUED', 'RUNNING')",
        )
        .bind(bucket)
        .bind(object_key)
        .bind(task_id)
        .fetch_one(self.pool())
        .await?;
        let n: i64 = col(&row, "n")?;
        Ok(n > 0)
    }

    /// Tasks running under a lease that has not expired (the temporary
    /// objects of any other task are garbage).
    pub async fn live_export_ids(&self) -> Result<Vec<i64>, CatalogError> {
        let rows = sqlx::query(
            "SELECT task_id FROM export_tasks WHERE state = 'RUNNING' AND lease_until >= $1",
        )
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| col(r, "task_id"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(CatalogError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::super::exports::{ExportInsert, NewExport};
    use super::*;

    fn export(bucket: &str, key: &str) -> NewExport {
        NewExport {
            account_uin: "u1".into(),
            region: "ap-guangzhou".into(),
            bucket: bucket.into(),
            format: "VMDK".into(),
            objects: vec![ExportObject {
                seq: 0,
                image_id: "img-aaaaaaaa".into(),
                disk_index: 0,
                snapshot_id: "snap-aaaaaaaa".into(),
                blob_key: "img-aaaaaaaa.qcow2".into(),
                object_key: key.into(),
                guest_size: 0,
                published: false,
            }],
            max_active: 10,
        }
    }

    async fn shared(c: &Catalog, task_id: i64) -> bool {
        c.export_key_shared(task_id, "exp-1250000000", "a.vmdk")
            .await
            .unwrap()
    }

    async fn insert(c: &Catalog, new: &NewExport) -> i64 {
        match c.insert_export(new).await.unwrap() {
            ExportInsert::Created { task_id } => task_id,
            other => panic!("{other:?}"),
        }
    }

    /// The dead uploads of a retried export are aborted only for keys no
    /// other unfinished task writes.
    #[tokio::test]
    async fn a_key_is_shared_only_with_other_unfinished_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let c = Catalog::open(&config).await.unwrap();
        let mine = insert(&c, &export("exp-1250000000", "a.vmdk")).await;
        assert!(!shared(&c, mine).await);
        // Another key, or the same key in another bucket: not shared.
        insert(&c, &export("exp-1250000000", "b.vmdk")).await;
        insert(&c, &export("other-1250000000", "a.vmdk")).await;
        assert!(!shared(&c, mine).await);
        // The same key in the same bucket, queued then running: shared.
        let other = insert(&c, &export("exp-1250000000", "a.vmdk")).await;
        assert!(shared(&c, mine).await);
        assert!(shared(&c, other).await);
        let claimed = loop {
            let t = c.claim_export("n1", 60_000, 3).await.unwrap().unwrap();
            if t.task_id == other {
                break t;
            }
        };
        assert!(shared(&c, mine).await);
        // Once that task has ended, the key is the retried task's alone.
        let done = c
            .finish_export(claimed.task_id, "n1", Ok(ExportProgressRow::default()))
            .await
            .unwrap();
        assert!(done);
        assert!(!shared(&c, mine).await);
    }
}
