//! The import pipeline: workers claim queued imports from the catalog, run
//! them (fetch, inspect, convert, store; see `disk.rs`) under a lease kept
//! alive by a heartbeat (which also makes progress live and acts on a
//! cancel; see `heartbeat.rs`), and record the outcome: `NORMAL`, or
//! `IMPORTFAILED` with a precise reason.

pub mod disk;
pub mod failure;
pub mod guest_checks;
mod heartbeat;
mod patience;
mod phase_pause;
pub mod progress;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::accounts::Accounts;
use crate::blobstore::BlobStore;
use crate::catalog::jobs::{ClaimedJob, FailureFacts, Finish, ImportSuccess};
use crate::catalog::patience::write_outcome;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::domain::{DiskRecord, ImageState, PhaseTime};
use disk::{import_disk, DiskOutcome, DiskTask, GuestCheck, QuotaUse};
use failure::ImportFailure;
use progress::ImportProgress;

/// An attempt is retried this many times after its worker died.
pub const MAX_ATTEMPTS: i64 = 3;

/// Why a running import was stopped from outside.
const STOP_NONE: u8 = 0;
const STOP_USER: u8 = 1;
const STOP_LEASE_LOST: u8 = 2;
const STOP_SHUTDOWN: u8 = 3;

/// What the workers of one process share.
#[derive(Clone)]
pub struct Workers {
    pub config: Arc<Config>,
    pub catalog: Catalog,
    pub accounts: Arc<Accounts>,
    pub blobs: Arc<dyn BlobStore>,
    /// Identifies this process in leases and in DescribeImportImageTasks.
    pub node: String,
    /// Wakes idle workers when an import is queued by this process.
    pub wake: Arc<Notify>,
    /// Stops claiming; running imports are handed back to the queue.
    pub shutdown: CancellationToken,
}

/// `<hostname>:<pid>:<random>`, unique per process.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    let tag: u32 = rand::random();
    format!("{host}:{}:{tag:08x}", std::process::id())
}

impl Workers {
    fn lease_ms(&self) -> i64 {
        (self.config.workers.lease_seconds.max(2) * 1000) as i64
    }

    fn scratch_dir(&self, image_id: &str, disk_index: i64) -> PathBuf {
        self.config
            .data_dir
            .join("scratch")
            .join(image_id)
            .join(format!("disk{disk_index}"))
    }

    /// Run `workers.concurrency` import slots until shutdown. Returns when
    /// every slot has stopped (running imports released).
    pub async fn run(self) {
        self.reap_orphans().await;
        let slots = self.config.workers.concurrency.max(1);
        let mut handles = Vec::with_capacity(slots);
        for slot in 0..slots {
            let me = self.clone();
            handles.push(tokio::spawn(async move { me.slot_loop(slot).await }));
        }
        for h in handles {
            let _ = h.await;
        }
    }

    async fn slot_loop(&self, slot: usize) {
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let claimed = self
                .catalog
                .claim_job(
                    &self.node,
                    self.lease_ms(),
                    MAX_ATTEMPTS,
                    self.config.limits.max_running_per_account,
                )
                .await;
            match claimed {
                Ok(Some(job)) => {
                    tracing::info!(image_id = %job.image_id, attempt = job.attempts, slot, "import claimed");
                    self.run_job(job).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming an import failed");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        }
    }

    async fn run_job(&self, job: ClaimedJob) {
        // An earlier attempt of this job (on this node) may have died
        // mid-upload: its partial uploads are garbage now.
        let _ = self.blobs.remove_partials(&job.image_id).await;
        let _lease = crate::metrics::global().hold_lease();
        let progress = ImportProgress::for_image(&job.image_id);
        let cancel = CancellationToken::new();
        let stop_reason = Arc::new(AtomicU8::new(STOP_NONE));
        let beat = heartbeat::Beat::new(
            self,
            &job,
            progress.clone(),
            cancel.clone(),
            stop_reason.clone(),
        );
        let heartbeat = tokio::spawn(beat.run());

        let started = std::time::Instant::now();
        let result = self.import(&job, &progress, &cancel).await;
        heartbeat.abort();
        let _ = heartbeat.await;

        let reason = stop_reason.load(Ordering::SeqCst);
        match (result, reason) {
            (_, STOP_LEASE_LOST) => {
                // Another attempt owns the job: touch nothing it may be using.
                tracing::warn!(image_id = %job.image_id, "lease lost; attempt abandoned");
                crate::metrics::global().attempt_abandoned("lease_lost");
            }
            (Err(_), STOP_SHUTDOWN) => {
                match self.catalog.release_job(&job.image_id, &self.node).await {
                    Ok(_) => {
                        tracing::info!(image_id = %job.image_id, "import handed back to the queue");
                        crate::metrics::global().attempt_abandoned("released");
                    }
                    Err(e) => {
                        tracing::warn!(image_id = %job.image_id, error = %e, "release failed; the lease will expire")
                    }
                }
            }
            (Ok(ok), _) => self.record_success(&job, ok, &progress, started).await,
            (Err(failure), r) => {
                let failure = if r == STOP_USER {
                    ImportFailure::cancelled()
                } else {
                    failure
                };
                self.record_failure(&job, failure, started).await;
            }
        }
    }

    /// Records a finished attempt (its phase times included), then removes
    /// its leftovers; an account that went over its quota meanwhile fails it.
    async fn record_success(
        &self,
        job: &ClaimedJob,
        mut ok: ImportSuccess,
        progress: &ImportProgress,
        started: std::time::Instant,
    ) {
        ok.details.phase_times = progress
            .phase_times()
            .into_iter()
            .map(|(phase, d)| PhaseTime {
                phase,
                ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        let commit = std::time::Instant::now();
        let recorded = write_outcome(
            "recording a finished import",
            &self.shutdown,
            || self.catalog.finish_job_ok(&job.image_id, &self.node, &ok),
            // The stored disks are all it needs now.
            || self.remove_leftovers(&job.image_id),
        )
        .await;
        match recorded {
            Ok(Finish::OverQuota { used }) => {
                // Another import of the account finished first.
                let refusal = crate::storage::StorageRefusal::QuotaExceeded {
                    quota: ok.storage_quota.unwrap_or(0) as u64,
                    used: used as u64,
                };
                self.record_failure(job, ImportFailure::storage(&refusal), started)
                    .await;
            }
            Ok(Finish::Recorded) => {
                tracing::info!(image_id = %job.image_id, seconds = started.elapsed().as_secs_f64(), commit_seconds = commit.elapsed().as_secs_f64(), bytes = ok.bytes_fetched, "import finished: NORMAL");
                crate::metrics::global().import_finished(
                    ImageState::Normal,
                    None,
                    started.elapsed(),
                );
                let _ = self.blobs.remove_partials(&job.image_id).await;
                self.remove_scratch(&job.image_id).await;
            }
            Ok(Finish::LeaseLost) => {
                tracing::warn!(image_id = %job.image_id, "import finished after its lease was lost; outcome dropped")
            }
            Err(e) => {
                tracing::error!(image_id = %job.image_id, error = %e, "recording a finished import failed; the lease will expire and the job rerun")
            }
        }
    }

    /// Records a failed attempt, then removes what it stored. A full disk
    /// may also refuse the catalog's write: the attempt's scratch space is
    /// freed and the write waits for room (see `catalog::patience`).
    async fn record_failure(
        &self,
        job: &ClaimedJob,
        failure: ImportFailure,
        started: std::time::Instant,
    ) {
        let facts = failure.guest.as_ref().map(|report| {
            let f = guest_checks::facts(report);
            let mut details = job.details.clone();
            details.guest = serde_json::to_value(report).ok();
            FailureFacts {
                os_name: f.os_name,
                platform: f.platform,
                is_support_cloudinit: f.is_support_cloudinit,
                details,
            }
        });
        // What the tenant reads names nothing of the server; the log keeps
        // the operator's text.
        let raw_message = failure.message.clone();
        let failure = ImportFailure {
            message: crate::redact::Redactor::new(&self.config).redact(&failure.message),
            ..failure
        };
        let recorded = write_outcome(
            "recording a failed import",
            &self.shutdown,
            || {
                self.catalog.finish_job_failed(
                    &job.image_id,
                    &self.node,
                    failure.code,
                    &failure.message,
                    facts.as_ref(),
                )
            },
            || self.remove_leftovers(&job.image_id),
        )
        .await;
        match recorded {
            Ok(true) => {
                tracing::info!(image_id = %job.image_id, code = %failure.code, message = %raw_message, "import failed");
                crate::metrics::global().import_finished(
                    ImageState::ImportFailed,
                    Some(failure.code),
                    started.elapsed(),
                );
                self.remove_failed_blobs(job).await;
                self.remove_scratch(&job.image_id).await;
            }
            Ok(false) => {
                tracing::warn!(image_id = %job.image_id, "import failed after its lease was lost; outcome dropped")
            }
            Err(e) => {
                tracing::error!(image_id = %job.image_id, error = %e, "recording a failed import failed; the lease will expire and the job rerun");
                // Of no use to the next attempt, which starts over.
                self.remove_leftovers(&job.image_id).await;
            }
        }
    }

    async fn import(
        &self,
        job: &ClaimedJob,
        progress: &Arc<ImportProgress>,
        cancel: &CancellationToken,
    ) -> Result<ImportSuccess, ImportFailure> {
        let account = self
            .accounts
            .iter()
            .find(|a| a.uin == job.account_uin)
            .cloned()
            .ok_or_else(|| {
                ImportFailure::internal(format!(
                    "the account {} that queued this import is no longer configured",
                    job.account_uin
                ))
            })?;
        let mut quota = self.quota_use(&account).await?;
        let mut outcomes: Vec<(i64, DiskOutcome)> = Vec::with_capacity(job.disks.len());
        for disk in &job.disks {
            crate::storage::check_free_space(
                &self.config.data_dir,
                self.config.limits.min_free_space,
                0,
            )
            .map_err(|r| ImportFailure::storage(&r))?;
            let scratch = self.scratch_dir(&job.image_id, disk.disk_index);
            crate::private_fs::create_dir_all(&scratch).map_err(|e| {
                ImportFailure::internal(format!("cannot create scratch space: {e}"))
            })?;
            let guest_check = (disk.disk_index == 0).then(|| system_disk_check(job));
            let task = DiskTask {
                url: &disk.source_url,
                app_id: account.app_id,
                blob_key: &disk.blob_key,
                force: job.force,
                guest_check,
                scratch: &scratch,
                quota,
            };
            let outcome = import_disk(
                &self.config,
                self.blobs.clone(),
                task,
                progress.clone(),
                cancel.clone(),
            )
            .await
            .map_err(|f| {
                if disk.disk_index == 0 {
                    f
                } else {
                    ImportFailure::new(
                        f.code,
                        format!("data disk {}: {}", disk.disk_index, f.message),
                    )
                }
            })?;
            // The next disk's quota counts this one's bytes.
            if let Some(q) = quota.as_mut() {
                q.used = q.used.saturating_add(outcome.stored_size);
            }
            outcomes.push((disk.disk_index, outcome));
        }
        success(job, &outcomes, quota.map(|q| q.quota as i64))
    }

    /// The account's byte quota and what its images store now; an account
    /// already at its quota fails here, before anything is fetched.
    async fn quota_use(
        &self,
        account: &crate::accounts::Account,
    ) -> Result<Option<QuotaUse>, ImportFailure> {
        let Some(quota) = account.storage_quota else {
            return Ok(None);
        };
        let used = self
            .on_catalog("reading the account's usage", || {
                self.catalog.stored_bytes(&account.uin)
            })
            .await
            .map_err(|e| ImportFailure::internal(format!("reading the account's usage: {e}")))?;
        let used = u64::try_from(used).unwrap_or(0);
        crate::storage::quota_room(Some(quota), used).map_err(|r| ImportFailure::storage(&r))?;
        Ok(Some(QuotaUse { quota, used }))
    }

    /// What an attempt holds besides its stored disks: partial uploads and
    /// scratch space.
    async fn remove_leftovers(&self, image_id: &str) {
        let _ = self.blobs.remove_partials(image_id).await;
        self.remove_scratch(image_id).await;
    }

    async fn remove_scratch(&self, image_id: &str) {
        let dir = self.config.data_dir.join("scratch").join(image_id);
        let _ = tokio::fs::remove_dir_all(dir).await;
    }

    /// Remove blobs no image needs (left by crashed or superseded attempts,
    /// or by deletes interrupted halfway).
    pub async fn reap_orphans(&self) {
        match self.reap_once().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "orphan blobs removed"),
            Err(e) => tracing::warn!(error = %e, "orphan blob sweep failed"),
        }
    }

    async fn reap_once(&self) -> anyhow::Result<usize> {
        // Listing first, then reading the catalog: a blob published between
        // the two reads belongs to an image that is IMPORTING or NORMAL by
        // the time the catalog is read, so it is never taken for an orphan.
        let blobs = self.blobs.list().await?;
        let live = self.catalog.live_blob_keys().await?;
        let mut removed = 0;
        for blob in blobs {
            if !live.contains(&blob.key) {
                self.blobs.delete(&blob.key).await?;
                removed += 1;
            }
        }
        // Partial uploads of jobs no live attempt holds died with their process.
        let running = self.catalog.live_job_ids().await?;
        for prefix in self.blobs.partial_prefixes().await? {
            if !running.contains(&prefix) {
                removed += self.blobs.remove_partials(&prefix).await? as usize;
            }
        }
        Ok(removed)
    }
}

/// Tencent reports sizes in whole GiB, rounded up.
pub fn gib_rounded_up(bytes: u64) -> i64 {
    (bytes.div_ceil(1 << 30)) as i64
}

/// The checks of Tencent's import rules on the system disk's guest, as
/// the job declared it.
fn system_disk_check(job: &ClaimedJob) -> GuestCheck {
    let (os_type, os_version) = (job.os_type.clone(), job.os_version.clone());
    let (architecture, boot_mode, force) =
        (job.architecture.clone(), job.boot_mode.clone(), job.force);
    Arc::new(move |report: &guestinspect::GuestReport| {
        guest_checks::check(
            report,
            &guest_checks::Declared {
                os_type: &os_type,
                os_version: &os_version,
                architecture: &architecture,
                boot_mode: &boot_mode,
                force,
            },
        )
    }) as GuestCheck
}

/// What a finished import records: the system disk's facts, every disk's
/// record, and the totals.
fn success(
    job: &ClaimedJob,
    outcomes: &[(i64, DiskOutcome)],
    storage_quota: Option<i64>,
) -> Result<ImportSuccess, ImportFailure> {
    let system = outcomes
        .iter()
        .find(|(i, _)| *i == 0)
        .map(|(_, o)| o.clone())
        .ok_or_else(|| ImportFailure::internal("the image has no system disk"))?;
    let guest_details = system
        .guest
        .as_ref()
        .and_then(|g| serde_json::to_value(g).ok());
    let facts = system.guest.as_ref().map(guest_checks::facts);
    let mut details = job.details.clone();
    details.disks = outcomes
        .iter()
        .map(|(i, o)| DiskRecord {
            disk_index: *i,
            source_format: o.source_format.clone(),
            source_subformat: o.source_subformat.clone(),
            virtual_size: o.virtual_size,
            stored_size: o.stored_size,
            source_bytes: o.source_bytes,
            sha256: o.sha256.clone(),
            resumes: u64::from(o.resumes),
        })
        .collect();
    details.guest = guest_details;
    Ok(ImportSuccess {
        sha256: system.sha256.clone(),
        source_format: match &system.source_subformat {
            Some(sub) => format!("{} ({sub})", system.source_format),
            None => system.source_format.clone(),
        },
        virtual_size: system.virtual_size as i64,
        bytes_fetched: outcomes.iter().map(|(_, o)| o.source_bytes as i64).sum(),
        image_size_gib: gib_rounded_up(system.virtual_size),
        stored_bytes: outcomes.iter().map(|(_, o)| o.stored_size as i64).sum(),
        storage_quota,
        disk_sizes: outcomes
            .iter()
            .map(|(i, o)| (*i, gib_rounded_up(o.virtual_size)))
            .collect(),
        os_name: facts.as_ref().and_then(|f| f.os_name.clone()),
        platform: facts.as_ref().and_then(|f| f.platform.clone()),
        is_support_cloudinit: facts.is_some_and(|f| f.is_support_cloudinit),
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_gib() {
        assert_eq!(gib_rounded_up(0), 0);
        assert_eq!(gib_rounded_up(1), 1);
        assert_eq!(gib_rounded_up(1 << 30), 1);
        assert_eq!(gib_rounded_up((1 << 30) + 1), 2);
    }
}
