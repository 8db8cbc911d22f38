//! The pool used from several serving threads, each with its own current-thread runtime (as
//! `fcgi-proxy` runs): one cap over all threads, idle connections kept per thread and moved to
//! the thread that needs one. The backend is a plain TCP listener that accepts and stays silent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fcgi_proxy::error::ErrorKind;
use fcgi_proxy::net::{BackendAddr, TokioConnector};
use fcgi_proxy::pool::{Pool, PoolSettings, set_thread_slot};

/// A backend that accepts connections and keeps them open; the count of accepted connections.
fn silent_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            let Ok(s) = s else { break };
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (addr, accepted)
}

fn pool(addr: SocketAddr, max: usize, acquire: Duration) -> Pool<TokioConnector> {
    Pool::per_thread(
        TokioConnector,
        BackendAddr::Tcp(addr.to_string()),
        PoolSettings {
            max: Some(max),
            default_max: 25,
            ttl: None,
            acquire: Some(acquire),
            connect_timeout: Duration::from_secs(2),
            reuse: true,
            max_waiting: 0,
        },
        2,
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Two runtimes on this thread stand for two serving threads: `set_thread_slot` says which one
/// is running.
struct TwoThreads([tokio::runtime::Runtime; 2]);

impl TwoThreads {
    fn new() -> TwoThreads {
        TwoThreads([runtime(), runtime()])
    }

    /// Runs `f` as serving thread `slot`.
    fn on<F: std::future::Future>(&self, slot: usize, f: F) -> F::Output {
        set_thread_slot(slot);
        self.0[slot].block_on(f)
    }
}

#[test]
fn an_idle_connection_of_another_thread_is_reused_not_a_new_one_opened() {
    let (addr, accepted) = silent_backend();
    let p = pool(addr, 1, Duration::from_millis(200));
    let threads = TwoThreads::new();
    threads.on(0, async {
        let c = p.checkout(Duration::from_secs(1)).await.expect("opens");
        assert!(!c.reused);
        p.release(c);
    });
    threads.on(1, async {
        let c = p.checkout(Duration::from_secs(1)).await.expect("reuses");
        assert!(c.reused, "thread 0's idle connection is moved over");
        p.release(c);
    });
    let s = p.stats();
    assert_eq!((s.opened, s.reused, s.idle, s.open), (1, 1, 1, 1));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn the_cap_counts_the_connections_of_every_thread() {
    let (addr, _) = silent_backend();
    let p = pool(addr, 2, Duration::from_millis(200));
    let threads = TwoThreads::new();
    let (a, b) = threads.on(0, async {
        let a = p.checkout(Duration::from_secs(1)).await.expect("first");
        let b = p.checkout(Duration::from_secs(1)).await.expect("second");
        (a, b)
    });
    let e = threads
        .on(1, p.checkout(Duration::from_secs(1)))
        .expect_err("the cap is reached on thread 0");
    assert_eq!(e.kind, ErrorKind::AcquireTimeout);
    threads.on(0, async { p.release(a) });
    let c = threads
        .on(1, p.checkout(Duration::from_secs(1)))
        .expect("the released one");
    assert!(c.reused);
    let s = p.stats();
    assert_eq!((s.opened, s.open, s.acquire_timeouts), (2, 2, 1));
    drop((b, c));
    assert_eq!(p.stats().open, 0);
}

/// Real threads checking out and releasing concurrently never open more than `max`.
#[test]
fn concurrent_threads_never_exceed_the_cap() {
    const MAX: usize = 3;
    let (addr, accepted) = silent_backend();
    let p = Arc::new(pool(addr, MAX, Duration::from_secs(10)));
    // Every runtime lives until all are done, as in the proxy: a connection registered with a
    // runtime that is gone cannot be moved.
    let done = Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|slot| {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                set_thread_slot(slot);
                let rt = runtime();
                rt.block_on(async {
                    let tasks: Vec<_> = (0..4)
                        .map(|_| {
                            let p = p.clone();
                            tokio::spawn(async move {
                                for _ in 0..50 {
                                    let c = p
                                        .checkout(Duration::from_secs(5))
                                        .await
                                        .expect("a slot frees up");
                                    assert!(p.stats().open <= MAX);
                                    tokio::task::yield_now().await;
                                    p.release(c);
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("task");
                    }
                });
                done.wait();
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let s = p.stats();
    assert!(s.opened as usize <= MAX, "{s:?}");
    assert!(accepted.load(Ordering::SeqCst) <= MAX);
    assert_eq!(s.opened + s.reused, 400);
}

/// How the connection a checkout holds is given up while another checkout waits at the cap.
#[derive(Clone, Copy, PartialEq)]
enum GiveUp {
    /// Released: the connection goes idle, for reuse.
    Release,
    /// Closed (dropped): its slot is free, no connection is.
    Close,
}

/// A pool at its cap of one: a checkout waits, the connection is given up, then another
/// checkout comes before the waiting one has run again. The late one must not get what was
/// freed; the waiting one does. Returns whether the waiting checkout's connection was reused.
fn freed_goes_to_the_waiting_checkout(give_up: GiveUp) -> bool {
    let (addr, accepted) = silent_backend();
    let p = Arc::new(pool(addr, 1, Duration::from_secs(1)));
    let rt = runtime();
    set_thread_slot(0);
    let reused = rt.block_on(async {
        let held = p.checkout(Duration::from_secs(1)).await.expect("first");
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.checkout(Duration::from_secs(1)).await }
        });
        while p.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        match give_up {
            GiveUp::Release => p.release(held),
            GiveUp::Close => drop(held),
        }
        // Comes after the connection was given up, before the waiting checkout ran again.
        let late = tokio::time::timeout(
            Duration::from_millis(200),
            p.checkout(Duration::from_secs(1)),
        )
        .await;
        assert!(
            late.is_err(),
            "the checkout that came last took what was freed for the one waiting ({})",
            if give_up == GiveUp::Release {
                "a released connection"
            } else {
                "a slot"
            }
        );
        let got = waiter.await.expect("join").expect("the waiting checkout");
        assert_eq!(p.stats().open, 1, "the cap holds");
        got.reused
    });
    assert!(accepted.load(Ordering::SeqCst) <= 2);
    reused
}

/// Waiting is first come, first served: a connection released while a checkout waits goes to
/// that checkout, not to one that comes just after the release (which would leave the one that
/// waited to wait again, and under a saturated backend some requests to wait far longer than
/// the rest).
#[test]
fn a_released_connection_goes_to_the_checkout_that_waited_not_to_one_that_just_came() {
    assert!(
        freed_goes_to_the_waiting_checkout(GiveUp::Release),
        "the waiting checkout got the released connection"
    );
}

/// The same for a slot: a connection closed while a checkout waits at the cap frees a slot,
/// and that slot goes to the checkout that waited, not to one that comes just after.
#[test]
fn a_freed_slot_goes_to_the_checkout_that_waited_not_to_one_that_just_came() {
    assert!(
        !freed_goes_to_the_waiting_checkout(GiveUp::Close),
        "the waiting checkout opened a new connection"
    );
}
