//! What an import job keeps beside its columns (`import_jobs.details`, JSON):
//! the attempts and the node of each, the live progress counters that have
//! no column, each disk's outcome, and the guest report. One type for the
//! writers (the claim, the heartbeat, the pipeline's outcome) and the reader
//! (DescribeImportImageTasks).
//!
//! Rows written by an older version may lack any part: every field defaults,
//! and text that is not a details object at all reads as empty details.

use serde::{Deserialize, Serialize};

use super::ImportPhase;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobDetails {
    /// One entry per claim, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
    /// Counters of the running attempt that have no column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressRecord>,
    /// Each disk's outcome, once the import succeeded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskRecord>,
    /// The guest inspection report (`guestinspect::GuestReport` as JSON),
    /// kept whatever the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<serde_json::Value>,
    /// Wall time of the successful attempt in each phase, in the order the
    /// phases were entered (the download runs under all of them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phase_times: Vec<PhaseTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: ImportPhase,
    pub ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub attempt: i64,
    /// The node that claimed it (`<host>:<pid>:<tag>`).
    pub node: String,
    /// Unix milliseconds.
    pub started_at: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgressRecord {
    /// Guest bytes converted so far (all disks).
    pub bytes_converted: u64,
    /// Bytes written to the blob store so far.
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskRecord {
    pub disk_index: i64,
    pub source_format: String,
    pub source_subformat: Option<String>,
    pub virtual_size: u64,
    pub stored_size: u64,
    pub source_bytes: u64,
    pub sha256: String,
    pub resumes: u64,
}

impl JobDetails {
    /// Parses the column; absent or unreadable text is empty details (the
    /// column is informative: a damaged one must not fail the job).
    pub fn from_column(text: Option<&str>) -> JobDetails {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// The column's text.
    pub fn to_column(&self) -> String {
        // Plain data of strings and integers: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Records that `node` claimed attempt `attempt` at `started_at`.
    pub fn record_attempt(&mut self, attempt: i64, node: &str, started_at: i64) {
        self.attempts.push(AttemptRecord {
            attempt,
            node: node.to_owned(),
            started_at,
        });
    }

    /// Guest bytes converted so far (0 before the first heartbeat).
    pub fn bytes_converted(&self) -> u64 {
        self.progress.map_or(0, |p| p.bytes_converted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_previous_key_by_key_writers_wrote() {
        let old = r#"{"attempts":[{"attempt":1,"node":"h:1:a","started_at":5}],
            "progress":{"bytes_converted":7,"bytes_written":3},
            "disks":[{"disk_index":0,"source_format":"qcow2","source_subformat":null,
              "virtual_size":10,"stored_size":4,"source_bytes":6,"sha256":"ab","resumes":0}],
            "guest":{"os":null}}"#;
        let d = JobDetails::from_column(Some(old));
        assert_eq!(d.attempts[0].node, "h:1:a");
        assert_eq!(d.bytes_converted(), 7);
        assert_eq!(d.disks[0].stored_size, 4);
        assert_eq!(d.guest, Some(serde_json::json!({"os": null})));
        assert_eq!(JobDetails::from_column(Some(&d.to_column())), d);
    }

    #[test]
    fn empty_damaged_or_partial_columns_read_as_defaults() {
        assert_eq!(JobDetails::from_column(None), JobDetails::default());
        assert_eq!(
            JobDetails::from_column(Some("not json")),
            JobDetails::default()
        );
        assert_eq!(JobDetails::from_column(Some("[1]")), JobDetails::default());
        let d = JobDetails::from_column(Some(r#"{"attempts":[{"attempt":2}]}"#));
        assert_eq!(d.attempts[0].attempt, 2);
        assert_eq!(JobDetails::default().to_column(), "{}");
    }
}
