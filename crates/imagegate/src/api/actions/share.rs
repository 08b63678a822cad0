//! ModifyImageSharePermission and DescribeImageSharePermission. Only the
//! owner manages an image's shares; recipients are configured accounts,
//! named by their main-account id (`uin`). SHARE is all or nothing and
//! refuses an account the image is already shared with; CANCEL of an
//! account the image is not shared with succeeds (the outcome is the same).

use super::describe::iso8601;
use super::{catalog_write_failed, internal, validate};
use crate::api::access::{ensure_owned, OwnerAction};
use crate::api::{errors, AppState, Caller};
use crate::catalog::shares::{ShareOutcome, MAX_SHARES_PER_IMAGE};
use crate::domain::ImageState;
use serde_json::{json, Value};
use tcapi::{ApiError, DescribeImageSharePermission, ModifyImageSharePermission};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permission {
    Share,
    Cancel,
}

pub async fn modify_image_share_permission(
    state: &AppState,
    caller: &Caller<'_>,
    r: &ModifyImageSharePermission,
) -> Result<Value, ApiError> {
    validate::image_id(&r.image_id)?;
    let permission = match r.permission.as_str() {
        "SHARE" => Permission::Share,
        "CANCEL" => Permission::Cancel,
        other => {
            let v = validate::clip(other, 40);
            return Err(errors::invalid_parameter_value(
                format!("The Permission `{v}` is invalid; use SHARE or CANCEL."),
                format!("Permission参数值`{v}`无效，取值为SHARE或CANCEL。"),
            ));
        }
    };
    let accounts = recipients(state, caller, r.account_ids.as_deref().unwrap_or_default())?;
    if accounts.is_empty() && permission == Permission::Share {
        return Err(ApiError::missing_parameter("AccountIds"));
    }
    let image = ensure_owned(state, caller, &r.image_id, OwnerAction::Share).await?;
    let owner = &caller.account.uin;
    if permission == Permission::Cancel {
        state
            .catalog
            .unshare_image(owner, &image.image_id, &accounts)
            .await
            .map_err(|e| catalog_write_failed(caller, e))?;
        tracing::info!(request_id = caller.request_id, image = %image.image_id, accounts = ?accounts, "image shares cancelled");
        return Ok(json!({}));
    }
    if image.state != ImageState::Normal {
        return Err(errors::invalid_image_state(&image.image_id));
    }
    let outcome = state
        .catalog
        .share_image(owner, &image.image_id, &accounts)
        .await
        .map_err(|e| catalog_write_failed(caller, e))?;
    match outcome {
        ShareOutcome::Done => {
            tracing::info!(request_id = caller.request_id, image = %image.image_id, accounts = ?accounts, "image shared");
            Ok(json!({}))
        }
        ShareOutcome::NotShareable => Err(errors::invalid_image_state(&image.image_id)),
        ShareOutcome::AlreadyShared(uin) => Err(errors::account_already_exists(&uin)),
        ShareOutcome::OverQuota => Err(errors::share_over_quota(MAX_SHARES_PER_IMAGE)),
    }
}

/// The AccountIds, deduplicated and checked: at most the per-image limit,
/// never the caller, each a configured account.
fn recipients(
    state: &AppState,
    caller: &Caller<'_>,
    ids: &[String],
) -> Result<Vec<String>, ApiError> {
    if ids.len() > MAX_SHARES_PER_IMAGE as usize {
        return Err(errors::limit_exceeded(
            "AccountIds",
            MAX_SHARES_PER_IMAGE as usize,
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if *id == caller.account.uin {
            return Err(errors::account_is_yourself(id));
        }
        if !state.accounts.iter().any(|a| a.uin == *id) {
            return Err(errors::account_not_found(&validate::clip(id, 40)));
        }
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

pub async fn describe_image_share_permission(
    state: &AppState,
    caller: &Caller<'_>,
    r: &DescribeImageSharePermission,
) -> Result<Value, ApiError> {
    let image = ensure_owned(state, caller, &r.image_id, OwnerAction::Share).await?;
    let shares = state
        .catalog
        .image_shares(&image.image_id)
        .await
        .map_err(|e| internal(caller, e))?;
    let set: Vec<Value> = shares
        .iter()
        .map(|s| json!({ "CreatedTime": iso8601(s.created_at), "AccountId": s.account_uin }))
        .collect();
    Ok(json!({ "SharePermissionSet": set }))
}
