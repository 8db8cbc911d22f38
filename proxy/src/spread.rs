//! Spreading a listener's client connections over the serving threads by how many each holds.
//!
//! Every serving thread accepts on its own `SO_REUSEPORT` socket, and the kernel picks the socket
//! by a hash of the connection's addresses, not by load: four connections landed all on one of
//! two threads in 2 of 12 starts measured, and that thread then served them all while the other
//! idled (p99 up to twice as long). So a thread that accepts a connection while it holds more
//! than another serving thread of the same listener passes it to the one holding fewest, through
//! that thread's inbox. The hand-off happens once per connection, never per request; a
//! connection stays on the thread that serves it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::net::{Acceptor, ConnInfo};

/// A connection one thread accepted for another.
type Handed = (std::net::TcpStream, ConnInfo);

/// The serving threads of one listener: how many connections each holds, whether each is
/// waiting for one (its accept loop has a connection slot, see `Admission::connection_slot`),
/// and each one's inbox.
#[derive(Debug)]
struct Group {
    // Each behind its own Arc: a connection's guard is then one pointer (see `Held`).
    held: Box<[Arc<AtomicUsize>]>,
    accepting: Box<[AtomicBool]>,
    inboxes: Box<[mpsc::UnboundedSender<Handed>]>,
}

/// Where a new connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Here,
    There(usize),
}

impl Group {
    /// Counts a new connection accepted by thread `me` on the thread that is to serve it: `me`,
    /// unless another holds fewer by more than a sixteenth of what `me` holds (so that with
    /// thousands of connections not every one moves over a difference of one). Ties stay. A
    /// thread not accepting (at `limits.max_connections` it waits for a slot) is passed over:
    /// a connection handed to it would wait while this thread went on accepting others.
    fn place(&self, me: usize) -> Place {
        let mine = self.held[me].load(Ordering::Relaxed);
        let mut least = (me, mine);
        for (t, h) in self.held.iter().enumerate() {
            let h = h.load(Ordering::Relaxed);
            if h < least.1 && self.accepting[t].load(Ordering::Relaxed) {
                least = (t, h);
            }
        }
        let (t, fewest) = least;
        if t != me && mine - fewest > mine / 16 {
            self.held[t].fetch_add(1, Ordering::Relaxed);
            Place::There(t)
        } else {
            self.held[me].fetch_add(1, Ordering::Relaxed);
            Place::Here
        }
    }
}

/// One serving thread's share of a listener, before it is on that thread's runtime.
#[derive(Debug)]
pub struct Share {
    socket: std::net::TcpListener,
    me: usize,
    group: Arc<Group>,
    inbox: mpsc::UnboundedReceiver<Handed>,
}

impl Share {
    /// This share as an acceptor on the calling thread's runtime.
    pub fn into_listener(self) -> io::Result<Listener> {
        Ok(Listener {
            socket: tokio::net::TcpListener::from_std(self.socket)?,
            me: self.me,
            group: self.group,
            inbox: Mutex::new(self.inbox),
        })
    }
}

/// Groups the sockets the serving threads listen on for one address (the `i`th is thread `i`'s).
pub fn share(sockets: Vec<std::net::TcpListener>) -> Vec<Share> {
    let (inboxes, receivers): (Vec<_>, Vec<_>) =
        sockets.iter().map(|_| mpsc::unbounded_channel()).unzip();
    let group = Arc::new(Group {
        held: sockets.iter().map(|_| Arc::default()).collect(),
        accepting: sockets.iter().map(|_| AtomicBool::new(false)).collect(),
        inboxes: inboxes.into(),
    });
    sockets
        .into_iter()
        .zip(receivers)
        .enumerate()
        .map(|(me, (socket, inbox))| Share {
            socket,
            me,
            group: group.clone(),
            inbox,
        })
        .collect()
}

/// A serving thread's acceptor for a shared listener: connections from its own socket it keeps
/// or passes on, and connections other threads passed to it.
#[derive(Debug)]
pub struct Listener {
    socket: tokio::net::TcpListener,
    me: usize,
    group: Arc<Group>,
    // Only ever locked inside one poll, never across an await.
    inbox: Mutex<mpsc::UnboundedReceiver<Handed>>,
}

impl Listener {
    fn poll_inbox(&self, cx: &mut Context<'_>) -> Poll<Option<Handed>> {
        match self.inbox.lock() {
            Ok(mut inbox) => inbox.poll_recv(cx),
            Err(_) => Poll::Pending,
        }
    }

    /// Gives back a count taken for a connection that will not be served after all.
    fn release(&self, thread: usize) {
        self.group.held[thread].fetch_sub(1, Ordering::Relaxed);
    }

    fn counted(&self, stream: tokio::net::TcpStream) -> Stream {
        Stream {
            inner: stream,
            _held: Held(self.group.held[self.me].clone()),
        }
    }
}

impl Acceptor for Listener {
    type Stream = Stream;

    async fn accept(&self) -> io::Result<(Stream, ConnInfo)> {
        let _accepting = Accepting::new(&self.group.accepting[self.me]);
        loop {
            let accepted = tokio::select! {
                biased;
                Some((s, info)) = std::future::poll_fn(|cx| self.poll_inbox(cx)) => {
                    // Counted by the thread that passed it.
                    let s = tokio::net::TcpStream::from_std(s)
                        .inspect_err(|_| self.release(self.me))?;
                    return Ok((self.counted(s), info));
                }
                a = self.socket.accept() => a,
            };
            let (s, peer) = accepted?;
            let info = ConnInfo {
                peer,
                local: s.local_addr()?,
            };
            s.set_nodelay(true)?;
            match self.group.place(self.me) {
                Place::Here => return Ok((self.counted(s), info)),
                Place::There(t) => {
                    let sent = match s.into_std() {
                        Ok(s) => self.group.inboxes[t].send((s, info)).is_ok(),
                        Err(_) => false,
                    };
                    if !sent {
                        // That thread's listener is gone (stopping): the connection closes.
                        self.release(t);
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// A thread's accept in progress: it takes connections handed to it.
struct Accepting<'a>(&'a AtomicBool);

impl<'a> Accepting<'a> {
    fn new(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Relaxed);
        Accepting(flag)
    }
}

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// A connection's place in its thread's count, given back when the connection closes. One
/// pointer: it is part of every connection, ten thousand idle ones included.
#[derive(Debug)]
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An accepted client connection, counted on the thread serving it while it is open.
#[derive(Debug)]
pub struct Stream {
    inner: tokio::net::TcpStream,
    _held: Held,
}

crate::net::forward_async_read!(Stream, inner);
crate::net::forward_async_write!(Stream, inner);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    fn group(held: &[usize]) -> Group {
        Group {
            held: held
                .iter()
                .map(|&h| Arc::new(AtomicUsize::new(h)))
                .collect(),
            accepting: held.iter().map(|_| AtomicBool::new(true)).collect(),
            inboxes: held.iter().map(|_| mpsc::unbounded_channel().0).collect(),
        }
    }

    fn held(g: &Group) -> Vec<usize> {
        g.held.iter().map(|h| h.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn a_connection_goes_to_the_thread_holding_fewest() {
        let g = group(&[1, 0]);
        assert_eq!(g.place(0), Place::There(1));
        assert_eq!(held(&g), [1, 1]);
        // Ties stay where they were accepted.
        assert_eq!(g.place(0), Place::Here);
        assert_eq!(held(&g), [2, 1]);
        // Of several with fewer, the one with fewest (the first of equals).
        let g = group(&[3, 2, 1, 1]);
        assert_eq!(g.place(0), Place::There(2));
        // A thread holding fewest keeps what it accepts.
        let g = group(&[5, 0]);
        assert_eq!(g.place(1), Place::Here);
    }

    #[test]
    fn a_thread_waiting_for_a_connection_slot_is_passed_over() {
        let g = group(&[3, 0, 1]);
        g.accepting[1].store(false, Ordering::Relaxed);
        assert_eq!(g.place(0), Place::There(2));
        g.accepting[2].store(false, Ordering::Relaxed);
        assert_eq!(g.place(0), Place::Here);
        assert_eq!(held(&g), [4, 0, 2]);
    }

    #[test]
    fn with_many_connections_small_differences_do_not_move_one() {
        assert_eq!(group(&[1000, 940]).place(0), Place::Here);
        assert_eq!(group(&[1000, 930]).place(0), Place::There(1));
        assert_eq!(group(&[16, 15]).place(0), Place::Here);
        assert_eq!(group(&[15, 14]).place(0), Place::There(1));
    }

    /// A serving thread: its own current-thread runtime accepting on its share, reporting each
    /// connection it serves, which it holds until the client closes.
    fn serving_thread(
        share: Share,
        served: std::sync::mpsc::Sender<usize>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let me = share.me;
                let l = share.into_listener().unwrap();
                loop {
                    let (mut s, _) = tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => break,
                        a = l.accept() => a.unwrap(),
                    };
                    served.send(me).unwrap();
                    tokio::spawn(async move {
                        let mut b = [0u8; 1];
                        let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await;
                    });
                }
            })
        })
    }

    /// Waits up to 5 s for `done`.
    fn wait_until(done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn bound() -> std::net::TcpListener {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        l
    }

    /// All four connections arrive on thread 0's socket, as when the kernel hashes them all to
    /// one of two `SO_REUSEPORT` sockets: each thread serves two.
    #[test]
    fn connections_the_kernel_gives_one_thread_are_served_by_both() {
        let (first, second) = (bound(), bound());
        let addr = first.local_addr().unwrap();
        let shares = share(vec![first, second]);
        let group = shares[0].group.clone();
        let (served_tx, served) = std::sync::mpsc::channel();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let threads: Vec<_> = shares
            .into_iter()
            .map(|s| serving_thread(s, served_tx.clone(), stop.clone()))
            .collect();
        let mut clients = Vec::new();
        let mut by = Vec::new();
        let accepting = |g: &Group| g.accepting.iter().all(|a| a.load(Ordering::Relaxed));
        for _ in 0..4 {
            // Both threads back in their accept loops, as under load.
            wait_until(|| accepting(&group));
            clients.push(std::net::TcpStream::connect(addr).unwrap());
            by.push(served.recv_timeout(Duration::from_secs(5)).unwrap());
        }
        assert_eq!(by, [0, 1, 0, 1]);
        assert_eq!(held(&group), [2, 2]);
        // Closed connections are no longer counted.
        drop(clients);
        wait_until(|| held(&group) == [0, 0]);
        assert_eq!(held(&group), [0, 0]);
        stop_tx.send(true).unwrap();
        for t in threads {
            t.join().unwrap();
        }
    }
}
