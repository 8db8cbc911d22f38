//! Idle keep-alive client connections: open many, send one request on each, read the
//! response, and keep them all open and silent while the proxy's memory is measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use testkit::http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::wrk::PATH;

/// Connections that completed their request and are held open.
#[derive(Debug)]
pub struct IdleConnections {
    streams: Vec<TcpStream>,
    /// Connections that failed to connect or to get a complete response.
    pub failed: usize,
    /// First failure, for the report.
    pub first_error: Option<String>,
}

impl IdleConnections {
    pub fn held(&self) -> usize {
        self.streams.len()
    }

    /// How many are still open (nothing readable: no EOF, no reset, no stray bytes).
    pub fn still_open(&self) -> usize {
        let mut byte = [0u8; 1];
        self.streams
            .iter()
            .filter(|s| {
                matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    }
}

/// Opens `n` connections to `addr`, at most `concurrency` being set up at a time, each
/// with one `GET` answered in full. Must run inside a tokio runtime.
pub async fn open(addr: SocketAddr, n: usize, concurrency: usize) -> IdleConnections {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            match tokio::time::timeout(Duration::from_secs(10), one(addr)).await {
                Ok(r) => r,
                Err(_) => Err("timed out".to_owned()),
            }
        });
    }
    let mut out = IdleConnections {
        streams: Vec::with_capacity(n),
        failed: 0,
        first_error: None,
    };
    while let Some(r) = tasks.join_next().await {
        match r.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(s) => out.streams.push(s),
            Err(e) => {
                out.failed += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
    out
}

async fn one(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bench-idle\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    loop {
        if response_complete(&buf)? {
            return Ok(s);
        }
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&buf)));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether `buf` holds one complete HTTP/1.x response (Content-Length or chunked), and that it
/// is a 200 that keeps the connection open.
pub fn response_complete(buf: &[u8]) -> Result<bool, String> {
    let Some((r, _)) = http1::next_response(buf, false, false)? else {
        return Ok(false);
    };
    if r.status != 200 {
        return Err(format!("status {} {}", r.status, r.reason));
    }
    if r.closes() {
        return Err("server closes the connection".to_owned());
    }
    Ok(r.complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_responses() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world\n";
        assert_eq!(response_complete(cl), Ok(true));
        assert_eq!(response_complete(&cl[..cl.len() - 1]), Ok(false));
        assert_eq!(
            response_complete(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Ok(false)
        );
        let ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nd\r\nHello, world\n\r\n0\r\n\r\n";
        assert_eq!(response_complete(ch), Ok(true));
        assert_eq!(response_complete(&ch[..ch.len() - 2]), Ok(false));
    }

    #[test]
    fn errors_and_close_are_failures() {
        assert!(response_complete(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(
            response_complete(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .is_err()
        );
    }
}
