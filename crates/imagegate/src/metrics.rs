//! Process-wide counters for `GET /metrics`, written out in Prometheus' text
//! exposition format 0.0.4.
//!
//! One registry per process (like the `prometheus` crates' default one): the
//! HTTP front and the import workers of a process report into it without
//! threading a handle through every constructor. Label values are bounded:
//! actions outside the known list are reported as `other`, and a metric
//! stops growing new series past [`MAX_SERIES`] (folded into `other`), so no
//! client can make the registry grow without end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::domain::{FailureCode, ImageState, TaskState};

/// Series per labelled metric before new label sets are folded into `other`.
pub const MAX_SERIES: usize = 512;

/// Request latency buckets (seconds): API calls take milliseconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Import duration buckets (seconds): imports take seconds to hours.
const IMPORT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

#[derive(Clone)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(n: usize) -> Histogram {
        Histogram {
            buckets: vec![0; n],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, bounds: &[f64], v: f64) {
        // Buckets are stored non-cumulative; rendering accumulates them.
        if let Some(i) = bounds.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

type Labels = Vec<String>;

/// A counter or histogram family keyed by label values.
struct Family<T> {
    series: Mutex<BTreeMap<Labels, T>>,
}

impl<T: Clone> Family<T> {
    fn new() -> Family<T> {
        Family {
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn with(&self, labels: Labels, init: impl FnOnce() -> T, f: impl FnOnce(&mut T)) {
        let Ok(mut map) = self.series.lock() else {
            return;
        };
        let key = if map.contains_key(&labels) || map.len() < MAX_SERIES {
            labels
        } else {
            vec!["other".to_string(); labels.len()]
        };
        f(map.entry(key).or_insert_with(init));
    }

    fn snapshot(&self) -> Vec<(Labels, T)> {
        self.series
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// The registry.
pub struct Metrics {
    requests: Family<u64>,
    request_duration: Family<Histogram>,
    imports: Family<u64>,
    import_duration: Family<Histogram>,
    attempts_abandoned: Family<u64>,
    bytes_fetched: AtomicU64,
    bytes_written: AtomicU64,
    /// Heartbeats that wrote an import's progress to the catalog.
    progress_writes: AtomicU64,
    /// Requests the node's own rate-limit bucket decided because the shared
    /// buckets (PostgreSQL) did not answer.
    shared_limit_unavailable: AtomicU64,
    leases_held: AtomicI64,
}

/// The process's registry.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The action label: a known action's name, `other` for any other name (the
/// client chose it), empty when the request never got as far as naming one.
pub fn action_label(action: Option<&str>) -> &str {
    match action {
        None => "",
        Some(a) if tcapi::ACTIONS.contains(&a) => a,
        Some(_) => "other",
    }
}

/// Values the workers and the scrape handler read from elsewhere (the
/// catalog, `/proc`) at scrape time.
#[derive(Debug, Default, Clone)]
pub struct ScrapeFacts {
    /// Import jobs per state (from the catalog); `None` if it did not answer.
    pub job_counts: Option<Vec<(TaskState, i64)>>,
    /// Resident set size in bytes, if known.
    pub rss_bytes: Option<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: Family::new(),
            request_duration: Family::new(),
            imports: Family::new(),
            import_duration: Family::new(),
            attempts_abandoned: Family::new(),
            bytes_fetched: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            progress_writes: AtomicU64::new(0),
            shared_limit_unavailable: AtomicU64::new(0),
            leases_held: AtomicI64::new(0),
        }
    }

    /// One API request: its action label (see [`action_label`]), its error
    /// code (`Success` when none) and how long it took.
    pub fn observe_request(&self, action: &str, code: &str, elapsed: Duration) {
        self.requests.with(
            vec![action.to_string(), code.to_string()],
            || 0,
            |n| *n += 1,
        );
        self.request_duration.with(
            vec![action.to_string()],
            || Histogram::new(REQUEST_BUCKETS.len()),
            |h| h.observe(REQUEST_BUCKETS, elapsed.as_secs_f64()),
        );
    }

    /// An import reached a final state (`NORMAL`, or `IMPORTFAILED` with its
    /// failure code), `elapsed` being its last attempt's run time.
    pub fn import_finished(&self, state: ImageState, code: Option<FailureCode>, elapsed: Duration) {
        let code = code.map_or("", FailureCode::as_str);
        self.imports
            .with(vec![state.to_string(), code.to_string()], || 0, |n| *n += 1);
        self.import_duration.with(
            vec![state.to_string()],
            || Histogram::new(IMPORT_BUCKETS.len()),
            |h| h.observe(IMPORT_BUCKETS, elapsed.as_secs_f64()),
        );
    }

    /// An attempt ended without an outcome: `released` (shutdown handed it
    /// back to the queue) or `lease_lost` (another node took it over).
    pub fn attempt_abandoned(&self, reason: &str) {
        self.attempts_abandoned
            .with(vec![reason.to_string()], || 0, |n| *n += 1);
    }

    /// Source bytes received (or read from `cos_root`) by imports.
    pub fn add_bytes_fetched(&self, n: u64) {
        self.bytes_fetched.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes written to the blob store by imports.
    pub fn add_bytes_written(&self, n: u64) {
        self.bytes_written.fetch_add(n, Ordering::Relaxed);
    }

    /// One write of an import's progress (and lease) to the catalog.
    pub fn progress_written(&self) {
        self.progress_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// A request admitted by the node's own bucket alone: the shared rate
    /// limits did not answer (or were paused after not answering).
    pub fn shared_limit_unavailable(&self) {
        self.shared_limit_unavailable
            .fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests [`Metrics::shared_limit_unavailable`] counted.
    pub fn shared_limit_unavailable_total(&self) -> u64 {
        self.shared_limit_unavailable.load(Ordering::Relaxed)
    }

    /// Counts a lease held by this process until the guard is dropped.
    pub fn hold_lease(&'static self) -> LeaseGuard {
        self.leases_held.fetch_add(1, Ordering::Relaxed);
        LeaseGuard(self)
    }

    pub fn leases_held(&self) -> i64 {
        self.leases_held.load(Ordering::Relaxed)
    }

    /// The exposition text.
    pub fn render(&self, facts: &ScrapeFacts) -> String {
        let mut out = String::with_capacity(4096);
        self.render_api(&mut out);
        self.render_imports(&mut out);
        self.render_totals(&mut out);
        render_scrape_facts(&mut out, facts);
        header(
            &mut out,
            "imagegate_build_info",
            "gauge",
            "Always 1; the version label names the running build.",
        );
        sample(
            &mut out,
            "imagegate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        out
    }

    /// Requests by action and code, and their latency.
    fn render_api(&self, out: &mut String) {
        header(
            out,
            "imagegate_requests_total",
            "counter",
            "API requests by action and error code (Success when none).",
        );
        for (labels, n) in self.requests.snapshot() {
            sample(
                out,
                "imagegate_requests_total",
                &[("action", &labels[0]), ("code", &labels[1])],
                n as f64,
            );
        }
        histogram(
            out,
            "imagegate_request_duration_seconds",
            "API request latency by action.",
            "action",
            REQUEST_BUCKETS,
            &self.request_duration.snapshot(),
        );
    }

    /// Finished imports, their run time, and abandoned attempts.
    fn render_imports(&self, out: &mut String) {
        header(
            out,
            "imagegate_imports_total",
            "counter",
            "Imports that reached a final state, by state and failure code (empty when NORMAL).",
        );
        for (labels, n) in self.imports.snapshot() {
            sample(
                out,
                "imagegate_imports_total",
                &[("state", &labels[0]), ("code", &labels[1])],
                n as f64,
            );
        }
        histogram(
            out,
            "imagegate_import_duration_seconds",
            "Run time of the attempt that finished an import, by final state.",
            "state",
            IMPORT_BUCKETS,
            &self.import_duration.snapshot(),
        );
        header(
            out,
            "imagegate_import_attempts_abandoned_total",
            "counter",
            "Import attempts stopped without an outcome: released (shutdown) or lease_lost.",
        );
        for (labels, n) in self.attempts_abandoned.snapshot() {
            sample(
                out,
                "imagegate_import_attempts_abandoned_total",
                &[("reason", &labels[0])],
                n as f64,
            );
        }
    }

    /// This process's byte and write counters, and the leases it holds.
    fn render_totals(&self, out: &mut String) {
        for (name, help, v) in [
            (
                "imagegate_import_bytes_fetched_total",
                "Source bytes fetched (or read from cos_root) by this process's imports.",
                self.bytes_fetched.load(Ordering::Relaxed),
            ),
            (
                "imagegate_import_bytes_written_total",
                "Bytes written to the blob store by this process's imports.",
                self.bytes_written.load(Ordering::Relaxed),
            ),
            (
                "imagegate_import_progress_writes_total",
                "Writes of import progress and leases to the catalog by this process's workers.",
                self.progress_writes.load(Ordering::Relaxed),
            ),
            (
                "imagegate_rate_limit_shared_unavailable_total",
                "Requests admitted by this node's own rate-limit bucket alone because the shared buckets in PostgreSQL did not answer.",
                self.shared_limit_unavailable.load(Ordering::Relaxed),
            ),
        ] {
            header(out, name, "counter", help);
            sample(out, name, &[], v as f64);
        }
        header(
            out,
            "imagegate_import_leases_held",
            "gauge",
            "Import jobs this process holds a lease on (running imports).",
        );
        sample(
            out,
            "imagegate_import_leases_held",
            &[],
            self.leases_held() as f64,
        );
    }
}

/// What this scrape read from outside the process: the catalog's job counts
/// (cached, see `ops.rs`) and the resident memory.
fn render_scrape_facts(out: &mut String, facts: &ScrapeFacts) {
    if let Some(counts) = &facts.job_counts {
        let queued = counts
            .iter()
            .filter(|(s, _)| *s == TaskState::Queued)
            .map(|(_, n)| *n)
            .sum::<i64>();
        header(
            out,
            "imagegate_import_queue_depth",
            "gauge",
            "Import jobs waiting to be claimed (QUEUED), across all nodes.",
        );
        sample(out, "imagegate_import_queue_depth", &[], queued as f64);
        header(
            out,
            "imagegate_import_jobs",
            "gauge",
            "Import jobs in the catalog by job state, across all nodes.",
        );
        for (state, n) in counts {
            sample(
                out,
                "imagegate_import_jobs",
                &[("state", state.as_str())],
                *n as f64,
            );
        }
    }
    header(
        out,
        "imagegate_catalog_up",
        "gauge",
        "1 if the catalog answered the queue-depth query of this scrape.",
    );
    sample(
        out,
        "imagegate_catalog_up",
        &[],
        if facts.job_counts.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(rss) = facts.rss_bytes {
        header(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        sample(out, "process_resident_memory_bytes", &[], rss as f64);
    }
}

/// Releases one count of `imagegate_import_leases_held` when dropped.
pub struct LeaseGuard(&'static Metrics);

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.0.leases_held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// This process's resident set size, from `/proc/self/status` (Linux).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], v: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(out, val);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    push_value(out, v);
    out.push('\n');
}

fn push_value(out: &mut String, v: f64) {
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    bounds: &[f64],
    series: &[(Labels, Histogram)],
) {
    header(out, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    for (labels, h) in series {
        let mut cumulative = 0u64;
        for (i, b) in bounds.iter().enumerate() {
            cumulative += h.buckets[i];
            let le = format!("{b}");
            sample(
                out,
                &bucket,
                &[(label, &labels[0]), ("le", &le)],
                cumulative as f64,
            );
        }
        sample(
            out,
            &bucket,
            &[(label, &labels[0]), ("le", "+Inf")],
            h.count as f64,
        );
        sample(out, &format!("{name}_sum"), &[(label, &labels[0])], h.sum);
        sample(
            out,
            &format!("{name}_count"),
            &[(label, &labels[0])],
            h.count as f64,
        );
    }
}

#[cfg(test)]
mod tests;
