//! A target kept running for a whole group of cases: its `fcgi-mock` backends, the process on
//! the group's generated configuration, and one raw exchange per case with what the backends
//! received for it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use fcgi_mock::{MockHandle, MockServer, RequestEntry};
use serde::Serialize;
use tokio::time::Instant;

use crate::real::{Proc, RealOptions, Target};
use crate::scenario::Scenario;
use crate::sim::client::{TAG_HEADER, TAG_PARAM};
use crate::sim::raw::{Sending, talk, with_tag};

use super::cases::Case;

/// The longest one exchange may take (a 1 MiB body through a slow target included); a target
/// still silent by then is "no response" (peers wait for the rest of a body cut short, and
/// their own timeouts are longer than a run can afford per case).
const EXCHANGE: Duration = Duration::from_secs(3);
/// After a complete response, how long to wait for more bytes (every request asks to close).
const QUIET: Duration = Duration::from_millis(100);

/// What one target did with one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Obs {
    /// The status of the first response; `None`: no response.
    pub status: Option<u16>,
    /// Responses on the connection.
    pub responses: usize,
    /// What the backend received; `None`: the request reached no backend.
    pub backend: Option<Received>,
    /// The exchange failed or timed out (said in reports, not compared).
    pub note: Option<String>,
}

/// One backend request, as a journal recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Received {
    /// Params in wire order, real addresses written as the scenario's `name:port`.
    pub params: Vec<(String, String)>,
    pub stdin_len: u64,
    /// FNV-1a of the STDIN bytes kept.
    pub stdin_hash: u64,
    pub stdin_complete: bool,
    /// The backend request ended (END_REQUEST sent or aborted).
    pub finished: bool,
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Received {
    fn from_entry(r: &RequestEntry, names: &[(String, SocketAddr)]) -> Received {
        let params = r
            .params_lossy()
            .into_iter()
            .map(|(n, mut v)| {
                for (authority, real) in names {
                    let real = real.to_string();
                    if v.contains(&real) {
                        v = v.replace(&real, authority);
                    }
                }
                (n, v)
            })
            .collect();
        Received {
            params,
            stdin_len: r.stdin_len,
            stdin_hash: fnv(&r.stdin),
            stdin_complete: r.stdin_complete,
            finished: r.is_finished() || r.aborted(),
        }
    }
}

/// A running target and its backends.
pub struct Session {
    pub target: Target,
    // Field order: the process stops before its directory goes.
    proc: std::sync::Mutex<Proc>,
    listen: SocketAddr,
    /// (authority, mock) per scenario backend.
    mocks: Vec<(String, MockHandle)>,
    names: Vec<(String, SocketAddr)>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.target)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts the backends of `s` and `target` on its configuration.
    pub async fn start(
        s: &Scenario,
        target: Target,
        opts: &RealOptions,
    ) -> Result<Session, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let mut mocks = Vec::new();
        let mut names = Vec::new();
        let mut addrs = BTreeMap::new();
        for b in &s.backends {
            let m = MockServer::bind_tcp("127.0.0.1:0", b.mock_script()?)
                .await
                .map_err(|e| format!("backend {}: {e}", b.name))?;
            let addr = m
                .socket_addr()
                .ok_or_else(|| format!("backend {}: no address", b.name))?;
            addrs.insert(b.name.clone(), addr);
            names.push((b.authority(), addr));
            mocks.push((b.authority(), m));
        }
        let listen = crate::real::listen_port()?;
        let log = dir.path().join("target.log");
        let proc =
            crate::real::start_target(s, target, opts, dir.path(), &addrs, listen, &log).await?;
        Ok(Session {
            target,
            proc: std::sync::Mutex::new(proc),
            listen,
            mocks,
            names,
            _dir: dir,
        })
    }

    /// Why the target is gone, if it is.
    pub fn exited(&self) -> Option<String> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner()).exited()
    }

    /// Sends `case` tagged `tag` on a connection of its own and collects what happened.
    pub async fn exchange(&self, case: &Case, tag: &str) -> Obs {
        let before: Vec<usize> = self
            .mocks
            .iter()
            .map(|(_, m)| m.journal().with(|s| s.requests.len()))
            .collect();
        let bytes = with_tag(case.raw().as_bytes(), TAG_HEADER, tag);
        let deadline = Instant::now() + EXCHANGE;
        let mut note = None;
        let out = match tokio::time::timeout(EXCHANGE, tokio::net::TcpStream::connect(self.listen))
            .await
        {
            Ok(Ok(stream)) => {
                let sending = Sending {
                    half_close: case.body.early_close(),
                    trickle: None,
                };
                Some(talk(stream, &bytes, sending, QUIET, deadline).await)
            }
            Ok(Err(e)) => {
                note = Some(format!("connect: {e}"));
                None
            }
            Err(_) => {
                note = Some("connect timed out".into());
                None
            }
        };
        let (status, responses) = match &out {
            Some(o) => {
                if o.timed_out {
                    note = Some("no complete response in time".into());
                } else if let Some(e) = &o.error {
                    note = Some(e.clone());
                }
                (o.responses.first().map(|r| r.status), o.responses.len())
            }
            None => (None, 0),
        };
        let backend = self.received(tag, &before, status).await;
        Obs {
            status,
            responses,
            backend,
            note,
        }
    }

    /// The backend request tagged `tag`, waiting a little for it to arrive and end.
    async fn received(&self, tag: &str, before: &[usize], status: Option<u16>) -> Option<Received> {
        let start = Instant::now();
        // A success passed through a backend: give its journal time. An error usually did not.
        let absent_wait = if status.is_some_and(|s| (200..300).contains(&s)) {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(20)
        };
        loop {
            let found = self.mocks.iter().zip(before).find_map(|((_, m), &from)| {
                m.journal().with(|s| {
                    s.requests
                        .iter()
                        .skip(from)
                        .find(|r| r.param(TAG_PARAM).as_deref() == Some(tag))
                        .map(|r| Received::from_entry(r, &self.names))
                })
            });
            let waited = start.elapsed();
            match found {
                Some(r) if r.finished || waited > Duration::from_secs(1) => return Some(r),
                None if waited > absent_wait => return None,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
}
