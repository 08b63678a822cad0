//! One signed API call: build the request exactly as the official SDKs do
//! (TC3-HMAC-SHA256, POST JSON to `/`, the `X-TC-*` headers), send it, and
//! turn the envelope into either the `Response` object or an [`CallError`].
//!
//! Request building is a pure function ([`build_request`]) so that tests can
//! check it with the server's own decoder and verifier.

use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

use super::credentials::Settings;

/// The only API version of the CVM image actions.
pub const VERSION: &str = "2017-03-12";
/// Service name in the TC3 credential scope (fixed, whatever the endpoint).
const SERVICE: &str = "cvm";
/// A reply larger than this is not an API reply (DescribeImages with 100
/// images is a few hundred KiB).
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct SignedCall {
    pub url: Url,
    /// In the order sent; includes `Host` because it is signed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The service answered with `Response.Error`.
    #[error("{code}: {message} (RequestId {request_id})")]
    Api {
        code: String,
        message: String,
        request_id: String,
    },
    /// The endpoint could not be reached, or the connection broke.
    #[error("cannot reach {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    /// Something answered, but not with the API's envelope.
    #[error("unexpected reply from {endpoint}: {reason}")]
    BadReply { endpoint: String, reason: String },
    #[error("invalid endpoint `{0}`: use a URL such as https://cvm.tencentcloudapi.com or http://127.0.0.1:9000")]
    BadEndpoint(String),
}

impl CallError {
    /// The code of the error in the API's error shape (`--json`): the
    /// service's, or the one the official SDKs give a local failure.
    pub fn wire_code(&self) -> &str {
        match self {
            CallError::Api { code, .. } => code,
            CallError::Transport { .. } => "ClientNetworkError",
            CallError::BadReply { .. } => "ServerNetworkError",
            CallError::BadEndpoint(_) => "ClientParamsError",
        }
    }

    /// The message without the code and RequestId (`--json`).
    pub fn wire_message(&self) -> String {
        match self {
            CallError::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The RequestId the service gave, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            CallError::Api { request_id, .. } => Some(request_id),
            _ => None,
        }
    }

    /// The API error code, if the service gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Worth trying again later (rate limits, network trouble), as the
    /// Python SDK's retryer judges it.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Transport { .. } => true,
            CallError::Api { code, .. } => {
                code.starts_with("RequestLimitExceeded") || code == "InternalError"
            }
            _ => false,
        }
    }
}

/// The value the `Host` header will carry for `url`: host, plus the port
/// when it is not the scheme's default (what HTTP clients send, so what the
/// server sees and verifies).
pub fn host_header(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// Parse and check an endpoint URL: http(s), a host, no path beyond `/`.
pub fn parse_endpoint(endpoint: &str) -> Result<Url, CallError> {
    let bad = || CallError::BadEndpoint(endpoint.to_string());
    let url = Url::parse(endpoint).map_err(|_| bad())?;
    let path_ok = url.path() == "/" || url.path().is_empty();
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || !path_ok
        || url.query().is_some()
        || !url.username().is_empty()
    {
        return Err(bad());
    }
    Ok(url)
}

/// Build the signed POST for `action` with the JSON object `params`.
pub fn build_request(
    settings: &Settings,
    action: &str,
    params: &Value,
    timestamp: i64,
) -> Result<SignedCall, CallError> {
    let url = parse_endpoint(&settings.endpoint)?;
    let host =
        host_header(&url).ok_or_else(|| CallError::BadEndpoint(settings.endpoint.clone()))?;
    // Compact JSON like the Go SDK; the signature covers these exact bytes.
    let body = serde_json::to_vec(params).unwrap_or_else(|_| b"{}".to_vec());
    let content_type = "application/json";
    let creds = &settings.credentials;
    // Action and region are signed too: a signature is then never the
    // same for two actions, whatever the body and the second.
    let action_region = [
        ("x-tc-action", action),
        ("x-tc-region", settings.region.as_str()),
    ];
    let extra_signed = if settings.region.is_empty() {
        &action_region[..1]
    } else {
        &action_region[..]
    };
    let authorization = tcapi::sign_tc3(
        &creds.secret_id,
        &creds.secret_key,
        &tcapi::Tc3Request {
            host: &host,
            content_type,
            payload: &body,
            raw_query: "",
            method: "POST",
            timestamp,
            service: SERVICE,
            extra_signed,
        },
    );
    let mut headers = vec![
        ("Host".to_string(), host),
        ("Content-Type".to_string(), content_type.to_string()),
        ("X-TC-Action".to_string(), action.to_string()),
        ("X-TC-Version".to_string(), VERSION.to_string()),
        ("X-TC-Region".to_string(), settings.region.clone()),
        ("X-TC-Timestamp".to_string(), timestamp.to_string()),
        ("X-TC-Language".to_string(), settings.language.clone()),
        (
            "X-TC-RequestClient".to_string(),
            concat!("imagegate/", env!("CARGO_PKG_VERSION")).to_string(),
        ),
    ];
    if let Some(token) = &creds.token {
        headers.push(("X-TC-Token".to_string(), token.clone()));
    }
    headers.push(("Authorization".to_string(), authorization));
    Ok(SignedCall { url, headers, body })
}

/// Read the envelope: the `Response` object on success.
pub fn parse_reply(endpoint: &str, status: u16, body: &[u8]) -> Result<Value, CallError> {
    let bad = |reason: String| CallError::BadReply {
        endpoint: endpoint.to_string(),
        reason,
    };
    let snippet = || {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        text.trim().replace('\n', " ")
    };
    if status != 200 {
        return Err(bad(format!("HTTP {status}: {}", snippet())));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("not JSON ({e}): {}", snippet())))?;
    let Some(Value::Object(resp)) = v.get("Response") else {
        return Err(bad(format!("no `Response` object: {}", snippet())));
    };
    let request_id = resp
        .get("RequestId")
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_string();
    if let Some(err) = resp.get("Error") {
        let code = err.get("Code").and_then(Value::as_str).unwrap_or("");
        if !code.is_empty() {
            return Err(CallError::Api {
                code: code.to_string(),
                message: err
                    .get("Message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                request_id,
            });
        }
    }
    Ok(Value::Object(resp.clone()))
}

/// A client for one endpoint and key.
pub struct ApiClient {
    http: reqwest::Client,
    settings: Settings,
}

impl ApiClient {
    pub fn new(settings: Settings) -> Result<Self, CallError> {
        parse_endpoint(&settings.endpoint)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            // The API never redirects; following one would send a signed
            // request somewhere the user did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CallError::Transport {
                endpoint: settings.endpoint.clone(),
                reason: e.to_string(),
            })?;
        Ok(ApiClient { http, settings })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Call `action`; returns the `Response` object (with `RequestId`).
    pub async fn call(&self, action: &str, params: &Value) -> Result<Value, CallError> {
        let now = chrono::Utc::now().timestamp();
        let signed = build_request(&self.settings, action, params, now)?;
        let endpoint = self.settings.endpoint.clone();
        let transport = |e: reqwest::Error| CallError::Transport {
            endpoint: endpoint.clone(),
            reason: with_tls_hint(&endpoint, error_chain(&e)),
        };
        let mut req = self.http.post(signed.url.clone());
        for (k, v) in &signed.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut resp = req.body(signed.body).send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(CallError::BadReply {
                    endpoint,
                    reason: format!("reply larger than {MAX_REPLY_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        parse_reply(&self.settings.endpoint, status, &body)
    }
}

/// rustls' "received corrupt message of type InvalidContentType" means an
/// HTTPS request reached a server that answers in plain HTTP: say so.
fn with_tls_hint(endpoint: &str, reason: String) -> String {
    if endpoint.starts_with("https://") && reason.contains("InvalidContentType") {
        let plain = endpoint.replacen("https://", "http://", 1);
        format!("{reason} (the server does not speak TLS: if it serves plain HTTP, use {plain})")
    } else {
        reason
    }
}

/// reqwest's top-level messages ("error sending request") hide the cause
/// ("connection refused"); show the whole chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::credentials::Credentials;
    use serde_json::json;

    fn settings(endpoint: &str) -> Settings {
        Settings {
            endpoint: endpoint.into(),
            region: "ap-guangzhou".into(),
            language: "en-US".into(),
            credentials: Credentials {
                secret_id: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE".into(),
                secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE".into(),
                token: None,
            },
            profile: "default".into(),
        }
    }

    /// Feed a built request to the server half of tcapi, as imagegate serve
    /// does with what it receives.
    fn decode_and_verify(
        call: &SignedCall,
        key: &str,
        now: i64,
    ) -> Result<tcapi::SignedRequest, tcapi::ApiError> {
        let hs: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let raw = tcapi::RawRequest {
            method: "POST",
            raw_query: "",
            headers: &hs,
            body: &call.body,
        };
        let req = tcapi::decode(&raw).map_err(|(e, _)| e)?;
        req.verify(&raw, key, now)?;
        Ok(req)
    }

    #[test]
    fn signed_request_verifies_on_the_server_side() {
        let ts = 1_767_297_600; // 20:00 UTC: already the next day in UTC+8
        for endpoint in [
            "http://127.0.0.1:9000",
            "https://cvm.tencentcloudapi.com",
            "http://[::1]:8080/",
        ] {
            let s = settings(endpoint);
            let params = json!({"ImageIds": ["img-gvbnzy6f"], "Limit": 5});
            let call = build_request(&s, "DescribeImages", &params, ts).unwrap();
            let req = decode_and_verify(&call, "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", ts + 10)
                .unwrap_or_else(|e| panic!("{endpoint}: {e:?}"));
            assert_eq!(req.action, "DescribeImages");
            assert_eq!(req.region.as_deref(), Some("ap-guangzhou"));
            assert_eq!(req.secret_id, "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE");
            assert_eq!(
                req.signature_method(),
                tcapi::SignatureMethod::Tc3HmacSha256
            );
            let decoded = tcapi::decode_action(&req.action, &req.params).unwrap();
            let tcapi::ActionRequest::DescribeImages(d) = decoded else {
                panic!("wrong action")
            };
            assert_eq!(d.image_ids, Some(vec!["img-gvbnzy6f".to_string()]));
            assert_eq!(d.limit, Some(5));
        }
    }

    #[test]
    fn host_header_is_what_http_clients_send() {
        let h = |u: &str| host_header(&Url::parse(u).unwrap()).unwrap();
        assert_eq!(
            h("https://cvm.tencentcloudapi.com"),
            "cvm.tencentcloudapi.com"
        );
        assert_eq!(
            h("https://cvm.tencentcloudapi.com:443/"),
            "cvm.tencentcloudapi.com"
        );
        assert_eq!(h("http://127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(h("http://127.0.0.1:80"), "127.0.0.1");
        assert_eq!(h("http://[::1]:9000"), "[::1]:9000");
    }

    #[test]
    fn wrong_key_or_old_clock_fails_verification() {
        let s = settings("http://127.0.0.1:9000");
        let call = build_request(&s, "DescribeImageQuota", &json!({}), 1_700_000_000).unwrap();
        let err = decode_and_verify(&call, "another-key", 1_700_000_000).unwrap_err();
        assert_eq!(err.code, "AuthFailure.SignatureFailure");
        let err = decode_and_verify(
            &call,
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            1_700_000_000 + 301,
        )
        .unwrap_err();
        assert_eq!(err.code, "AuthFailure.SignatureExpire");
    }

    #[test]
    fn token_header_is_sent_when_present() {
        let mut s = settings("http://127.0.0.1:9000");
        s.credentials.token = Some("sts-token".into());
        let call = build_request(&s, "DescribeImageQuota", &json!({}), 1_700_000_000).unwrap();
        assert!(call
            .headers
            .iter()
            .any(|(k, v)| k == "X-TC-Token" && v == "sts-token"));
        let req =
            decode_and_verify(&call, "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", 1_700_000_000).unwrap();
        assert_eq!(req.token.as_deref(), Some("sts-token"));
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for e in [
            "",
            "cvm",
            "ftp://x",
            "http://h/path",
            "http://h/?a=b",
            "http://u:p@h/",
        ] {
            assert!(
                matches!(parse_endpoint(e), Err(CallError::BadEndpoint(_))),
                "{e}"
            );
        }
    }

    #[test]
    fn envelope_parsing() {
        let ok = parse_reply(
            "e",
            200,
            br#"{"Response":{"ImageNumQuota":500,"RequestId":"r-1"}}"#,
        )
        .unwrap();
        assert_eq!(ok["ImageNumQuota"], 500);
        let err = parse_reply(
            "e",
            200,
            br#"{"Response":{"Error":{"Code":"InvalidImageId.NotFound","Message":"no such image"},"RequestId":"r-2"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "InvalidImageId.NotFound: no such image (RequestId r-2)"
        );
        assert!(matches!(
            parse_reply("e", 502, b"<html>bad gateway</html>"),
            Err(CallError::BadReply { .. })
        ));
        assert!(matches!(
            parse_reply("e", 200, b"[1,2]"),
            Err(CallError::BadReply { .. })
        ));
        assert!(matches!(
            parse_reply("e", 200, b"\xff\xfe"),
            Err(CallError::BadReply { .. })
        ));
    }
}
