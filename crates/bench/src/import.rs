//! ImportImage → NORMAL, against what a user would script and against the
//! floor no importer can go under, in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::client::Client;
use crate::floors::{
    baseline, floor, floor_together, floor_with_decode, median, run_cmd, settle, store_floor,
    CpuMeter, Timed,
};
use crate::server::{mib, RssSampler, Server};

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Working folder for the images (several GiB; sparse where possible).
    #[arg(long, default_value = "bench-out/import")]
    workdir: PathBuf,
    /// Virtual size of the test disk, GiB.
    #[arg(long, default_value_t = 4)]
    virtual_gib: u64,
    /// Data written into it, MiB (half random, half text, scattered).
    #[arg(long, default_value_t = 1024)]
    data_mib: u64,
    /// Formats to run (default: all).
    #[arg(long, value_delimiter = ',')]
    formats: Vec<String>,
    /// Skip the 64 GiB-virtual memory check and the concurrency run.
    #[arg(long)]
    quick: bool,
    /// Time (a) and (c) this many times per format and report the medians
    /// (these VMs drift by ±15 % between runs); (b) runs once.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Skip (b), the scripted baseline (for profiling runs; a/b is then not
    /// printed).
    #[arg(long)]
    skip_baseline: bool,
    /// Keep the source disk and fixtures of an earlier run in the same
    /// workdir instead of making them again.
    #[arg(long)]
    reuse_fixtures: bool,
    /// The server's folder (its data_dir, where images are stored), instead
    /// of `<workdir>/server`: e.g. on another device, or on tmpfs to see the
    /// import without the store's device.
    #[arg(long)]
    server_dir: Option<PathBuf>,
}

struct Fmt {
    name: &'static str,
    qemu_fmt: &'static str,
    opts: &'static [&'static str],
    /// Compressed sources are not held to the floor ratio.
    compressed: bool,
}

const FORMATS: &[Fmt] = &[
    Fmt {
        name: "raw",
        qemu_fmt: "raw",
        opts: &[],
        compressed: false,
    },
    Fmt {
        name: "qcow2",
        qemu_fmt: "qcow2",
        opts: &[],
        compressed: false,
    },
    Fmt {
        name: "qcow2-zlib",
        qemu_fmt: "qcow2",
        opts: &["-c"],
        compressed: true,
    },
    Fmt {
        name: "vmdk-sparse",
        qemu_fmt: "vmdk",
        opts: &["-o", "subformat=monolithicSparse"],
        compressed: false,
    },
    Fmt {
        name: "vmdk-stream",
        qemu_fmt: "vmdk",
        opts: &["-o", "subformat=streamOptimized"],
        compressed: true,
    },
    Fmt {
        name: "vhd-dynamic",
        qemu_fmt: "vpc",
        opts: &["-o", "subformat=dynamic,force_size=on"],
        compressed: false,
    },
    Fmt {
        name: "vhd-fixed",
        qemu_fmt: "vpc",
        opts: &["-o", "subformat=fixed,force_size=on"],
        compressed: false,
    },
    Fmt {
        name: "vhdx-dynamic",
        qemu_fmt: "vhdx",
        opts: &["-o", "subformat=dynamic"],
        compressed: false,
    },
    Fmt {
        name: "vhdx-fixed",
        qemu_fmt: "vhdx",
        opts: &["-o", "subformat=fixed"],
        compressed: false,
    },
];

pub async fn run(bin: &str, args: ImportArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.workdir)?;
    let work = std::fs::canonicalize(&args.workdir)?;
    let files = work.join("files");
    std::fs::create_dir_all(&files)?;
    let source = files.join("source.raw");
    let selected: Vec<&Fmt> = FORMATS
        .iter()
        .filter(|f| args.formats.is_empty() || args.formats.iter().any(|n| n == f.name))
        .collect();
    make_fixtures(&args, &source, &files, &selected)?;

    let fileserver = crate::fileserver::start(files.clone())?;
    let origin = format!("http://{}", fileserver.addr);
    let server_dir = args
        .server_dir
        .clone()
        .unwrap_or_else(|| work.join("server"));
    let _ = std::fs::remove_dir_all(&server_dir);
    std::fs::create_dir_all(&server_dir)?;
    let server = Server::start(
        bin,
        &server_dir,
        "[source]\nallow_hosts = [\"127.0.0.1\"]\n[workers]\nconcurrency = 4\n",
        &[],
    )?;
    let bench = Bench {
        client: Client::new(&server.addr, &server.secret_id, &server.secret_key),
        server_pid: server.pid(),
        data_dir: server_dir.join("data"),
        work,
        origin,
        repeat: args.repeat.max(1),
        skip_baseline: args.skip_baseline,
    };

    print_legend(&args);
    // Per format: the last (a) run's seconds and its PhaseTimes.
    let mut breakdowns: Vec<(&str, f64, PhaseTimes)> = Vec::new();
    for f in &selected {
        let path = files.join(format!("{}.img", f.name));
        let (row, (last_secs, phases)) = bench.measure(f, &path).await?;
        print_row(f, std::fs::metadata(&path)?.len(), &row);
        breakdowns.push((f.name, last_secs, phases));
    }
    print_breakdowns(&breakdowns);

    if !args.quick {
        memory_and_concurrency(&bench, &args, &source, &files).await?;
    }
    drop(server);
    drop(fileserver);
    Ok(())
}

/// The source disk and, per selected format, the file converted from it.
fn make_fixtures(
    args: &ImportArgs,
    source: &Path,
    files: &Path,
    selected: &[&Fmt],
) -> anyhow::Result<()> {
    eprintln!(
        "making a {} GiB disk with {} MiB of data …",
        args.virtual_gib, args.data_mib
    );
    if !(args.reuse_fixtures && source.exists()) {
        make_source_disk(source, args.virtual_gib << 30, args.data_mib << 20, 7)?;
    }
    for f in selected {
        let out = files.join(format!("{}.img", f.name));
        if f.name == "raw" {
            if !out.exists() {
                std::fs::hard_link(source, &out)?;
            }
            continue;
        }
        if args.reuse_fixtures && out.exists() {
            continue;
        }
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new("qemu-img");
        cmd.args(["convert", "-f", "raw", "-O", f.qemu_fmt])
            .args(f.opts)
            .arg(source)
            .arg(&out);
        run_cmd(cmd).with_context(|| format!("making the {} fixture", f.name))?;
    }
    Ok(())
}

/// What one benchmark run shares between its formats.
struct Bench {
    client: Client,
    server_pid: u32,
    /// The server's data folder (where images are stored; d, e and f write there).
    data_dir: PathBuf,
    work: PathBuf,
    origin: String,
    repeat: usize,
    skip_baseline: bool,
}

/// One format's figures: medians of `repeat` runs (b runs once).
struct Row {
    a: Timed,
    b: f64,
    c: Timed,
    d: f64,
    e: f64,
    f: f64,
    peak_rss: u64,
}

impl Bench {
    /// Times a, b, c, d, e and f for one format; the last import's seconds
    /// and phases.
    async fn measure(&self, f: &Fmt, path: &Path) -> anyhow::Result<(Row, (f64, PhaseTimes))> {
        let url = format!("{}/{}.img", self.origin, f.name);
        // Each timed run starts with no dirty pages left by the one before
        // (the fixtures, the baseline's files), so none pays for another's
        // writeback.
        settle()?;
        let b = if self.skip_baseline {
            f64::NAN
        } else {
            baseline(&url, f.qemu_fmt, &self.work)?
        };
        let (mut a_runs, mut c_runs, mut d_runs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut e_runs, mut f_runs, mut peak, mut last) =
            (Vec::new(), Vec::new(), 0u64, (0.0, Vec::new()));
        for n in 0..self.repeat {
            settle()?;
            c_runs.push(floor(&url, path)?);
            settle()?;
            let sampler = RssSampler::start(self.server_pid);
            let cpu = CpuMeter::start();
            let name = format!("bench-{}-{n}", f.name);
            let (a, id) = import_once(&self.client, &url, &name).await?;
            a_runs.push(Timed {
                secs: a,
                cpu: cpu.seconds(),
            });
            peak = peak.max(sampler.finish());
            last = (a, phase_times(&self.client, &id).await?);
            let stored =
                std::fs::metadata(self.data_dir.join("images").join(format!("{id}.qcow2")))
                    .map(|m| m.len())
                    .unwrap_or(0);
            // Stored images are not kept: a full run would need tens of GiB.
            self.client
                .call("DeleteImages", &json!({"ImageIds": [id]}))
                .await?;
            settle()?;
            d_runs.push(store_floor(&self.data_dir, stored)?);
            settle()?;
            e_runs.push(floor_together(&url, &self.data_dir, stored)?);
            settle()?;
            f_runs.push(floor_with_decode(&url, &self.data_dir, stored, path)?);
        }
        let row = Row {
            a: Timed::median(&mut a_runs),
            b,
            c: Timed::median(&mut c_runs),
            d: median(&mut d_runs),
            e: median(&mut e_runs),
            f: median(&mut f_runs),
            peak_rss: peak,
        };
        Ok((row, last))
    }
}

fn print_legend(args: &ImportArgs) {
    println!(
        "\nImport of a {} GiB-virtual disk holding {} MiB of mixed data, served on loopback HTTP.",
        args.virtual_gib, args.data_mib
    );
    println!("a = imagegate ImportImage → NORMAL; b = curl -o + qemu-img convert -O qcow2 + sha256sum; c = max(curl -o /dev/null, openssl dgst -sha256)");
    println!("d = the store's floor: writing as many bytes as the stored image holds into the server's data folder (O_DIRECT, made durable as it goes), which an importer cannot skip either");
    println!("e = c and d at once on the same cores: curl | openssl dgst -sha256 while d writes, which is what an importer must do together at the least (no conversion, no inspection)");
    println!("f = e with the source's guest data decoded from its file on one more thread (inflated for the compressed formats), which an importer of a compressed source must do as well");
    println!(
        "cpu = CPU-seconds the whole machine spent (user + system, all cores) during a, and during c's download + hash passes; medians of {} run(s)\n",
        args.repeat.max(1)
    );
    println!(
        "{:<13} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>7} {:>7} {:>8} {:>8} {:>10}",
        "format",
        "source",
        "a (s)",
        "b (s)",
        "c (s)",
        "d (s)",
        "e (s)",
        "f (s)",
        "a/b",
        "a/c",
        "a/max(c,d)",
        "a/e",
        "a/f",
        "cpu a",
        "cpu c",
        "peak RSS"
    );
}

fn print_row(f: &Fmt, size: u64, r: &Row) {
    println!(
        "{:<13} {:>8.0}M {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.2} {:>7.2} {:>9.2} {:>7.2} {:>7.2} {:>8.2} {:>8.2} {:>8.0}Mi{}",
        f.name,
        mib(size),
        r.a.secs,
        r.b,
        r.c.secs,
        r.d,
        r.e,
        r.f,
        r.a.secs / r.b,
        r.a.secs / r.c.secs,
        r.a.secs / r.c.secs.max(r.d),
        r.a.secs / r.e,
        r.a.secs / r.f,
        r.a.cpu,
        r.c.cpu,
        mib(r.peak_rss),
        if f.compressed {
            "  (compressed source)"
        } else {
            ""
        }
    );
}

fn print_breakdowns(breakdowns: &[(&str, f64, PhaseTimes)]) {
    println!("\nWhere one import's time went (the last (a) run of each format; PhaseTimes of DescribeImportImageTasks; the download runs under every phase; rest = the API call, queue, claim, commit and the 25 ms polling):");
    for (name, total, phases) in breakdowns {
        let listed: f64 = phases.iter().map(|(_, s)| s).sum();
        let parts: Vec<String> = phases.iter().map(|(p, s)| format!("{p} {s:.2}")).collect();
        println!(
            "{name:<13} {total:>6.2} s = {}, rest {:.2}",
            parts.join(", "),
            total - listed
        );
    }
}

/// Memory must not grow with the virtual size (the same data in a 64 GiB-
/// virtual qcow2), and four imports at once against one.
async fn memory_and_concurrency(
    bench: &Bench,
    args: &ImportArgs,
    source: &Path,
    files: &Path,
) -> anyhow::Result<()> {
    let (client, origin) = (&bench.client, &bench.origin);
    let big_raw = files.join("source64.raw");
    make_source_disk(&big_raw, 64 << 30, args.data_mib << 20, 7)?;
    let big = files.join("big64.img");
    let _ = std::fs::remove_file(&big);
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&big_raw)
        .arg(&big);
    run_cmd(cmd)?;
    let _ = std::fs::remove_file(&big_raw);
    let small = files.join("qcow2.img");
    if !small.exists() {
        let mut cmd = Command::new("qemu-img");
        cmd.args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(source)
            .arg(&small);
        run_cmd(cmd)?;
    }
    settle()?;
    let s = RssSampler::start(bench.server_pid);
    let (t_small, _) = import_once(client, &format!("{origin}/qcow2.img"), "bench-rss-4g").await?;
    let p_small = s.finish();
    settle()?;
    let s = RssSampler::start(bench.server_pid);
    let (t_big, _) = import_once(client, &format!("{origin}/big64.img"), "bench-rss-64g").await?;
    let p_big = s.finish();
    println!(
        "\npeak RSS, qcow2 with the same data: {} GiB virtual {:.0} MiB ({t_small:.2} s); 64 GiB virtual {:.0} MiB ({t_big:.2} s)",
        args.virtual_gib,
        mib(p_small),
        mib(p_big)
    );

    // Aggregate throughput: 1 import, then 4 at once.
    let size = std::fs::metadata(&small)?.len() as f64;
    settle()?;
    let (t1, _) = import_once(client, &format!("{origin}/qcow2.img"), "bench-conc-1").await?;
    settle()?;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..4 {
        let client = client.clone();
        let url = format!("{origin}/qcow2.img");
        set.spawn(async move { import_once(&client, &url, &format!("bench-conc-4-{i}")).await });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let t4 = start.elapsed().as_secs_f64();
    println!(
        "aggregate throughput (qcow2 source bytes): 1 import {:.0} MiB/s; 4 concurrent {:.0} MiB/s ({:.2}x)",
        size / t1 / (1 << 20) as f64,
        4.0 * size / t4 / (1 << 20) as f64,
        (4.0 * size / t4) / (size / t1)
    );
    Ok(())
}

/// ImportImage, then poll until NORMAL; seconds from the call to the state,
/// and the image's id.
async fn import_once(client: &Client, url: &str, name: &str) -> anyhow::Result<(f64, String)> {
    let start = Instant::now();
    let r = client
        .call(
            "ImportImage",
            &json!({
                "Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
                "ImageUrl": url, "ImageName": name, "Force": true,
            }),
        )
        .await?;
    let id = r["ImageId"].as_str().context("no ImageId")?.to_string();
    loop {
        let d = client
            .call("DescribeImages", &json!({"ImageIds": [id]}))
            .await?;
        let state = d["ImageSet"][0]["ImageState"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match state.as_str() {
            "NORMAL" => break,
            "IMPORTING" => tokio::time::sleep(Duration::from_millis(25)).await,
            other => {
                let t = client
                    .call("DescribeImportImageTasks", &json!({"ImageIds": [id]}))
                    .await
                    .unwrap_or_default();
                bail!("import of {url} ended {other}: {t}");
            }
        }
    }
    Ok((start.elapsed().as_secs_f64(), id))
}

/// (phase, seconds) of one import, in the order its phases were entered.
type PhaseTimes = Vec<(String, f64)>;

/// The `PhaseTimes` of a finished import.
async fn phase_times(client: &Client, id: &str) -> anyhow::Result<PhaseTimes> {
    let t = client
        .call("DescribeImportImageTasks", &json!({"ImageIds": [id]}))
        .await?;
    let list = t["ImportImageTaskSet"][0]["PhaseTimes"]
        .as_array()
        .context("no PhaseTimes")?;
    Ok(list
        .iter()
        .map(|p| {
            (
                p["Phase"].as_str().unwrap_or("?").to_string(),
                p["Seconds"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect())
}

/// A sparse raw disk: an MBR whose first partition holds a small Linux root
/// made by mkfs.ext4 (so guest checks pass), then `data` bytes scattered in
/// 4 MiB chunks, alternately random (incompressible) and text.
pub fn make_source_disk(path: &Path, size: u64, data: u64, seed: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let _ = std::fs::remove_file(path);
    let file = std::fs::File::create(path)?;
    file.set_len(size)?;
    drop(file);
    write_linux_root(path)?;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let chunk = 4u64 << 20;
    let chunks = (data / chunk).max(1);
    // Data lives after the 256 MiB root partition region.
    let base = 256u64 << 20;
    let stride = (size - base) / chunks;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; chunk as usize];
    for i in 0..chunks {
        let slack = stride.saturating_sub(chunk) / (64 << 10);
        let jitter = if slack > 0 {
            rng.random_range(0..slack) * (64 << 10)
        } else {
            0
        };
        let off = base + i * stride + jitter;
        if i % 2 == 0 {
            rng.fill(&mut buf[..]);
        } else {
            let mut text = Vec::with_capacity(buf.len());
            let mut line = 0u64;
            while text.len() < buf.len() {
                text.extend_from_slice(
                    format!("{i:06}:{line:08} the quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet\n")
                        .as_bytes(),
                );
                line += 1;
            }
            let n = buf.len();
            buf.copy_from_slice(&text[..n]);
        }
        file.write_all_at(&buf, off)?;
    }
    file.sync_all()?;
    Ok(())
}

/// MBR + a 255 MiB ext4 root (CentOS 7 files, cloud-init, virtio modules).
fn write_linux_root(disk: &Path) -> anyhow::Result<()> {
    let tree = tempfile::tempdir()?;
    let t = tree.path();
    for d in [
        "etc/cloud",
        "usr/bin",
        "boot",
        "lib/modules/3.10.0-1160.el7.x86_64/kernel/drivers/block",
        "lib/modules/3.10.0-1160.el7.x86_64/kernel/drivers/net",
    ] {
        std::fs::create_dir_all(t.join(d))?;
    }
    std::fs::write(
        t.join("etc/os-release"),
        "NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\n",
    )?;
    std::fs::write(
        t.join("etc/centos-release"),
        "CentOS Linux release 7.9.2009 (Core)\n",
    )?;
    std::fs::write(
        t.join("etc/cloud/cloud.cfg"),
        "datasource_list: [ ConfigDrive ]\n",
    )?;
    std::fs::write(t.join("usr/bin/cloud-init"), "#!/usr/bin/python\n")?;
    std::fs::copy("/bin/sh", t.join("usr/bin/sh")).context("copying /bin/sh")?;
    std::os::unix::fs::symlink("usr/bin", t.join("bin"))?;
    std::fs::write(t.join("boot/vmlinuz-3.10.0-1160.el7.x86_64"), b"kernel")?;
    let m = "lib/modules/3.10.0-1160.el7.x86_64/kernel/drivers";
    std::fs::write(t.join(format!("{m}/block/virtio_blk.ko.xz")), b"")?;
    std::fs::write(t.join(format!("{m}/net/virtio_net.ko.xz")), b"")?;

    let mut sfdisk = Command::new("sfdisk");
    sfdisk
        .arg("--quiet")
        .arg(disk)
        .stdin(std::process::Stdio::piped());
    let mut child = sfdisk.spawn().context("running sfdisk (package fdisk)")?;
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().context("sfdisk stdin")?;
        stdin.write_all(b"label: dos\nstart=2048, size=522240, type=83, bootable\n")?;
    }
    if !child.wait()?.success() {
        bail!("sfdisk failed");
    }
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-d"])
        .arg(t)
        .args(["-E", "offset=1048576"])
        .arg(disk)
        .arg("261120k");
    run_cmd(mkfs).context("running mkfs.ext4 (package e2fsprogs)")?;
    Ok(())
}
