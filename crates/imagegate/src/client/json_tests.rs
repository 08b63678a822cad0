//! `--json`: stdout carries exactly one JSON document (the API's reply, or
//! an error in the API's error shape) and stderr nothing; `images os` and
//! `images quota`. Against the stub of `stub_tests`.

use serde_json::{json, Value};

use super::stub_tests::{error, failed_task, images, import_cmd, run, task, Stub};
use super::{ClientOptions, ImagesCommand};

/// The whole of stdout parsed as one JSON value (fails on anything else).
fn one_doc(out: &str) -> Value {
    serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{out}"))
}

fn json_opts(stub: &Stub) -> ClientOptions {
    ClientOptions {
        json: true,
        ..stub.options()
    }
}

#[tokio::test]
async fn import_json_wait_prints_one_document() {
    let stub = Stub::start(vec![
        ("ImportImage", vec![json!({"ImageId": "img-test0001"})]),
        (
            "DescribeImportImageTasks",
            vec![
                task("RUNNING", "FETCHING", 30, "IMPORTING"),
                task("SUCCEEDED", "DONE", 100, "NORMAL"),
            ],
        ),
        ("DescribeImages", vec![images("NORMAL")]),
    ])
    .await;
    let o = run(&json_opts(&stub), import_cmd(true)).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.err, "");
    let doc = one_doc(&o.out);
    assert_eq!(doc["Image"]["ImageState"], "NORMAL");
    assert_eq!(doc["ImportTask"]["TaskState"], "SUCCEEDED");

    // Without --wait: the API's reply.
    let o = run(&json_opts(&stub), import_cmd(false)).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(one_doc(&o.out)["ImageId"], "img-test0001");
    stub.stop().await;
}

#[tokio::test]
async fn a_failed_import_is_still_one_document_with_exit_1() {
    let stub = Stub::start(vec![
        ("ImportImage", vec![json!({"ImageId": "img-test0001"})]),
        ("DescribeImportImageTasks", vec![failed_task()]),
        ("DescribeImages", vec![images("IMPORTFAILED")]),
    ])
    .await;
    let o = run(&json_opts(&stub), import_cmd(true)).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "");
    let doc = one_doc(&o.out);
    assert_eq!(doc["Image"]["ImageState"], "IMPORTFAILED");
    assert_eq!(doc["ImportTask"]["FailureCode"], "ExternalReferenceRefused");
    stub.stop().await;
}

#[tokio::test]
async fn errors_take_the_api_error_shape_on_stdout() {
    let stub = Stub::start(vec![(
        "DeleteImages",
        vec![error(
            "InvalidImageId.IncorrectState",
            "The image is IMPORTING.",
        )],
    )])
    .await;
    let delete = || ImagesCommand::Delete {
        ids: vec!["img-test0001".into()],
        dry_run: false,
    };
    let o = run(&json_opts(&stub), delete()).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "");
    assert_eq!(
        one_doc(&o.out),
        json!({"Response": {"Error": {"Code": "InvalidImageId.IncorrectState",
                                      "Message": "The image is IMPORTING."},
                            "RequestId": "req-1"}})
    );
    // A wrong key: the service's code.
    let mut wrong = json_opts(&stub);
    wrong.secret_key = Some("not-the-key".into());
    let o = run(&wrong, delete()).await;
    assert_eq!(
        one_doc(&o.out)["Response"]["Error"]["Code"],
        "AuthFailure.SignatureFailure"
    );
    // Local problems: the SDKs' client codes, exit 2.
    let no_scheme = ClientOptions {
        endpoint: Some("127.0.0.1:9".into()),
        ..json_opts(&stub)
    };
    let o = run(&no_scheme, delete()).await;
    assert_eq!(o.code, 2);
    let doc = one_doc(&o.out);
    assert_eq!(doc["Response"]["Error"]["Code"], "ClientParamsError");
    let msg = doc["Response"]["Error"]["Message"].as_str().unwrap();
    assert!(msg.contains("http://127.0.0.1:9"), "{msg}");
    let opts = json_opts(&stub);
    stub.stop().await;
    let o = run(&opts, delete()).await;
    assert_eq!(o.code, 1);
    assert_eq!(
        one_doc(&o.out)["Response"]["Error"]["Code"],
        "ClientNetworkError"
    );
}

#[tokio::test]
async fn os_and_quota() {
    let os = json!({
        "ImportImageOsListSupported": {"Linux": ["CentOS", "Ubuntu"], "Windows": []},
        "ImportImageOsVersionSet": [
            {"OsName": "CentOS", "OsVersions": ["7", "8"], "Architecture": ["x86_64", "arm_64"]},
            {"OsName": "Ubuntu", "OsVersions": ["22"], "Architecture": ["x86_64"]}]});
    let stub = Stub::start(vec![
        ("DescribeImportImageOs", vec![os]),
        ("DescribeImageQuota", vec![json!({"ImageNumQuota": 500})]),
        (
            "DescribeImages",
            vec![json!({"TotalCount": 3, "ImageSet": []})],
        ),
    ])
    .await;
    let o = run(&stub.options(), ImagesCommand::Os).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        "\
OS TYPE  OS VERSIONS  ARCHITECTURES
CentOS   7, 8         x86_64, arm_64
Ubuntu   22           x86_64
"
    );
    let o = run(&json_opts(&stub), ImagesCommand::Os).await;
    assert_eq!(
        one_doc(&o.out)["ImportImageOsVersionSet"][1]["OsName"],
        "Ubuntu"
    );
    let o = run(&stub.options(), ImagesCommand::Quota).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.out, "3 of 500 images used in ap-guangzhou\n");
    let o = run(&json_opts(&stub), ImagesCommand::Quota).await;
    assert_eq!(one_doc(&o.out)["ImageNumQuota"], 500);
    stub.stop().await;
}
