//! The DescribeExportImageTasks view of a task, in Tencent's PascalCase
//! style: state, phase, bytes written, percent, outcome, and its objects.

use serde_json::{json, Value};

use super::iso8601;
use crate::catalog::exports::ExportTaskRow;
use crate::domain::TaskState;
use crate::export::names::cos_path;

/// Guest bytes done over the disks' total (100 once it succeeded).
pub fn percent(row: &ExportTaskRow) -> i64 {
    if row.state == TaskState::Succeeded {
        return 100;
    }
    if row.guest_total <= 0 {
        return 0;
    }
    // Not 100 before the task is recorded as done.
    (row.guest_done.saturating_mul(100) / row.guest_total).clamp(0, 99)
}

pub fn task_json(row: &ExportTaskRow) -> Value {
    let mut image_ids: Vec<&str> = Vec::new();
    for o in &row.objects {
        if !image_ids.contains(&o.image_id.as_str()) {
            image_ids.push(&o.image_id);
        }
    }
    let objects: Vec<Value> = row
        .objects
        .iter()
        .map(|o| {
            json!({
                "ImageId": o.image_id,
                "DiskUsage": if o.disk_index == 0 { "SYSTEM_DISK" } else { "DATA_DISK" },
                "SnapshotId": o.snapshot_id,
                "CosPath": cos_path(&o.object_key),
                "VirtualSize": o.guest_size,
            })
        })
        .collect();
    json!({
        "TaskId": row.task_id,
        "TaskState": row.state,
        "Phase": row.phase,
        "ImageIds": image_ids,
        "BucketName": row.bucket,
        "ExportFormat": row.format,
        "CosPaths": row.objects.iter().map(|o| cos_path(&o.object_key)).collect::<Vec<_>>(),
        "Percent": percent(row),
        "BytesWritten": row.bytes_written,
        "GuestBytesDone": row.guest_done,
        "GuestBytesTotal": row.guest_total,
        "FailureCode": row.failure_code,
        "FailureMessage": row.failure_message,
        "CancelRequested": row.cancel_requested,
        "Attempts": row.attempts,
        "Node": row.node,
        "ObjectSet": objects,
        "CreatedTime": iso8601(Some(row.created_at)),
        "StartTime": iso8601(row.started_at),
        "FinishTime": iso8601(row.finished_at),
    })
}
