//! The heartbeat of one running import: it keeps the job's lease, makes the
//! import's progress visible in the catalog, and stops the import when the
//! user cancels it, the lease is lost or the process shuts down.
//!
//! Live without a write storm: it looks every [`TICK`]. It writes (progress
//! and lease in one `UPDATE`) only when the progress changed since its last
//! write, or when the lease needs renewing (three times per lease, so one
//! lost beat never costs it); otherwise it only reads whether a cancel was
//! asked or the lease lost. So a phase or byte counter reaches
//! `DescribeImportImageTasks`, and a cancel reaches the import, within one
//! tick; a busy import costs at most two writes a second, an idle one (a
//! stalled source) one per third of a lease. Each write counts in
//! `imagegate_import_progress_writes_total`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::progress::{ImportProgress, ProgressSnapshot};
use super::{Workers, STOP_LEASE_LOST, STOP_NONE, STOP_SHUTDOWN, STOP_USER};
use crate::catalog::jobs::{ClaimedJob, Heartbeat, JobProgress};
use crate::domain::{JobDetails, ProgressRecord};

/// How often the heartbeat looks at the progress and the job's standing.
pub const TICK: Duration = Duration::from_millis(500);

/// One import's heartbeat (module docs).
pub(super) struct Beat {
    pub workers: Workers,
    pub image_id: String,
    /// The job's details as claimed; the progress is merged in.
    pub details: JobDetails,
    pub progress: Arc<ImportProgress>,
    /// Cancelled to stop the import.
    pub cancel: CancellationToken,
    /// Why the import was stopped (`STOP_*`).
    pub stop_reason: Arc<AtomicU8>,
}

impl Beat {
    pub fn new(
        workers: &Workers,
        job: &ClaimedJob,
        progress: Arc<ImportProgress>,
        cancel: CancellationToken,
        stop_reason: Arc<AtomicU8>,
    ) -> Beat {
        Beat {
            workers: workers.clone(),
            image_id: job.image_id.clone(),
            details: job.details.clone(),
            progress,
            cancel,
            stop_reason,
        }
    }

    /// Runs until the import is stopped from outside (or the task aborted
    /// when the import ends by itself).
    pub async fn run(mut self) {
        let lease_ms = self.workers.lease_ms();
        let renew = Duration::from_millis((lease_ms / 3).max(300) as u64);
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut written: Option<(ProgressSnapshot, Instant)> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = self.workers.shutdown.cancelled() => {
                    self.stop(STOP_SHUTDOWN);
                    return;
                }
            }
            let snap = self.progress.snapshot();
            let due = match &written {
                Some((last, at)) => *last != snap || at.elapsed() >= renew,
                None => true,
            };
            let standing = if due {
                let r = self.write(&snap, lease_ms).await;
                if r.is_ok() {
                    written = Some((snap, Instant::now()));
                }
                r
            } else {
                let w = &self.workers;
                w.catalog.job_standing(&self.image_id, &w.node).await
            };
            match standing {
                Ok(Heartbeat::Held) => {}
                Ok(Heartbeat::CancelRequested) => self.stop(STOP_USER),
                Ok(Heartbeat::Lost) => {
                    // Another attempt owns the job: the outcome is not ours.
                    self.stop_reason.store(STOP_LEASE_LOST, Ordering::SeqCst);
                    self.cancel.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(image_id = %self.image_id, error = %e, "heartbeat failed")
                }
            }
        }
    }

    /// Stops the import for `reason`, unless it was stopped already.
    fn stop(&self, reason: u8) {
        let _ = self.stop_reason.compare_exchange(
            STOP_NONE,
            reason,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.cancel.cancel();
    }

    /// Writes the progress and extends the lease.
    async fn write(
        &mut self,
        snap: &ProgressSnapshot,
        lease_ms: i64,
    ) -> Result<Heartbeat, crate::catalog::CatalogError> {
        self.details.progress = Some(ProgressRecord {
            bytes_converted: snap.bytes_converted,
            bytes_written: snap.bytes_written,
        });
        let row = JobProgress {
            phase: snap.phase,
            bytes_fetched: snap.bytes_fetched as i64,
            bytes_total: (snap.bytes_total > 0).then_some(snap.bytes_total as i64),
            source_format: snap.source_format.clone(),
            virtual_size: (snap.virtual_size > 0).then_some(snap.virtual_size as i64),
            details: self.details.clone(),
        };
        crate::metrics::global().progress_written();
        let w = &self.workers;
        w.catalog
            .heartbeat_job(&self.image_id, &w.node, lease_ms, &row)
            .await
    }
}
