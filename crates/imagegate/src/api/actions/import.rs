//! ImportImage: every synchronous rule, then one transaction that writes the
//! IMPORTING image, its tags, its disks and its QUEUED job. The import itself
//! (fetch, inspect, convert) is the pipeline's, from that job.
//!
//! Order of checks: region ability, Architecture, OS type / version /
//! architecture, name, description, LicenseType, BootMode, ImageFamily, tags,
//! URLs (system disk, then data disks), name uniqueness, quota. DryRun stops
//! after the last check and writes nothing.

use super::{catalog_write_failed, internal, region, validate};
use crate::api::{errors, AppState, Caller};
use crate::catalog::{InsertOutcome, NewImage};
use crate::oslist::{display_os_name, OsRejection};
use crate::source::{parse_image_url, ImageSource};
use serde_json::{json, Value};
use tcapi::{ApiError, ImportImage};

pub const LICENSE_TYPES: &[&str] = &["TencentCloud", "BYOL"];
pub const BOOT_MODES: &[&str] = &["Legacy BIOS", "UEFI"];
/// Tags per image (Tencent's tag service allows 50 per resource).
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY_CHARS: usize = 127;
pub const MAX_TAG_VALUE_CHARS: usize = 255;
/// Data disks per import (a CVM instance takes at most 20 data disks).
pub const MAX_DATA_DISKS: usize = 20;

/// Regions on the Chinese mainland outside the finance zones: these may
/// import from a COS bucket of another mainland region. Elsewhere (overseas
/// and finance zones) the bucket must be in the region itself, as Tencent's
/// import documentation requires.
const MAINLAND_REGIONS: &[&str] = &[
    "ap-beijing",
    "ap-chengdu",
    "ap-chongqing",
    "ap-guangzhou",
    "ap-nanjing",
    "ap-shanghai",
    "ap-shenzhen",
    "ap-tianjin",
    "ap-wuhan",
];

pub async fn import_image(
    state: &AppState,
    caller: &Caller<'_>,
    r: &ImportImage,
) -> Result<Value, ApiError> {
    let region = region(caller)?;
    if !state.imports_in_region(region) {
        return Err(errors::region_cannot_import(region));
    }
    let (os, os_version) = checked_os(state, r)?;

    validate::image_name(&r.image_name)?;
    let description = r.image_description.clone().unwrap_or_default();
    validate::description(&description)?;
    let license_type = match r.license_type.as_deref() {
        None => "TencentCloud",
        Some(v) if LICENSE_TYPES.contains(&v) => v,
        Some(v) => return Err(errors::invalid_license_type(&validate::clip(v, 40))),
    };
    let boot_mode = match r.boot_mode.as_deref() {
        None => "Legacy BIOS",
        Some(v) if BOOT_MODES.contains(&v) => v,
        Some(v) => return Err(errors::invalid_boot_mode(&validate::clip(v, 40))),
    };
    if let Some(f) = &r.image_family {
        validate::image_family(f)?;
    }
    let tags = tags(r)?;

    let disk_urls = disk_urls(state, caller, region, r)?;

    let uin = &caller.account.uin;
    let quota = caller.account.image_quota;
    if r.dry_run {
        dry_run(state, caller, region, &r.image_name).await?;
        return Ok(json!({}));
    }

    let new = NewImage {
        account_uin: uin.clone(),
        region: region.to_owned(),
        image_name: r.image_name.clone(),
        description,
        os_type: os.os_name.clone(),
        os_name: display_os_name(&os.os_name, &os_version, &r.architecture),
        os_version,
        architecture: r.architecture.clone(),
        platform: platform_at_import(os),
        license_type: license_type.to_owned(),
        boot_mode: boot_mode.to_owned(),
        image_family: r.image_family.clone().unwrap_or_default(),
        force: r.force,
        // A forced import is for images without cloud-init; the others must
        // have it (inspection checks and updates this).
        is_support_cloudinit: !r.force,
        tags,
        disk_urls,
    };
    match state
        .catalog
        .insert_import(&new, quota)
        .await
        .map_err(|e| catalog_write_failed(caller, e))?
    {
        InsertOutcome::Created { image_id } => {
            state.wake.notify_one();
            tracing::info!(
                request_id = caller.request_id,
                image_id = %image_id,
                uin = %uin,
                region,
                "import queued"
            );
            Ok(json!({ "ImageId": image_id }))
        }
        InsertOutcome::DuplicateName => Err(errors::name_duplicate(&r.image_name)),
        InsertOutcome::QuotaExceeded => Err(errors::quota_exceeded(quota)),
    }
}

/// The OS entry for `OsType`/`OsVersion`/`Architecture`, and the version
/// as the OS list spells it (the comparison ignored case).
fn checked_os<'a>(
    state: &'a AppState,
    r: &ImportImage,
) -> Result<(&'a crate::config::ImportOsEntry, String), ApiError> {
    if !crate::config::ARCHITECTURES.contains(&r.architecture.as_str()) {
        return Err(errors::invalid_architecture(&validate::clip(
            &r.architecture,
            40,
        )));
    }
    let os = state
        .oslist
        .check(&r.os_type, &r.os_version, &r.architecture)
        .map_err(|why| match why {
            OsRejection::UnknownType => {
                errors::os_type_unsupported(&validate::clip(&r.os_type, 60))
            }
            OsRejection::UnknownVersion => errors::os_version_unsupported(
                &validate::clip(&r.os_type, 60),
                &validate::clip(&r.os_version, 40),
            ),
            OsRejection::UnsupportedArchitecture => {
                errors::architecture_unsupported_for_os(&r.architecture, &r.os_type)
            }
        })?;
    let os_version = os
        .os_versions
        .iter()
        .find(|v| v.eq_ignore_ascii_case(r.os_version.trim()))
        .cloned()
        .unwrap_or_else(|| r.os_version.clone());
    Ok((os, os_version))
}

/// The system disk's and the data disks' URLs, each checked (scheme, host,
/// network policy), spaces encoded.
fn disk_urls(
    state: &AppState,
    caller: &Caller<'_>,
    region: &str,
    r: &ImportImage,
) -> Result<Vec<String>, ApiError> {
    if r.import_image_data_disk_list.len() > MAX_DATA_DISKS {
        return Err(errors::limit_exceeded(
            "ImportImageDataDiskList",
            MAX_DATA_DISKS,
        ));
    }
    let mut disk_urls = Vec::with_capacity(1 + r.import_image_data_disk_list.len());
    let url = encode_spaces(&r.image_url);
    check_url(state, caller, region, "ImageUrl", &url)?;
    disk_urls.push(url);
    for (i, d) in r.import_image_data_disk_list.iter().enumerate() {
        let name = format!("ImportImageDataDiskList.{i}.ImageUrl");
        let url = encode_spaces(&d.image_url);
        check_url(state, caller, region, &name, &url)?;
        disk_urls.push(url);
    }
    Ok(disk_urls)
}

/// Every check a real call makes, by reading only.
async fn dry_run(
    state: &AppState,
    caller: &Caller<'_>,
    region: &str,
    image_name: &str,
) -> Result<(), ApiError> {
    let uin = &caller.account.uin;
    let quota = caller.account.image_quota;
    let catalog = &state.catalog;
    if catalog
        .name_taken(uin, region, image_name, None)
        .await
        .map_err(|e| internal(caller, e))?
    {
        return Err(errors::name_duplicate(image_name));
    }
    let used = catalog
        .quota_used(uin, region)
        .await
        .map_err(|e| internal(caller, e))?;
    if used >= i64::from(quota) {
        return Err(errors::quota_exceeded(quota));
    }
    Ok(())
}

/// TagSpecification: resource type `image`, non-empty keys within Tencent's
/// lengths, each key once.
fn tags(r: &ImportImage) -> Result<Vec<(String, String)>, ApiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for spec in &r.tag_specification {
        if spec.resource_type != "image" {
            return Err(errors::invalid_parameter_value(
                format!(
                    "TagSpecification ResourceType `{}` is invalid; it must be `image`.",
                    validate::clip(&spec.resource_type, 40)
                ),
                format!(
                    "TagSpecification的ResourceType`{}`无效，必须为`image`。",
                    validate::clip(&spec.resource_type, 40)
                ),
            ));
        }
        for t in &spec.tags {
            if t.key.is_empty() {
                return Err(errors::tag_key_empty());
            }
            let n = t.key.chars().count();
            if n > MAX_TAG_KEY_CHARS {
                return Err(errors::too_large("Tags.Key", MAX_TAG_KEY_CHARS, n));
            }
            let n = t.value.chars().count();
            if n > MAX_TAG_VALUE_CHARS {
                return Err(errors::too_large("Tags.Value", MAX_TAG_VALUE_CHARS, n));
            }
            if out.iter().any(|(k, _)| *k == t.key) {
                return Err(errors::invalid_parameter_value(
                    format!(
                        "The tag key `{}` is given twice.",
                        validate::clip(&t.key, 60)
                    ),
                    format!("标签键`{}`重复。", validate::clip(&t.key, 60)),
                ));
            }
            out.push((t.key.clone(), t.value.clone()));
            if out.len() > MAX_TAGS {
                return Err(errors::limit_exceeded("Tags", MAX_TAGS));
            }
        }
    }
    Ok(out)
}

/// Tencent's own ImportImage example sends
/// `ImageUrl=http://…/Windows%20Server%202008%20R2%20x64a.vmdk` in a query
/// string, so the decoded value holds literal spaces (COS object keys often
/// do). Spaces are encoded as `%20`, as a browser would, before the URL rules
/// run; nothing else is rewritten.
fn encode_spaces(url: &str) -> String {
    url.trim().replace(' ', "%20")
}

/// URL form, scheme, COS ownership and network policy (the source module's
/// rules), plus Tencent's region rule for COS buckets.
fn check_url(
    state: &AppState,
    caller: &Caller<'_>,
    region: &str,
    param: &str,
    url: &str,
) -> Result<(), ApiError> {
    let source = parse_image_url(url, caller.account.app_id, &state.config.source)
        .map_err(|e| errors::url_error(param, &e.to_string()))?;
    if let ImageSource::Cos {
        region: Some(bucket_region),
        ..
    } = &source
    {
        let both_mainland = MAINLAND_REGIONS.contains(&region)
            && MAINLAND_REGIONS.contains(&bucket_region.as_str());
        if bucket_region != region && !both_mainland {
            return Err(errors::url_error(
                param,
                &format!(
                    "the COS bucket is in {bucket_region}, but importing in {region} requires a bucket in the same region"
                ),
            ));
        }
    }
    Ok(())
}

/// `Platform` from the declared OS, as inspection will report it: the
/// distribution for Linux ("CentOS"), "Windows" for every Windows version
/// (so DescribeImages shows the same value during the import and after).
fn platform_at_import(os: &crate::config::ImportOsEntry) -> String {
    os.platform.image_platform(&os.os_name)
}
