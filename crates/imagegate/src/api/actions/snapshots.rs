//! CBS DescribeSnapshots, for the snapshots behind the caller's images: the
//! `SnapshotSet` of DescribeImages names one per disk of an image, and image
//! tooling (Terraform's `tencentcloud_images` data source) looks each up here.
//! An image that failed to import has no snapshot; one still importing has
//! one in state `CREATING`.
//!
//! Filters (different names AND, the values of one name OR; at most 10
//! filters of at most 5 values): `snapshot-id`, `snapshot-name` (exact),
//! `snapshot-state`, `disk-usage`, `snapshot-type` (every snapshot here is
//! `PRIVATE_SNAPSHOT`), `encrypt` (none is encrypted); `disk-id`, `zone` and
//! `project-id` name things this service has none of beyond project 0.
//!
//! The snapshots are those of the caller's images in the region, so a scan
//! is bounded by the account's image quota.

use super::describe::{MAX_FILTERS, MAX_FILTER_VALUES};
use super::{internal, region, validate};
use crate::api::{errors, AppState, Caller};
use crate::catalog::{Condition, DiskRow, ImageQuery, ImageView};
use crate::domain::ImageState;
use serde_json::{json, Value};
use tcapi::{ApiError, DescribeSnapshots, Filter};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;
/// Images read per catalog page while collecting snapshots.
const PAGE: i64 = 100;

/// One snapshot: a disk of an image, with the image it belongs to.
struct Snap<'a> {
    view: &'a ImageView,
    disk: &'a DiskRow,
}

impl Snap<'_> {
    fn state(&self) -> &'static str {
        if self.view.image.state == ImageState::Normal {
            "NORMAL"
        } else {
            "CREATING"
        }
    }

    fn name(&self) -> String {
        format!(
            "{} {}",
            self.view.image.image_id,
            self.disk.disk_usage.to_ascii_lowercase().replace('_', " ")
        )
    }
}

/// True for `snap-` + 8 of `[a-z0-9]`.
fn is_snapshot_id(s: &str) -> bool {
    s.len() == 13
        && s.starts_with("snap-")
        && s.as_bytes()[5..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn snapshot_id(id: &str) -> Result<(), ApiError> {
    if is_snapshot_id(id) {
        return Ok(());
    }
    // CBS documents no `Malformed` code for snapshot ids.
    let id = validate::clip(id, 40);
    Err(errors::invalid_parameter_value(
        format!("The SnapshotId `{id}` is malformed (expected snap- and 8 characters)."),
        format!("快照ID`{id}`格式错误（应为snap-加8位字符）。"),
    ))
}

/// The request's checks: ids and filters, paging and order.
struct Plan {
    ids: Option<Vec<String>>,
    filters: Vec<Filter>,
    offset: i64,
    limit: i64,
    descending: bool,
    by_size: bool,
}

fn plan(r: &DescribeSnapshots) -> Result<Plan, ApiError> {
    if r.snapshot_ids.is_some() && r.filters.is_some() {
        return Err(ApiError::new(
            "InvalidParameter",
            "SnapshotIds and Filters cannot be specified together.",
            "SnapshotIds和Filters不能同时指定。",
        ));
    }
    if let Some(ids) = &r.snapshot_ids {
        if ids.len() > MAX_LIMIT as usize {
            return Err(errors::limit_exceeded("SnapshotIds", MAX_LIMIT as usize));
        }
        ids.iter().try_for_each(|id| snapshot_id(id))?;
    }
    let filters = r.filters.clone().unwrap_or_default();
    if filters.len() > MAX_FILTERS {
        return Err(errors::invalid_filter(
            format!("Too many filters: at most {MAX_FILTERS} are allowed."),
            format!("过滤条件过多，最多允许{MAX_FILTERS}个。"),
        ));
    }
    for f in &filters {
        check_filter(f)?;
    }
    let offset = r.offset.unwrap_or(0);
    let limit = r.limit.unwrap_or(DEFAULT_LIMIT);
    if offset < 0 || !(0..=MAX_LIMIT).contains(&limit) {
        return Err(errors::invalid_parameter_value(
            format!("Offset must not be negative and Limit must be between 0 and {MAX_LIMIT} (got {offset}, {limit})."),
            format!("Offset不能为负数，Limit取值范围为0到{MAX_LIMIT}（当前为{offset}、{limit}）。"),
        ));
    }
    let descending = match r.order.as_deref() {
        None | Some("DESC") => true,
        Some("ASC") => false,
        Some(o) => return Err(bad_value("Order", o, "ASC, DESC")),
    };
    let by_size = match r.order_field.as_deref() {
        None | Some("CREATE_TIME") => false,
        Some("DISK_SIZE") => true,
        Some(o) => return Err(bad_value("OrderField", o, "CREATE_TIME, DISK_SIZE")),
    };
    Ok(Plan {
        ids: r.snapshot_ids.clone(),
        filters,
        offset,
        limit,
        descending,
        by_size,
    })
}

fn bad_value(param: &str, value: &str, allowed: &str) -> ApiError {
    let v = validate::clip(value, 40);
    errors::invalid_parameter_value(
        format!("The parameter `{param}` has the invalid value `{v}`: use {allowed}."),
        format!("参数`{param}`的取值`{v}`不合法，可用{allowed}。"),
    )
}

/// The filters CBS documents for DescribeSnapshots (and `zone`, which its
/// example sends).
const FILTER_NAMES: &[&str] = &[
    "snapshot-id",
    "snapshot-name",
    "snapshot-state",
    "disk-usage",
    "snapshot-type",
    "encrypt",
    "disk-id",
    "zone",
    "project-id",
];

fn check_filter(f: &Filter) -> Result<(), ApiError> {
    let name = validate::clip(&f.name, 80);
    if !FILTER_NAMES.contains(&f.name.as_str()) {
        return Err(errors::invalid_filter(
            format!(
                "The filter name `{name}` is not supported. Use {}.",
                FILTER_NAMES.join(", ")
            ),
            format!("不支持过滤条件`{name}`，可用{}。", FILTER_NAMES.join("、")),
        ));
    }
    if f.values.is_empty() || f.values.len() > MAX_FILTER_VALUES {
        return Err(errors::filter_value_limit(&name, MAX_FILTER_VALUES));
    }
    if f.name == "snapshot-id" {
        f.values.iter().try_for_each(|id| snapshot_id(id))?;
    }
    Ok(())
}

fn matches(f: &Filter, s: &Snap) -> bool {
    let any = |v: &str| f.values.iter().any(|x| x == v);
    match f.name.as_str() {
        "snapshot-id" => any(&s.disk.snapshot_id),
        "snapshot-name" => any(&s.name()),
        "snapshot-state" => any(s.state()),
        "disk-usage" => any(&s.disk.disk_usage),
        "snapshot-type" => any("PRIVATE_SNAPSHOT"),
        "encrypt" => any("FALSE") || any("false"),
        "project-id" => any("0"),
        _ => false, // disk-id, zone: none here
    }
}

pub async fn describe_snapshots(
    state: &AppState,
    caller: &Caller<'_>,
    r: &DescribeSnapshots,
) -> Result<Value, ApiError> {
    let region = region(caller)?;
    let plan = plan(r)?;
    let id_list = plan.ids.clone().or_else(|| {
        let ids: Vec<String> = plan
            .filters
            .iter()
            .filter(|f| f.name == "snapshot-id")
            .flat_map(|f| f.values.clone())
            .collect();
        (!ids.is_empty()).then_some(ids)
    });
    // Only the caller's own images: an image shared with it keeps its
    // snapshots in its owner's account.
    let mut conditions = vec![Condition::Owned];
    conditions.extend(id_list.iter().cloned().map(Condition::SnapshotIds));
    let mut views = Vec::new();
    loop {
        let query = ImageQuery {
            conditions: conditions.clone(),
            offset: views.len() as i64,
            limit: PAGE,
        };
        let (_, page) = state
            .catalog
            .describe_images(&caller.account.uin, region, &query)
            .await
            .map_err(|e| internal(caller, e))?;
        let done = (page.len() as i64) < PAGE;
        views.extend(page);
        if done {
            break;
        }
    }
    let mut snaps: Vec<Snap> = views
        .iter()
        .filter(|v| v.image.state != ImageState::ImportFailed)
        .flat_map(|view| view.disks.iter().map(move |disk| Snap { view, disk }))
        .filter(|s| {
            id_list
                .as_ref()
                .is_none_or(|ids| ids.contains(&s.disk.snapshot_id))
        })
        .filter(|s| plan.filters.iter().all(|f| matches(f, s)))
        .collect();
    snaps.sort_by_key(|s| {
        let key = if plan.by_size {
            s.disk.size_gib
        } else {
            s.view.image.created_at
        };
        (key, s.disk.snapshot_id.clone())
    });
    if plan.descending {
        snaps.reverse();
    }
    let total = snaps.len();
    let set: Vec<Value> = snaps
        .iter()
        .skip(plan.offset as usize)
        .take(plan.limit as usize)
        .map(snapshot_json)
        .collect();
    Ok(json!({ "TotalCount": total, "SnapshotSet": set }))
}

/// CBS writes times in Beijing time (UTC+8): `2019-07-15 00:00:00` for
/// CreateTime, RFC 3339 with the offset for LatestModifyTime.
fn beijing(ms: i64, rfc3339: bool) -> String {
    let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("a valid offset");
    let t = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&offset);
    if rfc3339 {
        t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// The Snapshot structure of CBS 2017-03-12, every output field filled.
fn snapshot_json(s: &Snap) -> Value {
    let i = &s.view.image;
    let tags: Vec<Value> = s
        .view
        .tags
        .iter()
        .map(|(k, v)| json!({ "Key": k, "Value": v }))
        .collect();
    json!({
        "SnapshotId": s.disk.snapshot_id,
        // Regions here have no zones; the project is the default one.
        "Placement": {
            "Zone": "", "CageId": "", "CdcId": "", "CdcName": "",
            "DedicatedClusterId": "", "ProjectId": 0, "ProjectName": "",
        },
        "CopyFromRemote": false,
        "SnapshotState": s.state(),
        "IsPermanent": true,
        "SnapshotName": s.name(),
        "DeadlineTime": "",
        "Percent": if s.state() == "NORMAL" { 100 } else { 0 },
        "Images": [{ "ImageId": i.image_id, "ImageName": i.image_name }],
        "ShareReference": 0,
        "SnapshotType": "PRIVATE_SNAPSHOT",
        "DiskSize": s.disk.size_gib,
        "DiskId": "",
        "CopyingToRegions": [],
        "Encrypt": false,
        "CreateTime": beijing(i.created_at, false),
        "ImageCount": 1,
        "DiskUsage": s.disk.disk_usage,
        "TimeStartShare": "",
        "Tags": tags,
        "IsLocked": false,
        "LatestModifyTime": beijing(i.updated_at, true),
        "AutoSnapshotPolicyId": "",
        "SnapshotMode": "STANDARD_SNAPSHOT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, values: &[&str]) -> Filter {
        Filter {
            name: name.into(),
            values: values.iter().map(|v| (*v).into()).collect(),
        }
    }

    fn code(r: &DescribeSnapshots) -> String {
        plan(r)
            .err()
            .map(|e| e.code.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn beijing_times() {
        assert_eq!(beijing(1_551_113_065_123, false), "2019-02-26 00:44:25");
        assert_eq!(
            beijing(1_551_113_065_123, true),
            "2019-02-26T00:44:25+08:00"
        );
    }

    #[test]
    fn checks_and_codes() {
        let ok = DescribeSnapshots {
            snapshot_ids: Some(vec!["snap-12345678".into()]),
            ..Default::default()
        };
        assert_eq!(code(&ok), "");
        let bad = DescribeSnapshots {
            snapshot_ids: Some(vec!["snap-XYZ".into()]),
            ..Default::default()
        };
        assert_eq!(code(&bad), "InvalidParameterValue");
        let both = DescribeSnapshots {
            snapshot_ids: Some(vec!["snap-12345678".into()]),
            filters: Some(vec![f("disk-usage", &["SYSTEM_DISK"])]),
            ..Default::default()
        };
        assert_eq!(code(&both), "InvalidParameter");
        let unknown = DescribeSnapshots {
            filters: Some(vec![f("snapshot-colour", &["x"])]),
            ..Default::default()
        };
        assert_eq!(code(&unknown), "InvalidFilter");
        let order = DescribeSnapshots {
            order: Some("UP".into()),
            ..Default::default()
        };
        assert_eq!(code(&order), "InvalidParameterValue");
        let limit = DescribeSnapshots {
            limit: Some(101),
            ..Default::default()
        };
        assert_eq!(code(&limit), "InvalidParameterValue");
    }
}
