//! Image sources: from an `ImageUrl` to the bytes of the image.
//!
//! - [`url`]: which object a URL names and whether it may be fetched (pure);
//! - [`netpolicy`]: which addresses a download may connect to, enforced at
//!   connect time and on every redirect;
//! - [`spool`]: the download as it arrives, in memory or in a local file,
//!   readable while arriving, hashed on the way through;
//! - [`fetch`]: getting the bytes from `cos_root`, an S3-compatible
//!   `cos_endpoint` or http(s), with resume, stall and length checks.

pub mod fetch;
pub mod netpolicy;
pub mod spool;
pub mod url;

pub use fetch::{
    start_fetch, start_fetch_with, FetchError, FetchHandle, FetchOptions, FetchOutcome,
};
pub use netpolicy::{refused_range, NetPolicy, PolicyRefusal};
pub use spool::{FetchProgress, Spool, SpoolTuning};
pub use url::{cos_host, parse_image_url, CosHost, ImageSource, UrlError};
