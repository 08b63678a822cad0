//! Fetching over HTTP against an in-process loopback server (axum on
//! 127.0.0.1:0) that can misbehave on purpose: drop the connection
//! mid-body, lie about its length, stall, redirect into refused ranges,
//! ignore Range, change the object, or answer 403/404.
//!
//! The origin is reached as `http://localhost:PORT` with `allow_hosts =
//! ["localhost"]`, so the origin is allowed while `127.0.0.1` (a redirect
//! target) is not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as AxPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use diskformat::ReadAt;
use imagegate::config::{LimitsConfig, SourceConfig, SpoolPolicy};
use imagegate::source::{
    parse_image_url, spool, start_fetch_with, FetchError, FetchOptions, FetchProgress, ImageSource,
    SpoolTuning,
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const LEN: usize = 8 << 20;
/// Every test is over well within this.
const TEST_LIMIT: Duration = Duration::from_secs(30);

fn test_data(seed: u32) -> Vec<u8> {
    // Random-looking data with zero stretches (so holes are exercised).
    let mut v = vec![0u8; LEN];
    let mut x = seed;
    for (i, b) in v.iter_mut().enumerate() {
        if (i >> 18) % 4 != 1 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
    }
    v
}

struct Server {
    data: Mutex<Arc<Vec<u8>>>,
    etag: Mutex<String>,
    /// Requests seen per path (for "drop only the first time" modes).
    hits: Mutex<HashMap<String, u32>>,
    /// Range headers received, in order.
    ranges: Mutex<Vec<String>>,
    /// `/file` stalls after 3 MiB while set (to leave a partial spool).
    stall_file: AtomicBool,
    /// Accept-Encoding headers received.
    encodings: Mutex<Vec<String>>,
    port: AtomicU32,
}

type St = Arc<Server>;

fn requested_start(h: &HeaderMap) -> Option<u64> {
    requested_range(h).map(|(a, _)| a)
}

/// `Range: bytes=a-` or `bytes=a-b`: (a, b + 1).
fn requested_range(h: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let v = h.get(header::RANGE)?.to_str().ok()?;
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let end = match b {
        "" => None,
        b => Some(b.parse::<u64>().ok()? + 1),
    };
    Some((a.parse().ok()?, end))
}

/// A body that yields `data[from..upto]` in 64 KiB pieces, then either ends,
/// fails (the connection drops), or hangs.
enum Tail {
    End,
    Drop,
    Hang,
}

fn body(data: Arc<Vec<u8>>, from: usize, upto: usize, tail: Tail) -> Body {
    body_paced(data, from, upto, tail, Duration::ZERO)
}

/// [`body`], waiting `pace` before each piece.
fn body_paced(data: Arc<Vec<u8>>, from: usize, upto: usize, tail: Tail, pace: Duration) -> Body {
    let pieces: Vec<Result<Bytes, std::io::Error>> = (from..upto)
        .step_by(64 << 10)
        .map(|s| Ok(Bytes::copy_from_slice(&data[s..(s + (64 << 10)).min(upto)])))
        .collect();
    let head = futures::StreamExt::then(futures::stream::iter(pieces), move |p| async move {
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        p
    });
    let tail: futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> = match tail {
        Tail::End => Box::pin(futures::stream::empty()),
        Tail::Drop => Box::pin(futures::stream::once(async {
            Err(std::io::Error::other("dropped on purpose"))
        })),
        Tail::Hang => Box::pin(futures::stream::pending()),
    };
    Body::from_stream(futures::StreamExt::chain(head, tail))
}

/// Serves `data` honestly from the requested start (Range `bytes=N-` or
/// `bytes=N-M`), honouring If-Range against `etag`; `upto` and `tail` shape
/// the end.
fn serve(
    data: Arc<Vec<u8>>,
    etag: &str,
    headers: &HeaderMap,
    honour_range: bool,
    declared_len: usize,
    upto: Option<usize>,
    tail: Tail,
) -> Response {
    let shape = Shape {
        honour_range,
        declared_len,
        upto,
        tail,
        pace: Duration::ZERO,
    };
    serve_paced(data, etag, headers, shape)
}

/// How a response departs from an honest one.
struct Shape {
    honour_range: bool,
    /// The Content-Length (and Content-Range total) announced.
    declared_len: usize,
    /// Where the body stops before its end, if anywhere.
    upto: Option<usize>,
    tail: Tail,
    /// Pause between 64 KiB pieces of the body.
    pace: Duration,
}

fn serve_paced(data: Arc<Vec<u8>>, etag: &str, headers: &HeaderMap, shape: Shape) -> Response {
    let Shape {
        honour_range,
        declared_len,
        upto,
        tail,
        pace,
    } = shape;
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .map(|v| v.as_bytes() == etag.as_bytes())
        .unwrap_or(true);
    let (start, range_end) = match requested_range(headers) {
        Some((s, e)) if honour_range && if_range_ok => (Some(s as usize), e.map(|e| e as usize)),
        _ => (None, None),
    };
    let mut r = Response::builder().header(header::ETAG, etag);
    match start {
        Some(s) if s >= declared_len => r
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{declared_len}"))
            .body(Body::empty())
            .unwrap(),
        Some(s) => {
            let last = range_end.unwrap_or(declared_len).min(declared_len);
            r = r
                .status(StatusCode::PARTIAL_CONTENT)
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {s}-{}/{declared_len}", last - 1),
                )
                .header(header::CONTENT_LENGTH, last - s);
            let end = upto.unwrap_or(last).min(last).max(s).min(data.len());
            r.body(body_paced(data, s, end, tail, pace)).unwrap()
        }
        None => {
            r = r
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, declared_len);
            let end = upto.unwrap_or(data.len()).min(data.len());
            r.body(body_paced(data, 0, end, tail, pace)).unwrap()
        }
    }
}

async fn handler(
    State(st): State<St>,
    AxPath(path): AxPath<String>,
    headers: HeaderMap,
) -> Response {
    let hit = {
        let mut h = st.hits.lock().unwrap();
        let n = h.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    if let Some(r) = headers.get(header::RANGE) {
        st.ranges
            .lock()
            .unwrap()
            .push(format!("{path} {}", r.to_str().unwrap_or("?")));
    }
    st.encodings.lock().unwrap().push(
        headers
            .get(header::ACCEPT_ENCODING)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
    );
    let data = st.data.lock().unwrap().clone();
    let etag = st.etag.lock().unwrap().clone();
    let port = st.port.load(Ordering::Relaxed);
    let third = LEN / 3;
    match path.as_str() {
        "file" if st.stall_file.load(Ordering::Relaxed) => {
            serve(data, &etag, &headers, true, LEN, Some(3 << 20), Tail::Hang)
        }
        "file" => serve(data, &etag, &headers, true, LEN, None, Tail::End),
        // 64 KiB per millisecond: a reader keeps up with it easily.
        "paced" => {
            let shape = Shape {
                honour_range: true,
                declared_len: LEN,
                upto: None,
                tail: Tail::End,
                pace: Duration::from_millis(1),
            };
            serve_paced(data, &etag, &headers, shape)
        }
        // Drops every response 3 MiB after where it started.
        "drop" => {
            let start = requested_start(&headers).unwrap_or(0) as usize;
            serve(
                data,
                &etag,
                &headers,
                true,
                LEN,
                Some(start + (3 << 20)),
                Tail::Drop,
            )
        }
        // Its first answer promises 1000 bytes more than the object has;
        // ranged requests are answered truthfully.
        "lie-long" if requested_start(&headers).is_none() => {
            serve(data, &etag, &headers, true, LEN + 1000, None, Tail::Drop)
        }
        "lie-long" => serve(data, &etag, &headers, true, LEN, None, Tail::End),
        "stall" => serve(data, &etag, &headers, true, LEN, Some(1 << 20), Tail::Hang),
        // Ignores Range; the first response drops a third of the way in.
        "ignore-range" if hit == 1 => {
            serve(data, &etag, &headers, false, LEN, Some(third), Tail::Drop)
        }
        "ignore-range" => serve(data, &etag, &headers, false, LEN, None, Tail::End),
        // The object is replaced after the first response broke.
        "changes" if hit == 1 => serve(data, &etag, &headers, true, LEN, Some(third), Tail::Drop),
        "changes" => {
            let mut other = (*data).clone();
            other[0] ^= 0xff;
            serve(
                Arc::new(other),
                "\"v2\"",
                &headers,
                true,
                LEN,
                None,
                Tail::End,
            )
        }
        // No validators at all, drops once.
        "no-validator" => {
            let mut r = serve(data, &etag, &headers, true, LEN, Some(third), Tail::Drop);
            r.headers_mut().remove(header::ETAG);
            r
        }
        // Claims a content coding: the bytes must still arrive untouched
        // (no transparent decompression: resume offsets and the hash are
        // about the stored bytes).
        "gzip" => {
            let mut r = serve(data, &etag, &headers, true, LEN, None, Tail::End);
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
            r
        }
        "no-length" => Response::builder()
            .header(header::ETAG, etag)
            .body(body(data, 0, 1000, Tail::End))
            .unwrap(),
        "redirect-loopback" => redirect(&format!("http://127.0.0.1:{port}/file")),
        "redirect-metadata" => redirect("http://169.254.169.254/latest/meta-data/"),
        "redirect-mapped" => redirect(&format!("http://[::ffff:127.0.0.1]:{port}/file")),
        "redirect-ok" => redirect(&format!("http://localhost:{port}/file")),
        "redirect-loop" => redirect(&format!("http://localhost:{port}/redirect-loop")),
        "forbidden" => status(StatusCode::FORBIDDEN),
        "server-error" => status(StatusCode::INTERNAL_SERVER_ERROR),
        _ => status(StatusCode::NOT_FOUND),
    }
}

fn redirect(to: &str) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, to)
        .body(Body::empty())
        .unwrap()
}

fn status(s: StatusCode) -> Response {
    Response::builder().status(s).body(Body::empty()).unwrap()
}

struct TestServer {
    st: St,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_server() -> TestServer {
    let st = Arc::new(Server {
        data: Mutex::new(Arc::new(test_data(7))),
        etag: Mutex::new("\"v1\"".into()),
        hits: Mutex::new(HashMap::new()),
        ranges: Mutex::new(Vec::new()),
        stall_file: AtomicBool::new(false),
        encodings: Mutex::new(Vec::new()),
        port: AtomicU32::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    st.port.store(u32::from(addr.port()), Ordering::Relaxed);
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::get(handler))
        .with_state(st.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    TestServer { st, addr, task }
}

fn cfg() -> SourceConfig {
    SourceConfig {
        allow_hosts: vec!["localhost".into()],
        ..SourceConfig::default()
    }
}

/// Generous stall timeout: the machine running the tests may be loaded;
/// tests about stalls use [`stall_opts`].
fn opts() -> FetchOptions {
    FetchOptions {
        stall_timeout: Duration::from_secs(5),
        max_consecutive_failures: 3,
        max_resumes: 10,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(2),
        spool: SpoolTuning::default(),
    }
}

fn stall_opts() -> FetchOptions {
    FetchOptions {
        stall_timeout: Duration::from_secs(1),
        ..opts()
    }
}

fn source(srv: &TestServer, path: &str) -> ImageSource {
    let url = format!("http://localhost:{}/{path}", srv.addr.port());
    parse_image_url(&url, 1251233127, &cfg()).unwrap()
}

/// Runs one fetch to the end; also reads the whole spool while it arrives,
/// as the import pipeline would, and checks it against what `done` says.
async fn fetch(
    srv: &TestServer,
    path: &str,
    scratch: &std::path::Path,
    limits: &LimitsConfig,
) -> Result<(imagegate::source::FetchOutcome, Vec<u8>, Arc<FetchProgress>), FetchError> {
    fetch_opts(srv, path, scratch, limits, &opts()).await
}

async fn fetch_opts(
    srv: &TestServer,
    path: &str,
    scratch: &std::path::Path,
    limits: &LimitsConfig,
    o: &FetchOptions,
) -> Result<(imagegate::source::FetchOutcome, Vec<u8>, Arc<FetchProgress>), FetchError> {
    let progress = Arc::new(FetchProgress::default());
    let run = async {
        let h = start_fetch_with(
            &source(srv, path),
            &cfg(),
            limits,
            scratch,
            progress.clone(),
            CancellationToken::new(),
            o,
        )
        .await?;
        let spool = h.spool.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let mut all = vec![0u8; spool.len() as usize];
            for (i, c) in all.chunks_mut(1 << 20).enumerate() {
                spool.read_at((i << 20) as u64, c)?;
            }
            Ok::<_, std::io::Error>(all)
        });
        let outcome = h.done.await.expect("fetch task")?;
        let read = reader
            .await
            .expect("reader")
            .expect("spool read after success");
        Ok((outcome, read, progress.clone()))
    };
    tokio::time::timeout(TEST_LIMIT, run)
        .await
        .expect("test took too long")
}

fn sha(d: &[u8]) -> [u8; 32] {
    Sha256::digest(d).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_download_hashes_and_spools() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (out, read, progress) = fetch(&srv, "file", dir.path(), &LimitsConfig::default())
        .await
        .unwrap();
    let data = test_data(7);
    assert_eq!(out.bytes, LEN as u64);
    assert_eq!(out.sha256, sha(&data));
    assert_eq!(out.resumes, 0);
    assert_eq!(read, data);
    assert_eq!(progress.snapshot(), (LEN as u64, LEN as u64, 0));
    // (The count is not asserted: the client may legitimately retry a
    // request on a fresh connection.)
    let enc = srv.st.encodings.lock().unwrap().clone();
    assert!(
        !enc.is_empty() && enc.iter().all(|e| e == "identity"),
        "{enc:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_coding_is_not_decoded() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (out, read, _) = fetch(&srv, "gzip", dir.path(), &LimitsConfig::default())
        .await
        .unwrap();
    let data = test_data(7);
    assert_eq!(out.sha256, sha(&data));
    assert_eq!(read, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_resumed() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (out, read, _) = fetch(&srv, "drop", dir.path(), &LimitsConfig::default())
        .await
        .unwrap();
    let data = test_data(7);
    assert_eq!(out.sha256, sha(&data));
    assert_eq!(read, data);
    // Every answer breaks 3 MiB after its start (minus what was in flight):
    // at least two breaks, each resumed exactly where the data stopped.
    let ranges = srv.st.ranges.lock().unwrap().clone();
    assert!(out.resumes >= 2, "{ranges:?}");
    let mut starts: Vec<u64> = ranges
        .iter()
        .map(|r| {
            r.strip_prefix("drop bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected range {r}"))
        })
        .collect();
    starts.sort_unstable();
    assert!(starts.len() >= 2, "{starts:?}");
    assert!(
        starts.iter().all(|&s| s > 0 && s < LEN as u64),
        "{starts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ignoring_range_is_skipped_ahead() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (out, read, _) = fetch(&srv, "ignore-range", dir.path(), &LimitsConfig::default())
        .await
        .unwrap();
    let data = test_data(7);
    assert_eq!(out.sha256, sha(&data));
    assert_eq!(read, data);
    assert_eq!(out.resumes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_changing_mid_download_fails_cleanly() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let e = fetch(&srv, "changes", dir.path(), &LimitsConfig::default())
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "SourceChanged", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_lie_is_detected() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let e = fetch(&srv, "lie-long", dir.path(), &LimitsConfig::default())
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "SourceLengthMismatch", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_length_is_refused() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let e = fetch(&srv, "no-length", dir.path(), &LimitsConfig::default())
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "SourceLengthUnknown", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_source_times_out_and_readers_wake() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let progress = Arc::new(FetchProgress::default());
    let started = std::time::Instant::now();
    let h = start_fetch_with(
        &source(&srv, "stall"),
        &cfg(),
        &LimitsConfig::default(),
        dir.path(),
        progress.clone(),
        CancellationToken::new(),
        &stall_opts(),
    )
    .await
    .unwrap();
    // A reader waiting for bytes that never come must be released.
    let spool = h.spool.clone();
    let reader =
        tokio::task::spawn_blocking(move || spool.read_at(LEN as u64 - 10, &mut [0u8; 10]));
    let e = tokio::time::timeout(TEST_LIMIT, h.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code().as_str(), "SourceStalled", "{e}");
    assert!(reader.await.unwrap().is_err());
    // Bytes that did arrive stay readable.
    h.spool.read_at(0, &mut [0u8; 4096]).unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(progress.snapshot().0, 1 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_into_refused_ranges_are_refused() {
    let srv = start_server().await;
    for path in ["redirect-loopback", "redirect-metadata", "redirect-mapped"] {
        let dir = tempfile::tempdir().unwrap();
        let e = fetch(&srv, path, dir.path(), &LimitsConfig::default())
            .await
            .unwrap_err();
        assert_eq!(e.code().as_str(), "SourceAddressRefused", "{path}: {e}");
        assert!(e.to_string().contains("redirect"), "{path}: {e}");
    }
    // The refused target was never asked for anything.
    assert!(!srv.st.hits.lock().unwrap().contains_key("file"));
    let dir = tempfile::tempdir().unwrap();
    let e = fetch(&srv, "redirect-loop", dir.path(), &LimitsConfig::default())
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "SourceAddressRefused", "{e}");
    assert!(e.to_string().contains("redirects"), "{e}");
    assert_eq!(srv.st.hits.lock().unwrap()["redirect-loop"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_redirect_is_followed() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (out, _, _) = fetch(&srv, "redirect-ok", dir.path(), &LimitsConfig::default())
        .await
        .unwrap();
    assert_eq!(out.sha256, sha(&test_data(7)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_name_the_status() {
    let srv = start_server().await;
    for (path, code, text) in [
        ("missing", "InvalidUrl", "404"),
        ("forbidden", "InvalidUrl", "403"),
        ("server-error", "SourceUnreachable", "500"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let e = fetch(&srv, path, dir.path(), &LimitsConfig::default())
            .await
            .unwrap_err();
        assert_eq!(e.code().as_str(), code, "{path}: {e}");
        assert!(e.to_string().contains(text), "{path}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_is_refused_before_download() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let limits = LimitsConfig {
        max_source_size: 1 << 20,
        ..LimitsConfig::default()
    };
    let e = fetch(&srv, "file", dir.path(), &limits).await.unwrap_err();
    assert_eq!(e.code().as_str(), "SourceTooLarge", "{e}");
    assert!(!dir.path().join("source.spool").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_validator_means_no_resume() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let e = fetch(&srv, "no-validator", dir.path(), &LimitsConfig::default())
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "SourceUnreachable", "{e}");
    assert!(e.to_string().contains("cannot be resumed"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_literal_url_is_refused_before_sending() {
    // Parsing refuses it; a hand-made source must be refused by the fetch
    // too (reqwest never asks the resolver about IP literals).
    let srv = start_server().await;
    let url = reqwest::Url::parse(&format!("http://127.0.0.1:{}/file", srv.addr.port())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = start_fetch_with(
        &ImageSource::Http { url },
        &cfg(),
        &LimitsConfig::default(),
        dir.path(),
        Arc::new(FetchProgress::default()),
        CancellationToken::new(),
        &opts(),
    )
    .await;
    let e = r.err().expect("refused");
    assert_eq!(e.code().as_str(), "SourceAddressRefused", "{e}");
    assert!(srv.st.hits.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_name_resolving_to_loopback_is_refused_at_connect() {
    // "localhost" resolves to loopback; without allow_hosts (a hand-made
    // source) or private networks, the resolver must hand out nothing.
    let srv = start_server().await;
    let url = reqwest::Url::parse(&format!("http://localhost:{}/file", srv.addr.port())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = start_fetch_with(
        &ImageSource::Http { url },
        &SourceConfig::default(),
        &LimitsConfig::default(),
        dir.path(),
        Arc::new(FetchProgress::default()),
        CancellationToken::new(),
        &opts(),
    )
    .await;
    let e = r.err().expect("refused");
    assert_eq!(e.code().as_str(), "SourceAddressRefused", "{e}");
    assert!(srv.st.hits.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_download_and_readers() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let h = start_fetch_with(
        &source(&srv, "stall"),
        &cfg(),
        &LimitsConfig::default(),
        dir.path(),
        Arc::new(FetchProgress::default()),
        cancel.clone(),
        &FetchOptions {
            // Long enough that only the cancel can end the fetch in time.
            stall_timeout: Duration::from_secs(4),
            ..opts()
        },
    )
    .await
    .unwrap();
    let spool = h.spool.clone();
    let reader = tokio::task::spawn_blocking(move || spool.read_at(LEN as u64 - 1, &mut [0u8; 1]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    let e = tokio::time::timeout(Duration::from_secs(2), h.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code().as_str(), "ImportCancelled");
    let re = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(re.to_string().contains("cancelled"), "{re}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_an_earlier_spool() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    // First "process": the server stalls after 3 MiB and the fetch gives up.
    srv.st.stall_file.store(true, Ordering::Relaxed);
    let e = fetch_opts(
        &srv,
        "file",
        dir.path(),
        &LimitsConfig::default(),
        &stall_opts(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code().as_str(), "SourceStalled", "{e}");
    srv.st.ranges.lock().unwrap().clear();
    // Second "process", same scratch folder: continues at 3 MiB.
    srv.st.stall_file.store(false, Ordering::Relaxed);
    let (out, read, progress) = fetch(&srv, "file", dir.path(), &LimitsConfig::default())
        .await
        .unwrap();
    let data = test_data(7);
    assert_eq!(out.sha256, sha(&data));
    assert_eq!(read, data);
    assert_eq!(out.reused_bytes, 3 << 20);
    assert!(out.resumes >= 1);
    assert!(progress.snapshot().2 >= 1);
    assert_eq!(
        srv.st.ranges.lock().unwrap().first().cloned(),
        Some(format!("file bytes={}-", 3 << 20))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_the_object_changed_starts_over() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    srv.st.stall_file.store(true, Ordering::Relaxed);
    let e = fetch_opts(
        &srv,
        "file",
        dir.path(),
        &LimitsConfig::default(),
        &stall_opts(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code().as_str(), "SourceStalled", "{e}");
    // A new version of the object appears.
    let new = test_data(99);
    *srv.st.data.lock().unwrap() = Arc::new(new.clone());
    *srv.st.etag.lock().unwrap() = "\"v2\"".into();
    srv.st.stall_file.store(false, Ordering::Relaxed);
    let (out, read, _) = fetch(&srv, "file", dir.path(), &LimitsConfig::default())
        .await
        .unwrap();
    assert_eq!(out.sha256, sha(&new));
    assert_eq!(read, new);
    assert_eq!(out.reused_bytes, 0);
}

/// Memory mode, as the pipeline runs it over a fast source: a follower (the
/// converter) reads right behind the download; afterwards an untracked
/// reader (the inspector) asks for the old bytes again.
async fn memory_fetch(
    srv: &TestServer,
    dir: &std::path::Path,
) -> (imagegate::source::FetchHandle, Vec<u8>) {
    let cfg = SourceConfig {
        spool: SpoolPolicy::Memory,
        ..cfg()
    };
    let o = FetchOptions {
        spool: SpoolTuning {
            ring_bytes: 1 << 20,
            keep_behind: 0,
            ..SpoolTuning::default()
        },
        ..opts()
    };
    let mut h = start_fetch_with(
        &source(srv, "paced"),
        &cfg,
        &LimitsConfig::default(),
        dir,
        Arc::new(FetchProgress::default()),
        CancellationToken::new(),
        &o,
    )
    .await
    .unwrap();
    let spool = h.spool.clone();
    let follower = tokio::task::spawn_blocking(move || {
        let mut all = vec![0u8; spool.len() as usize];
        for (i, c) in all.chunks_mut(64 << 10).enumerate() {
            spool.read_at((i << 16) as u64, c).unwrap();
        }
        all
    });
    let out = tokio::time::timeout(TEST_LIMIT, &mut h.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let read = follower.await.unwrap();
    assert_eq!(out.sha256, sha(&read));
    (h, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_reads_dropped_bytes_again_with_ranged_requests() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (h, read) = memory_fetch(&srv, dir.path()).await;
    let data = test_data(7);
    assert_eq!(read, data);
    srv.st.ranges.lock().unwrap().clear();
    let spool = h.spool.clone();
    let again = tokio::task::spawn_blocking(move || {
        spool::untracked(|| {
            let mut all = vec![0u8; spool.len() as usize];
            for (i, c) in all.chunks_mut(100_000).enumerate() {
                spool.read_at(i as u64 * 100_000, c)?;
            }
            Ok::<_, std::io::Error>(all)
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(again, data);
    let stats = h.spool.stats();
    assert_eq!(stats.mode, "memory");
    assert!(stats.reread >= 4 << 20, "{stats:?}");
    // Each granule once, with a bounded range.
    let ranges = srv.st.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len() as u64, stats.reread >> 20, "{ranges:?}");
    for r in &ranges {
        let spec = r.strip_prefix("paced bytes=").unwrap();
        let (a, b) = spec.split_once('-').unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(a % (1 << 20), 0, "{r}");
        assert_eq!(b + 1 - a, 1 << 20, "{r}");
    }
    assert!(h.reread_failure().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_refuses_bytes_of_a_changed_object() {
    let srv = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = memory_fetch(&srv, dir.path()).await;
    // The object is replaced after the download: a re-read must not mix
    // its bytes into the old version.
    *srv.st.data.lock().unwrap() = Arc::new(test_data(99));
    *srv.st.etag.lock().unwrap() = "\"v2\"".into();
    let spool = h.spool.clone();
    let e = tokio::task::spawn_blocking(move || {
        spool::untracked(|| spool.read_at(10, &mut [0u8; 100]))
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(e.to_string().contains("again"), "{e}");
    let f = h.reread_failure().expect("a re-read failure");
    assert_eq!(f.code().as_str(), "SourceChanged", "{f}");
}

/// A benchmark, not a check of speed: fetches 512 MiB from a loopback
/// server and prints the time against the floor (the larger of a plain
/// download that discards the body, and SHA-256 over the data in memory).
/// Run: `cargo test --release -p imagegate --test source_http -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
async fn bench_fetch_against_floor() {
    const BIG: usize = 512 << 20;
    let mut v = vec![0u8; BIG];
    let mut x = 88172645463325252u64;
    for (i, c) in v.chunks_mut(8).enumerate() {
        // A quarter of the 64 KiB chunks are zero, as in a typical disk.
        if (i >> 13) % 4 != 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
    }
    let data = Bytes::from(v);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = data.clone();
    let app = axum::Router::new().route(
        "/big",
        axum::routing::get(move || {
            let d = served.clone();
            async move {
                let pieces: Vec<Result<Bytes, std::io::Error>> = (0..d.len())
                    .step_by(1 << 20)
                    .map(|s| Ok(d.slice(s..(s + (1 << 20)).min(d.len()))))
                    .collect();
                Response::builder()
                    .header(header::CONTENT_LENGTH, d.len())
                    .header(header::ETAG, "\"big\"")
                    .body(Body::from_stream(futures::stream::iter(pieces)))
                    .unwrap()
            }
        }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = format!("http://localhost:{port}/big");

    let t = std::time::Instant::now();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut resp = client.get(&url).send().await.unwrap();
    let mut n = 0usize;
    while let Some(c) = resp.chunk().await.unwrap() {
        n += c.len();
    }
    assert_eq!(n, BIG);
    let download = t.elapsed();

    let t = std::time::Instant::now();
    let expect: [u8; 32] = Sha256::digest(&data).into();
    let hashing = t.elapsed();

    let dir = tempfile::tempdir().unwrap();
    let src = parse_image_url(&url, 1, &cfg()).unwrap();
    let t = std::time::Instant::now();
    let h = start_fetch_with(
        &src,
        &cfg(),
        &LimitsConfig::default(),
        dir.path(),
        Arc::new(FetchProgress::default()),
        CancellationToken::new(),
        &FetchOptions::default(),
    )
    .await
    .unwrap();
    let out = h.done.await.unwrap().unwrap();
    let fetch = t.elapsed();
    assert_eq!(out.sha256, expect);
    let floor = download.max(hashing);
    println!(
        "512 MiB: fetch {fetch:?}, download only {download:?}, sha256 only {hashing:?}, \
         fetch/floor {:.2}",
        fetch.as_secs_f64() / floor.as_secs_f64()
    );
    server.abort();
}
