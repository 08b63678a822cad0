//! A small loopback file server with Range support, standing in for COS or
//! any HTTP origin during the import benchmark.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub struct FileServer {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(dir: PathBuf) -> anyhow::Result<FileServer> {
    let app = axum::Router::new()
        .route("/{name}", axum::routing::get(serve))
        .with_state(Arc::new(dir));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(FileServer { addr, task })
}

async fn serve(
    State(dir): State<Arc<PathBuf>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if name.contains('/') || name.starts_with('.') {
        return status(StatusCode::NOT_FOUND);
    }
    let path = dir.join(&name);
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return status(StatusCode::NOT_FOUND);
    };
    let Ok(meta) = file.metadata().await else {
        return status(StatusCode::NOT_FOUND);
    };
    let len = meta.len();
    let etag = format!(
        "\"{len:x}-{:x}\"",
        meta.modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok());
    let (code, from) = match start {
        Some(n) if n < len => (StatusCode::PARTIAL_CONTENT, n),
        _ => (StatusCode::OK, 0),
    };
    if from > 0 && file.seek(std::io::SeekFrom::Start(from)).await.is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len - from), 1 << 20);
    let mut resp = Response::builder()
        .status(code)
        .header(header::CONTENT_LENGTH, len - from)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, etag)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if code == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {from}-{}/{len}", len - 1),
        );
    }
    resp.body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR))
}

fn status(code: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}
