//! The shared buckets on a real PostgreSQL: two limiters standing for two
//! nodes (each with its own pool) on one fresh database, and one of them
//! behind a TCP proxy that can stop forwarding, to see what a request does
//! while the database does not answer.
//!
//! They need `IMAGEGATE_TEST_PG_URL` (a role that may create databases), so
//! they are ignored by a plain `cargo test`; scripts/test runs them in its
//! PostgreSQL pass (`cargo test -p imagegate --lib ratelimit::pg_tests --
//! --ignored`), where a missing URL is a failure.

use super::*;
use crate::catalog::Catalog;
use crate::config::Config;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const UIN: &str = "100000000001";
/// DescribeImageSharePermission: 10 per second.
const ACTION: &str = "DescribeImageSharePermission";
const RATE: u32 = 10;
/// A request that takes longer than this has hung.
const HUNG: Duration = Duration::from_secs(10);

/// A fresh database, dropped by `drop_db`.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

async fn admin_exec(admin: &str, sql: String) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(admin)
        .await
        .expect("IMAGEGATE_TEST_PG_URL reachable");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&pool)
        .await
        .expect("admin statement");
    pool.close().await;
}

async fn fresh_db() -> TestDb {
    let admin = std::env::var("IMAGEGATE_TEST_PG_URL")
        .expect("IMAGEGATE_TEST_PG_URL (a PostgreSQL role that may create databases)");
    let name = format!("igtest_rl_{}", uuid::Uuid::new_v4().simple());
    admin_exec(&admin, format!("CREATE DATABASE {name}")).await;
    let (base, _) = admin.rsplit_once('/').expect("URL ends with /<database>");
    let url = format!("{base}/{name}");
    TestDb { admin, name, url }
}

impl TestDb {
    async fn drop_db(self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        admin_exec(&self.admin, sql).await;
    }
}

/// A catalog on `url`, migrations applied (0006 creates `rate_buckets`).
async fn catalog(url: &str) -> Catalog {
    let mut config = Config::default();
    config.catalog.url = Some(url.to_string());
    Catalog::open(&config).await.expect("catalog opens")
}

/// A node's limiter on `url`, on a pool of its own as a server's is, with
/// its connections open: a first connect (SCRAM in a debug build on a busy
/// machine) can outlast the shared timeout, and the node would then decide
/// alone where the test measures the shared bucket.
async fn node(url: &str) -> RateLimiter {
    let pool = SharedBuckets::pool(url).expect("pool");
    let mut open = Vec::new();
    for _ in 0..shared::POOL {
        open.push(pool.acquire().await.expect("the pool connects"));
    }
    drop(open);
    let shared = SharedBuckets::with_timing(pool, shared::TIMEOUT, Duration::from_millis(500));
    RateLimiter::with_shared(1, shared)
}

async fn check(rl: &RateLimiter) -> bool {
    let r = tokio::time::timeout(HUNG, rl.check(0, UIN, ACTION)).await;
    r.expect("a rate-limit check hung").is_ok()
}

/// Sends `n` requests to `rl`; how many were admitted.
async fn burst(rl: &RateLimiter, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        admitted += usize::from(check(rl).await);
    }
    admitted
}

/// Sends requests to `rl` until one is refused (its bucket, and so the
/// shared one, holds less than a token then).
async fn drain(rl: &RateLimiter) {
    for _ in 0..100 {
        if !check(rl).await {
            return;
        }
    }
    panic!("100 requests in a row admitted at 10 per second");
}

#[tokio::test]
#[ignore = "needs PostgreSQL (IMAGEGATE_TEST_PG_URL): scripts/test runs it in its PostgreSQL pass"]
async fn two_nodes_share_one_rate() {
    let db = fresh_db().await;
    let catalog = catalog(&db.url).await;
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    assert!(a.is_shared());
    let t0 = Instant::now();
    // Node a takes the whole burst; node b, whose own bucket is full, gets
    // only what refilled meanwhile. Per-node buckets would admit 2 x 10.
    let on_a = burst(&a, 30).await;
    let on_b = burst(&b, 30).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let ceiling = RATE as f64 * (1.0 + elapsed);
    eprintln!("a {on_a}, b {on_b} admitted in {elapsed:.3} s (ceiling {ceiling:.1})");
    assert!(on_a >= RATE as usize, "a: {on_a}");
    assert!((on_a + on_b) as f64 <= ceiling + 1.0, "{on_a} + {on_b}");

    // Both at once from eight tasks for 1.5 s: never more than the rate,
    // and not much less either (the refill is used, not lost).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8 {
        let rl = if i % 2 == 0 { a.clone() } else { b.clone() };
        set.spawn(async move {
            let mut admitted = 0usize;
            while t0.elapsed() < Duration::from_millis(1500) {
                admitted += usize::from(check(&rl).await);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            admitted
        });
    }
    let mut admitted = 0;
    while let Some(n) = set.join_next().await {
        admitted += n.expect("task");
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let ceiling = RATE as f64 * (1.0 + elapsed);
    eprintln!("concurrent: {admitted} admitted in {elapsed:.3} s (ceiling {ceiling:.1})");
    assert!(admitted as f64 <= ceiling + 1.0, "{admitted}");
    assert!(admitted as f64 >= RATE as f64 * elapsed * 0.8, "{admitted}");
    catalog.close().await;
    db.drop_db().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (IMAGEGATE_TEST_PG_URL): scripts/test runs it in its PostgreSQL pass"]
async fn a_database_that_does_not_answer_fails_open_to_the_nodes_bucket() {
    let db = fresh_db().await;
    let proxy = Proxy::start(&db.url).await;
    let catalog = catalog(&db.url).await;
    let (other, rl) = (node(&db.url).await, node(&proxy.url).await);
    // The other node empties the shared bucket: this one is refused.
    assert_eq!(burst(&other, 10).await, 10);
    assert!(
        refused_while_held_empty(&other, &rl).await,
        "the shared bucket is empty"
    );

    // The database stops answering this node (a partition, not a refused
    // connection), and the other node empties the shared bucket again.
    proxy.freeze();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(burst(&other, 10).await, 10);
    // No request hangs, and this node's own bucket decides: its ten tokens
    // (plus what refills meanwhile), where the shared bucket would have
    // admitted only what refilled.
    let fallbacks = crate::metrics::global().shared_limit_unavailable_total();
    let t0 = Instant::now();
    let admitted = burst(&rl, 20).await;
    let elapsed = t0.elapsed().as_secs_f64();
    eprintln!("frozen: {admitted} of 20 admitted in {elapsed:.3} s");
    assert!(admitted >= RATE as usize, "{admitted}");
    // Each of them is counted as decided without the shared buckets.
    let counted = crate::metrics::global().shared_limit_unavailable_total() - fallbacks;
    assert!(counted >= admitted as u64, "{counted} < {admitted}");
    assert!(
        admitted as f64 <= RATE as f64 * (1.0 + elapsed) + 1.0,
        "{admitted}"
    );

    // The partition ends (its connections are reset). After the pause the
    // shared bucket decides again: with the other node holding it empty,
    // this node is refused although its own bucket has tokens.
    proxy.thaw();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        refused_while_held_empty(&other, &rl).await,
        "the shared bucket decides again once it answers"
    );
    catalog.close().await;
    db.drop_db().await;
}

/// Whether `rl` is refused while `other` holds the shared bucket empty, in
/// one of eight rounds. One round may not show it: after the partition,
/// `rl`'s first statement reopens a connection, which on a busy machine can outlast the
/// shared timeout (the node then decides alone and pauses the shared
/// buckets), and a token refills every 100 ms between the drain and the
/// check. `rl`'s own bucket gains two tokens per round and spends at most
/// one, so a refusal comes only from the shared bucket.
async fn refused_while_held_empty(other: &RateLimiter, rl: &RateLimiter) -> bool {
    for _ in 0..8 {
        drain(other).await;
        if !check(rl).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A TCP proxy to PostgreSQL that can stop forwarding (`freeze`) and then
/// reset every connection it holds and forward new ones (`thaw`).
struct Proxy {
    url: String,
    /// (frozen, generation): connections of an older generation are cut.
    state: watch::Sender<(bool, u64)>,
}

impl Proxy {
    async fn start(url: &str) -> Proxy {
        let target = host_port(url);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (state, _) = watch::channel((false, 0u64));
        let rx = state.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, target.clone(), rx.clone()));
            }
        });
        let proxied = url.replacen(&host_port(url), &format!("127.0.0.1:{port}"), 1);
        Proxy {
            url: proxied,
            state,
        }
    }

    fn freeze(&self) {
        self.state.send_modify(|s| s.0 = true);
    }

    fn thaw(&self) {
        self.state.send_modify(|s| *s = (false, s.1 + 1));
    }
}

/// `host:port` of a postgres:// URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

async fn forward(client: TcpStream, target: String, mut rx: watch::Receiver<(bool, u64)>) {
    let generation = rx.borrow().1;
    // A connection made while frozen waits, as a SYN to a partitioned host.
    if rx.wait_for(|s| !s.0 || s.1 != generation).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(&target).await else {
        return;
    };
    let generation = rx.borrow().1;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        _ = pump(cr, sw, rx.clone()) => {}
        _ = pump(sr, cw, rx.clone()) => {}
        _ = rx.wait_for(|s| s.1 != generation) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<(bool, u64)>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Frozen: the bytes go nowhere until the partition ends.
        if rx.wait_for(|s| !s.0).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
