//! DescribeImageQuota: the account's image quota (per region), from its
//! `image_quota` config key.

use super::region;
use crate::api::Caller;
use serde_json::{json, Value};
use tcapi::ApiError;

pub fn describe_image_quota(caller: &Caller<'_>) -> Result<Value, ApiError> {
    region(caller)?;
    Ok(json!({ "ImageNumQuota": caller.account.image_quota }))
}
