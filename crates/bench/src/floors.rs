//! The baselines and floors the import benchmark measures imagegate
//! against: the user's script (b), the download-and-hash floor (c), the
//! store's floor (d), both at once (e), e with the source decoded beside it
//! (f); the machine's CPU meter; and the
//! settling between runs that every benchmark here uses.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};

/// The store's floor: seconds to write `bytes` of incompressible data into
/// a new file in `dir` with `O_DIRECT` in 4 MiB writes and make them
/// durable — what storing the image costs the device, whoever writes it.
pub(crate) fn store_floor(dir: &Path, bytes: u64) -> anyhow::Result<f64> {
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
pub(crate) fn floor(url: &str, path: &Path) -> anyhow::Result<Timed> {
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

/// c and d at once: the download piped through the hash while the store's
/// bytes are written as in [`store_floor`]. c and d each alone leave the
/// other core free; an importer must do all three on the same two cores.
pub(crate) fn floor_together(url: &str, dir: &Path, stored: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let store = {
        let dir = dir.to_path_buf();
        std::thread::spawn(move || store_floor(&dir, stored))
    };
    let mut curl = Command::new("curl")
        .args(["-sS", url])
        .stdout(Stdio::piped())
        .spawn()
        .context("running curl")?;
    let pipe = curl.stdout.take().context("curl's stdout")?;
    let hash = Command::new("openssl")
        .args(["dgst", "-sha256"])
        .stdin(pipe)
        .stdout(Stdio::null())
        .status()
        .context("running openssl")?;
    let fetched = curl.wait()?;
    if !hash.success() || !fetched.success() {
        bail!("curl | openssl dgst failed: {fetched} / {hash}");
    }
    store
        .join()
        .map_err(|_| anyhow::anyhow!("the store floor's thread panicked"))??;
    Ok(t.elapsed().as_secs_f64())
}

/// e and, on one more thread, the source's guest data decoded from its
/// file (every data extent read through `diskformat`: inflated for the
/// compressed formats, copied out for the others). An importer of a
/// compressed source must inflate it beside downloading, hashing and
/// storing; c, d and e contain no decompression at all.
pub(crate) fn floor_with_decode(
    url: &str,
    dir: &Path,
    stored: u64,
    source: &Path,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let decode = {
        let source = source.to_path_buf();
        std::thread::spawn(move || decode_guest(&source))
    };
    floor_together(url, dir, stored)?;
    decode
        .join()
        .map_err(|_| anyhow::anyhow!("the decoding thread panicked"))??;
    Ok(t.elapsed().as_secs_f64())
}

/// Reads every data extent of the disk image at `path`, 4 MiB at a time,
/// on the calling thread; returns the guest bytes read.
fn decode_guest(path: &Path) -> anyhow::Result<u64> {
    use diskformat::ExtentKind;
    const WINDOW: u64 = 4 << 20;
    let src = std::sync::Arc::new(diskformat::FileSource::open(path)?);
    let img = diskformat::open(src, &diskformat::Limits::default())?;
    let size = img.virtual_size();
    let mut buf = vec![0u8; WINDOW as usize];
    let (mut pos, mut read) = (0u64, 0u64);
    while pos < size {
        let extent = img.extent_at(pos, size - pos)?;
        let len = extent.len.min(WINDOW).min(size - pos);
        if len == 0 {
            bail!("{}: an empty extent at {pos}", path.display());
        }
        if extent.kind == ExtentKind::Data {
            img.read_guest(pos, &mut buf[..len as usize])?;
            read += len;
        }
        pos += len;
    }
    Ok(read)
}

pub(crate) fn median(runs: &mut [f64]) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// A timed run: wall seconds and the machine's CPU-seconds meanwhile.
#[derive(Clone, Copy)]
pub(crate) struct Timed {
    pub(crate) secs: f64,
    pub(crate) cpu: f64,
}

impl Timed {
    /// The run with the median wall time.
    pub(crate) fn median(runs: &mut [Timed]) -> Timed {
        runs.sort_by(|x, y| x.secs.total_cmp(&y.secs));
        runs[runs.len() / 2]
    }
}

/// CPU time the whole machine spends (user + nice + system + irq + softirq,
/// summed over cores; idle, I/O wait and steal excluded), from /proc/stat.
pub(crate) struct CpuMeter {
    busy_at_start: Option<u64>,
}

impl CpuMeter {
    pub(crate) fn start() -> CpuMeter {
        CpuMeter {
            busy_at_start: busy_ticks(),
        }
    }

    pub(crate) fn seconds(&self) -> f64 {
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

pub(crate) fn baseline(url: &str, qemu_fmt: &str, work: &Path) -> anyhow::Result<f64> {
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

/// How long memory freed by the previous run takes to go cold.
const COOL_DOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// `settle`, then a pause in which the page cache that the previous run's
/// deleted output freed goes back to the host. On these virtual machines
/// freshly freed memory is fast to fill and long-free memory is not (free
/// page reporting hands it to the host, and the first touch faults it back
/// in): writing 1 GiB into the page cache took 0.25 s right after a 1 GiB
/// file was deleted and 0.75 to 0.97 s five seconds later. Whichever side
/// of a comparison ran right after a deletion was favoured; after the pause
/// both start cold, as an export on a server does.
pub(crate) fn settle_cold() -> anyhow::Result<()> {
    settle()?;
    std::thread::sleep(COOL_DOWN);
    Ok(())
}

pub(crate) fn run_cmd(mut cmd: Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
