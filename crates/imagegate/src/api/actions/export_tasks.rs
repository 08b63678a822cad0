//! Extension actions on export tasks (the real API has no way to follow an
//! ExportImages task): DescribeExportImageTasks, by TaskIds or ImageIds
//! (phase, bytes written, percent, outcome, objects), and
//! CancelExportImageTask. Callable with the SDK's CommonClient.

use serde_json::{json, Value};
use tcapi::{ApiError, CancelExportImageTask, DescribeExportImageTasks};

use super::{catalog_write_failed, internal, region, validate};
use crate::api::views::export_task::task_json;
use crate::api::{errors, AppState, Caller};
use crate::catalog::exports::{ExportCancel, ExportQuery};
use crate::domain::TaskState;

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;
const MAX_IDS: usize = 100;

pub async fn describe_export_image_tasks(
    state: &AppState,
    caller: &Caller<'_>,
    r: &DescribeExportImageTasks,
) -> Result<Value, ApiError> {
    let region = region(caller)?;
    if let Some(ids) = &r.task_ids {
        if ids.len() > MAX_IDS {
            return Err(errors::limit_exceeded("TaskIds", MAX_IDS));
        }
    }
    if let Some(ids) = &r.image_ids {
        if ids.len() > MAX_IDS {
            return Err(errors::limit_exceeded("ImageIds", MAX_IDS));
        }
        for id in ids {
            validate::image_id(id)?;
        }
    }
    let (offset, limit) = validate::page(r.offset, r.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let query = ExportQuery {
        task_ids: r.task_ids.clone(),
        image_ids: r.image_ids.clone(),
        offset,
        limit,
    };
    let (total, rows) = state
        .catalog
        .describe_exports(&caller.account.uin, region, &query)
        .await
        .map_err(|e| internal(caller, e))?;
    Ok(json!({
        "TotalCount": total,
        "ExportImageTaskSet": rows.iter().map(task_json).collect::<Vec<_>>(),
    }))
}

pub async fn cancel_export_image_task(
    state: &AppState,
    caller: &Caller<'_>,
    r: &CancelExportImageTask,
) -> Result<Value, ApiError> {
    let region = region(caller)?;
    let outcome = state
        .catalog
        .cancel_export(&caller.account.uin, region, r.task_id)
        .await
        .map_err(|e| catalog_write_failed(caller, e))?;
    match outcome {
        ExportCancel::Cancelled => Ok(json!({})),
        ExportCancel::Requested => {
            state.export_cancels.notify_waiters();
            Ok(json!({}))
        }
        ExportCancel::NotFound => Err(errors::export_task_not_found(r.task_id)),
        ExportCancel::AlreadyFinished(state) => Err(errors::export_task_finished(
            r.task_id,
            state.map_or("finished", TaskState::as_str),
        )),
    }
}
