//! How tasks look on the wire: the `DescribeImportImageTasks` and
//! `DescribeExportImageTasks` views of catalog rows. Rendering only; the
//! pipeline and the export worker write the rows and know nothing of this.

pub mod export_task;
pub mod import_task;

use serde_json::Value;

/// `YYYY-MM-DDThh:mm:ssZ` in UTC, or null for a time not reached yet.
fn iso8601(ms: Option<i64>) -> Value {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        None => Value::Null,
    }
}
