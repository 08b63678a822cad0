//! ModifyImageAttribute: rename (unique per account and region, enforced by
//! the database), describe, set the family or the deprecation flag. An image
//! that is still importing cannot be modified (`InvalidImageId.IncorrectState`);
//! an image shared with the caller cannot be modified by it.

use super::{catalog_write_failed, region, validate};
use crate::api::access::{ensure_owned, OwnerAction};
use crate::api::{errors, AppState, Caller};
use crate::catalog::{ImageChanges, ModifyOutcome};
use serde_json::{json, Value};
use tcapi::{ApiError, ModifyImageAttribute};

pub async fn modify_image_attribute(
    state: &AppState,
    caller: &Caller<'_>,
    r: &ModifyImageAttribute,
) -> Result<Value, ApiError> {
    let region = region(caller)?;
    validate::image_id(&r.image_id)?;
    if let Some(name) = &r.image_name {
        validate::image_name(name)?;
    }
    if let Some(d) = &r.image_description {
        validate::description(d)?;
    }
    // An empty family clears it (Terraform's provider sends `ImageFamily: ""`
    // when a configuration has none).
    if let Some(f) = r.image_family.as_deref().filter(|f| !f.is_empty()) {
        validate::image_family(f)?;
    }
    // A recipient of a shared image may not change it; its owner may.
    ensure_owned(state, caller, &r.image_id, OwnerAction::Modify).await?;
    let changes = ImageChanges {
        image_name: r.image_name.clone(),
        description: r.image_description.clone(),
        image_family: r.image_family.clone(),
        deprecated: r.image_deprecated,
    };
    let outcome = state
        .catalog
        .modify_image(&caller.account.uin, region, &r.image_id, &changes)
        .await
        .map_err(|e| catalog_write_failed(caller, e))?;
    match outcome {
        ModifyOutcome::Modified => Ok(json!({})),
        ModifyOutcome::NotFound => Err(errors::image_id_not_found(&r.image_id)),
        ModifyOutcome::IncorrectState => Err(errors::image_id_incorrect_state(&r.image_id)),
        ModifyOutcome::DuplicateName => Err(errors::name_duplicate(
            r.image_name.as_deref().unwrap_or_default(),
        )),
    }
}
