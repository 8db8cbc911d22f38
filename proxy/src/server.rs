//! The HTTP/1.1 front end: accepts connections, serves them with hyper, and shuts down
//! gracefully (stop accepting, let in-flight requests finish, then close).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::body::ProxyBody;
use crate::handler::Proxy;
use crate::net::{Acceptor, ConnInfo, Connector};

/// Front-end limits and timeouts.
#[derive(Debug, Clone)]
pub struct FrontSettings {
    /// Time allowed to receive a complete request head (slowloris guard).
    pub header_read_timeout: Duration,
    /// Longest a write to the client may make no progress (a client that stops reading); then
    /// the connection is dropped.
    pub client_write_timeout: Duration,
    /// Largest request head, in bytes (beyond: 431).
    pub max_header_bytes: usize,
    /// Most request header fields (beyond: 431).
    pub max_headers: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Date header on responses (off in the simulator, where wall time is not virtual).
    pub date_header: bool,
}

impl Default for FrontSettings {
    fn default() -> Self {
        FrontSettings {
            header_read_timeout: Duration::from_secs(30),
            client_write_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            shutdown_grace: Duration::from_secs(30),
            date_header: true,
        }
    }
}

/// Serves `acceptor` until `shutdown` turns true, then drains connections.
pub async fn serve<A: Acceptor, C: Connector>(
    acceptor: A,
    proxy: Arc<Proxy<C>>,
    settings: FrontSettings,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .max_headers(settings.max_headers)
        .auto_date_header(settings.date_header)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let (conn_done_tx, mut conn_done_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            a = acceptor.accept() => a,
        };
        let (stream, info) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let proxy = proxy.clone();
        let builder = builder.clone();
        let mut shutdown = shutdown.clone();
        let done = conn_done_tx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<Response<ProxyBody>, Infallible>(proxy.handle(req, info).await) }
            });
            let stream = SendTimeout::new(stream, settings.client_write_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                biased;
                r = conn.as_mut() => log_conn_end(r, info),
                _ = stopped(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    log_conn_end(conn.await, info);
                }
            }
            drop(done);
        });
    }
    // Wait for open connections to finish, up to the grace period.
    drop(conn_done_tx);
    let _ = tokio::time::timeout(settings.shutdown_grace, conn_done_rx.recv()).await;
    Ok(())
}

/// Serves the admin endpoints (`/metrics`, `/status`) on `acceptor` until shutdown.
pub async fn serve_admin<A: Acceptor, C: Connector>(
    acceptor: A,
    proxy: Arc<Proxy<C>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => return Ok(()),
            a = acceptor.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.admin(req.uri().path())) }
            });
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Resolves once shutdown is requested (or the controller is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn log_conn_end(r: Result<(), hyper::Error>, info: ConnInfo) {
    if let Err(e) = r {
        tracing::debug!(peer = %info.peer, "client connection ended: {e}");
    }
}

impl FrontSettings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        FrontSettings {
            header_read_timeout: c.timeouts.header_read,
            client_write_timeout: c.timeouts.client_write,
            max_header_bytes: c.limits.max_header_bytes,
            max_headers: c.limits.max_headers,
            ..FrontSettings::default()
        }
    }
}

/// A client stream whose writes fail once they have made no progress for `timeout` (nginx's
/// `send_timeout`, Apache's `Timeout`): hyper then drops the connection, so a client that stops
/// reading cannot hold it, and the response behind it, forever (security.md S21).
#[derive(Debug)]
struct SendTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write is blocked; cleared by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> SendTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        SendTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Called when the inner write is pending: an error once the stall has lasted `timeout`.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("client did not read for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(r, cx)
    }
}
