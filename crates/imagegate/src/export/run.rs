//! One attempt at one export task: open every stored disk (sizes first, so
//! the percentage means something from the start), then write the objects
//! one after the other with diskformat's writers, each published whole.
//! A full disk fails the task with a code of its own (see `room`): the
//! bucket's (`ExportTargetFull`), the reserve of a data volume the bucket
//! shares (`StorageReserveReached`), or the catalog's (`StorageFull`). An
//! S3 blob store that keeps failing past `blobs.retry_deadline_secs` while
//! the stored image is read fails it with `BlobStoreUnavailable`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use diskformat::export::{export, ExportError, ExportFormat, Progress};
use diskformat::FormatError;

use super::room::{refusal_of, Reserve};
use super::stored::{open_stored, StoredError};
use super::target::{ObjectWriter, Target, TargetError};
use crate::blobstore::Unavailable;
use crate::catalog::export_jobs::ClaimedExport;
use crate::catalog::exports::ExportObject;
use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::domain::FailureCode;
use crate::storage::StorageRefusal;

/// Live progress of a task, read by its heartbeat.
#[derive(Debug, Default)]
pub struct Counters {
    /// Output bytes of every object so far (holes included).
    pub bytes_written: AtomicU64,
    /// Guest bytes done, of `guest_total`.
    pub guest_done: AtomicU64,
    pub guest_total: AtomicU64,
}

/// Why an attempt failed: a stable code and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: FailureCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// Refused for room (reserve, a full bucket, a full catalog volume).
    pub fn storage(refusal: &StorageRefusal) -> Failure {
        Failure::new(refusal.code(), refusal.message())
    }

    /// A catalog write that failed: `StorageFull` when its volume is full.
    pub fn catalog(e: CatalogError) -> Failure {
        if e.is_storage_full() {
            return Failure::storage(&StorageRefusal::Full);
        }
        Failure::new(FailureCode::InternalError, format!("catalog: {e}"))
    }

    /// The blob store kept failing past `blobs.retry_deadline_secs` while
    /// the stored image was read. The tenant reads how long it was waited
    /// out, not where the store is.
    pub fn store_unavailable(outage: &Unavailable) -> Failure {
        Failure::new(
            FailureCode::BlobStoreUnavailable,
            format!(
                "The image store kept failing for {:.0} s while {} (server errors, throttling or \
                 dropped connections), longer than this service waits for it. Nothing was left \
                 in the bucket: export the image again.",
                outage.waited.as_secs_f64(),
                outage.op
            ),
        )
    }

    /// Starting an object failed.
    fn target(e: TargetError) -> Failure {
        match e {
            TargetError::Full => Failure::storage(&StorageRefusal::TargetFull),
            e => Failure::new(FailureCode::ExportWriteError, e.to_string()),
        }
    }

    /// Writing or publishing `what` (an image's disk) failed.
    fn export(what: &str, e: ExportError) -> Failure {
        if let ExportError::Source(FormatError::Io(io)) = &e {
            if let Some(outage) = Unavailable::find(io) {
                return Failure::store_unavailable(outage);
            }
        }
        match e {
            ExportError::Cancelled => Failure::new(FailureCode::ExportCancelled, "cancelled"),
            ExportError::Sink(io) => match refusal_of(&io) {
                Some(refusal) => Failure::storage(&refusal),
                None => Failure::new(FailureCode::ExportWriteError, format!("{what}: {io}")),
            },
            e => Failure::new(FailureCode::of_export(&e), format!("{what}: {e}")),
        }
    }
}

/// Runs the task; `cancel` (set by the heartbeat) stops it between steps.
pub async fn run_task(
    config: &Config,
    catalog: &Catalog,
    node: &str,
    target: &Target,
    task: &ClaimedExport,
    counters: &Arc<Counters>,
    cancel: &Arc<AtomicBool>,
) -> Result<(), Failure> {
    let format: ExportFormat = task
        .format
        .parse()
        .map_err(|e| Failure::new(FailureCode::ExportFormatUnsupported, format!("{e}")))?;
    // What an earlier attempt of this task left half-written (a killed
    // worker's, or a stopped one's whose abort did not get out).
    target.sweep_partials(|t| t != task.task_id).await;
    abort_dead_uploads(catalog, target, task.task_id, &task.bucket, &task.objects).await;
    let mut disks = Vec::with_capacity(task.objects.len());
    let mut sizes = Vec::with_capacity(task.objects.len());
    for o in &task.objects {
        let disk = open_stored(config, &o.blob_key)
            .await
            .map_err(|e| match e {
                StoredError::StoreUnavailable(outage) => Failure::store_unavailable(&outage),
                StoredError::Unreadable(m) => Failure::new(
                    FailureCode::ExportSourceUnreadable,
                    format!("{} disk {}: {m}", o.image_id, o.disk_index),
                ),
            })?;
        sizes.push((o.seq, disk.virtual_size() as i64));
        disks.push(Arc::<dyn diskformat::DiskImage>::from(disk));
    }
    let total: i64 = sizes.iter().map(|(_, s)| s).sum();
    counters.guest_total.store(total as u64, Ordering::Relaxed);
    catalog
        .record_export_sizes(task.task_id, node, &sizes)
        .await
        .map_err(Failure::catalog)?;
    let reserve = Reserve::for_target(config, target);

    for (o, disk) in task.objects.iter().zip(disks) {
        if cancel.load(Ordering::SeqCst) {
            return Err(Failure::new(FailureCode::ExportCancelled, "cancelled"));
        }
        if let Some(r) = &reserve {
            r.check(0).map_err(|r| Failure::storage(&r))?;
        }
        // Marked before anything is written: a crash after the publish must
        // still let a failing later attempt find and remove the object (its
        // removal accepts an object that never appeared). Once its temporary
        // copy exists, writing this object needs no catalog write that can
        // fail it (heartbeats retry; the outcome waits for room).
        catalog
            .mark_published(task.task_id, o.seq, true)
            .await
            .map_err(Failure::catalog)?;
        let tag = format!("{}-{}", task.task_id, o.seq);
        let mut writer = target
            .begin(&task.bucket, &o.object_key, &tag)
            .await
            .map_err(Failure::target)?;
        if let Some(r) = &reserve {
            writer = r.clone().guard(writer);
        }
        let (counters, cancel) = (counters.clone(), cancel.clone());
        let written = tokio::task::spawn_blocking(move || {
            write_object(&*disk, format, writer, &counters, &cancel)
        })
        .await
        .map_err(|e| {
            Failure::new(
                FailureCode::InternalError,
                format!("the export thread stopped: {e}"),
            )
        })?;
        written
            .map_err(|e| Failure::export(&format!("{} disk {}", o.image_id, o.disk_index), e))?;
    }
    Ok(())
}

/// Aborts the S3 multipart uploads an earlier attempt of the task left to
/// its objects' keys (a killed worker sends no abort); the folder target's
/// leftovers are temporary files (`sweep_partials`). A key that another
/// unfinished task also writes is left alone: its upload may be live, and
/// the bucket's lifecycle rule reclaims a dead one. Best effort: a failure
/// is logged and the export goes on.
pub async fn abort_dead_uploads(
    catalog: &Catalog,
    target: &Target,
    task_id: i64,
    bucket: &str,
    objects: &[ExportObject],
) {
    if !matches!(target, Target::S3(_)) {
        return;
    }
    for o in objects {
        match catalog
            .export_key_shared(task_id, bucket, &o.object_key)
            .await
        {
            Ok(false) => {}
            Ok(true) => continue,
            Err(e) => {
                tracing::warn!(task_id, error = %e, "checking an export key failed");
                continue;
            }
        }
        match target.abort_uploads(bucket, &o.object_key).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                task_id,
                key = %o.object_key,
                aborted = n,
                "multipart uploads of an interrupted export aborted"
            ),
            Err(e) => {
                tracing::warn!(task_id, key = %o.object_key, error = %e, "aborting the uploads of an interrupted export failed")
            }
        }
    }
}

/// Writes one object and publishes it, or aborts it on any failure.
fn write_object(
    disk: &dyn diskformat::DiskImage,
    format: ExportFormat,
    mut writer: Box<dyn ObjectWriter>,
    counters: &Counters,
    cancel: &AtomicBool,
) -> Result<(), ExportError> {
    let base_written = counters.bytes_written.load(Ordering::Relaxed);
    let base_done = counters.guest_done.load(Ordering::Relaxed);
    let mut progress = |p: Progress| {
        counters
            .bytes_written
            .store(base_written + p.bytes_written, Ordering::Relaxed);
        counters
            .guest_done
            .store(base_done + p.guest_done, Ordering::Relaxed);
        !cancel.load(Ordering::SeqCst)
    };
    match export(disk, format, &mut *writer, &mut progress) {
        Ok(summary) => {
            counters
                .bytes_written
                .store(base_written + summary.bytes_written, Ordering::Relaxed);
            counters
                .guest_done
                .store(base_done + summary.virtual_size, Ordering::Relaxed);
            if cancel.load(Ordering::SeqCst) {
                writer.abort();
                return Err(ExportError::Cancelled);
            }
            writer.publish().map_err(ExportError::Sink)
        }
        Err(e) => {
            writer.abort();
            Err(e)
        }
    }
}
