//! A hand-written FastCGI client over tokio TCP (built on the `fastcgi` crate), and helpers.
//! Every network wait has a timeout.

#![allow(dead_code)] // each test binary uses a different part

use std::future::Future;
use std::io;
use std::time::Duration;

use fastcgi::{Decoder, ProtocolStatus, Record, RecordType, Role, encode};
use fcgi_mock::{MockHandle, MockServer, Script};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any single network wait in a test.
pub const T: Duration = Duration::from_secs(5);

pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(T, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

pub fn script(toml: &str) -> Script {
    Script::from_toml_str(toml).unwrap_or_else(|e| panic!("bad test script: {e}"))
}

pub async fn mock(toml: &str) -> MockHandle {
    MockServer::bind_tcp("127.0.0.1:0", script(toml))
        .await
        .expect("bind mock")
}

/// What came back for one request.
#[derive(Debug, Default)]
pub struct Response {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub end: Option<(u32, ProtocolStatus)>,
    pub records: Vec<Record>,
    /// The connection ended (EOF) before END_REQUEST.
    pub eof: bool,
    /// The read failed (e.g. ConnectionReset) before END_REQUEST.
    pub error: Option<io::ErrorKind>,
}

impl Response {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The body after the CGI header block.
    pub fn body(&self) -> String {
        let t = self.stdout_text();
        t.split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string())
    }
}

pub struct Client<S = TcpStream> {
    pub stream: S,
    pub decoder: Decoder,
}

impl Client<TcpStream> {
    pub async fn connect(addr: &str) -> Self {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        stream.set_nodelay(true).ok();
        Client::new(stream)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Self {
        Client {
            stream,
            decoder: Decoder::default(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        within("write", self.stream.write_all(bytes))
            .await
            .expect("write");
    }

    pub fn begin_bytes(id: u16, flags: u8, params: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode::begin_request(&mut out, id, Role::Responder, flags);
        encode::params(&mut out, id, params, 65535);
        encode::stream_end(&mut out, RecordType::Params, id);
        out
    }

    /// BEGIN_REQUEST, PARAMS, STDIN (one record, if any) and the closing empty STDIN.
    pub async fn request(&mut self, id: u16, flags: u8, params: &[(&str, &str)], stdin: &[u8]) {
        let mut out = Self::begin_bytes(id, flags, params);
        encode::stream(
            &mut out,
            RecordType::Stdin,
            id,
            stdin,
            65535,
            fastcgi::Padding::None,
        );
        encode::stream_end(&mut out, RecordType::Stdin, id);
        self.send(&out).await;
    }

    /// The next record; `Ok(None)` at a clean EOF.
    pub async fn next_record(&mut self) -> io::Result<Option<Record>> {
        let mut buf = [0u8; 8192];
        loop {
            match self.decoder.decode() {
                Ok(Some(r)) => return Ok(Some(r)),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            self.decoder.feed(&buf[..n]);
        }
    }

    /// Records until END_REQUEST for `id` (or EOF, or an error), without a timeout.
    pub async fn response_no_timeout(&mut self, id: u16) -> Response {
        let mut resp = Response::default();
        loop {
            match self.next_record().await {
                Ok(None) => {
                    resp.eof = true;
                    return resp;
                }
                Err(e) => {
                    resp.error = Some(e.kind());
                    return resp;
                }
                Ok(Some(rec)) => {
                    resp.records.push(rec.clone());
                    match rec {
                        Record::Stream {
                            record_type: RecordType::Stdout,
                            content,
                            ..
                        } => resp.stdout.extend_from_slice(&content),
                        Record::Stream {
                            record_type: RecordType::Stderr,
                            content,
                            ..
                        } => resp.stderr.extend_from_slice(&content),
                        Record::EndRequest {
                            request_id,
                            app_status,
                            protocol_status,
                        } if request_id == id => {
                            resp.end = Some((app_status, protocol_status));
                            return resp;
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    pub async fn response(&mut self, id: u16) -> Response {
        within("response", self.response_no_timeout(id)).await
    }

    /// Reads until EOF or error; true for a clean EOF.
    pub async fn wait_closed(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let n = within("close", self.stream.read(&mut buf)).await?;
            if n == 0 {
                return Ok(());
            }
        }
    }
}
