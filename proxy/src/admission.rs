//! Admission control: what the proxy takes on at once, so that a flood of clients costs a
//! bounded amount of memory and file descriptors instead of taking the process down.
//!
//! - Client connections: at `limits.max_connections` the listeners stop accepting; new
//!   connections wait in the kernel's listen backlog (as with nginx at `worker_connections`)
//!   and are accepted as open ones close.
//! - Request bodies buffered in memory (small ones kept for a resend, chunked ones read whole
//!   to compute CONTENT_LENGTH) share one budget, `limits.body_buffer_budget`; a body that
//!   would go beyond it is answered 503 and its bytes are freed at once. Without a budget,
//!   20,000 clients each sending 8 MiB chunked bodies ask for 160 GiB.
//! - Requests waiting for one backend's connection are bounded by `limits.max_waiting` (in
//!   the pool, see `pool.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

/// The open-file limit of this process (soft), if it can be read.
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft open-file limit to the hard one (at most 1,048,576), as a server that holds
/// one descriptor per client must; returns the soft limit in force afterwards.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        let want = hard.min(1 << 20);
        if want > soft && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
            return Some(want);
        }
        Some(soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The proxy-wide admission state, shared by every serving thread.
#[derive(Debug)]
pub struct Admission {
    connections: Arc<Semaphore>,
    max_connections: usize,
    /// Times an accept loop found every connection slot taken and paused.
    accept_pauses: AtomicU64,
    /// Most client connections open at once.
    connections_peak: AtomicU64,
    body: Arc<BodyBudget>,
}

impl Admission {
    /// A reload's admission: the connection slots and the body budget go on being counted
    /// where the previous configuration counted them when their limits did not change, so the
    /// connections and bodies of both generations count against one limit.
    pub fn carry_from(&mut self, previous: &Admission) {
        if self.max_connections == previous.max_connections {
            self.connections = Arc::clone(&previous.connections);
        }
        if self.body.limit == previous.body.limit {
            self.body = Arc::clone(&previous.body);
        }
    }

    /// With `nofile` the open-file limit when `limits.max_connections` is 0 (auto).
    pub fn new(limits: &Limits, nofile: u64) -> Self {
        let max_connections = limits
            .client_connections(nofile)
            .min(Semaphore::MAX_PERMITS);
        Admission {
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            accept_pauses: AtomicU64::new(0),
            connections_peak: AtomicU64::new(0),
            body: Arc::new(BodyBudget::new(limits.body_buffer_budget)),
        }
    }

    /// A slot for one more client connection, waiting (the accept loop pauses) while every
    /// slot is taken. The slot is freed when the returned permit is dropped.
    pub async fn connection_slot(&self) -> OwnedSemaphorePermit {
        let slot = self.wait_for_slot().await;
        let open = self.max_connections - self.connections.available_permits();
        self.connections_peak
            .fetch_max(open as u64, Ordering::Relaxed);
        slot
    }

    async fn wait_for_slot(&self) -> OwnedSemaphorePermit {
        match self.connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.accept_pauses.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "{} client connections open (limits.max_connections): accepting paused",
                    self.max_connections
                );
                // The semaphore is never closed.
                loop {
                    if let Ok(p) = self.connections.clone().acquire_owned().await {
                        return p;
                    }
                }
            }
        }
    }

    pub fn body_budget(&self) -> &Arc<BodyBudget> {
        &self.body
    }

    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            connections_open: self.max_connections - self.connections.available_permits(),
            max_connections: self.max_connections,
            accept_pauses: self.accept_pauses.load(Ordering::Relaxed),
            connections_peak: self.connections_peak.load(Ordering::Relaxed) as usize,
            body_bytes: self.body.used.load(Ordering::Relaxed),
            body_bytes_peak: self.body.peak.load(Ordering::Relaxed),
            body_budget: self.body.limit,
            body_refused: self.body.refused.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot for `/metrics` and `/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    pub connections_open: usize,
    pub max_connections: usize,
    pub accept_pauses: u64,
    pub connections_peak: usize,
    pub body_bytes: u64,
    pub body_bytes_peak: u64,
    /// 0: unlimited.
    pub body_budget: u64,
    pub body_refused: u64,
}

/// Bytes of request bodies held in memory, against a budget.
#[derive(Debug)]
pub struct BodyBudget {
    /// 0: unlimited (still counted).
    limit: u64,
    used: AtomicU64,
    peak: AtomicU64,
    refused: AtomicU64,
}

impl BodyBudget {
    pub fn new(limit: u64) -> Self {
        BodyBudget {
            limit,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` more bytes if the budget has room.
    fn take(&self, n: u64) -> bool {
        let limit = if self.limit == 0 {
            u64::MAX
        } else {
            self.limit
        };
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= limit)
            });
        match taken {
            Ok(before) => {
                self.peak.fetch_max(before + n, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One body's share of the budget; given back when dropped.
#[derive(Debug)]
pub struct BodyCharge {
    budget: Arc<BodyBudget>,
    held: u64,
}

impl BodyCharge {
    pub fn new(budget: &Arc<BodyBudget>) -> Self {
        BodyCharge {
            budget: budget.clone(),
            held: 0,
        }
    }

    /// Charges `n` more bytes; false (and nothing charged) when the budget has no room.
    pub fn grow(&mut self, n: usize) -> bool {
        let n = n as u64;
        if n == 0 {
            return true;
        }
        if self.budget.take(n) {
            self.held += n;
            true
        } else {
            false
        }
    }

    pub fn held(&self) -> u64 {
        self.held
    }

    pub fn budget(&self) -> &BodyBudget {
        &self.budget
    }
}

impl Drop for BodyCharge {
    fn drop(&mut self) {
        if self.held > 0 {
            self.budget.give_back(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_budget_and_are_given_back() {
        let b = Arc::new(BodyBudget::new(100));
        let mut one = BodyCharge::new(&b);
        assert!(one.grow(60));
        let mut two = BodyCharge::new(&b);
        assert!(!two.grow(41), "60 + 41 is over 100");
        assert!(two.grow(40));
        assert_eq!(b.used(), 100);
        drop(one);
        assert_eq!(b.used(), 40);
        assert!(two.grow(60));
        assert_eq!(two.held(), 100);
        drop(two);
        assert_eq!(b.used(), 0);
        assert_eq!(b.peak.load(Ordering::Relaxed), 100);
        assert_eq!(b.refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn zero_budget_is_unlimited_but_counted() {
        let b = Arc::new(BodyBudget::new(0));
        let mut c = BodyCharge::new(&b);
        assert!(c.grow(usize::MAX / 2));
        assert_eq!(b.used(), (usize::MAX / 2) as u64);
    }

    #[test]
    fn connection_limit_derived_from_the_open_file_limit() {
        let mut l = Limits::default();
        assert_eq!(l.client_connections(1024), 768, "as Debian's nginx: 768");
        assert_eq!(l.client_connections(65536), 57216);
        assert_eq!(l.client_connections(1 << 20), 65536);
        assert_eq!(l.client_connections(100), 16);
        l.max_connections = 5;
        assert_eq!(l.client_connections(1 << 20), 5);
    }

    #[tokio::test]
    async fn connection_slots_pause_at_the_limit() {
        let l = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let a = Admission::new(&l, 1024);
        let one = a.connection_slot().await;
        let _two = a.connection_slot().await;
        assert_eq!(a.stats().connections_open, 2);
        assert_eq!(a.stats().connections_peak, 2);
        let third =
            tokio::time::timeout(std::time::Duration::from_millis(50), a.connection_slot()).await;
        assert!(third.is_err(), "a third connection waits");
        assert_eq!(a.stats().accept_pauses, 1);
        drop(one);
        let third =
            tokio::time::timeout(std::time::Duration::from_millis(50), a.connection_slot()).await;
        assert!(third.is_ok(), "accepted once one closed");
    }
}
