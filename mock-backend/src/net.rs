//! The transport seam: the server runs over any [`Acceptor`], so the same code serves real TCP,
//! Unix sockets and (with the `sim` feature) turmoil's simulated TCP.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream the mock serves.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ends the connection abortively: a TCP RST where the transport can send one. The default
    /// just drops (closes) the stream.
    fn reset(self)
    where
        Self: Sized,
    {
        drop(self);
    }
}

/// A source of incoming connections.
pub trait Acceptor: Send + Sync + 'static {
    type Stream: Connection;

    /// The next connection and a printable peer address.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;

    /// The address a client connects to, printable (`127.0.0.1:9000`, a socket path).
    fn local_addr(&self) -> io::Result<String>;
}

impl Connection for tokio::net::TcpStream {
    fn reset(self) {
        // SO_LINGER 0 turns the close into a RST; dropping does not block with a zero timeout.
        let _ = self.set_zero_linger();
        drop(self);
    }
}

impl Acceptor for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (s, peer) = tokio::net::TcpListener::accept(self).await?;
        // Scripted splits should reach the peer as separate segments, not wait for Nagle.
        let _ = s.set_nodelay(true);
        Ok((s, peer.to_string()))
    }

    fn local_addr(&self) -> io::Result<String> {
        tokio::net::TcpListener::local_addr(self).map(|a| a.to_string())
    }
}

#[cfg(unix)]
impl Connection for tokio::net::UnixStream {}

#[cfg(unix)]
impl Acceptor for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (s, peer) = tokio::net::UnixListener::accept(self).await?;
        let peer = peer
            .as_pathname()
            .map_or_else(|| "unix".to_string(), |p| p.display().to_string());
        Ok((s, peer))
    }

    fn local_addr(&self) -> io::Result<String> {
        let a = tokio::net::UnixListener::local_addr(self)?;
        Ok(a.as_pathname()
            .map_or_else(|| "unix".to_string(), |p| p.display().to_string()))
    }
}

#[cfg(feature = "sim")]
impl Connection for turmoil::net::TcpStream {}

#[cfg(feature = "sim")]
impl Acceptor for turmoil::net::TcpListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (s, peer) = turmoil::net::TcpListener::accept(self).await?;
        Ok((s, peer.to_string()))
    }

    fn local_addr(&self) -> io::Result<String> {
        turmoil::net::TcpListener::local_addr(self).map(|a| a.to_string())
    }
}
