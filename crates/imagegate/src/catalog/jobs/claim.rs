//! Claiming a job: one statement that takes the fairest runnable job (see
//! the parent module on fairness), and failing the jobs whose workers died
//! `max_attempts` times instead of claiming them again.

use sqlx::any::AnyRow;

use super::{default_blob_key, ClaimedJob, JobDisk};
use crate::catalog::{col, now_ms, Backend, Catalog, CatalogError};
use crate::domain::{FailureCode, JobDetails, TaskState};

/// The advisory lock class of capped claims (the two-key form: apart from
/// the per-account `hashtext` locks, which use the one-key form).
const CLAIM_LOCK_CLASS: i32 = 0x1a6e_0001;

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
        let text: Option<String> = col(&row, "details")?;
        let mut details = JobDetails::from_column(text.as_deref());
        // Record which node runs this attempt (DescribeImportImageTasks shows it).
        details.record_attempt(attempts, node, now);
        sqlx::query("UPDATE import_jobs SET details = $1 WHERE image_id = $2 AND lease_owner = $3")
            .bind(details.to_column())
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
        let disks = job_disks(&mut tx, &image_id).await?;
        let job = claimed(&image, image_id, attempts, disks, details)?;
        tx.commit().await?;
        Ok(Some(job))
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
            self.finish_job_failed_if(
                &image_id,
                None,
                FailureCode::ImportInterrupted,
                &message,
                TaskState::Failed,
            )
            .await?;
        }
        Ok(())
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

/// The disks of the image a claimed job imports, system disk first.
async fn job_disks(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    image_id: &str,
) -> Result<Vec<JobDisk>, CatalogError> {
    sqlx::query(
        "SELECT disk_index, disk_usage, source_url, blob_key FROM image_disks \
         WHERE image_id = $1 ORDER BY disk_index",
    )
    .bind(image_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r: &AnyRow| {
        let index: i64 = col(r, "disk_index")?;
        let blob_key: Option<String> = col(r, "blob_key")?;
        Ok(JobDisk {
            disk_index: index,
            disk_usage: col(r, "disk_usage")?,
            source_url: col(r, "source_url")?,
            blob_key: blob_key.unwrap_or_else(|| default_blob_key(image_id, index)),
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()
    .map_err(CatalogError::from)
}

/// The claimed job from its image's row and what the claim read.
fn claimed(
    image: &AnyRow,
    image_id: String,
    attempts: i64,
    disks: Vec<JobDisk>,
    details: JobDetails,
) -> Result<ClaimedJob, CatalogError> {
    let force: i64 = col(image, "force")?;
    Ok(ClaimedJob {
        image_id,
        account_uin: col(image, "account_uin")?,
        region: col(image, "region")?,
        os_type: col(image, "os_type")?,
        os_version: col(image, "os_version")?,
        architecture: col(image, "architecture")?,
        boot_mode: col(image, "boot_mode")?,
        force: force != 0,
        attempts,
        disks,
        details,
    })
}
