//! `imagegate images …`: a command-line client of the CVM image API, for an
//! imagegate endpoint or for the real cloud (the same wire protocol).
//!
//! - `credentials`: flags, `TENCENTCLOUD_*` variables, tccli profile files;
//! - `api`: one TC3-signed call, built like the official SDKs build it;
//! - `commands`: one function per subcommand;
//! - `render`: tables, details and progress text;
//! - `watch`: following an import to NORMAL or IMPORTFAILED;
//! - `export`: ExportImages and following its task.
//!
//! With `--json`, stdout carries JSON only: the API's reply, or for an error
//! the API's error shape `{"Response":{"Error":{"Code","Message"},"RequestId"}}`
//! (local failures take the official SDKs' codes: `ClientParamsError`,
//! `ClientNetworkError`, `ServerNetworkError`); stderr stays empty.
//!
//! Exit codes: 0 success; 1 the API refused, the server was unreachable, or
//! the import failed; 2 a local problem (no credentials, bad profile file,
//! bad endpoint URL).

pub mod api;
mod commands;
pub mod credentials;
pub mod export;
pub mod lifecycle;
pub mod render;
pub mod watch;

#[cfg(test)]
mod json_tests;
#[cfg(test)]
mod stub_tests;

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::{json, Value};

use api::{ApiClient, CallError};
use credentials::{Requested, Sources};
pub use watch::{Display, Io};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Where to send requests and with which key; shared by every `images`
/// subcommand (and accepted after it).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientOptions {
    /// API endpoint with its scheme, e.g. http://127.0.0.1:9000 [default: the
    /// profile's cvm.endpoint, else https://cvm.tencentcloudapi.com]
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Region, e.g. ap-guangzhou [default: $TENCENTCLOUD_REGION, else the
    /// profile's region]
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
    /// Print JSON only on stdout: the API's reply, or an error in the API's
    /// error shape; no progress.
    #[arg(long, global = true)]
    pub json: bool,
}

const IMPORT_EXAMPLES: &str = "\
Examples:
  imagegate images import --endpoint http://127.0.0.1:9000 --region ap-guangzhou \\
      --url https://images-1250000000.cos.ap-guangzhou.myqcloud.com/centos7.qcow2 \\
      --name web-01 --os-type CentOS --os-version 7 --wait
  imagegate images import --url URL --name ubuntu-22 --os-type Ubuntu --os-version 22 \\
      --arch arm_64 --tag env=prod --json --wait

`imagegate images os` lists the OS types and versions the server accepts.";

// Parsed once per process: the size of the Import variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ImagesCommand {
    /// Import a disk image from an object-store URL (ImportImage).
    #[command(after_help = IMPORT_EXAMPLES)]
    Import(ImportArgs),
    /// List your images (DescribeImages).
    List(ListArgs),
    /// Show one image with its import task.
    Show {
        /// Image ID (img-…).
        id: String,
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
    /// The OS types, versions and architectures ImportImage accepts
    /// (DescribeImportImageOs).
    Os,
    /// The image quota and how much of it is used (DescribeImageQuota).
    Quota,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// Image URL (COS: https://<bucket>-<appid>.cos.<region>.myqcloud.com/<key>).
    #[arg(long)]
    pub url: String,
    /// Image name (at most 60 characters, unique in the region).
    #[arg(long)]
    pub name: String,
    /// OS type, as `imagegate images os` lists it (e.g. CentOS, Ubuntu,
    /// "Windows Server 2019").
    #[arg(long)]
    pub os_type: String,
    /// OS version, as `imagegate images os` lists it for the OS type (e.g. 7
    /// for CentOS, 22 for Ubuntu 22.04, 9 for Windows).
    #[arg(long)]
    pub os_version: String,
    /// CPU architecture of the image.
    #[arg(long, default_value = "x86_64", value_parser = ["x86_64", "i386", "arm_64"])]
    pub arch: String,
    /// Forced import: skip only the cloud-init check, for Linux images that
    /// cannot have cloud-init (the cloud then does no guest initialisation).
    /// Every other check still applies; ISO files need it.
    #[arg(long)]
    pub force: bool,
    /// Firmware the image boots with [server default: Legacy BIOS].
    #[arg(long, value_parser = ["Legacy BIOS", "UEFI"])]
    pub boot_mode: Option<String>,
    /// License of the image's OS [server default: TencentCloud].
    #[arg(long, value_parser = ["TencentCloud", "BYOL"])]
    pub license_type: Option<String>,
    /// A data disk image URL; repeat for several.
    #[arg(long = "data-disk", value_name = "URL")]
    pub data_disks: Vec<String>,
    /// Image description (at most 256 characters).
    #[arg(long)]
    pub description: Option<String>,
    /// Image family, e.g. web-servers (a letter first, then letters, digits,
    /// `-`, `_` or `.`).
    #[arg(long)]
    pub family: Option<String>,
    /// A tag KEY=VALUE; repeat for several.
    #[arg(long = "tag", value_parser = parse_tag, value_name = "KEY=VALUE")]
    pub tags: Vec<(String, String)>,
    /// Only check the request (nothing is imported).
    #[arg(long)]
    pub dry_run: bool,
    /// Follow the import until it ends (like `images watch`); with --json,
    /// one JSON document at the end.
    #[arg(long)]
    pub wait: bool,
    /// Seconds between polls with --wait.
    #[arg(long, default_value = "1", value_parser = parse_interval, value_name = "SECONDS")]
    pub interval: Duration,
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
    let display = if opts.json {
        Display::Json
    } else if std::io::stdout().is_terminal() {
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

/// [`run`] with the environment and the output given (for tests). With
/// `opts.json` the display is JSON whatever `io.display` says.
pub async fn run_with(
    opts: &ClientOptions,
    cmd: ImagesCommand,
    sources: &Sources<'_>,
    io: &mut Io<'_>,
) -> std::io::Result<i32> {
    if opts.json {
        io.display = Display::Json;
    }
    let requested = Requested {
        endpoint: opts.endpoint.clone(),
        region: opts.region.clone(),
        profile: opts.profile.clone(),
        secret_id: opts.secret_id.clone(),
        secret_key: opts.secret_key.clone(),
    };
    let client = match credentials::resolve(&requested, sources)
        .map_err(|e| e.to_string())
        .and_then(|s| ApiClient::new(s).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) if io.display == Display::Json => {
            print_error(io, "ClientParamsError", &e, None)?;
            return Ok(EXIT_USAGE);
        }
        Err(e) => {
            writeln!(io.err, "imagegate images: {e}")?;
            return Ok(EXIT_USAGE);
        }
    };
    let result = commands::run(&client, cmd, io).await;
    match result {
        Ok(code) => Ok(code),
        Err(Failure::Io(e)) => Err(e),
        Err(Failure::Call(e)) => {
            print_call_error(io, &e)?;
            Ok(EXIT_FAILED)
        }
    }
}

/// An error: a line on stderr, or with `--json` the API's error shape on
/// stdout.
pub(crate) fn print_error(
    io: &mut Io<'_>,
    code: &str,
    message: &str,
    request_id: Option<&str>,
) -> std::io::Result<()> {
    if io.display != Display::Json {
        return writeln!(io.err, "{message}");
    }
    let mut response = json!({ "Error": { "Code": code, "Message": message } });
    if let Some(id) = request_id {
        response["RequestId"] = json!(id);
    }
    writeln!(io.out, "{}", pretty(&json!({ "Response": response })))
}

pub(crate) fn print_call_error(io: &mut Io<'_>, e: &CallError) -> std::io::Result<()> {
    if io.display != Display::Json {
        return writeln!(io.err, "{e}");
    }
    print_error(io, e.wire_code(), &e.wire_message(), e.request_id())
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
    render::field(resp, "RequestId")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
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

#[cfg(test)]
mod help_tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: ClientOptions,
        #[command(subcommand)]
        cmd: ImagesCommand,
    }

    /// Every visible option and argument of every subcommand says what it is.
    #[test]
    fn every_option_is_described() {
        let cmd = Cli::command();
        let mut missing = Vec::new();
        for sub in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
            for arg in sub.get_arguments() {
                if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{} {}", sub.get_name(), arg.get_id()));
                }
            }
            if sub.get_name() != cmd.get_name() && sub.get_about().is_none() {
                missing.push(format!("{} (no about)", sub.get_name()));
            }
        }
        assert!(missing.is_empty(), "undescribed: {missing:?}");
    }

    /// The examples use values the server's built-in OS list accepts.
    #[test]
    fn import_examples_name_accepted_os_versions() {
        let list = crate::oslist::OsList::from_config(None);
        for line in IMPORT_EXAMPLES.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let value = |flag: &str| {
                words
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| words.get(i + 1))
                    .copied()
            };
            if let (Some(t), Some(v)) = (value("--os-type"), value("--os-version")) {
                let arch = value("--arch").unwrap_or("x86_64");
                assert!(list.check(t, v, arch).is_ok(), "{line}");
            }
        }
    }

    #[test]
    fn json_is_accepted_before_and_after_the_subcommand() {
        for args in [
            vec!["images", "--json", "list"],
            vec!["images", "list", "--json"],
            vec!["images", "quota", "--json"],
            vec!["images", "os"],
        ] {
            assert!(Cli::try_parse_from(&args).is_ok(), "{args:?}");
        }
        let cli = Cli::try_parse_from(["images", "show", "img-1", "--json"]).unwrap();
        assert!(cli.opts.json);
    }
}
