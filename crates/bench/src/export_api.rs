//! `export-api`: ExportImages end to end (the API call until the object is
//! complete in the bucket) against `qemu-img convert` of the same stored image to the
//! same place, in the same run, for every format; peak RSS of the server.
//!
//! The image is imported first (a 4 GiB-virtual disk with 1 GiB of data by
//! default); both sides then read the stored qcow2 from the data directory
//! and write into the `cos_root` bucket folder. qemu-img only ever reads
//! the benchmark's own files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::client::Client;
use crate::import::make_source_disk;
use crate::server::{mib, RssSampler, Server, APP_ID};

#[derive(clap::Args)]
pub struct ExportApiArgs {
    /// Working folder (several GiB; sparse where possible).
    #[arg(long, default_value = "bench-out/export-api")]
    workdir: PathBuf,
    /// Virtual size of the test disk, GiB.
    #[arg(long, default_value_t = 4)]
    virtual_gib: u64,
    /// Data written into it, MiB (half random, half text, scattered).
    #[arg(long, default_value_t = 1024)]
    data_mib: u64,
    /// Formats to run (default: RAW,QCOW2,VHD,VMDK).
    #[arg(long, value_delimiter = ',')]
    formats: Vec<String>,
}

/// (API name, qemu-img -O format and options, extension)
const FORMATS: &[(&str, &[&str], &str)] = &[
    ("RAW", &["raw"], "raw"),
    ("QCOW2", &["qcow2"], "qcow2"),
    ("VHD", &["vpc", "-o", "subformat=dynamic"], "vhd"),
    ("VMDK", &["vmdk", "-o", "subformat=streamOptimized"], "vmdk"),
];

pub async fn run(bin: &str, args: ExportApiArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.workdir)?;
    let work = std::fs::canonicalize(&args.workdir)?;
    let cos = work.join("cos");
    let bucket = format!("exports-{APP_ID}");
    std::fs::create_dir_all(cos.join(format!("images-{APP_ID}")))?;
    std::fs::create_dir_all(cos.join(&bucket))?;
    let source = cos.join(format!("images-{APP_ID}")).join("source.raw");
    eprintln!(
        "making a {} GiB disk with {} MiB of data …",
        args.virtual_gib, args.data_mib
    );
    make_source_disk(&source, args.virtual_gib << 30, args.data_mib << 20, 7)?;

    let server_dir = work.join("server");
    let _ = std::fs::remove_dir_all(&server_dir);
    std::fs::create_dir_all(&server_dir)?;
    let extra = format!(
        "[workers]\nexport_concurrency = 1\n[source]\ncos_root = \"{}\"\n",
        cos.display()
    );
    let server = Server::start(bin, &server_dir, &extra, &[])?;
    let client = Client::new(&server.addr, &server.secret_id, &server.secret_key);
    let image_id = import(&client, &source).await?;
    let stored = server_dir
        .join("data/images")
        .join(format!("{image_id}.qcow2"));
    eprintln!("imported {image_id}; stored {}", stored.display());

    println!(
        "export of a {} GiB-virtual / {} MiB-data image to the cos_root folder",
        args.virtual_gib, args.data_mib
    );
    println!(
        "{:<6} {:>10} {:>12} {:>7} {:>12} {:>13}",
        "format", "export s", "qemu-img s", "ratio", "out MiB", "peak RSS MiB"
    );
    for (name, qemu, ext) in FORMATS {
        if !args.formats.is_empty() && !args.formats.iter().any(|f| f.eq_ignore_ascii_case(name)) {
            continue;
        }
        let rss = RssSampler::start(server.pid());
        let (secs, key) = export(&client, &image_id, &bucket, name).await?;
        let peak = rss.finish();
        let out = cos.join(&bucket).join(&key);
        let out_size = std::fs::metadata(&out)?.len();
        let _ = std::fs::remove_file(&out);
        let baseline_out = cos.join(&bucket).join(format!("baseline.{ext}"));
        let baseline = qemu_convert(&stored, qemu, &baseline_out)?;
        let _ = std::fs::remove_file(&baseline_out);
        println!(
            "{name:<6} {secs:>10.2} {baseline:>12.2} {:>7.2} {:>12.0} {:>13.0}",
            secs / baseline,
            mib(out_size),
            mib(peak)
        );
    }
    Ok(())
}

async fn import(client: &Client, source: &Path) -> anyhow::Result<String> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("source.raw");
    let resp = client
        .call(
            "ImportImage",
            &json!({"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
                    "ImageName": format!("bench-export-{}", uuid::Uuid::new_v4().simple()),
                    "ImageUrl": format!("https://images-{APP_ID}.cos.ap-guangzhou.myqcloud.com/{name}")}),
        )
        .await?;
    let id = resp["ImageId"].as_str().context("no ImageId")?.to_string();
    loop {
        let r = client
            .call("DescribeImages", &json!({"ImageIds": [id]}))
            .await?;
        match r["ImageSet"][0]["ImageState"].as_str() {
            Some("NORMAL") => return Ok(id),
            Some("IMPORTING") => tokio::time::sleep(Duration::from_millis(200)).await,
            other => bail!("import of the benchmark image ended {other:?}"),
        }
    }
}

/// Seconds from the ExportImages call to SUCCEEDED, and the object's key.
async fn export(
    client: &Client,
    image_id: &str,
    bucket: &str,
    fmt: &str,
) -> anyhow::Result<(f64, String)> {
    let start = Instant::now();
    let resp = client
        .call(
            "ExportImages",
            &json!({"ImageIds": [image_id], "BucketName": bucket, "ExportFormat": fmt}),
        )
        .await?;
    let task = resp["TaskId"].as_i64().context("no TaskId")?;
    let key = resp["CosPaths"][0]
        .as_str()
        .context("no CosPaths")?
        .trim_start_matches('/')
        .to_string();
    loop {
        let r = client
            .call("DescribeExportImageTasks", &json!({"TaskIds": [task]}))
            .await?;
        match r["ExportImageTaskSet"][0]["TaskState"].as_str() {
            Some("SUCCEEDED") => return Ok((start.elapsed().as_secs_f64(), key)),
            Some("QUEUED" | "RUNNING") => tokio::time::sleep(Duration::from_millis(20)).await,
            other => bail!(
                "export {fmt} ended {other:?}: {}",
                r["ExportImageTaskSet"][0]
            ),
        }
    }
}

/// `qemu-img convert -f qcow2 -O <fmt> stored out`, timed with its fsync
/// (the export's objects are synced before they are published).
fn qemu_convert(stored: &Path, qemu: &[&str], out: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    let status = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O"])
        .args(qemu)
        .arg(stored)
        .arg(out)
        .status()
        .context("running qemu-img")?;
    if !status.success() {
        bail!("qemu-img convert {qemu:?} failed");
    }
    std::fs::File::open(out)?.sync_all()?;
    Ok(start.elapsed().as_secs_f64())
}
