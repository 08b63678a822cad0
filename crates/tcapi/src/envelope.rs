//! The response envelope every answer uses, success or error:
//! `{"Response":{…,"RequestId":"…"}}`. The service sends it with HTTP 200 and
//! `Content-Type: application/json` exactly; the Python SDK ignores error
//! bodies under any other status or content type.

use serde_json::{Map, Value};

use crate::error::{ApiError, Language};

/// `{"Response":{...fields,"RequestId":"…"}}`. `fields` should be an object
/// without RequestId; a RequestId in it is replaced, a non-object is ignored.
pub fn success_body(fields: Value, request_id: &str) -> String {
    let mut response = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    response.remove("RequestId");
    response.insert("RequestId".into(), Value::String(request_id.into()));
    wrap(response)
}

/// `{"Response":{"Error":{"Code":…,"Message":…},"RequestId":"…"}}`, the message
/// in the requested language.
pub fn error_body(err: &ApiError, lang: Language, request_id: &str) -> String {
    let mut error = Map::new();
    error.insert("Code".into(), Value::String(err.code.to_string()));
    error.insert("Message".into(), Value::String(err.message(lang).into()));
    let mut response = Map::new();
    response.insert("Error".into(), Value::Object(error));
    response.insert("RequestId".into(), Value::String(request_id.into()));
    wrap(response)
}

fn wrap(response: Map<String, Value>) -> String {
    let mut outer = Map::new();
    outer.insert("Response".into(), Value::Object(response));
    Value::Object(outer).to_string()
}
