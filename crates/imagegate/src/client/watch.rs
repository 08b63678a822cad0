//! Following an import to its end (`images watch`, `images import --wait`).
//!
//! Polls the extension action DescribeImportImageTasks for progress and, when
//! the task says the import is over (or the server has no such action, like
//! the real cloud), DescribeImages for the image's own state, which is the
//! authority: NORMAL ends with exit 0, IMPORTFAILED with exit 1 and the reason.
//! On a terminal the progress is an indicatif bar (phase, bytes, rate, ETA);
//! otherwise one plain line each time the state, phase or percent changes;
//! with `--json` nothing until the end, then one JSON document.

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use super::api::{ApiClient, CallError};
use super::render::{failure_text, field, human_bytes, number, progress_line};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A live bar on the terminal (stdout).
    Bar,
    /// Plain lines, for pipes and logs.
    Plain,
    /// No progress; one JSON document on stdout at the end (`--json`).
    Json,
}

/// Where output goes. Tests capture both streams.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub display: Display,
}

/// Give up after this many failed polls in a row (about a minute of outage
/// at the default interval): a watch should ride out a server restart, not
/// hang forever.
const MAX_CONSECUTIVE_ERRORS: u32 = 30;

/// Error codes meaning "this server does not know the extension action".
fn unsupported(e: &CallError) -> bool {
    matches!(
        e.code(),
        Some("InvalidAction" | "UnsupportedOperation" | "ActionOffline")
    )
}

/// How far back the rate looks: long enough that one late poll does not
/// swing it, short enough to follow a source that speeds up or slows down.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Transfer rate from the observations of the bytes fetched over the last
/// [`RATE_WINDOW`] (a moving window: the bytes that arrived in it over the
/// time it spans).
#[derive(Default)]
struct RateMeter {
    /// Oldest first, never older than the window (except the one sample
    /// that starts it).
    samples: std::collections::VecDeque<(Instant, u64)>,
    /// Bytes per second over the window; kept while the window is too
    /// short to tell.
    rate: Option<f64>,
}

impl RateMeter {
    fn observe(&mut self, at: Instant, bytes: u64) {
        if self.samples.back().is_some_and(|&(_, b)| bytes < b) {
            // The counter went back (a new attempt): start a new window.
            self.samples.clear();
        }
        self.samples.push_back((at, bytes));
        // Keep one sample at or before the window's start, so the window
        // always spans the whole period when enough was seen.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, _)| at.duration_since(t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        if let (Some(&(t0, b0)), Some(&(t1, b1))) = (self.samples.front(), self.samples.back()) {
            let dt = t1.duration_since(t0).as_secs_f64();
            if dt > 0.0 {
                self.rate = Some((b1 - b0) as f64 / dt);
            }
        }
    }
}

/// ", 12.0 MiB/s, ETA 1m05s" when a rate is known.
pub fn rate_suffix(rate: Option<f64>, fetched: Option<u64>, total: Option<u64>) -> String {
    let Some(r) = rate.filter(|r| *r >= 1.0) else {
        return String::new();
    };
    let mut out = format!(", {}/s", human_bytes(r as u64));
    if let (Some(f), Some(t)) = (fetched, total) {
        if t > f {
            let secs = ((t - f) as f64 / r).round() as u64;
            out.push_str(&format!(", ETA {}m{:02}s", secs / 60, secs % 60));
        }
    }
    out
}

struct Progress {
    display: Display,
    bar: Option<ProgressBar>,
    last_key: Option<(String, String, u64)>,
    meter: RateMeter,
}

impl Progress {
    fn new(display: Display) -> Self {
        Progress {
            display,
            bar: None,
            last_key: None,
            meter: RateMeter::default(),
        }
    }

    fn update(&mut self, io: &mut Io<'_>, task: &Value) -> std::io::Result<()> {
        let fetched = number(task, "BytesFetched");
        let total = number(task, "BytesTotal");
        if let Some(f) = fetched {
            self.meter.observe(Instant::now(), f);
        }
        match self.display {
            Display::Plain => {
                let key = (
                    field(task, "TaskState").to_string(),
                    field(task, "Phase").to_string(),
                    number(task, "Percent").unwrap_or(0),
                );
                if self.last_key.as_ref() != Some(&key) {
                    let line = progress_line(task) + &rate_suffix(self.meter.rate, fetched, total);
                    writeln!(io.out, "{line}")?;
                    io.out.flush()?;
                    self.last_key = Some(key);
                }
            }
            Display::Json => {}
            Display::Bar => {
                let bar = self.bar.get_or_insert_with(|| {
                    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
                    // The template is a constant: failing to parse it is a bug
                    // caught by the unit test below, so fall back quietly.
                    if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                if let Some(t) = total {
                    bar.set_length(t);
                }
                if let Some(f) = fetched {
                    bar.set_position(f);
                }
                // The phase says it all while the task runs (QUEUED has none).
                let phase = match field(task, "Phase") {
                    "-" => field(task, "TaskState"),
                    phase => phase,
                };
                bar.set_prefix(phase.to_string());
                // Our own windowed rate and ETA: indicatif's would count the
                // gaps between polls as a stalled transfer.
                bar.set_message(rate_suffix(self.meter.rate, fetched, total));
            }
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Fits 80 columns with a 17-character phase (INSPECTING_FORMAT); the
/// message is [`rate_suffix`].
const BAR_TEMPLATE: &str = "{spinner} {prefix:17} [{bar:16}] {bytes}/{total_bytes}{msg}";

/// How a watch ended.
enum Ended {
    /// NORMAL, IMPORTFAILED or CREATEFAILED: the image and its last task.
    Settled {
        image: Value,
        task: Option<Value>,
    },
    NotFound,
    Failed(CallError),
}

/// Follow `image_id` until its import ends; returns the exit code (0 on
/// NORMAL, 1 otherwise).
pub async fn watch(
    client: &ApiClient,
    image_id: &str,
    interval: Duration,
    io: &mut Io<'_>,
) -> std::io::Result<i32> {
    let mut progress = Progress::new(io.display);
    let ended = follow(client, image_id, interval, io, &mut progress).await;
    progress.finish();
    match ended? {
        Ended::Settled { image, task } if io.display == Display::Json => {
            let doc = json!({ "Image": image, "ImportTask": task });
            writeln!(io.out, "{}", super::pretty(&doc))?;
            Ok(if field(&image, "ImageState") == "NORMAL" {
                0
            } else {
                1
            })
        }
        Ended::Settled { image, task } => report(image_id, &image, task.as_ref(), io),
        Ended::NotFound => {
            let msg = format!("{image_id}: no such image (deleted, or another account's)");
            super::print_error(io, "InvalidImageId.NotFound", &msg, None)?;
            Ok(1)
        }
        Ended::Failed(e) => {
            super::print_call_error(io, &e)?;
            Ok(1)
        }
    }
}

/// The text end of a watch.
fn report(
    image_id: &str,
    image: &Value,
    last_task: Option<&Value>,
    io: &mut Io<'_>,
) -> std::io::Result<i32> {
    if field(image, "ImageState") == "NORMAL" {
        let mut line = format!("{image_id} is NORMAL");
        if let Some(t) = last_task {
            let mut facts = Vec::new();
            if field(t, "SourceFormat") != "-" {
                facts.push(format!("from {}", field(t, "SourceFormat")));
            }
            if let Some(v) = number(t, "VirtualSize") {
                facts.push(format!("virtual size {}", human_bytes(v)));
            }
            if field(t, "Sha256") != "-" {
                facts.push(format!("sha256 {}", field(t, "Sha256")));
            }
            if !facts.is_empty() {
                line.push_str(&format!(" ({})", facts.join(", ")));
            }
        }
        writeln!(io.out, "{line}")?;
        return Ok(0);
    }
    let code = last_task.map(|t| field(t, "FailureCode")).unwrap_or("-");
    if code == "-" {
        writeln!(
            io.err,
            "{image_id} is {}: the server gives no reason (it has no DescribeImportImageTasks); \
             check the image in the provider's console.",
            field(image, "ImageState")
        )?;
    } else {
        let msg = last_task.map(|t| field(t, "FailureMessage")).unwrap_or("-");
        write!(io.err, "{image_id}: {}", failure_text(code, msg))?;
    }
    Ok(1)
}

async fn follow(
    client: &ApiClient,
    image_id: &str,
    interval: Duration,
    io: &mut Io<'_>,
    progress: &mut Progress,
) -> std::io::Result<Ended> {
    let mut tasks_supported = true;
    let mut errors = 0u32;
    let mut last_task: Option<Value> = None;
    loop {
        let step = poll(client, image_id, &mut tasks_supported).await;
        let (task, image) = match step {
            Ok(v) => {
                errors = 0;
                v
            }
            Err(e) if e.is_transient() && errors + 1 < MAX_CONSECUTIVE_ERRORS => {
                errors += 1;
                if io.display != Display::Json && (errors == 1 || io.display == Display::Plain) {
                    progress.finish();
                    writeln!(io.err, "{e} (retrying)")?;
                }
                tokio::time::sleep(interval).await;
                continue;
            }
            Err(e) => return Ok(Ended::Failed(e)),
        };
        if let Some(t) = &task {
            progress.update(io, t)?;
            last_task = Some(t.clone());
        }
        let Some(image) = image else {
            // The task still runs; look again later.
            tokio::time::sleep(interval).await;
            continue;
        };
        match field(&image, "ImageState") {
            "NOT_FOUND" => return Ok(Ended::NotFound),
            "NORMAL" | "IMPORTFAILED" | "CREATEFAILED" => {
                return Ok(Ended::Settled {
                    image,
                    task: last_task,
                })
            }
            _ => tokio::time::sleep(interval).await,
        }
    }
}

/// One poll: the task (if the server has tasks) and, when the import looks
/// over or there is no task to tell, the image (`ImageState` `NOT_FOUND`
/// when it does not exist).
async fn poll(
    client: &ApiClient,
    image_id: &str,
    tasks_supported: &mut bool,
) -> Result<(Option<Value>, Option<Value>), CallError> {
    let ids = json!({ "ImageIds": [image_id] });
    let mut task = None;
    if *tasks_supported {
        match client.call("DescribeImportImageTasks", &ids).await {
            Ok(resp) => {
                task = resp
                    .get("ImportImageTaskSet")
                    .and_then(Value::as_array)
                    .and_then(|set| set.iter().find(|t| field(t, "ImageId") == image_id))
                    .cloned();
            }
            Err(e) if unsupported(&e) => *tasks_supported = false,
            Err(e) => return Err(e),
        }
    }
    let still_running = task.as_ref().is_some_and(|t| {
        field(t, "ImageState") == "IMPORTING"
            && matches!(field(t, "TaskState"), "QUEUED" | "RUNNING")
    });
    if still_running {
        return Ok((task, None));
    }
    let image = match client.call("DescribeImages", &ids).await {
        Ok(resp) => resp
            .get("ImageSet")
            .and_then(Value::as_array)
            .and_then(|set| set.iter().find(|i| field(i, "ImageId") == image_id))
            .cloned()
            .unwrap_or_else(|| json!({ "ImageState": "NOT_FOUND" })),
        Err(e) if e.code() == Some("InvalidImageId.NotFound") => {
            json!({ "ImageState": "NOT_FOUND" })
        }
        Err(e) => return Err(e),
    };
    Ok((task, Some(image)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn rates_and_eta() {
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        m.observe(t0, 0);
        assert_eq!(m.rate, None);
        m.observe(t0 + Duration::from_secs(2), 20 * 1024 * 1024);
        assert_eq!(m.rate, Some(10.0 * 1024.0 * 1024.0));
        assert_eq!(
            rate_suffix(m.rate, Some(20 * 1024 * 1024), Some(1220 * 1024 * 1024)),
            ", 10.0 MiB/s, ETA 2m00s"
        );
        // A counter that goes back (a restarted attempt) does not make a
        // negative rate.
        m.observe(t0 + Duration::from_secs(3), 0);
        assert_eq!(m.rate, Some(10.0 * 1024.0 * 1024.0));
        assert_eq!(rate_suffix(None, Some(1), Some(2)), "");
        assert_eq!(rate_suffix(Some(2048.0), None, None), ", 2.0 KiB/s");
    }

    #[test]
    fn the_rate_follows_the_last_window_only() {
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        // 10 MiB/s for a minute, then 1 MiB/s: within a window of the
        // change the rate is the new one, not an average of the two.
        let mut bytes = 0;
        for i in 0..=60 {
            m.observe(s(i), bytes);
            bytes += 10 << 20;
        }
        bytes -= 10 << 20;
        for i in 61..=61 + RATE_WINDOW.as_secs() {
            bytes += 1 << 20;
            m.observe(s(i), bytes);
        }
        assert_eq!(m.rate, Some((1u64 << 20) as f64));
        // Polls that see no new bytes bring the rate down within the window.
        let stuck = bytes;
        for i in 0..=RATE_WINDOW.as_secs() {
            m.observe(s(72 + i), stuck);
        }
        assert_eq!(m.rate, Some(0.0));
        assert_eq!(rate_suffix(m.rate, Some(stuck), Some(stuck * 2)), "");
    }
}
