//! imagegate: a self-hosted image service speaking Tencent Cloud's CVM image
//! API. This crate holds the service and its command-line interface.

pub mod config;
pub mod source;
