//! Image sources: from an `ImageUrl` to the bytes of the image.
//!
//! - [`url`]: which object a URL names and whether it may be fetched (pure);
//! - [`hosts`]: COS host names and IP literals taken apart (pure);
//! - [`netpolicy`]: which addresses a download may connect to, enforced at
//!   connect time and on every redirect;
//! - [`spool`]: the download as it arrives, in memory or in a local file,
//!   readable while arriving, hashed on the way through;
//! - [`fetch`]: what a fetch promises and its entry points, carried out by
//!   [`local`] (the `cos_root` folder), [`remote`] (one GET over http(s) or
//!   from an S3-compatible `cos_endpoint`), [`download`] (the transfer, its
//!   resumes and retries) and [`resume`] (continuing an earlier process's
//!   spool).

mod download;
pub mod fetch;
pub mod hosts;
mod local;
pub mod netpolicy;
mod remote;
mod resume;
pub mod spool;
pub mod url;

pub use fetch::{
    start_fetch, start_fetch_with, FetchError, FetchHandle, FetchOptions, FetchOutcome,
};
pub use hosts::{cos_host, CosHost};
pub use netpolicy::{refused_range, NetPolicy, PolicyRefusal};
pub use spool::{FetchProgress, Spool, SpoolTuning};
pub use url::{parse_image_url, ImageSource, UrlError};
