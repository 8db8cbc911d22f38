//! `cargo xtask load --slow-bodies`: every client sends one POST with a chunked body (1 MiB by
//! default) a chunk at a time, slowly, all at once; the proxy must read them without buffering
//! more than its budget for request bodies (`limits.body_buffer_budget`).
//!
//! Each body is either served (200, and the backend got all of it) or refused with a 503 when it
//! does not fit the budget; anything else (a reset without an answer, another status, no answer in
//! time) is an error. Reported: outcomes, the proxy's count of buffered body bytes at its peak
//! against the budget (exact, from `/status`), and its resident memory at the peak against what
//! it used with every connection open and idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The shape of each slow body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowBodies {
    pub body_bytes: usize,
    pub chunk_bytes: usize,
    /// Pause between two chunks.
    pub interval: Duration,
}

impl Default for SlowBodies {
    fn default() -> Self {
        SlowBodies {
            body_bytes: 1 << 20,
            chunk_bytes: 16 << 10,
            interval: Duration::from_millis(500),
        }
    }
}

/// Outcomes over all clients.
#[derive(Debug, Default)]
pub struct SlowCounters {
    pub served: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
    pub bytes_sent: AtomicU64,
    first_errors: std::sync::Mutex<Vec<String>>,
}

impl SlowCounters {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.note(what);
    }

    fn note(&self, what: String) {
        let mut v = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 5 {
            v.push(what);
        }
    }

    pub fn first_errors(&self) -> Vec<String> {
        self.first_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How one slow upload ended.
enum Answer {
    Status(u16, Vec<u8>),
    Closed(String),
}

/// Sends the body on `stream` while watching for the answer: the proxy may answer (503) before
/// the body is complete, then the client stops sending.
pub async fn upload(
    i: usize,
    stream: tokio::net::TcpStream,
    shape: SlowBodies,
    chunk: Bytes,
    expect_body: &'static str,
    c: &SlowCounters,
) {
    let (mut rd, mut wr) = stream.into_split();
    let send = async {
        let head = format!(
            "POST /load/slow/c{i} HTTP/1.1\r\nHost: load.test\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        wr.write_all(head.as_bytes()).await?;
        let mut left = shape.body_bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            wr.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            wr.write_all(&chunk[..n]).await?;
            wr.write_all(b"\r\n").await?;
            c.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            left -= n;
            if left > 0 {
                tokio::time::sleep(shape.interval).await;
            }
        }
        wr.write_all(b"0\r\n\r\n").await?;
        Ok::<(), std::io::Error>(())
    };
    let answer = async {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(r) = testkit::http1::parse_response(&out) {
                return Answer::Status(r.status, r.body);
            }
            match rd.read(&mut buf).await {
                Ok(0) => return Answer::Closed(format!("closed after {} bytes", out.len())),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Answer::Closed(format!("{e} after {} bytes", out.len())),
            }
        }
    };
    tokio::pin!(answer);
    // A body takes about (chunks x interval); allow that twice over, and a minute more.
    let chunks = shape.body_bytes.div_ceil(shape.chunk_bytes.max(1)) as u32;
    let budget = shape.interval * chunks * 2 + Duration::from_secs(60);
    let outcome = tokio::time::timeout(budget, async {
        tokio::select! {
            biased;
            a = &mut answer => a,
            sent = send => match sent {
                // Everything sent: the answer follows.
                Ok(()) => answer.await,
                // The proxy stopped reading (it answered and closed): read what it said.
                Err(_) => answer.await,
            },
        }
    })
    .await;
    match outcome {
        Err(_) => c.error(format!("client {i}: no answer in {budget:?}")),
        Ok(Answer::Status(200, body)) if body == expect_body.as_bytes() => {
            c.served.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Answer::Status(503, _)) => {
            c.refused.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Answer::Status(s, body)) => c.error(format!(
            "client {i}: {s} {:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        )),
        Ok(Answer::Closed(why)) => c.error(format!("client {i}: no answer: {why}")),
    }
}

/// The chunk every client sends (one buffer shared by all).
pub fn chunk(shape: SlowBodies) -> Bytes {
    Bytes::from(vec![b'x'; shape.chunk_bytes.max(1)])
}

/// One shard of clients (run in its own process, so that the clients' sockets do not count
/// against the parent's open-file limit): `n` clients numbered from `first`, each connecting
/// (at most `parallel` attempts at once) and sending its body at once; the counters when all
/// are done or `deadline` passed.
pub async fn run_shard(
    addr: SocketAddr,
    first: usize,
    n: usize,
    parallel: usize,
    shape: SlowBodies,
    expect_body: &'static str,
    deadline: Duration,
) -> ShardResult {
    let c = Arc::new(SlowCounters::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let chunk = chunk(shape);
    let connect_errors = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for i in first..first + n {
        let (c, gate, chunk, connect_errors) = (
            c.clone(),
            gate.clone(),
            chunk.clone(),
            connect_errors.clone(),
        );
        set.spawn(async move {
            let stream = {
                let _p = gate.acquire().await;
                // Beyond the proxy's connection limit a connect waits in its backlog (or the
                // kernel retries the SYN) until a slot frees up.
                tokio::time::timeout(
                    Duration::from_secs(120),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
            };
            match stream {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    upload(i, s, shape, chunk, expect_body, &c).await;
                }
                Ok(Err(e)) => {
                    connect_errors.fetch_add(1, Ordering::Relaxed);
                    c.note(format!("client {i}: connect: {e}"));
                }
                Err(_) => {
                    connect_errors.fetch_add(1, Ordering::Relaxed);
                    c.note(format!("client {i}: connect timed out"));
                }
            }
        });
    }
    let all = async { while set.join_next().await.is_some() {} };
    let timed_out = tokio::time::timeout(deadline, all).await.is_err();
    set.abort_all();
    ShardResult {
        served: c.served.load(Ordering::Relaxed),
        refused: c.refused.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        connect_errors: connect_errors.load(Ordering::Relaxed),
        bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
        first_errors: c.first_errors(),
        timed_out,
    }
}

/// What a shard reports (one JSON line on its stdout).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ShardResult {
    pub served: u64,
    pub refused: u64,
    pub errors: u64,
    pub connect_errors: u64,
    pub bytes_sent: u64,
    pub first_errors: Vec<String>,
    pub timed_out: bool,
}

impl ShardResult {
    pub fn add(&mut self, o: &ShardResult) {
        self.served += o.served;
        self.refused += o.refused;
        self.errors += o.errors;
        self.connect_errors += o.connect_errors;
        self.bytes_sent += o.bytes_sent;
        self.timed_out |= o.timed_out;
        for e in &o.first_errors {
            if self.first_errors.len() < 5 {
                self.first_errors.push(e.clone());
            }
        }
    }
}
