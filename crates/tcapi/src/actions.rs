//! Typed requests of the CVM image actions imagegate serves.
//!
//! Decoding (in `decode.rs`) turns the parameter tree into these structs and
//! enforces the wire-level rules only: required fields (`MissingParameter`),
//! types (`InvalidParameter`), unknown names (`UnknownParameter`). Value rules
//! (lengths, enums, quota, uniqueness) belong to the service.

/// One decoded request, by action.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionRequest {
    ImportImage(ImportImage),
    DescribeImportImageOs,
    DescribeImages(DescribeImages),
    DeleteImages(DeleteImages),
    DescribeImageQuota,
    ModifyImageAttribute(ModifyImageAttribute),
    /// Extension: progress of imports (AWS-style task view).
    DescribeImportImageTasks(DescribeImportImageTasks),
    /// Extension: cancel an import that is still running.
    CancelImportImageTask(CancelImportImageTask),
    ModifyImageSharePermission(ModifyImageSharePermission),
    DescribeImageSharePermission(DescribeImageSharePermission),
    SyncImages(SyncImages),
    DescribeImageFromFamily(DescribeImageFromFamily),
    /// CBS: the snapshots behind the images (what image tooling looks up).
    DescribeSnapshots(DescribeSnapshots),
    ExportImages(ExportImages),
    /// Extension: progress of exports, by TaskId or ImageId.
    DescribeExportImageTasks(DescribeExportImageTasks),
    /// Extension: cancel an export that is still running.
    CancelExportImageTask(CancelExportImageTask),
}

impl ActionRequest {
    /// The action name as it appears on the wire.
    pub fn action_name(&self) -> &'static str {
        match self {
            ActionRequest::ImportImage(_) => "ImportImage",
            ActionRequest::DescribeImportImageOs => "DescribeImportImageOs",
            ActionRequest::DescribeImages(_) => "DescribeImages",
            ActionRequest::DeleteImages(_) => "DeleteImages",
            ActionRequest::DescribeImageQuota => "DescribeImageQuota",
            ActionRequest::ModifyImageAttribute(_) => "ModifyImageAttribute",
            ActionRequest::DescribeImportImageTasks(_) => "DescribeImportImageTasks",
            ActionRequest::CancelImportImageTask(_) => "CancelImportImageTask",
            ActionRequest::ModifyImageSharePermission(_) => "ModifyImageSharePermission",
            ActionRequest::DescribeImageSharePermission(_) => "DescribeImageSharePermission",
            ActionRequest::SyncImages(_) => "SyncImages",
            ActionRequest::DescribeImageFromFamily(_) => "DescribeImageFromFamily",
            ActionRequest::DescribeSnapshots(_) => "DescribeSnapshots",
            ActionRequest::ExportImages(_) => "ExportImages",
            ActionRequest::DescribeExportImageTasks(_) => "DescribeExportImageTasks",
            ActionRequest::CancelExportImageTask(_) => "CancelExportImageTask",
        }
    }
}

/// The Tencent Cloud product an action belongs to: its TC3 credential scope
/// names it (`cvm`, `cbs`), and both speak version 2017-03-12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Cvm,
    Cbs,
}

impl Product {
    /// The service name of the product, as in a credential scope.
    pub fn service(self) -> &'static str {
        match self {
            Product::Cvm => "cvm",
            Product::Cbs => "cbs",
        }
    }

    /// The product whose service name this is.
    pub fn from_service(service: &str) -> Option<Product> {
        match service {
            "cvm" => Some(Product::Cvm),
            "cbs" => Some(Product::Cbs),
            _ => None,
        }
    }

    /// The product of a known action (action names do not overlap).
    pub fn of_action(action: &str) -> Option<Product> {
        if CBS_ACTIONS.contains(&action) {
            Some(Product::Cbs)
        } else if ACTIONS.contains(&action) {
            Some(Product::Cvm)
        } else {
            None
        }
    }

    /// The actions served under this product.
    pub fn actions(self) -> Vec<&'static str> {
        ACTIONS
            .iter()
            .copied()
            .filter(|a| Product::of_action(a) == Some(self))
            .collect()
    }
}

/// The CBS actions served (also in [`ACTIONS`]).
pub const CBS_ACTIONS: &[&str] = &["DescribeSnapshots"];

/// Every action name imagegate knows, in the order of the reference; the
/// CBS ones ([`CBS_ACTIONS`]) last.
pub const ACTIONS: &[&str] = &[
    "ImportImage",
    "DescribeImportImageOs",
    "DescribeImages",
    "DeleteImages",
    "DescribeImageQuota",
    "ModifyImageAttribute",
    "DescribeImportImageTasks",
    "CancelImportImageTask",
    "ModifyImageSharePermission",
    "DescribeImageSharePermission",
    "SyncImages",
    "DescribeImageFromFamily",
    "ExportImages",
    "DescribeExportImageTasks",
    "CancelExportImageTask",
    "DescribeSnapshots",
];

/// Actions that change something. The one list: an identical re-send of
/// one of these within the signature window must not act twice (the
/// service answers it with the first answer). Names of actions still being
/// added elsewhere are listed ahead; an unknown name never matches a
/// request, since `decode` refuses actions not in [`ACTIONS`].
pub const MUTATING_ACTIONS: &[&str] = &[
    "ImportImage",
    "DeleteImages",
    "ModifyImageAttribute",
    "CancelImportImageTask",
    "ModifyImageSharePermission",
    "SyncImages",
    "ExportImages",
    "CancelExportImageTask",
];

/// Whether `action` changes something (see [`MUTATING_ACTIONS`]).
pub fn is_mutating(action: &str) -> bool {
    MUTATING_ACTIONS.contains(&action)
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportImage {
    pub architecture: String,
    pub os_type: String,
    pub os_version: String,
    pub image_url: String,
    pub image_name: String,
    pub image_description: Option<String>,
    pub dry_run: bool,
    pub force: bool,
    pub tag_specification: Vec<TagSpecification>,
    pub license_type: Option<String>,
    pub boot_mode: Option<String>,
    pub image_family: Option<String>,
    pub import_image_data_disk_list: Vec<ImportImageDataDisk>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagSpecification {
    pub resource_type: String,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportImageDataDisk {
    pub image_url: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescribeImages {
    /// `None` when absent; `Some(vec![])` is impossible on the wire.
    pub image_ids: Option<Vec<String>>,
    pub filters: Option<Vec<Filter>>,
    pub offset: Option<i64>,
    pub limit: Option<i64>,
    pub instance_type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteImages {
    pub image_ids: Vec<String>,
    pub delete_binded_snap: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModifyImageAttribute {
    pub image_id: String,
    pub image_name: Option<String>,
    pub image_description: Option<String>,
    pub image_family: Option<String>,
    pub image_deprecated: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescribeImportImageTasks {
    /// Absent: every import task of the caller in the region (newest first).
    pub image_ids: Option<Vec<String>>,
    pub offset: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CancelImportImageTask {
    pub image_id: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModifyImageSharePermission {
    pub image_id: String,
    /// Absent (or empty) is kept apart from a list: CANCEL without accounts
    /// is what the Go SDK sends for an empty list.
    pub account_ids: Option<Vec<String>>,
    pub permission: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescribeImageSharePermission {
    pub image_id: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncImages {
    pub image_ids: Vec<String>,
    pub destination_regions: Vec<String>,
    pub dry_run: bool,
    pub image_name: Option<String>,
    pub image_set_required: bool,
    pub encrypt: Option<bool>,
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescribeImageFromFamily {
    /// Optional in the SDK model; the service refuses its absence.
    pub image_family: Option<String>,
}

/// CBS DescribeSnapshots (the subset of its inputs that can match a snapshot
/// behind an image; the rest are decoded and refused or ignored by the service).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescribeSnapshots {
    pub snapshot_ids: Option<Vec<String>>,
    pub filters: Option<Vec<Filter>>,
    pub offset: Option<i64>,
    pub limit: Option<i64>,
    /// `ASC` or `DESC` (CBS's default is DESC).
    pub order: Option<String>,
    /// `CREATE_TIME` or `DISK_SIZE`.
    pub order_field: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportImages {
    /// `<name>-<appid>`.
    pub bucket_name: String,
    pub image_ids: Option<Vec<String>>,
    /// Decoded so that it gets the documented refusal, not UnknownParameter.
    pub snapshot_ids: Option<Vec<String>>,
    pub export_format: Option<String>,
    pub file_name_prefix_list: Option<Vec<String>>,
    pub only_export_root_disk: bool,
    pub dry_run: bool,
    pub role_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescribeExportImageTasks {
    pub task_ids: Option<Vec<i64>>,
    pub image_ids: Option<Vec<String>>,
    pub offset: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CancelExportImageTask {
    pub task_id: i64,
}
