//! The `imagegate` command. `serve` runs the API; further roles (`worker`,
//! `inspect`, `images …`) are subcommands of the same binary.
//!
//! Configuration precedence: built-in defaults < config file (`--config` or
//! `IMAGEGATE_CONFIG`) < `IMAGEGATE_*` environment variables < flags.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use imagegate::accounts::Bootstrap;
use imagegate::config::Config;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "imagegate",
    version,
    about = "Self-hosted image service speaking Tencent Cloud's CVM image API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; boxing the client's options would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the API server (and, unless --no-workers, import workers).
    Serve(ServeArgs),
    /// Run import workers only, on the configured catalog and blob store.
    Worker(ServeArgs),
    /// Inspect a local image file (container and guest), safely.
    Inspect(imagegate::inspect_cmd::InspectArgs),
    /// A client of any imagegate endpoint (or of the real cloud).
    Images {
        #[command(flatten)]
        opts: imagegate::client::ClientOptions,
        #[command(subcommand)]
        cmd: imagegate::client::ImagesCommand,
    },
    /// Print a shell completion script, e.g.
    /// `imagegate completions bash > /etc/bash_completion.d/imagegate`,
    /// `imagegate completions zsh > "${fpath[1]}/_imagegate"`,
    /// `imagegate completions fish > ~/.config/fish/completions/imagegate.fish`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "IMAGEGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A folder standing in for COS (overrides `source.cos_root`): the object
    /// `https://<bucket>-<appid>.cos.<region>.myqcloud.com/<key>` is read from
    /// `DIR/<bucket>-<appid>/<key>`. Without it, COS URLs are fetched from COS.
    #[arg(long, value_name = "DIR")]
    cos_root: Option<PathBuf>,
    /// Serve the API only; imports are run by `imagegate worker` processes.
    #[arg(long)]
    no_workers: bool,
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = Config::from_file(args.config.as_deref())?;
    config.apply_env(|k| std::env::var(k).ok())?;
    if let Some(l) = &args.listen {
        config.listen = l.clone();
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(c) = &args.cos_root {
        // Made if missing, so that `serve --cos-root DIR` is the first step of
        // the Quick start; absolute, so the log names the folder really read.
        std::fs::create_dir_all(c)
            .with_context(|| format!("creating --cos-root {}", c.display()))?;
        let abs = c
            .canonicalize()
            .with_context(|| format!("--cos-root {}", c.display()))?;
        config.source.cos_root = Some(abs);
    }
    config.validate()?;
    Ok(config)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries the one-time credentials and the
    // `listening` line that harnesses wait for.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServeArgs, api: bool) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    init_logging(&config);
    let roles = imagegate::server::Roles {
        api,
        workers: !args.no_workers,
    };
    let server = imagegate::server::start_roles(config, roles)
        .await
        .context("starting the server")?;
    let mut out = std::io::stdout().lock();
    match server.bootstrap() {
        Bootstrap::Created(path, account) => {
            // Shown once, on this terminal only; never logged.
            writeln!(
                out,
                "Created account (stored in {}):\n  SecretId:  {}\n  SecretKey: {}\n  AppId:     {}\n  Uin:       {}",
                path.display(),
                account.secret_id,
                account.secret_key,
                account.app_id,
                account.uin
            )?;
        }
        Bootstrap::Loaded(path) => {
            tracing::info!(file = %path.display(), "using the account stored in the data directory");
        }
        Bootstrap::Configured => {}
    }
    if let Some(ops) = server.ops_addr() {
        writeln!(out, "imagegate ops listening on {ops}")?;
    }
    if api {
        writeln!(out, "imagegate listening on {}", server.addr())?;
        tracing::info!(addr = %server.addr(), "serving");
    } else {
        writeln!(out, "imagegate worker running")?;
        tracing::info!("running import workers");
    }
    out.flush()?;
    drop(out);

    tokio::select! {
        r = shutdown_signal() => r?,
    }
    tracing::info!("shutting down");
    // Requests in flight get a grace period; a client stalled mid-request
    // must not keep the process from exiting. Running imports are handed
    // back to the queue before the wait for requests, so they are not lost.
    match tokio::time::timeout(SHUTDOWN_GRACE, server.shutdown()).await {
        Ok(r) => r?,
        Err(_) => tracing::warn!(
            seconds = SHUTDOWN_GRACE.as_secs(),
            "requests still open after the grace period; exiting"
        ),
    }
    Ok(())
}

/// How long a SIGTERM waits for requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "imagegate", &mut std::io::stdout());
        return Ok(());
    }
    if matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
        imagegate::alloc_tuning::tune_for_streaming();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args, true)),
        Command::Worker(args) => runtime.block_on(serve(args, false)),
        Command::Inspect(args) => {
            let code = imagegate::inspect_cmd::run(&args, &mut std::io::stdout().lock())?;
            std::process::exit(code)
        }
        Command::Images { opts, cmd } => {
            let code = runtime.block_on(imagegate::client::run(opts, cmd))?;
            std::process::exit(code)
        }
        Command::Completions { .. } => Ok(()),
    }
}
