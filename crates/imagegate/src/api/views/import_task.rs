//! The `DescribeImportImageTasks` view of a job: what a person watching an
//! import needs (state, phase, bytes, percent, checksum, the reason of a
//! failure, which node ran each attempt), in Tencent's PascalCase style.

use serde_json::{json, Value};

use super::iso8601;
use crate::catalog::jobs::TaskRow;

/// How far the import is: the source fetched and its guest bytes converted
/// count half each (the two overlap, so the slower one holds the figure
/// back), and 99 at most until the import has succeeded, because storing's
/// last bytes, the guest checks and the commit come after both.
fn percent(row: &TaskRow) -> i64 {
    if row.state == "SUCCEEDED" {
        return 100;
    }
    let fraction = |done: i64, total: Option<i64>| match total {
        Some(total) if total > 0 => (done.clamp(0, total) as f64) / (total as f64),
        _ => 0.0,
    };
    let converted = row
        .details
        .get("progress")
        .and_then(|p| p.get("bytes_converted"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
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
pub fn tenant_message(code: Option<&str>, message: &str) -> String {
    if code == Some("InternalError") {
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
        .get("attempts")
        .and_then(|a| a.as_array())
        .map(|list| {
            list.iter()
                .map(|a| {
                    json!({
                        "Attempt": a.get("attempt").cloned().unwrap_or(Value::Null),
                        "Node": tenant_node(a.get("node").and_then(|v| v.as_str())),
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
        "FailureMessage": row.failure_message.as_deref().map(|m| tenant_message(row.failure_code.as_deref(), m)),
        "CancelRequested": row.cancel_requested,
        "Attempts": row.attempts,
        "Node": tenant_node(row.node.as_deref()),
        "AttemptSet": attempts,
        "DiskSet": disks,
        "GuestFacts": details.get("guest").cloned().unwrap_or(Value::Null),
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
            Some("InternalError"),
            "cannot write to the blob store: /srv/imagegate/images/img-1.qcow2: EIO",
        );
        assert!(!m.contains("/srv") && m.contains("operator"), "{m}");
        let m = tenant_message(
            Some("SourceUnavailable"),
            "GET `http://10.0.0.5:9000/images-1250000000/a.qcow2` answered 503 (see /var/log/x)",
        );
        assert!(!m.contains("10.0.0.5") && !m.contains("/var/log"), "{m}");
        let cos = "https://images-1250000000.cos.ap-guangzhou.myqcloud.com/a.qcow2 answered 404";
        assert_eq!(tenant_message(Some("InvalidUrl"), cos), cos);
        assert_eq!(
            tenant_message(Some("InvalidFormatSize"), "too big: 3 GiB / 2"),
            "too big: 3 GiB / 2"
        );
    }

    fn row(state: &str, fetched: i64, converted: i64) -> TaskRow {
        TaskRow {
            image_id: "img-00000001".into(),
            image_name: "n".into(),
            image_state: "IMPORTING".into(),
            state: state.into(),
            phase: None,
            attempts: 1,
            bytes_fetched: fetched,
            bytes_total: Some(1000),
            source_format: None,
            virtual_size: Some(4000),
            sha256: None,
            failure_code: None,
            failure_message: None,
            details: json!({"progress": {"bytes_converted": converted}}),
            node: None,
            cancel_requested: false,
            created_at: 0,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn percent_moves_with_fetch_and_conversion_and_waits_for_the_end() {
        assert_eq!(percent(&row("RUNNING", 0, 0)), 0);
        // Fetched all, converted half: the conversion holds the figure back.
        assert_eq!(percent(&row("RUNNING", 1000, 2000)), 75);
        // Everything fetched and converted: still checking and committing.
        assert_eq!(percent(&row("RUNNING", 1000, 4000)), 99);
        assert_eq!(percent(&row("SUCCEEDED", 1000, 4000)), 100);
        // Counters past their totals (a row of another version) stay in range.
        assert_eq!(percent(&row("RUNNING", 5000, 9000)), 99);
    }
}
