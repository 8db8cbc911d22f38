//! Backend connection pool, one per worker (backend address + its settings).
//!
//! - `max` caps connections open to the backend, idle or busy; a checkout waits up to `acquire`
//!   for one to free up, then fails (503). Without `max` there is no cap.
//! - Idle connections are watched: a task reads each one, so a backend that closes an idle
//!   connection (php-fpm after `pm.max_requests`, or its idle timeout) is noticed at once, and
//!   the connection is dropped after `ttl` of idleness. This is pingora's idle poll.
//! - A checkout says whether the connection was reused, so only failures on reused connections
//!   are retried.
//! - Connections go back to the pool only after a clean END_REQUEST on a KEEP_CONN request; the
//!   caller decides that and calls [`Conn::release`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, oneshot};

use crate::error::{ErrorKind, ProxyError};
use crate::net::{BackendAddr, Connector};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Cap on open connections set in the configuration (`max=`). When absent, the cap is what
    /// the backend announced as FCGI_MAX_CONNS, else `default_max`.
    pub max: Option<usize>,
    /// The cap when neither the configuration nor the backend says (Apache: threads per child).
    pub default_max: usize,
    /// How long an idle connection is kept (`ttl=`). `None`: until the backend closes it.
    pub ttl: Option<Duration>,
    /// How long a checkout waits for a free slot (`acquire=`). `None`: as long as `timeout`.
    pub acquire: Option<Duration>,
    /// Connect timeout (`connectiontimeout=`).
    pub connect_timeout: Duration,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub opened: u64,
    pub reused: u64,
    pub idle: usize,
    pub open: usize,
    pub closed_idle_by_backend: u64,
    pub closed_idle_ttl: u64,
    pub waits: u64,
    /// Total time checkouts spent waiting for a free connection, in milliseconds.
    pub wait_ms: u64,
    pub acquire_timeouts: u64,
    /// The cap in force.
    pub cap: usize,
    /// FCGI_MAX_CONNS as the backend announced it, if it did.
    pub announced_max_conns: Option<usize>,
}

#[derive(Debug)]
struct State<S> {
    /// Idle connections, most recently used last (checked out LIFO: warm connections stay warm,
    /// the rest age out through `ttl`).
    idle: Vec<IdleHandle<S>>,
    open: usize,
    next_id: u64,
    stats: PoolStats,
    /// The first connection asks the backend for FCGI_MAX_CONNS.
    probed: bool,
    /// While the answer is awaited, only one connection is opened, so a backend that can take
    /// only one is not flooded before it could say so. Bounded by [`PROBE_WINDOW`].
    probing_until: Option<tokio::time::Instant>,
}

/// Longest time new connections wait for the backend's FCGI_MAX_CONNS answer.
pub const PROBE_WINDOW: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct IdleHandle<S> {
    id: u64,
    take: oneshot::Sender<oneshot::Sender<(S, Slot<S>)>>,
}

#[derive(Debug)]
struct Shared<S> {
    state: Mutex<State<S>>,
    freed: Notify,
}

/// A pool of connections to one backend.
pub struct Pool<C: Connector> {
    connector: C,
    addr: BackendAddr,
    settings: PoolSettings,
    shared: Arc<Shared<C::Stream>>,
}

impl<C: Connector> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.addr)
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<C: Connector> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Pool {
            connector: self.connector.clone(),
            addr: self.addr.clone(),
            settings: self.settings.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// A connection checked out of the pool. Dropping it closes the connection and frees its slot.
#[derive(Debug)]
pub struct Conn<S: Send + 'static> {
    pub stream: S,
    /// It had served a request before.
    pub reused: bool,
    /// Ask the backend for FCGI_MAX_CONNS on this connection (the pool's first, when no cap is
    /// configured).
    pub probe: bool,
    slot: Slot<S>,
}

/// Holds one unit of the pool's `open` count; gives it back on drop.
#[derive(Debug)]
struct Slot<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.open -= 1;
        st.stats.open = st.open;
        drop(st);
        self.shared.freed.notify_one();
    }
}

impl<C: Connector> Pool<C> {
    pub fn new(connector: C, addr: BackendAddr, settings: PoolSettings) -> Self {
        let settings = PoolSettings {
            default_max: settings.default_max.max(1),
            ..settings
        };
        let cap = settings.max.unwrap_or(settings.default_max);
        Pool {
            connector,
            addr,
            settings,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    idle: Vec::new(),
                    open: 0,
                    next_id: 0,
                    stats: PoolStats {
                        cap,
                        ..PoolStats::default()
                    },
                    probed: false,
                    probing_until: None,
                }),
                freed: Notify::new(),
            }),
        }
    }

    pub fn addr(&self) -> &BackendAddr {
        &self.addr
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<C::Stream>> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection: an idle one if there is one (reused), else a new one if the cap allows,
    /// else waits for one to free up until `acquire` (default: `fallback_wait`).
    pub async fn checkout(&self, fallback_wait: Duration) -> Result<Conn<C::Stream>, ProxyError> {
        let deadline = tokio::time::Instant::now() + self.settings.acquire.unwrap_or(fallback_wait);
        let mut waited = false;
        loop {
            // Register interest before looking, so a slot freed in between is not missed.
            let notified = self.shared.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = tokio::time::Instant::now();
            let (candidate, probing_until) = {
                let mut st = self.lock();
                let probing = st.probing_until.filter(|&t| now < t);
                let cap = if probing.is_some() { 1 } else { st.stats.cap };
                let c = if let Some(h) = st.idle.pop() {
                    st.stats.idle = st.idle.len();
                    Some(Ok(h))
                } else if st.open < cap {
                    st.open += 1;
                    st.stats.open = st.open;
                    let probe = !st.probed && self.settings.max.is_none();
                    if probe {
                        st.probed = true;
                        st.probing_until = Some(now + PROBE_WINDOW);
                    }
                    Some(Err(probe))
                } else {
                    None
                };
                (c, probing)
            };
            match candidate {
                Some(Ok(handle)) => {
                    if let Some((stream, slot)) = take_idle(handle).await {
                        self.lock().stats.reused += 1;
                        return Ok(Conn {
                            stream,
                            reused: true,
                            probe: false,
                            slot,
                        });
                    }
                    // It died while idle; its slot was freed. Look again.
                }
                Some(Err(probe)) => {
                    let slot = Slot {
                        shared: self.shared.clone(),
                    };
                    let stream = match self.connect().await {
                        Ok(s) => s,
                        Err(e) => {
                            if probe {
                                // Ask again on the next connection.
                                self.lock().probed = false;
                                self.probe_done();
                            }
                            return Err(e);
                        }
                    };
                    self.lock().stats.opened += 1;
                    return Ok(Conn {
                        stream,
                        reused: false,
                        probe,
                        slot,
                    });
                }
                None => {
                    if !waited {
                        waited = true;
                        self.lock().stats.waits += 1;
                    }
                    let wait_started = tokio::time::Instant::now();
                    let until = probing_until.map_or(deadline, |p| p.min(deadline));
                    let woken = tokio::time::timeout_at(until, notified).await.is_ok();
                    let waited_ms = wait_started.elapsed().as_millis() as u64;
                    self.lock().stats.wait_ms += waited_ms;
                    if !woken && tokio::time::Instant::now() >= deadline {
                        self.lock().stats.acquire_timeouts += 1;
                        return Err(ProxyError::new(
                            ErrorKind::AcquireTimeout,
                            format!("all {} connections to {} busy", self.stats().cap, self.addr),
                        ));
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<C::Stream, ProxyError> {
        match tokio::time::timeout(
            self.settings.connect_timeout,
            self.connector.connect(&self.addr),
        )
        .await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(ProxyError::new(
                ErrorKind::ConnectFailed,
                format!("connect to {}: {e}", self.addr),
            )),
            Err(_) => Err(ProxyError::new(
                ErrorKind::ConnectTimeout,
                format!(
                    "connect to {} timed out after {:?}",
                    self.addr, self.settings.connect_timeout
                ),
            )),
        }
    }

    /// The backend announced FCGI_MAX_CONNS: it becomes the cap unless one is configured.
    pub fn learn_max_conns(&self, n: usize) {
        let mut st = self.lock();
        st.stats.announced_max_conns = Some(n);
        if self.settings.max.is_none() && n > 0 && st.stats.cap != n {
            tracing::info!(backend = %self.addr, "backend announced FCGI_MAX_CONNS={n}: capping connections");
            st.stats.cap = n;
        }
        drop(st);
        self.probe_done();
    }

    /// The capacity question is settled (answered, or the exchange got past the point where an
    /// answer would have come): connections may open up to the cap.
    pub fn probe_done(&self) {
        let mut st = self.lock();
        if st.probing_until.take().is_some() {
            drop(st);
            self.shared.freed.notify_waiters();
        }
    }

    /// Returns a connection after a clean, kept-alive exchange. It waits idle, watched, until
    /// checked out again, closed by the backend, or `ttl` passes.
    pub fn release(&self, conn: Conn<C::Stream>) {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.lock();
            st.next_id += 1;
            let id = st.next_id;
            st.idle.push(IdleHandle { id, take: tx });
            st.stats.idle = st.idle.len();
            id
        };
        let shared = self.shared.clone();
        let ttl = self.settings.ttl;
        tokio::spawn(watch_idle(conn, rx, ttl, shared, id));
        self.shared.freed.notify_one();
    }
}

async fn take_idle<S>(h: IdleHandle<S>) -> Option<(S, Slot<S>)> {
    let (tx, rx) = oneshot::channel();
    h.take.send(tx).ok()?;
    rx.await.ok()
}

enum IdleEnd {
    /// The pool dropped its handle (the pool itself is gone).
    Abandoned,
    ClosedByBackend,
    Ttl,
}

async fn watch_idle<S>(
    conn: Conn<S>,
    take: oneshot::Receiver<oneshot::Sender<(S, Slot<S>)>>,
    ttl: Option<Duration>,
    shared: Arc<Shared<S>>,
    id: u64,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        mut stream, slot, ..
    } = conn;
    let mut byte = [0u8; 1];
    let ttl_sleep = async {
        match ttl {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        biased;
        t = take => match t {
            Ok(back) => {
                // The slot moves with the connection. If the checkout gave up meanwhile, both
                // come back here and are dropped, which frees the slot.
                let _ = back.send((stream, slot));
                return;
            }
            Err(_) => IdleEnd::Abandoned,
        },
        // Anything readable on an idle FastCGI connection (EOF, reset, or stray bytes) means it
        // can no longer carry a request.
        _ = stream.read(&mut byte) => IdleEnd::ClosedByBackend,
        _ = ttl_sleep => IdleEnd::Ttl,
    };
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    st.idle.retain(|h| h.id != id);
    st.stats.idle = st.idle.len();
    match end {
        IdleEnd::ClosedByBackend => st.stats.closed_idle_by_backend += 1,
        IdleEnd::Ttl => st.stats.closed_idle_ttl += 1,
        IdleEnd::Abandoned => {}
    }
    drop(st);
    drop(stream);
    drop(slot);
}
