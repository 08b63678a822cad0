//! The `DescribeImportImageTasks` view of a job: what a person watching an
//! import needs (state, phase, bytes, percent, checksum, the reason of a
//! failure, which node ran each attempt), in Tencent's PascalCase style.

use serde_json::{json, Value};

use crate::catalog::jobs::TaskRow;

fn iso8601(ms: Option<i64>) -> Value {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        None => Value::Null,
    }
}

/// Percent of the source fetched (100 once the import succeeded).
fn percent(row: &TaskRow) -> i64 {
    if row.state == "SUCCEEDED" {
        return 100;
    }
    match row.bytes_total {
        Some(total) if total > 0 => (row.bytes_fetched.saturating_mul(100) / total).clamp(0, 100),
        _ => 0,
    }
}

pub fn task_json(row: &TaskRow) -> Value {
    let details = &row.details;
    let attempts: Vec<Value> = details
        .get("attempts")
        .and_then(|a| a.as_array())
        .map(|list| {
            list.iter()
                .map(|a| {
                    json!({
                        "Attempt": a.get("attempt").cloned().unwrap_or(Value::Null),
                        "Node": a.get("node").cloned().unwrap_or(Value::Null),
                        "StartTime": iso8601(a.get("started_at").and_then(|v| v.as_i64())),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let disks: Vec<Value> = details
        .get("disks")
        .and_then(|d| d.as_array())
        .map(|list| {
            list.iter()
                .map(|d| {
                    json!({
                        "DiskIndex": d.get("disk_index").cloned().unwrap_or(Value::Null),
                        "SourceFormat": d.get("source_format").cloned().unwrap_or(Value::Null),
                        "SourceSubformat": d.get("source_subformat").cloned().unwrap_or(Value::Null),
                        "VirtualSize": d.get("virtual_size").cloned().unwrap_or(Value::Null),
                        "StoredSize": d.get("stored_size").cloned().unwrap_or(Value::Null),
                        "SourceBytes": d.get("source_bytes").cloned().unwrap_or(Value::Null),
                        "Sha256": d.get("sha256").cloned().unwrap_or(Value::Null),
                        "Resumes": d.get("resumes").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let progress = details.get("progress");
    json!({
        "ImageId": row.image_id,
        "ImageName": row.image_name,
        "ImageState": row.image_state,
        "TaskState": row.state,
        "Phase": row.phase,
        "Percent": percent(row),
        "BytesFetched": row.bytes_fetched,
        "BytesTotal": row.bytes_total,
        "BytesConverted": progress.and_then(|p| p.get("bytes_converted")).cloned().unwrap_or(Value::Null),
        "BytesWritten": progress.and_then(|p| p.get("bytes_written")).cloned().unwrap_or(Value::Null),
        "SourceFormat": row.source_format,
        "VirtualSize": row.virtual_size,
        "Sha256": row.sha256,
        "FailureCode": row.failure_code,
        "FailureMessage": row.failure_message,
        "CancelRequested": row.cancel_requested,
        "Attempts": row.attempts,
        "Node": row.node,
        "AttemptSet": attempts,
        "DiskSet": disks,
        "GuestFacts": details.get("guest").cloned().unwrap_or(Value::Null),
        "CreatedTime": iso8601(Some(row.created_at)),
        "StartTime": iso8601(row.started_at),
        "FinishTime": iso8601(row.finished_at),
    })
}
