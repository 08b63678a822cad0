//! The operator's signals against a real server on 127.0.0.1:0: `/healthz`,
//! `/readyz` (ready, then failing on each of its checks in turn), and
//! `/metrics` after API calls and imports (counters move by what was done,
//! with the right labels). Metrics are process-wide, so the tests of this
//! binary take turns (`SERIAL`) and compare before/after values.

use imagegate::config::{AccountConfig, Config};
use imagegate::server::{self, Roles, Server};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const ID: &str = "AKIDopsopsopsopsopsopsopsopsopsopsops";
const KEY: &str = "ops-secret-key-never-shown";
const APP: u64 = 1251233127;
const UIN: &str = "100000000001";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(dir: &Path) -> Config {
    let cos_root = dir.join("cos");
    std::fs::create_dir_all(cos_root.join(format!("images-{APP}"))).unwrap();
    let mut c = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
        regions: vec!["ap-guangzhou".into()],
        accounts: vec![AccountConfig {
            secret_id: ID.into(),
            secret_key: KEY.into(),
            app_id: APP,
            uin: UIN.into(),
            image_quota: 50,
            storage_quota_gib: None,
        }],
        rate_limits: imagegate::config::RateLimitConfig {
            enabled: false,
            ..Default::default()
        },
        ..Config::default()
    };
    c.source.cos_root = Some(cos_root);
    c.workers.lease_seconds = 3;
    c
}

async fn start(config: Config, workers: bool) -> Server {
    server::start_roles(config, Roles { api: true, workers })
        .await
        .expect("server starts")
}

async fn get(server: &Server, path: &str) -> (u16, String, String) {
    let resp = reqwest::get(format!("http://{}{path}", server.addr()))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

async fn readyz(server: &Server) -> (u16, Value) {
    // Each answer is computed at most once per FRESH: let the last one age.
    tokio::time::sleep(imagegate::ops::FRESH).await;
    let (status, ct, body) = get(server, "/readyz").await;
    assert_eq!(ct, "application/json");
    (status, serde_json::from_str(&body).unwrap())
}

/// A TC3-signed API call; returns the `Response` object.
async fn call(server: &Server, action: &str, key: &str, params: Value) -> Value {
    let body = serde_json::to_vec(&params).unwrap();
    let host = server.addr().to_string();
    let ts = chrono::Utc::now().timestamp();
    let auth = tcapi::sign_tc3(
        ID,
        key,
        &tcapi::Tc3Request {
            host: &host,
            content_type: "application/json",
            payload: &body,
            raw_query: "",
            method: "POST",
            timestamp: ts,
            service: "cvm",
            extra_signed: &[],
        },
    );
    let resp = reqwest::Client::new()
        .post(format!("http://{host}/"))
        .header("Content-Type", "application/json")
        .header("X-TC-Action", action)
        .header("X-TC-Version", "2017-03-12")
        .header("X-TC-Timestamp", ts.to_string())
        .header("X-TC-Region", "ap-guangzhou")
        .header("Authorization", auth)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    v["Response"].clone()
}

/// The metrics text as `series -> value` (comments left out), after
/// checking every line is well formed.
fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            series
                .bytes()
                .take_while(|b| *b != b'{')
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        out.insert(series.to_string(), v);
    }
    out
}

async fn metrics(server: &Server) -> std::collections::HashMap<String, f64> {
    // The job counts are read from the catalog at most once per FRESH.
    tokio::time::sleep(imagegate::ops::FRESH).await;
    let (status, ct, body) = get(server, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!body.contains(KEY), "the secret key leaked into /metrics");
    parse_metrics(&body)
}

fn val(m: &std::collections::HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

async fn wait_settled(server: &Server, image_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = call(
            server,
            "DescribeImportImageTasks",
            KEY,
            json!({"ImageIds": [image_id]}),
        )
        .await;
        let t = r["ImportImageTaskSet"][0].clone();
        if t["ImageState"] != "IMPORTING" && t["ImageState"].is_string() {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still importing: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthz_and_readyz_when_all_is_well() {
    let _turn = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()), false).await;

    let (status, ct, body) = get(&server, "/healthz").await;
    assert_eq!(
        (status, ct.as_str(), body.as_str()),
        (200, "text/plain; charset=utf-8", "ok\n")
    );

    let (status, body) = readyz(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["failed"], json!([]));
    for check in ["catalog", "migrations", "blobs"] {
        assert_eq!(body["checks"][check]["ok"], true, "{body}");
    }
    assert_eq!(body["checks"]["catalog"]["backend"], "sqlite");
    assert_eq!(
        body["checks"]["migrations"]["applied"],
        json!([1, 2, 3, 4, 5, 6])
    );
    assert_eq!(
        body["checks"]["migrations"]["expected"],
        json!([1, 2, 3, 4, 5, 6])
    );

    // The API's own route is untouched by the merge: a GET of `/` is still
    // an API request answered in the Tencent envelope.
    let (status, ct, body) = get(&server, "/").await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    assert!(body.contains("\"Error\""), "{body}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_names_each_failing_check() {
    let _turn = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()), false).await;
    assert_eq!(readyz(&server).await.0, 200);

    // The blob store's folder vanishes.
    let images = dir.path().join("data").join("images");
    std::fs::rename(&images, dir.path().join("moved")).unwrap();
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["failed"], json!(["blobs"]));
    assert_eq!(body["checks"]["blobs"]["ok"], false);
    assert!(body["checks"]["blobs"]["error"].as_str().unwrap().len() > 3);
    std::fs::rename(dir.path().join("moved"), &images).unwrap();
    assert_eq!(readyz(&server).await.0, 200);

    // The migrations table says nothing was applied.
    let pool = server.state().catalog.pool();
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(pool)
        .await
        .unwrap();
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failed"], json!(["migrations"]));
    assert!(
        body["checks"]["migrations"]["error"]
            .as_str()
            .unwrap()
            .contains("[1, 2, 3, 4, 5, 6]"),
        "{body}"
    );

    // The catalog is gone altogether; /metrics still answers and says so.
    server.state().catalog.close().await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failed"], json!(["catalog", "migrations"]));
    let m = metrics(&server).await;
    assert_eq!(val(&m, "imagegate_catalog_up"), 0.0);
    assert!(!m.contains_key("imagegate_import_queue_depth"));
    // Liveness is not readiness.
    assert_eq!(get(&server, "/healthz").await.0, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_fails_on_an_unreachable_s3_store_without_showing_its_key() {
    let _turn = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Nothing listens on port 1 of the loopback.
    cfg.blobs.url = Some("s3://ops-bucket/blobs".into());
    cfg.blobs.endpoint = Some("http://127.0.0.1:1".into());
    cfg.blobs.region = Some("us-east-1".into());
    cfg.blobs.access_key = Some("ops-access".into());
    cfg.blobs.secret_key = Some("ops-s3-secret-key".into());
    let server = start(cfg, false).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failed"], json!(["blobs"]));
    assert_eq!(body["checks"]["blobs"]["store"], "s3://ops-bucket/blobs");
    let text = body.to_string();
    assert!(!text.contains("ops-s3-secret-key"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_requests_and_imports() {
    let _turn = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    // A 4 MiB raw disk of zeros: read, then refused (no partition table).
    // Imports that end NORMAL are counted in tests/conformance/test_ops.py,
    // which has real guest disks.
    let disk = vec![0u8; 4 << 20];
    let bucket = cfg
        .source
        .cos_root
        .clone()
        .unwrap()
        .join(format!("images-{APP}"));
    std::fs::write(bucket.join("zeros.raw"), &disk).unwrap();
    let server = start(cfg, true).await;

    let before = metrics(&server).await;
    for _ in 0..3 {
        let r = call(&server, "DescribeImages", KEY, json!({})).await;
        assert!(r.get("Error").is_none(), "{r}");
    }
    let r = call(&server, "DescribeImages", "wrong-key", json!({})).await;
    assert_eq!(r["Error"]["Code"], "AuthFailure.SignatureFailure");
    let r = call(&server, "DropEverything", KEY, json!({})).await;
    let unknown_code = r["Error"]["Code"].as_str().unwrap().to_string();

    let url = |key: &str| format!("https://images-{APP}.cos.ap-guangzhou.myqcloud.com/{key}");
    let import = |key: String, name: &str| {
        json!({"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
               "ImageUrl": key, "ImageName": name, "Force": true})
    };
    let zeros = call(
        &server,
        "ImportImage",
        KEY,
        import(url("zeros.raw"), "ops-zeros"),
    )
    .await;
    let zeros_id = zeros["ImageId"]
        .as_str()
        .unwrap_or_else(|| panic!("{zeros}"))
        .to_string();
    let bad = call(
        &server,
        "ImportImage",
        KEY,
        import(url("missing.raw"), "ops-bad"),
    )
    .await;
    let bad_id = bad["ImageId"]
        .as_str()
        .unwrap_or_else(|| panic!("{bad}"))
        .to_string();
    let t_zeros = wait_settled(&server, &zeros_id).await;
    let t_bad = wait_settled(&server, &bad_id).await;
    assert_eq!(t_zeros["ImageState"], "IMPORTFAILED", "{t_zeros}");
    assert_eq!(t_zeros["FailureCode"], "PartitionNotPresent", "{t_zeros}");
    assert_eq!(t_bad["ImageState"], "IMPORTFAILED", "{t_bad}");
    let fail_code = t_bad["FailureCode"].as_str().unwrap().to_string();
    assert_ne!(fail_code, "PartitionNotPresent");
    // The worker records the outcome, then counts it: give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let after = metrics(&server).await;
    let delta = |s: &str| val(&after, s) - val(&before, s);
    assert_eq!(
        delta(r#"imagegate_requests_total{action="DescribeImages",code="Success"}"#),
        3.0
    );
    assert_eq!(
        delta(
            r#"imagegate_requests_total{action="DescribeImages",code="AuthFailure.SignatureFailure"}"#
        ),
        1.0
    );
    // A name the client made up is not a label value: refused while being
    // decoded, the request is counted under no action.
    assert_eq!(unknown_code, "InvalidAction");
    assert_eq!(
        delta(r#"imagegate_requests_total{action="",code="InvalidAction"}"#),
        1.0
    );
    assert!(after.keys().all(|k| !k.contains("DropEverything")));
    assert_eq!(
        delta(r#"imagegate_requests_total{action="ImportImage",code="Success"}"#),
        2.0
    );
    assert!(delta(r#"imagegate_request_duration_seconds_count{action="DescribeImages"}"#) >= 4.0);
    assert!(
        delta(r#"imagegate_request_duration_seconds_bucket{action="DescribeImages",le="+Inf"}"#)
            >= 4.0
    );
    assert_eq!(
        delta(r#"imagegate_imports_total{state="IMPORTFAILED",code="PartitionNotPresent"}"#),
        1.0
    );
    assert_eq!(
        delta(&format!(
            r#"imagegate_imports_total{{state="IMPORTFAILED",code="{fail_code}"}}"#
        )),
        1.0
    );
    assert_eq!(
        delta(r#"imagegate_import_duration_seconds_count{state="IMPORTFAILED"}"#),
        2.0
    );
    assert!(!after.keys().any(|k| k.contains(r#"state="NORMAL""#)));
    // Read from cos_root: some of the zeros at least, never more than all.
    let fetched = delta("imagegate_import_bytes_fetched_total");
    assert!(fetched > 0.0 && fetched <= disk.len() as f64, "{fetched}");
    assert_eq!(val(&after, "imagegate_import_leases_held"), 0.0);
    assert_eq!(val(&after, "imagegate_import_queue_depth"), 0.0);
    assert_eq!(
        val(&after, r#"imagegate_import_jobs{state="FAILED"}"#),
        2.0,
        "{after:?}"
    );
    assert_eq!(val(&after, "imagegate_catalog_up"), 1.0);
    assert!(val(&after, "process_resident_memory_bytes") > 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_depth_counts_queued_jobs_and_leases_show_running_ones() {
    let _turn = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // No workers: imports stay queued.
    let server = start(config(dir.path()), false).await;
    for i in 0..3 {
        let r = call(
            &server,
            "ImportImage",
            KEY,
            json!({"Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
                   "ImageUrl": format!("https://images-{APP}.cos.ap-guangzhou.myqcloud.com/q{i}.raw"),
                   "ImageName": format!("queued-{i}")}),
        )
        .await;
        assert!(r["ImageId"].is_string(), "{r}");
    }
    let m = metrics(&server).await;
    assert_eq!(val(&m, "imagegate_import_queue_depth"), 3.0);
    assert_eq!(val(&m, r#"imagegate_import_jobs{state="QUEUED"}"#), 3.0);
    assert_eq!(val(&m, "imagegate_import_leases_held"), 0.0);
    server.shutdown().await.unwrap();
}
