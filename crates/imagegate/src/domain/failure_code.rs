//! Why an import or an export task failed: the stable code recorded with the
//! task (`FailureCode` in DescribeImportImageTasks and
//! DescribeExportImageTasks, the `code` label of the import metrics).
//! Tencent's own codes where they fit (`InvalidUrl`, `InvalidFormatSize`,
//! `PartitionNotPresent`, …), precise ones of ours where theirs would be
//! vague. The README lists them for users; change both together.

use diskformat::export::ExportError;
use diskformat::FormatError;

use super::names;

names! {
    pub enum FailureCode ("failure code") {
        // The source object.
        InvalidUrl = "InvalidUrl",
        SourceAddressRefused = "SourceAddressRefused",
        SourcePathRefused = "SourcePathRefused",
        SourceUnreachable = "SourceUnreachable",
        SourceStalled = "SourceStalled",
        SourceLengthMismatch = "SourceLengthMismatch",
        SourceLengthUnknown = "SourceLengthUnknown",
        SourceTooLarge = "SourceTooLarge",
        SourceChanged = "SourceChanged",
        // The image file (diskformat's codes).
        SourceReadError = "SourceReadError",
        ImageTruncated = "ImageTruncated",
        UnsupportedImageFormat = "UnsupportedImageFormat",
        ExternalReferenceRefused = "ExternalReferenceRefused",
        EncryptedImageRefused = "EncryptedImageRefused",
        AmbiguousImageFormat = "AmbiguousImageFormat",
        CorruptImage = "CorruptImage",
        InvalidFormatSize = "InvalidFormatSize",
        // The guest (Tencent's import checks).
        RootPartitionNotFound = "RootPartitionNotFound",
        PartitionNotPresent = "PartitionNotPresent",
        OsMismatch = "OsMismatch",
        ArchitectureMismatch = "ArchitectureMismatch",
        GptRequiresUefi = "GptRequiresUefi",
        VirtioNotInstall = "VirtioNotInstall",
        CloudInitNotInstalled = "CloudInitNotInstalled",
        IsoMustImportByForce = "InvalidParameterValue.ISOMustImportByForce",
        GuestInspectionFailed = "GuestInspectionFailed",
        GuestInspectionTimeout = "GuestInspectionTimeout",
        // The task's life.
        ImportCancelled = "ImportCancelled",
        ImportInterrupted = "ImportInterrupted",
        // Room and the blob store.
        StorageQuotaExceeded = "StorageQuotaExceeded",
        StorageReserveReached = "StorageReserveReached",
        StorageFull = "StorageFull",
        BlobStoreUnavailable = "BlobStoreUnavailable",
        // Exports.
        ExportTargetFull = "ExportTargetFull",
        ExportTargetMissing = "ExportTargetMissing",
        ExportWriteError = "ExportWriteError",
        ExportSourceUnreadable = "ExportSourceUnreadable",
        ExportFormatUnsupported = "ExportFormatUnsupported",
        ExportCancelled = "ExportCancelled",
        ExportInterrupted = "ExportInterrupted",
        // Anything else: the operator's log names the cause.
        InternalError = "InternalError",
    }
}

impl FailureCode {
    /// The code of an image the format layer refused (the same text as
    /// `FormatError::code`, which the library keeps for its own users).
    pub fn of_format(e: &FormatError) -> FailureCode {
        match e {
            FormatError::Io(_) => FailureCode::SourceReadError,
            FormatError::Truncated(_) => FailureCode::ImageTruncated,
            FormatError::Unsupported(_) => FailureCode::UnsupportedImageFormat,
            FormatError::ExternalReference(_) => FailureCode::ExternalReferenceRefused,
            FormatError::Encrypted(_) => FailureCode::EncryptedImageRefused,
            FormatError::Ambiguous(_) => FailureCode::AmbiguousImageFormat,
            FormatError::Corrupt(_) => FailureCode::CorruptImage,
            FormatError::TooLarge(_) => FailureCode::InvalidFormatSize,
        }
    }

    /// The code of a failed export write (a corrupt stored image keeps the
    /// format's code).
    pub fn of_export(e: &ExportError) -> FailureCode {
        match e {
            ExportError::Source(e) => FailureCode::of_format(e),
            ExportError::Sink(_) => FailureCode::ExportWriteError,
            ExportError::Cancelled => FailureCode::ExportCancelled,
            ExportError::Unsupported(_) => FailureCode::ExportFormatUnsupported,
        }
    }

    /// A task ended by its owner's request, not by a fault.
    pub fn is_cancel(self) -> bool {
        matches!(
            self,
            FailureCode::ImportCancelled | FailureCode::ExportCancelled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_export_codes_are_the_libraries_own_texts() {
        let m = || "m".to_string();
        let formats = [
            FormatError::Io(std::io::Error::other("x")),
            FormatError::Truncated(m()),
            FormatError::Unsupported(m()),
            FormatError::ExternalReference(m()),
            FormatError::Encrypted(m()),
            FormatError::Ambiguous(m()),
            FormatError::Corrupt(m()),
            FormatError::TooLarge(m()),
        ];
        for e in &formats {
            assert_eq!(FailureCode::of_format(e).as_str(), e.code(), "{e}");
        }
        let exports = [
            ExportError::Source(FormatError::Corrupt(m())),
            ExportError::Sink(std::io::Error::other("x")),
            ExportError::Cancelled,
            ExportError::Unsupported(m()),
        ];
        for e in &exports {
            assert_eq!(FailureCode::of_export(e).as_str(), e.code(), "{e}");
        }
    }

    #[test]
    fn every_code_round_trips_and_the_readme_documents_it() {
        let readme = include_str!("../../../../README.md");
        for code in FailureCode::ALL {
            assert_eq!(code.as_str().parse::<FailureCode>(), Ok(*code));
            assert!(
                readme.contains(&format!("`{code}`")),
                "README.md does not document the failure code `{code}`"
            );
        }
    }
}
