//! The proxy's backend connections, observed: a [`Connector`] around fcgi-proxy's
//! [`SimConnector`] that counts attempts, open connections and the most open at once per
//! backend address, and writes each connect and close into the trace. This is the proxy's own
//! view of its connections, so it can be compared with the pool's counters and the backends'
//! journals.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use fcgi_proxy::net::{BackendAddr, Connector, SimConnector};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::trace::Trace;

/// Connection counters for one backend address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddrStats {
    pub attempts: u64,
    pub opened: u64,
    pub failed: u64,
    /// Open now.
    pub live: usize,
    /// Connection attempts under way now.
    pub connecting: usize,
    /// Most open at once.
    pub max_live: usize,
}

/// Counters per backend address (`host:port`).
pub type NetStats = Arc<Mutex<BTreeMap<String, AddrStats>>>;

#[derive(Debug, Clone)]
pub struct ObservedConnector {
    stats: NetStats,
    trace: Trace,
    /// Who the trace lines are from: the proxy instance's host name.
    who: Arc<str>,
}

impl ObservedConnector {
    pub fn new(stats: NetStats, trace: Trace) -> Self {
        Self::for_host(stats, trace, "proxy")
    }

    /// A connector whose trace lines name `who` (a proxy instance's host). Several instances
    /// may share `stats`: the counts are then the sums over them.
    pub fn for_host(stats: NetStats, trace: Trace, who: &str) -> Self {
        ObservedConnector {
            stats,
            trace,
            who: Arc::from(who),
        }
    }
}

fn update(stats: &NetStats, key: &str, f: impl FnOnce(&mut AddrStats)) {
    let mut m = stats.lock().unwrap_or_else(|e| e.into_inner());
    f(m.entry(key.to_string()).or_default());
}

impl Connector for ObservedConnector {
    type Stream = Observed;

    fn connect(&self, addr: &BackendAddr) -> impl Future<Output = io::Result<Observed>> + Send {
        let this = self.clone();
        let addr = addr.clone();
        async move {
            let key = addr.to_string();
            update(&this.stats, &key, |s| {
                s.attempts += 1;
                s.connecting += 1;
            });
            let connecting = Connecting {
                stats: this.stats.clone(),
                key: key.clone(),
            };
            let result = SimConnector.connect(&addr).await;
            drop(connecting);
            match result {
                Ok(stream) => {
                    let port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
                    update(&this.stats, &key, |s| {
                        s.opened += 1;
                        s.live += 1;
                        s.max_live = s.max_live.max(s.live);
                    });
                    this.trace.log(
                        &this.who,
                        &format!("net: connected to {key} from port {port}"),
                    );
                    Ok(Observed {
                        inner: stream,
                        guard: Guard {
                            stats: this.stats.clone(),
                            trace: this.trace.clone(),
                            who: this.who.clone(),
                            key,
                            port,
                        },
                    })
                }
                Err(e) => {
                    update(&this.stats, &key, |s| s.failed += 1);
                    this.trace
                        .log(&this.who, &format!("net: connect to {key} failed: {e}"));
                    Err(e)
                }
            }
        }
    }
}

/// An attempt under way; counted until it ends, also when the proxy gives up on it.
struct Connecting {
    stats: NetStats,
    key: String,
}

impl Drop for Connecting {
    fn drop(&mut self) {
        update(&self.stats, &self.key, |s| {
            s.connecting = s.connecting.saturating_sub(1);
        });
    }
}

/// A backend connection that reports its close.
#[derive(Debug)]
pub struct Observed {
    inner: turmoil::net::TcpStream,
    #[allow(dead_code)] // held for its Drop
    guard: Guard,
}

#[derive(Debug)]
struct Guard {
    stats: NetStats,
    trace: Trace,
    who: Arc<str>,
    key: String,
    port: u16,
}

impl Drop for Guard {
    fn drop(&mut self) {
        update(&self.stats, &self.key, |s| {
            s.live = s.live.saturating_sub(1)
        });
        self.trace.log(
            &self.who,
            &format!("net: closed {} from port {}", self.key, self.port),
        );
    }
}

impl AsyncRead for Observed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Observed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
