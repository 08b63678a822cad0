//! ExportImages: every synchronous rule, then one transaction that writes a
//! QUEUED export task with its objects; the export workers do the rest.
//!
//! Order of checks: ImageIds/SnapshotIds (exactly one; SnapshotIds is "not
//! open", as on Tencent Cloud), the ids, ExportFormat, FileNamePrefixList,
//! BucketName (form, then owner), a COS store to write to, each image
//! (the caller's, not Windows, NORMAL, disk sizes and counts), the bucket's
//! existence, the cap on unfinished tasks. DryRun stops before the write.
//! RoleName is accepted and ignored: imagegate has no CAM roles, and the
//! bucket is the caller's own.

use std::collections::HashMap;

use diskformat::export::ExportFormat;
use serde_json::{json, Value};
use tcapi::{ApiError, ExportImages};

use super::{catalog_write_failed, internal, region, validate};
use crate::api::access::{ensure_owned, OwnerAction};
use crate::api::{errors, AppState, Caller};
use crate::catalog::exports::{ExportInsert, ExportObject, NewExport};
use crate::catalog::jobs::default_blob_key;
use crate::catalog::{Condition, ImageQuery, ImageView};
use crate::domain::ImageState;
use crate::export::names::{self, BucketError, BucketName};
use crate::export::target::{Target, TargetError};

/// Images per call (Tencent documents none; this bounds one task).
pub const MAX_IMAGES: usize = 10;
/// Tencent: each disk at most 500 GB, at most 5 data disks.
pub const MAX_DISK_GIB: u64 = 500;
pub const MAX_DATA_DISKS: usize = 5;

pub async fn export_images(
    state: &AppState,
    caller: &Caller<'_>,
    r: &ExportImages,
) -> Result<Value, ApiError> {
    let region = region(caller)?;
    let ids = image_ids(r)?;
    let format = match r.export_format.as_deref() {
        None => ExportFormat::Raw,
        Some(f) => f
            .parse()
            .map_err(|_| errors::invalid_export_format(&validate::clip(f, 20)))?,
    };
    let prefixes = prefixes(r, ids.len())?;
    let bucket = bucket(&r.bucket_name, caller.account.app_id)?;
    let target =
        Target::from_config(&state.config.source).ok_or_else(errors::missing_cos_endpoint)?;

    let views = images(state, caller, region, &ids).await?;
    let mut objects = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let view = &views[id];
        let prefix = prefixes.as_ref().map(|p| p[n].as_str());
        objects.extend(objects_of(view, prefix, format, r.only_export_root_disk)?);
    }
    match target.check_bucket(&bucket.full()).await {
        Ok(()) => {}
        Err(TargetError::BucketNotFound(b)) => return Err(errors::bucket_not_found(&b)),
        Err(e) => return Err(internal(caller, e)),
    }
    if r.dry_run {
        return Ok(json!({}));
    }
    let cos_paths: Vec<String> = objects
        .iter()
        .map(|o| names::cos_path(&o.object_key))
        .collect();
    let max = state.config.limits.max_export_tasks;
    let new = NewExport {
        account_uin: caller.account.uin.clone(),
        region: region.to_owned(),
        bucket: bucket.full(),
        format: format.api_name().to_owned(),
        objects,
        max_active: i64::from(max),
    };
    match state
        .catalog
        .insert_export(&new)
        .await
        .map_err(|e| catalog_write_failed(caller, e))?
    {
        ExportInsert::Created { task_id } => {
            state.export_wake.notify_one();
            tracing::info!(request_id = caller.request_id, task_id, bucket = %new.bucket, format = %format, "export queued");
            Ok(json!({ "TaskId": task_id, "CosPaths": cos_paths }))
        }
        ExportInsert::TooManyTasks => Err(errors::export_task_limit(max)),
    }
}

/// Exactly one of ImageIds and SnapshotIds; the ids well formed, each once.
fn image_ids(r: &ExportImages) -> Result<Vec<String>, ApiError> {
    let ids = match (&r.image_ids, &r.snapshot_ids) {
        (Some(ids), None) => ids,
        (None, Some(_)) => return Err(errors::snapshot_export_unsupported()),
        _ => return Err(errors::image_ids_snapshot_ids_must_one()),
    };
    if ids.len() > MAX_IMAGES {
        return Err(errors::limit_exceeded("ImageIds", MAX_IMAGES));
    }
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        validate::image_id(id)?;
        if out.contains(id) {
            return Err(errors::invalid_parameter_value(
                format!("The image `{id}` is given twice in ImageIds."),
                format!("ImageIds中镜像`{id}`重复。"),
            ));
        }
        out.push(id.clone());
    }
    Ok(out)
}

/// FileNamePrefixList: one plain name part per image, or none at all.
fn prefixes(r: &ExportImages, images: usize) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = &r.file_name_prefix_list else {
        return Ok(None);
    };
    if list.len() != images {
        return Err(errors::invalid_prefix_list(
            format!(
                "FileNamePrefixList has {} entries but ImageIds has {images}: give one prefix per image.",
                list.len()
            ),
            format!("FileNamePrefixList有{}项，而ImageIds有{images}项，须一一对应。", list.len()),
        ));
    }
    for p in list {
        if !names::valid_prefix(p) {
            let shown = validate::clip(p, 80);
            return Err(errors::invalid_prefix_list(
                format!(
                    "The prefix `{shown}` is invalid: use 1 to {} letters, digits, `-`, `_` or `.`, not starting with `.`.",
                    names::MAX_PREFIX_CHARS
                ),
                format!("前缀`{shown}`无效：须为1至{}个字母、数字、`-`、`_`或`.`，且不以`.`开头。", names::MAX_PREFIX_CHARS),
            ));
        }
    }
    Ok(Some(list.clone()))
}

fn bucket(name: &str, app_id: u64) -> Result<BucketName, ApiError> {
    let shown = validate::clip(name, 60);
    let bucket = names::parse_bucket(name).map_err(|e| match e {
        BucketError::NoAppId => errors::bucket_app_id_format(&shown),
        BucketError::Malformed => errors::bucket_not_found(&shown),
    })?;
    if bucket.app_id != app_id {
        return Err(errors::bucket_permission(&shown, bucket.app_id));
    }
    Ok(bucket)
}

/// The caller's own images, by id: another account's is not found, one
/// only shared with the caller is refused.
async fn images(
    state: &AppState,
    caller: &Caller<'_>,
    region: &str,
    ids: &[String],
) -> Result<HashMap<String, ImageView>, ApiError> {
    // A recipient of a shared image may not export it (the documented code).
    for id in ids {
        ensure_owned(state, caller, id, OwnerAction::Export).await?;
    }
    let query = ImageQuery {
        conditions: vec![Condition::ImageIds(ids.to_vec())],
        offset: 0,
        limit: ids.len() as i64,
    };
    let (_, views) = state
        .catalog
        .describe_images(&caller.account.uin, region, &query)
        .await
        .map_err(|e| internal(caller, e))?;
    let by_id: HashMap<String, ImageView> = views
        .into_iter()
        .map(|v| (v.image.image_id.clone(), v))
        .collect();
    if let Some(id) = ids.iter().find(|id| !by_id.contains_key(*id)) {
        return Err(errors::image_id_not_found(id));
    }
    Ok(by_id)
}

/// The objects of one image, system disk first; the image's refusals.
fn objects_of(
    view: &ImageView,
    prefix: Option<&str>,
    format: ExportFormat,
    only_root: bool,
) -> Result<Vec<ExportObject>, ApiError> {
    let image = &view.image;
    let id = &image.image_id;
    // Windows first: whatever its state, a Windows image never exports.
    let windows = |s: &str| s.to_ascii_lowercase().contains("windows");
    if windows(&image.platform) || windows(&image.os_type) {
        return Err(errors::windows_export_unsupported(id));
    }
    if image.state != ImageState::Normal {
        return Err(errors::export_image_state(id, image.state.as_str()));
    }
    let disks: Vec<_> = view
        .disks
        .iter()
        .filter(|d| !only_root || d.disk_index == 0)
        .collect();
    if disks.iter().filter(|d| d.disk_index != 0).count() > MAX_DATA_DISKS {
        return Err(errors::invalid_parameter_value(
            format!("The image `{id}` has more than {MAX_DATA_DISKS} data disks, the most an export takes; set OnlyExportRootDisk to export its system disk."),
            format!("镜像`{id}`的数据盘超过{MAX_DATA_DISKS}块，无法整机导出，可设置OnlyExportRootDisk只导出系统盘。"),
        ));
    }
    let mut out = Vec::with_capacity(disks.len());
    for d in disks {
        if u64::try_from(d.size_gib).unwrap_or(0) > MAX_DISK_GIB {
            return Err(errors::export_too_large(id, MAX_DISK_GIB));
        }
        out.push(ExportObject {
            seq: 0,
            image_id: id.clone(),
            disk_index: d.disk_index,
            snapshot_id: d.snapshot_id.clone(),
            blob_key: d
                .blob_key
                .clone()
                .unwrap_or_else(|| default_blob_key(id, d.disk_index)),
            object_key: names::object_key(prefix, id, d.disk_index, &d.snapshot_id, format),
            guest_size: 0,
            published: false,
        });
    }
    Ok(out)
}
