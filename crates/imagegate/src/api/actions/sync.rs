//! SyncImages: copies one NORMAL image into other served regions (the
//! caller's own image), or into the caller's account in the same region (an
//! image shared with the caller). A copy shares the source's stored blobs
//! (see `catalog::blobs`): it is NORMAL when the call returns and costs no
//! bytes. `ImageSet` is always an array: the new ids when ImageSetRequired,
//! else empty (Terraform fails on a missing one).

use super::{catalog_write_failed, internal, region, validate};
use crate::api::access::ensure_visible;
use crate::api::{errors, AppState, Caller};
use crate::catalog::sync::{SyncOutcome, SyncRequest};
use crate::catalog::visibility::Access;
use crate::domain::ImageState;
use serde_json::{json, Value};
use tcapi::{ApiError, SyncImages};

pub async fn sync_images(
    state: &AppState,
    caller: &Caller<'_>,
    r: &SyncImages,
) -> Result<Value, ApiError> {
    let source_region = region(caller)?;
    // One image per call (the SDK's rule); decoding guarantees at least one.
    if r.image_ids.len() > 1 {
        return Err(errors::limit_exceeded("ImageIds", 1));
    }
    let image_id = r.image_ids.first().map(String::as_str).unwrap_or_default();
    validate::image_id(image_id)?;
    if r.encrypt == Some(true) {
        return Err(errors::encrypted_images_unsupported());
    }
    if r.kms_key_id.is_some() {
        return Err(errors::invalid_kms_key_id());
    }
    if let Some(name) = &r.image_name {
        validate::image_name(name)?;
    }
    let destinations = destinations(state, &r.destination_regions)?;
    let access = ensure_visible(state, caller, image_id).await?;
    check_regions(&access, source_region, &destinations)?;
    if access.image().state != ImageState::Normal {
        return Err(errors::image_id_incorrect_state(image_id));
    }
    let req = SyncRequest {
        uin: &caller.account.uin,
        quota: caller.account.image_quota,
        image_id,
        source_region,
        destinations: &destinations,
        name: r.image_name.as_deref(),
    };
    if r.dry_run {
        dry_run(state, caller, &req, &access).await?;
        return Ok(json!({ "ImageSet": [] }));
    }
    let outcome = state
        .catalog
        .sync_image(&req)
        .await
        .map_err(|e| catalog_write_failed(caller, e))?;
    let copies = match outcome {
        SyncOutcome::Copied(copies) => copies,
        SyncOutcome::SourceUnavailable => return Err(errors::image_id_incorrect_state(image_id)),
        SyncOutcome::DuplicateName(_) => {
            return Err(errors::name_duplicate(
                req.name.unwrap_or(&access.image().image_name),
            ))
        }
        SyncOutcome::QuotaExceeded(_) => {
            return Err(errors::quota_exceeded(caller.account.image_quota))
        }
    };
    tracing::info!(request_id = caller.request_id, image = image_id, copies = ?copies, "image copied");
    let set: Vec<Value> = if r.image_set_required {
        copies
            .iter()
            .map(|(region, id)| json!({ "ImageId": id, "Region": region }))
            .collect()
    } else {
        Vec::new()
    };
    Ok(json!({ "ImageSet": set }))
}

/// The destinations, deduplicated, each a region this server serves.
fn destinations(state: &AppState, regions: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for r in regions {
        if !state.serves_region(r) {
            return Err(errors::region_not_found(&validate::clip(r, 64)));
        }
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    Ok(out)
}

/// The caller's own image goes to other regions only; an image shared with
/// the caller only to its own region (a private copy there).
fn check_regions(access: &Access, source: &str, destinations: &[String]) -> Result<(), ApiError> {
    match access {
        Access::Owned(_) if destinations.iter().any(|d| d == source) => {
            Err(errors::sync_region_invalid(
                format!("The destination region `{source}` is the image's own region; a custom image is copied to other regions."),
                format!("目标地域`{source}`与镜像所在地域相同；自定义镜像只能复制到其他地域。"),
            ))
        }
        Access::Shared(_) if destinations.iter().any(|d| d != source) => {
            Err(errors::sync_region_invalid(
                format!("An image shared with you can only be copied into your account in its own region `{source}`."),
                format!("共享镜像只能复制到其所在地域`{source}`的您的账号中。"),
            ))
        }
        _ => Ok(()),
    }
}

/// DryRun: every check a real copy makes, without writing.
async fn dry_run(
    state: &AppState,
    caller: &Caller<'_>,
    req: &SyncRequest<'_>,
    access: &Access,
) -> Result<(), ApiError> {
    let name = req.name.unwrap_or(&access.image().image_name);
    for region in req.destinations {
        let taken = state
            .catalog
            .name_taken(req.uin, region, name, None)
            .await
            .map_err(|e| internal(caller, e))?;
        if taken {
            return Err(errors::name_duplicate(name));
        }
        let used = state
            .catalog
            .quota_used(req.uin, region)
            .await
            .map_err(|e| internal(caller, e))?;
        if used >= i64::from(req.quota) {
            return Err(errors::quota_exceeded(req.quota));
        }
    }
    Ok(())
}
