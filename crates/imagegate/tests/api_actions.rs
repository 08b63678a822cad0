//! End-to-end tests of the API: a real server on 127.0.0.1:0 with a temporary
//! data directory, driven over HTTP with requests signed by tcapi's client
//! code (TC3 POST JSON, and legacy v1 GET for Tencent's documented example).
//! One test binary on purpose: each extra binary links the whole service.

use imagegate::config::{AccountConfig, Config};
use imagegate::server::{self, Server};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

const APP_A: u64 = 1251233127;
const APP_B: u64 = 1300000002;
const UIN_A: &str = "100000000001";
const UIN_B: &str = "100000000002";

fn account(id: &str, key: &str, app_id: u64, uin: &str, quota: u32) -> AccountConfig {
    AccountConfig {
        secret_id: id.into(),
        secret_key: key.into(),
        app_id,
        uin: uin.into(),
        image_quota: quota,
        storage_quota_gib: None,
    }
}

fn base_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        regions: vec![
            "ap-guangzhou".into(),
            "ap-beijing".into(),
            "ap-singapore".into(),
        ],
        import_regions: Some(vec!["ap-guangzhou".into(), "ap-singapore".into()]),
        accounts: vec![
            account(
                "AKIDaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "keyA",
                APP_A,
                UIN_A,
                500,
            ),
            account(
                "AKIDbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                "keyB",
                APP_B,
                UIN_B,
                3,
            ),
        ],
        rate_limits: imagegate::config::RateLimitConfig {
            enabled: false,
            ..Default::default()
        },
        ..Config::default()
    }
}

struct Client {
    http: reqwest::Client,
    addr: std::net::SocketAddr,
    secret_id: String,
    secret_key: String,
    region: Option<String>,
    language: &'static str,
}

/// A parsed reply: HTTP status, Content-Type and the `Response` object.
struct Reply {
    status: u16,
    content_type: String,
    response: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.response["Error"]["Code"].as_str().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.response["Error"]["Message"].as_str().unwrap_or("")
    }
    fn ok(&self) -> &Value {
        assert!(
            self.response.get("Error").is_none(),
            "unexpected error {}",
            self.response
        );
        &self.response
    }
}

impl Client {
    fn new(addr: std::net::SocketAddr, id: &str, key: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            addr,
            secret_id: id.into(),
            secret_key: key.into(),
            region: Some("ap-guangzhou".into()),
            language: "en-US",
        }
    }

    fn a(server: &Server) -> Client {
        Client::new(
            server.addr(),
            "AKIDaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "keyA",
        )
    }

    fn b(server: &Server) -> Client {
        Client::new(
            server.addr(),
            "AKIDbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "keyB",
        )
    }

    fn in_region(mut self, r: Option<&str>) -> Client {
        self.region = r.map(String::from);
        self
    }

    /// Each call is a new request, so it gets a signature of its own: the
    /// server answers a re-sent signature with the first answer, and refuses
    /// one turned into another mutating action (the SDKs sign only the body and
    /// host, with the current second). Within the same second an identical
    /// body is signed with an earlier, unused second (well inside the skew).
    async fn call(&self, action: &str, params: Value) -> Reply {
        let body = serde_json::to_vec(&params).unwrap();
        let mut ts = chrono::Utc::now().timestamp();
        {
            static USED: std::sync::Mutex<Vec<(String, Vec<u8>, i64)>> =
                std::sync::Mutex::new(Vec::new());
            let mut used = USED.lock().unwrap();
            while used
                .iter()
                .any(|(id, b, t)| *id == self.secret_id && *b == body && *t == ts)
            {
                ts -= 1;
            }
            used.push((self.secret_id.clone(), body, ts));
        }
        self.call_at(action, params, ts).await
    }

    async fn call_at(&self, action: &str, params: Value, ts: i64) -> Reply {
        let body = serde_json::to_vec(&params).unwrap();
        let host = self.addr.to_string();
        let auth = tcapi::sign_tc3(
            &self.secret_id,
            &self.secret_key,
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
        let mut req = self
            .http
            .post(format!("http://{host}/"))
            .header("Content-Type", "application/json")
            .header("X-TC-Action", action)
            .header("X-TC-Version", "2017-03-12")
            .header("X-TC-Timestamp", ts.to_string())
            .header("X-TC-Language", self.language)
            .header("Authorization", auth)
            .body(body);
        if let Some(r) = &self.region {
            req = req.header("X-TC-Region", r);
        }
        reply(req.send().await.unwrap()).await
    }
}

async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let response = v["Response"].clone();
    let rid = response["RequestId"]
        .as_str()
        .expect("RequestId")
        .to_string();
    assert!(is_uuid_v4(&rid), "RequestId {rid}");
    Reply {
        status,
        content_type,
        response,
    }
}

fn is_uuid_v4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && parts[2].starts_with('4')
}

fn cos_url(app_id: u64, key: &str) -> String {
    format!("https://images-{app_id}.cos.ap-guangzhou.myqcloud.com/{key}")
}

fn import_params(name: &str) -> Value {
    json!({
        "Architecture": "x86_64",
        "OsType": "CentOS",
        "OsVersion": "7",
        "ImageUrl": cos_url(APP_A, "centos7.qcow2"),
        "ImageName": name,
    })
}

/// The API alone: no import workers, so images stay as the API leaves them
/// (IMPORTING, job QUEUED) and nothing tries to fetch the test URLs.
///
/// With `IMAGEGATE_TEST_PG_URL` set (a role that may create databases), the
/// catalog is a PostgreSQL database named after the data directory, so a
/// restart on the same directory finds the same catalog.
async fn start(mut config: Config) -> Server {
    if let Ok(admin) = std::env::var("IMAGEGATE_TEST_PG_URL") {
        config.catalog.url = Some(pg_database(&admin, &config.data_dir).await);
    }
    let roles = server::Roles {
        api: true,
        workers: false,
    };
    server::start_roles(config, roles)
        .await
        .expect("server starts")
}

async fn pg_database(admin: &str, data_dir: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_dir.to_string_lossy().as_bytes());
    let name = format!("imagegate_api_{}", &hex::encode(digest)[..16]);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(admin)
        .await
        .expect("PostgreSQL reachable");
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&pool)
        .await
        .unwrap();
    if exists.is_none() {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("IMAGEGATE_TEST_PG_URL must end with /<database>"),
    }
}

/// Shuts the server down and drops its PostgreSQL test database, if any.
async fn stop(server: Server) {
    let url = server.state().config.catalog.url.clone();
    server.shutdown().await.unwrap();
    if let (Ok(admin), Some(url)) = (std::env::var("IMAGEGATE_TEST_PG_URL"), url) {
        if let Some((_, name)) = url.rsplit_once('/') {
            let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
    }
}

/// Moves an image out of IMPORTING, as the pipeline will when it finishes.
async fn set_state(server: &Server, image_id: &str, state: &str) {
    sqlx::query("UPDATE images SET state = $1 WHERE image_id = $2")
        .bind(state)
        .bind(image_id)
        .execute(server.state().catalog.pool())
        .await
        .unwrap();
    // As the pipeline does after its writes: read caches must see it.
    server.state().catalog.note_change();
}

async fn import_ok(c: &Client, params: Value) -> String {
    let r = c.call("ImportImage", params).await;
    let id = r.ok()["ImageId"].as_str().unwrap().to_string();
    assert!(
        id.len() == 12
            && id.starts_with("img-")
            && id[4..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{id}"
    );
    id
}

async fn describe(c: &Client, params: Value) -> Value {
    c.call("DescribeImages", params).await.ok().clone()
}

#[tokio::test]
async fn envelope_auth_region_and_language() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(base_config(dir.path())).await;
    let a = Client::a(&server);

    let r = a.call("DescribeImageQuota", json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    assert_eq!(r.ok()["ImageNumQuota"], 500);

    // Errors are HTTP 200, exact content type, distinct RequestIds.
    let mut unknown = Client::a(&server);
    unknown.secret_id = "AKIDunknownunknownunknownunknown0000".into();
    let r1 = unknown.call("DescribeImageQuota", json!({})).await;
    let r2 = unknown.call("DescribeImageQuota", json!({})).await;
    assert_eq!(
        (r1.status, r1.content_type.as_str()),
        (200, "application/json")
    );
    assert_eq!(r1.code(), "AuthFailure.SecretIdNotFound");
    assert_ne!(r1.response["RequestId"], r2.response["RequestId"]);

    let mut wrong_key = Client::a(&server);
    wrong_key.secret_key = "not-the-key".into();
    let r = wrong_key.call("DescribeImageQuota", json!({})).await;
    assert_eq!(r.code(), "AuthFailure.SignatureFailure");

    let old = chrono::Utc::now().timestamp() - 3600;
    let r = a.call_at("DescribeImageQuota", json!({}), old).await;
    assert_eq!(r.code(), "AuthFailure.SignatureExpire");

    let r = Client::a(&server)
        .in_region(Some("eu-frankfurt"))
        .call("DescribeImageQuota", json!({}))
        .await;
    assert_eq!(r.code(), "UnsupportedRegion");
    let r = Client::a(&server)
        .in_region(None)
        .call("DescribeImageQuota", json!({}))
        .await;
    assert_eq!(r.code(), "MissingParameter");
    assert!(r.message().contains("Region"), "{}", r.message());

    // DescribeImportImageOs needs no region.
    let r = Client::a(&server)
        .in_region(None)
        .call("DescribeImportImageOs", json!({}))
        .await;
    let os = r.ok();
    assert!(os["ImportImageOsListSupported"]["Linux"]
        .as_array()
        .unwrap()
        .contains(&json!("Redhat")));
    assert!(!os["ImportImageOsVersionSet"].as_array().unwrap().is_empty());

    // Messages follow the request's language.
    let mut zh = Client::a(&server).in_region(Some("eu-frankfurt"));
    zh.language = "zh-CN";
    let r = zh.call("DescribeImageQuota", json!({})).await;
    assert_eq!(r.code(), "UnsupportedRegion");
    assert!(r.message().contains("地域"), "{}", r.message());

    let r = a.call("RunInstances", json!({})).await;
    assert_eq!(r.code(), "InvalidAction");

    // An oversized body still gets the envelope, not a 413.
    let big = vec![b' '; (10 << 20) + 10];
    let resp = reqwest::Client::new()
        .post(format!("http://{}/", server.addr()))
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let r = reply(resp).await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, "application/json")
    );
    assert_eq!(r.code(), "RequestSizeLimitExceeded");

    // Other methods: UnsupportedProtocol, still in the envelope.
    let resp = reqwest::Client::new()
        .put(format!("http://{}/", server.addr()))
        .send()
        .await
        .unwrap();
    let r = reply(resp).await;
    assert_eq!(r.code(), "UnsupportedProtocol");
    stop(server).await;
}

#[tokio::test]
async fn import_image_rules() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(base_config(dir.path())).await;
    let a = Client::a(&server);
    let with = |patch: Value| {
        let mut p = import_params("rules");
        for (k, v) in patch.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!({"Architecture": "sparc"}), "InvalidParameterValue"),
        (
            json!({"OsType": "Gentoo"}),
            "InvalidImageOsType.Unsupported",
        ),
        (
            json!({"OsVersion": "4"}),
            "InvalidImageOsVersion.Unsupported",
        ),
        (
            json!({"ImageName": "名".repeat(61)}),
            "InvalidParameterValue.TooLarge",
        ),
        (
            json!({"ImageDescription": "d".repeat(257)}),
            "InvalidParameterValue.TooLarge",
        ),
        (
            json!({"LicenseType": "GPL"}),
            "InvalidParameterValue.InvalidLicenseType",
        ),
        (
            json!({"BootMode": "BIOS"}),
            "InvalidParameterValue.InvalidBootMode",
        ),
        (
            json!({"ImageFamily": "7-bad start"}),
            "InvalidParameterValue.InvalidImageFamily",
        ),
        (
            json!({"TagSpecification": [{"ResourceType": "instance", "Tags": [{"Key": "k", "Value": "v"}]}]}),
            "InvalidParameterValue",
        ),
        (
            json!({"TagSpecification": [{"ResourceType": "image", "Tags": [{"Key": "", "Value": "v"}]}]}),
            "InvalidParameterValue.TagKeyNotFound",
        ),
        (
            json!({"ImageUrl": "ftp://example.com/a.qcow2"}),
            "InvalidParameter.InvalidParameterUrlError",
        ),
        (
            json!({"ImageUrl": "not a url"}),
            "InvalidParameter.InvalidParameterUrlError",
        ),
        (
            json!({"ImageUrl": cos_url(APP_B, "other-account.qcow2")}),
            "InvalidParameter.InvalidParameterUrlError",
        ),
        (
            json!({"ImageUrl": "http://169.254.169.254/latest/meta-data"}),
            "InvalidParameter.InvalidParameterUrlError",
        ),
        (
            json!({"ImportImageDataDiskList": [{"ImageUrl": "file:///etc/passwd"}]}),
            "InvalidParameter.InvalidParameterUrlError",
        ),
    ];
    for (patch, code) in cases {
        let r = a.call("ImportImage", with(patch.clone())).await;
        assert_eq!(r.code(), code, "{patch}: {}", r.response);
    }
    let mut missing = import_params("x");
    missing.as_object_mut().unwrap().remove("ImageUrl");
    assert_eq!(
        a.call("ImportImage", missing).await.code(),
        "MissingParameter"
    );

    // A region that serves but cannot import.
    let r = Client::a(&server)
        .in_region(Some("ap-beijing"))
        .call("ImportImage", import_params("x"))
        .await;
    assert_eq!(r.code(), "RegionAbilityLimit.UnsupportedToImportImage");
    // Overseas: the bucket must be in the same region.
    let r = Client::a(&server)
        .in_region(Some("ap-singapore"))
        .call("ImportImage", import_params("x"))
        .await;
    assert_eq!(r.code(), "InvalidParameter.InvalidParameterUrlError");

    // Names count characters, not bytes: 60 Chinese characters are fine.
    // DryRun passes every check and writes nothing.
    let r = a
        .call(
            "ImportImage",
            with(json!({"ImageName": "名".repeat(60), "DryRun": true})),
        )
        .await;
    assert_eq!(
        r.ok().as_object().unwrap().len(),
        1,
        "only RequestId: {}",
        r.response
    );
    let d = describe(&a, json!({})).await;
    assert_eq!(d["TotalCount"], 0);
    let r = a
        .call("ImportImage", with(json!({"ImageName": "名".repeat(60)})))
        .await;
    r.ok();
    // Now the name is taken: DryRun and the real call both say so.
    let dup = with(json!({"ImageName": "名".repeat(60), "DryRun": true}));
    assert_eq!(
        a.call("ImportImage", dup).await.code(),
        "InvalidImageName.Duplicate"
    );
    let dup = with(json!({"ImageName": "名".repeat(60)}));
    assert_eq!(
        a.call("ImportImage", dup).await.code(),
        "InvalidImageName.Duplicate"
    );
    stop(server).await;
}

#[tokio::test]
async fn import_then_describe_every_field_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(base_config(dir.path())).await;
    let a = Client::a(&server);
    let first = import_ok(
        &a,
        json!({
            "Architecture": "arm_64",
            "OsType": "ubuntu",
            "OsVersion": "22",
            "ImageUrl": cos_url(APP_A, "ubuntu.qcow2"),
            "ImageName": "web-ubuntu",
            "ImageDescription": "web tier",
            "LicenseType": "BYOL",
            "BootMode": "UEFI",
            "ImageFamily": "web-2204",
            "Force": true,
            "TagSpecification": [{"ResourceType": "image", "Tags": [
                {"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "web"}]}],
            "ImportImageDataDiskList": [{"ImageUrl": cos_url(APP_A, "data.qcow2")}],
        }),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = import_ok(&a, import_params("db-centos")).await;

    let d = describe(&a, json!({"ImageIds": [first]})).await;
    assert_eq!(d["TotalCount"], 1);
    let img = &d["ImageSet"][0];
    assert_eq!(img["ImageId"], first.as_str());
    assert_eq!(img["ImageName"], "web-ubuntu");
    assert_eq!(img["ImageDescription"], "web tier");
    assert_eq!(img["ImageType"], "PRIVATE_IMAGE");
    assert_eq!(img["ImageSource"], "EXTERNAL_IMPORT");
    assert_eq!(img["ImageState"], "IMPORTING");
    assert_eq!(img["Architecture"], "arm");
    assert_eq!(img["Platform"], "Ubuntu");
    assert_eq!(img["OsName"], "Ubuntu 22 64bit ARM");
    assert_eq!(img["ImageCreator"], UIN_A);
    assert_eq!(img["LicenseType"], "BYOL");
    assert_eq!(img["ImageFamily"], "web-2204");
    assert_eq!(img["ImageDeprecated"], false);
    assert_eq!(img["IsSupportCloudinit"], false);
    let created = img["CreatedTime"].as_str().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(created, "%Y-%m-%dT%H:%M:%SZ").is_ok(),
        "{created}"
    );
    assert_eq!(
        img["Tags"],
        json!([{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "web"}])
    );
    let snaps = img["SnapshotSet"].as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["DiskUsage"], "SYSTEM_DISK");
    assert_eq!(snaps[1]["DiskUsage"], "DATA_DISK");
    for s in snaps {
        let id = s["SnapshotId"].as_str().unwrap();
        assert!(id.starts_with("snap-") && id.len() == 13, "{id}");
    }

    // The second image: defaults filled.
    let d = describe(
        &a,
        json!({"Filters": [{"Name": "image-id", "Values": [second]}]}),
    )
    .await;
    let img = &d["ImageSet"][0];
    assert_eq!(img["OsName"], "CentOS 7 64bit");
    assert_eq!(img["LicenseType"], "TencentCloud");
    assert_eq!(img["IsSupportCloudinit"], true);
    assert_eq!(img["Architecture"], "x86_64");

    // Newest first; paging; TotalCount counts every match.
    let d = describe(&a, json!({})).await;
    assert_eq!(d["TotalCount"], 2);
    assert_eq!(d["ImageSet"][0]["ImageId"], second.as_str());
    assert_eq!(d["ImageSet"][1]["ImageId"], first.as_str());
    let d = describe(&a, json!({"Offset": 1, "Limit": 1})).await;
    assert_eq!(d["TotalCount"], 2);
    assert_eq!(d["ImageSet"].as_array().unwrap().len(), 1);
    assert_eq!(d["ImageSet"][0]["ImageId"], first.as_str());
    let d = describe(&a, json!({"Offset": 5})).await;
    assert_eq!(d["TotalCount"], 2);
    assert_eq!(d["ImageSet"], json!([]));
    let d = describe(&a, json!({"Limit": 0})).await;
    assert_eq!(d["TotalCount"], 2);
    assert_eq!(d["ImageSet"], json!([]));

    let filters: Vec<(Value, Vec<&str>)> = vec![
        (
            json!([{"Name": "image-name", "Values": ["WEB"]}]),
            vec![first.as_str()],
        ),
        (
            json!([{"Name": "image-name", "Values": ["web", "db"]}]),
            vec![first.as_str(), second.as_str()],
        ),
        (json!([{"Name": "image-name", "Values": ["%"]}]), vec![]),
        (
            json!([{"Name": "platform", "Values": ["cent"]}]),
            vec![second.as_str()],
        ),
        (
            json!([{"Name": "tag-key", "Values": ["team"]}]),
            vec![first.as_str()],
        ),
        (
            json!([{"Name": "tag-value", "Values": ["prod", "nope"]}]),
            vec![first.as_str()],
        ),
        (
            json!([{"Name": "tag:env", "Values": ["prod"]}]),
            vec![first.as_str()],
        ),
        (json!([{"Name": "tag:env", "Values": ["dev"]}]), vec![]),
        (
            json!([{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}]),
            vec![first.as_str(), second.as_str()],
        ),
        (
            json!([{"Name": "image-type", "Values": ["PUBLIC_IMAGE"]}]),
            vec![],
        ),
        // Different filters AND.
        (
            json!([{"Name": "image-name", "Values": ["web", "db"]}, {"Name": "platform", "Values": ["ubuntu"]}]),
            vec![first.as_str()],
        ),
    ];
    for (f, want) in filters {
        let d = describe(&a, json!({"Filters": f})).await;
        let got: HashSet<&str> = d["ImageSet"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["ImageId"].as_str().unwrap())
            .collect();
        assert_eq!(got, want.iter().copied().collect::<HashSet<_>>(), "{f}");
        assert_eq!(d["TotalCount"], want.len(), "{f}");
    }

    let errors: Vec<(Value, &str)> = vec![
        (
            json!({"ImageIds": [first], "Filters": [{"Name": "image-name", "Values": ["a"]}]}),
            "InvalidParameter.InvalidParameterCoexistImageIdsFilters",
        ),
        (
            json!({"Filters": (0..11).map(|_| json!({"Name": "image-name", "Values": ["a"]})).collect::<Vec<_>>()}),
            "InvalidFilter",
        ),
        (
            json!({"Filters": [{"Name": "image-name", "Values": ["a", "b", "c", "d", "e", "f"]}]}),
            "InvalidFilterValue.LimitExceeded",
        ),
        (
            json!({"Filters": [{"Name": "colour", "Values": ["a"]}]}),
            "InvalidFilter",
        ),
        (
            json!({"ImageIds": ["img-NOPE"]}),
            "InvalidImageId.Malformed",
        ),
        (json!({"Limit": 101}), "InvalidParameterValue"),
        (json!({"Offset": -1}), "InvalidParameterValue"),
    ];
    for (p, code) in errors {
        let r = a.call("DescribeImages", p.clone()).await;
        assert_eq!(r.code(), code, "{p}");
    }
    stop(server).await;
}

#[tokio::test]
async fn delete_and_modify() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(base_config(dir.path())).await;
    let a = Client::a(&server);
    let id = import_ok(&a, import_params("to-delete")).await;
    let other = import_ok(&a, import_params("other")).await;
    let used = |s: &Server| {
        let catalog = s.state().catalog.clone();
        async move { catalog.quota_used(UIN_A, "ap-guangzhou").await.unwrap() }
    };
    assert_eq!(used(&server).await, 2);

    // Still importing: neither deletable nor modifiable.
    let r = a.call("DeleteImages", json!({"ImageIds": [id]})).await;
    assert_eq!(r.code(), "InvalidImageId.IncorrectState");
    let r = a
        .call(
            "ModifyImageAttribute",
            json!({"ImageId": id, "ImageName": "renamed"}),
        )
        .await;
    assert_eq!(r.code(), "InvalidImageId.IncorrectState");

    set_state(&server, &id, "NORMAL").await;
    set_state(&server, &other, "IMPORTFAILED").await;

    // Modify: value rules, uniqueness, then real changes.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"ImageId": "img-bad"}), "InvalidImageId.Malformed"),
        (
            json!({"ImageId": "img-00000000", "ImageName": "x"}),
            "InvalidImageId.NotFound",
        ),
        (
            json!({"ImageId": id, "ImageName": "other"}),
            "InvalidImageName.Duplicate",
        ),
        (
            json!({"ImageId": id, "ImageName": "n".repeat(61)}),
            "InvalidParameterValue.TooLarge",
        ),
        (
            json!({"ImageId": id, "ImageDescription": "d".repeat(257)}),
            "InvalidParameterValue.TooLarge",
        ),
        (
            json!({"ImageId": id, "ImageFamily": "no spaces"}),
            "InvalidParameterValue.InvalidImageFamily",
        ),
    ];
    for (p, code) in cases {
        assert_eq!(
            a.call("ModifyImageAttribute", p.clone()).await.code(),
            code,
            "{p}"
        );
    }
    a.call(
        "ModifyImageAttribute",
        json!({"ImageId": id, "ImageName": "renamed", "ImageDescription": "new",
               "ImageFamily": "fam-1", "ImageDeprecated": true}),
    )
    .await
    .ok();
    let d = describe(&a, json!({"ImageIds": [id]})).await;
    let img = &d["ImageSet"][0];
    assert_eq!(img["ImageName"], "renamed");
    assert_eq!(img["ImageDescription"], "new");
    assert_eq!(img["ImageFamily"], "fam-1");
    assert_eq!(img["ImageDeprecated"], true);
    // The old name is free again.
    import_ok(&a, import_params("to-delete")).await;
    assert_eq!(used(&server).await, 3);

    // Delete: malformed, unknown, DryRun, then for real (with the blob).
    let r = a
        .call("DeleteImages", json!({"ImageIds": ["img-bad"]}))
        .await;
    assert_eq!(r.code(), "InvalidImageId.Malformed");
    let r = a
        .call("DeleteImages", json!({"ImageIds": [id, "img-00000000"]}))
        .await;
    assert_eq!(r.code(), "InvalidImageId.NotFound");
    let blob = dir.path().join("images").join(format!("{id}.qcow2"));
    std::fs::write(&blob, b"qcow2 stand-in").unwrap();
    let r = a
        .call(
            "DeleteImages",
            json!({"ImageIds": [id], "DryRun": true, "DeleteBindedSnap": true}),
        )
        .await;
    assert_eq!(r.ok().as_object().unwrap().len(), 1);
    assert!(blob.exists());
    assert_eq!(
        describe(&a, json!({"ImageIds": [id]})).await["TotalCount"],
        1
    );
    a.call("DeleteImages", json!({"ImageIds": [id, other]}))
        .await
        .ok();
    assert!(!blob.exists());
    assert_eq!(
        describe(&a, json!({"ImageIds": [id, other]})).await["TotalCount"],
        0
    );
    assert_eq!(used(&server).await, 1);
    let r = a.call("DeleteImages", json!({"ImageIds": [id]})).await;
    assert_eq!(r.code(), "InvalidImageId.NotFound");
    // Nothing of the deleted images is left in any table.
    for table in ["images", "image_tags", "image_disks", "import_jobs"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE image_id = $1 OR image_id = $2"
        )))
        .bind(&id)
        .bind(&other)
        .fetch_one(server.state().catalog.pool())
        .await
        .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    stop(server).await;
}

#[tokio::test]
async fn import_writes_image_disks_tags_and_job_together() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(base_config(dir.path())).await;
    let a = Client::a(&server);
    let mut p = import_params("queued");
    p["ImportImageDataDiskList"] =
        json!([{"ImageUrl": cos_url(APP_A, "d1.raw")}, {"ImageUrl": cos_url(APP_A, "d2.raw")}]);
    p["TagSpecification"] =
        json!([{"ResourceType": "image", "Tags": [{"Key": "k", "Value": "v"}]}]);
    let id = import_ok(&a, p).await;
    let pool = server.state().catalog.pool();
    let row = sqlx::query("SELECT state, phase, attempts, run_after, cancel_requested FROM import_jobs WHERE image_id = $1")
        .bind(&id)
        .fetch_one(pool)
        .await
        .unwrap();
    use sqlx::Row;
    assert_eq!(row.get::<String, _>("state"), "QUEUED");
    assert_eq!(row.get::<i64, _>("attempts"), 0);
    assert_eq!(row.get::<i64, _>("cancel_requested"), 0);
    let disks = sqlx::query("SELECT disk_index, disk_usage, source_url, blob_key FROM image_disks WHERE image_id = $1 ORDER BY disk_index")
        .bind(&id)
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(disks.len(), 3);
    assert_eq!(disks[0].get::<String, _>("disk_usage"), "SYSTEM_DISK");
    assert_eq!(
        disks[0].get::<String, _>("source_url"),
        cos_url(APP_A, "centos7.qcow2")
    );
    assert_eq!(
        disks[2].get::<String, _>("source_url"),
        cos_url(APP_A, "d2.raw")
    );
    assert_eq!(disks[0].get::<String, _>("blob_key"), format!("{id}.qcow2"));
    let state: String = sqlx::query_scalar("SELECT state FROM images WHERE image_id = $1")
        .bind(&id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(state, "IMPORTING");
    stop(server).await;
}

#[tokio::test]
async fn concurrent_imports_one_name_and_quota() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(base_config(dir.path())).await;
    let a = Arc::new(Client::a(&server));

    // 20 concurrent calls, one name: exactly one wins.
    let calls = (0..20).map(|_| {
        let a = a.clone();
        tokio::spawn(async move { a.call("ImportImage", import_params("same-name")).await })
    });
    let mut ok = 0;
    for c in futures::future::join_all(calls).await {
        let r = c.unwrap();
        match r.code() {
            "" => ok += 1,
            "InvalidImageName.Duplicate" => {}
            other => panic!("unexpected {other}: {}", r.response),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(describe(&a, json!({})).await["TotalCount"], 1);

    // Account B has a quota of 3: 20 concurrent distinct names, 3 win.
    let b = Arc::new(Client::b(&server));
    assert_eq!(
        b.call("DescribeImageQuota", json!({})).await.ok()["ImageNumQuota"],
        3
    );
    let calls = (0..20).map(|i| {
        let b = b.clone();
        tokio::spawn(async move {
            let mut p = import_params(&format!("b-{i}"));
            p["ImageUrl"] = json!(cos_url(APP_B, "b.qcow2"));
            b.call("ImportImage", p).await
        })
    });
    let mut ok = 0;
    for c in futures::future::join_all(calls).await {
        let r = c.unwrap();
        match r.code() {
            "" => ok += 1,
            "ImageQuotaLimitExceeded" => {}
            other => panic!("unexpected {other}: {}", r.response),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(describe(&b, json!({})).await["TotalCount"], 3);
    // DryRun sees the full quota too.
    let mut p = import_params("b-more");
    p["ImageUrl"] = json!(cos_url(APP_B, "b.qcow2"));
    p["DryRun"] = json!(true);
    assert_eq!(
        b.call("ImportImage", p).await.code(),
        "ImageQuotaLimitExceeded"
    );
    stop(server).await;
}

#[tokio::test]
async fn accounts_and_regions_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(base_config(dir.path())).await;
    let a = Client::a(&server);
    let b = Client::b(&server);
    let id = import_ok(&a, import_params("shared-name")).await;
    set_state(&server, &id, "NORMAL").await;

    // B sees nothing of A's, and A's id behaves as a non-existent one.
    assert_eq!(describe(&b, json!({})).await["TotalCount"], 0);
    assert_eq!(
        describe(&b, json!({"ImageIds": [id]})).await["TotalCount"],
        0
    );
    let r = b.call("DeleteImages", json!({"ImageIds": [id]})).await;
    assert_eq!(r.code(), "InvalidImageId.NotFound");
    let r = b
        .call(
            "ModifyImageAttribute",
            json!({"ImageId": id, "ImageName": "mine"}),
        )
        .await;
    assert_eq!(r.code(), "InvalidImageId.NotFound");
    // Names are per account and per region.
    let mut p = import_params("shared-name");
    p["ImageUrl"] = json!(cos_url(APP_B, "b.qcow2"));
    import_ok(&b, p).await;
    let sg = Client::a(&server).in_region(Some("ap-singapore"));
    let mut p = import_params("shared-name");
    p["ImageUrl"] = json!(format!(
        "https://images-{APP_A}.cos.ap-singapore.myqcloud.com/x.qcow2"
    ));
    import_ok(&sg, p).await;
    assert_eq!(describe(&sg, json!({})).await["TotalCount"], 1);
    assert_eq!(describe(&a, json!({})).await["TotalCount"], 1);
    // Another region's image is not found from here either.
    let r = sg.call("DeleteImages", json!({"ImageIds": [id]})).await;
    assert_eq!(r.code(), "InvalidImageId.NotFound");
    stop(server).await;
}

#[tokio::test]
async fn generated_account_and_catalog_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path());
    config.accounts.clear();
    let server = start(config.clone()).await;
    let created = match server.bootstrap() {
        imagegate::accounts::Bootstrap::Created(_, acc) => acc.clone(),
        other => panic!("expected a created account, got {other:?}"),
    };
    let c = Client::new(server.addr(), &created.secret_id, &created.secret_key);
    let mut p = import_params("persistent");
    p["ImageUrl"] = json!(cos_url(created.app_id, "p.qcow2"));
    let id = import_ok(&c, p).await;
    server.shutdown().await.unwrap();

    let server = start(config).await;
    assert!(matches!(
        server.bootstrap(),
        imagegate::accounts::Bootstrap::Loaded(_)
    ));
    let c = Client::new(server.addr(), &created.secret_id, &created.secret_key);
    let d = describe(&c, json!({})).await;
    assert_eq!(d["TotalCount"], 1);
    assert_eq!(d["ImageSet"][0]["ImageId"], id.as_str());
    assert_eq!(d["ImageSet"][0]["ImageCreator"], created.uin.as_str());
    stop(server).await;
}

#[tokio::test]
async fn rate_limits_per_account_and_action() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path());
    config.rate_limits.enabled = true;
    let server = start(config).await;
    let a = Client::a(&server);
    let mut p = import_params("dry");
    p["DryRun"] = json!(true);
    let mut limited = 0;
    for _ in 0..30 {
        let r = a.call("ImportImage", p.clone()).await;
        match r.code() {
            "" => {}
            "RequestLimitExceeded" => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // 10/s with a one-second burst: most of 30 quick calls are refused.
    assert!(limited >= 10, "only {limited} limited");
    // Another action and another account have their own buckets.
    a.call("DescribeImageQuota", json!({})).await.ok();
    let mut pb = p.clone();
    pb["ImageUrl"] = json!(cos_url(APP_B, "b.qcow2"));
    Client::b(&server).call("ImportImage", pb).await.ok();
    stop(server).await;
}

/// Tencent's documented example, as a legacy v1 GET signed with HmacSHA256.
#[tokio::test]
async fn documented_get_example_with_legacy_signature() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(base_config(dir.path())).await;
    let host = server.addr().to_string();
    let mut params: Vec<(String, String)> = [
        ("Action", "ImportImage"),
        ("OsType", "CentOS"),
        ("OsVersion", "6"),
        ("ImageName", "sample"),
        ("ImageDescription", "sampleimage"),
        (
            "ImageUrl",
            "http://111-1251233127.cosd.myqcloud.com/Windows Server 2008 R2 x64a.vmdk",
        ),
        ("Architecture", "x86_64"),
        ("Version", "2017-03-12"),
        ("Region", "ap-guangzhou"),
        ("Nonce", "11886"),
        ("SecretId", "AKIDaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("SignatureMethod", "HmacSHA256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    params.push((
        "Timestamp".into(),
        chrono::Utc::now().timestamp().to_string(),
    ));
    let sig = tcapi::sign_v1(
        "GET",
        &host,
        "/",
        &params,
        "keyA",
        tcapi::SignatureMethod::HmacSha256,
    );
    params.push(("Signature".into(), sig));
    let url = format!("http://{host}/?{}", tcapi::form_urlencode(&params));
    let r = reply(reqwest::Client::new().get(url).send().await.unwrap()).await;
    let id = r.ok()["ImageId"].as_str().unwrap().to_string();
    let a = Client::a(&server);
    let d = describe(&a, json!({"ImageIds": [id]})).await;
    assert_eq!(d["ImageSet"][0]["ImageName"], "sample");
    assert_eq!(d["ImageSet"][0]["OsName"], "CentOS 6 64bit");
    let url: String = sqlx::query_scalar("SELECT source_url FROM image_disks WHERE image_id = $1")
        .bind(&id)
        .fetch_one(server.state().catalog.pool())
        .await
        .unwrap();
    assert_eq!(
        url,
        "http://111-1251233127.cosd.myqcloud.com/Windows%20Server%202008%20R2%20x64a.vmdk"
    );
    stop(server).await;
}
