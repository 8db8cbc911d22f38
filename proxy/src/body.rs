//! The response body the proxy hands to hyper: complete (with an exact length) when the whole
//! backend response arrived with its headers, else streamed from the exchange task.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// A body error aborts the client connection, so a truncated response never looks complete.
#[derive(Debug)]
pub struct BodyError(pub String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

pub type Chunk = Result<Bytes, BodyError>;

#[derive(Debug)]
pub enum ProxyBody {
    Full(Option<Bytes>),
    Stream(BodyStream),
}

/// The receiving end of a streamed body. The stream ends cleanly only if the sender marked it
/// complete (END_REQUEST arrived); a sender that just went away means truncation, which is
/// reported as an error so the client connection is aborted.
#[derive(Debug)]
pub struct BodyStream {
    rx: mpsc::Receiver<Chunk>,
    complete: Arc<AtomicBool>,
}

/// The sending end, held by the exchange task.
#[derive(Debug)]
pub struct BodySender {
    pub tx: mpsc::Sender<Chunk>,
    complete: Arc<AtomicBool>,
}

impl BodySender {
    /// Marks the body complete; dropping the sender then ends the client's body cleanly.
    pub fn complete(self) {
        self.complete.store(true, Ordering::Release);
    }
}

/// A channel for a streamed body holding at most `depth` chunks in flight.
pub fn channel(depth: usize) -> (BodySender, BodyStream) {
    let (tx, rx) = mpsc::channel(depth);
    let complete = Arc::new(AtomicBool::new(false));
    (
        BodySender {
            tx,
            complete: complete.clone(),
        },
        BodyStream { rx, complete },
    )
}

impl ProxyBody {
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ProxyBody::Full(if b.is_empty() { None } else { Some(b) })
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(s) => match s.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if s.complete.load(Ordering::Acquire) => Poll::Ready(None),
                Poll::Ready(None) => Poll::Ready(Some(Err(BodyError(
                    "backend response ended before FCGI_END_REQUEST".into(),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ProxyBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream(_) => SizeHint::default(),
        }
    }
}
