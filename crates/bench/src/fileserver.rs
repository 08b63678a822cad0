//! A small loopback file server with Range support, standing in for COS or
//! any HTTP origin during the import benchmark.
//!
//! It sends file bodies with `sendfile(2)`, as nginx or an object store
//! would: in production the origin is another machine and costs the
//! importer's host nothing, while here it shares the two cores with what is
//! measured, so it should take as little CPU as an origin can. (A tokio
//! server copying every byte twice took ~0.85 s of CPU per GiB here, as
//! much as the importer's own SHA-256.) Both the floor and imagegate's run
//! are served by this same server.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

pub struct FileServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

pub fn start(dir: PathBuf) -> anyhow::Result<FileServer> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("origin-accept".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let dir = dir.clone();
                let _ = std::thread::Builder::new()
                    .name("origin-conn".into())
                    .spawn(move || {
                        let _ = serve_connection(&dir, conn);
                    });
            }
        })?;
    Ok(FileServer { addr, stop })
}

/// One keep-alive connection: GET requests, one after another.
fn serve_connection(dir: &Path, conn: TcpStream) -> std::io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut range = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("range") {
                    range = Some(value.trim().to_string());
                }
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let name = target.trim_start_matches('/');
        let file = (method == "GET" && !name.contains('/') && !name.starts_with('.'))
            .then(|| File::open(dir.join(name)).ok())
            .flatten();
        let Some(file) = file else {
            out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")?;
            continue;
        };
        let meta = file.metadata()?;
        let len = meta.len();
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let (from, to) = match range.as_deref().and_then(|r| parse_range(r, len)) {
            Some(r) => r,
            None => (0, len),
        };
        let mut head = if range.is_some() && (from, to) != (0, len) {
            format!(
                "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes {from}-{}/{len}\r\n",
                to - 1
            )
        } else {
            "HTTP/1.1 200 OK\r\n".to_string()
        };
        head.push_str(&format!(
            "content-length: {}\r\naccept-ranges: bytes\r\netag: \"{len:x}-{modified:x}\"\r\n\
             content-type: application/octet-stream\r\n\r\n",
            to - from
        ));
        out.write_all(head.as_bytes())?;
        send_file(&out, &file, from, to)?;
    }
}

/// `bytes=a-`, `bytes=a-b` or `bytes=-n`, as the half-open range it names
/// within a file of `len` bytes; `None` for anything else or unsatisfiable.
fn parse_range(spec: &str, len: u64) -> Option<(u64, u64)> {
    let (a, b) = spec.strip_prefix("bytes=")?.split_once('-')?;
    let (from, to) = match (a.trim(), b.trim()) {
        ("", n) => (len.saturating_sub(n.parse().ok()?), len),
        (a, "") => (a.parse().ok()?, len),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.saturating_add(1).min(len),
        ),
    };
    (from < to).then_some((from, to))
}

/// Sends `[from, to)` of `file` on `sock` without copying it through user
/// space.
fn send_file(sock: &TcpStream, file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let mut offset = from;
    while offset < to {
        let want = ((to - offset) as usize).min(1 << 30);
        let sent = match rustix::fs::sendfile(sock, file, Some(&mut offset), want) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if sent == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=10-", 100), Some((10, 100)));
        assert_eq!(parse_range("bytes=10-19", 100), Some((10, 20)));
        assert_eq!(parse_range("bytes=10-500", 100), Some((10, 100)));
        assert_eq!(parse_range("bytes=-30", 100), Some((70, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("items=1-2", 100), None);
    }
}
