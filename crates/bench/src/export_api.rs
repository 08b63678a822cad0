//! `export-api`: ExportImages end to end (the API call until the object is
//! complete in the bucket) against `qemu-img convert` of the same stored image to the
//! same place, in the same run, for every format; peak RSS of the server.
//!
//! The image is imported first (a 4 GiB-virtual disk with 1 GiB of data by
//! default); both sides then read the stored qcow2 from the data directory
//! and write into the `cos_root` bucket folder (qemu-img's time includes the
//! fsync of its output, as the service syncs before publishing), once through
//! the page cache and once with `-t none` (`O_DIRECT`, as the service writes
//! a folder's objects); the ratio is against the better of the two. With
//! `--s3-endpoint` (e.g. moto_server) the bucket is an S3 bucket behind
//! `source.cos_endpoint` instead, and the baseline is `qemu-img convert` to
//! a local file plus its multipart upload (8 MiB parts, as `aws s3 cp`).
//! qemu-img only ever reads the benchmark's own files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::client::Client;
use crate::floors::settle_cold;
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
    /// Runs of each side per format (alternating which goes first; every
    /// run starts after `sync` and a 5 s pause); medians are reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Export to this S3 endpoint (keys test/test, as moto_server takes
    /// them) instead of the cos_root folder.
    #[arg(long)]
    s3_endpoint: Option<String>,
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
    // On S3 the source comes from a loopback origin (cos_root would win
    // over cos_endpoint for the exports too).
    let origin = crate::fileserver::start(source.parent().context("source folder")?.to_path_buf())?;
    let (extra, source_url) = match &args.s3_endpoint {
        None => (
            format!(
                "[workers]\nexport_concurrency = 1\n[source]\ncos_root = \"{}\"\n",
                cos.display()
            ),
            format!("https://images-{APP_ID}.cos.ap-guangzhou.myqcloud.com/source.raw"),
        ),
        Some(endpoint) => {
            create_bucket(endpoint, &bucket).await?;
            (
                format!(
                    "[workers]\nexport_concurrency = 1\n[source]\nallow_hosts = [\"127.0.0.1\"]\n\
                     cos_endpoint = \"{endpoint}\"\ncos_access_key = \"test\"\ncos_secret_key = \"test\"\n"
                ),
                format!("http://{}/source.raw", origin.addr),
            )
        }
    };
    let server = Server::start(bin, &server_dir, &extra, &[])?;
    let client = Client::new(&server.addr, &server.secret_id, &server.secret_key);
    let image_id = import(&client, &source_url).await?;
    let stored = server_dir
        .join("data/images")
        .join(format!("{image_id}.qcow2"));
    eprintln!("imported {image_id}; stored {}", stored.display());

    let place = match &args.s3_endpoint {
        None => "the cos_root folder (qemu-img: convert + fsync)".to_string(),
        Some(e) => format!("the S3 bucket {bucket} at {e} (qemu-img: convert + multipart upload)"),
    };
    println!(
        "export of a {} GiB-virtual / {} MiB-data image to {place}",
        args.virtual_gib, args.data_mib
    );
    println!(
        "{:<6} {:>10} {:>14} {:>15} {:>7} {:>9} {:>13}",
        "format", "export s", "qemu-img s", "qemu-img -t none", "ratio", "out MiB", "peak RSS MiB"
    );
    println!(
        "(medians of {} runs each, alternating, each after sync and a 5 s pause; \
         ratio = export / the better of qemu-img through the page cache and with -t none)",
        args.repeat.max(1)
    );
    for (name, qemu, ext) in FORMATS {
        if !args.formats.is_empty() && !args.formats.iter().any(|f| f.eq_ignore_ascii_case(name)) {
            continue;
        }
        let (mut ours, mut peak, mut out_size) = (Vec::new(), 0, 0);
        let (mut cached, mut direct) = (Vec::new(), Vec::new());
        for i in 0..args.repeat.max(1) {
            // Alternate who goes first; each starts with no dirty pages of
            // the other (or of the import) left to write back, and from
            // cold memory (`settle_cold`).
            for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
                settle_cold()?;
                if side == 0 {
                    next_second().await;
                    let rss = RssSampler::start(server.pid());
                    let (secs, key) = export(&client, &image_id, &bucket, name).await?;
                    peak = peak.max(rss.finish());
                    out_size = remove_export(&args, &cos, &bucket, &key).await?;
                    ours.push(secs);
                } else {
                    let place = Baseline {
                        args: &args,
                        work: &work,
                        bucket_dir: &cos.join(&bucket),
                        bucket: &bucket,
                        stored: &stored,
                        qemu,
                        ext,
                    };
                    cached.push(place.run(QemuCache::PageCache).await?);
                    settle_cold()?;
                    direct.push(place.run(QemuCache::Direct).await?);
                }
            }
        }
        let (secs, cached, direct) = (median(ours), median(cached), median(direct));
        println!(
            "{name:<6} {secs:>10.2} {cached:>14.2} {direct:>15.2} {:>7.2} {:>9.0} {:>13.0}",
            secs / cached.min(direct),
            mib(out_size),
            mib(peak)
        );
    }
    Ok(())
}

/// Waits into the next wall-clock second, untimed: the same ExportImages
/// again within one second is an identical re-send, which gets the earlier
/// task back instead of a new export.
async fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_nanos(
        1_000_000_000 - now.subsec_nanos() as u64,
    ))
    .await;
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The exported object's size; then it is removed (the next run starts
/// with an empty bucket).
async fn remove_export(
    args: &ExportApiArgs,
    cos: &Path,
    bucket: &str,
    key: &str,
) -> anyhow::Result<u64> {
    match &args.s3_endpoint {
        None => {
            let out = cos.join(bucket).join(key);
            let size = std::fs::metadata(&out)?.len();
            std::fs::remove_file(&out)?;
            Ok(size)
        }
        Some(endpoint) => object_size_and_delete(&s3_store(endpoint, bucket)?, key).await,
    }
}

/// How qemu-img writes its output: through the page cache (its default),
/// or with `-t none` (`O_DIRECT`), as the service writes to a folder.
#[derive(Clone, Copy)]
enum QemuCache {
    PageCache,
    Direct,
}

/// The baseline to the same place: qemu-img convert into the bucket folder
/// with its fsync, or to a local file plus a multipart upload.
struct Baseline<'a> {
    args: &'a ExportApiArgs,
    work: &'a Path,
    bucket_dir: &'a Path,
    bucket: &'a str,
    stored: &'a Path,
    qemu: &'a [&'a str],
    ext: &'a str,
}

impl Baseline<'_> {
    async fn run(&self, cache: QemuCache) -> anyhow::Result<f64> {
        let key = format!("baseline.{}", self.ext);
        match &self.args.s3_endpoint {
            None => {
                let out = self.bucket_dir.join(&key);
                let secs = qemu_convert(self.stored, self.qemu, cache, &out, true)?;
                std::fs::remove_file(&out)?;
                Ok(secs)
            }
            Some(endpoint) => {
                let store = s3_store(endpoint, self.bucket)?;
                let local = self.work.join(&key);
                let start = Instant::now();
                qemu_convert(self.stored, self.qemu, cache, &local, false)?;
                upload(&store, &local, &key).await?;
                let secs = start.elapsed().as_secs_f64();
                std::fs::remove_file(&local)?;
                object_size_and_delete(&store, &key).await?;
                Ok(secs)
            }
        }
    }
}

async fn import(client: &Client, url: &str) -> anyhow::Result<String> {
    let resp = client
        .call(
            "ImportImage",
            &json!({"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
                    "ImageName": format!("bench-export-{}", uuid::Uuid::new_v4().simple()),
                    "ImageUrl": url}),
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

/// `qemu-img convert -f qcow2 -t <cache> -O <fmt> stored out`, timed with its fsync
/// when `durable` (the export's objects are synced before they are
/// published in the folder).
fn qemu_convert(
    stored: &Path,
    qemu: &[&str],
    cache: QemuCache,
    out: &Path,
    durable: bool,
) -> anyhow::Result<f64> {
    let cache = match cache {
        QemuCache::PageCache => "writeback",
        QemuCache::Direct => "none",
    };
    let start = Instant::now();
    let status = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-t", cache, "-O"])
        .args(qemu)
        .arg(stored)
        .arg(out)
        .status()
        .context("running qemu-img")?;
    if !status.success() {
        bail!("qemu-img convert {qemu:?} failed");
    }
    if durable {
        std::fs::File::open(out)?.sync_all()?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// PUT a bucket (moto_server takes it unsigned); one that exists is fine.
async fn create_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .put(format!("{}/{bucket}", endpoint.trim_end_matches('/')))
        .send()
        .await?;
    if !(r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT) {
        bail!("creating the bucket {bucket}: HTTP {}", r.status());
    }
    Ok(())
}

fn s3_store(endpoint: &str, bucket: &str) -> anyhow::Result<object_store::aws::AmazonS3> {
    Ok(object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        // moto_server takes over 30 s (object_store's default) to complete
        // a 4 GiB upload; the service's export client waits as long.
        .with_client_options(
            object_store::ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(Duration::from_secs(600)),
        )
        .build()?)
}

/// The object's size; then it is deleted (the next format starts empty).
async fn object_size_and_delete(
    store: &object_store::aws::AmazonS3,
    key: &str,
) -> anyhow::Result<u64> {
    use object_store::ObjectStoreExt;
    let path = object_store::path::Path::from(key);
    let size = store.head(&path).await?.size;
    store.delete(&path).await?;
    Ok(size)
}

/// A multipart upload of `file` in 8 MiB parts, 8 in flight.
async fn upload(store: &object_store::aws::AmazonS3, file: &Path, key: &str) -> anyhow::Result<()> {
    use object_store::ObjectStoreExt;
    use std::io::Read;
    const PART: usize = 8 << 20;
    let path = object_store::path::Path::from(key);
    let mut w =
        object_store::WriteMultipart::new_with_chunk_size(store.put_multipart(&path).await?, PART);
    let mut f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; PART];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.wait_for_capacity(8).await?;
        w.write(&buf[..n]);
    }
    w.finish().await?;
    Ok(())
}
