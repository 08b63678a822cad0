//! imagegate: a self-hosted image service speaking Tencent Cloud's CVM image
//! API. This crate holds the service and its command-line interface.

// No unsafe code, except where a module says why it needs some.
#![deny(unsafe_code)]
// The crate's documentation is for whoever works on the service, read with
// `cargo doc --document-private-items`: module overviews link their private parts.
#![allow(rustdoc::private_intra_doc_links)]

pub mod accounts;
// `mallopt` has no safe wrapper; one call at start-up (see the module).
#[allow(unsafe_code)]
pub mod alloc_tuning;
pub mod api;
pub mod blobstore;
pub mod catalog;
// Its clap doc comments are the CLI's --help text, `<placeholders>` and bare URLs included.
#[allow(rustdoc::invalid_html_tags, rustdoc::bare_urls)]
pub mod client;
pub mod config;
pub mod console;
pub mod directio;
pub mod domain;
pub mod export;
pub mod inspect_cmd;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod oslist;
pub mod pipeline;
pub mod private_fs;
pub mod redact;
pub mod retry;
pub mod s3;
pub mod server;
pub mod source;
pub mod storage;
