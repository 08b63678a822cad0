//! ImportImage → NORMAL, against what a user would script and against the
//! floor no importer can go under, in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::client::Client;
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
    /// of <workdir>/server: e.g. on another device, or on tmpfs to see the
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
    let virtual_size = args.virtual_gib << 30;

    let source = files.join("source.raw");
    eprintln!(
        "making a {} GiB disk with {} MiB of data …",
        args.virtual_gib, args.data_mib
    );
    if !(args.reuse_fixtures && source.exists()) {
        make_source_disk(&source, virtual_size, args.data_mib << 20, 7)?;
    }

    let selected: Vec<&Fmt> = FORMATS
        .iter()
        .filter(|f| args.formats.is_empty() || args.formats.iter().any(|n| n == f.name))
        .collect();
    for f in &selected {
        let out = files.join(format!("{}.img", f.name));
        if f.name == "raw" {
            if !out.exists() {
                std::fs::hard_link(&source, &out)?;
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
            .arg(&source)
            .arg(&out);
        run_cmd(cmd).with_context(|| format!("making the {} fixture", f.name))?;
    }

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
    let client = Client::new(&server.addr, &server.secret_id, &server.secret_key);

    println!(
        "\nImport of a {} GiB-virtual disk holding {} MiB of mixed data, served on loopback HTTP.",
        args.virtual_gib, args.data_mib
    );
    println!("a = imagegate ImportImage → NORMAL; b = curl -o + qemu-img convert -O qcow2 + sha256sum; c = max(curl -o /dev/null, openssl dgst -sha256)");
    println!("d = the store's floor: writing as many bytes as the stored image holds into the server's data folder (O_DIRECT, made durable as it goes), which an importer cannot skip either");
    println!(
        "cpu = CPU-seconds the whole machine spent (user + system, all cores) during a, and during c's download + hash passes; medians of {} run(s)\n",
        args.repeat.max(1)
    );
    println!(
        "{:<13} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>8} {:>8} {:>10}",
        "format",
        "source",
        "a (s)",
        "b (s)",
        "c (s)",
        "d (s)",
        "a/b",
        "a/c",
        "a/max(c,d)",
        "cpu a",
        "cpu c",
        "peak RSS"
    );
    let mut n = 0;
    // Per format: the last (a) run's seconds and its PhaseTimes.
    let mut breakdowns: Vec<(&str, f64, PhaseTimes)> = Vec::new();
    for f in &selected {
        let path = files.join(format!("{}.img", f.name));
        let size = std::fs::metadata(&path)?.len();
        let url = format!("{origin}/{}.img", f.name);
        // Each timed run starts with no dirty pages left by the one before
        // (the fixtures, the baseline's files), so none pays for another's
        // writeback.
        settle()?;
        let b = if args.skip_baseline {
            f64::NAN
        } else {
            baseline(&url, f.qemu_fmt, &work)?
        };
        let (mut a_runs, mut c_runs, mut d_runs, mut peak) =
            (Vec::new(), Vec::new(), Vec::new(), 0u64);
        for _ in 0..args.repeat.max(1) {
            settle()?;
            c_runs.push(floor(&url, &path)?);
            n += 1;
            settle()?;
            let sampler = RssSampler::start(server.pid());
            let cpu = CpuMeter::start();
            let (a, id) = import_once(&client, &url, &format!("bench-{}-{n}", f.name)).await?;
            a_runs.push(Timed {
                secs: a,
                cpu: cpu.seconds(),
            });
            peak = peak.max(sampler.finish());
            breakdowns.retain(|(name, _, _)| *name != f.name);
            breakdowns.push((f.name, a, phase_times(&client, &id).await?));
            let stored =
                std::fs::metadata(server_dir.join("data/images").join(format!("{id}.qcow2")))
                    .map(|m| m.len())
                    .unwrap_or(0);
            // Stored images are not kept: a full run would need tens of GiB.
            client
                .call("DeleteImages", &json!({"ImageIds": [id]}))
                .await?;
            settle()?;
            d_runs.push(store_floor(&server_dir.join("data"), stored)?);
        }
        let (a, c) = (Timed::median(&mut a_runs), Timed::median(&mut c_runs));
        d_runs.sort_by(f64::total_cmp);
        let d = d_runs[d_runs.len() / 2];
        println!(
            "{:<13} {:>8.0}M {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.2} {:>7.2} {:>9.2} {:>8.2} {:>8.2} {:>8.0}Mi{}",
            f.name,
            mib(size),
            a.secs,
            b,
            c.secs,
            d,
            a.secs / b,
            a.secs / c.secs,
            a.secs / c.secs.max(d),
            a.cpu,
            c.cpu,
            mib(peak),
            if f.compressed {
                "  (compressed source)"
            } else {
                ""
            }
        );
    }

    println!("\nWhere one import's time went (the last (a) run of each format; PhaseTimes of DescribeImportImageTasks; the download runs under every phase; rest = the API call, queue, claim, commit and the 25 ms polling):");
    for (name, total, phases) in &breakdowns {
        let listed: f64 = phases.iter().map(|(_, s)| s).sum();
        let parts: Vec<String> = phases.iter().map(|(p, s)| format!("{p} {s:.2}")).collect();
        println!(
            "{name:<13} {total:>6.2} s = {}, rest {:.2}",
            parts.join(", "),
            total - listed
        );
    }

    if !args.quick {
        // Memory must not grow with the virtual size: the same data in a
        // 64 GiB-virtual qcow2.
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
                .arg(&source)
                .arg(&small);
            run_cmd(cmd)?;
        }
        settle()?;
        let s = RssSampler::start(server.pid());
        let (t_small, _) =
            import_once(&client, &format!("{origin}/qcow2.img"), "bench-rss-4g").await?;
        let p_small = s.finish();
        settle()?;
        let s = RssSampler::start(server.pid());
        let (t_big, _) =
            import_once(&client, &format!("{origin}/big64.img"), "bench-rss-64g").await?;
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
        let (t1, _) = import_once(&client, &format!("{origin}/qcow2.img"), "bench-conc-1").await?;
        settle()?;
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..4 {
            let client = client.clone();
            let url = format!("{origin}/qcow2.img");
            set.spawn(
                async move { import_once(&client, &url, &format!("bench-conc-4-{i}")).await },
            );
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
    }
    drop(server);
    drop(fileserver);
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

/// The store's floor: seconds to write `bytes` of incompressible data into
/// a new file in `dir` with `O_DIRECT` in 4 MiB writes and make them
/// durable — what storing the image costs the device, whoever writes it.
fn store_floor(dir: &Path, bytes: u64) -> anyhow::Result<f64> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const BUF: usize = 4 << 20;
    let path = dir.join("store-floor.tmp");
    let mut mem = vec![0u8; BUF + 4096];
    let at = mem.as_ptr().align_offset(4096);
    let buf = &mut mem[at..at + BUF];
    rand::rngs::StdRng::seed_from_u64(3).fill(&mut buf[..]);
    let t = Instant::now();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    // Made durable every 64 MiB as it goes, then at the end (as imagegate
    // does; one fsync at the end alone is slower on these disks).
    let mut off = 0u64;
    while off < bytes {
        file.write_all_at(buf, off)?;
        off += BUF as u64;
        if off.is_multiple_of(64 << 20) {
            file.sync_data()?;
        }
    }
    file.sync_all()?;
    let secs = t.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(secs)
}

/// The floor: the slower of the download alone and the hash alone (the
/// CPU figure is both passes together: the work an importer must do).
fn floor(url: &str, path: &Path) -> anyhow::Result<Timed> {
    let cpu = CpuMeter::start();
    let t = Instant::now();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", url]);
    run_cmd(cmd)?;
    let download = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut cmd = Command::new("openssl");
    cmd.args(["dgst", "-sha256"]).arg(path);
    run_cmd(cmd)?;
    let hash = t.elapsed().as_secs_f64();
    Ok(Timed {
        secs: download.max(hash),
        cpu: cpu.seconds(),
    })
}

/// A timed run: wall seconds and the machine's CPU-seconds meanwhile.
#[derive(Clone, Copy)]
struct Timed {
    secs: f64,
    cpu: f64,
}

impl Timed {
    /// The run with the median wall time.
    fn median(runs: &mut [Timed]) -> Timed {
        runs.sort_by(|x, y| x.secs.total_cmp(&y.secs));
        runs[runs.len() / 2]
    }
}

/// CPU time the whole machine spends (user + nice + system + irq + softirq,
/// summed over cores; idle, I/O wait and steal excluded), from /proc/stat.
struct CpuMeter {
    busy_at_start: Option<u64>,
}

impl CpuMeter {
    fn start() -> CpuMeter {
        CpuMeter {
            busy_at_start: busy_ticks(),
        }
    }

    fn seconds(&self) -> f64 {
        match (self.busy_at_start, busy_ticks()) {
            // /proc/stat counts in USER_HZ, 100 per second on Linux.
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 100.0,
            _ => f64::NAN,
        }
    }
}

fn busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal …
    let pick = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(pick(0) + pick(1) + pick(2) + pick(5) + pick(6))
}

fn baseline(url: &str, qemu_fmt: &str, work: &Path) -> anyhow::Result<f64> {
    let tmp = work.join("baseline.download");
    let out = work.join("baseline.qcow2");
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(&out);
    let t = Instant::now();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o"]).arg(&tmp).arg(url);
    run_cmd(cmd)?;
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", qemu_fmt, "-O", "qcow2"])
        .arg(&tmp)
        .arg(&out);
    run_cmd(cmd)?;
    let mut cmd = Command::new("sha256sum");
    cmd.arg(&tmp);
    run_cmd(cmd)?;
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(&out);
    Ok(secs)
}

/// Flushes every dirty page to disk (`sync`).
pub(crate) fn settle() -> anyhow::Result<()> {
    run_cmd(Command::new("sync"))
}

fn run_cmd(mut cmd: Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
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
