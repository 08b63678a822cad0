//! From raw HTTP parts to a decoded, then verified, request.
//!
//! The HTTP layer hands over the method, the raw query, the headers and the
//! body exactly as received, because both signature schemes sign those bytes
//! verbatim (the Host header even as `http://127.0.0.1:18083` when tccli sends
//! it so). [`decode`] reads the common parameters and the action parameters
//! without trusting them; [`SignedRequest::verify`] then checks the clock and
//! the signature against the key the service looked up for `secret_id`.

mod tc3;
mod v1;

use tc3::{decode_tc3, tc3_canonical_headers, tc3_host_candidates};
use v1::decode_v1;

use base64::Engine as _;

use crate::actions::{Product, ACTIONS};
use crate::error::{clip, ApiError, Language};
use crate::params::{parse_form, Params};
use crate::sign::{self, SignatureMethod, UNSIGNED_PAYLOAD};

/// The only API version served.
pub const VERSION: &str = "2017-03-12";
/// The TC3 service name of the CVM actions (CBS actions: `cbs`). A credential
/// scope may also name the first label of the request's Host, as the Node.js
/// SDK does with a custom endpoint (see [`scope_product`]).
pub const SERVICE: &str = "cvm";
/// Largest accepted GET query, in bytes.
pub const MAX_GET_BYTES: usize = 32 * 1024;
/// Largest accepted form (v1-style) POST body, in bytes.
pub const MAX_FORM_POST_BYTES: usize = 1024 * 1024;
/// Largest accepted JSON (v3) POST body, in bytes.
pub const MAX_JSON_POST_BYTES: usize = 10 * 1024 * 1024;
/// Largest accepted clock difference between the request and the server.
pub const MAX_SKEW_SECS: u64 = 300;

/// Parameters of the legacy scheme that are not action parameters.
const V1_COMMON: &[&str] = &[
    "Action",
    "Version",
    "Region",
    "Timestamp",
    "Nonce",
    "SecretId",
    "Signature",
    "SignatureMethod",
    "Token",
    "Language",
    "RequestClient",
];

/// One HTTP request as received.
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    /// As received, e.g. "GET", "POST", "PUT".
    pub method: &'a str,
    /// Bytes after '?', exactly as received ("" if none).
    pub raw_query: &'a str,
    /// Header name (any case) and raw value, as received.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl<'a> RawRequest<'a> {
    /// The value of a header (name case-insensitive). A header sent twice is
    /// an error: the two copies could be read differently by the signer and
    /// by us.
    pub fn header(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        let mut found = None;
        for (n, v) in self.headers {
            if n.eq_ignore_ascii_case(name) {
                if found.is_some() {
                    return Err(ApiError::invalid_request(
                        &format!("the header `{name}` is sent more than once"),
                        &format!("请求头`{name}`重复出现"),
                    ));
                }
                found = Some(*v);
            }
        }
        Ok(found)
    }
}

/// Media type of a Content-Type value, lower-cased, without parameters.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Size rule before anything else: GET ≤ 32 KB (query), v1 POST (form) ≤ 1 MB,
/// v3 POST ≤ 10 MB → RequestSizeLimitExceeded. Only the lengths are needed,
/// so the HTTP layer can call this from Content-Length before reading.
pub fn check_size(
    method: &str,
    content_type: Option<&str>,
    query_len: usize,
    body_len: usize,
) -> Result<(), ApiError> {
    if query_len > MAX_GET_BYTES {
        return Err(ApiError::request_size_limit_exceeded(
            "query string",
            query_len,
            MAX_GET_BYTES,
        ));
    }
    let (kind, limit) = if method.eq_ignore_ascii_case("GET") {
        ("GET body", MAX_GET_BYTES)
    } else if content_type.map(media_type).as_deref() == Some("application/x-www-form-urlencoded") {
        ("form POST body", MAX_FORM_POST_BYTES)
    } else {
        ("POST body", MAX_JSON_POST_BYTES)
    };
    if body_len > limit {
        return Err(ApiError::request_size_limit_exceeded(kind, body_len, limit));
    }
    Ok(())
}

/// How the signature of a request is to be checked; filled by [`decode`].
#[derive(Debug, Clone)]
enum Auth {
    Tc3 {
        /// The X-TC-Timestamp text as sent (it is signed as text).
        timestamp_text: String,
        credential_date: String,
        /// The service of the credential scope, as sent (it keys the signature).
        service: String,
        /// As sent in the Authorization header (it is signed as text).
        signed_headers: String,
        /// The same, split and lower-cased, sorted for CanonicalHeaders.
        signed_header_names: Vec<String>,
        signature: Vec<u8>,
    },
    V1 {
        method: SignatureMethod,
        /// Every decoded pair except Signature, in the order received.
        pairs: Vec<(String, String)>,
        signature: String,
    },
}

/// A decoded request whose signature has not been checked yet. Its `Debug`
/// output leaves out the token and the signature, so it can be logged.
#[derive(Clone)]
pub struct SignedRequest {
    pub action: String,
    /// The product the action belongs to, as the credential scope chose it.
    pub product: Product,
    pub version: String,
    /// `None` when the client sent no (or an empty) region.
    pub region: Option<String>,
    pub timestamp: i64,
    pub secret_id: String,
    pub token: Option<String>,
    pub language: Language,
    /// v1 only: the Nonce parameter (TC3 has none).
    pub nonce: Option<u64>,
    /// Empty until [`SignedRequest::parse_params`] when decoded with
    /// [`decode_deferred`].
    pub params: Params,
    /// Where the parameters still are, until parsed.
    pending: Option<Pending>,
    auth: Auth,
}

/// The action parameters not yet expanded into a tree.
#[derive(Debug, Clone)]
enum Pending {
    /// The JSON body of the request.
    Json,
    /// Decoded query or form pairs (TC3 GET or form POST).
    Flat(Vec<(String, String)>),
    /// The v1 pairs kept for the signature, less the common ones.
    V1,
}

impl std::fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRequest")
            .field("action", &self.action)
            .field("product", &self.product)
            .field("version", &self.version)
            .field("region", &self.region)
            .field("timestamp", &self.timestamp)
            .field("secret_id", &self.secret_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("language", &self.language)
            .field("nonce", &self.nonce)
            .field("signature_method", &self.signature_method())
            .field("params", &self.params)
            .finish()
    }
}

fn parse_language(value: &str, name: &str) -> Result<Language, ApiError> {
    match value {
        "zh-CN" => Ok(Language::ZhCn),
        "en-US" => Ok(Language::EnUs),
        other => Err(ApiError::invalid_parameter(
            format!(
                "The parameter `{name}` has the invalid value `{other}`: use `zh-CN` or `en-US`."
            ),
            format!("参数`{name}`的取值`{other}`不合法：只能为`zh-CN`或`en-US`。"),
        )),
    }
}

fn parse_timestamp(value: &str, name: &str) -> Result<i64, ApiError> {
    let v = value.trim();
    let ok = !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| v.parse::<i64>().ok()).flatten().ok_or_else(|| {
        ApiError::invalid_parameter(
            format!(
                "The parameter `{name}` must be the Unix time in seconds (Integer), got `{}`.",
                short(v)
            ),
            format!(
                "参数`{name}`必须是Unix秒级时间戳（整数），实际为`{}`。",
                short(v)
            ),
        )
    })
}

fn short(s: &str) -> String {
    clip(s).into_owned()
}

/// Where the action parameters of a request are.
enum Body {
    /// The body itself; read only when the parameters are parsed.
    Json,
    /// Decoded pairs of the query (GET) or the form body (POST).
    Flat(Vec<(String, String)>),
}

/// Decode the common parameters and the action parameter tree; nothing is
/// verified yet. The Language is returned even on error when it could be read.
pub fn decode(raw: &RawRequest) -> Result<SignedRequest, (ApiError, Language)> {
    let mut req = decode_deferred(raw)?;
    let lang = req.language;
    req.parse_params(raw).map_err(|e| (e, lang))?;
    Ok(req)
}

/// Like [`decode`] but leaves the action parameters unexpanded, so that a
/// server verifies the signature before spending memory on the tree (then
/// calls [`SignedRequest::parse_params`]). For a TC3 JSON POST nothing here
/// reads the body: it can be decoded from the header alone (`body: &[]`).
pub fn decode_deferred(raw: &RawRequest) -> Result<SignedRequest, (ApiError, Language)> {
    let mut lang = Language::default();
    decode_inner(raw, &mut lang).map_err(|e| (e, lang))
}

fn decode_inner(raw: &RawRequest, lang: &mut Language) -> Result<SignedRequest, ApiError> {
    // The language header first, so that every later error can use it.
    if let Some(l) = raw.header("X-TC-Language")? {
        *lang = parse_language(l.trim(), "X-TC-Language")?;
    }
    let is_get = match raw.method {
        "GET" => true,
        "POST" => false,
        other => return Err(ApiError::unsupported_protocol(&short(other))),
    };
    let content_type = raw.header("Content-Type")?;
    check_size(
        raw.method,
        content_type,
        raw.raw_query.len(),
        raw.body.len(),
    )?;

    let body = if is_get {
        Body::Flat(parse_form(raw.raw_query.as_bytes())?)
    } else {
        match content_type.map(media_type).as_deref() {
            Some("application/json") => Body::Json,
            Some("application/x-www-form-urlencoded") => Body::Flat(parse_form(raw.body)?),
            Some("multipart/form-data") => {
                return Err(ApiError::invalid_request(
                    "multipart/form-data is not supported by cvm; send application/json (TC3) or application/x-www-form-urlencoded",
                    "cvm不支持multipart/form-data格式，请使用application/json（TC3）或application/x-www-form-urlencoded",
                ))
            }
            other => {
                let shown = other.map(short).unwrap_or_else(|| "(none)".into());
                return Err(ApiError::invalid_request(
                    &format!("the POST Content-Type `{shown}` is not supported; send application/json or application/x-www-form-urlencoded"),
                    &format!("不支持POST的Content-Type`{shown}`，请使用application/json或application/x-www-form-urlencoded"),
                ));
            }
        }
    };

    match raw.header("Authorization")? {
        Some(authz) => decode_tc3(raw, authz, body, *lang),
        None => match body {
            Body::Flat(pairs) if pairs.iter().any(|(k, _)| k == "Signature") => {
                decode_v1(pairs, lang)
            }
            Body::Json => Err(ApiError::invalid_authorization(
                "a JSON POST needs a TC3-HMAC-SHA256 Authorization header, none was sent",
                "JSON格式的POST请求需要TC3-HMAC-SHA256的Authorization头部，但未传入",
            )),
            Body::Flat(_) => Err(ApiError::invalid_authorization(
                "the request carries neither an Authorization header nor a Signature parameter",
                "请求既没有Authorization头部也没有Signature参数",
            )),
        },
    }
}

fn required_header<'a>(raw: &RawRequest<'a>, name: &str) -> Result<&'a str, ApiError> {
    match raw.header(name)? {
        Some(v) if !v.trim().is_empty() => Ok(v.trim()),
        _ => Err(ApiError::missing_parameter(name)),
    }
}

fn check_version_action(version: &str, action: &str, product: Product) -> Result<(), ApiError> {
    if version != VERSION {
        return Err(ApiError::no_such_version(&short(version)));
    }
    if !ACTIONS.contains(&action) || Product::of_action(action) != Some(product) {
        return Err(ApiError::invalid_action_in(&short(action), product));
    }
    Ok(())
}

/// The first DNS label of a Host header, in the two spellings a client may
/// have signed: the text before the first `.` (the Node.js SDK's
/// `endpoint.split(".")[0]`, port included when there is no dot:
/// `localhost:9000`), and the same without a port (`localhost`). tccli's
/// verbatim `http://` prefix is not part of it.
fn host_first_labels(host: &str) -> [&str; 2] {
    let host = host.trim();
    let host = host
        .strip_prefix("http://")
        .or_else(|| host.strip_prefix("https://"))
        .unwrap_or(host);
    let label = host.split('.').next().unwrap_or("");
    let bare = match label.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => label,
    };
    [label, bare]
}

/// The product a TC3 credential scope selects. `cvm` and `cbs` name
/// theirs; the first label of the Host (what the Node.js SDK signs with an
/// endpoint such as `127.0.0.1:9000` → `127`) names none, so the action
/// decides (action names do not overlap). Any other service is refused.
pub fn scope_product(service: &str, host: &str, action: &str) -> Result<Product, ApiError> {
    if let Some(product) = Product::from_service(service) {
        return Ok(product);
    }
    let labels = host_first_labels(host);
    if !service.is_empty() && labels.contains(&service) {
        return Ok(Product::of_action(action).unwrap_or(Product::Cvm));
    }
    Err(ApiError::invalid_authorization(
        &format!(
            "the service in Credential must be `cvm`, `cbs` or `{}` (the first label of the Host), got `{}`",
            short(labels[1]),
            short(service)
        ),
        &format!(
            "Credential中的服务名必须为`cvm`、`cbs`或`{}`（Host的第一段），实际为`{}`",
            short(labels[1]),
            short(service)
        ),
    ))
}

fn non_empty(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// What a verified signature is bound to (see [`SignedRequest::binding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding {
    /// TC3: the signature; v1: the SecretId and Nonce.
    pub key: [u8; 32],
    /// The request itself: its signature (equal to `key` under TC3).
    pub identity: [u8; 32],
}

impl SignedRequest {
    /// What a replay guard records for this request once it is verified.
    /// A TC3 signature does not cover X-TC-Action or X-TC-Region unless the
    /// client listed them in SignedHeaders (the SDKs do not), so the guard
    /// keys by the signature and remembers the action and region it came
    /// with. Under v1 the signature covers everything but the Nonce must not
    /// be used twice, so the key is (SecretId, Nonce) and the identity the
    /// signature.
    pub fn binding(&self) -> Binding {
        use sha2::{Digest, Sha256};
        let digest = |parts: &[&[u8]]| -> [u8; 32] {
            let mut h = Sha256::new();
            for p in parts {
                h.update((p.len() as u64).to_be_bytes());
                h.update(p);
            }
            h.finalize().into()
        };
        match &self.auth {
            Auth::Tc3 { signature, .. } => {
                let key = digest(&[b"tc3", self.secret_id.as_bytes(), signature]);
                Binding { key, identity: key }
            }
            Auth::V1 { signature, .. } => {
                let nonce = self.nonce.unwrap_or(0).to_be_bytes();
                Binding {
                    key: digest(&[b"v1", self.secret_id.as_bytes(), &nonce]),
                    identity: digest(&[b"v1sig", signature.trim().as_bytes()]),
                }
            }
        }
    }

    /// Expands the action parameters into [`SignedRequest::params`] (once;
    /// later calls do nothing). `raw` must be the request this was decoded
    /// from, body included.
    pub fn parse_params(&mut self, raw: &RawRequest) -> Result<(), ApiError> {
        let params = match self.pending.take() {
            None => return Ok(()),
            Some(Pending::Json) => Params::from_json(raw.body)?,
            Some(Pending::Flat(pairs)) => {
                Params::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?
            }
            Some(Pending::V1) => match &self.auth {
                Auth::V1 { pairs, .. } => Params::from_pairs(
                    pairs
                        .iter()
                        .filter(|(k, _)| !V1_COMMON.contains(&k.as_str()))
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )?,
                Auth::Tc3 { .. } => Params::default(),
            },
        };
        self.params = params;
        Ok(())
    }

    pub fn signature_method(&self) -> SignatureMethod {
        match &self.auth {
            Auth::Tc3 { .. } => SignatureMethod::Tc3HmacSha256,
            Auth::V1 { method, .. } => *method,
        }
    }

    /// AuthFailure.SignatureExpire if |now - timestamp| > 300;
    /// AuthFailure.SignatureFailure on mismatch (constant-time compare).
    /// `raw` must be the request this was decoded from.
    pub fn verify(
        &self,
        raw: &RawRequest,
        secret_key: &str,
        now_unix: i64,
    ) -> Result<(), ApiError> {
        if now_unix.abs_diff(self.timestamp) > MAX_SKEW_SECS {
            return Err(ApiError::signature_expire(self.timestamp, now_unix));
        }
        match &self.auth {
            Auth::Tc3 {
                timestamp_text,
                credential_date,
                service,
                signed_headers,
                signed_header_names,
                signature,
            } => {
                let expected_date = sign::utc_date(self.timestamp).unwrap_or_default();
                if *credential_date != expected_date {
                    return Err(ApiError::signature_failure_because(
                        &format!("the Credential date {credential_date} is not the UTC date {expected_date} of X-TC-Timestamp"),
                        &format!("Credential中的日期{credential_date}不是X-TC-Timestamp的UTC日期{expected_date}"),
                    ));
                }
                let unsigned = raw
                    .header("X-TC-Content-SHA256")?
                    .is_some_and(|v| v.trim() == UNSIGNED_PAYLOAD);
                let payload_hash = if unsigned {
                    sign::sha256_hex(UNSIGNED_PAYLOAD.as_bytes())
                } else {
                    sign::sha256_hex(raw.body)
                };
                let key = sign::tc3_signing_key(secret_key, credential_date, service);
                for host in tc3_host_candidates(raw.header("Host")?.unwrap_or("").trim()) {
                    let canonical_headers = tc3_canonical_headers(raw, signed_header_names, host)?;
                    let creq = sign::tc3_canonical_request(
                        raw.method,
                        raw.raw_query,
                        &canonical_headers,
                        signed_headers,
                        &payload_hash,
                    );
                    let sts =
                        sign::tc3_string_to_sign(timestamp_text, credential_date, service, &creq);
                    if sign::tc3_verify(&key, &sts, signature) {
                        return Ok(());
                    }
                }
                Err(ApiError::signature_failure())
            }
            Auth::V1 {
                method,
                pairs,
                signature,
            } => {
                let host = raw.header("Host")?.unwrap_or("");
                // A '+' left unencoded on the wire arrives as a space.
                let sig_text = signature.replace(' ', "+");
                let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(sig_text.trim())
                else {
                    return Err(ApiError::signature_failure_because(
                        "the Signature parameter is not base64",
                        "Signature参数不是base64编码",
                    ));
                };
                let refs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                // The Python SDK signs its configured endpoint, which may
                // carry a scheme (`http://127.0.0.1:18083`) that the Host
                // header on the wire never has.
                let hosts = [
                    host.to_string(),
                    format!("http://{host}"),
                    format!("https://{host}"),
                ];
                let underscores = refs.iter().any(|(k, _)| k.contains('_'));
                for host in &hosts {
                    for dotted in [false, true] {
                        if dotted && !underscores {
                            continue;
                        }
                        let msg = sign::v1_string_to_sign(raw.method, host, "/", &refs, dotted);
                        if sign::v1_verify(*method, secret_key, &msg, &tag) {
                            return Ok(());
                        }
                    }
                }
                Err(ApiError::signature_failure())
            }
        }
    }
}

#[cfg(test)]
mod scope_tests;
