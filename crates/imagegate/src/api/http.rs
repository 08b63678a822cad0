//! The HTTP front: one route, `/`, for every method. Each request goes
//! through, in order: size → (a TC3 JSON POST: decode its header and look
//! its key up before the body is read) → body, within the body timeout →
//! decode → account lookup and signature → the signature's binding
//! (`replay`) → parameter tree → region → rate limit → typed action → the
//! action. Every answer, error or not, is
//! HTTP 200 with `Content-Type: application/json` exactly (the Python SDK
//! ignores error bodies otherwise) and a fresh lower-case UUIDv4 RequestId.
//!
//! The body is read here with a hard cap rather than by a body-limit layer,
//! so an oversized request still gets the Tencent envelope
//! (`RequestSizeLimitExceeded`), never a bare 413.

use super::actions::{dispatch, Reply};
use super::replay::{AnswerSlot, Seen, Verdict};
use super::{errors, AppState, Caller};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::any;
use axum::Extension;
use axum::Router;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;
use tcapi::{ApiError, Language, RawRequest, SignedRequest};

use crate::net::conns::ConnectionId;

/// Largest body read: a TC3 JSON POST may carry 10 MiB. One byte more is
/// read so that "exactly the limit" and "over it" can be told apart.
pub const MAX_BODY: usize = 10 << 20;

/// The router of the API, `/`, beside the web console; `server` adds the
/// operator's endpoints (see `crate::ops`).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", any(handle))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
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
    /// An identical re-send of a mutating request: the first answer.
    replayed: Option<Arc<str>>,
    /// The first copy of a mutating request keeps its answer here.
    slot: Option<AnswerSlot>,
}

async fn handle(
    State(state): State<Arc<AppState>>,
    connection: Option<Extension<ConnectionId>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let head = Head::new(&method, &uri, &headers, connection.map(|Extension(c)| c));
    let out = process(&state, head, header_language(&headers), body, &request_id).await;
    let elapsed = started.elapsed();
    let code = match (&out.result, &out.replayed) {
        (_, Some(_)) => "Replayed",
        (Ok(_), None) => "Success",
        (Err(e), None) => &*e.code,
    };
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
    if let Some(first) = out.replayed {
        return json_response(first.to_string());
    }
    let text = match out.result {
        Ok(Reply::Fields(fields)) => tcapi::success_body(fields, &request_id),
        Ok(Reply::Rendered(fields)) => rendered_body(&fields, &request_id),
        Err(e) => tcapi::error_body(&e, out.lang, &request_id),
    };
    if let Some(slot) = out.slot {
        slot.finish(&text);
    }
    json_response(text)
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

/// Reads at most `MAX_BODY` bytes within `within`. Too large: the size
/// error; too slow: `InvalidRequest`; a broken connection: also the size
/// check's error (nobody reads that answer).
async fn read_capped(
    body: Body,
    hint: usize,
    within: std::time::Duration,
    too_large: impl Fn(usize) -> ApiError,
) -> Result<Bytes, ApiError> {
    let read = async {
        let mut stream = body.into_data_stream();
        // Pre-size by the declared length, but never trust it beyond a small
        // amount: it is the client's claim.
        let mut buf = Vec::with_capacity(hint.min(64 << 10));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| too_large(buf.len().max(MAX_BODY + 1)))?;
            if buf.len() + chunk.len() > MAX_BODY {
                return Err(too_large(buf.len() + chunk.len()));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(within, read).await {
        Ok(r) => r,
        Err(_) => Err(errors::body_too_slow(within.as_secs())),
    }
}

/// The request line and headers, as the decoder wants them.
struct Head<'a> {
    method: &'a Method,
    raw_query: &'a str,
    content_type: Option<&'a str>,
    declared: Option<usize>,
    /// Header values that are not visible ASCII cannot be part of a valid
    /// signature; they are left out and the signature fails if needed.
    pairs: Vec<(&'a str, &'a str)>,
    /// The connection it came on (see `replay`).
    connection: Option<ConnectionId>,
}

impl<'a> Head<'a> {
    fn new(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        connection: Option<ConnectionId>,
    ) -> Head<'a> {
        Head {
            method,
            raw_query: uri.query().unwrap_or(""),
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            declared: headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            pairs: headers
                .iter()
                .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
                .collect(),
            connection,
        }
    }

    fn raw<'b>(&'b self, body: &'b [u8]) -> RawRequest<'b> {
        RawRequest {
            method: self.method.as_str(),
            raw_query: self.raw_query,
            headers: &self.pairs,
            body,
        }
    }

    fn check_size(&self, body_len: usize) -> Result<(), ApiError> {
        tcapi::check_size(
            self.method.as_str(),
            self.content_type,
            self.raw_query.len(),
            body_len,
        )
    }

    /// A TC3 JSON POST: everything but its parameters is in the header.
    fn is_tc3_json(&self) -> bool {
        self.method == Method::POST
            && self.pairs.iter().any(|(k, _)| *k == "authorization")
            && self.content_type.is_some_and(|c| {
                c.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            })
    }
}

fn decoded(raw: &RawRequest, out: &mut Outcome) -> Result<SignedRequest, ApiError> {
    tcapi::decode_deferred(raw).map_err(|(e, lang)| {
        out.lang = lang;
        e
    })
}

async fn process(
    state: &AppState,
    head: Head<'_>,
    lang: Language,
    body: Body,
    request_id: &str,
) -> Outcome {
    let mut out = Outcome {
        result: Ok(Reply::Fields(serde_json::Value::Null)),
        lang,
        action: None,
        uin: None,
        secret_id: None,
        replayed: None,
        slot: None,
    };
    let result = run(state, &mut out, &head, body, request_id).await;
    out.result = result;
    out
}

/// size → (TC3 JSON: decode the header and find the key before reading the
/// body) → body → decode → account and signature → binding and re-send →
/// parameters → region → rate limit → typed action → the action.
async fn run(
    state: &AppState,
    out: &mut Outcome,
    head: &Head<'_>,
    body: Body,
    request_id: &str,
) -> Result<Reply, ApiError> {
    if let Some(n) = head.declared {
        head.check_size(n)?;
    }
    // An unknown key never gets its body read, so a flood of maximum-size
    // bodies from made-up keys costs no memory.
    if head.is_tc3_json() {
        let signed = decoded(&head.raw(&[]), out)?;
        if state.accounts.get(&signed.secret_id).is_none() {
            out.secret_id = Some(signed.secret_id);
            return Err(errors::secret_id_not_found());
        }
    }
    let too_large = |n: usize| {
        head.check_size(n).err().unwrap_or_else(|| {
            ApiError::new(
                "RequestSizeLimitExceeded",
                format!("The request body exceeds {MAX_BODY} bytes."),
                format!("请求包体超过{MAX_BODY}字节。"),
            )
        })
    };
    let within = state.config.net.timeouts().body;
    let body = read_capped(body, head.declared.unwrap_or(0), within, too_large).await?;
    head.check_size(body.len())?;
    let raw = head.raw(&body);
    let mut signed = decoded(&raw, out)?;
    out.lang = signed.language;
    out.action = Some(signed.action.clone());
    out.secret_id = Some(signed.secret_id.clone());

    // Who is it? An unknown key is reported before any signature check.
    let Some(account) = state.accounts.get(&signed.secret_id) else {
        return Err(errors::secret_id_not_found());
    };
    out.uin = Some(account.uin.clone());
    let now = chrono::Utc::now().timestamp();
    signed.verify(&raw, &account.secret_key, now)?;
    // Temporary (STS) credentials are never issued here, so a token cannot
    // be valid; refusing it beats silently ignoring it.
    if signed.token.as_deref().is_some_and(|t| !t.is_empty()) {
        return Err(errors::token_failure());
    }
    bind(state, out, &signed, head.connection, now).await?;
    if out.replayed.is_some() {
        return Ok(Reply::Fields(serde_json::Value::Null));
    }
    // Only now, authenticated, is the body expanded into a tree.
    signed.parse_params(&raw)?;
    act(state, account, &signed, request_id).await
}

/// Checks the signature's binding (see `replay`): refuses it for another
/// action or region, or sets `out.replayed` for an identical re-send.
async fn bind(
    state: &AppState,
    out: &mut Outcome,
    signed: &SignedRequest,
    connection: Option<ConnectionId>,
    now: i64,
) -> Result<(), ApiError> {
    // `decode` accepts only names in ACTIONS, so this always finds it.
    let Some(&action) = tcapi::ACTIONS.iter().find(|a| **a == signed.action) else {
        return Err(ApiError::invalid_action(&signed.action));
    };
    let seen = Seen {
        binding: signed.binding(),
        action,
        region: signed.region.as_deref(),
        timestamp: signed.timestamp,
        now,
        connection,
    };
    match state.replay.check(seen).await {
        Verdict::Mismatch => Err(errors::signature_reused()),
        Verdict::Replay(body) => {
            out.replayed = Some(body);
            Ok(())
        }
        Verdict::Run(slot) => {
            out.slot = slot;
            Ok(())
        }
    }
}

/// Region, rate limit, typed request, and the action itself.
async fn act(
    state: &AppState,
    account: &crate::accounts::Account,
    signed: &SignedRequest,
    request_id: &str,
) -> Result<Reply, ApiError> {
    let region = match signed.region.as_deref() {
        Some(r) if state.serves_region(r) => Some(r),
        Some(r) => {
            return Err(errors::unsupported_region(&super::actions::validate::clip(
                r, 64,
            )))
        }
        None if signed.action == "DescribeImportImageOs" => None,
        None => return Err(ApiError::missing_parameter("Region")),
    };
    let admitted = state
        .limiter
        .check(account.index, &account.uin, &signed.action)
        .await;
    if let Err(refused) = admitted {
        return Err(errors::request_limit_exceeded(&signed.action, refused.rate));
    }
    let request = tcapi::decode_action(&signed.action, &signed.params)?;
    let caller = Caller {
        account,
        region,
        request_id,
    };
    dispatch(state, &caller, &request).await
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
