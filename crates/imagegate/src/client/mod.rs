//! `imagegate images …`: a command-line client of the CVM image API, for an
//! imagegate endpoint or for the real cloud (the same wire protocol).
//!
//! - `credentials`: flags, `TENCENTCLOUD_*` variables, tccli profile files;
//! - `api`: one TC3-signed call, built like the official SDKs build it;
//! - `render`: tables, details and progress text;
//! - `watch`: following an import to NORMAL or IMPORTFAILED;
//! - `export`: ExportImages and following its task.
//!
//! Exit codes: 0 success; 1 the API refused, the server was unreachable, or
//! the import failed; 2 a local problem (no credentials, bad profile file,
//! bad endpoint URL).

pub mod api;
pub mod credentials;
pub mod export;
pub mod lifecycle;
pub mod render;
pub mod watch;

#[cfg(test)]
mod stub_tests;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use serde_json::{json, Value};

use api::{ApiClient, CallError};
use credentials::{Requested, Sources};
use render::field;
pub use watch::{Display, Io};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Where to send requests and with which key; shared by every `images`
/// subcommand (and accepted after it).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientOptions {
    /// API endpoint, e.g. http://127.0.0.1:9000 [default: the profile's
    /// cvm.endpoint, else https://cvm.tencentcloudapi.com]
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Region [default: $TENCENTCLOUD_REGION, else the profile's region]
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// tccli profile whose ~/.tccli/<profile>.{credential,configure} are read
    /// [default: $TCCLI_PROFILE, else "default"]
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// SecretId (prefer TENCENTCLOUD_SECRET_ID: flags show up in `ps`).
    #[arg(long, global = true, hide = true)]
    pub secret_id: Option<String>,
    /// SecretKey (prefer TENCENTCLOUD_SECRET_KEY).
    #[arg(long, global = true, hide = true)]
    pub secret_key: Option<String>,
}

// Parsed once per process: the size of the Import variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ImagesCommand {
    /// Import a disk image from an object-store URL (ImportImage).
    Import(ImportArgs),
    /// List your images (DescribeImages).
    List(ListArgs),
    /// Show one image with its import task.
    Show {
        /// Image ID (img-…).
        id: String,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete images (DeleteImages).
    Delete {
        /// Image IDs (img-…).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Only check that the deletion would be allowed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop an import in progress (CancelImportImageTask); the image then
    /// ends IMPORTFAILED with ImportCancelled and its partial data is removed.
    Cancel {
        /// Image ID (img-…).
        id: String,
    },
    /// Share an image with other accounts (ModifyImageSharePermission SHARE).
    Share(lifecycle::ShareArgs),
    /// Stop sharing an image with accounts (ModifyImageSharePermission CANCEL).
    Unshare(lifecycle::ShareArgs),
    /// List the accounts an image is shared with (DescribeImageSharePermission).
    Shares {
        /// Image ID (img-…).
        id: String,
    },
    /// Copy an image to other regions, or an image shared with you into your
    /// account (SyncImages); prints the new image ids.
    Sync(lifecycle::SyncArgs),
    /// Export images to your bucket (ExportImages); --wait follows the task.
    Export(export::ExportArgs),
    /// Follow an import until it ends; exit 0 on NORMAL, 1 on IMPORTFAILED.
    Watch {
        /// Image ID (img-…).
        id: String,
        /// Seconds between polls.
        #[arg(long, default_value = "1", value_parser = parse_interval, value_name = "SECONDS")]
        interval: Duration,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// Image URL (COS: https://<bucket>-<appid>.cos.<region>.myqcloud.com/<key>).
    #[arg(long)]
    pub url: String,
    /// Image name (at most 60 characters, unique in the region).
    #[arg(long)]
    pub name: String,
    /// OS type, as listed by DescribeImportImageOs (e.g. CentOS, Ubuntu).
    #[arg(long)]
    pub os_type: String,
    /// OS version (e.g. 7, 22.04).
    #[arg(long)]
    pub os_version: String,
    #[arg(long, default_value = "x86_64", value_parser = ["x86_64", "i386", "arm_64"])]
    pub arch: String,
    /// Skip the guest checks (cloud-init, virtio, partitions).
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_parser = ["Legacy BIOS", "UEFI"])]
    pub boot_mode: Option<String>,
    #[arg(long, value_parser = ["TencentCloud", "BYOL"])]
    pub license_type: Option<String>,
    /// A data disk image URL; repeat for several.
    #[arg(long = "data-disk", value_name = "URL")]
    pub data_disks: Vec<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long)]
    pub family: Option<String>,
    /// A tag KEY=VALUE; repeat for several.
    #[arg(long = "tag", value_parser = parse_tag, value_name = "KEY=VALUE")]
    pub tags: Vec<(String, String)>,
    /// Only check the request (nothing is imported).
    #[arg(long)]
    pub dry_run: bool,
    /// Follow the import until it ends (like `images watch`).
    #[arg(long)]
    pub wait: bool,
    /// Seconds between polls with --wait.
    #[arg(long, default_value = "1", value_parser = parse_interval, value_name = "SECONDS")]
    pub interval: Duration,
    /// Print the API's JSON reply.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    /// Only images whose name contains this text.
    #[arg(long)]
    pub name: Option<String>,
    /// At most this many images.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Skip this many images first.
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.01..=3600.0).contains(&secs) {
        return Err("the interval must be between 0.01 and 3600 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Run one `images` command against the process's environment, stdout and
/// stderr; returns the exit code. `Err` only when the terminal itself fails.
pub async fn run(opts: ClientOptions, cmd: ImagesCommand) -> anyhow::Result<i32> {
    let display = if std::io::stdout().is_terminal() {
        Display::Bar
    } else {
        Display::Plain
    };
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        display,
    };
    Ok(run_with(&opts, cmd, &Sources::process(), &mut io).await?)
}

/// [`run`] with the environment and the output given (for tests).
pub async fn run_with(
    opts: &ClientOptions,
    cmd: ImagesCommand,
    sources: &Sources<'_>,
    io: &mut Io<'_>,
) -> std::io::Result<i32> {
    let requested = Requested {
        endpoint: opts.endpoint.clone(),
        region: opts.region.clone(),
        profile: opts.profile.clone(),
        secret_id: opts.secret_id.clone(),
        secret_key: opts.secret_key.clone(),
    };
    let settings = match credentials::resolve(&requested, sources) {
        Ok(s) => s,
        Err(e) => {
            writeln!(io.err, "imagegate images: {e}")?;
            return Ok(EXIT_USAGE);
        }
    };
    let client = match ApiClient::new(settings) {
        Ok(c) => c,
        Err(e) => {
            writeln!(io.err, "imagegate images: {e}")?;
            return Ok(EXIT_USAGE);
        }
    };
    let result = match cmd {
        ImagesCommand::Import(a) => import(&client, a, io).await,
        ImagesCommand::List(a) => list(&client, a, io).await,
        ImagesCommand::Show { id, json } => show(&client, &id, json, io).await,
        ImagesCommand::Delete { ids, dry_run } => delete(&client, &ids, dry_run, io).await,
        ImagesCommand::Cancel { id } => cancel(&client, &id, io).await,
        ImagesCommand::Share(a) => lifecycle::share(&client, &a, true, io).await,
        ImagesCommand::Unshare(a) => lifecycle::share(&client, &a, false, io).await,
        ImagesCommand::Shares { id } => lifecycle::shares(&client, &id, io).await,
        ImagesCommand::Sync(a) => lifecycle::sync(&client, &a, io).await,
        ImagesCommand::Export(a) => match export::export(&client, a, io).await {
            Ok(code) => Ok(code),
            Err(export::CallOrIo::Call(e)) => Err(Failure::Call(e)),
            Err(export::CallOrIo::Io(e)) => Err(Failure::Io(e)),
        },
        ImagesCommand::Watch { id, interval } => {
            return watch::watch(&client, &id, interval, io).await;
        }
    };
    match result {
        Ok(code) => Ok(code),
        Err(Failure::Io(e)) => Err(e),
        Err(Failure::Call(e)) => {
            writeln!(io.err, "{e}")?;
            Ok(EXIT_FAILED)
        }
    }
}

/// Why a command stopped: the API (printed, exit 1) or our own output.
enum Failure {
    Call(CallError),
    Io(std::io::Error),
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Failure::Call(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

fn request_id(resp: &Value) -> &str {
    field(resp, "RequestId")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

async fn import(client: &ApiClient, a: ImportArgs, io: &mut Io<'_>) -> Result<i32, Failure> {
    let mut params = json!({
        "Architecture": a.arch,
        "OsType": a.os_type,
        "OsVersion": a.os_version,
        "ImageUrl": a.url,
        "ImageName": a.name,
    });
    let p = params.as_object_mut().expect("built as an object above");
    if let Some(d) = &a.description {
        p.insert("ImageDescription".into(), json!(d));
    }
    if a.force {
        p.insert("Force".into(), json!(true));
    }
    if a.dry_run {
        p.insert("DryRun".into(), json!(true));
    }
    if let Some(b) = &a.boot_mode {
        p.insert("BootMode".into(), json!(b));
    }
    if let Some(l) = &a.license_type {
        p.insert("LicenseType".into(), json!(l));
    }
    if let Some(f) = &a.family {
        p.insert("ImageFamily".into(), json!(f));
    }
    if !a.tags.is_empty() {
        let tags: Vec<Value> = a
            .tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        p.insert(
            "TagSpecification".into(),
            json!([{"ResourceType": "image", "Tags": tags}]),
        );
    }
    if !a.data_disks.is_empty() {
        let disks: Vec<Value> = a
            .data_disks
            .iter()
            .map(|u| json!({"ImageUrl": u}))
            .collect();
        p.insert("ImportImageDataDiskList".into(), Value::Array(disks));
    }
    let resp = client.call("ImportImage", &params).await?;
    if a.json {
        writeln!(io.out, "{}", pretty(&resp))?;
    }
    if a.dry_run {
        if !a.json {
            writeln!(
                io.out,
                "DryRun passed: the import would be accepted (RequestId {})",
                request_id(&resp)
            )?;
        }
        return Ok(EXIT_OK);
    }
    // Tencent's documented examples answer with the RequestId only; the
    // image is then found by its name, which is unique per region.
    let image_id = match resp.get("ImageId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => find_by_name(client, &a.name).await?.unwrap_or_default(),
    };
    if !a.json {
        if image_id.is_empty() {
            writeln!(
                io.out,
                "Import accepted (RequestId {}); the reply names no image yet.",
                request_id(&resp)
            )?;
        } else {
            writeln!(
                io.out,
                "Importing {image_id} \"{}\" (RequestId {})",
                a.name,
                request_id(&resp)
            )?;
        }
    }
    io.out.flush()?;
    if !a.wait {
        return Ok(EXIT_OK);
    }
    if image_id.is_empty() {
        writeln!(
            io.err,
            "cannot --wait: the image `{}` is not listed",
            a.name
        )?;
        return Ok(EXIT_FAILED);
    }
    Ok(watch::watch(client, &image_id, a.interval, io).await?)
}

async fn find_by_name(client: &ApiClient, name: &str) -> Result<Option<String>, CallError> {
    let resp = client
        .call(
            "DescribeImages",
            &json!({"Filters": [{"Name": "image-name", "Values": [name]}], "Limit": 100}),
        )
        .await?;
    Ok(resp
        .get("ImageSet")
        .and_then(Value::as_array)
        .and_then(|set| set.iter().find(|i| field(i, "ImageName") == name))
        .map(|i| field(i, "ImageId").to_string()))
}

/// Import tasks of `ids` by ImageId; empty when the server has no tasks
/// (the real cloud) or refuses: the caller's view is still right without
/// them, only less detailed.
async fn tasks_of(
    client: &ApiClient,
    ids: &[String],
    io: &mut Io<'_>,
) -> std::io::Result<HashMap<String, Value>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(100) {
        match client
            .call(
                "DescribeImportImageTasks",
                &json!({"ImageIds": chunk, "Limit": 100}),
            )
            .await
        {
            Ok(resp) => {
                for t in resp
                    .get("ImportImageTaskSet")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    out.insert(field(t, "ImageId").to_string(), t.clone());
                }
            }
            Err(e) if e.code() == Some("InvalidAction") => break,
            Err(e) => {
                writeln!(io.err, "(import progress unavailable: {e})")?;
                break;
            }
        }
    }
    Ok(out)
}

async fn list(client: &ApiClient, a: ListArgs, io: &mut Io<'_>) -> Result<i32, Failure> {
    let mut filters = vec![json!({"Name": "image-type", "Values": ["PRIVATE_IMAGE"]})];
    if let Some(n) = &a.name {
        filters.push(json!({"Name": "image-name", "Values": [n]}));
    }
    let want = a.limit as usize;
    let mut images: Vec<Value> = Vec::new();
    let mut total: u64;
    // The API pages by at most 100.
    loop {
        let page = (want - images.len()).min(100);
        let resp = client
            .call(
                "DescribeImages",
                &json!({"Filters": filters, "Offset": a.offset as usize + images.len(), "Limit": page}),
            )
            .await?;
        total = render::number(&resp, "TotalCount").unwrap_or(0);
        let set = resp
            .get("ImageSet")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let got = set.len();
        images.extend(set);
        if got == 0 || images.len() >= want || (a.offset as u64 + images.len() as u64) >= total {
            break;
        }
    }
    images.truncate(want);
    if a.json {
        writeln!(
            io.out,
            "{}",
            pretty(&json!({"TotalCount": total, "ImageSet": images}))
        )?;
        return Ok(EXIT_OK);
    }
    if images.is_empty() {
        writeln!(io.out, "No images.")?;
        return Ok(EXIT_OK);
    }
    let unfinished: Vec<String> = images
        .iter()
        .filter(|i| matches!(field(i, "ImageState"), "IMPORTING" | "IMPORTFAILED"))
        .map(|i| field(i, "ImageId").to_string())
        .collect();
    let tasks = if unfinished.is_empty() {
        HashMap::new()
    } else {
        tasks_of(client, &unfinished, io).await?
    };
    write!(io.out, "{}", render::images_table(&images, &tasks))?;
    if (images.len() as u64) < total {
        writeln!(
            io.out,
            "{} of {total} images shown (--offset/--limit for more).",
            images.len()
        )?;
    }
    Ok(EXIT_OK)
}

async fn show(
    client: &ApiClient,
    id: &str,
    as_json: bool,
    io: &mut Io<'_>,
) -> Result<i32, Failure> {
    let resp = client
        .call("DescribeImages", &json!({"ImageIds": [id]}))
        .await?;
    let Some(image) = resp
        .get("ImageSet")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().find(|i| field(i, "ImageId") == id))
        .cloned()
    else {
        writeln!(io.err, "{id}: no such image")?;
        return Ok(EXIT_FAILED);
    };
    let tasks = tasks_of(client, &[id.to_string()], io).await?;
    let task = tasks.get(id);
    if as_json {
        writeln!(
            io.out,
            "{}",
            pretty(&json!({"Image": image, "ImportTask": task}))
        )?;
    } else {
        write!(io.out, "{}", render::image_details(&image, task))?;
    }
    Ok(EXIT_OK)
}

async fn delete(
    client: &ApiClient,
    ids: &[String],
    dry_run: bool,
    io: &mut Io<'_>,
) -> Result<i32, Failure> {
    let mut params = json!({ "ImageIds": ids });
    if dry_run {
        params["DryRun"] = json!(true);
    }
    let resp = client.call("DeleteImages", &params).await?;
    let verb = if dry_run { "Would delete" } else { "Deleted" };
    writeln!(
        io.out,
        "{verb} {} (RequestId {})",
        ids.join(", "),
        request_id(&resp)
    )?;
    Ok(EXIT_OK)
}

async fn cancel(client: &ApiClient, id: &str, io: &mut Io<'_>) -> Result<i32, Failure> {
    let resp = client
        .call("CancelImportImageTask", &json!({ "ImageId": id }))
        .await?;
    writeln!(
        io.out,
        "Cancelling the import of {id} (RequestId {}); `imagegate images watch {id}` \
         follows it to the end",
        request_id(&resp)
    )?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: ClientOptions,
        #[command(subcommand)]
        cmd: ImagesCommand,
    }

    #[test]
    fn command_line_parses() {
        let cli = Cli::try_parse_from([
            "images",
            "import",
            "--url",
            "https://b-1.cos.ap-guangzhou.myqcloud.com/a.qcow2",
            "--name",
            "n",
            "--os-type",
            "CentOS",
            "--os-version",
            "7",
            "--arch",
            "arm_64",
            "--boot-mode",
            "UEFI",
            "--data-disk",
            "u1",
            "--data-disk",
            "u2",
            "--tag",
            "env=prod",
            "--wait",
            "--interval",
            "0.5",
            "--endpoint",
            "http://127.0.0.1:9000",
        ])
        .unwrap();
        assert_eq!(cli.opts.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        let ImagesCommand::Import(a) = cli.cmd else {
            panic!()
        };
        assert_eq!(a.arch, "arm_64");
        assert_eq!(a.data_disks, ["u1", "u2"]);
        assert_eq!(a.tags, [("env".to_string(), "prod".to_string())]);
        assert_eq!(a.interval, Duration::from_millis(500));
        assert!(a.wait && !a.force);
        let cli = Cli::try_parse_from([
            "images",
            "sync",
            "img-1",
            "--to",
            "ap-beijing",
            "--to",
            "ap-shanghai",
        ])
        .unwrap();
        let ImagesCommand::Sync(s) = cli.cmd else {
            panic!()
        };
        assert_eq!(s.regions, ["ap-beijing", "ap-shanghai"]);

        for bad in [
            vec![
                "images",
                "import",
                "--url",
                "u",
                "--name",
                "n",
                "--os-type",
                "t",
                "--os-version",
                "v",
                "--arch",
                "amd64",
            ],
            vec![
                "images",
                "import",
                "--url",
                "u",
                "--name",
                "n",
                "--os-type",
                "t",
                "--os-version",
                "v",
                "--tag",
                "novalue",
            ],
            vec!["images", "watch", "img-1", "--interval", "0"],
            vec!["images", "list", "--limit", "0"],
            vec!["images", "delete"],
            vec!["images", "share", "img-1"],
            vec!["images", "sync", "img-1"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }
}
