//! Backend connection pool, one per worker (backend address + its settings).
//!
//! - `max` caps connections open to the backend, idle or busy; a checkout waits up to `acquire`
//!   for one to free up, then fails (503). Without `max` there is no cap.
//! - Idle connections are watched: one task per pool is woken when any of them becomes
//!   readable, so a backend that closes an idle connection (php-fpm after `pm.max_requests`, or
//!   its idle timeout) is noticed at once; a connection idle for `ttl` is dropped. This is
//!   pingora's idle poll, without a task per connection: checking a connection in or out is a
//!   push or pop under the pool lock, with no task to spawn or wake.
//! - A checkout says whether the connection was reused, so only failures on reused connections
//!   are retried.
//! - Connections go back to the pool only after a clean END_REQUEST on a KEEP_CONN request; the
//!   caller decides that and calls [`Conn::release`].

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;

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
    idle: Vec<Idle<S>>,
    open: usize,
    stats: PoolStats,
    /// The idle watcher's waker: registered on every idle connection's read side.
    watcher: Option<Waker>,
    watcher_started: bool,
    /// The watcher has a timer set for the next `ttl` expiry.
    ttl_armed: bool,
    /// The first connection asks the backend for FCGI_MAX_CONNS.
    probed: bool,
    /// While the answer is awaited, only one connection is opened, so a backend that can take
    /// only one is not flooded before it could say so. Bounded by [`PROBE_WINDOW`].
    probing_until: Option<tokio::time::Instant>,
}

/// Longest time new connections wait for the backend's FCGI_MAX_CONNS answer.
pub const PROBE_WINDOW: Duration = Duration::from_millis(250);

/// An idle connection. It still counts in `open`: its slot was disarmed, not dropped.
#[derive(Debug)]
struct Idle<S> {
    stream: S,
    since: tokio::time::Instant,
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

/// Holds one unit of the pool's `open` count; gives it back on drop unless disarmed (the
/// connection went idle and the pool counts it from there).
#[derive(Debug)]
struct Slot<S> {
    shared: Arc<Shared<S>>,
    armed: bool,
}

impl<S> Slot<S> {
    fn new(shared: Arc<Shared<S>>) -> Self {
        Slot {
            shared,
            armed: true,
        }
    }
}

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.closed(1);
        }
    }
}

impl<S> Shared<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `n` connections were closed: their slots are free.
    fn closed(&self, n: usize) {
        let mut st = self.lock();
        st.open -= n;
        st.stats.open = st.open;
        drop(st);
        for _ in 0..n {
            self.freed.notify_one();
        }
    }
}

impl<S> Drop for Shared<S> {
    fn drop(&mut self) {
        // The watcher holds only a weak reference: wake it so it sees the pool is gone.
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = st.watcher.take() {
            w.wake();
        }
    }
}

/// Whether anything is readable on an idle connection: EOF, a reset or stray bytes all mean it
/// can no longer carry a request. When nothing is, the read side stays registered with `cx`.
fn readable<S: AsyncRead + Unpin>(stream: &mut S, cx: &mut Context<'_>) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    Pin::new(stream).poll_read(cx, &mut buf).is_ready()
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
                    watcher: None,
                    watcher_started: false,
                    ttl_armed: false,
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
        self.shared.lock()
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
                Some(Ok(mut idle)) => {
                    // Closed or expired since the watcher last looked: close it, look again.
                    let expired = self.settings.ttl.is_some_and(|t| now >= idle.since + t);
                    let mut cx = Context::from_waker(Waker::noop());
                    if expired || readable(&mut idle.stream, &mut cx) {
                        drop(idle);
                        let mut st = self.lock();
                        if expired {
                            st.stats.closed_idle_ttl += 1;
                        } else {
                            st.stats.closed_idle_by_backend += 1;
                        }
                        drop(st);
                        self.shared.closed(1);
                        continue;
                    }
                    self.lock().stats.reused += 1;
                    return Ok(Conn {
                        stream: idle.stream,
                        reused: true,
                        probe: false,
                        slot: Slot::new(self.shared.clone()),
                    });
                }
                Some(Err(probe)) => {
                    let slot = Slot::new(self.shared.clone());
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
        let Conn {
            mut stream,
            mut slot,
            ..
        } = conn;
        let mut st = self.lock();
        if !st.watcher_started {
            st.watcher_started = true;
            tokio::spawn(watch_idle(Arc::downgrade(&self.shared), self.settings.ttl));
        }
        // Register the watcher's interest in the connection's read side (this wakes nobody).
        let mut cx = Context::from_waker(st.watcher.as_ref().unwrap_or(Waker::noop()));
        if readable(&mut stream, &mut cx) {
            st.stats.closed_idle_by_backend += 1;
            drop(st);
            // Dropping the armed slot frees it.
            return;
        }
        st.idle.push(Idle {
            stream,
            since: tokio::time::Instant::now(),
        });
        st.stats.idle = st.idle.len();
        slot.armed = false;
        // The watcher sets a timer for the oldest idle connection only when it runs.
        let wake = if self.settings.ttl.is_some() && !st.ttl_armed {
            st.watcher.clone()
        } else {
            None
        };
        drop(st);
        if let Some(w) = wake {
            w.wake();
        }
        self.shared.freed.notify_one();
    }
}

/// The pool's idle watcher: closes idle connections that turned readable or outlived `ttl`.
/// Its waker sits on every idle connection, so it runs only when one of them needs closing
/// (or a `ttl` timer is due), and ends with the pool.
async fn watch_idle<S>(shared: Weak<Shared<S>>, ttl: Option<Duration>)
where
    S: AsyncRead + Unpin + Send + 'static,
{
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        let Some(shared) = shared.upgrade() else {
            return Poll::Ready(());
        };
        let mut st = shared.lock();
        if !st.watcher.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.watcher = Some(cx.waker().clone());
        }
        let now = tokio::time::Instant::now();
        let (mut by_backend, mut expired) = (0, 0);
        // Closed outside the lock.
        let mut closing = Vec::new();
        let mut i = 0;
        while i < st.idle.len() {
            if ttl.is_some_and(|t| now >= st.idle[i].since + t) {
                expired += 1;
            } else if readable(&mut st.idle[i].stream, cx) {
                by_backend += 1;
            } else {
                i += 1;
                continue;
            }
            closing.push(st.idle.remove(i));
        }
        st.stats.idle = st.idle.len();
        st.stats.closed_idle_by_backend += by_backend;
        st.stats.closed_idle_ttl += expired;
        st.ttl_armed = false;
        if let (Some(t), Some(oldest)) = (ttl, st.idle.first()) {
            let due = oldest.since + t;
            let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            sleep.as_mut().reset(due);
            st.ttl_armed = sleep.as_mut().poll(cx).is_pending();
            if !st.ttl_armed {
                cx.waker().wake_by_ref();
            }
        }
        drop(st);
        let n = closing.len();
        drop(closing);
        if n > 0 {
            shared.closed(n);
        }
        Poll::Pending
    })
    .await
}
