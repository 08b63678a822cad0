//! DescribeImageFromFamily: the newest NORMAL, non-deprecated image of the
//! family that the caller sees in the region (its own or shared with it),
//! or `"Image": null` when there is none.

use super::describe::image_json;
use super::{internal, region, validate};
use crate::api::{AppState, Caller};
use serde_json::{json, Value};
use tcapi::{ApiError, DescribeImageFromFamily};

pub async fn describe_image_from_family(
    state: &AppState,
    caller: &Caller<'_>,
    r: &DescribeImageFromFamily,
) -> Result<Value, ApiError> {
    let region = region(caller)?;
    let family = r
        .image_family
        .as_deref()
        .ok_or_else(|| ApiError::missing_parameter("ImageFamily"))?;
    validate::image_family(family)?;
    let uin = &caller.account.uin;
    let view = state
        .catalog
        .image_from_family(uin, region, family)
        .await
        .map_err(|e| internal(caller, e))?;
    Ok(json!({ "Image": view.map(|v| image_json(&v, uin)) }))
}
