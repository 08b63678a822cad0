//! Extension actions on import jobs: DescribeImportImageTasks (progress,
//! phase, checksum, failure reason, which node ran each attempt) and
//! CancelImportImageTask. Callable with the SDK's CommonClient.

use crate::api::actions::validate;
use crate::api::views::import_task::task_json;
use crate::api::{errors, AppState, Caller};
use crate::catalog::jobs::CancelOutcome;
use serde_json::{json, Value};
use tcapi::{ApiError, CancelImportImageTask, DescribeImportImageTasks};

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;
const MAX_IDS: usize = 100;

fn region<'a>(caller: &Caller<'a>) -> &'a str {
    caller.region.unwrap_or_default()
}

pub async fn describe_import_image_tasks(
    state: &AppState,
    caller: &Caller<'_>,
    r: &DescribeImportImageTasks,
) -> Result<Value, ApiError> {
    if let Some(ids) = &r.image_ids {
        if ids.len() > MAX_IDS {
            return Err(errors::limit_exceeded("ImageIds", MAX_IDS));
        }
        for id in ids {
            validate::image_id(id)?;
        }
    }
    let (offset, limit) = validate::page(r.offset, r.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let (total, rows) = state
        .catalog
        .describe_tasks(
            &caller.account.uin,
            region(caller),
            r.image_ids.as_deref(),
            offset,
            limit,
        )
        .await
        .map_err(|e| {
            tracing::error!(request_id = caller.request_id, error = %e, "describing import tasks failed");
            errors::internal(caller.request_id)
        })?;
    Ok(json!({
        "TotalCount": total,
        "ImportImageTaskSet": rows.iter().map(task_json).collect::<Vec<_>>(),
    }))
}

pub async fn cancel_import_image_task(
    state: &AppState,
    caller: &Caller<'_>,
    r: &CancelImportImageTask,
) -> Result<Value, ApiError> {
    validate::image_id(&r.image_id)?;
    let outcome = state
        .catalog
        .cancel_job(&caller.account.uin, region(caller), &r.image_id)
        .await
        .map_err(|e| super::catalog_write_failed(caller, e))?;
    match outcome {
        CancelOutcome::Cancelled | CancelOutcome::Requested => Ok(json!({})),
        CancelOutcome::NotFound => Err(errors::image_id_not_found(&r.image_id)),
        CancelOutcome::AlreadyFinished => Err(errors::image_id_incorrect_state(&r.image_id)),
    }
}
