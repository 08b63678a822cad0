//! `imagegate images …` end to end against a tiny in-process API stub on
//! 127.0.0.1 (kept inside the crate so it compiles only with the module).
//!
//! The stub checks every request with tcapi's server half (decode, then
//! verify against its key and clock), exactly as `imagegate serve` does, and
//! answers from a script per action (the last answer repeats). The tests
//! check exit codes, what is printed, and what the client sent.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::credentials::Sources;
use super::{run_with, ClientOptions, Display, ImagesCommand, Io, ListArgs};

const SECRET_ID: &str = "AKIDstubstubstubstubstubstub";
const SECRET_KEY: &str = "stub-secret-key";

#[derive(Default)]
struct Script {
    answers: HashMap<String, VecDeque<Value>>,
    /// (action, parameters) of every verified request, in order.
    calls: Vec<(String, Value)>,
}

type Shared = Arc<Mutex<Script>>;

fn envelope(mut body: Value, request_id: &str) -> String {
    body["RequestId"] = json!(request_id);
    json!({ "Response": body }).to_string()
}

pub(super) fn error(code: &str, message: &str) -> Value {
    json!({"Error": {"Code": code, "Message": message}})
}

async fn api(
    State(script): State<Shared>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> String {
    let owned: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or("\u{fffd}").to_string(),
            )
        })
        .collect();
    let hs: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let raw = tcapi::RawRequest {
        method: method.as_str(),
        raw_query: "",
        headers: &hs,
        body: &body,
    };
    let req = match tcapi::decode(&raw) {
        Ok(r) => r,
        Err((e, _)) => return envelope(error(&e.code, &e.message_en), "stub-decode"),
    };
    if req.secret_id != SECRET_ID {
        return envelope(
            error("AuthFailure.SecretIdNotFound", "unknown SecretId"),
            "stub-auth",
        );
    }
    if let Err(e) = req.verify(&raw, SECRET_KEY, chrono::Utc::now().timestamp()) {
        return envelope(error(&e.code, &e.message_en), "stub-verify");
    }
    // The typed decoder rejects unknown or mistyped parameters, as the server does.
    if let Err(e) = tcapi::decode_action(&req.action, &req.params) {
        return envelope(error(&e.code, &e.message_en), "stub-params");
    }
    let params: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut s = script.lock().unwrap();
    s.calls.push((req.action.clone(), params));
    let answer = match s.answers.get_mut(&req.action) {
        Some(q) if q.len() > 1 => q.pop_front().unwrap(),
        Some(q) if q.len() == 1 => q[0].clone(),
        _ => error("InvalidAction", "not scripted"),
    };
    envelope(answer, &format!("req-{}", s.calls.len()))
}

pub(super) struct Stub {
    endpoint: String,
    script: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    pub(super) async fn start(answers: Vec<(&str, Vec<Value>)>) -> Stub {
        let script: Shared = Arc::new(Mutex::new(Script {
            answers: answers
                .into_iter()
                .map(|(a, v)| (a.to_string(), v.into()))
                .collect(),
            calls: Vec::new(),
        }));
        let app = Router::new()
            .route("/", post(api))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Stub {
            endpoint: format!("http://{addr}"),
            script,
            shutdown: Some(tx),
            task,
        }
    }

    pub(super) fn options(&self) -> ClientOptions {
        ClientOptions {
            endpoint: Some(self.endpoint.clone()),
            region: Some("ap-guangzhou".into()),
            profile: None,
            secret_id: Some(SECRET_ID.into()),
            secret_key: Some(SECRET_KEY.into()),
            json: false,
        }
    }

    pub(super) fn calls(&self) -> Vec<(String, Value)> {
        self.script.lock().unwrap().calls.clone()
    }

    pub(super) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

pub(super) struct Output {
    pub(super) code: i32,
    pub(super) out: String,
    pub(super) err: String,
}

/// Run one command with an empty environment and no home folder, capturing
/// both streams; plain progress lines (not a terminal).
pub(super) async fn run(opts: &ClientOptions, cmd: ImagesCommand) -> Output {
    let no_env = |_: &str| None;
    let sources = Sources {
        env: &no_env,
        home: None,
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = {
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            display: Display::Plain,
        };
        run_with(opts, cmd, &sources, &mut io).await.unwrap()
    };
    Output {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

pub(super) fn task(state: &str, phase: &str, percent: u64, image_state: &str) -> Value {
    json!({
        "ImportImageTaskSet": [{
            "ImageId": "img-test0001", "ImageName": "web", "ImageState": image_state,
            "TaskState": state, "Phase": phase, "Percent": percent,
            "BytesFetched": percent * 1024 * 1024, "BytesTotal": 100 * 1024 * 1024,
            "BytesConverted": 0, "BytesWritten": 0,
            "SourceFormat": "qcow2", "VirtualSize": 1073741824u64,
            "Sha256": if state == "SUCCEEDED" { json!("9f86d081884c7d65") } else { Value::Null },
        }],
        "TotalCount": 1,
    })
}

pub(super) fn failed_task() -> Value {
    let mut t = task("FAILED", "INSPECTING_FORMAT", 100, "IMPORTFAILED");
    t["ImportImageTaskSet"][0]["FailureCode"] = json!("ExternalReferenceRefused");
    t["ImportImageTaskSet"][0]["FailureMessage"] =
        json!("the qcow2 image names a backing file (/etc/hostname)");
    t
}

pub(super) fn images(state: &str) -> Value {
    json!({"TotalCount": 1, "ImageSet": [{
        "ImageId": "img-test0001", "ImageName": "web", "ImageState": state,
        "OsName": "CentOS 7", "Architecture": "x86_64", "ImageSize": 1,
        "CreatedTime": "2026-01-01T00:00:00Z"}]})
}

fn fast(id: &str) -> ImagesCommand {
    ImagesCommand::Watch {
        id: id.into(),
        interval: Duration::from_millis(10),
    }
}

pub(super) fn import_cmd(wait: bool) -> ImagesCommand {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ImagesCommand,
    }
    let mut args = vec![
        "images",
        "import",
        "--url",
        "https://bucket-1250000000.cos.ap-guangzhou.myqcloud.com/web.qcow2",
        "--name",
        "web",
        "--os-type",
        "CentOS",
        "--os-version",
        "7",
        "--force",
        "--data-disk",
        "https://bucket-1250000000.cos.ap-guangzhou.myqcloud.com/data.raw",
        "--tag",
        "env=prod",
        "--interval",
        "0.01",
    ];
    if wait {
        args.push("--wait");
    }
    Cli::parse_from(args).cmd
}

#[tokio::test]
async fn import_wait_follows_progress_to_normal() {
    let stub = Stub::start(vec![
        ("ImportImage", vec![json!({"ImageId": "img-test0001"})]),
        (
            "DescribeImportImageTasks",
            vec![
                task("QUEUED", "", 0, "IMPORTING"),
                task("RUNNING", "FETCHING", 30, "IMPORTING"),
                task("RUNNING", "FETCHING", 30, "IMPORTING"),
                task("RUNNING", "CONVERTING", 60, "IMPORTING"),
                task("SUCCEEDED", "DONE", 100, "NORMAL"),
            ],
        ),
        ("DescribeImages", vec![images("NORMAL")]),
    ])
    .await;
    let o = run(&stub.options(), import_cmd(true)).await;
    assert_eq!(o.code, 0, "out:\n{}\nerr:\n{}", o.out, o.err);
    let lines: Vec<&str> = o.out.lines().collect();
    assert_eq!(lines[0], "Importing img-test0001 \"web\" (RequestId req-1)");
    // One line per change: the repeated 30 % poll prints nothing.
    assert_eq!(lines[1], "img-test0001 QUEUED - 0% 0 B/100.0 MiB fetched");
    assert!(
        lines[2].starts_with("img-test0001 RUNNING FETCHING 30% 30.0 MiB/100.0 MiB fetched"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("img-test0001 RUNNING CONVERTING 60%"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].starts_with("img-test0001 SUCCEEDED DONE 100%"),
        "{}",
        lines[4]
    );
    assert_eq!(
        lines[5],
        "img-test0001 is NORMAL (from qcow2, virtual size 1.0 GiB, sha256 9f86d081884c7d65)"
    );
    assert_eq!(lines.len(), 6, "{}", o.out);

    let calls = stub.calls();
    let (action, params) = &calls[0];
    assert_eq!(action, "ImportImage");
    assert_eq!(
        params,
        &json!({
            "Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7",
            "ImageUrl": "https://bucket-1250000000.cos.ap-guangzhou.myqcloud.com/web.qcow2",
            "ImageName": "web", "Force": true,
            "TagSpecification": [{"ResourceType": "image", "Tags": [{"Key": "env", "Value": "prod"}]}],
            "ImportImageDataDiskList": [{"ImageUrl": "https://bucket-1250000000.cos.ap-guangzhou.myqcloud.com/data.raw"}],
        })
    );
    assert!(calls
        .iter()
        .skip(1)
        .all(|(a, p)| p == &json!({"ImageIds": ["img-test0001"]}) && a.starts_with("Describe")));
    // DescribeImages is asked only once the task says the import is over.
    assert_eq!(
        calls.iter().filter(|(a, _)| a == "DescribeImages").count(),
        1
    );
    stub.stop().await;
}

#[tokio::test]
async fn watch_reports_failure_code_message_and_advice() {
    let stub = Stub::start(vec![
        (
            "DescribeImportImageTasks",
            vec![task("RUNNING", "FETCHING", 10, "IMPORTING"), failed_task()],
        ),
        ("DescribeImages", vec![images("IMPORTFAILED")]),
    ])
    .await;
    let o = run(&stub.options(), fast("img-test0001")).await;
    assert_eq!(o.code, 1, "out:\n{}\nerr:\n{}", o.out, o.err);
    assert!(
        o.out.starts_with("img-test0001 RUNNING FETCHING 10%"),
        "{}",
        o.out
    );
    assert!(
        o.err.starts_with(
            "img-test0001: Import failed: ExternalReferenceRefused: the qcow2 image names a backing file (/etc/hostname)\n\
             What to do: The image points at other files"
        ),
        "{}",
        o.err
    );
    stub.stop().await;
}

#[tokio::test]
async fn watch_without_task_action_follows_image_state() {
    // The real cloud has no DescribeImportImageTasks: unscripted actions
    // answer InvalidAction, and the watch falls back to the image state.
    let stub = Stub::start(vec![(
        "DescribeImages",
        vec![images("IMPORTING"), images("IMPORTING"), images("NORMAL")],
    )])
    .await;
    let o = run(&stub.options(), fast("img-test0001")).await;
    assert_eq!(o.code, 0, "out:\n{}\nerr:\n{}", o.out, o.err);
    assert_eq!(o.out, "img-test0001 is NORMAL\n");
    let calls = stub.calls();
    assert_eq!(
        calls.iter().filter(|(a, _)| a == "DescribeImages").count(),
        3
    );
    // Asked once, then not again.
    assert_eq!(
        calls
            .iter()
            .filter(|(a, _)| a == "DescribeImportImageTasks")
            .count(),
        1
    );

    // An import that fails there has no reason to show, and says so.
    let stub2 = Stub::start(vec![("DescribeImages", vec![images("IMPORTFAILED")])]).await;
    let o = run(&stub2.options(), fast("img-test0001")).await;
    assert_eq!(o.code, 1);
    assert!(
        o.err.contains("IMPORTFAILED: the server gives no reason"),
        "{}",
        o.err
    );
    stub.stop().await;
    stub2.stop().await;
}

#[tokio::test]
async fn api_errors_print_code_message_request_id() {
    let stub = Stub::start(vec![(
        "DeleteImages",
        vec![error(
            "InvalidImageId.IncorrectState",
            "The image img-test0001 is IMPORTING.",
        )],
    )])
    .await;
    let o = run(
        &stub.options(),
        ImagesCommand::Delete {
            ids: vec!["img-test0001".into()],
            dry_run: false,
        },
    )
    .await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.err,
        "InvalidImageId.IncorrectState: The image img-test0001 is IMPORTING. (RequestId req-1)\n"
    );
    assert_eq!(o.out, "");

    // A wrong key is caught by the stub's signature check.
    let mut opts = stub.options();
    opts.secret_key = Some("not-the-key".into());
    let o = run(&opts, fast("img-test0001")).await;
    assert_eq!(o.code, 1);
    assert!(
        o.err.starts_with("AuthFailure.SignatureFailure: "),
        "{}",
        o.err
    );
    assert!(
        o.err.trim_end().ends_with("(RequestId stub-verify)"),
        "{}",
        o.err
    );
    stub.stop().await;
}

#[tokio::test]
async fn cancel_asks_for_the_image_and_says_how_to_follow_it() {
    let stub = Stub::start(vec![(
        "CancelImportImageTask",
        vec![
            json!({}),
            error(
                "InvalidImageId.IncorrectState",
                "The import of img-test0001 has already ended.",
            ),
        ],
    )])
    .await;
    let cancel = || ImagesCommand::Cancel {
        id: "img-test0001".into(),
    };
    let o = run(&stub.options(), cancel()).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        "Cancelling the import of img-test0001 (RequestId req-1); \
         `imagegate images watch img-test0001` follows it to the end\n"
    );
    assert_eq!(
        stub.calls(),
        vec![(
            "CancelImportImageTask".to_string(),
            json!({"ImageId": "img-test0001"})
        )]
    );
    // Too late: the API's answer, exit 1.
    let o = run(&stub.options(), cancel()).await;
    assert_eq!(o.code, 1);
    assert!(
        o.err.starts_with(
            "InvalidImageId.IncorrectState: The import of img-test0001 has already ended."
        ),
        "{}",
        o.err
    );
    stub.stop().await;
}

#[tokio::test]
async fn list_and_show_render_tables_and_details() {
    let two = json!({"TotalCount": 2, "ImageSet": [
        {"ImageId": "img-test0001", "ImageName": "web", "ImageState": "IMPORTING", "OsName": "CentOS 7",
         "Architecture": "x86_64", "CreatedTime": "2026-01-01T00:00:00Z"},
        {"ImageId": "img-test0002", "ImageName": "db", "ImageState": "NORMAL", "OsName": "Ubuntu 22.04",
         "Architecture": "arm", "ImageSize": 20, "CreatedTime": "2026-01-02T00:00:00Z"}]});
    let stub = Stub::start(vec![
        ("DescribeImages", vec![two]),
        (
            "DescribeImportImageTasks",
            vec![task("RUNNING", "CONVERTING", 55, "IMPORTING")],
        ),
    ])
    .await;
    let o = run(
        &stub.options(),
        ImagesCommand::List(ListArgs {
            name: Some("w".into()),
            limit: 20,
            offset: 0,
        }),
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        "\
IMAGE ID      NAME  STATE                     OS            ARCH    SIZE    CREATED
img-test0001  web   IMPORTING 55% CONVERTING  CentOS 7      x86_64  -       2026-01-01T00:00:00Z
img-test0002  db    NORMAL                    Ubuntu 22.04  arm     20 GiB  2026-01-02T00:00:00Z
"
    );
    let calls = stub.calls();
    assert_eq!(
        calls[0].1,
        json!({"Filters": [{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]},
                           {"Name": "image-name", "Values": ["w"]}],
               "Offset": 0, "Limit": 20})
    );
    // Progress is asked only for the unfinished image.
    assert_eq!(
        calls[1].1,
        json!({"ImageIds": ["img-test0001"], "Limit": 100})
    );

    let mut as_json = stub.options();
    as_json.json = true;
    let o = run(
        &as_json,
        ImagesCommand::Show {
            id: "img-test0002".into(),
        },
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    let shown: Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(shown["Image"]["ImageName"], "db");
    stub.stop().await;

    // An ID the service does not know.
    let stub = Stub::start(vec![(
        "DescribeImages",
        vec![json!({"TotalCount": 0, "ImageSet": []})],
    )])
    .await;
    let o = run(
        &stub.options(),
        ImagesCommand::Show {
            id: "img-nothere1".into(),
        },
    )
    .await;
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "img-nothere1: no such image\n");
    stub.stop().await;
}

#[tokio::test]
async fn local_problems_exit_2_and_unreachable_servers_exit_1() {
    let no_creds = ClientOptions {
        endpoint: Some("http://127.0.0.1:9".into()),
        region: Some("ap-guangzhou".into()),
        ..Default::default()
    };
    let o = run(&no_creds, fast("img-x")).await;
    assert_eq!(o.code, 2);
    assert!(o.err.contains("no credentials"), "{}", o.err);

    let bad_endpoint = ClientOptions {
        endpoint: Some("ftp://127.0.0.1".into()),
        region: Some("ap-guangzhou".into()),
        secret_id: Some("AKID".into()),
        secret_key: Some("k".into()),
        profile: None,
        json: false,
    };
    let o = run(&bad_endpoint, fast("img-x")).await;
    assert_eq!(o.code, 2);
    assert!(o.err.contains("invalid endpoint"), "{}", o.err);

    // Nothing listens on the port of a stopped stub.
    let stub = Stub::start(vec![]).await;
    let opts = stub.options();
    stub.stop().await;
    let o = run(
        &opts,
        ImagesCommand::Delete {
            ids: vec!["img-x".into()],
            dry_run: true,
        },
    )
    .await;
    assert_eq!(o.code, 1);
    assert!(
        o.err.starts_with("cannot reach http://127.0.0.1:"),
        "{}",
        o.err
    );
}
