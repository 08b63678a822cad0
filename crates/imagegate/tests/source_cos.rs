//! COS sources that do not go over the public network: the `cos_root`
//! folder (read in place, never outside the folder, never a FIFO or a
//! symlink) and an S3-compatible `cos_endpoint` (moto_server on loopback).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diskformat::ReadAt;
use imagegate::config::{LimitsConfig, SourceConfig};
use imagegate::source::{
    parse_image_url, start_fetch, start_fetch_with, FetchError, FetchOptions, FetchOutcome,
    FetchProgress, ImageSource,
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const APP: u64 = 1251233127;
const TEST_LIMIT: Duration = Duration::from_secs(30);

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if (i >> 16) % 3 == 0 {
                0
            } else {
                x as u8
            }
        })
        .collect()
}

fn cos(key: &str) -> ImageSource {
    ImageSource::Cos {
        bucket: "images".into(),
        app_id: APP,
        region: Some("ap-guangzhou".into()),
        key: key.into(),
        url: format!("https://images-{APP}.cos.ap-guangzhou.myqcloud.com/{key}"),
    }
}

async fn run(
    src: &ImageSource,
    cfg: &SourceConfig,
    scratch: &Path,
) -> Result<(FetchOutcome, Vec<u8>), FetchError> {
    let go = async {
        let h = start_fetch(
            src,
            cfg,
            &LimitsConfig::default(),
            scratch,
            Arc::new(FetchProgress::default()),
            CancellationToken::new(),
        )
        .await?;
        let spool = h.spool.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut v = vec![0u8; spool.len() as usize];
            spool.read_at(0, &mut v).map(|_| v)
        });
        let out = h.done.await.expect("task")?;
        Ok((out, read.await.expect("reader").expect("read")))
    };
    tokio::time::timeout(TEST_LIMIT, go)
        .await
        .expect("test took too long")
}

// ------------------------------------------------------------------ cos_root

struct Root {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
    cfg: SourceConfig,
}

fn root() -> Root {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cos");
    let bucket = root.join(format!("images-{APP}"));
    std::fs::create_dir_all(bucket.join("dir")).unwrap();
    std::fs::write(bucket.join("dir/disk image.raw"), data(3 << 20)).unwrap();
    let outside = dir.path().join("secret");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("host-file"), b"host secret").unwrap();
    let cfg = SourceConfig {
        cos_root: Some(root.clone()),
        ..SourceConfig::default()
    };
    Root {
        _dir: dir,
        root,
        outside,
        cfg,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cos_root_object_is_read_in_place_and_hashed() {
    let r = root();
    let scratch = tempfile::tempdir().unwrap();
    // Through the URL parser, with a percent-encoded key.
    let src = parse_image_url(
        &format!("https://images-{APP}.cos.ap-guangzhou.myqcloud.com/dir/disk%20image.raw"),
        APP,
        &r.cfg,
    )
    .unwrap();
    let (out, read) = run(&src, &r.cfg, scratch.path()).await.unwrap();
    let d = data(3 << 20);
    assert_eq!(out.sha256, <[u8; 32]>::from(Sha256::digest(&d)));
    assert_eq!(out.bytes, d.len() as u64);
    assert_eq!(read, d);
    // Nothing was copied into the scratch folder.
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cos_root_refuses_escapes() {
    let r = root();
    let bucket = r.root.join(format!("images-{APP}"));
    std::os::unix::fs::symlink(r.outside.join("host-file"), bucket.join("file-link")).unwrap();
    std::os::unix::fs::symlink(&r.outside, bucket.join("dir-link")).unwrap();
    // A symlink to a file inside the root is refused too: no symlinks at all.
    std::os::unix::fs::symlink(bucket.join("dir/disk image.raw"), bucket.join("inner-link"))
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for key in [
        "file-link",
        "dir-link/host-file",
        "inner-link",
        "../../secret/host-file",
        "dir/../../../secret/host-file",
        "./dir/disk image.raw",
        "/etc/passwd",
        "dir//disk image.raw",
    ] {
        let e = run(&cos(key), &r.cfg, scratch.path()).await.unwrap_err();
        assert_eq!(e.code().as_str(), "SourcePathRefused", "{key}: {e}");
    }
    // A directory is not an object.
    let e = run(&cos("dir"), &r.cfg, scratch.path()).await.unwrap_err();
    assert_eq!(e.code().as_str(), "SourcePathRefused", "{e}");
    let e = run(&cos("no-such-object"), &r.cfg, scratch.path())
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "InvalidUrl", "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    // Another account's bucket folder is not reachable by a crafted source.
    let foreign = ImageSource::Cos {
        bucket: "images".into(),
        app_id: 1,
        region: None,
        key: "x".into(),
        url: String::new(),
    };
    let e = run(&foreign, &r.cfg, scratch.path()).await.unwrap_err();
    assert_eq!(e.code().as_str(), "InvalidUrl", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cos_root_fifo_does_not_hang() {
    let r = root();
    let fifo = r.root.join(format!("images-{APP}/pipe"));
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let scratch = tempfile::tempdir().unwrap();
    let e = tokio::time::timeout(
        Duration::from_secs(5),
        run(&cos("pipe"), &r.cfg, scratch.path()),
    )
    .await
    .expect("opening a FIFO must not block")
    .unwrap_err();
    assert_eq!(e.code().as_str(), "SourcePathRefused", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cos_root_size_limit() {
    let r = root();
    let scratch = tempfile::tempdir().unwrap();
    let limits = LimitsConfig {
        max_source_size: 1 << 20,
        ..LimitsConfig::default()
    };
    let e = start_fetch(
        &cos("dir/disk image.raw"),
        &r.cfg,
        &limits,
        scratch.path(),
        Arc::new(FetchProgress::default()),
        CancellationToken::new(),
    )
    .await
    .err()
    .expect("too large");
    assert_eq!(e.code().as_str(), "SourceTooLarge", "{e}");
}

// ------------------------------------------------------------ moto_server

/// moto_server on a free loopback port, killed when dropped.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Option<Moto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = match std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            // scripts/test installs moto and sets this: there, a missing
            // server is a failure, not a skip.
            if std::env::var_os("IMAGEGATE_REQUIRE_MOTO").is_some() {
                panic!("moto_server is not available ({e}) but IMAGEGATE_REQUIRE_MOTO is set");
            }
            eprintln!("SKIPPED: moto_server is not available ({e}); pip install 'moto[server]'");
            return None;
        }
    };
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(moto);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("SKIPPED: moto_server did not start listening within 20 s");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cos_endpoint_s3_compatible() {
    let Some(moto) = start_moto() else { return };
    let bucket = format!("images-{APP}");
    // Create the bucket (moto accepts an unsigned PUT) and the object.
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/{bucket}", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    let body = data(5 << 20);
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&moto.endpoint)
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_virtual_hosted_style_request(false)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let key = "dir/disk image.qcow2";
    object_store::ObjectStoreExt::put(
        &store,
        &object_store::path::Path::from_iter(key.split('/')),
        body.clone().into(),
    )
    .await
    .unwrap();

    let cfg = SourceConfig {
        cos_endpoint: Some(moto.endpoint.clone()),
        cos_access_key: Some("test".into()),
        cos_secret_key: Some("test".into()),
        ..SourceConfig::default()
    };
    let src = parse_image_url(
        &format!("https://{bucket}.cos.ap-guangzhou.myqcloud.com/dir/disk%20image.qcow2"),
        APP,
        &cfg,
    )
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (out, read) = run(&src, &cfg, scratch.path()).await.unwrap();
    assert_eq!(out.sha256, <[u8; 32]>::from(Sha256::digest(&body)));
    assert_eq!(read, body);

    let scratch = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        max_consecutive_failures: 1,
        ..FetchOptions::default()
    };
    let e = tokio::time::timeout(
        TEST_LIMIT,
        start_fetch_with(
            &cos("missing.raw"),
            &cfg,
            &LimitsConfig::default(),
            scratch.path(),
            Arc::new(FetchProgress::default()),
            CancellationToken::new(),
            &opts,
        ),
    )
    .await
    .unwrap()
    .err()
    .expect("missing object");
    assert_eq!(e.code().as_str(), "InvalidUrl", "{e}");
    assert!(e.to_string().contains("404"), "{e}");
}

/// Memory mode over `cos_endpoint`: bytes that left memory are fetched
/// again with bounded ranged GETs on the same object version (`If-Match`),
/// and a replaced object is refused, not mixed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cos_endpoint_rereads_in_memory_mode() {
    use imagegate::config::SpoolPolicy;
    use imagegate::source::{spool, SpoolTuning};
    let Some(moto) = start_moto() else { return };
    let bucket = format!("images-{APP}");
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/{bucket}", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&moto.endpoint)
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_virtual_hosted_style_request(false)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let path = object_store::path::Path::from("big.raw");
    let body = data(8 << 20);
    object_store::ObjectStoreExt::put(&store, &path, body.clone().into())
        .await
        .unwrap();
    let cfg = SourceConfig {
        cos_endpoint: Some(moto.endpoint.clone()),
        cos_access_key: Some("test".into()),
        cos_secret_key: Some("test".into()),
        spool: SpoolPolicy::Memory,
        ..SourceConfig::default()
    };
    let opts = FetchOptions {
        spool: SpoolTuning {
            ring_bytes: 1 << 20,
            keep_behind: 0,
            ..SpoolTuning::default()
        },
        ..FetchOptions::default()
    };
    let scratch = tempfile::tempdir().unwrap();
    let mut h = start_fetch_with(
        &cos("big.raw"),
        &cfg,
        &LimitsConfig::default(),
        scratch.path(),
        Arc::new(FetchProgress::default()),
        CancellationToken::new(),
        &opts,
    )
    .await
    .unwrap();
    // The converter: right behind the download.
    let s = h.spool.clone();
    let follower = tokio::task::spawn_blocking(move || {
        let mut all = vec![0u8; s.len() as usize];
        for (i, c) in all.chunks_mut(64 << 10).enumerate() {
            s.read_at((i << 16) as u64, c).unwrap();
        }
        all
    });
    let out = tokio::time::timeout(TEST_LIMIT, &mut h.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(follower.await.unwrap(), body);
    assert_eq!(out.sha256, <[u8; 32]>::from(Sha256::digest(&body)));

    // The inspector, afterwards: the first granule again.
    let s = h.spool.clone();
    let first = tokio::task::spawn_blocking(move || {
        spool::untracked(|| {
            let mut b = vec![0u8; 4096];
            s.read_at(100, &mut b).map(|_| b)
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&first[..], &body[100..4196]);
    assert!(h.spool.stats().reread >= 1 << 20, "{:?}", h.spool.stats());

    // Replaced: the next granule is refused by the precondition.
    object_store::ObjectStoreExt::put(
        &store,
        &path,
        data(8 << 20).into_iter().rev().collect::<Vec<u8>>().into(),
    )
    .await
    .unwrap();
    let s = h.spool.clone();
    let e = tokio::task::spawn_blocking(move || {
        spool::untracked(|| s.read_at(3 << 20, &mut [0u8; 100]))
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(e.to_string().contains("again"), "{e}");
    assert_eq!(
        h.reread_failure().expect("failure").code().as_str(),
        "SourceChanged"
    );
}
