//! The API side of the visibility rule (`catalog::visibility`): one helper
//! per question an action asks about an image, each answering with the
//! documented code. Every action that acts on an image as its owner calls
//! [`ensure_owned`] (ExportImages included), so a recipient of a shared
//! image always gets the refusal the reference names for that action.

use super::actions::{internal, validate};
use super::{errors, AppState, Caller};
use crate::catalog::visibility::Access;
use crate::catalog::ImageRow;
use tcapi::ApiError;

/// What the caller means to do as the image's owner; decides what a
/// recipient of a shared image is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerAction {
    Modify,
    Delete,
    Export,
    /// ModifyImageSharePermission, DescribeImageSharePermission.
    Share,
}

impl OwnerAction {
    /// The refusal for a recipient of a shared image.
    pub fn refusal(self, image_id: &str) -> ApiError {
        match self {
            OwnerAction::Modify => errors::shared_image_modify_unsupported(image_id),
            OwnerAction::Delete => errors::image_id_is_shared(image_id),
            OwnerAction::Export => errors::shared_image_export_unsupported(image_id),
            OwnerAction::Share => errors::image_not_belong_to_account(image_id),
        }
    }
}

/// The image as the caller sees it in its region: `InvalidImageId.Malformed`
/// for a bad id, `InvalidImageId.NotFound` when it is not visible.
pub async fn ensure_visible(
    state: &AppState,
    caller: &Caller<'_>,
    image_id: &str,
) -> Result<Access, ApiError> {
    let region = super::actions::region(caller)?;
    validate::image_id(image_id)?;
    state
        .catalog
        .image_access(&caller.account.uin, region, image_id)
        .await
        .map_err(|e| internal(caller, e))?
        .ok_or_else(|| errors::image_id_not_found(image_id))
}

/// The caller's own image, or the refusal for `action`: NotFound when the
/// caller cannot see it, the action's shared-image code when it was only
/// shared with the caller.
pub async fn ensure_owned(
    state: &AppState,
    caller: &Caller<'_>,
    image_id: &str,
    action: OwnerAction,
) -> Result<ImageRow, ApiError> {
    match ensure_visible(state, caller, image_id).await? {
        Access::Owned(image) => Ok(image),
        Access::Shared(_) => Err(action.refusal(image_id)),
    }
}
