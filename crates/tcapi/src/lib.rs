//! Tencent Cloud API 3.0 wire protocol for the CVM image actions.
//!
//! No I/O and no business rules: signature checking (TC3-HMAC-SHA256 and the
//! legacy HmacSHA1/HmacSHA256), decoding GET query / form / JSON bodies into
//! one parameter tree, typed action requests, and the response envelope.

pub mod actions;
pub mod error;

pub use actions::*;
pub use error::{ApiError, Language};
