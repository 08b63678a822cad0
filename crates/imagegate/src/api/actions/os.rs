//! DescribeImportImageOs: the OS list ImportImage accepts (see `oslist`).
//! Needs no region; the answer is built once at start.

use crate::api::AppState;
use serde_json::Value;

pub fn describe_import_image_os(state: &AppState) -> Value {
    state.oslist.answer().clone()
}
