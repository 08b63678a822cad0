//! One module per action. Each takes the typed request from tcapi, applies
//! Tencent's synchronous rules and answers the response fields (without
//! RequestId, which the HTTP layer adds) or an [`ApiError`].

pub mod delete;
pub mod describe;
pub mod export;
pub mod export_tasks;
pub mod family;
pub mod import;
pub mod modify;
pub mod os;
pub mod quota;
pub mod share;
pub mod snapshots;
pub mod sync;
pub mod tasks;
pub mod validate;

use super::{errors, AppState, Caller};
use serde_json::Value;
use std::sync::Arc;
use tcapi::{ActionRequest, ApiError};

/// An action's answer, without RequestId.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The response fields as a JSON object.
    Fields(Value),
    /// The response fields already rendered: the text of a JSON object
    /// without its braces (`"TotalCount":1,"ImageSet":[…]`), shared with a
    /// cache so that a hot listing is not rebuilt or re-serialised.
    Rendered(Arc<str>),
}

/// Runs one decoded action.
pub async fn dispatch(
    state: &AppState,
    caller: &Caller<'_>,
    request: &ActionRequest,
) -> Result<Reply, ApiError> {
    use Reply::Fields;
    match request {
        ActionRequest::ImportImage(r) => import::import_image(state, caller, r).await.map(Fields),
        ActionRequest::DescribeImportImageOs => Ok(Fields(os::describe_import_image_os(state))),
        ActionRequest::DescribeImages(r) => describe::describe_images(state, caller, r)
            .await
            .map(Reply::Rendered),
        ActionRequest::DeleteImages(r) => delete::delete_images(state, caller, r).await.map(Fields),
        ActionRequest::DescribeImageQuota => quota::describe_image_quota(caller).map(Fields),
        ActionRequest::ModifyImageAttribute(r) => modify::modify_image_attribute(state, caller, r)
            .await
            .map(Fields),
        ActionRequest::DescribeImportImageTasks(r) => {
            tasks::describe_import_image_tasks(state, caller, r)
                .await
                .map(Fields)
        }
        ActionRequest::CancelImportImageTask(r) => {
            tasks::cancel_import_image_task(state, caller, r)
                .await
                .map(Fields)
        }
        ActionRequest::ModifyImageSharePermission(r) => {
            share::modify_image_share_permission(state, caller, r)
                .await
                .map(Fields)
        }
        ActionRequest::DescribeImageSharePermission(r) => {
            share::describe_image_share_permission(state, caller, r)
                .await
                .map(Fields)
        }
        ActionRequest::SyncImages(r) => sync::sync_images(state, caller, r).await.map(Fields),
        ActionRequest::DescribeImageFromFamily(r) => {
            family::describe_image_from_family(state, caller, r)
                .await
                .map(Fields)
        }
        ActionRequest::DescribeSnapshots(r) => snapshots::describe_snapshots(state, caller, r)
            .await
            .map(Fields),
        ActionRequest::ExportImages(r) => export::export_images(state, caller, r).await.map(Fields),
        ActionRequest::DescribeExportImageTasks(r) => {
            export_tasks::describe_export_image_tasks(state, caller, r)
                .await
                .map(Fields)
        }
        ActionRequest::CancelExportImageTask(r) => {
            export_tasks::cancel_export_image_task(state, caller, r)
                .await
                .map(Fields)
        }
    }
}

/// The caller's region; every action but DescribeImportImageOs has one
/// (the HTTP layer refuses the request otherwise).
pub(crate) fn region<'a>(caller: &Caller<'a>) -> Result<&'a str, ApiError> {
    caller
        .region
        .ok_or_else(|| ApiError::missing_parameter("Region"))
}

/// Logs an unexpected failure with the RequestId and answers InternalError
/// without details (they may name files or database internals).
pub(crate) fn internal(caller: &Caller<'_>, err: impl std::fmt::Display) -> ApiError {
    tracing::error!(request_id = caller.request_id, error = %err, "internal error");
    errors::internal(caller.request_id)
}

/// A catalog write that failed: `ResourceInsufficient.StorageFull` when the
/// database's volume is full (nothing was written: the transaction rolled
/// back), else as [`internal`].
pub(crate) fn catalog_write_failed(
    caller: &Caller<'_>,
    err: crate::catalog::CatalogError,
) -> ApiError {
    if err.is_storage_full() {
        tracing::error!(request_id = caller.request_id, error = %err, "the catalog's volume is full");
        return errors::storage_full();
    }
    internal(caller, err)
}
