//! Export workers: `workers.export_concurrency` slots per process claim
//! export tasks from the catalog under a lease kept by a heartbeat, write
//! every object of the task (see `run`), and record the outcome.
//!
//! Whatever stops a task short (a failure, a cancel, a lost lease, a
//! shutdown, a kill), no object of it stays in the bucket: temporary files
//! are swept by the next attempt and at start, published objects of a task
//! that does not succeed are removed, and a task whose workers keep dying
//! fails after `MAX_ATTEMPTS` with its objects removed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::run::{abort_dead_uploads, run_task, Counters, Failure};
use super::target::Target;
use crate::catalog::export_jobs::{ClaimedExport, ExportProgressRow};
use crate::catalog::jobs::Heartbeat;
use crate::catalog::patience::write_outcome;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::domain::FailureCode;

/// Attempts before a task whose workers keep dying is failed.
pub const MAX_ATTEMPTS: i64 = 3;

const STOP_NONE: u8 = 0;
const STOP_USER: u8 = 1;
const STOP_LEASE_LOST: u8 = 2;
const STOP_SHUTDOWN: u8 = 3;

/// What the export slots of one process share.
#[derive(Clone)]
pub struct ExportWorkers {
    pub config: Arc<Config>,
    pub catalog: Catalog,
    /// Identifies this process in leases.
    pub node: String,
    /// Wakes idle slots when this process queued an export.
    pub wake: Arc<Notify>,
    /// Wakes the heartbeats when this process took a cancel request: they
    /// beat at once and find it.
    pub cancels: Arc<Notify>,
    pub shutdown: CancellationToken,
}

impl ExportWorkers {
    fn lease_ms(&self) -> i64 {
        (self.config.workers.lease_seconds.max(2) * 1000) as i64
    }

    fn target(&self) -> Option<Target> {
        Target::from_config(&self.config.source)
    }

    /// Runs the slots until shutdown (running exports are handed back).
    pub async fn run(self) {
        self.sweep().await;
        let slots = self.config.workers.export_concurrency.max(1);
        let handles: Vec<_> = (0..slots)
            .map(|_| {
                let me = self.clone();
                tokio::spawn(async move { me.slot_loop().await })
            })
            .collect();
        for h in handles {
            let _ = h.await;
        }
    }

    /// Temporary files of tasks no live worker runs.
    async fn sweep(&self) {
        let (Some(target), Ok(live)) = (self.target(), self.catalog.live_export_ids().await) else {
            return;
        };
        let n = target.sweep_partials(|t| live.contains(&t)).await;
        if n > 0 {
            tracing::info!(removed = n, "temporary export files removed");
        }
    }

    async fn slot_loop(&self) {
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            self.fail_exhausted().await;
            match self
                .catalog
                .claim_export(&self.node, self.lease_ms(), MAX_ATTEMPTS)
                .await
            {
                Ok(Some(task)) => {
                    tracing::info!(
                        task_id = task.task_id,
                        attempt = task.attempts,
                        "export claimed"
                    );
                    self.run_one(task).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming an export failed");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        }
    }

    async fn fail_exhausted(&self) {
        match self.catalog.fail_exhausted_exports(MAX_ATTEMPTS).await {
            Ok(ids) => {
                for task_id in ids {
                    tracing::warn!(task_id, "export failed: its workers kept stopping");
                    self.remove_published(task_id).await;
                    self.abort_dead_uploads(task_id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "failing interrupted exports failed"),
        }
    }

    /// Removes every object of the task that an attempt published.
    async fn remove_published(&self, task_id: i64) {
        let (Some(target), Ok(Some(bucket)), Ok(objects)) = (
            self.target(),
            self.catalog.export_bucket(task_id).await,
            self.catalog.export_objects(task_id).await,
        ) else {
            return;
        };
        target.sweep_partials(|t| t != task_id).await;
        for o in objects.iter().filter(|o| o.published) {
            match target.remove(&bucket, &o.object_key).await {
                Ok(()) => {
                    let _ = self.catalog.mark_published(task_id, o.seq, false).await;
                }
                Err(e) => {
                    tracing::warn!(task_id, key = %o.object_key, error = %e, "removing an exported object failed")
                }
            }
        }
    }

    /// The uploads the task's last (killed) attempt left (see `run`).
    async fn abort_dead_uploads(&self, task_id: i64) {
        let (Some(target), Ok(Some(bucket)), Ok(objects)) = (
            self.target(),
            self.catalog.export_bucket(task_id).await,
            self.catalog.export_objects(task_id).await,
        ) else {
            return;
        };
        abort_dead_uploads(&self.catalog, &target, task_id, &bucket, &objects).await;
    }

    async fn run_one(&self, task: ClaimedExport) {
        let counters = Arc::new(Counters::default());
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicU8::new(STOP_NONE));
        let heartbeat = self.spawn_heartbeat(task.task_id, &counters, &cancel, &stop);
        let started = std::time::Instant::now();
        let result = match self.target() {
            Some(target) => {
                run_task(
                    &self.config,
                    &self.catalog,
                    &self.node,
                    &target,
                    &task,
                    &counters,
                    &cancel,
                )
                .await
            }
            None => Err(Failure::new(
                FailureCode::ExportTargetMissing,
                "Neither source.cos_root nor source.cos_endpoint is configured any more.",
            )),
        };
        heartbeat.abort();
        let _ = heartbeat.await;
        let reason = stop.load(Ordering::SeqCst);
        let id = task.task_id;
        if reason == STOP_LEASE_LOST {
            tracing::warn!(task_id = id, "export lease lost; attempt abandoned");
            return;
        }
        if result.is_err() && reason == STOP_SHUTDOWN {
            self.remove_published(id).await;
            if let Err(e) = self.catalog.release_export(id, &self.node).await {
                tracing::warn!(task_id = id, error = %e, "release failed; the lease will expire");
            }
            return;
        }
        // Tenants read the message: no server path, endpoint or host name.
        let redacted = result
            .as_ref()
            .err()
            .map(|f| crate::redact::Redactor::new(&self.config).redact(&f.message));
        let outcome = match (&result, &redacted) {
            (Ok(()), _) => Ok(counters.row()),
            (Err(_), _) if reason == STOP_USER => Err((
                FailureCode::ExportCancelled,
                "The export was cancelled by CancelExportImageTask; nothing was left in the bucket.",
            )),
            (Err(f), message) => Err((f.code, message.as_deref().unwrap_or_default())),
        };
        if outcome.is_err() {
            self.remove_published(id).await;
        }
        self.record(id, outcome, started).await;
    }

    /// Records how the task ended (after its objects were removed if it
    /// failed, so a full volume has room again for this write), waiting out
    /// an outage or a full catalog volume rather than leaving the task to
    /// its lease (see `catalog::patience`).
    async fn record(
        &self,
        id: i64,
        outcome: Result<ExportProgressRow, (FailureCode, &str)>,
        started: std::time::Instant,
    ) {
        let secs = started.elapsed().as_secs_f64();
        let recorded = write_outcome(
            "recording an export's outcome",
            &self.shutdown,
            || self.catalog.finish_export(id, &self.node, outcome),
            // Its temporary files are gone and a failure's objects too.
            || async {},
        )
        .await;
        match recorded {
            Ok(true) => match outcome {
                Ok(row) => tracing::info!(
                    task_id = id,
                    seconds = secs,
                    bytes = row.bytes_written,
                    "export finished"
                ),
                Err((code, message)) => {
                    tracing::info!(task_id = id, code = code.as_str(), message, "export failed")
                }
            },
            Ok(false) => tracing::warn!(task_id = id, "export ended after its lease was lost"),
            Err(e) => {
                tracing::error!(task_id = id, error = %e, "recording an export outcome failed")
            }
        }
    }

    fn spawn_heartbeat(
        &self,
        task_id: i64,
        counters: &Arc<Counters>,
        cancel: &Arc<AtomicBool>,
        stop: &Arc<AtomicU8>,
    ) -> tokio::task::JoinHandle<()> {
        let (me, counters, cancel, stop) =
            (self.clone(), counters.clone(), cancel.clone(), stop.clone());
        let lease_ms = self.lease_ms();
        // Three beats per lease, and at least one a second for progress.
        let period = Duration::from_millis((lease_ms / 3).clamp(300, 1000) as u64);
        tokio::spawn(async move {
            let set = |why: u8| {
                let _ = stop.compare_exchange(STOP_NONE, why, Ordering::SeqCst, Ordering::SeqCst);
                cancel.store(true, Ordering::SeqCst);
            };
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = me.cancels.notified() => {}
                    _ = me.shutdown.cancelled() => return set(STOP_SHUTDOWN),
                }
                match me
                    .catalog
                    .heartbeat_export(task_id, &me.node, lease_ms, counters.row())
                    .await
                {
                    Ok(Heartbeat::Held) => {}
                    Ok(Heartbeat::CancelRequested) => set(STOP_USER),
                    Ok(Heartbeat::Lost) => {
                        stop.store(STOP_LEASE_LOST, Ordering::SeqCst);
                        cancel.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => tracing::warn!(task_id, error = %e, "export heartbeat failed"),
                }
            }
        })
    }
}

impl Counters {
    pub fn row(&self) -> ExportProgressRow {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        ExportProgressRow {
            bytes_written: get(&self.bytes_written),
            guest_done: get(&self.guest_done),
            guest_total: get(&self.guest_total),
        }
    }
}
