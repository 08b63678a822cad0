//! Names of an export: the bucket (`<name>-<appid>`), the optional file
//! name prefix, and the object keys Tencent documents:
//! `[<prefix>_]<ImageId>_system_<SnapshotId>.<fmt>` for the system disk and
//! `_data_` for data disks (CosPaths carry them with a leading `/`).

use diskformat::export::ExportFormat;

/// A bucket name split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketName {
    pub name: String,
    pub app_id: u64,
}

impl BucketName {
    /// `<name>-<appid>`, the folder under `cos_root` and the S3 bucket.
    pub fn full(&self) -> String {
        format!("{}-{}", self.name, self.app_id)
    }
}

/// Why a BucketName cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketError {
    /// No `-<appid>` suffix, or one that is not a number.
    NoAppId,
    /// Not a COS bucket name (characters, length).
    Malformed,
}

/// COS: the whole name, appid included, is at most 50 characters of
/// lower-case letters, digits and `-`, neither first nor last.
const MAX_BUCKET_CHARS: usize = 50;

pub fn parse_bucket(s: &str) -> Result<BucketName, BucketError> {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if s.is_empty() || s.len() > MAX_BUCKET_CHARS || !ok_chars {
        return Err(BucketError::Malformed);
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(BucketError::Malformed);
    }
    let (name, app) = s.rsplit_once('-').ok_or(BucketError::NoAppId)?;
    if app.is_empty() || !app.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BucketError::NoAppId);
    }
    let app_id = app.parse::<u64>().map_err(|_| BucketError::NoAppId)?;
    if name.is_empty() {
        return Err(BucketError::Malformed);
    }
    Ok(BucketName {
        name: name.to_string(),
        app_id,
    })
}

/// Longest FileNamePrefixList entry.
pub const MAX_PREFIX_CHARS: usize = 64;

/// A prefix is a plain file name part: letters, digits, `-`, `_`, `.`, not
/// starting with `.`. No `/`: an object lands at the top of the bucket, as
/// in Tencent's examples, and no prefix can name a path.
pub fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PREFIX_CHARS
        && !p.starts_with('.')
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The object key (no leading `/`) of one disk.
pub fn object_key(
    prefix: Option<&str>,
    image_id: &str,
    disk_index: i64,
    snapshot_id: &str,
    format: ExportFormat,
) -> String {
    let kind = if disk_index == 0 { "system" } else { "data" };
    let stem = format!("{image_id}_{kind}_{snapshot_id}.{}", format.extension());
    match prefix {
        Some(p) => format!("{p}_{stem}"),
        None => stem,
    }
}

/// What CosPaths shows for a key.
pub fn cos_path(object_key: &str) -> String {
    format!("/{object_key}")
}

/// Keys are made here from validated parts; anything else is refused
/// before it reaches a file system or a bucket.
pub fn is_safe_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_split_at_the_appid() {
        assert_eq!(
            parse_bucket("test-bucket-1251233127"),
            Ok(BucketName {
                name: "test-bucket".into(),
                app_id: 1251233127
            })
        );
        assert_eq!(parse_bucket("nobucket"), Err(BucketError::NoAppId));
        assert_eq!(parse_bucket("bucket-abc"), Err(BucketError::NoAppId));
        assert_eq!(
            parse_bucket("bucket-99999999999999999999999"),
            Err(BucketError::NoAppId)
        );
        for bad in ["", "-1251233127", "Bucket-1", "b/x-1", "../x-1", "b-1-"] {
            assert_eq!(parse_bucket(bad), Err(BucketError::Malformed), "{bad}");
        }
    }

    #[test]
    fn names_follow_tencent() {
        let f = ExportFormat::Raw;
        assert_eq!(
            cos_path(&object_key(None, "img-pq5pau1w", 0, "snap-fiux4bof", f)),
            "/img-pq5pau1w_system_snap-fiux4bof.raw"
        );
        assert_eq!(
            object_key(
                Some("nightly"),
                "img-pq5pau1w",
                2,
                "snap-aaaaaaaa",
                ExportFormat::Vmdk
            ),
            "nightly_img-pq5pau1w_data_snap-aaaaaaaa.vmdk"
        );
        assert!(valid_prefix("nightly-2024.01_a"));
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_prefix(bad), "{bad}");
        }
        assert!(is_safe_key("p_img-1_system_snap-1.qcow2"));
        assert!(!is_safe_key("../x"));
    }
}
