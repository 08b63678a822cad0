//! DeleteImages: all or nothing. Every id must be well formed, the caller's
//! (an image shared with it: `InvalidParameterValue.InvalidImageIdIsShared`),
//! not busy (an IMPORTING image cannot be deleted) and shared with nobody
//! (`InvalidImageId.InShared`); DryRun stops there. Rows, jobs and quota go
//! in one transaction; the stored blobs no other image references after it
//! (a blob without a row is harmless garbage, a row without a blob is not).

use super::{catalog_write_failed, internal, region, validate};
use crate::api::access::{ensure_owned, OwnerAction};
use crate::api::{errors, AppState, Caller};
use crate::catalog::DeleteOutcome;
use serde_json::{json, Value};
use tcapi::{ApiError, DeleteImages};

/// Ids per call (Tencent documents no cap; this bounds the transaction).
pub const MAX_IDS: usize = 100;

pub async fn delete_images(
    state: &AppState,
    caller: &Caller<'_>,
    r: &DeleteImages,
) -> Result<Value, ApiError> {
    let region = region(caller)?;
    if r.image_ids.is_empty() {
        return Err(ApiError::missing_parameter("ImageIds"));
    }
    if r.image_ids.len() > MAX_IDS {
        return Err(errors::limit_exceeded("ImageIds", MAX_IDS));
    }
    let mut ids: Vec<String> = Vec::with_capacity(r.image_ids.len());
    for id in &r.image_ids {
        validate::image_id(id)?;
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let uin = &caller.account.uin;
    for id in &ids {
        let image = ensure_owned(state, caller, id, OwnerAction::Delete).await?;
        if image.state.is_busy() {
            return Err(errors::image_id_incorrect_state(id));
        }
        let shares = state
            .catalog
            .image_shares(id)
            .await
            .map_err(|e| internal(caller, e))?;
        if !shares.is_empty() {
            return Err(errors::image_in_shared(id));
        }
    }
    // An export reads the stored disks until it ends.
    if let Some(id) = state
        .catalog
        .exporting_image(&ids)
        .await
        .map_err(|e| internal(caller, e))?
    {
        return Err(errors::export_running(&id));
    }
    if r.dry_run {
        return Ok(json!({}));
    }
    let outcome = state
        .catalog
        .delete_images(uin, region, &ids)
        .await
        .map_err(|e| catalog_write_failed(caller, e))?;
    match outcome {
        DeleteOutcome::Deleted { blob_keys } => {
            for key in blob_keys {
                if let Err(e) = state.blobs.delete(&key).await {
                    // The image is gone for the user; a leftover file is for
                    // the operator (and a later reaper) to see.
                    tracing::warn!(request_id = caller.request_id, blob = %key, error = %e, "blob not removed");
                }
            }
            tracing::info!(request_id = caller.request_id, uin = %uin, region, images = ?ids, "images deleted");
            Ok(json!({}))
        }
        DeleteOutcome::NotFound(id) => Err(errors::image_id_not_found(&id)),
        DeleteOutcome::IncorrectState(id) => Err(errors::image_id_incorrect_state(&id)),
        DeleteOutcome::InShared(id) => Err(errors::image_in_shared(&id)),
    }
}
