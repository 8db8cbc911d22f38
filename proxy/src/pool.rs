//! Backend connection pool, one per worker (backend address + its settings).
//!
//! - `max` caps connections open to the backend, idle or busy, over all serving threads; a
//!   checkout waits up to `acquire` for one to free up, then fails (503).
//! - Below that hard cap the pool learns how many connections the backend really serves at
//!   once, because a FastCGI backend with a fixed set of workers (php-fpm, pre-forked libfcgi)
//!   binds each worker to one connection until the proxy closes it; further connections wait
//!   unaccepted in the kernel backlog. The rules (docs/architecture.md, "Saturation"):
//!   - every fresh connection asks FCGI_GET_VALUES ahead of its request; backends answer as
//!     soon as a worker reads the connection, so the first byte back proves it was *accepted*;
//!     until then it is *pending*;
//!   - a connection pending longer than [`ACCEPT_GRACE`] is *overdue*: the backend is saturated.
//!     Idle connections are closed (*yield*) so their workers take the waiting ones, and a
//!     connection that finishes a request is closed instead of pooled while any is overdue. A
//!     request already written is never sent elsewhere: it is served where it waits;
//!   - the number of connections accepted at that moment becomes the *limit*: further requests
//!     wait inside the proxy for a pooled connection (bounded by `acquire`), first come first
//!     served, instead of in the backlog. While requests wait at the limit, one extra
//!     connection at a time (a *probe*) tests for more capacity; an accepted probe raises the
//!     limit, an overdue one backs off;
//!   - an announced FCGI_MAX_CONNS starts the limit, but never below the concurrency the
//!     backend has demonstrated (libfcgi announces 1 per process, however many share a socket);
//!   - while the backend's acceptance is unknown, at most [`PENDING_MIN`] (or as many as are
//!     accepted) connections may be pending at once, so a burst does not fill the backlog;
//!   - idle connections are kept [`DEFAULT_IDLE_TTL`] unless `ttl` says otherwise: an idle
//!     connection pins a worker that another proxy instance may be waiting for.
//! - Idle connections are kept per serving thread (each thread runs its own runtime, and a
//!   socket is registered with the runtime that uses it). A thread with none idle of its own
//!   takes another thread's and moves it over ([`Connector::adopt`]) before it opens one.
//! - Idle connections are watched: one task per pool and thread is woken when any of them
//!   becomes readable, so a backend that closes an idle connection (php-fpm after
//!   `pm.max_requests`) is noticed at once; a connection idle for `ttl` is dropped. This is
//!   pingora's idle poll, without a task per connection.
//! - A checkout says whether the connection was reused, so only failures on reused connections
//!   are retried.
//! - Connections go back to the pool only after a clean END_REQUEST on a KEEP_CONN request; the
//!   caller decides that and calls [`Pool::release`].

use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{ErrorKind, ProxyError};
use crate::net::{BackendAddr, Connector};

/// How long a fresh connection may go without a byte back before the backend counts as
/// saturated. A worker that is free answers FCGI_GET_VALUES within a millisecond or two.
pub const ACCEPT_GRACE: Duration = Duration::from_millis(50);
/// Pending connections allowed at once while few are proven accepted.
pub const PENDING_MIN: usize = 8;
/// How long an idle connection is kept when no `ttl` is configured.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(1);
/// After the backend showed saturation, idle connections are kept at most this long for
/// [`SATURATED_MEMORY`]: a worker held idle is one another proxy instance may be waiting for.
pub const SATURATED_IDLE_TTL: Duration = Duration::from_millis(200);
pub const SATURATED_MEMORY: Duration = Duration::from_secs(10);
/// At most one log line per backend about failing connects in this long.
pub const CONNECT_LOG_EVERY: Duration = Duration::from_secs(10);
/// First wait after an overdue probe before the next; doubles up to [`PROBE_BACKOFF_MAX`].
const PROBE_BACKOFF_MIN: Duration = Duration::from_millis(250);
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Hard cap on open connections set in the configuration (`max=`). When absent,
    /// `default_max`.
    pub max: Option<usize>,
    /// The hard cap when the configuration sets none.
    pub default_max: usize,
    /// How long an idle connection is kept (`ttl=`). `None`: [`DEFAULT_IDLE_TTL`].
    pub ttl: Option<Duration>,
    /// How long a checkout waits for a free slot (`acquire=`). `None`: as long as `timeout`.
    pub acquire: Option<Duration>,
    /// Connect timeout (`connectiontimeout=`).
    pub connect_timeout: Duration,
    /// Connections are kept for reuse (KEEP_CONN). Only then does the pool ask for and learn
    /// the backend's capacity: without reuse every worker is freed after each request.
    pub reuse: bool,
    /// Checkouts waiting at once (`limits.max_waiting`); one more fails at once. 0: unlimited.
    pub max_waiting: usize,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub opened: u64,
    pub reused: u64,
    pub idle: usize,
    pub open: usize,
    /// Open connections a backend worker is known to have accepted.
    pub accepted: usize,
    /// Open connections with nothing back from the backend yet (maybe in its backlog).
    pub pending: usize,
    pub closed_idle_by_backend: u64,
    pub closed_idle_ttl: u64,
    pub waits: u64,
    /// Total time checkouts spent waiting for a free connection, in milliseconds.
    pub wait_ms: u64,
    pub acquire_timeouts: u64,
    /// Checkouts waiting for a free connection now.
    pub waiting: usize,
    /// Checkouts refused because `max_waiting` were already waiting.
    pub queue_full: u64,
    /// The hard cap in force (`max`, or the default bound).
    pub cap: usize,
    /// The learned limit: connections the backend serves at once, as far as shown.
    pub limit: Option<usize>,
    /// Most connections the backend has had accepted at once.
    pub demonstrated: usize,
    /// FCGI_MAX_CONNS as the backend announced it, if it did.
    pub announced_max_conns: Option<usize>,
    /// Whether the backend answers FCGI_GET_VALUES (unknown until a fresh connection tells).
    pub answers_get_values: Option<bool>,
    /// Fresh connections found overdue: the backend had no free worker for them.
    pub saturations: u64,
    /// Connections closed (idle or just finished) to free a worker for an overdue one.
    pub yields: u64,
    /// Connections opened beyond the limit to test for more capacity.
    pub probes: u64,
    /// Probes the backend accepted at once (each raised or confirmed the limit).
    pub probes_accepted: u64,
}

/// A fresh connection with nothing back yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u64,
    probe: bool,
    overdue: bool,
}

/// What all threads share: the cap, the counts it limits, and what was learned.
#[derive(Debug)]
struct Common {
    /// Open connections a worker is known to have accepted, idle or busy, on every thread.
    accepted: usize,
    pending: Vec<Pending>,
    /// No probe before this.
    probe_after: Option<tokio::time::Instant>,
    probe_backoff: Duration,
    /// Idle connections are kept only briefly until then (the backend was saturated).
    short_idle_until: Option<tokio::time::Instant>,
    /// Connect failures are logged once per [`CONNECT_LOG_EVERY`]: when the last line was
    /// written, and how many failures it did not mention since.
    connect_logged: Option<tokio::time::Instant>,
    connect_unlogged: u64,
    /// Counters kept here; `idle`, `reused` and the idle closes live in [`Local`].
    stats: PoolStats,
    /// Checkouts waiting for a connection, first come first (so in ticket order): only the
    /// first may take an idle connection, and a checkout that comes while any waits goes
    /// behind them.
    queue: std::collections::VecDeque<Waiter>,
    next_ticket: u64,
}

/// A checkout's place in [`Common::queue`].
#[derive(Debug)]
struct Waiter {
    ticket: u64,
    waker: Option<Waker>,
    /// Told to look again (a connection or a slot came free) since it last looked.
    woken: bool,
}

impl Common {
    /// Where waiting checkout `ticket` is in the queue (a search: the queue is in ticket order,
    /// and thousands may wait on a saturated backend).
    fn place(&self, ticket: u64) -> Option<usize> {
        self.queue.binary_search_by_key(&ticket, |w| w.ticket).ok()
    }

    /// Whether waiting checkout `ticket` is the first in the queue.
    fn is_first(&self, ticket: u64) -> bool {
        self.queue.front().is_some_and(|w| w.ticket == ticket)
    }

    /// Connections open, idle or busy, pending or accepted.
    fn open(&self) -> usize {
        self.accepted + self.pending.len()
    }

    fn sync(&mut self) {
        self.stats.open = self.open();
        self.stats.accepted = self.accepted;
        self.stats.pending = self.pending.len();
    }

    fn overdue(&self) -> bool {
        self.pending.iter().any(|p| p.overdue)
    }

    /// The first waiting checkout is told to look again (a connection or a slot came free);
    /// its waker, to wake once the lock is released.
    #[must_use]
    fn wake_first(&mut self) -> Option<Waker> {
        let first = self.queue.front_mut()?;
        first.woken = true;
        first.waker.take()
    }

    /// Fresh connection `id` is accepted: moved from `pending` to `accepted`, with what that
    /// shows about capacity. False if it was not pending.
    fn settle(&mut self, id: u64) -> bool {
        let Some(i) = self.pending.iter().position(|p| p.id == id) else {
            return false;
        };
        let p = self.pending.swap_remove(i);
        self.accepted += 1;
        let accepted = self.accepted;
        self.stats.demonstrated = self.stats.demonstrated.max(accepted);
        if p.probe && !p.overdue {
            self.stats.probes_accepted += 1;
            self.probe_backoff = PROBE_BACKOFF_MIN;
            self.probe_after = None;
        }
        // Capacity shown is capacity: the limit never stays below what is accepted at once
        // (an overdue connection let in by a yield replaces one, so it raises nothing).
        if let Some(l) = self.stats.limit
            && accepted > l
        {
            self.stats.limit = Some(accepted);
        }
        self.sync();
        true
    }

    /// Whether one more connection may be opened now: `Some(probe)` if so.
    fn may_open(&self, hard_cap: usize, now: tokio::time::Instant) -> Option<bool> {
        if self.open() >= hard_cap {
            return None;
        }
        if self.stats.answers_get_values != Some(false)
            && self.pending.len() >= PENDING_MIN.max(self.accepted)
        {
            return None;
        }
        match self.stats.limit {
            Some(limit) if self.open() >= limit => {
                let probing = self.pending.iter().any(|p| p.probe);
                let backing_off = self.probe_after.is_some_and(|t| now < t);
                (!probing && !backing_off).then_some(true)
            }
            _ => Some(false),
        }
    }
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

/// An idle connection. It counts in `open` and `accepted`: its slot was disarmed, not dropped.
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
    /// `ttl`, or the default idle lifetime.
    idle_ttl: Duration,
    /// Names connections for [`Pool::accepted`] and [`Pool::overdue`].
    ids: AtomicU64,
    common: Mutex<Common>,
    locals: Box<[Padded<Mutex<Local<S>>>]>,
    /// Checkouts waiting now (the length of [`Common::queue`], readable without the lock).
    waiting: AtomicUsize,
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
    /// Shared: every exchange holds a clone of its pool.
    addr: Arc<BackendAddr>,
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
    /// A fresh connection whose acceptance the pool tracks: the exchange asks FCGI_GET_VALUES
    /// ahead of the request and reports the first byte back ([`Pool::accepted`]) or its absence
    /// after [`ACCEPT_GRACE`] ([`Pool::overdue`]).
    pub ask_values: bool,
    slot: Slot<S>,
}

impl<S: Send + 'static> Conn<S> {
    /// The pool's name for this connection, for [`Pool::accepted`] and [`Pool::overdue`].
    pub fn id(&self) -> u64 {
        self.slot.id
    }

    /// When this connection counts as overdue if nothing came back (fresh connections only).
    pub fn accept_deadline(&self) -> Option<tokio::time::Instant> {
        self.slot.since.map(|t| t + ACCEPT_GRACE)
    }
}

/// Holds one unit of the pool's `open` count; gives it back on drop unless disarmed (the
/// connection went idle and the pool counts it from there).
#[derive(Debug)]
struct Slot<S> {
    shared: Arc<Shared<S>>,
    id: u64,
    /// Fresh connections: when the request went out (their pending entry's `since`).
    since: Option<tokio::time::Instant>,
    armed: bool,
}

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.closed_one(self.id);
        }
    }
}

/// A checkout in the queue (and counted in `waiting`); out of it when it gets a connection,
/// fails or is dropped (the client went away). Leaving first, it wakes the next, which may take
/// what is left.
struct Queued<'a, S> {
    shared: &'a Shared<S>,
    ticket: u64,
}

impl<S> Queued<'_, S> {
    /// Whether this checkout is the first in the queue.
    fn first(&self) -> bool {
        self.shared.common().is_first(self.ticket)
    }

    /// Until this checkout is told to look again (at once if it was since it last looked).
    fn woken(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut c = self.shared.common();
            let Some(w) = c.place(self.ticket).and_then(|i| c.queue.get_mut(i)) else {
                return Poll::Ready(());
            };
            if std::mem::take(&mut w.woken) {
                return Poll::Ready(());
            }
            w.waker = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

impl<S> Drop for Queued<'_, S> {
    fn drop(&mut self) {
        let mut c = self.shared.common();
        self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
        let Some(i) = c.place(self.ticket) else {
            return;
        };
        let me = c.queue.remove(i);
        // A wake meant for this checkout goes on to the next, as does the first place.
        let w = if i == 0 || me.is_some_and(|w| w.woken) {
            c.wake_first()
        } else {
            None
        };
        drop(c);
        wake(w);
    }
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

impl<S> Shared<S> {
    fn common(&self) -> std::sync::MutexGuard<'_, Common> {
        self.common.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn local(&self, i: usize) -> std::sync::MutexGuard<'_, Local<S>> {
        self.locals[i].0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long an idle connection is kept now.
    fn idle_ttl(&self, now: tokio::time::Instant) -> Duration {
        match self.common().short_idle_until {
            Some(t) if now < t => self.idle_ttl.min(SATURATED_IDLE_TTL),
            _ => self.idle_ttl,
        }
    }

    /// This thread's idle list.
    fn my_slot(&self) -> usize {
        thread_slot() % self.locals.len()
    }

    /// `n` accepted (idle) connections were closed: their slots are free.
    fn closed(&self, n: usize) {
        let mut c = self.common();
        c.accepted -= n;
        c.sync();
        // The first waiter takes a slot and, leaving the queue, wakes the next.
        let w = c.wake_first();
        drop(c);
        wake(w);
    }

    /// The connection `id` was closed, pending or accepted.
    fn closed_one(&self, id: u64) {
        let mut c = self.common();
        match c.pending.iter().position(|p| p.id == id) {
            Some(i) => {
                c.pending.swap_remove(i);
            }
            None => c.accepted -= 1,
        }
        c.sync();
        let w = c.wake_first();
        drop(c);
        wake(w);
    }

    /// The first waiting checkout looks again. Called for every released connection, so it
    /// takes the shared lock only when a checkout waits: a checkout about to wait counts itself
    /// in `waiting` and then looks once more (idle lists, open slots), under the same locks the
    /// change being announced took, so either it sees the change or the change sees it
    /// counted.
    fn freed(&self) {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        let w = self.common().wake_first();
        wake(w);
    }

    /// Another thread's most recently used idle connection, if any thread has one.
    fn take_foreign_idle(&self, me: usize) -> Option<Idle<S>> {
        (0..self.locals.len())
            .filter(|&i| i != me)
            .find_map(|i| self.local(i).idle.pop())
    }

    /// Closes every idle connection on every thread; how many.
    fn close_all_idle(&self) -> usize {
        let mut n = 0;
        for i in 0..self.locals.len() {
            let mut l = self.local(i);
            let taken = std::mem::take(&mut l.idle);
            // Its timer was set for connections that are gone: let it set a new one.
            l.ttl_armed = false;
            let watcher = l.watcher.clone();
            drop(l);
            n += taken.len();
            drop(taken);
            if let Some(w) = watcher {
                w.wake();
            }
        }
        if n > 0 {
            self.closed(n);
        }
        n
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
            addr: Arc::new(addr),
            shared: Arc::new(Shared {
                idle_ttl: settings.ttl.unwrap_or(DEFAULT_IDLE_TTL),
                ids: AtomicU64::new(0),
                common: Mutex::new(Common {
                    accepted: 0,
                    pending: Vec::new(),
                    probe_after: None,
                    probe_backoff: PROBE_BACKOFF_MIN,
                    short_idle_until: None,
                    connect_logged: None,
                    connect_unlogged: 0,
                    stats: PoolStats {
                        cap,
                        ..PoolStats::default()
                    },
                    queue: std::collections::VecDeque::new(),
                    next_ticket: 0,
                }),
                locals: (0..threads.max(1))
                    .map(|_| Padded(Mutex::new(Local::new())))
                    .collect(),
                waiting: AtomicUsize::new(0),
            }),
            settings,
        }
    }

    pub fn addr(&self) -> &BackendAddr {
        &self.addr
    }

    /// Whether `other` talks to the same backend with the same settings and shards, so that
    /// one may stand in for the other (a reload keeps such a pool: its idle connections, the
    /// limit it learned, the requests waiting on it).
    pub fn same_as(&self, other: &Pool<C>) -> bool {
        self.addr == other.addr
            && self.settings == other.settings
            && self.shared.locals.len() == other.shared.locals.len()
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    pub fn stats(&self) -> PoolStats {
        let c = self.shared.common();
        let mut s = c.stats;
        s.waiting = c.queue.len();
        drop(c);
        for i in 0..self.shared.locals.len() {
            let l = self.shared.local(i);
            s.idle += l.idle.len();
            s.reused += l.reused;
            s.closed_idle_by_backend += l.closed_idle_by_backend;
            s.closed_idle_ttl += l.closed_idle_ttl;
        }
        s
    }

    fn reused_conn(&self, stream: C::Stream) -> Conn<C::Stream> {
        let id = self.shared.ids.fetch_add(1, Ordering::Relaxed) + 1;
        Conn {
            stream,
            reused: true,
            ask_values: false,
            slot: Slot {
                shared: self.shared.clone(),
                id,
                since: None,
                armed: true,
            },
        }
    }

    /// A connection: an idle one of this thread's if there is one (reused), else a new one if
    /// the cap and what the pool learned allow (see the module docs), else waits for one to
    /// free up until `acquire` (default: `fallback_wait`).
    pub async fn checkout(&self, fallback_wait: Duration) -> Result<Conn<C::Stream>, ProxyError> {
        self.checkout_preferring(fallback_wait, false).await
    }

    /// Like [`Pool::checkout`], but a new connection first if one may be opened: for a request
    /// sent again after a pooled connection turned out closed, when the others idle since as
    /// long may be closed too (a backend recycling its workers closes them after each few
    /// requests, and the close may not have been seen yet).
    pub async fn checkout_fresh(
        &self,
        fallback_wait: Duration,
    ) -> Result<Conn<C::Stream>, ProxyError> {
        self.checkout_preferring(fallback_wait, true).await
    }

    async fn checkout_preferring(
        &self,
        fallback_wait: Duration,
        mut fresh_first: bool,
    ) -> Result<Conn<C::Stream>, ProxyError> {
        let deadline = tokio::time::Instant::now() + self.settings.acquire.unwrap_or(fallback_wait);
        let me = self.shared.my_slot();
        let hard_cap = self.settings.max.unwrap_or(self.settings.default_max);
        // In the queue of waiting checkouts (counted in `waiting` until dropped).
        let mut queued: Option<Queued<'_, C::Stream>> = None;
        // A waiting checkout that was first stays first until it leaves the queue.
        let mut first = false;
        loop {
            let now = tokio::time::Instant::now();
            // First come, first served: an idle connection goes to the first checkout in the
            // queue, and one that just came takes it only when none waits.
            let my_turn = match &queued {
                None => self.shared.waiting.load(Ordering::Relaxed) == 0,
                Some(q) => {
                    first = first || q.first();
                    first
                }
            };
            if !fresh_first && my_turn {
                match self.take_idle(me, now) {
                    Taken::Reused(stream) => return Ok(self.reused_conn(stream)),
                    // Closed or expired since the watcher last looked: closed; look again.
                    Taken::Dead => continue,
                    Taken::None => {}
                }
            }
            let (opened, wake_at) = {
                let mut c = self.shared.common();
                // So is a free slot: a checkout that just came, or one behind others in the
                // queue, does not open the one freed for the first.
                let my_turn = match &queued {
                    None => c.queue.is_empty(),
                    Some(q) => {
                        first = first || c.is_first(q.ticket);
                        first
                    }
                };
                match my_turn.then(|| c.may_open(hard_cap, now)).flatten() {
                    Some(probe) => {
                        let id = self.shared.ids.fetch_add(1, Ordering::Relaxed) + 1;
                        let track = self.settings.reuse;
                        if track {
                            c.pending.push(Pending {
                                id,
                                probe,
                                overdue: false,
                            });
                        } else {
                            c.accepted += 1;
                        }
                        if probe {
                            c.stats.probes += 1;
                        }
                        c.sync();
                        let ask = track && c.stats.answers_get_values != Some(false);
                        (Some((id, track, ask)), None)
                    }
                    // A probe may become possible when the backoff ends (for the first: the
                    // rest wait their turn, not a timer each).
                    None => (None, c.probe_after.filter(|&t| my_turn && t > now)),
                }
            };
            if opened.is_none() && fresh_first {
                // No new connection may be opened: a pooled one it is, as for anyone.
                fresh_first = false;
                continue;
            }
            match opened {
                Some((id, track, ask_values)) => {
                    let slot = Slot {
                        shared: self.shared.clone(),
                        id,
                        since: track.then_some(now),
                        armed: true,
                    };
                    let stream = self.connect().await?;
                    self.shared.common().stats.opened += 1;
                    return Ok(Conn {
                        stream,
                        reused: false,
                        ask_values,
                        slot,
                    });
                }
                None => {
                    let Some(q) = &queued else {
                        let mut c = self.shared.common();
                        let max = self.settings.max_waiting;
                        if max > 0 && c.queue.len() >= max {
                            c.stats.queue_full += 1;
                            return Err(ProxyError::new(
                                ErrorKind::QueueFull,
                                format!(
                                    "{} requests already wait for a connection to {} (limits.max_waiting)",
                                    c.queue.len(),
                                    self.addr
                                ),
                            ));
                        }
                        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
                        c.stats.waits += 1;
                        let ticket = c.next_ticket;
                        c.next_ticket += 1;
                        c.queue.push_back(Waiter {
                            ticket,
                            waker: None,
                            woken: false,
                        });
                        drop(c);
                        queued = Some(Queued {
                            shared: &self.shared,
                            ticket,
                        });
                        // Looks once more from its place before it sleeps: a connection
                        // released since it last looked woke nobody.
                        continue;
                    };
                    let wait_started = tokio::time::Instant::now();
                    let until = wake_at.map_or(deadline, |w| w.min(deadline));
                    let woken = tokio::time::timeout_at(until, q.woken()).await.is_ok();
                    let waited_ms = wait_started.elapsed().as_millis() as u64;
                    self.shared.common().stats.wait_ms += waited_ms;
                    if !woken && tokio::time::Instant::now() >= deadline {
                        self.shared.common().stats.acquire_timeouts += 1;
                        let s = self.stats();
                        return Err(ProxyError::new(
                            ErrorKind::AcquireTimeout,
                            format!(
                                "no connection to {} freed up: {} open, limit {}, cap {}",
                                self.addr,
                                s.open,
                                s.limit.map_or("none".to_string(), |l| l.to_string()),
                                s.cap
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// An idle connection for this thread: one of its own, else another thread's, moved here.
    fn take_idle(&self, me: usize, now: tokio::time::Instant) -> Taken<C::Stream> {
        let ttl = self.shared.idle_ttl(now);
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
        let usable = if now >= since + ttl {
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
        let e = match tokio::time::timeout(
            self.settings.connect_timeout,
            self.connector.connect(&self.addr),
        )
        .await
        {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => ProxyError::new(
                ErrorKind::ConnectFailed,
                format!(
                    "connect to {}: {}",
                    self.addr,
                    connect_reason(&e, &self.addr)
                ),
            ),
            Err(_) => ProxyError::new(
                ErrorKind::ConnectTimeout,
                format!(
                    "connect to {} timed out after {:?}",
                    self.addr, self.settings.connect_timeout
                ),
            ),
        };
        self.log_connect_failure(&e);
        Err(e)
    }

    /// One line per backend and [`CONNECT_LOG_EVERY`], however many requests fail meanwhile:
    /// a backend that is down must not flood the log.
    fn log_connect_failure(&self, e: &ProxyError) {
        let now = tokio::time::Instant::now();
        let mut c = self.shared.common();
        if c.connect_logged
            .is_some_and(|t| now < t + CONNECT_LOG_EVERY)
        {
            c.connect_unlogged += 1;
            return;
        }
        let unlogged = std::mem::take(&mut c.connect_unlogged);
        c.connect_logged = Some(now);
        drop(c);
        if unlogged > 0 {
            tracing::error!(
                "backend unreachable: {} ({unlogged} more failed connects since the last line)",
                e.detail
            );
        } else {
            tracing::error!("backend unreachable: {}", e.detail);
        }
    }

    /// The first byte came back on fresh connection `id`: a worker accepted it.
    pub fn accepted(&self, id: u64) {
        let mut c = self.shared.common();
        let changed = c.settle(id);
        drop(c);
        if changed {
            // More may now be opened (the pending bound, a probe slot).
            self.shared.freed();
        }
    }

    /// Whether the backend answers FCGI_GET_VALUES, as far as known.
    pub fn answers_get_values(&self) -> Option<bool> {
        self.shared.common().stats.answers_get_values
    }

    /// Fresh connection `id` got nothing back within [`ACCEPT_GRACE`]: if the backend is known
    /// to answer FCGI_GET_VALUES at once, no worker took it; either way idle connections yield.
    pub fn overdue(&self, id: u64) {
        let mut c = self.shared.common();
        let Some(p) = c.pending.iter_mut().find(|p| p.id == id) else {
            return;
        };
        p.overdue = true;
        let probe = p.probe;
        if c.stats.answers_get_values == Some(true) {
            c.stats.saturations += 1;
            c.short_idle_until = Some(tokio::time::Instant::now() + SATURATED_MEMORY);
            let limit = c.accepted.max(1);
            if probe {
                c.probe_after = Some(tokio::time::Instant::now() + c.probe_backoff);
                c.probe_backoff = (c.probe_backoff * 2).min(PROBE_BACKOFF_MAX);
            } else if c.stats.limit.is_none_or(|l| limit < l) {
                tracing::info!(
                    backend = %self.addr,
                    "backend saturated: {} connections accepted, a new one waits; limit {limit}",
                    c.accepted
                );
                c.stats.limit = Some(limit);
                c.probe_after = Some(tokio::time::Instant::now() + c.probe_backoff);
            }
        }
        drop(c);
        let n = self.shared.close_all_idle();
        if n > 0 {
            self.shared.common().stats.yields += n as u64;
        }
    }

    /// The backend answered FCGI_GET_VALUES, with FCGI_MAX_CONNS or without.
    pub fn values_answered(&self, max_conns: Option<usize>) {
        let mut c = self.shared.common();
        c.stats.answers_get_values = Some(true);
        if let Some(n) = max_conns.filter(|&n| n > 0) {
            c.stats.announced_max_conns = Some(n);
            if c.stats.limit.is_none() {
                // A hint about one process: never below what the backend has shown.
                let limit = n.max(c.stats.demonstrated).max(c.accepted);
                tracing::debug!(backend = %self.addr, "backend announced FCGI_MAX_CONNS={n}; limit {limit}");
                c.stats.limit = Some(limit);
            }
        }
    }

    /// A request that asked FCGI_GET_VALUES ended without an answer: this backend does not
    /// answer, so silence says nothing about acceptance; stop asking.
    pub fn values_unanswered(&self) {
        let mut c = self.shared.common();
        if c.stats.answers_get_values.is_none() {
            c.stats.answers_get_values = Some(false);
            drop(c);
            self.shared.freed();
        }
    }

    /// Returns a connection after a clean, kept-alive exchange. It waits idle, watched, in this
    /// thread's list until checked out again, closed by the backend, or its idle time is up.
    /// While a fresh connection is overdue it is closed instead, so its worker takes that one.
    pub fn release(&self, conn: Conn<C::Stream>) {
        let Conn {
            mut stream,
            mut slot,
            ..
        } = conn;
        {
            let mut c = self.shared.common();
            // A connection that carried a whole exchange was accepted, whatever the exchange
            // told. Every way out of here wakes the first waiter: `freed` at the end, or the
            // dropped slot.
            c.settle(slot.id);
            if c.overdue() {
                c.stats.yields += 1;
                drop(c);
                // Dropping the armed slot frees it.
                return;
            }
        }
        let me = self.shared.my_slot();
        let mut l = self.shared.local(me);
        if !l.watcher_started {
            l.watcher_started = true;
            tokio::spawn(watch_idle(Arc::downgrade(&self.shared), me));
        }
        // Register the watcher's interest in the connection's read side (this wakes nobody).
        let mut cx = Context::from_waker(l.watcher.as_ref().unwrap_or(Waker::noop()));
        if readable(&mut stream, &mut cx) {
            l.closed_idle_by_backend += 1;
            drop(l);
            return;
        }
        l.idle.push(Idle {
            stream,
            since: tokio::time::Instant::now(),
        });
        slot.armed = false;
        // The watcher sets a timer for the oldest idle connection only when it runs.
        let wake = if !l.ttl_armed {
            l.watcher.clone()
        } else {
            None
        };
        drop(l);
        if let Some(w) = wake {
            w.wake();
        }
        self.shared.freed();
    }
}

/// Why a connect failed, in words that say what to check.
fn connect_reason(e: &std::io::Error, addr: &BackendAddr) -> String {
    use std::io::ErrorKind as K;
    let hint = match (e.kind(), addr) {
        (K::NotFound, BackendAddr::Unix(_)) => {
            "the socket does not exist: is the backend running, and is this its `listen` path?"
        }
        (K::PermissionDenied, BackendAddr::Unix(_)) => {
            "permission denied: the proxy's user may not write to the socket (php-fpm: \
             listen.owner, listen.group, listen.mode)"
        }
        (K::ConnectionRefused, BackendAddr::Unix(_)) => {
            "connection refused: the socket exists but nothing listens on it"
        }
        (K::ConnectionRefused, BackendAddr::Tcp(_)) => {
            "connection refused: nothing listens on this address"
        }
        _ => return e.to_string(),
    };
    format!("{e} ({hint})")
}

/// A thread's idle watcher: closes idle connections of list `me` that turned readable or
/// outlived `ttl`. Its waker sits on every one of them, so it runs only when one needs closing
/// (or a `ttl` timer is due), and ends with the pool.
async fn watch_idle<S>(shared: Weak<Shared<S>>, me: usize)
where
    S: AsyncRead + Unpin + Send + 'static,
{
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        let Some(shared) = shared.upgrade() else {
            return Poll::Ready(());
        };
        let now = tokio::time::Instant::now();
        // Read before the idle list is locked: the shared state is never locked under it.
        let ttl = shared.idle_ttl(now);
        let mut l = shared.local(me);
        if !l.watcher.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            l.watcher = Some(cx.waker().clone());
        }
        let (mut by_backend, mut expired) = (0, 0);
        // Closed outside the lock.
        let mut closing = Vec::new();
        let mut i = 0;
        while i < l.idle.len() {
            if now >= l.idle[i].since + ttl {
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
        if let Some(oldest) = l.idle.first() {
            let due = oldest.since + ttl;
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
