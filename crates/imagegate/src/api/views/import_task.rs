//! The `DescribeImportImageTasks` view of a job: what a person watching an
//! import needs (state, phase, bytes, percent, checksum, the reason of a
//! failure, which node ran each attempt), in Tencent's PascalCase style.

use serde_json::{json, Value};

use super::iso8601;
use crate::catalog::jobs::TaskRow;
use crate::domain::{FailureCode, TaskState};

/// How far the import is: the source fetched and its guest bytes converted
/// count half each (the two overlap, so the slower one holds the figure
/// back), and 99 at most until the import has succeeded, because storing's
/// last bytes, the guest checks and the commit come after both.
fn percent(row: &TaskRow) -> i64 {
    if row.state == TaskState::Succeeded {
        return 100;
    }
    let fraction = |done: i64, total: Option<i64>| match total {
        Some(total) if total > 0 => (done.clamp(0, total) as f64) / (total as f64),
        _ => 0.0,
    };
    let converted = i64::try_from(row.details.bytes_converted()).unwrap_or(i64::MAX);
    let fetched = fraction(row.bytes_fetched, row.bytes_total);
    let converted = fraction(converted, row.virtual_size);
    (((fetched + converted) * 50.0) as i64).min(99)
}

/// A node as tenants see it: `<host>:<pid>:<tag>` without the host name.
fn tenant_node(node: Option<&str>) -> Value {
    match node {
        Some(n) => Value::String(match n.split_once(':') {
            Some((_, rest)) => format!("node:{rest}"),
            None => "node".into(),
        }),
        None => Value::Null,
    }
}

/// A failure message as tenants see it. An internal error's text is the
/// operator's (it may name files, the blob store's endpoint or a host): the
/// tenant gets a pointer to the log instead. Other messages are about the
/// tenant's own image and source, but absolute paths and non-COS URLs in
/// them are replaced all the same, since a source may be served from an
/// internal endpoint (`source.cos_endpoint`).
pub fn tenant_message(code: Option<FailureCode>, message: &str) -> String {
    if code == Some(FailureCode::InternalError) {
        return "The import failed on an internal error of the service; the operator's log \
                names the cause (search it for this ImageId)."
            .into();
    }
    let mut out = String::with_capacity(message.len());
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_matches(|c: char| "`'\"(),;".contains(c));
        let url_host = bare
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
        let hidden = match url_host {
            Some(host) => !host.ends_with(".myqcloud.com"),
            None => bare.starts_with('/') && bare[1..].contains('/'),
        };
        if hidden && !bare.is_empty() {
            out.push_str(&word.replace(bare, "<internal>"));
        } else {
            out.push_str(word);
        }
    }
    out
}

pub fn task_json(row: &TaskRow) -> Value {
    let details = &row.details;
    let attempts: Vec<Value> = details
        .attempts
        .iter()
        .map(|a| {
            json!({
                "Attempt": a.attempt,
                "Node": tenant_node(Some(&a.node)),
                "StartTime": iso8601(Some(a.started_at)),
            })
        })
        .collect();
    let disks: Vec<Value> = details
        .disks
        .iter()
        .map(|d| {
            json!({
                "DiskIndex": d.disk_index,
                "SourceFormat": d.source_format,
                "SourceSubformat": d.source_subformat,
                "VirtualSize": d.virtual_size,
                "StoredSize": d.stored_size,
                "SourceBytes": d.source_bytes,
                "Sha256": d.sha256,
                "Resumes": d.resumes,
            })
        })
        .collect();
    let progress = details.progress;
    let phase_times: Vec<Value> = details
        .phase_times
        .iter()
        .map(|t| json!({"Phase": t.phase, "Seconds": t.ms as f64 / 1000.0}))
        .collect();
    json!({
        "ImageId": row.image_id,
        "ImageName": row.image_name,
        "ImageState": row.image_state,
        "TaskState": row.state,
        "Phase": row.phase,
        "Percent": percent(row),
        "BytesFetched": row.bytes_fetched,
        "BytesTotal": row.bytes_total,
        "BytesConverted": progress.map(|p| p.bytes_converted),
        "BytesWritten": progress.map(|p| p.bytes_written),
        "SourceFormat": row.source_format,
        "VirtualSize": row.virtual_size,
        "Sha256": row.sha256,
        "FailureCode": row.failure_code,
        "FailureMessage": row.failure_message.as_deref().map(|m| tenant_message(row.failure_code, m)),
        "CancelRequested": row.cancel_requested,
        "Attempts": row.attempts,
        "Node": tenant_node(row.node.as_deref()),
        "AttemptSet": attempts,
        "DiskSet": disks,
        "GuestFacts": details.guest,
        "PhaseTimes": phase_times,
        "CreatedTime": iso8601(Some(row.created_at)),
        "StartTime": iso8601(row.started_at),
        "FinishTime": iso8601(row.finished_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_texts_name_no_host_path_or_internal_endpoint() {
        assert_eq!(
            tenant_node(Some("build-7:4242:00c0ffee")),
            json!("node:4242:00c0ffee")
        );
        let m = tenant_message(
            Some(FailureCode::InternalError),
            "cannot write to the blob store: /srv/imagegate/images/img-1.qcow2: EIO",
        );
        assert!(!m.contains("/srv") && m.contains("operator"), "{m}");
        let m = tenant_message(
            Some(FailureCode::SourceUnreachable),
            "GET `http://10.0.0.5:9000/images-1250000000/a.qcow2` answered 503 (see /var/log/x)",
        );
        assert!(!m.contains("10.0.0.5") && !m.contains("/var/log"), "{m}");
        let cos = "https://images-1250000000.cos.ap-guangzhou.myqcloud.com/a.qcow2 answered 404";
        assert_eq!(tenant_message(Some(FailureCode::InvalidUrl), cos), cos);
        assert_eq!(
            tenant_message(Some(FailureCode::InvalidFormatSize), "too big: 3 GiB / 2"),
            "too big: 3 GiB / 2"
        );
    }

    fn row(state: TaskState, fetched: i64, converted: u64) -> TaskRow {
        TaskRow {
            image_id: "img-00000001".into(),
            image_name: "n".into(),
            image_state: crate::domain::ImageState::Importing,
            state,
            phase: None,
            attempts: 1,
            bytes_fetched: fetched,
            bytes_total: Some(1000),
            source_format: None,
            virtual_size: Some(4000),
            sha256: None,
            failure_code: None,
            failure_message: None,
            details: crate::domain::JobDetails {
                progress: Some(crate::domain::ProgressRecord {
                    bytes_converted: converted,
                    bytes_written: 0,
                }),
                ..Default::default()
            },
            node: None,
            cancel_requested: false,
            created_at: 0,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn percent_moves_with_fetch_and_conversion_and_waits_for_the_end() {
        assert_eq!(percent(&row(TaskState::Running, 0, 0)), 0);
        // Fetched all, converted half: the conversion holds the figure back.
        assert_eq!(percent(&row(TaskState::Running, 1000, 2000)), 75);
        // Everything fetched and converted: still checking and committing.
        assert_eq!(percent(&row(TaskState::Running, 1000, 4000)), 99);
        assert_eq!(percent(&row(TaskState::Succeeded, 1000, 4000)), 100);
        // Counters past their totals (a row of another version) stay in range.
        assert_eq!(percent(&row(TaskState::Running, 5000, 9000)), 99);
    }
}
