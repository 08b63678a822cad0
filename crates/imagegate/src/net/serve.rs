//! The accept loop: admit under the cap, then drive one HTTP/1.1 connection
//! per task until it ends, its watchdog fires (header, idle timeouts;
//! eviction), or the server stops (graceful: the request in flight is
//! answered first).

use super::conns::{Admission, Conn, ConnectionId, Slot, Table};
use super::settings::Timeouts;
use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Largest request head (line and headers) buffered per connection: a GET
/// query may be 32 KiB, and bigger heads are refused by hyper with 431, so
/// slow clients cannot make each connection hold hyper's default ~400 KiB.
const MAX_HEAD_BUFFER: usize = 64 << 10;

/// One bound socket and how its connections are treated.
pub struct Listener {
    pub tcp: TcpListener,
    /// Set: every connection is TLS (`[tls]`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub table: Arc<Table>,
    pub timeouts: Timeouts,
    /// For log lines: "api" or "ops".
    pub name: &'static str,
}

/// Connections closed to make room, and refused, since start (all listeners).
pub static SHED: AtomicU64 = AtomicU64::new(0);

/// Serves `app` until `shutdown` resolves, then lets requests in flight
/// finish and returns once every connection is closed.
pub async fn serve(l: Listener, app: Router, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    let Listener {
        tcp,
        tls,
        table,
        timeouts,
        name,
    } = l;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = tcp.accept() => r,
        };
        let tcp_conn = match accepted {
            Ok((c, _peer)) => c,
            Err(e) => {
                // Out of descriptors or a connection reset before accept:
                // pause instead of spinning, the loop itself stays up.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match table.admit() {
            Admission::Admitted(s) => s,
            Admission::Evicted(s) => {
                note_shed(name, "closed the oldest connection without a request");
                s
            }
            Admission::Refused => {
                note_shed(name, "refused: every connection has a request in flight");
                continue;
            }
        };
        // Small request/response pairs: do not let Nagle hold them back.
        let _ = tcp_conn.set_nodelay(true);
        let job = Job {
            slot,
            app: app.clone(),
            timeouts,
            stop: stop.clone(),
        };
        tokio::spawn(job.run(tcp_conn, tls.clone()));
    }
    // No new connections from here on; those open finish their request.
    drop(tcp);
    stop.cancel();
    table.drained().await;
    Ok(())
}

fn note_shed(listener: &str, what: &str) {
    let n = SHED.fetch_add(1, Ordering::Relaxed) + 1;
    // First and then every 1000th: a flood must not become a log flood.
    if n == 1 || n.is_multiple_of(1000) {
        tracing::warn!(listener, shed_total = n, "connection cap reached: {what}");
    }
}

/// One accepted connection.
struct Job {
    slot: Slot,
    app: Router,
    timeouts: Timeouts,
    stop: CancellationToken,
}

impl Job {
    async fn run(self, tcp: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let conn = self.slot.conn.clone();
        let io = Counted {
            inner: tcp,
            conn: conn.clone(),
        };
        match tls {
            None => self.drive(io).await,
            Some(acceptor) => {
                // The handshake runs on the header clock (its bytes count as
                // the start of a request head).
                let stream = tokio::select! {
                    r = acceptor.accept(io) => match r {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                    _ = conn.expired(&self.timeouts) => return,
                    _ = self.stop.cancelled() => return,
                };
                self.drive(stream).await
            }
        }
    }

    async fn drive<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = self.slot.conn.clone();
        // The router as a hyper service that keeps the connection's clocks:
        // a request is in flight from its complete head until its answer.
        let (app, clocks) = (self.app, conn.clone());
        let connection = ConnectionId::next();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = clocks.begin();
            let mut app = app.clone();
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(connection);
            async move {
                let r = tower::Service::call(&mut app, req).await;
                drop(guard);
                r
            }
        });
        let mut builder = http1::Builder::new();
        builder.keep_alive(true).max_buf_size(MAX_HEAD_BUFFER);
        let served = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(served);
        tokio::select! {
            r = served.as_mut() => log_end(r),
            // Dropping the connection closes the socket.
            _ = conn.expired(&self.timeouts) => return,
            _ = self.stop.cancelled() => {
                served.as_mut().graceful_shutdown();
                tokio::select! {
                    r = served.as_mut() => log_end(r),
                    _ = conn.expired(&self.timeouts) => {}
                }
            }
        }
        drop(self.slot);
    }
}

fn log_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The socket, noting each read on the connection's clocks.
struct Counted<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.note_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
