//! DescribeImages: the images the caller sees in the region (its own and
//! those shared with it, see `catalog::visibility`), by ImageIds or by
//! Filters (never both), newest first, paged, with the total count.
//!
//! Filters (different names AND, the values of one name OR; at most 10
//! filters of at most 5 values):
//! - `image-id`: exact ids (malformed ones are `InvalidImageId.Malformed`);
//! - `image-type`: the caller's own images are `PRIVATE_IMAGE`, images other
//!   accounts share with it `SHARED_IMAGE`; `PUBLIC_IMAGE` and
//!   `MARKET_IMAGE` match nothing (without the filter both kinds are listed);
//! - `image-name`, `platform`: case-insensitive substring ("fuzzy");
//! - `tag-key`, `tag-value`, `tag:<key>`;
//! - `dedicated-cluster-id`, `cdc-cache-status`: documented by Tencent for
//!   CDC clusters, which this service has none of: they match nothing.
//!
//! All filtering runs in SQL on indexed columns; only one page is loaded.

use super::{internal, region, validate};
use crate::api::{errors, AppState, Caller};
use crate::catalog::{Condition, ImageQuery, ImageView};
use serde_json::{json, Value};
use std::sync::Arc;
use tcapi::{ApiError, DescribeImages};

pub const MAX_FILTERS: usize = 10;
pub const MAX_FILTER_VALUES: usize = 5;
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;
/// ImageIds per call (as many as one page can show).
pub const MAX_IDS: usize = 100;

/// The answer's fields, rendered (see [`Reply::Rendered`]): served from
/// the response cache when the catalog has not changed since.
///
/// [`Reply::Rendered`]: super::Reply::Rendered
pub async fn describe_images(
    state: &AppState,
    caller: &Caller<'_>,
    r: &DescribeImages,
) -> Result<Arc<str>, ApiError> {
    let region = region(caller)?;
    let query = build_query(r)?;
    let key = format!("{}\u{0}{region}\u{0}{query:?}", caller.account.uin);
    // Read the counter before the query: a write committed meanwhile makes
    // the entry stale at once rather than hiding behind it.
    let generation = state.catalog.generation();
    state
        .describe_cache
        .get_or_build(&key, generation, || async {
            let (total, views) = state
                .catalog
                .describe_images(&caller.account.uin, region, &query)
                .await
                .map_err(|e| internal(caller, e))?;
            let set: Vec<Value> = views
                .iter()
                .map(|v| image_json(v, &caller.account.uin))
                .collect();
            let text = json!({ "TotalCount": total, "ImageSet": set }).to_string();
            // `{…}` → `…`: the HTTP layer adds RequestId inside the same braces.
            let inner = text
                .strip_prefix('{')
                .and_then(|t| t.strip_suffix('}'))
                .unwrap_or_default();
            Ok(Arc::from(inner))
        })
        .await
}

/// Turns the request into catalog conditions, applying every limit.
pub fn build_query(r: &DescribeImages) -> Result<ImageQuery, ApiError> {
    if r.image_ids.is_some() && r.filters.is_some() {
        return Err(errors::coexist_ids_filters());
    }
    let mut conditions = Vec::new();
    if let Some(ids) = &r.image_ids {
        if ids.len() > MAX_IDS {
            return Err(errors::limit_exceeded("ImageIds", MAX_IDS));
        }
        for id in ids {
            validate::image_id(id)?;
        }
        conditions.push(Condition::ImageIds(ids.clone()));
    }
    if let Some(filters) = &r.filters {
        if filters.len() > MAX_FILTERS {
            return Err(errors::invalid_filter(
                format!(
                    "Too many filters: {} given, at most {MAX_FILTERS} are allowed.",
                    filters.len()
                ),
                format!(
                    "过滤条件过多：共{}个，最多允许{MAX_FILTERS}个。",
                    filters.len()
                ),
            ));
        }
        for f in filters {
            conditions.extend(filter_condition(f)?);
        }
    }
    let (offset, limit) = validate::page(r.offset, r.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    if let Some(t) = &r.instance_type {
        check_instance_type(t)?;
    }
    Ok(ImageQuery {
        conditions,
        offset,
        limit,
    })
}

/// One DescribeImages filter as a condition (`None`: it selects
/// everything, as `image-type` with both private and shared images).
fn filter_condition(f: &tcapi::Filter) -> Result<Option<Condition>, ApiError> {
    let name = validate::clip(&f.name, 80);
    if f.values.len() > MAX_FILTER_VALUES {
        return Err(errors::filter_value_limit(&name, MAX_FILTER_VALUES));
    }
    if f.values.is_empty() {
        return Err(errors::invalid_filter(
            format!("The filter `{name}` needs at least one value."),
            format!("过滤条件`{name}`至少需要一个值。"),
        ));
    }
    let values = f.values.clone();
    let c = match f.name.as_str() {
        "image-id" => {
            for v in &values {
                validate::image_id(v)?;
            }
            Condition::ImageIds(values)
        }
        "image-type" => {
            check_image_types(&values)?;
            let private = values.iter().any(|v| v == "PRIVATE_IMAGE");
            let shared = values.iter().any(|v| v == "SHARED_IMAGE");
            match (private, shared) {
                (true, true) => return Ok(None),
                (true, false) => Condition::Owned,
                (false, true) => Condition::SharedWithCaller,
                (false, false) => Condition::Nothing,
            }
        }
        "image-name" => Condition::NameContains(values),
        "platform" => Condition::PlatformContains(values),
        "tag-key" => Condition::TagKey(values),
        "tag-value" => Condition::TagValue(values),
        "dedicated-cluster-id" | "cdc-cache-status" => Condition::Nothing,
        other => match other.strip_prefix("tag:") {
            Some(key) if !key.is_empty() => Condition::Tag {
                key: key.to_owned(),
                values,
            },
            _ => {
                return Err(errors::invalid_filter(
                    format!("The filter name `{name}` is not supported. Use image-id, image-type, image-name, platform, tag-key, tag-value or tag:<key>."),
                    format!("不支持过滤条件`{name}`，可用image-id、image-type、image-name、platform、tag-key、tag-value或tag:<key>。"),
                ))
            }
        },
    };
    Ok(Some(c))
}

/// Every image here runs on every instance type; only the form of the
/// name is checked (`S5.MEDIUM2`: family, a dot, size).
fn check_instance_type(t: &str) -> Result<(), ApiError> {
    let ok = t.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.chars()
                .chain(b.chars())
                .all(|c| c.is_ascii_alphanumeric())
    });
    if !ok {
        return Err(ApiError::new(
            "InvalidInstanceType.Malformed",
            format!(
                "The InstanceType `{}` is malformed (expected e.g. S5.MEDIUM2).",
                validate::clip(t, 40)
            ),
            format!(
                "实例机型`{}`格式错误（例如S5.MEDIUM2）。",
                validate::clip(t, 40)
            ),
        ));
    }
    Ok(())
}

/// The values of the `image-type` filter the API documents.
const IMAGE_TYPES: &[&str] = &["PRIVATE_IMAGE", "PUBLIC_IMAGE", "SHARED_IMAGE"];

fn check_image_types(values: &[String]) -> Result<(), ApiError> {
    match values.iter().find(|v| !IMAGE_TYPES.contains(&v.as_str())) {
        None => Ok(()),
        Some(v) => {
            let v = validate::clip(v, 40);
            Err(errors::invalid_filter(
                format!("The filter `image-type` has the invalid value `{v}`: use PRIVATE_IMAGE, PUBLIC_IMAGE or SHARED_IMAGE."),
                format!("过滤条件`image-type`的取值`{v}`不合法，可用PRIVATE_IMAGE、PUBLIC_IMAGE或SHARED_IMAGE。"),
            ))
        }
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` in UTC, as the API documents CreatedTime.
pub fn iso8601(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "1970-01-01T00:00:00Z".into(),
    }
}

/// The Image structure as `viewer` (an account uin) sees it, every field
/// filled from the catalog: another account's image is one shared with the
/// viewer (`SHARED_IMAGE`, the owner as creator).
pub fn image_json(v: &ImageView, viewer: &str) -> Value {
    let i = &v.image;
    let image_type = if i.account_uin == viewer {
        "PRIVATE_IMAGE"
    } else {
        "SHARED_IMAGE"
    };
    let architecture = match i.architecture.as_str() {
        "arm_64" => "arm",
        other => other,
    };
    let snapshots: Vec<Value> = v
        .disks
        .iter()
        .map(|d| {
            json!({
                "SnapshotId": d.snapshot_id,
                "DiskUsage": d.disk_usage,
                "DiskSize": d.size_gib,
            })
        })
        .collect();
    let tags: Vec<Value> = v
        .tags
        .iter()
        .map(|(k, val)| json!({ "Key": k, "Value": val }))
        .collect();
    json!({
        "ImageId": i.image_id,
        "OsName": i.os_name,
        "ImageType": image_type,
        "CreatedTime": iso8601(i.created_at),
        "ImageName": i.image_name,
        "ImageDescription": i.description,
        "ImageSize": i.image_size_gib,
        "Architecture": architecture,
        "ImageState": i.state,
        "Platform": i.platform,
        "ImageCreator": i.account_uin,
        "ImageSource": "EXTERNAL_IMPORT",
        "SyncPercent": null,
        "IsSupportCloudinit": i.is_support_cloudinit,
        "SnapshotSet": snapshots,
        "Tags": tags,
        "LicenseType": i.license_type,
        "ImageFamily": i.image_family,
        "ImageDeprecated": i.deprecated,
        "CdcCacheStatus": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcapi::Filter;

    fn f(name: &str, values: &[&str]) -> Filter {
        Filter {
            name: name.into(),
            values: values.iter().map(|v| (*v).into()).collect(),
        }
    }

    fn code(r: &DescribeImages) -> String {
        build_query(r)
            .err()
            .map(|e| e.code.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn limits_and_codes() {
        let both = DescribeImages {
            image_ids: Some(vec!["img-12345678".into()]),
            filters: Some(vec![f("image-name", &["a"])]),
            ..Default::default()
        };
        assert_eq!(
            code(&both),
            "InvalidParameter.InvalidParameterCoexistImageIdsFilters"
        );
        let eleven = DescribeImages {
            filters: Some((0..11).map(|_| f("image-name", &["a"])).collect()),
            ..Default::default()
        };
        assert_eq!(code(&eleven), "InvalidFilter");
        let six = DescribeImages {
            filters: Some(vec![f("image-name", &["a", "b", "c", "d", "e", "f"])]),
            ..Default::default()
        };
        assert_eq!(code(&six), "InvalidFilterValue.LimitExceeded");
        let unknown = DescribeImages {
            filters: Some(vec![f("image-colour", &["a"])]),
            ..Default::default()
        };
        assert_eq!(code(&unknown), "InvalidFilter");
        let bad_id = DescribeImages {
            image_ids: Some(vec!["img-XYZ".into()]),
            ..Default::default()
        };
        assert_eq!(code(&bad_id), "InvalidImageId.Malformed");
        let big = DescribeImages {
            limit: Some(101),
            ..Default::default()
        };
        assert_eq!(code(&big), "InvalidParameterValue");
        let bad_type = DescribeImages {
            filters: Some(vec![f("image-type", &["PRIVATE_IMAGE", "MY_IMAGE"])]),
            ..Default::default()
        };
        assert_eq!(code(&bad_type), "InvalidFilter");
    }

    #[test]
    fn filters_become_conditions() {
        let r = DescribeImages {
            filters: Some(vec![
                f("image-type", &["PRIVATE_IMAGE", "SHARED_IMAGE"]),
                f("tag:env", &["prod", "dev"]),
                f("image-type", &["PUBLIC_IMAGE"]),
                f("image-type", &["SHARED_IMAGE"]),
                f("image-type", &["PRIVATE_IMAGE", "PUBLIC_IMAGE"]),
            ]),
            ..Default::default()
        };
        let q = build_query(&r).unwrap();
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert_eq!(q.offset, 0);
        assert_eq!(
            q.conditions,
            vec![
                Condition::Tag {
                    key: "env".into(),
                    values: vec!["prod".into(), "dev".into()]
                },
                Condition::Nothing,
                Condition::SharedWithCaller,
                Condition::Owned,
            ]
        );
    }

    #[test]
    fn created_time_format() {
        assert_eq!(iso8601(1_551_113_065_123), "2019-02-25T16:44:25Z");
    }
}
