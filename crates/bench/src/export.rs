//! `export`: diskformat's export writers against `qemu-img convert` of the
//! same qcow2 into the same folder, in the same run.
//!
//! The source is a 4 GiB-virtual qcow2 holding 1 GiB of random data in
//! 4 MiB chunks spread over the disk, made by qemu-img (the stored form of
//! an imported image). For each format, (a) is this binary's `export-one`
//! child (open the qcow2 with diskformat, export through a `FileSink`) and
//! (b) is `qemu-img convert -f qcow2 -O <fmt>` (VMDK with
//! `subformat=streamOptimized`, VHD `subformat=dynamic`). By default
//! neither syncs (the page-cache measure); `sync` and a pause run untimed
//! before each run, so that one's writeback is not charged to the other and
//! both start from cold memory (`floors::settle_cold`). With `--durable`
//! each side's time runs until its output is on disk (`fsync` of the output
//! file, as the service syncs an export before publishing it). Runs
//! alternate (a, b, b, a, ...); medians are printed with a/b and each side's
//! peak RSS. Every (a) output is then judged identical to the source by
//! `qemu-img compare`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};

use crate::server::{mib, RssSampler};
use diskformat::{ExportFormat, FileSink, Limits};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Working folder (the source and both outputs; ~4 GiB at most).
    #[arg(long, default_value = "bench-out/export")]
    workdir: PathBuf,
    /// Virtual size of the source disk, GiB.
    #[arg(long, default_value_t = 4)]
    virtual_gib: u64,
    /// Random data written into it, MiB.
    #[arg(long, default_value_t = 1024)]
    data_mib: u64,
    /// Formats to run: raw, qcow2, vhd, vmdk (default: all).
    #[arg(long, value_delimiter = ',')]
    formats: Vec<String>,
    /// Runs of each side per format; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Keep the source of an earlier run in the same workdir.
    #[arg(long)]
    reuse_fixtures: bool,
    /// Time each side until its output is on disk (fsync), not only in the
    /// page cache.
    #[arg(long)]
    durable: bool,
}

/// The child's side: export `src` (any format diskformat opens) as `fmt`
/// to `out`, then print the process's peak RSS (VmHWM) in bytes.
#[derive(clap::Args)]
pub struct ExportOneArgs {
    src: PathBuf,
    format: String,
    out: PathBuf,
    /// fsync the output before exiting.
    #[arg(long)]
    durable: bool,
}

pub fn export_one(args: ExportOneArgs) -> anyhow::Result<()> {
    let format: ExportFormat = args.format.parse()?;
    let src = diskformat::FileSource::open(&args.src)?;
    let disk = diskformat::open(Arc::new(src), &Limits::default())?;
    let mut sink = FileSink::create(&args.out)?;
    diskformat::export(&*disk, format, &mut sink, &mut |_| true)?;
    if args.durable {
        sink.into_file().sync_all()?;
    }
    println!(
        "{}",
        crate::server::proc_status_kib(std::process::id(), "VmHWM:") * 1024
    );
    Ok(())
}

fn qemu_args(f: ExportFormat) -> &'static [&'static str] {
    match f {
        ExportFormat::Raw => &["-O", "raw"],
        ExportFormat::Qcow2 => &["-O", "qcow2"],
        ExportFormat::Vhd => &["-O", "vpc", "-o", "subformat=dynamic"],
        ExportFormat::Vmdk => &["-O", "vmdk", "-o", "subformat=streamOptimized"],
    }
}

fn qemu_name(f: ExportFormat) -> &'static str {
    match f {
        ExportFormat::Raw => "raw",
        ExportFormat::Qcow2 => "qcow2",
        ExportFormat::Vhd => "vpc",
        ExportFormat::Vmdk => "vmdk",
    }
}

/// One timed run: wall seconds and peak RSS in bytes.
struct Run {
    secs: f64,
    rss: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.workdir)?;
    let work = std::fs::canonicalize(&args.workdir)?;
    let src = work.join("source.qcow2");
    if !(args.reuse_fixtures && src.exists()) {
        eprintln!(
            "making a {} GiB qcow2 with {} MiB of random data …",
            args.virtual_gib, args.data_mib
        );
        make_source(&work, &src, args.virtual_gib << 30, args.data_mib << 20)?;
    }
    let formats: Vec<ExportFormat> = ExportFormat::ALL
        .into_iter()
        .filter(|f| {
            args.formats.is_empty()
                || args
                    .formats
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(f.extension()))
        })
        .collect();
    let me = std::env::current_exe()?;
    println!(
        "\nExport of a {} GiB-virtual qcow2 holding {} MiB of random data, into {}; medians of {} run(s).",
        args.virtual_gib,
        args.data_mib,
        work.display(),
        args.repeat.max(1)
    );
    println!("a = diskformat::export (FileSink); b = qemu-img convert -f qcow2 -O <fmt>");
    println!(
        "{}\n",
        if args.durable {
            "durable: each side's time includes the fsync of its output"
        } else {
            "page cache: neither side syncs (sync and a 5 s pause run untimed before each run)"
        }
    );
    println!(
        "{:<7} {:>9} {:>9} {:>7} {:>12} {:>12} {:>11} {:>11}",
        "format", "a s", "b s", "a/b", "a peak RSS", "b peak RSS", "a size", "b size"
    );
    for f in formats {
        let ours = work.join(format!("ours.{}", f.extension()));
        let theirs = work.join(format!("qemu.{}", f.extension()));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..args.repeat.max(1) {
            // Alternate who goes first: the page cache and the disk's
            // writeback favour neither.
            for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
                // The side's previous output goes before the pause, so the
                // memory it frees is as cold as the rest.
                let _ = std::fs::remove_file(if side == 0 { &ours } else { &theirs });
                crate::floors::settle_cold()?;
                if side == 0 {
                    a.push(run_ours(&me, &src, f, &ours, args.durable)?);
                } else {
                    b.push(run_qemu(&src, f, &theirs, args.durable)?);
                }
            }
        }
        compare(&src, f, &ours)?;
        let (sa, sb) = (size(&ours)?, size(&theirs)?);
        let (ta, tb) = (
            median(a.iter().map(|r| r.secs).collect()),
            median(b.iter().map(|r| r.secs).collect()),
        );
        let peak = |v: &[Run]| mib(v.iter().map(|r| r.rss).max().unwrap_or(0));
        println!(
            "{:<7} {ta:>9.2} {tb:>9.2} {:>6.2}× {:>8.0} MiB {:>8.0} MiB {:>7.0} MiB {:>7.0} MiB",
            f.api_name(),
            ta / tb,
            peak(&a),
            peak(&b),
            mib(sa),
            mib(sb)
        );
        let _ = std::fs::remove_file(&ours);
        let _ = std::fs::remove_file(&theirs);
    }
    println!("\nsize = bytes allocated on disk (holes excluded); a's output judged identical to the source by qemu-img compare.");
    Ok(())
}

fn run_ours(
    me: &Path,
    src: &Path,
    f: ExportFormat,
    out: &Path,
    durable: bool,
) -> anyhow::Result<Run> {
    let _ = std::fs::remove_file(out);
    let t = Instant::now();
    let mut cmd = Command::new(me);
    cmd.arg("export-one").arg(src).arg(f.api_name()).arg(out);
    if durable {
        cmd.arg("--durable");
    }
    let o = cmd.stderr(Stdio::inherit()).output()?;
    let secs = t.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!("export-one {f} failed");
    }
    let rss = String::from_utf8_lossy(&o.stdout).trim().parse()?;
    Ok(Run { secs, rss })
}

fn run_qemu(src: &Path, f: ExportFormat, out: &Path, durable: bool) -> anyhow::Result<Run> {
    let _ = std::fs::remove_file(out);
    let t = Instant::now();
    let child = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2"])
        .args(qemu_args(f))
        .arg(src)
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running qemu-img")?;
    let sampler = RssSampler::start(child.id());
    let o = child.wait_with_output()?;
    if durable && o.status.success() {
        std::fs::File::open(out)?.sync_all()?;
    }
    let secs = t.elapsed().as_secs_f64();
    let rss = sampler.finish();
    if !o.status.success() {
        bail!(
            "qemu-img convert {f}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(Run { secs, rss })
}

/// `qemu-img compare`: the export holds the source's guest bytes.
fn compare(src: &Path, f: ExportFormat, out: &Path) -> anyhow::Result<()> {
    let o = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", qemu_name(f)])
        .arg(src)
        .arg(out)
        .output()?;
    if !o.status.success() {
        bail!(
            "{f}: the export differs from the source: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    Ok(())
}

/// Bytes allocated on disk.
fn size(p: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(p)?.blocks() * 512)
}

/// A sparse raw disk of `size` with `data` random bytes in 4 MiB chunks at
/// an even stride, converted to qcow2 by qemu-img.
fn make_source(work: &Path, out: &Path, size: u64, data: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let raw = work.join("source.raw");
    let file = std::fs::File::create(&raw)?;
    file.set_len(size)?;
    let chunk = 4u64 << 20;
    let chunks = (data / chunk).clamp(1, size / chunk);
    let stride = size / chunks / chunk * chunk;
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let mut buf = vec![0u8; chunk as usize];
    for i in 0..chunks {
        rng.fill(&mut buf[..]);
        file.write_all_at(&buf, i * stride)?;
    }
    drop(file);
    let _ = std::fs::remove_file(out);
    let o = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(out)
        .output()?;
    std::fs::remove_file(&raw)?;
    if !o.status.success() {
        bail!("qemu-img convert: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}
