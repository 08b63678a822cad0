//! Rate limits shared through PostgreSQL (issue 16): signed DescribeImages
//! through two API nodes on one PostgreSQL catalog, with rate limits off,
//! per node (`scope = "node"`) and shared (`scope = "cluster"`), in one run,
//! the modes interleaved round after round.
//!
//! - Under the limits: every request signed by the next of `--accounts`
//!   accounts, so each stays well below DescribeImages' 40/s and every
//!   request is admitted: what the shared limiter adds to an admitted request.
//! - A flood: one more account on every connection: what the cluster admits
//!   (the documented rate is 40/s) and what a refusal costs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::client::Client;
use crate::server::Server;

#[derive(clap::Args)]
pub struct RateLimitArgs {
    /// A PostgreSQL role that may create databases (one per measurement,
    /// dropped after it).
    #[arg(long, env = "IMAGEGATE_TEST_PG_URL")]
    pg_url: String,
    /// Accounts sharing the load under the limits.
    #[arg(long, default_value_t = 400)]
    accounts: usize,
    /// Concurrent connections, spread over the two nodes.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of (off, node, cluster).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    #[arg(long, default_value = "bench-out/ratelimit")]
    workdir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Off,
    Node,
    Cluster,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Node => "per node",
            Mode::Cluster => "shared",
        }
    }

    fn toml(self) -> &'static str {
        match self {
            Mode::Off => "[rate_limits]\nenabled = false\n",
            Mode::Node => "[rate_limits]\nenabled = true\nscope = \"node\"\n",
            Mode::Cluster => "[rate_limits]\nenabled = true\nscope = \"cluster\"\n",
        }
    }
}

/// What one load run saw.
#[derive(Default)]
struct Tally {
    /// Latencies of admitted requests, ms.
    admitted: Vec<f64>,
    /// Latencies of RequestLimitExceeded answers, ms.
    refused: Vec<f64>,
    other: u64,
    secs: f64,
}

impl Tally {
    fn pct(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        sorted[((sorted.len() as f64 - 1.0) * p) as usize]
    }

    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.secs
    }
}

pub async fn run(bin: &str, args: RateLimitArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.workdir);
    std::fs::create_dir_all(&args.workdir)?;
    let dir = std::fs::canonicalize(&args.workdir)?;
    println!(
        "\nDescribeImages through 2 API nodes on one PostgreSQL catalog, {} connections, {} s per run",
        args.connections, args.seconds
    );
    println!(
        "{:<9} | under the limits ({} accounts): req/s   p50 ms  p99 ms  refused | flood (1 account): admitted/s  refused/s  refusal p50 ms",
        "limits", args.accounts
    );
    for round in 0..args.rounds {
        for mode in [Mode::Off, Mode::Node, Mode::Cluster] {
            let work = dir.join(format!("r{round}-{mode:?}"));
            let (under, flood) = measure(bin, &args, mode, &work).await?;
            println!(
                "{:<9} | {:>39.0} {:>8.2} {:>7.2} {:>8} | {:>30.1} {:>10.1} {:>14.2}",
                mode.name(),
                under.rate(under.admitted.len()),
                Tally::pct(&under.admitted, 0.5),
                Tally::pct(&under.admitted, 0.99),
                under.refused.len() as u64 + under.other,
                flood.rate(flood.admitted.len()),
                flood.rate(flood.refused.len()),
                Tally::pct(&flood.refused, 0.5),
            );
        }
    }
    Ok(())
}

/// One mode on a fresh database: (under the limits, flood).
async fn measure(
    bin: &str,
    args: &RateLimitArgs,
    mode: Mode,
    work: &Path,
) -> anyhow::Result<(Tally, Tally)> {
    let db = format!("igbench_rl_{}", uuid::Uuid::new_v4().simple());
    admin(&args.pg_url, &format!("CREATE DATABASE {db}")).await?;
    let (base, _) = args
        .pg_url
        .rsplit_once('/')
        .context("--pg-url must end with /<database>")?;
    let url = format!("{base}/{db}");
    let result = async {
        let nodes = start_nodes(bin, work, &url, mode, args.accounts + 1)?;
        let clients: Vec<Client> = nodes
            .iter()
            .map(|n| Client::new(&n.addr, &n.secret_id, &n.secret_key))
            .collect();
        let keys: Vec<(String, String)> = (0..=args.accounts).map(account_keys).collect();
        let spread = keys[..args.accounts].to_vec();
        let under = load(&clients, &spread, args.connections, args.seconds).await;
        let flood = keys[args.accounts..].to_vec();
        let flood = load(&clients, &flood, args.connections, args.seconds).await;
        drop(nodes);
        anyhow::Ok((under, flood))
    }
    .await;
    admin(
        &args.pg_url,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    )
    .await?;
    result
}

fn account_keys(i: usize) -> (String, String) {
    (
        format!("AKIDratebench{i:06}"),
        format!("ratebenchkey{i:06}"),
    )
}

fn start_nodes(
    bin: &str,
    work: &Path,
    url: &str,
    mode: Mode,
    accounts: usize,
) -> anyhow::Result<Vec<Server>> {
    let mut nodes = Vec::new();
    for n in 0..2 {
        let dir = work.join(format!("node{n}"));
        std::fs::create_dir_all(&dir)?;
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nregions = [\"ap-guangzhou\"]\n{}\
             [catalog]\nurl = \"{url}\"\n",
            dir.join("data").display(),
            mode.toml()
        );
        for i in 0..accounts {
            let (id, key) = account_keys(i);
            text.push_str(&format!(
                "[[accounts]]\nsecret_id = \"{id}\"\nsecret_key = \"{key}\"\n\
                 app_id = {}\nuin = \"{}\"\n",
                1_250_000_000 + i,
                100_000_000_000u64 + i as u64
            ));
        }
        let config = dir.join("imagegate.toml");
        std::fs::write(&config, text)?;
        let (id, key) = account_keys(0);
        nodes.push(Server::spawn(
            bin,
            &dir,
            &config,
            &["--no-workers"],
            &id,
            &key,
        )?);
    }
    Ok(nodes)
}

async fn admin(url: &str, sql: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url)
        .await
        .context("connecting to --pg-url")?;
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&pool)
        .await
        .with_context(|| sql.to_string())?;
    pool.close().await;
    Ok(())
}

/// `conns` tasks, task `t` on node `t % nodes`, each request signed by the
/// next of `keys`, for `secs` seconds.
async fn load(nodes: &[Client], keys: &[(String, String)], conns: usize, secs: u64) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    let body = json!({"Limit": 20});
    for t in 0..conns {
        let node = nodes[t % nodes.len()].clone();
        let signers: Vec<Client> = keys.iter().map(|(i, k)| node.as_account(i, k)).collect();
        let (stop, body) = (stop.clone(), body.clone());
        set.spawn(async move {
            let mut tally = Tally::default();
            let mut k = t;
            while !stop.load(Ordering::Relaxed) {
                let client = &signers[k % signers.len()];
                k += conns;
                let t0 = Instant::now();
                match client.call_code("DescribeImages", &body).await {
                    Ok(None) => tally.admitted.push(t0.elapsed().as_secs_f64() * 1000.0),
                    Ok(Some(code)) if code == "RequestLimitExceeded" => {
                        tally.refused.push(t0.elapsed().as_secs_f64() * 1000.0)
                    }
                    Ok(Some(_)) | Err(_) => tally.other += 1,
                }
            }
            tally
        });
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    while let Some(Ok(t)) = set.join_next().await {
        all.admitted.extend(t.admitted);
        all.refused.extend(t.refused);
        all.other += t.other;
    }
    all.secs = start.elapsed().as_secs_f64();
    if all.other > 0 {
        eprintln!("warning: {} requests failed otherwise", all.other);
    }
    all.admitted.sort_by(|a, b| a.total_cmp(b));
    all.refused.sort_by(|a, b| a.total_cmp(b));
    all
}
