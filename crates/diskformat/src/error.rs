//! Why an image was refused or could not be read.

use std::io;

/// Every refusal names its reason with a stable code (`code()`), used as the
/// import failure code and in `imagegate inspect --json`.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Reading the source failed (network, disk, or a stream that broke).
    #[error("reading the image failed: {0}")]
    Io(#[from] io::Error),

    /// The file ends before a structure it declares.
    #[error("the image is truncated: {0}")]
    Truncated(String),

    /// A format this service never imports (QED, VDI, LUKS, ...), or a
    /// subformat/feature of a supported one that is refused by policy.
    #[error("unsupported image: {0}")]
    Unsupported(String),

    /// The image names another file or device (backing file, external data
    /// file, VMDK extent, differencing parent). Refused: it would read a
    /// file the caller chose.
    #[error("the image refers to another file: {0}")]
    ExternalReference(String),

    /// Encrypted content (qcow2 encryption, LUKS).
    #[error("the image is encrypted: {0}")]
    Encrypted(String),

    /// The content matches more than one format signature.
    #[error("the image matches more than one format: {0}")]
    Ambiguous(String),

    /// Header or table fields are inconsistent, out of range, overlap or
    /// point outside the file.
    #[error("the image is corrupt: {0}")]
    Corrupt(String),

    /// Declared sizes beyond the configured limits.
    #[error("the image is too large: {0}")]
    TooLarge(String),
}

impl FormatError {
    /// A stable code for the failure, e.g. for `ImportFailed` reasons.
    pub fn code(&self) -> &'static str {
        match self {
            FormatError::Io(_) => "SourceReadError",
            FormatError::Truncated(_) => "ImageTruncated",
            FormatError::Unsupported(_) => "UnsupportedImageFormat",
            FormatError::ExternalReference(_) => "ExternalReferenceRefused",
            FormatError::Encrypted(_) => "EncryptedImageRefused",
            FormatError::Ambiguous(_) => "AmbiguousImageFormat",
            FormatError::Corrupt(_) => "CorruptImage",
            FormatError::TooLarge(_) => "InvalidFormatSize",
        }
    }

    /// A copy (`io::Error` is not `Clone`: an `Io` error keeps its kind and
    /// message).
    pub fn duplicate(&self) -> Self {
        match self {
            FormatError::Io(e) => FormatError::Io(io::Error::new(e.kind(), e.to_string())),
            FormatError::Truncated(m) => FormatError::Truncated(m.clone()),
            FormatError::Unsupported(m) => FormatError::Unsupported(m.clone()),
            FormatError::ExternalReference(m) => FormatError::ExternalReference(m.clone()),
            FormatError::Encrypted(m) => FormatError::Encrypted(m.clone()),
            FormatError::Ambiguous(m) => FormatError::Ambiguous(m.clone()),
            FormatError::Corrupt(m) => FormatError::Corrupt(m.clone()),
            FormatError::TooLarge(m) => FormatError::TooLarge(m.clone()),
        }
    }

    /// Back to an `io::Error` for `ReadAt` users (keeps the message).
    pub fn into_io(self) -> io::Error {
        match self {
            FormatError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }

    /// The error a cancelled conversion returns (the progress callback said
    /// stop). It is an `Io` error of kind `Interrupted`, so existing matches
    /// on the variants keep working; test for it with `is_cancelled`.
    pub fn cancelled() -> Self {
        FormatError::Io(io::Error::new(
            io::ErrorKind::Interrupted,
            "the conversion was cancelled",
        ))
    }

    /// True for the error `cancelled()` makes.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, FormatError::Io(e) if e.kind() == io::ErrorKind::Interrupted)
    }

    /// A read past the end of the file while parsing becomes `Truncated`.
    pub fn from_read(e: io::Error, what: &str) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FormatError::Truncated(format!("{what} lies beyond the end of the file"))
        } else {
            FormatError::Io(e)
        }
    }
}

/// A field beyond its buffer: the structure is smaller than its own fields
/// say, which is corruption (a file too short for a structure is
/// `Truncated`, found when the structure is read).
impl From<crate::bytes::Truncated> for FormatError {
    fn from(t: crate::bytes::Truncated) -> Self {
        FormatError::Corrupt(t.to_string())
    }
}
