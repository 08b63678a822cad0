//! The network front shared by the API and the operator's listener: our own
//! accept loop on hyper (instead of `axum::serve`) so that every connection
//! is counted, timed and, when the process is full, shed.
//!
//! - `settings`: the `[net]` and `[tls]` config sections.
//! - `conns`: the connection table (cap, eviction, per-connection clocks).
//! - `serve`: accept loop, per-connection watchdog, graceful shutdown.
//! - `tls`: rustls server config from PEM files.

pub mod conns;
pub mod serve;
pub mod settings;
pub mod tls;

pub use serve::{serve, Listener};
pub use settings::{NetConfig, TlsConfig};
