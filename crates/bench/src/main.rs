//! imagegate-bench: figures for the closing notes, each printed beside a
//! baseline measured in the same run (these machines are noisy; ratios
//! travel, absolute numbers don't). Not a test: nothing here asserts time.
//!
//! - `api`: signed DescribeImages under 64 concurrent connections against a
//!   catalog of 10,000 images, beside a bare endpoint on the same HTTP stack;
//!   ImportImage calls that only queue; idle and loaded RSS.
//! - `import`: ImportImage → NORMAL for a 4 GiB-virtual image with 1 GiB of
//!   mixed data in every format, beside `curl + qemu-img convert + sha256sum`
//!   and the floor `max(curl -o /dev/null, openssl dgst -sha256)`; peak RSS;
//!   a 64 GiB-virtual variant; 4 concurrent imports.
//! - `export`: diskformat's export of a 4 GiB-virtual qcow2 holding 1 GiB of
//!   random data to RAW, QCOW2, VHD and VMDK, beside `qemu-img convert` of
//!   the same image into the same folder; peak RSS of both.
//! - `export-api`: the same through the service: ExportImages until the
//!   object is complete in the `cos_root` bucket, beside `qemu-img convert`
//!   of the stored image into the same folder; the server's peak RSS.
//! - `ratelimit`: DescribeImages through two nodes on one PostgreSQL catalog
//!   with rate limits off, per node and shared; a one-account flood.

#![forbid(unsafe_code)]

mod api;
mod client;
mod export;
mod export_api;
mod fileserver;
mod floors;
mod import;
mod ratelimit;
mod server;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "imagegate-bench",
    about = "imagegate benchmarks with same-run baselines"
)]
struct Cli {
    /// The imagegate binary to benchmark (build it with --release).
    #[arg(long, default_value = "target/release/imagegate", global = true)]
    bin: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// API throughput and latency against a bare endpoint.
    Api(api::ApiArgs),
    /// Import time against the scripted baseline and the floor.
    Import(import::ImportArgs),
    /// Export writers against qemu-img convert of the same image.
    Export(export::ExportArgs),
    /// ExportImages end to end against qemu-img convert of the stored image.
    ExportApi(export_api::ExportApiArgs),
    /// DescribeImages with rate limits off, per node and shared (PostgreSQL).
    Ratelimit(ratelimit::RateLimitArgs),
    /// (internal) One export, for `export` to time and measure.
    #[command(hide = true)]
    ExportOne(export::ExportOneArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The export benchmark is synchronous: no runtime.
    let cmd = match cli.cmd {
        Cmd::Export(args) => return export::run(args),
        Cmd::ExportOne(args) => return export::export_one(args),
        other => other,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            Cmd::Api(args) => api::run(&cli.bin, args).await,
            Cmd::Import(args) => import::run(&cli.bin, args).await,
            Cmd::ExportApi(args) => export_api::run(&cli.bin, args).await,
            Cmd::Ratelimit(args) => ratelimit::run(&cli.bin, args).await,
            Cmd::Export(_) | Cmd::ExportOne(_) => Ok(()),
        }
    })
}
