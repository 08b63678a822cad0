//! The HTTP front: one route, `/`, for every method. Each request goes
//! through, in order: size → decode → account lookup and signature → region
//! → rate limit → typed action → the action. Every answer, error or not, is
//! HTTP 200 with `Content-Type: application/json` exactly (the Python SDK
//! ignores error bodies otherwise) and a fresh lower-case UUIDv4 RequestId.
//!
//! The body is read here with a hard cap rather than by a body-limit layer,
//! so an oversized request still gets the Tencent envelope
//! (`RequestSizeLimitExceeded`), never a bare 413.

use super::actions::{dispatch, Reply};
use super::{errors, AppState, Caller};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;
use tcapi::{ApiError, Language, RawRequest};

/// Largest body read: a TC3 JSON POST may carry 10 MiB. One byte more is
/// read so that "exactly the limit" and "over it" can be told apart.
pub const MAX_BODY: usize = 10 << 20;

/// The router of the API, `/`, beside the operator's `/healthz`, `/readyz`
/// and `/metrics` (see `crate::ops`).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", any(handle))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state.clone())
        .merge(crate::ops::router(state))
        .merge(crate::console::router())
}

/// What a request came to, for the one log line per request.
struct Outcome {
    result: Result<Reply, ApiError>,
    lang: Language,
    action: Option<String>,
    uin: Option<String>,
    /// The SecretId the request named (never the key), for the log line.
    secret_id: Option<String>,
}

async fn handle(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let out = process(&state, &method, &uri, &headers, body, &request_id).await;
    let elapsed = started.elapsed();
    let code = out.result.as_ref().err().map_or("Success", |e| &*e.code);
    let action = crate::metrics::action_label(out.action.as_deref());
    crate::metrics::global().observe_request(action, code, elapsed);
    // Names the client chose are logged as they are when plain, otherwise
    // escaped and clipped, so no request can forge or flood a log line.
    let plain = |v: &Option<String>| match v.as_deref() {
        None => "-".to_string(),
        Some(v)
            if v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            v.to_string()
        }
        Some(v) => format!("{:?}", super::actions::validate::clip(v, 64)),
    };
    tracing::info!(
        request_id = %request_id,
        action = %plain(&out.action),
        secret_id = %plain(&out.secret_id),
        uin = out.uin.as_deref().unwrap_or("-"),
        code,
        latency_ms = elapsed.as_micros() as f64 / 1000.0,
        "request"
    );
    json_response(match out.result {
        Ok(Reply::Fields(fields)) => tcapi::success_body(fields, &request_id),
        Ok(Reply::Rendered(fields)) => rendered_body(&fields, &request_id),
        Err(e) => tcapi::error_body(&e, out.lang, &request_id),
    })
}

/// `{"Response":{<fields>,"RequestId":"…"}}` around pre-rendered fields,
/// the same text `tcapi::success_body` writes.
fn rendered_body(fields: &str, request_id: &str) -> String {
    let mut out = String::with_capacity(fields.len() + request_id.len() + 40);
    out.push_str("{\"Response\":{");
    out.push_str(fields);
    if !fields.is_empty() {
        out.push(',');
    }
    out.push_str("\"RequestId\":\"");
    out.push_str(request_id);
    out.push_str("\"}}");
    out
}

fn json_response(text: String) -> Response {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Even a panic (a bug) is answered in the envelope the SDKs understand.
fn panic_response(_err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    tracing::error!(request_id = %request_id, "request handler panicked");
    json_response(tcapi::error_body(
        &errors::internal(&request_id),
        Language::EnUs,
        &request_id,
    ))
}

/// The language asked for before the request could be decoded (size errors).
fn header_language(headers: &HeaderMap) -> Language {
    match headers.get("x-tc-language").map(HeaderValue::as_bytes) {
        Some(b"en-US") => Language::EnUs,
        _ => Language::ZhCn,
    }
}

/// Reads at most `MAX_BODY + 1` bytes; `None` if the client sent more (or the
/// connection broke mid-body).
async fn read_capped(body: Body, hint: usize) -> Result<Bytes, usize> {
    let mut stream = body.into_data_stream();
    // Pre-size by the declared length, but never trust it beyond a small
    // amount: it is the client's claim.
    let mut buf = Vec::with_capacity(hint.min(64 << 10));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| buf.len())?;
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(buf.len() + chunk.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

async fn process(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    request_id: &str,
) -> Outcome {
    let mut out = Outcome {
        result: Ok(Reply::Fields(serde_json::Value::Null)),
        lang: header_language(headers),
        action: None,
        uin: None,
        secret_id: None,
    };
    let raw_query = uri.query().unwrap_or("");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let declared: Option<usize> = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());

    // 1. Size: from the declared length before reading, then from the bytes.
    if let Some(n) = declared {
        if let Err(e) = tcapi::check_size(method.as_str(), content_type, raw_query.len(), n) {
            out.result = Err(e);
            return out;
        }
    }
    let body = match read_capped(body, declared.unwrap_or(0)).await {
        Ok(b) => b,
        Err(read) => {
            let n = read.max(MAX_BODY + 1);
            out.result = Err(
                tcapi::check_size(method.as_str(), content_type, raw_query.len(), n)
                    .err()
                    .unwrap_or_else(|| {
                        ApiError::new(
                            "RequestSizeLimitExceeded",
                            format!("The request body exceeds {MAX_BODY} bytes."),
                            format!("请求包体超过{MAX_BODY}字节。"),
                        )
                    }),
            );
            return out;
        }
    };
    if let Err(e) = tcapi::check_size(method.as_str(), content_type, raw_query.len(), body.len()) {
        out.result = Err(e);
        return out;
    }

    // 2. Decode. Header values that are not visible ASCII cannot be part of a
    // valid signature; they are left out and the signature fails if needed.
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
        .collect();
    let raw = RawRequest {
        method: method.as_str(),
        raw_query,
        headers: &pairs,
        body: &body,
    };
    let signed = match tcapi::decode(&raw) {
        Ok(s) => s,
        Err((e, lang)) => {
            out.lang = lang;
            out.result = Err(e);
            return out;
        }
    };
    out.lang = signed.language;
    out.action = Some(signed.action.clone());
    out.secret_id = Some(signed.secret_id.clone());

    // 3. Who is it? An unknown key is reported before any signature check.
    let Some(account) = state.accounts.get(&signed.secret_id) else {
        out.result = Err(errors::secret_id_not_found());
        return out;
    };
    out.uin = Some(account.uin.clone());
    if let Err(e) = signed.verify(&raw, &account.secret_key, chrono::Utc::now().timestamp()) {
        out.result = Err(e);
        return out;
    }
    // Temporary (STS) credentials are never issued here, so a token cannot
    // be valid; refusing it beats silently ignoring it.
    if signed.token.as_deref().is_some_and(|t| !t.is_empty()) {
        out.result = Err(errors::token_failure());
        return out;
    }

    // 4. Region.
    let region = match signed.region.as_deref() {
        Some(r) if state.serves_region(r) => Some(r),
        Some(r) => {
            out.result = Err(errors::unsupported_region(&super::actions::validate::clip(
                r, 64,
            )));
            return out;
        }
        None if signed.action == "DescribeImportImageOs" => None,
        None => {
            out.result = Err(ApiError::missing_parameter("Region"));
            return out;
        }
    };

    // 5. Rate limit.
    if let Err(rate) = state.limiter.check(account.index, &signed.action) {
        out.result = Err(errors::request_limit_exceeded(&signed.action, rate));
        return out;
    }

    // 6. Typed request, 7. the action.
    let request = match tcapi::decode_action(&signed.action, &signed.params) {
        Ok(r) => r,
        Err(e) => {
            out.result = Err(e);
            return out;
        }
    };
    let caller = Caller {
        account,
        region,
        request_id,
    };
    out.result = dispatch(state, &caller, &request).await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_body_matches_tcapi_envelope() {
        let rid = "71e69b56-32be-4412-ab45-49eded6a87be";
        let fields =
            serde_json::json!({"TotalCount": 1, "ImageSet": [{"ImageId": "img-12345678"}]});
        let text = fields.to_string();
        let inner = &text[1..text.len() - 1];
        assert_eq!(rendered_body(inner, rid), tcapi::success_body(fields, rid));
        assert_eq!(
            rendered_body("", rid),
            tcapi::success_body(serde_json::json!({}), rid)
        );
    }
}
