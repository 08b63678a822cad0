//! Start `imagegate serve` as a child process on a free loopback port and
//! watch its memory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

pub struct Server {
    child: Child,
    pub addr: String,
    pub secret_id: String,
    pub secret_key: String,
}

pub const SECRET_ID: &str = "AKIDbenchbenchbenchbenchbenchbench01";
pub const SECRET_KEY: &str = "benchbenchbenchbenchbenchbench01";
pub const APP_ID: u64 = 1250000000;

impl Server {
    /// `extra` is appended to the generated config (TOML).
    pub fn start(bin: &str, dir: &Path, extra: &str, args: &[&str]) -> anyhow::Result<Server> {
        let config = dir.join("imagegate.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\n\
                 data_dir = \"{data}\"\n\
                 regions = [\"ap-guangzhou\"]\n\
                 {extra}\n\
                 [rate_limits]\nenabled = false\n\
                 [[accounts]]\nsecret_id = \"{SECRET_ID}\"\nsecret_key = \"{SECRET_KEY}\"\n\
                 app_id = {APP_ID}\nuin = \"100000000001\"\nimage_quota = 100000\n",
                data = dir.join("data").display(),
            ),
        )?;
        Server::spawn(bin, dir, &config, args, SECRET_ID, SECRET_KEY)
    }

    /// `imagegate serve --config <config> <args>`, its log in `dir`; the
    /// client keys are the ones benchmarks use by default.
    pub fn spawn(
        bin: &str,
        dir: &Path,
        config: &Path,
        args: &[&str],
        secret_id: &str,
        secret_key: &str,
    ) -> anyhow::Result<Server> {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(server_log(dir)?)
            .spawn()
            .with_context(|| {
                format!("starting {bin} (build it with cargo build --release -p imagegate)")
            })?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("imagegate listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                bail!("imagegate did not report its address within 60 s");
            }
        };
        Ok(Server {
            child,
            addr,
            secret_id: secret_id.into(),
            secret_key: secret_key.into(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Current resident set size in bytes.
    pub fn rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's RSS every 20 ms until stopped; keeps the peak.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(proc_status_kib(pid, "VmRSS:") * 1024);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssSampler {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or(0)
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// The server's log: `<dir>/server.log` when `IMAGEGATE_BENCH_LOG` is set
/// (to see where an import spent its time), nowhere otherwise.
fn server_log(dir: &Path) -> anyhow::Result<Stdio> {
    if std::env::var_os("IMAGEGATE_BENCH_LOG").is_none() {
        return Ok(Stdio::null());
    }
    Ok(std::fs::File::create(dir.join("server.log"))?.into())
}
