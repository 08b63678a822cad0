//! Signed DescribeImages under concurrency, beside a bare endpoint on the
//! same HTTP stack (axum/hyper) loaded by the same client: the ceiling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::Client;
use crate::server::{mib, Server};

#[derive(clap::Args)]
pub struct ApiArgs {
    /// Images in the catalog before the read benchmark.
    #[arg(long, default_value_t = 10_000)]
    images: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value = "bench-out/api")]
    workdir: std::path::PathBuf,
}

pub async fn run(bin: &str, args: ApiArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.workdir);
    std::fs::create_dir_all(&args.workdir)?;
    let dir = std::fs::canonicalize(&args.workdir)?;
    // No workers: the queued imports must stay queued (their URLs are fake).
    let server = Server::start(bin, &dir, "", &["--no-workers"])?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss();
    let client = Client::new(&server.addr, &server.secret_id, &server.secret_key);

    // Seed the catalog with signed ImportImage calls that only queue; time them.
    let seeded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let client = client.clone();
        let seeded = seeded.clone();
        let total = args.images;
        set.spawn(async move {
            let mut i = worker;
            while i < total {
                let tags = json!([{"ResourceType": "image", "Tags": [{"Key": "team", "Value": format!("t{}", i % 10)}]}]);
                client
                    .call_ok(
                        "ImportImage",
                        &json!({
                            "Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
                            "ImageUrl": format!("https://bench-1250000000.cos.ap-guangzhou.myqcloud.com/disk{i}.qcow2"),
                            "ImageName": format!("bench-{i:06}"), "TagSpecification": tags,
                        }),
                    )
                    .await?;
                seeded.fetch_add(1, Ordering::Relaxed);
                i += 32;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let import_secs = start.elapsed().as_secs_f64();
    let loaded_rss = server.rss();

    let body = json!({"Filters": [{"Name": "tag:team", "Values": ["t3"]}], "Limit": 20});
    let sample = client.call("DescribeImages", &body).await?;
    let page = serde_json::to_vec(&json!({"Response": sample}))?;

    // The ceiling: the same signed request from the same client, answered
    // by a bare axum handler with the very bytes the server answered.
    let bare = start_bare(page.clone()).await?;
    let bare_client = Client::new(&bare.0.to_string(), &server.secret_id, &server.secret_key);
    let (bare_rps, bare_p50, bare_p99) = load(args.connections, args.seconds, {
        let body = body.clone();
        move || {
            let client = bare_client.clone();
            let body = body.clone();
            async move { client.call_ok("DescribeImages", &body).await }
        }
    })
    .await;
    let (rps, p50, p99) = load(args.connections, args.seconds, {
        let client = client.clone();
        move || {
            let client = client.clone();
            let body = body.clone();
            async move { client.call_ok("DescribeImages", &body).await }
        }
    })
    .await;
    bare.1.abort();

    println!(
        "\nAPI benchmark: {} images, {} connections, {} s per run",
        args.images, args.connections, args.seconds
    );
    println!(
        "ImportImage (signed, queue only): {} calls in {:.2} s = {:.0}/s",
        args.images,
        import_secs,
        args.images as f64 / import_secs
    );
    println!(
        "bare endpoint (ceiling, {} B reply): {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
        page.len(),
        bare_rps,
        bare_p50,
        bare_p99
    );
    println!(
        "DescribeImages (signed, 1 filter, Limit 20): {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  = {:.0}% of the ceiling",
        rps,
        p50,
        p99,
        100.0 * rps / bare_rps
    );
    println!(
        "server RSS: idle {:.1} MiB; with {} images {:.1} MiB; after the load {:.1} MiB",
        mib(idle_rss),
        args.images,
        mib(loaded_rss),
        mib(server.rss())
    );
    Ok(())
}

/// A bare axum endpoint replying with a fixed body.
async fn start_bare(
    body: Vec<u8>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let body: bytes::Bytes = body.into();
    let app = axum::Router::new().route(
        "/",
        axum::routing::any(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// Run `make()` requests from `conns` tasks for `secs` seconds; returns
/// (requests/s, p50 ms, p99 ms).
async fn load<F, Fut>(conns: usize, secs: u64, make: F) -> (f64, f64, f64)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..conns {
        let make = make.clone();
        let stop = stop.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match make().await {
                    Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(Ok((lat, e))) = set.join_next().await {
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    if errors > 0 {
        eprintln!("warning: {errors} failed requests");
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            0.0
        } else {
            all[((all.len() as f64 - 1.0) * p) as usize]
        }
    };
    (all.len() as f64 / elapsed, pct(0.50), pct(0.99))
}
