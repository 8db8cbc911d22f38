//! The server: an accept loop over any [`Acceptor`], connection capacity, and the handle that
//! owns the journal and stops everything.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::conn::Conn;
use crate::journal::{ClosedBy, Journal, NoteKind};
use crate::net::Acceptor;
use crate::script::{Overflow, Script};

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) script: Script,
    pub(crate) journal: Journal,
    workers: Mutex<Workers>,
}

impl Shared {
    pub(crate) fn workers(&self) -> MutexGuard<'_, Workers> {
        self.workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether worker `w` has served its `max_requests`.
    pub(crate) fn worker_done(&self, w: usize) -> bool {
        let max = self.script.server.max_requests;
        max.is_some_and(|m| self.workers().served(w) >= m.get())
    }
}

/// The backend's workers (php-fpm children, libfcgi processes, threads): each serves one
/// connection at a time and counts the requests it served, across connections. There are
/// `max_conns` of them, or as many as connections served at once when unlimited.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    slots: Vec<Worker>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Worker {
    busy: bool,
    /// Running: it served before and has not exited since.
    warm: bool,
    served: u64,
}

impl Workers {
    fn new(n: usize) -> Self {
        Workers {
            slots: vec![Worker::default(); n],
        }
    }

    /// A worker for a new connection: the lowest-numbered idle running one, else the
    /// lowest-numbered idle one that must start first (a new one when every worker is busy).
    /// Returns its index and whether it had to start.
    fn take(&mut self) -> (usize, bool) {
        let idle = |warm: bool| self.slots.iter().position(|w| !w.busy && w.warm == warm);
        let i = match idle(true).or_else(|| idle(false)) {
            Some(i) => i,
            None => {
                self.slots.push(Worker::default());
                self.slots.len() - 1
            }
        };
        let w = &mut self.slots[i];
        let cold = !w.warm;
        w.busy = true;
        w.warm = true;
        (i, cold)
    }

    /// Counts a request served by worker `w`.
    pub(crate) fn count_request(&mut self, w: usize) {
        if let Some(w) = self.slots.get_mut(w) {
            w.served += 1;
        }
    }

    pub(crate) fn served(&self, w: usize) -> u64 {
        self.slots.get(w).map_or(0, |w| w.served)
    }

    /// Worker `w`'s connection ended. When it has served `max` requests it exits (the next
    /// connection given it waits for a new one to start); returns how many it served then.
    fn release(&mut self, w: usize, max: Option<NonZeroU64>) -> Option<u64> {
        let w = self.slots.get_mut(w)?;
        w.busy = false;
        let served = w.served;
        if max.is_some_and(|m| served >= m.get()) {
            w.warm = false;
            w.served = 0;
            Some(served)
        } else {
            None
        }
    }
}

/// Starts mock servers.
#[derive(Debug, Clone, Copy)]
pub struct MockServer;

/// A running mock. Dropping it stops the server (without waiting); [`MockHandle::shutdown`]
/// stops it and waits until every connection is closed and journaled.
#[derive(Debug)]
pub struct MockHandle {
    addr: String,
    journal: Journal,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Serves `script` on `acceptor` from a spawned task, with a fresh journal.
    pub fn spawn<A: Acceptor>(script: Script, acceptor: A) -> io::Result<MockHandle> {
        MockServer::spawn_with_journal(script, acceptor, Journal::new())
    }

    /// Like [`MockServer::spawn`], journaling into `journal` (e.g. one with a sink).
    pub fn spawn_with_journal<A: Acceptor>(
        script: Script,
        acceptor: A,
        journal: Journal,
    ) -> io::Result<MockHandle> {
        let addr = acceptor.local_addr()?;
        let (tx, rx) = watch::channel(false);
        let workers = Workers::new(script.server.max_conns.map_or(0, |n| n.get()));
        let shared = Arc::new(Shared {
            script,
            journal: journal.clone(),
            workers: Mutex::new(workers),
        });
        let task = tokio::spawn(accept_loop(acceptor, shared, rx));
        Ok(MockHandle {
            addr,
            journal,
            shutdown: tx,
            task: Some(task),
        })
    }

    /// Binds a TCP listener (`"127.0.0.1:0"` picks a free port) and serves `script` on it.
    pub async fn bind_tcp(addr: &str, script: Script) -> io::Result<MockHandle> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        MockServer::spawn(script, listener)
    }

    /// Binds a Unix socket at `path` and serves `script` on it.
    #[cfg(unix)]
    pub fn bind_unix(path: &std::path::Path, script: Script) -> io::Result<MockHandle> {
        let listener = tokio::net::UnixListener::bind(path)?;
        MockServer::spawn(script, listener)
    }
}

impl MockHandle {
    /// The address to connect to, as the acceptor prints it.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The address as a socket address, when it is one.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.addr.parse().ok()
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Stops accepting, closes every connection (journaled as closed by the backend, reason
    /// `shutdown`) and waits for that to finish.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

enum Event<S> {
    Shutdown,
    Reaped,
    Slot(Option<OwnedSemaphorePermit>),
    Accepted(io::Result<(S, String)>),
}

/// How a new connection gets its slot under `max_conns`.
enum Slot {
    Unlimited,
    Taken(OwnedSemaphorePermit),
    Wait(Arc<Semaphore>),
}

async fn accept_loop<A: Acceptor>(
    acceptor: A,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let settings = &shared.script.server;
    let sem = settings
        .max_conns
        .map(|n| Arc::new(Semaphore::new(n.get())));
    // Backlog mode takes the slot before accepting, so extra connections stay in the kernel.
    let backlog = settings.overflow == Overflow::Backlog;
    let mut tasks = JoinSet::new();
    let mut slot: Option<OwnedSemaphorePermit> = None;
    loop {
        let need_slot = backlog && sem.is_some() && slot.is_none();
        let sem_for_wait = sem.clone();
        let event = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => Event::Shutdown,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => Event::Reaped,
            p = async move {
                match sem_for_wait {
                    Some(s) => s.acquire_owned().await.ok(),
                    None => std::future::pending().await,
                }
            }, if need_slot => Event::Slot(p),
            r = acceptor.accept(), if !need_slot => Event::Accepted(r),
        };
        match event {
            Event::Shutdown => break,
            Event::Reaped => {}
            Event::Slot(p) => slot = p,
            Event::Accepted(Ok((stream, peer))) => {
                let s = match (&sem, slot.take()) {
                    (None, _) => Slot::Unlimited,
                    (Some(_), Some(p)) => Slot::Taken(p),
                    (Some(sem), None) => Slot::Wait(sem.clone()),
                };
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(connection(stream, peer, shared, shutdown, s));
            }
            Event::Accepted(Err(e)) => {
                shared
                    .journal
                    .note(NoteKind::ServerError, 0, format!("accept failed: {e}"));
                // Out of descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn connection<S: crate::net::Connection>(
    stream: S,
    peer: String,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    slot: Slot,
) {
    let id = shared.journal.open_connection(&peer);
    let permit = match slot {
        Slot::Unlimited => None,
        Slot::Taken(p) => Some(p),
        Slot::Wait(sem) => {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => {
                    drop(stream);
                    shared.journal.close_connection(id, ClosedBy::Backend, "shutdown");
                    return;
                }
                p = sem.acquire_owned() => p.ok(),
            }
        }
    };
    let (worker, cold) = shared.workers().take();
    let delay = shared.script.server.spawn_delay_ms;
    if cold && delay > 0 {
        shared.journal.note(
            NoteKind::Model,
            id,
            format!(
                "worker {} starts: connection {id} is read after spawn_delay_ms = {delay}",
                worker + 1
            ),
        );
        let stopped = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => true,
            () = tokio::time::sleep(Duration::from_millis(delay)) => false,
        };
        if stopped {
            drop(stream);
            shared
                .journal
                .close_connection(id, ClosedBy::Backend, "shutdown");
            release(&shared, worker, id);
            return;
        }
    }
    if shared.script.server.drop_unread.contains(&id) {
        drop(stream);
        shared
            .journal
            .close_connection(id, ClosedBy::Backend, "dropped_unread");
        release(&shared, worker, id);
        return;
    }
    shared.journal.serve_connection(id);
    Conn::new(id, worker, &shared)
        .run(stream, &mut shutdown)
        .await;
    // The worker is free (or gone) before the slot is: the next connection sees its state.
    release(&shared, worker, id);
    drop(permit);
}

fn release(shared: &Shared, worker: usize, conn: u64) {
    let max = shared.script.server.max_requests;
    let exited = shared.workers().release(worker, max);
    if let Some(n) = exited {
        shared.journal.note(
            NoteKind::Model,
            conn,
            format!(
                "worker {} exits after {n} requests (max_requests); its slot gets a new worker",
                worker + 1
            ),
        );
    }
}
