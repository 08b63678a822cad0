//! `imagegate images export`: ExportImages, and with `--wait` the task
//! followed through DescribeExportImageTasks to its end (a bar on a
//! terminal, plain lines otherwise, like `images watch`). Exit 0 when every
//! object is in the bucket, 1 when the export failed or was cancelled.
//! With `--json`: the API's reply, or with `--wait` one document when the
//! task ends, `{"ExportImageTask": …}`, and no progress.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use super::api::{ApiClient, CallError};
use super::render::{field, human_bytes, number};
use super::{parse_interval, pretty, request_id, Display, Io, EXIT_FAILED, EXIT_OK};

#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// Image IDs (img-…) to export.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Your bucket, `<name>-<appid>`.
    #[arg(long)]
    pub bucket: String,
    /// Format of the exported files.
    #[arg(long, default_value = "RAW", value_parser = ["RAW", "QCOW2", "VHD", "VMDK"], ignore_case = true)]
    pub format: String,
    /// File name prefix, one per image (repeat in the order of the IDs).
    #[arg(long = "prefix", value_name = "PREFIX")]
    pub prefixes: Vec<String>,
    /// The system disk only (data disks are exported too by default).
    #[arg(long)]
    pub only_root_disk: bool,
    /// Only check the request (nothing is exported).
    #[arg(long)]
    pub dry_run: bool,
    /// Follow the export until it ends.
    #[arg(long)]
    pub wait: bool,
    /// Seconds between polls with --wait.
    #[arg(long, default_value = "1", value_parser = parse_interval, value_name = "SECONDS")]
    pub interval: Duration,
}

/// Give up after this many failed polls in a row.
const MAX_CONSECUTIVE_ERRORS: u32 = 30;

pub async fn export(client: &ApiClient, a: ExportArgs, io: &mut Io<'_>) -> Result<i32, CallOrIo> {
    let mut params = json!({
        "ImageIds": a.ids,
        "BucketName": a.bucket,
        "ExportFormat": a.format.to_ascii_uppercase(),
        "OnlyExportRootDisk": a.only_root_disk,
        "DryRun": a.dry_run,
    });
    if !a.prefixes.is_empty() {
        params["FileNamePrefixList"] = json!(a.prefixes);
    }
    let resp = client.call("ExportImages", &params).await?;
    let json_only = io.display == Display::Json;
    // With --wait (and a real export) the one document comes at the end.
    let follows = a.wait && !a.dry_run;
    if json_only && !follows {
        writeln!(io.out, "{}", pretty(&resp))?;
    }
    if a.dry_run {
        if !json_only {
            writeln!(
                io.out,
                "DryRun passed: the export would be accepted (RequestId {})",
                request_id(&resp)
            )?;
        }
        return Ok(EXIT_OK);
    }
    let task_id = resp.get("TaskId").and_then(Value::as_i64).unwrap_or(0);
    if !json_only {
        writeln!(
            io.out,
            "Exporting to {} as task {task_id} (RequestId {}):",
            a.bucket,
            request_id(&resp)
        )?;
        for p in resp
            .get("CosPaths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            writeln!(io.out, "  {}", p.as_str().unwrap_or_default())?;
        }
    }
    io.out.flush()?;
    if !a.wait {
        return Ok(EXIT_OK);
    }
    wait(client, task_id, a.interval, io).await
}

/// Why the command stopped: the API refused (printed by the caller) or the
/// terminal failed.
pub enum CallOrIo {
    Call(CallError),
    Io(std::io::Error),
}

impl From<CallError> for CallOrIo {
    fn from(e: CallError) -> Self {
        CallOrIo::Call(e)
    }
}

impl From<std::io::Error> for CallOrIo {
    fn from(e: std::io::Error) -> Self {
        CallOrIo::Io(e)
    }
}

/// Fits 80 columns.
const BAR_TEMPLATE: &str =
    "{spinner} {msg:10} [{bar:24}] {percent:>3}% {bytes}/{total_bytes} ({eta})";

/// Follow task `task_id` to its end; returns the exit code.
pub async fn wait(
    client: &ApiClient,
    task_id: i64,
    interval: Duration,
    io: &mut Io<'_>,
) -> Result<i32, CallOrIo> {
    let json_only = io.display == Display::Json;
    let mut shown = Shown::default();
    let mut errors = 0u32;
    let code = loop {
        let task = match poll(client, task_id).await {
            Ok(Some(t)) => {
                errors = 0;
                t
            }
            Ok(None) => {
                let msg = format!("export task {task_id} is not listed");
                super::print_error(io, "InvalidParameterValue", &msg, None)?;
                break EXIT_FAILED;
            }
            Err(e) if e.is_transient() && errors + 1 < MAX_CONSECUTIVE_ERRORS => {
                errors += 1;
                if !json_only {
                    writeln!(io.err, "{e} (retrying)")?;
                }
                tokio::time::sleep(interval).await;
                continue;
            }
            Err(e) => {
                finish(&mut shown.bar);
                return Err(CallOrIo::Call(e));
            }
        };
        let state = field(&task, "TaskState").to_string();
        shown.show(io, &task, &state)?;
        let ended = matches!(state.as_str(), "SUCCEEDED" | "FAILED" | "CANCELLED");
        if json_only && ended {
            writeln!(io.out, "{}", pretty(&json!({ "ExportImageTask": task })))?;
            break if state == "SUCCEEDED" {
                EXIT_OK
            } else {
                EXIT_FAILED
            };
        }
        match state.as_str() {
            "SUCCEEDED" => {
                finish(&mut shown.bar);
                writeln!(
                    io.out,
                    "Export task {task_id} SUCCEEDED: every object is in the bucket."
                )?;
                break EXIT_OK;
            }
            "FAILED" | "CANCELLED" => {
                finish(&mut shown.bar);
                writeln!(
                    io.err,
                    "Export task {task_id} {state}: {} {}",
                    field(&task, "FailureCode"),
                    field(&task, "FailureMessage")
                )?;
                break EXIT_FAILED;
            }
            _ => tokio::time::sleep(interval).await,
        }
    };
    finish(&mut shown.bar);
    Ok(code)
}

/// What the watch has shown so far: the bar, or the last plain line.
#[derive(Default)]
struct Shown {
    bar: Option<ProgressBar>,
    last_line: String,
}

impl Shown {
    /// One poll's progress, in the display's form (JSON shows only the end).
    fn show(&mut self, io: &mut Io<'_>, task: &Value, state: &str) -> std::io::Result<()> {
        let done = number(task, "GuestBytesDone").unwrap_or(0);
        let total = number(task, "GuestBytesTotal").unwrap_or(0);
        let percent = number(task, "Percent").unwrap_or(0);
        match io.display {
            Display::Bar => {
                let b = self.bar.get_or_insert_with(new_bar);
                if total > 0 {
                    b.set_length(total);
                }
                b.set_position(done);
                b.set_message(state.to_string());
            }
            Display::Plain => {
                let line = format!(
                    "{state} {percent}% ({} of {} guest data, {} written)",
                    human_bytes(done),
                    human_bytes(total),
                    human_bytes(number(task, "BytesWritten").unwrap_or(0))
                );
                if line != self.last_line {
                    writeln!(io.out, "{line}")?;
                    io.out.flush()?;
                    self.last_line = line;
                }
            }
            Display::Json => {}
        }
        Ok(())
    }
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
    if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn finish(bar: &mut Option<ProgressBar>) {
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
}

async fn poll(client: &ApiClient, task_id: i64) -> Result<Option<Value>, CallError> {
    let resp = client
        .call("DescribeExportImageTasks", &json!({ "TaskIds": [task_id] }))
        .await?;
    Ok(resp
        .get("ExportImageTaskSet")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
        .cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }
}
