//! The operator's endpoints: `GET /healthz` (the process answers),
//! `GET /readyz` (the catalog answers, its migrations are applied, the blob
//! store answers) and `GET /metrics` (Prometheus text format; see
//! `metrics`). They are served beside the API's `/`, or on their own
//! `ops_listen` address (also by a `worker`-only process); `server`
//! assembles the routers.
//!
//! Unauthenticated, so cheap: /readyz and the catalog's job counts in
//! /metrics are computed at most once per [`FRESH`] and shared by every caller meanwhile
//! (one computation at a time; the others wait for it, bounded by
//! [`CHECK_TIMEOUT`]).
//!
//! None of them needs credentials, so none of them may reveal one: error
//! texts pass through [`redact`] before they reach a body or a log.

use crate::blobstore::BlobStore;
use crate::catalog::Catalog;
use crate::metrics::{self, ScrapeFacts};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a computed /readyz or /metrics answer is served again.
pub const FRESH: Duration = Duration::from_secs(1);

/// How long each readiness check (and the scrape's catalog query) may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the operator's endpoints look at, and their cached answers.
pub struct Ops {
    catalog: Catalog,
    blobs: Arc<dyn BlobStore>,
    ready: Cached<(StatusCode, String)>,
    /// The catalog's job counts (the counters themselves are in memory).
    job_counts: Cached<Option<Vec<(crate::domain::TaskState, i64)>>>,
}

impl Ops {
    pub fn new(catalog: Catalog, blobs: Arc<dyn BlobStore>) -> Arc<Ops> {
        Arc::new(Ops {
            catalog,
            blobs,
            ready: Cached::default(),
            job_counts: Cached::default(),
        })
    }
}

/// One answer, recomputed when older than [`FRESH`].
struct Cached<T> {
    slot: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached {
            slot: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone> Cached<T> {
    async fn get<F: Future<Output = T>>(&self, make: impl FnOnce() -> F) -> T {
        let mut slot = self.slot.lock().await;
        if let Some((at, v)) = &*slot {
            if at.elapsed() < FRESH {
                return v.clone();
            }
        }
        let v = make().await;
        *slot = Some((Instant::now(), v.clone()));
        v
    }
}

/// `/healthz` alone: the API listener keeps it when the others move to
/// `ops_listen`.
pub fn health_router() -> Router {
    Router::new().route("/healthz", get(healthz))
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ops)
        .merge(health_router())
}

async fn healthz() -> Response {
    text_response(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
}

/// One readiness check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub error: Option<String>,
    /// Extra facts for the body (applied migrations, store description).
    pub facts: Value,
}

/// What `/readyz` found.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub checks: Vec<Check>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|c| c.error.is_none())
    }

    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.error.is_some())
            .map(|c| c.name)
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let mut checks = serde_json::Map::new();
        for c in &self.checks {
            let mut v = json!({ "ok": c.error.is_none() });
            if let Some(e) = &c.error {
                v["error"] = Value::String(e.clone());
            }
            if let Value::Object(facts) = &c.facts {
                for (k, f) in facts {
                    v[k] = f.clone();
                }
            }
            checks.insert(c.name.to_string(), v);
        }
        json!({
            "status": if self.ready() { "ready" } else { "unavailable" },
            "failed": self.failed(),
            "checks": checks,
        })
    }
}

async fn within<T, E: std::fmt::Display>(
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(redact(&e.to_string())),
        Err(_) => Err(format!(
            "no answer within {} s",
            CHECK_TIMEOUT.as_secs_f64()
        )),
    }
}

/// Runs the three checks at once.
pub async fn readiness(state: &Ops) -> Readiness {
    let catalog = async {
        let r = within(state.catalog.ping()).await;
        Check {
            name: "catalog",
            error: r.err(),
            facts: json!({ "backend": format!("{:?}", state.catalog.backend()).to_lowercase() }),
        }
    };
    let migrations = async {
        let expected = state.catalog.migration_versions();
        let applied = within(state.catalog.applied_migrations()).await;
        let error = match &applied {
            Err(e) => Some(e.clone()),
            Ok(applied) => {
                let missing: Vec<i64> = expected
                    .iter()
                    .copied()
                    .filter(|v| !applied.contains(v))
                    .collect();
                (!missing.is_empty()).then(|| format!("migrations not applied: {missing:?}"))
            }
        };
        Check {
            name: "migrations",
            error,
            facts: json!({ "expected": expected, "applied": applied.unwrap_or_default() }),
        }
    };
    let blobs = async {
        let r = within(state.blobs.check()).await;
        Check {
            name: "blobs",
            error: r.err(),
            facts: json!({ "store": state.blobs.describe() }),
        }
    };
    let (a, b, c) = tokio::join!(catalog, migrations, blobs);
    Readiness {
        checks: vec![a, b, c],
    }
}

/// Last readiness seen, so a failing probe polled every few seconds logs
/// once per change rather than once per poll. 0 unknown, 1 ready, 2 not.
static LAST_READY: AtomicU8 = AtomicU8::new(0);

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let (status, body) = ops.ready.get(|| ready_answer(&ops)).await;
    text_response(status, "application/json", body)
}

async fn ready_answer(ops: &Ops) -> (StatusCode, String) {
    let r = readiness(ops).await;
    let now = if r.ready() { 1 } else { 2 };
    if LAST_READY.swap(now, Ordering::Relaxed) != now {
        if r.ready() {
            tracing::info!("ready");
        } else {
            let details: Vec<String> = r
                .checks
                .iter()
                .filter_map(|c| c.error.as_ref().map(|e| format!("{}: {e}", c.name)))
                .collect();
            tracing::warn!(failed = ?r.failed(), details = %details.join("; "), "not ready");
        }
    }
    let status = if r.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, r.to_json().to_string())
}

async fn metrics_text(State(ops): State<Arc<Ops>>) -> Response {
    let job_counts = ops
        .job_counts
        .get(|| async { within(ops.catalog.job_counts()).await.ok() })
        .await;
    let facts = ScrapeFacts {
        job_counts,
        rss_bytes: metrics::process_rss_bytes(),
    };
    text_response(
        StatusCode::OK,
        METRICS_CONTENT_TYPE,
        metrics::global().render(&facts),
    )
}

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Names whose values are credentials wherever they appear as `name=value`
/// (query strings, header dumps in error texts).
const SECRET_NAMES: &[&str] = &[
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "secretkey",
    "secret_key",
    "password",
    "token",
];

/// Hides credentials in an error text: URL passwords (`scheme://user:pw@`),
/// `Authorization` header values, and the values of [`SECRET_NAMES`].
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // `://user:password@host`
        if lower[i..].starts_with("://") {
            let rest = &text[i + 3..];
            let end = rest
                .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
                .unwrap_or(rest.len());
            if let Some(at) = rest[..end].rfind('@') {
                if let Some(colon) = rest[..at].find(':') {
                    out.push_str("://");
                    out.push_str(&rest[..colon]);
                    out.push_str(":***@");
                    i += 3 + at + 1;
                    continue;
                }
            }
        }
        if lower[i..].starts_with("authorization:") {
            out.push_str(&text[i..i + "authorization:".len()]);
            out.push_str(" ***");
            i += "authorization:".len();
            let rest = &text[i..];
            let end = rest.find(['\n', '"']).unwrap_or(rest.len());
            i += end;
            continue;
        }
        let at_word_start = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'-'
                || bytes[i - 1] == b'_');
        if at_word_start {
            if let Some(name) = SECRET_NAMES
                .iter()
                .find(|n| lower[i..].starts_with(*n) && lower[i + n.len()..].starts_with('='))
            {
                let n = name.len() + 1;
                out.push_str(&text[i..i + n]);
                out.push_str("***");
                i += n;
                let rest = &text[i..];
                let end = rest
                    .find(|c: char| {
                        c == '&' || c.is_whitespace() || c == '"' || c == '\'' || c == ','
                    })
                    .unwrap_or(rest.len());
                i += end;
                continue;
            }
        }
        let c = text[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(c);
        i += c.len_utf8().max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_credentials_and_keeps_the_rest() {
        assert_eq!(
            redact("error connecting to postgres://ig:hunter2@db:5432/ig: refused"),
            "error connecting to postgres://ig:***@db:5432/ig: refused"
        );
        assert_eq!(
            redact("GET http://h/b?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abcdef&x=1 failed"),
            "GET http://h/b?X-Amz-Credential=***&X-Amz-Signature=***&x=1 failed"
        );
        assert_eq!(
            redact("headers: Authorization: TC3-HMAC-SHA256 Credential=AKID/x, Signature=ff\nnext"),
            "headers: Authorization: ***\nnext"
        );
        assert_eq!(redact("Signature=ff, other"), "Signature=***, other");
        assert_eq!(
            redact("no secrets in «this» text"),
            "no secrets in «this» text"
        );
        // A name merely ending in a secret name is left alone.
        assert_eq!(redact("mytoken=1"), "mytoken=1");
    }
}
