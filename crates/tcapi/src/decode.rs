//! Typed decoding of the action parameters (see `actions.rs` for the types).
//!
//! Wire rules only: a required name is present (`MissingParameter`), each
//! value has its wire type (`InvalidParameter`), and every name, nested ones
//! included, belongs to the action (`UnknownParameter`). Errors name the
//! parameter in flattened form (`TagSpecification.0.Tags.1.Key`) whatever the
//! encoding, because that is the name the documentation uses.

use std::collections::BTreeMap;

use crate::actions::*;
use crate::error::ApiError;
use crate::params::{Origin, Params, Value};

/// Typed request for an action, enforcing wire rules only.
pub fn decode_action(action: &str, params: &Params) -> Result<ActionRequest, ApiError> {
    match action {
        "ImportImage" => import_image(params),
        "DescribeImportImageOs" => describe_import_image_os(params),
        "DescribeImages" => describe_images(params),
        "DeleteImages" => delete_images(params),
        "DescribeImageQuota" => describe_image_quota(params),
        "ModifyImageAttribute" => modify_image_attribute(params),
        "DescribeImportImageTasks" => describe_import_image_tasks(params),
        "CancelImportImageTask" => cancel_import_image_task(params),
        "ModifyImageSharePermission" => modify_image_share_permission(params),
        "DescribeImageSharePermission" => describe_image_share_permission(params),
        "SyncImages" => sync_images(params),
        "DescribeImageFromFamily" => describe_image_from_family(params),
        "DescribeSnapshots" => describe_snapshots(params),
        "ExportImages" => export_images(params),
        "DescribeExportImageTasks" => describe_export_image_tasks(params),
        "CancelExportImageTask" => cancel_export_image_task(params),
        other => Err(ApiError::invalid_action(other)),
    }
}

/// The top level of the request, checked against the action's names.
fn top<'a>(params: &'a Params, allowed: &[&str]) -> Result<Fields<'a>, ApiError> {
    Fields::new(&params.entries, "", params.origin, allowed)
}

fn import_image(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(
        params,
        &[
            "Architecture",
            "OsType",
            "OsVersion",
            "ImageUrl",
            "ImageName",
            "ImageDescription",
            "DryRun",
            "Force",
            "TagSpecification",
            "LicenseType",
            "BootMode",
            "ImageFamily",
            "ImportImageDataDiskList",
        ],
    )?;
    Ok(ActionRequest::ImportImage(ImportImage {
        architecture: f.req_string("Architecture")?,
        os_type: f.req_string("OsType")?,
        os_version: f.req_string("OsVersion")?,
        image_url: f.req_string("ImageUrl")?,
        image_name: f.req_string("ImageName")?,
        image_description: f.string("ImageDescription")?,
        dry_run: f.bool("DryRun")?.unwrap_or(false),
        force: f.bool("Force")?.unwrap_or(false),
        tag_specification: f
            .list("TagSpecification", |v, path| {
                let spec = f.object(v, path, &["ResourceType", "Tags"])?;
                Ok(TagSpecification {
                    resource_type: spec.req_string("ResourceType")?,
                    tags: spec
                        .list("Tags", |v, path| {
                            let tag = spec.object(v, path, &["Key", "Value"])?;
                            Ok(Tag {
                                key: tag.req_string("Key")?,
                                value: tag.req_string("Value")?,
                            })
                        })?
                        .unwrap_or_default(),
                })
            })?
            .unwrap_or_default(),
        license_type: f.string("LicenseType")?,
        boot_mode: f.string("BootMode")?,
        image_family: f.string("ImageFamily")?,
        import_image_data_disk_list: f
            .list("ImportImageDataDiskList", |v, path| {
                let disk = f.object(v, path, &["ImageUrl"])?;
                Ok(ImportImageDataDisk {
                    image_url: disk.req_string("ImageUrl")?,
                })
            })?
            .unwrap_or_default(),
    }))
}

fn describe_import_image_os(params: &Params) -> Result<ActionRequest, ApiError> {
    top(params, &[])?;
    Ok(ActionRequest::DescribeImportImageOs)
}

fn describe_images(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(
        params,
        &["ImageIds", "Filters", "Offset", "Limit", "InstanceType"],
    )?;
    Ok(ActionRequest::DescribeImages(DescribeImages {
        image_ids: f.string_list("ImageIds")?,
        filters: f.list("Filters", |v, path| {
            let filter = f.object(v, path, &["Name", "Values"])?;
            Ok(Filter {
                name: filter.req_string("Name")?,
                values: filter.req_string_list("Values")?,
            })
        })?,
        offset: f.int("Offset")?,
        limit: f.int("Limit")?,
        instance_type: f.string("InstanceType")?,
    }))
}

fn delete_images(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(params, &["ImageIds", "DeleteBindedSnap", "DryRun"])?;
    Ok(ActionRequest::DeleteImages(DeleteImages {
        image_ids: f.req_string_list("ImageIds")?,
        delete_binded_snap: f.bool("DeleteBindedSnap")?.unwrap_or(false),
        dry_run: f.bool("DryRun")?.unwrap_or(false),
    }))
}

fn describe_image_quota(params: &Params) -> Result<ActionRequest, ApiError> {
    top(params, &[])?;
    Ok(ActionRequest::DescribeImageQuota)
}

fn modify_image_attribute(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(
        params,
        &[
            "ImageId",
            "ImageName",
            "ImageDescription",
            "ImageFamily",
            "ImageDeprecated",
        ],
    )?;
    Ok(ActionRequest::ModifyImageAttribute(ModifyImageAttribute {
        image_id: f.req_string("ImageId")?,
        image_name: f.string("ImageName")?,
        image_description: f.string("ImageDescription")?,
        image_family: f.string("ImageFamily")?,
        image_deprecated: f.bool("ImageDeprecated")?,
    }))
}

fn describe_import_image_tasks(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(params, &["ImageIds", "Offset", "Limit"])?;
    Ok(ActionRequest::DescribeImportImageTasks(
        DescribeImportImageTasks {
            image_ids: f.string_list("ImageIds")?,
            offset: f.int("Offset")?,
            limit: f.int("Limit")?,
        },
    ))
}

fn cancel_import_image_task(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(params, &["ImageId"])?;
    Ok(ActionRequest::CancelImportImageTask(
        CancelImportImageTask {
            image_id: f.req_string("ImageId")?,
        },
    ))
}

fn modify_image_share_permission(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(params, &["ImageId", "AccountIds", "Permission"])?;
    Ok(ActionRequest::ModifyImageSharePermission(
        ModifyImageSharePermission {
            image_id: f.req_string("ImageId")?,
            account_ids: f.string_list("AccountIds")?,
            permission: f.req_string("Permission")?,
        },
    ))
}

fn describe_image_share_permission(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(params, &["ImageId"])?;
    Ok(ActionRequest::DescribeImageSharePermission(
        DescribeImageSharePermission {
            image_id: f.req_string("ImageId")?,
        },
    ))
}

fn sync_images(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(
        params,
        &[
            "ImageIds",
            "DestinationRegions",
            "DryRun",
            "ImageName",
            "ImageSetRequired",
            "Encrypt",
            "KmsKeyId",
        ],
    )?;
    Ok(ActionRequest::SyncImages(SyncImages {
        image_ids: f.req_string_list("ImageIds")?,
        destination_regions: f.req_string_list("DestinationRegions")?,
        dry_run: f.bool("DryRun")?.unwrap_or(false),
        image_name: f.string("ImageName")?,
        image_set_required: f.bool("ImageSetRequired")?.unwrap_or(false),
        encrypt: f.bool("Encrypt")?,
        kms_key_id: f.string("KmsKeyId")?,
    }))
}

fn describe_image_from_family(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(params, &["ImageFamily"])?;
    Ok(ActionRequest::DescribeImageFromFamily(
        DescribeImageFromFamily {
            image_family: f.string("ImageFamily")?,
        },
    ))
}

fn describe_snapshots(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(
        params,
        &[
            "SnapshotIds",
            "Filters",
            "Offset",
            "Limit",
            "Order",
            "OrderField",
        ],
    )?;
    Ok(ActionRequest::DescribeSnapshots(DescribeSnapshots {
        snapshot_ids: f.string_list("SnapshotIds")?,
        filters: f.list("Filters", |v, path| {
            let filter = f.object(v, path, &["Name", "Values"])?;
            Ok(Filter {
                name: filter.req_string("Name")?,
                values: filter.req_string_list("Values")?,
            })
        })?,
        offset: f.int("Offset")?,
        limit: f.int("Limit")?,
        order: f.string("Order")?,
        order_field: f.string("OrderField")?,
    }))
}

fn export_images(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(
        params,
        &[
            "BucketName",
            "ImageIds",
            "SnapshotIds",
            "ExportFormat",
            "FileNamePrefixList",
            "OnlyExportRootDisk",
            "DryRun",
            "RoleName",
        ],
    )?;
    Ok(ActionRequest::ExportImages(ExportImages {
        bucket_name: f.req_string("BucketName")?,
        image_ids: f.string_list("ImageIds")?,
        snapshot_ids: f.string_list("SnapshotIds")?,
        export_format: f.string("ExportFormat")?,
        file_name_prefix_list: f.string_list("FileNamePrefixList")?,
        only_export_root_disk: f.bool("OnlyExportRootDisk")?.unwrap_or(false),
        dry_run: f.bool("DryRun")?.unwrap_or(false),
        role_name: f.string("RoleName")?,
    }))
}

fn describe_export_image_tasks(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(params, &["TaskIds", "ImageIds", "Offset", "Limit"])?;
    Ok(ActionRequest::DescribeExportImageTasks(
        DescribeExportImageTasks {
            task_ids: f.list("TaskIds", as_int)?,
            image_ids: f.string_list("ImageIds")?,
            offset: f.int("Offset")?,
            limit: f.int("Limit")?,
        },
    ))
}

fn cancel_export_image_task(params: &Params) -> Result<ActionRequest, ApiError> {
    let f = top(params, &["TaskId"])?;
    Ok(ActionRequest::CancelExportImageTask(
        CancelExportImageTask {
            task_id: f
                .int("TaskId")?
                .ok_or_else(|| ApiError::missing_parameter("TaskId"))?,
        },
    ))
}

/// The members of one object (the top level or a nested one), checked
/// against the names the action defines at that place.
struct Fields<'a> {
    map: &'a BTreeMap<String, Value>,
    /// Flattened path of this object, with a trailing '.'; empty at the top.
    prefix: String,
    origin: Origin,
}

impl<'a> Fields<'a> {
    fn new(
        map: &'a BTreeMap<String, Value>,
        prefix: &str,
        origin: Origin,
        allowed: &[&str],
    ) -> Result<Self, ApiError> {
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::unknown_parameter(&format!("{prefix}{unknown}")));
        }
        Ok(Fields {
            map,
            prefix: prefix.to_string(),
            origin,
        })
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A nested object at `path` (a list element).
    fn object(&self, v: &'a Value, path: &str, allowed: &[&str]) -> Result<Fields<'a>, ApiError> {
        match v {
            Value::Object(m) => Fields::new(m, &format!("{path}."), self.origin, allowed),
            _ => Err(ApiError::wrong_type(path, "an object")),
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(v) => as_string(v, &self.path(name)).map(Some),
        }
    }

    fn req_string(&self, name: &str) -> Result<String, ApiError> {
        self.string(name)?
            .ok_or_else(|| ApiError::missing_parameter(&self.path(name)))
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        let Some(v) = self.map.get(name) else {
            return Ok(None);
        };
        match (v, self.origin) {
            (Value::Bool(b), _) => Ok(Some(*b)),
            (Value::String(s), Origin::Flat) => match s.as_str() {
                "true" | "True" => Ok(Some(true)),
                "false" | "False" => Ok(Some(false)),
                _ => Err(ApiError::wrong_type(&self.path(name), "Boolean")),
            },
            _ => Err(ApiError::wrong_type(&self.path(name), "Boolean")),
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(v) => as_int(v, &self.path(name)).map(Some),
        }
    }

    /// An optional list; an empty JSON list counts as absent, since the
    /// flattened encoding cannot express it.
    fn list<T>(
        &self,
        name: &str,
        mut each: impl FnMut(&'a Value, &str) -> Result<T, ApiError>,
    ) -> Result<Option<Vec<T>>, ApiError> {
        let path = self.path(name);
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::List(items)) if items.is_empty() => Ok(None),
            Some(Value::List(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(each(item, &format!("{path}.{i}"))?);
                }
                Ok(Some(out))
            }
            Some(_) => Err(ApiError::wrong_type(&path, "a list")),
        }
    }

    fn string_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        self.list(name, as_string)
    }

    fn req_string_list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        self.string_list(name)?
            .ok_or_else(|| ApiError::missing_parameter(&self.path(name)))
    }
}

fn as_string(v: &Value, path: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(ApiError::wrong_type(path, "String")),
    }
}

fn as_int(v: &Value, path: &str) -> Result<i64, ApiError> {
    let out_of_range = || {
        ApiError::invalid_parameter(
            format!(
                "The parameter `{path}` is out of range: an Integer lies between {} and {}.",
                i64::MIN,
                i64::MAX
            ),
            format!("参数`{path}`超出整数（Integer）取值范围。"),
        )
    };
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.is_u64() {
                Err(out_of_range())
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || !f.is_finite() {
                    Err(ApiError::wrong_type(path, "Integer"))
                } else if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
                    Err(out_of_range())
                } else {
                    // In range and integral: the conversion is exact.
                    Ok(f as i64)
                }
            }
        }
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::wrong_type(path, "Integer"));
            }
            s.parse::<i64>().map_err(|_| out_of_range())
        }
        _ => Err(ApiError::wrong_type(path, "Integer")),
    }
}
