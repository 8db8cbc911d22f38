//! One request over one backend connection: BEGIN_REQUEST, PARAMS and STDIN out; STDOUT,
//! STDERR and END_REQUEST in; CGI headers mapped to an HTTP response head; the body streamed.
//!
//! The FastCGI rules (what each record means, which request id, when a connection may carry
//! another request) are `fastcgi::conn::Client`'s; this module adds the IO, the timeouts, the
//! body pumping, noticing that the client went away, and what each failure means for the
//! client and for a retry.
//!
//! The conversation is driven by the request until the response head is known; if the body
//! still streams then, it continues in its own task that owns the connection, so the response
//! can be returned as soon as its headers are parsed while the body keeps flowing. The connection goes
//! back to the pool only after a clean END_REQUEST on a KEEP_CONN request with nothing left
//! unread or unwritten; anything else closes it.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fastcgi::conn::client;
use fastcgi::{Client, ClientEvent, ProtocolStatus, Role};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::body::{self, BodySender, ProxyBody};
use crate::error::{ErrorKind, ProxyError};
use crate::net::{Connector, read_on_stack};
use crate::pool::{Conn, Pool};
use crate::response::{self, ResponseHead};

/// The only request id used: one request per connection at a time, as Apache and nginx do.
pub const REQUEST_ID: u16 = 1;
/// STDERR text logged per request; the rest is counted, not logged, so a flood cannot fill logs.
const STDERR_LOG_MAX: usize = 8192;

/// FCGI_GET_VALUES for the three values of the spec: the same bytes every time, in front of
/// every [`Preamble`].
static ASK_VALUES: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut out = Vec::new();
    fastcgi::encode::get_values(
        &mut out,
        &[fastcgi::MAX_CONNS, fastcgi::MAX_REQS, fastcgi::MPXS_CONNS],
    );
    out
});

/// Response bytes drained after a HEAD before the connection is given up instead.
const HEAD_DRAIN_MAX: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct ExchangeOptions {
    pub keep_conn: bool,
    /// Longest wait for any progress from the backend or the client (`timeout=`).
    pub io_timeout: Duration,
    pub head_only: bool,
    pub max_header_bytes: usize,
    /// The request may not be sent twice (not idempotent): on a reused connection too, ask
    /// FCGI_GET_VALUES ahead of it when the backend answers, so that a connection closed with
    /// nothing back proves no worker read the request and it can be sent again.
    pub prove_delivery: bool,
}

/// The request body as the exchange gets it.
#[derive(Debug)]
pub enum RequestBody {
    /// Complete in memory: can be sent again if a reused connection fails.
    Buffered(BodyBytes),
    /// Read from the client while the backend runs: not replayable.
    Streaming(Incoming),
}

impl RequestBody {
    pub fn replayable(&self) -> Option<BodyBytes> {
        match self {
            RequestBody::Buffered(b) => Some(b.clone()),
            RequestBody::Streaming(_) => None,
        }
    }
}

/// A complete request body kept in the pieces it was read in, so that it is never copied on
/// its way to the backend (each STDIN record's header is written beside its piece). Pieces
/// under [`BodyBytes::KEEP`] bytes are gathered into one, which bounds the number of pieces
/// (and records) a body of tiny chunks can make.
#[derive(Debug, Clone, Default)]
pub struct BodyBytes {
    pieces: Vec<Bytes>,
    /// Small pieces gathered since the last large one.
    tail: BytesMut,
    len: usize,
}

impl BodyBytes {
    /// Pieces at least this long are kept as they are.
    pub const KEEP: usize = 8 * 1024;

    /// Appends a piece.
    pub fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        if piece.len() >= Self::KEEP {
            if !self.tail.is_empty() {
                self.pieces.push(self.tail.split().freeze());
            }
            self.pieces.push(piece);
        } else {
            self.tail.extend_from_slice(&piece);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces in order.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.pieces
            .iter()
            .map(|b| &b[..])
            .chain((!self.tail.is_empty()).then_some(&self.tail[..]))
    }
}

impl From<Bytes> for BodyBytes {
    fn from(b: Bytes) -> BodyBytes {
        let mut body = BodyBytes::default();
        if !b.is_empty() {
            body.len = b.len();
            body.pieces.push(b);
        }
        body
    }
}

/// What the client gets: the mapped head and its body.
#[derive(Debug)]
pub struct Outcome {
    pub head: ResponseHead,
    pub body: ProxyBody,
}

/// A request's first records, encoded once per request (and reused on retry): FCGI_GET_VALUES
/// ([`ASK_VALUES`]), then BEGIN_REQUEST, the PARAMS and the empty PARAMS. The question goes out
/// only when the exchange asks it; otherwise the rest is sent, a slice of the same bytes (no
/// copy either way).
#[derive(Debug, Clone)]
pub struct Preamble(Bytes);

impl Preamble {
    /// BEGIN_REQUEST onwards.
    pub fn request(&self) -> &[u8] {
        &self.0[ASK_VALUES.len()..]
    }

    /// FCGI_GET_VALUES, then the request's records.
    fn asking(&self) -> &[u8] {
        &self.0
    }
}

/// [`Preamble`] with these params.
pub fn encode_preamble<N: AsRef<str>, V: AsRef<[u8]>>(
    params: &[(N, V)],
    keep_conn: bool,
) -> Preamble {
    // The pairs, their length bytes and the records' headers.
    let size = params
        .iter()
        .map(|(n, v)| n.as_ref().len() + v.as_ref().len() + 8)
        .sum::<usize>();
    let written: Result<Preamble, std::convert::Infallible> =
        write_preamble(keep_conn, size, |w| {
            for (n, v) in params {
                w.pair(n.as_ref().as_bytes(), v.as_ref());
            }
            Ok(())
        });
    match written {
        Ok(b) => b,
        Err(never) => match never {},
    }
}

/// [`Preamble`] with the PARAMS records `pairs` writes; `size` is about what the pairs take.
pub fn write_preamble<E>(
    keep_conn: bool,
    size: usize,
    pairs: impl FnOnce(&mut fastcgi::encode::ParamsWriter<'_>) -> Result<(), E>,
) -> Result<Preamble, E> {
    let mut out = Vec::with_capacity(ASK_VALUES.len() + size + 32);
    out.extend_from_slice(&ASK_VALUES);
    client::encode_preamble(&mut out, REQUEST_ID, Role::Responder, keep_conn, pairs)?;
    Ok(Preamble(Bytes::from(out)))
}

/// Runs the exchange on `conn` and returns once the response head is known (or the exchange
/// failed before it). The body, if streamed, keeps flowing from a task that then returns the
/// connection to `pool` or closes it.
pub async fn exchange<C: Connector>(
    pool: &Pool<C>,
    conn: Conn<C::Stream>,
    preamble: Preamble,
    body: RequestBody,
    opts: ExchangeOptions,
    hold: Option<crate::handler::Hold>,
) -> Result<Outcome, ProxyError> {
    let (head_tx, mut head_rx) = oneshot::channel();
    let reused = conn.reused;
    let pool = pool.clone();
    // Driven here until the head is known: a response complete by then (the usual small one)
    // needs no task of its own. If its body still streams, the rest runs in a task; also if
    // this request is dropped first (the client went away), so that the exchange sees nobody
    // waiting and aborts the backend request as it would in its own task.
    let mut drive = Detached(Some(crate::box_in_place!(drive(
        pool, conn, preamble, body, opts, head_tx, hold,
    ))));
    let head = std::future::poll_fn(|cx| {
        if let Some(d) = &mut drive.0 {
            // The exchange runs in this very poll: the head it sends needs no wake-up, and the
            // receiver's waker left from the last poll would schedule this task once more for
            // nothing (a whole extra poll of the connection per request). Checked with a waker
            // that does nothing instead, which also takes a head already there.
            if let Poll::Ready(head) =
                Pin::new(&mut head_rx).poll(&mut Context::from_waker(std::task::Waker::noop()))
            {
                return Poll::Ready(head);
            }
            if d.as_mut().poll(cx).is_ready() {
                drive.0 = None;
            }
        }
        // Ready once the head is sent, or the exchange ended (and dropped the sender).
        Pin::new(&mut head_rx).poll(cx)
    })
    .await;
    drop(drive);
    match head {
        Ok(r) => r,
        Err(_) => Err(ProxyError::new(
            ErrorKind::BackendClosed,
            "exchange ended without a response",
        )
        .on_reused(reused)),
    }
}

/// An exchange driven by the request that started it; if it is still running when dropped,
/// it continues in a task of its own.
struct Detached<F: Future<Output = ()> + Send + 'static>(Option<Pin<Box<F>>>);

impl<F: Future<Output = ()> + Send + 'static> Drop for Detached<F> {
    fn drop(&mut self) {
        if let Some(rest) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(rest);
        }
    }
}

async fn drive<C: Connector>(
    pool: Pool<C>,
    mut conn: Conn<C::Stream>,
    preamble: Preamble,
    body: RequestBody,
    opts: ExchangeOptions,
    head_tx: oneshot::Sender<Result<Outcome, ProxyError>>,
    hold: Option<crate::handler::Hold>,
) {
    let reused = conn.reused;
    let mut head = Some(head_tx);
    let mut answered = false;
    // Released when END_REQUEST arrives, before the client sees the end of the response, so
    // the next request already counts this one as finished (bybusyness); else when the
    // exchange ends.
    let mut hold = hold;
    // Fresh connections always ask (the pool tracks their acceptance); a reused one asks for a
    // request that must not be sent twice, if the backend is known to answer.
    let ask_values = conn.ask_values
        || (conn.reused && opts.prove_delivery && pool.answers_get_values() == Some(true));
    let mut client = Client::new(REQUEST_ID);
    // The preamble was encoded (once for every attempt) by `write_preamble`.
    client.start(opts.keep_conn);
    let id = conn.id();
    let accept = conn.accept_deadline();
    let mut got_a_byte = false;
    let result = converse(
        &mut conn.stream,
        &mut client,
        preamble,
        body,
        opts,
        Watch {
            accept,
            asked_values: ask_values,
        },
        &mut head,
        &mut |signal| match signal {
            Signal::FirstByte => {
                got_a_byte = true;
                pool.accepted(id);
            }
            Signal::Overdue => pool.overdue(id),
            Signal::Capacity(n) => {
                answered = true;
                pool.values_answered(n);
            }
            Signal::Ended => {
                if ask_values && !answered {
                    pool.values_unanswered();
                }
                drop(hold.take());
            }
        },
    )
    .await;
    drop(hold);
    match result {
        Ok(reusable) => {
            if reusable {
                pool.release(conn);
            }
        }
        Err(e) => {
            let mut e = e.on_reused(reused);
            // The connection broke with nothing back after FCGI_GET_VALUES went first, from a
            // backend that answers it as soon as a worker reads: no worker read the request. A
            // timeout proves nothing of the kind (the request may still be read where it
            // waits): only a connection that is gone cannot carry it any more.
            e.undelivered = e.broke_before_response()
                && ask_values
                && !got_a_byte
                && pool.answers_get_values() == Some(true);
            match head.take() {
                Some(tx) => {
                    let _ = tx.send(Err(e));
                }
                None => tracing::warn!(backend = %pool.addr(), "response aborted: {e}"),
            }
        }
    }
}

/// The whole conversation. `Ok(true)`: the connection may carry another request
/// ([`Client::reusable`]: END_REQUEST on a KEEP_CONN request, the request fully written, nothing
/// after END_REQUEST).
#[allow(clippy::too_many_arguments)]
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    client: &mut Client,
    preamble: Preamble,
    body: RequestBody,
    opts: ExchangeOptions,
    watch: Watch,
    head: &mut Option<oneshot::Sender<Result<Outcome, ProxyError>>>,
    signal: &mut (dyn FnMut(Signal) + Send),
) -> Result<bool, ProxyError> {
    let first = if watch.asked_values {
        preamble.asking()
    } else {
        preamble.request()
    };
    match body {
        RequestBody::Buffered(data) => {
            // The request in one gathered write: the body is not copied into records, each
            // record's header is written beside its slice of the body.
            let headers = client.stdin_headers(data.pieces());
            let mut slices = client::gathered(first, data.pieces(), &headers);
            write_all_vectored(stream, &mut slices, opts.io_timeout).await?;
            read_response(stream, client, opts, watch, head, signal).await?;
        }
        RequestBody::Streaming(incoming) => {
            // Boxed: only bodies too large to buffer stream, and inline the two halves would
            // make every exchange's future (moved into a box per request) as large.
            Box::pin(async {
                write_all(stream, first, opts.io_timeout).await?;
                let (mut rd, mut wr) = tokio::io::split(stream);
                let stdin = client.stdin_encoder();
                let (read, written) = {
                    let write = pump_body(&mut wr, incoming, stdin, opts.io_timeout);
                    let read = read_response(&mut rd, client, opts, watch, head, signal);
                    tokio::pin!(write, read);
                    let mut written: Option<bool> = None;
                    loop {
                        tokio::select! {
                            biased;
                            w = &mut write, if written.is_none() => match w {
                                Ok(()) => written = Some(true),
                                // The client's body broke: the backend got a partial request.
                                Err(e) if e.kind == ErrorKind::ClientBody => return Err(e),
                                // The backend stopped reading; it may still answer (e.g. 413).
                                Err(e) => {
                                    tracing::debug!("request body not fully written: {e}");
                                    written = Some(false);
                                }
                            },
                            r = &mut read => break (r, written),
                        }
                    }
                };
                read?;
                // An answer before the body was consumed leaves the connection unusable.
                if written == Some(true) {
                    client.stdin_sent();
                }
                Ok(())
            })
            .await?;
        }
    }
    Ok(client.reusable())
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut slices: &mut [IoSlice<'_>],
    t: Duration,
) -> Result<(), ProxyError> {
    let write = async {
        while !slices.is_empty() {
            let n = w.write_vectored(slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(t, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ProxyError::new(
            ErrorKind::WriteFailed,
            format!("write to backend: {e}"),
        )),
        Err(_) => Err(ProxyError::new(
            ErrorKind::ResponseTimeout,
            "backend did not accept the request in time",
        )),
    }
}

async fn write_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    t: Duration,
) -> Result<(), ProxyError> {
    write_all_vectored(w, &mut [IoSlice::new(data)], t).await
}

async fn pump_body<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut incoming: Incoming,
    stdin: client::StdinEncoder,
    t: Duration,
) -> Result<(), ProxyError> {
    loop {
        let frame = match tokio::time::timeout(t, incoming.frame()).await {
            Err(_) => {
                return Err(ProxyError::new(
                    ErrorKind::ClientBody,
                    "timed out reading the request body",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ProxyError::new(
                    ErrorKind::ClientBody,
                    format!("reading the request body: {e}"),
                ));
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // Each record's header beside its slice of the frame, in one gathered write.
        let records: Vec<_> = stdin.records(&data).collect();
        let mut slices: Vec<IoSlice<'_>> = records
            .iter()
            .flat_map(|(h, c)| [IoSlice::new(h), IoSlice::new(c)])
            .collect();
        write_all_vectored(w, &mut slices, t).await?;
    }
    write_all(w, &stdin.end(), t).await?;
    w.flush()
        .await
        .map_err(|e| ProxyError::new(ErrorKind::WriteFailed, format!("flush: {e}")))
}

/// What the conversation watches for besides the response.
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// A fresh connection: when silence means no worker took it ([`Signal::Overdue`]).
    accept: Option<tokio::time::Instant>,
    /// FCGI_GET_VALUES goes first ([`ASK_VALUES`]): backends answer it as soon as a worker
    /// reads the connection, so the answer proves the request was taken (and may carry
    /// FCGI_MAX_CONNS), at no round trip. Report the first byte back ([`Signal::FirstByte`]).
    asked_values: bool,
}

/// What the conversation tells the task that owns the connection while it runs.
#[derive(Debug, Clone, Copy)]
enum Signal {
    /// The first byte arrived after FCGI_GET_VALUES went first: a worker read the request.
    FirstByte,
    /// Nothing arrived on a fresh connection within the accept grace.
    Overdue,
    /// The backend answered FCGI_GET_VALUES (with FCGI_MAX_CONNS, or without).
    Capacity(Option<usize>),
    /// END_REQUEST arrived.
    Ended,
}

/// Where the response is.
enum Phase {
    /// Collecting CGI headers.
    Head(BytesMut),
    /// Head parsed, not yet handed over: body bytes collect here, so that a response whose
    /// END_REQUEST arrives in the same read is answered complete, with a Content-Length.
    Pending(ResponseHead, Vec<Bytes>),
    /// Head handed over; body chunks stream to the client (`None` for HEAD: drained).
    Streaming(Option<BodySender>, usize),
}

enum Event {
    Nothing,
    /// A GET_VALUES_RESULT, with FCGI_MAX_CONNS if it had one.
    Capacity(Option<usize>),
    Body(Bytes),
    End(ProtocolStatus),
}

struct Progress {
    phase: Phase,
    /// How much of the header bytes in `Phase::Head` was searched for the blank line: the next
    /// search resumes there (a backend writing its head a byte per record costs linear time).
    head_scanned: usize,
    stderr_logged: usize,
}

/// Reads until END_REQUEST (`Ok`) or a failure.
async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    client: &mut Client,
    opts: ExchangeOptions,
    watch: Watch,
    head: &mut Option<oneshot::Sender<Result<Outcome, ProxyError>>>,
    signal: &mut (dyn FnMut(Signal) + Send),
) -> Result<(), ProxyError> {
    let mut accept = watch.accept;
    let mut p = Progress {
        phase: Phase::Head(BytesMut::new()),
        head_scanned: 0,
        stderr_logged: 0,
    };
    // A fresh connection waits for its first byte: `accept` is when silence means the backend
    // had no worker for it, which the pool hears about while the wait goes on.
    let mut awaiting_first = watch.asked_values;
    // No data for `io_timeout` ends the exchange. The deadline moves with every read, but the
    // timer is one for the whole exchange, set again only when it fires before the deadline
    // (registering a timer for each read cost more than the read's own bookkeeping).
    let mut deadline = tokio::time::Instant::now() + opts.io_timeout;
    let silence = tokio::time::sleep_until(deadline);
    tokio::pin!(silence);
    loop {
        let read = tokio::select! {
            biased;
            () = client_gone(head, &p.phase) => {
                // Nobody waits for this response: abort the backend request by closing.
                return Err(started(
                    &p,
                    ProxyError::new(ErrorKind::ClientBody, "client went away; backend request aborted"),
                ));
            }
            r = read_into(r, client) => Some(r),
            () = silence.as_mut() => {
                if silence.deadline() < deadline {
                    silence.as_mut().reset(deadline);
                    continue;
                }
                None
            }
            () = sleep_until_some(accept) => {
                accept = None;
                signal(Signal::Overdue);
                continue;
            }
        };
        deadline = tokio::time::Instant::now() + opts.io_timeout;
        if awaiting_first && matches!(read, Some(Ok(n)) if n > 0) {
            awaiting_first = false;
            accept = None;
            signal(Signal::FirstByte);
        }
        let err = match read {
            Some(Ok(0)) => Some(ProxyError::new(
                ErrorKind::BackendClosed,
                "backend closed the connection before FCGI_END_REQUEST",
            )),
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(ProxyError::new(
                ErrorKind::BackendClosed,
                format!("read from backend: {e}"),
            )),
            None => Some(ProxyError::new(
                ErrorKind::ResponseTimeout,
                format!("no data from backend for {:?}", opts.io_timeout),
            )),
        };
        if let Some(e) = err {
            return Err(started(&p, e));
        }
        loop {
            let event = match client.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => {
                    return Err(started(
                        &p,
                        ProxyError::new(ErrorKind::BadRecord, e.to_string()),
                    ));
                }
            };
            match on_event(event, &mut p, opts).map_err(|e| started(&p, e))? {
                Event::Nothing => {}
                Event::Capacity(n) => signal(Signal::Capacity(n)),
                Event::Body(b) => forward(&mut p, b, opts).await?,
                Event::End(status) => {
                    signal(Signal::Ended);
                    finish(p, head, status)?;
                    return Ok(());
                }
            }
        }
        hand_over_head(&mut p, head, opts).await?;
    }
}

/// Sleeps until `at`, or forever when there is no such time.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Largest read from a backend.
const BACKEND_READ: usize = 16 * 1024;

/// One read from the backend, fed to `client`; the byte count. An exchange holds no read
/// buffer of its own while it waits.
fn read_into<'a, R: AsyncRead + Unpin>(
    r: &'a mut R,
    client: &'a mut Client,
) -> impl Future<Output = std::io::Result<usize>> + 'a {
    read_on_stack::<BACKEND_READ, _, _>(r, move |data| {
        client.feed(data);
        data.len()
    })
}

/// Resolves once nobody waits for the response any more: the handler dropped its end before the
/// head came (the client went away), or hyper dropped the body stream after it. Until then a
/// backend that is slow to answer would hold its connection until `timeout`
/// (docs/reference/security.md R8).
async fn client_gone(
    head: &mut Option<oneshot::Sender<Result<Outcome, ProxyError>>>,
    phase: &Phase,
) {
    match (head, phase) {
        (Some(tx), _) => tx.closed().await,
        (None, Phase::Streaming(Some(body), _)) => body.tx.closed().await,
        _ => std::future::pending().await,
    }
}

fn started(p: &Progress, mut e: ProxyError) -> ProxyError {
    e.response_started = !matches!(&p.phase, Phase::Head(b) if b.is_empty());
    e
}

/// Handles one event of the client machine.
fn on_event(ev: ClientEvent, p: &mut Progress, opts: ExchangeOptions) -> Result<Event, ProxyError> {
    match ev {
        ClientEvent::Stdout(content) => {
            let Phase::Head(hb) = &mut p.phase else {
                return Ok(Event::Body(content));
            };
            hb.extend_from_slice(&content);
            let too_large = || {
                ProxyError::new(
                    ErrorKind::BadResponseHeader,
                    format!("response headers exceed {} bytes", opts.max_header_bytes),
                )
            };
            let found = response::find_header_end_from(hb, p.head_scanned);
            p.head_scanned = hb.len();
            let Some((hlen, body_start)) = found else {
                return if hb.len() > opts.max_header_bytes {
                    Err(too_large())
                } else {
                    Ok(Event::Nothing)
                };
            };
            if hlen > opts.max_header_bytes {
                return Err(too_large());
            }
            // Header values keep pointing into the bytes read (no copy per header).
            let block = hb.split_to(body_start).freeze();
            let head = response::parse_shared(block.slice(..hlen))
                .map_err(|e| ProxyError::new(ErrorKind::BadResponseHeader, e.to_string()))?;
            let rest = hb.split().freeze();
            let chunks = if rest.is_empty() {
                Vec::new()
            } else {
                vec![rest]
            };
            p.phase = Phase::Pending(head, chunks);
            Ok(Event::Nothing)
        }
        // The end of STDOUT closes nothing: END_REQUEST ends the response, and output after
        // the empty record is still output.
        ClientEvent::StdoutEnd => Ok(Event::Nothing),
        ClientEvent::Stderr(content) => {
            log_stderr(p, &content);
            Ok(Event::Nothing)
        }
        // An empty STDERR record is logged as an empty line, as it always was.
        ClientEvent::StderrEnd => {
            log_stderr(p, &[]);
            Ok(Event::Nothing)
        }
        ClientEvent::End {
            protocol_status, ..
        } => Ok(Event::End(protocol_status)),
        ClientEvent::GetValuesResult(values) => Ok(Event::Capacity(
            values
                .iter()
                .find(|(n, _)| n.as_ref() == fastcgi::MAX_CONNS.as_bytes())
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok()),
        )),
        // Other management records (request id 0) carry no part of this response.
        ClientEvent::Ignored(r) if r.request_id() == fastcgi::NULL_REQUEST_ID => {
            tracing::debug!("ignoring management record {}", r.record_type().name());
            Ok(Event::Nothing)
        }
        // Records of unknown type or direction for our request are ignored, as Apache does.
        ClientEvent::Ignored(r) => {
            tracing::debug!("ignoring {} from backend", r.record_type().name());
            Ok(Event::Nothing)
        }
    }
}

/// Logs STDERR text up to [`STDERR_LOG_MAX`] bytes per request.
fn log_stderr(p: &mut Progress, content: &[u8]) {
    if p.stderr_logged < STDERR_LOG_MAX {
        let take = content.len().min(STDERR_LOG_MAX - p.stderr_logged);
        p.stderr_logged += take;
        tracing::warn!(
            target: "fcgi_proxy::stderr",
            "backend stderr: {}",
            String::from_utf8_lossy(&content[..take]).trim_end()
        );
    }
}

/// Sends a body chunk on, or keeps it while the head is still pending.
async fn forward(p: &mut Progress, b: Bytes, opts: ExchangeOptions) -> Result<(), ProxyError> {
    match &mut p.phase {
        Phase::Head(_) => unreachable_phase(),
        Phase::Pending(_, chunks) => {
            chunks.push(b);
            Ok(())
        }
        Phase::Streaming(None, drained) => {
            *drained += b.len();
            if *drained > HEAD_DRAIN_MAX {
                return Err(ProxyError::new(
                    ErrorKind::BackendClosed,
                    "HEAD response body too long to drain; closing",
                ));
            }
            Ok(())
        }
        Phase::Streaming(Some(tx), _) => {
            match tokio::time::timeout(opts.io_timeout, tx.tx.send(Ok(b))).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(ProxyError::new(
                    ErrorKind::ClientBody,
                    "client went away during the response",
                )),
                Err(_) => Err(ProxyError::new(
                    ErrorKind::ClientBody,
                    "client did not read the response in time",
                )),
            }
        }
    }
}

fn unreachable_phase() -> Result<(), ProxyError> {
    // on_event turns STDOUT during Head into header bytes, never into a body event.
    Err(ProxyError::new(ErrorKind::BadRecord, "body before headers"))
}

/// After a read: a parsed head that did not complete with the response is handed over now,
/// with a streaming body.
async fn hand_over_head(
    p: &mut Progress,
    head: &mut Option<oneshot::Sender<Result<Outcome, ProxyError>>>,
    opts: ExchangeOptions,
) -> Result<(), ProxyError> {
    if !matches!(p.phase, Phase::Pending(..)) {
        return Ok(());
    }
    let Phase::Pending(h, chunks) = std::mem::replace(&mut p.phase, Phase::Streaming(None, 0))
    else {
        return Ok(());
    };
    let Some(head_tx) = head.take() else {
        return Ok(());
    };
    if opts.head_only {
        let _ = head_tx.send(Ok(Outcome {
            head: h,
            body: ProxyBody::empty(),
        }));
        return Ok(());
    }
    let (tx, rx) = body::channel(8);
    if head_tx
        .send(Ok(Outcome {
            head: h,
            body: ProxyBody::Stream(rx),
        }))
        .is_err()
    {
        return Err(ProxyError::new(ErrorKind::ClientBody, "client went away"));
    }
    p.phase = Phase::Streaming(Some(tx), 0);
    for c in chunks {
        forward(p, c, opts).await?;
    }
    Ok(())
}

/// END_REQUEST arrived.
fn finish(
    p: Progress,
    head: &mut Option<oneshot::Sender<Result<Outcome, ProxyError>>>,
    status: ProtocolStatus,
) -> Result<(), ProxyError> {
    match p.phase {
        Phase::Head(hb) => Err(if status != ProtocolStatus::RequestComplete {
            ProxyError::new(
                ErrorKind::Refused,
                format!("backend refused the request: {status:?}"),
            )
        } else if hb.is_empty() {
            ProxyError::new(ErrorKind::BadResponseHeader, "backend sent no response")
        } else {
            ProxyError::new(
                ErrorKind::BadResponseHeader,
                "response ended inside the CGI headers",
            )
        }),
        Phase::Pending(h, chunks) => {
            let body = match chunks.len() {
                0 => Bytes::new(),
                1 => chunks.into_iter().next().unwrap_or_default(),
                _ => Bytes::from(chunks.concat()),
            };
            if let Some(tx) = head.take() {
                let _ = tx.send(Ok(Outcome {
                    head: h,
                    body: ProxyBody::full(body),
                }));
            }
            Ok(())
        }
        Phase::Streaming(tx, _) => {
            if let Some(tx) = tx {
                tx.complete();
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastcgi::{Decoder, Record, RecordType};

    /// The whole body in one buffer.
    fn whole(b: &BodyBytes) -> Bytes {
        let mut all = BytesMut::with_capacity(b.len());
        for p in b.pieces() {
            all.extend_from_slice(p);
        }
        all.freeze()
    }

    fn body(pieces: &[usize]) -> BodyBytes {
        let mut b = BodyBytes::default();
        let mut n = 0u8;
        for &len in pieces {
            b.push(Bytes::from(
                (0..len)
                    .map(|_| {
                        n = n.wrapping_add(1);
                        n
                    })
                    .collect::<Vec<u8>>(),
            ));
        }
        b
    }

    proptest::proptest! {
        /// The gathered write carries exactly the records the encoder makes of the whole body.
        #[test]
        fn gathered_request_equals_encoded_records(
            pieces in proptest::collection::vec(0usize..70_000, 0..6)
        ) {
            let data = body(&pieces);
            proptest::prop_assert_eq!(data.len(), pieces.iter().sum::<usize>());
            let whole = whole(&data);
            proptest::prop_assert_eq!(whole.len(), data.len());
            let preamble = b"preamble".to_vec();
            let headers = Client::new(REQUEST_ID).stdin_headers(data.pieces());
            let sent: Vec<u8> = client::gathered(&preamble, data.pieces(), &headers)
                .iter()
                .flat_map(|s| s.to_vec())
                .collect();
            let mut want = preamble.clone();
            fastcgi::encode::stream(
                &mut want,
                RecordType::Stdin,
                REQUEST_ID,
                &whole,
                fastcgi::MAX_CONTENT_LEN,
                fastcgi::Padding::None,
            );
            fastcgi::encode::stream_end(&mut want, RecordType::Stdin, REQUEST_ID);
            // Record boundaries may differ (pieces are not merged); the content may not.
            let mut d = Decoder::default();
            let decode = |bytes: &[u8], d: &mut Decoder| {
                d.feed(bytes);
                let mut stdin = Vec::new();
                let mut ended = false;
                while let Ok(Some(r)) = d.decode() {
                    if let Record::Stream {
                        record_type: RecordType::Stdin,
                        content,
                        ..
                    } = r
                    {
                        if content.is_empty() {
                            ended = true;
                        }
                        stdin.extend_from_slice(&content);
                    }
                }
                (stdin, ended)
            };
            let got = decode(&sent[preamble.len()..], &mut d);
            let mut d2 = Decoder::default();
            let expected = decode(&want[preamble.len()..], &mut d2);
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert!(sent.starts_with(&preamble));
        }
    }

    #[test]
    fn small_pieces_are_gathered() {
        let data = body(&[10, 20, 9000, 5, 5]);
        let pieces: Vec<usize> = data.pieces().map(<[u8]>::len).collect();
        assert_eq!(pieces, vec![30, 9000, 10]);
        assert_eq!(data.len(), 9040);
    }
}
