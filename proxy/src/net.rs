//! The edge between the proxy and the network: where connections come from (an [`Acceptor`]) and
//! how backend connections are made (a [`Connector`]). Real TCP and Unix sockets live here; the
//! simulator supplies its own implementations, so nothing on the request path names a socket type.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a backend listens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendAddr {
    /// `host:port`, resolved at connect time.
    Tcp(String),
    /// A Unix domain socket path (`unix:/path|fcgi://...`).
    Unix(PathBuf),
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAddr::Tcp(a) => f.write_str(a),
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Addresses of an accepted client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

pub trait Connector: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn connect(&self, addr: &BackendAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Moves a connection opened on another serving thread's runtime to the calling one, so its
    /// events are delivered where it is used. The default keeps it as it is.
    fn adopt(&self, stream: Self::Stream) -> io::Result<Self::Stream> {
        Ok(stream)
    }
}

pub trait Acceptor: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, ConnInfo)>> + Send;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Real sockets: TCP and Unix.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioConnector;

/// A backend stream over either transport.
#[derive(Debug)]
pub enum TokioStream {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl Connector for TokioConnector {
    type Stream = TokioStream;
    async fn connect(&self, addr: &BackendAddr) -> io::Result<TokioStream> {
        match addr {
            BackendAddr::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str()).await?;
                // Records are written whole; Nagle would only add latency.
                s.set_nodelay(true)?;
                Ok(TokioStream::Tcp(s))
            }
            #[cfg(unix)]
            BackendAddr::Unix(p) => {
                Ok(TokioStream::Unix(tokio::net::UnixStream::connect(p).await?))
            }
            #[cfg(not(unix))]
            BackendAddr::Unix(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "unix sockets are not available on this platform",
            )),
        }
    }

    fn adopt(&self, stream: TokioStream) -> io::Result<TokioStream> {
        // Deregistered from the old runtime's reactor, registered with the current one.
        Ok(match stream {
            TokioStream::Tcp(s) => {
                TokioStream::Tcp(tokio::net::TcpStream::from_std(s.into_std()?)?)
            }
            #[cfg(unix)]
            TokioStream::Unix(s) => {
                TokioStream::Unix(tokio::net::UnixStream::from_std(s.into_std()?)?)
            }
        })
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            TokioStream::Tcp($s) => $e,
            #[cfg(unix)]
            TokioStream::Unix($s) => $e,
        }
    };
}

impl AsyncRead for TokioStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for TokioStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl Acceptor for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Stream, ConnInfo)> {
        let (s, peer) = tokio::net::TcpListener::accept(self).await?;
        let local = s.local_addr()?;
        s.set_nodelay(true)?;
        Ok((s, ConnInfo { peer, local }))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

#[cfg(feature = "sim")]
mod sim {
    use super::*;

    /// Backend connections inside a turmoil simulation (TCP only: turmoil has no Unix sockets).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct SimConnector;

    impl Connector for SimConnector {
        type Stream = turmoil::net::TcpStream;
        async fn connect(&self, addr: &BackendAddr) -> io::Result<Self::Stream> {
            match addr {
                BackendAddr::Tcp(a) => turmoil::net::TcpStream::connect(a.as_str()).await,
                BackendAddr::Unix(_) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "unix sockets are not simulated",
                )),
            }
        }
    }

    impl Acceptor for turmoil::net::TcpListener {
        type Stream = turmoil::net::TcpStream;
        async fn accept(&self) -> io::Result<(Self::Stream, ConnInfo)> {
            let (s, peer) = turmoil::net::TcpListener::accept(self).await?;
            let local = s.local_addr()?;
            Ok((s, ConnInfo { peer, local }))
        }
        fn local_addr(&self) -> io::Result<SocketAddr> {
            turmoil::net::TcpListener::local_addr(self)
        }
    }
}

#[cfg(feature = "sim")]
pub use sim::SimConnector;

/// `AsyncWrite` for a wrapper around a stream, every call passed to its field `$field` (vectored
/// writes included, which a default implementation would turn into one write per slice).
macro_rules! forward_async_write {
    ($t:ty, $field:ident $(, $g:ident)?) => {
        impl$(<$g: tokio::io::AsyncWrite + Unpin>)? tokio::io::AsyncWrite for $t {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$field.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use forward_async_write;

/// `AsyncRead` for a wrapper around a stream, passed to its field `$field`.
macro_rules! forward_async_read {
    ($t:ty, $field:ident $(, $g:ident)?) => {
        impl$(<$g: tokio::io::AsyncRead + Unpin>)? tokio::io::AsyncRead for $t {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_read(cx, buf)
            }
        }
    };
}
pub(crate) use forward_async_read;

/// One read of at most `N` bytes into a buffer on the stack, handed to `take`. The buffer exists
/// for the read only: a buffer held across an await would be part of the task's future, idle
/// connections included.
pub(crate) fn read_on_stack<'a, const N: usize, R, T>(
    r: &'a mut R,
    mut take: impl FnMut(&[u8]) -> T + 'a,
) -> impl Future<Output = io::Result<T>> + 'a
where
    R: AsyncRead + Unpin,
{
    std::future::poll_fn(move |cx| {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); N];
        let mut rb = ReadBuf::uninit(&mut buf);
        Pin::new(&mut *r)
            .poll_read(cx, &mut rb)
            .map_ok(|()| take(rb.filled()))
    })
}
