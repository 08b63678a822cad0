//! Tencent Cloud API 3.0 wire protocol for the CVM image actions.
//!
//! No I/O and no business rules: signature checking (TC3-HMAC-SHA256 and the
//! legacy HmacSHA1/HmacSHA256), decoding GET query / form / JSON bodies into
//! one parameter tree, typed action requests, and the response envelope.
//!
//! # Processing one request
//!
//! The HTTP layer calls, in this order, and answers any error with
//! [`error_body`] (HTTP 200, `Content-Type: application/json`):
//!
//! 1. [`check_size`] from the method, Content-Type and lengths, before the
//!    body is read: GET ≤ 32 KB, form POST ≤ 1 MB, JSON POST ≤ 10 MB
//!    (`RequestSizeLimitExceeded`).
//! 2. [`decode()`] on a [`RawRequest`] (method, raw query, headers and body as
//!    received): method (`UnsupportedProtocol`), content type
//!    (`InvalidRequest` for multipart), signature scheme (TC3 from the
//!    `Authorization` header, else legacy v1 from the `Signature` parameter,
//!    else `AuthFailure.InvalidAuthorization`), common parameters
//!    (`MissingParameter`), `NoSuchVersion`, `InvalidAction`, then the
//!    parameter tree ([`Params`], `InvalidParameter`). Nothing is trusted
//!    yet; the error comes with the request's [`Language`] when it was read.
//! 3. The service looks up [`SignedRequest::secret_id`]
//!    (`AuthFailure.SecretIdNotFound`) and checks the region
//!    (`UnsupportedRegion`).
//! 4. [`SignedRequest::verify`] with that key and the server clock:
//!    `AuthFailure.SignatureExpire` beyond ±300 s, then
//!    `AuthFailure.SignatureFailure` (constant-time comparison).
//! 5. Rate limiting (`RequestLimitExceeded`), service side.
//! 6. [`decode_action`] turns the parameters into an [`ActionRequest`]
//!    (`MissingParameter`, `InvalidParameter`, `UnknownParameter`); value
//!    rules are the service's.
//! 7. The action's result goes out through [`success_body`].
//!
//! [`sign_tc3`], [`sign_v1`], [`flatten`] and [`form_urlencode`] are
//! the client side of the same protocol, for the CLI and the tests.
//!
//! ```
//! use tcapi::*;
//!
//! let body = br#"{"ImageIds": ["img-gvbnzy6f"]}"#;
//! let (host, ts) = ("http://127.0.0.1:18083", 1_700_000_000);
//! let authz = sign_tc3("AKIDexample", "secret", &Tc3Request {
//!     host, content_type: "application/json", raw_query: "", payload: body,
//!     method: "POST", timestamp: ts, service: "cvm", extra_signed: &[],
//! });
//! let ts_text = ts.to_string();
//! let headers = [
//!     ("Host", host),
//!     ("Content-Type", "application/json"),
//!     ("X-TC-Action", "DescribeImages"),
//!     ("X-TC-Version", "2017-03-12"),
//!     ("X-TC-Timestamp", ts_text.as_str()),
//!     ("Authorization", authz.as_str()),
//! ];
//! let raw = RawRequest { method: "POST", raw_query: "", headers: &headers, body };
//!
//! check_size(raw.method, Some("application/json"), raw.raw_query.len(), raw.body.len())?;
//! let req = decode(&raw).map_err(|(err, _lang)| err)?;
//! assert_eq!(req.secret_id, "AKIDexample"); // the service looks the key up by this
//! req.verify(&raw, "secret", ts + 5)?;
//! let ActionRequest::DescribeImages(d) = decode_action(&req.action, &req.params)? else {
//!     unreachable!()
//! };
//! assert_eq!(d.image_ids, Some(vec!["img-gvbnzy6f".to_string()]));
//! let reply = success_body(serde_json::json!({"TotalCount": 0, "ImageSet": []}), "71e69b56-32be-4412-ab45-49eded6a87be");
//! assert!(reply.starts_with(r#"{"Response":{"TotalCount":0"#));
//! # Ok::<(), ApiError>(())
//! ```

#![forbid(unsafe_code)]

pub mod actions;
pub mod client;
pub mod decode;
pub mod envelope;
pub mod error;
pub mod params;
pub mod request;
mod sign;

pub use actions::*;
pub use client::{flatten, form_urlencode, sign_tc3, sign_v1, Tc3Request};
pub use decode::decode_action;
pub use envelope::{error_body, success_body};
pub use error::{ApiError, Language};
pub use params::{Origin, Params, Value};
pub use request::{check_size, decode, decode_deferred, Binding, RawRequest, SignedRequest};
pub use sign::SignatureMethod;
