//! Where an image, an import job and an export task stand.

use super::names;

names! {
    /// `ImageState` as Tencent names it. imagegate stores IMPORTING, NORMAL
    /// and IMPORTFAILED (a copy by SyncImages is NORMAL at once: it shares
    /// the source's bytes); the others are Tencent's and only ever read.
    pub enum ImageState ("image state") {
        Creating = "CREATING",
        Normal = "NORMAL",
        CreateFailed = "CREATEFAILED",
        Using = "USING",
        Syncing = "SYNCING",
        Importing = "IMPORTING",
        ImportFailed = "IMPORTFAILED",
    }
}

impl ImageState {
    /// States in which an image cannot be deleted or modified (Tencent's
    /// rule; CREATING and SYNCING never occur here but are refused all the
    /// same).
    pub const BUSY: [ImageState; 3] = [
        ImageState::Importing,
        ImageState::Creating,
        ImageState::Syncing,
    ];

    pub fn is_busy(self) -> bool {
        Self::BUSY.contains(&self)
    }
}

names! {
    /// `TaskState` of an import job (DescribeImportImageTasks) or an export
    /// task (DescribeExportImageTasks): QUEUED → RUNNING → one of the three
    /// ends; a RUNNING task whose lease expires is RUNNING until claimed again.
    pub enum TaskState ("task state") {
        Queued = "QUEUED",
        Running = "RUNNING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        Cancelled = "CANCELLED",
    }
}

impl TaskState {
    /// Succeeded, failed or cancelled: nothing will change it again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }
}

names! {
    /// `Phase` of an import job, in the order an attempt goes through them
    /// (guest inspection runs after the system disk is stored).
    pub enum ImportPhase ("import phase") {
        Queued = "QUEUED",
        Fetching = "FETCHING",
        InspectingFormat = "INSPECTING_FORMAT",
        Converting = "CONVERTING",
        Storing = "STORING",
        InspectingGuest = "INSPECTING_GUEST",
        Done = "DONE",
    }
}

/// A job not yet claimed is queued.
impl Default for ImportPhase {
    fn default() -> Self {
        ImportPhase::Queued
    }
}

names! {
    /// `Phase` of an export task.
    pub enum ExportPhase ("export phase") {
        Queued = "QUEUED",
        Exporting = "EXPORTING",
        Done = "DONE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_through_text_serde_and_back() {
        fn check<T>(all: &[T])
        where
            T: Copy + std::fmt::Debug + PartialEq + std::str::FromStr + std::fmt::Display,
            T: serde::Serialize + serde::de::DeserializeOwned,
            <T as std::str::FromStr>::Err: std::fmt::Debug,
        {
            for v in all {
                let text = v.to_string();
                assert_eq!(text.parse::<T>().unwrap(), *v);
                let json = serde_json::to_string(v).unwrap();
                assert_eq!(json, format!("\"{text}\""));
                assert_eq!(serde_json::from_str::<T>(&json).unwrap(), *v);
            }
        }
        check(ImageState::ALL);
        check(TaskState::ALL);
        check(ImportPhase::ALL);
        check(ExportPhase::ALL);
    }

    #[test]
    fn an_unknown_or_differently_cased_name_is_refused_with_its_vocabulary() {
        let e = "normal".parse::<ImageState>().unwrap_err();
        assert_eq!(e.to_string(), "`normal` is not a known image state");
        assert!("queued".parse::<ImportPhase>().is_err());
        assert!(serde_json::from_str::<TaskState>("\"DONE\"").is_err());
    }

    #[test]
    fn busy_and_finished_are_the_documented_sets() {
        let busy: Vec<_> = ImageState::ALL.iter().filter(|s| s.is_busy()).collect();
        assert_eq!(
            busy,
            [
                &ImageState::Creating,
                &ImageState::Syncing,
                &ImageState::Importing
            ]
        );
        let ends: Vec<_> = TaskState::ALL.iter().filter(|s| s.is_finished()).collect();
        assert_eq!(
            ends,
            [
                &TaskState::Succeeded,
                &TaskState::Failed,
                &TaskState::Cancelled
            ]
        );
    }
}
