//! Backend connection pool, one per worker (backend address + its settings).
//!
//! - `max` caps connections open to the backend, idle or busy, over all serving threads; a
//!   checkout waits up to `acquire` for one to free up, then fails (503). Without `max` there is
//!   no cap.
//! - Idle connections are kept per serving thread (each thread runs its own runtime, and a
//!   socket is registered with the runtime that uses it). A thread with none idle of its own
//!   takes another thread's and moves it over ([`Connector::adopt`]) before it opens one: an idle
//!   connection is reused whichever thread needs it, and ends up where it is used.
//! - Idle connections are watched: one task per pool and thread is woken when any of them
//!   becomes readable, so a backend that closes an idle connection (php-fpm after
//!   `pm.max_requests`, or its idle timeout) is noticed at once; a connection idle for `ttl` is
//!   dropped. This is pingora's idle poll, without a task per connection: checking a connection
//!   in or out is a push or pop under the thread's lock, with no task to spawn or wake.
//! - A checkout says whether the connection was reused, so only failures on reused connections
//!   are retried.
//! - Connections go back to the pool only after a clean END_REQUEST on a KEEP_CONN request; the
//!   caller decides that and calls [`Conn::release`].

use std::cell::Cell;
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

/// What all threads share: the cap and the count it limits.
#[derive(Debug)]
struct Common {
    /// Connections open, idle or busy, on every thread.
    open: usize,
    /// Counters kept here; `idle`, `reused` and the idle closes live in [`Local`].
    stats: PoolStats,
    /// The first connection asks the backend for FCGI_MAX_CONNS.
    probed: bool,
    /// While the answer is awaited, only one connection is opened, so a backend that can take
    /// only one is not flooded before it could say so. Bounded by [`PROBE_WINDOW`].
    probing_until: Option<tokio::time::Instant>,
}

/// One serving thread's idle connections, registered with that thread's runtime (using them
/// from another thread would wake this one on every event: they are moved first).
#[derive(Debug)]
struct Local<S> {
    /// Idle connections, most recently used last (checked out LIFO: warm connections stay warm,
    /// the rest age out through `ttl`).
    idle: Vec<Idle<S>>,
    reused: u64,
    closed_idle_by_backend: u64,
    closed_idle_ttl: u64,
    /// The idle watcher's waker: registered on every idle connection's read side.
    watcher: Option<Waker>,
    watcher_started: bool,
    /// The watcher has a timer set for the next `ttl` expiry.
    ttl_armed: bool,
}

impl<S> Local<S> {
    fn new() -> Self {
        Local {
            idle: Vec::new(),
            reused: 0,
            closed_idle_by_backend: 0,
            closed_idle_ttl: 0,
            watcher: None,
            watcher_started: false,
            ttl_armed: false,
        }
    }
}

/// Longest time new connections wait for the backend's FCGI_MAX_CONNS answer.
pub const PROBE_WINDOW: Duration = Duration::from_millis(250);

/// An idle connection. It still counts in `open`: its slot was disarmed, not dropped.
#[derive(Debug)]
struct Idle<S> {
    stream: S,
    since: tokio::time::Instant,
}

/// What [`Pool::take_idle`] found.
enum Taken<S> {
    Reused(S),
    /// An idle connection that could not be used (closed by the backend, expired): closed.
    Dead,
    None,
}

/// Keeps each thread's [`Local`] on its own cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

#[derive(Debug)]
struct Shared<S> {
    common: Mutex<Common>,
    locals: Box<[Padded<Mutex<Local<S>>>]>,
    freed: Notify,
}

thread_local! {
    /// Which of a pool's idle lists this thread uses: set by each serving thread
    /// ([`set_thread_slot`]); 0 everywhere else.
    static THREAD_SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread use idle list `slot` of every pool (`slot` below the pool's
/// `threads`; beyond, it wraps around). Called once by each serving thread.
pub fn set_thread_slot(slot: usize) {
    THREAD_SLOT.with(|c| c.set(slot));
}

/// The calling serving thread's slot (0 on any other thread).
pub fn thread_slot() -> usize {
    THREAD_SLOT.with(Cell::get)
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
    fn common(&self) -> std::sync::MutexGuard<'_, Common> {
        self.common.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn local(&self, i: usize) -> std::sync::MutexGuard<'_, Local<S>> {
        self.locals[i].0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This thread's idle list.
    fn my_slot(&self) -> usize {
        thread_slot() % self.locals.len()
    }

    /// `n` connections were closed: their slots are free.
    fn closed(&self, n: usize) {
        let mut c = self.common();
        c.open -= n;
        c.stats.open = c.open;
        drop(c);
        for _ in 0..n {
            self.freed.notify_one();
        }
    }

    /// Another thread's most recently used idle connection, if any thread has one.
    fn take_foreign_idle(&self, me: usize) -> Option<Idle<S>> {
        (0..self.locals.len())
            .filter(|&i| i != me)
            .find_map(|i| self.local(i).idle.pop())
    }
}

impl<S> Drop for Shared<S> {
    fn drop(&mut self) {
        // The watchers hold only a weak reference: wake them so they see the pool is gone.
        for l in self.locals.iter_mut() {
            let l = l.0.get_mut().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = l.watcher.take() {
                w.wake();
            }
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
    /// A pool used from one thread (or from threads that all share one idle list).
    pub fn new(connector: C, addr: BackendAddr, settings: PoolSettings) -> Self {
        Self::per_thread(connector, addr, settings, 1)
    }

    /// A pool used from `threads` serving threads: one cap over all of them, an idle list per
    /// thread (see [`set_thread_slot`]).
    pub fn per_thread(
        connector: C,
        addr: BackendAddr,
        settings: PoolSettings,
        threads: usize,
    ) -> Self {
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
                common: Mutex::new(Common {
                    open: 0,
                    stats: PoolStats {
                        cap,
                        ..PoolStats::default()
                    },
                    probed: false,
                    probing_until: None,
                }),
                locals: (0..threads.max(1))
                    .map(|_| Padded(Mutex::new(Local::new())))
                    .collect(),
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
        let mut s = self.shared.common().stats;
        for i in 0..self.shared.locals.len() {
            let l = self.shared.local(i);
            s.idle += l.idle.len();
            s.reused += l.reused;
            s.closed_idle_by_backend += l.closed_idle_by_backend;
            s.closed_idle_ttl += l.closed_idle_ttl;
        }
        s
    }

    /// A connection: an idle one of this thread's if there is one (reused), else a new one if
    /// the cap allows (closing another thread's idle one to make room if need be), else waits
    /// for one to free up until `acquire` (default: `fallback_wait`).
    pub async fn checkout(&self, fallback_wait: Duration) -> Result<Conn<C::Stream>, ProxyError> {
        let deadline = tokio::time::Instant::now() + self.settings.acquire.unwrap_or(fallback_wait);
        let me = self.shared.my_slot();
        let mut waited = false;
        loop {
            let now = tokio::time::Instant::now();
            match self.take_idle(me, now) {
                Taken::Reused(stream) => {
                    return Ok(Conn {
                        stream,
                        reused: true,
                        probe: false,
                        slot: Slot::new(self.shared.clone()),
                    });
                }
                // Closed or expired since the watcher last looked: closed; look again.
                Taken::Dead => continue,
                Taken::None => {}
            }
            // Register interest before looking at the cap, so a slot freed in between is not
            // missed (a connection released since `take_idle` leaves a permit in `freed`).
            let notified = self.shared.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (candidate, probing_until) = {
                let mut c = self.shared.common();
                let probing = c.probing_until.filter(|&t| now < t);
                let cap = if probing.is_some() { 1 } else { c.stats.cap };
                let candidate = if c.open < cap {
                    c.open += 1;
                    c.stats.open = c.open;
                    let probe = !c.probed && self.settings.max.is_none();
                    if probe {
                        c.probed = true;
                        c.probing_until = Some(now + PROBE_WINDOW);
                    }
                    Some(probe)
                } else {
                    None
                };
                (candidate, probing)
            };
            match candidate {
                Some(probe) => {
                    let slot = Slot::new(self.shared.clone());
                    let stream = match self.connect().await {
                        Ok(s) => s,
                        Err(e) => {
                            if probe {
                                // Ask again on the next connection.
                                self.shared.common().probed = false;
                                self.probe_done();
                            }
                            return Err(e);
                        }
                    };
                    self.shared.common().stats.opened += 1;
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
                        self.shared.common().stats.waits += 1;
                    }
                    let wait_started = tokio::time::Instant::now();
                    let until = probing_until.map_or(deadline, |p| p.min(deadline));
                    let woken = tokio::time::timeout_at(until, notified).await.is_ok();
                    let waited_ms = wait_started.elapsed().as_millis() as u64;
                    self.shared.common().stats.wait_ms += waited_ms;
                    if !woken && tokio::time::Instant::now() >= deadline {
                        self.shared.common().stats.acquire_timeouts += 1;
                        return Err(ProxyError::new(
                            ErrorKind::AcquireTimeout,
                            format!("all {} connections to {} busy", self.stats().cap, self.addr),
                        ));
                    }
                }
            }
        }
    }

    /// An idle connection for this thread: one of its own, else another thread's, moved here.
    fn take_idle(&self, me: usize, now: tokio::time::Instant) -> Taken<C::Stream> {
        let mut local = self.shared.local(me);
        let (idle, foreign) = match local.idle.pop() {
            Some(idle) => (idle, false),
            None => {
                drop(local);
                let Some(idle) = self.shared.take_foreign_idle(me) else {
                    return Taken::None;
                };
                local = self.shared.local(me);
                (idle, true)
            }
        };
        let Idle { mut stream, since } = idle;
        let mut cx = Context::from_waker(Waker::noop());
        // A connection not used is closed before its slot is freed, so the cap holds.
        let usable = if self.settings.ttl.is_some_and(|t| now >= since + t) {
            local.closed_idle_ttl += 1;
            drop(stream);
            None
        } else if readable(&mut stream, &mut cx) {
            local.closed_idle_by_backend += 1;
            drop(stream);
            None
        } else if foreign {
            self.connector
                .adopt(stream)
                .map_err(
                    |e| tracing::debug!(backend = %self.addr, "idle connection not moved: {e}"),
                )
                .ok()
        } else {
            Some(stream)
        };
        match usable {
            Some(stream) => {
                local.reused += 1;
                Taken::Reused(stream)
            }
            None => {
                drop(local);
                self.shared.closed(1);
                Taken::Dead
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
        let mut c = self.shared.common();
        c.stats.announced_max_conns = Some(n);
        if self.settings.max.is_none() && n > 0 && c.stats.cap != n {
            tracing::info!(backend = %self.addr, "backend announced FCGI_MAX_CONNS={n}: capping connections");
            c.stats.cap = n;
        }
        drop(c);
        self.probe_done();
    }

    /// The capacity question is settled (answered, or the exchange got past the point where an
    /// answer would have come): connections may open up to the cap.
    pub fn probe_done(&self) {
        let mut c = self.shared.common();
        if c.probing_until.take().is_some() {
            drop(c);
            self.shared.freed.notify_waiters();
        }
    }

    /// Returns a connection after a clean, kept-alive exchange. It waits idle, watched, in this
    /// thread's list until checked out again, closed by the backend, or `ttl` passes.
    pub fn release(&self, conn: Conn<C::Stream>) {
        let Conn {
            mut stream,
            mut slot,
            ..
        } = conn;
        let me = self.shared.my_slot();
        let mut l = self.shared.local(me);
        if !l.watcher_started {
            l.watcher_started = true;
            tokio::spawn(watch_idle(
                Arc::downgrade(&self.shared),
                me,
                self.settings.ttl,
            ));
        }
        // Register the watcher's interest in the connection's read side (this wakes nobody).
        let mut cx = Context::from_waker(l.watcher.as_ref().unwrap_or(Waker::noop()));
        if readable(&mut stream, &mut cx) {
            l.closed_idle_by_backend += 1;
            drop(l);
            // Dropping the armed slot frees it.
            return;
        }
        l.idle.push(Idle {
            stream,
            since: tokio::time::Instant::now(),
        });
        slot.armed = false;
        // The watcher sets a timer for the oldest idle connection only when it runs.
        let wake = if self.settings.ttl.is_some() && !l.ttl_armed {
            l.watcher.clone()
        } else {
            None
        };
        drop(l);
        if let Some(w) = wake {
            w.wake();
        }
        self.shared.freed.notify_one();
    }
}

/// A thread's idle watcher: closes idle connections of list `me` that turned readable or
/// outlived `ttl`. Its waker sits on every one of them, so it runs only when one needs closing
/// (or a `ttl` timer is due), and ends with the pool.
async fn watch_idle<S>(shared: Weak<Shared<S>>, me: usize, ttl: Option<Duration>)
where
    S: AsyncRead + Unpin + Send + 'static,
{
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        let Some(shared) = shared.upgrade() else {
            return Poll::Ready(());
        };
        let mut l = shared.local(me);
        if !l.watcher.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            l.watcher = Some(cx.waker().clone());
        }
        let now = tokio::time::Instant::now();
        let (mut by_backend, mut expired) = (0, 0);
        // Closed outside the lock.
        let mut closing = Vec::new();
        let mut i = 0;
        while i < l.idle.len() {
            if ttl.is_some_and(|t| now >= l.idle[i].since + t) {
                expired += 1;
            } else if readable(&mut l.idle[i].stream, cx) {
                by_backend += 1;
            } else {
                i += 1;
                continue;
            }
            closing.push(l.idle.remove(i));
        }
        l.closed_idle_by_backend += by_backend;
        l.closed_idle_ttl += expired;
        l.ttl_armed = false;
        if let (Some(t), Some(oldest)) = (ttl, l.idle.first()) {
            let due = oldest.since + t;
            let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            sleep.as_mut().reset(due);
            l.ttl_armed = sleep.as_mut().poll(cx).is_pending();
            if !l.ttl_armed {
                cx.waker().wake_by_ref();
            }
        }
        drop(l);
        let n = closing.len();
        drop(closing);
        if n > 0 {
            shared.closed(n);
        }
        Poll::Pending
    })
    .await
}
