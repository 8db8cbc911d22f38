//! HTTP/2 requests written frame by frame (h2c with prior knowledge, RFC 9113 3.3), for requests
//! no HTTP/2 library would send: header blocks of HPACK literal fields exactly as the scenario
//! gives them (upper-case names, connection-specific fields, pseudo-header fields missing,
//! repeated, unknown or late, CR/LF/NUL in values), bodies that do not match their
//! content-length, uploads reset midway and streams opened and reset in a flood. What comes
//! back is decoded by the `h2` crate's frame codec (HPACK included), so the answer on the
//! request's stream is known: a response, a stream reset, a GOAWAY or a close.
//!
//! Well-formed HTTP/2 requests go through hyper's HTTP/2 client instead ([`super::client`]).

use bytes::Bytes;
use h2::frame::Frame;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

/// The client connection preface (RFC 9113 3.4).
pub use testkit::h2::PREFACE;
use testkit::h2::{
    ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PING, RST_STREAM, SETTINGS,
    WINDOW_UPDATE,
};
/// RST_STREAM error code CANCEL (RFC 9113 7).
const CANCEL: u32 = 0x8;
/// The largest frame payload a peer must accept before its SETTINGS say more (RFC 9113 4.2).
const MAX_FRAME: usize = 16_384;

pub use testkit::h2::{frame, literal_block};

/// HEADERS (with CONTINUATION frames when the block is longer than a frame may be).
fn headers_frames(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let es = if end_stream { END_STREAM } else { 0 };
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let mut out = Vec::new();
    let end = chunks.peek().is_none();
    out.extend(frame(
        HEADERS,
        es | if end { END_HEADERS } else { 0 },
        stream,
        first,
    ));
    while let Some(c) = chunks.next() {
        let end = chunks.peek().is_none();
        out.extend(frame(
            CONTINUATION,
            if end { END_HEADERS } else { 0 },
            stream,
            c,
        ));
    }
    out
}

/// DATA frames carrying `body`, END_STREAM on the last one when `end_stream`.
fn data_frames(stream: u32, body: &[u8], end_stream: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunks = body.chunks(MAX_FRAME).peekable();
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last && end_stream { END_STREAM } else { 0 };
        out.extend(frame(DATA, flags, stream, c));
    }
    out
}

/// What to send on one connection.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The header block of the scenario's request, tag included.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Reset the request's stream after its body instead of ending it.
    pub reset: bool,
    /// Streams opened and reset at once before the request.
    pub rapid_reset: u32,
    /// The header block of the well-formed GET sent after a reset or a flood (its answer is
    /// the result).
    pub follow_up: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// What came back on the stream whose answer counts.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The response ended with END_STREAM.
    pub complete: bool,
    /// The server reset the stream (its error code).
    pub reset: Option<String>,
    /// The server sent GOAWAY (last stream id, error code).
    pub goaway: Option<(u32, String)>,
    /// The server closed the connection.
    pub closed: bool,
    pub timed_out: bool,
    pub error: Option<String>,
}

impl Outcome {
    /// Why there is no complete response, in words.
    pub fn why(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(r) = &self.reset {
            parts.push(format!("stream reset ({r})"));
        }
        if let Some((last, r)) = &self.goaway {
            parts.push(format!("GOAWAY ({r}, last stream {last})"));
        }
        if self.closed {
            parts.push("connection closed".into());
        }
        if let Some(e) = &self.error {
            parts.push(e.clone());
        }
        if self.timed_out {
            parts.push("no complete answer in time".into());
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Sends `plan` on `stream` (the preface and an empty SETTINGS first) and reads until the
/// answer on the stream that counts is complete, that stream or the connection ends, or the
/// deadline passes. SETTINGS and PING frames are acknowledged; received DATA is given back to
/// the flow-control windows at once.
pub async fn exchange<S>(stream: S, plan: &Plan, deadline: Instant) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Outcome::default();
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    let block = literal_block(plan.fields.iter().map(|(n, v)| (&n[..], &v[..])));
    let mut id = 1u32;
    if plan.rapid_reset > 0 {
        let mut flood = plan.fields.clone();
        if let Some(tag) = flood.last_mut() {
            tag.1.extend_from_slice(b".flood");
        }
        let flood = literal_block(flood.iter().map(|(n, v)| (&n[..], &v[..])));
        for _ in 0..plan.rapid_reset {
            bytes.extend(headers_frames(id, &flood, true));
            bytes.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
            id += 2;
        }
    } else {
        let ends = !plan.reset;
        bytes.extend(headers_frames(id, &block, ends && plan.body.is_empty()));
        bytes.extend(data_frames(id, &plan.body, ends));
        if plan.reset {
            bytes.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        if plan.follow_up.is_some() {
            id += 2;
        }
    }
    if let Some(f) = &plan.follow_up {
        let b = literal_block(f.iter().map(|(n, v)| (&n[..], &v[..])));
        bytes.extend(headers_frames(id, &b, true));
    }
    let ours = id;
    let mut codec: h2::Codec<S, Bytes> = h2::Codec::new(stream);
    match timeout_at(deadline, codec.get_mut().write_all(&bytes)).await {
        Err(_) => {
            out.timed_out = true;
            return out;
        }
        // A server may refuse and close before reading everything: read what it answered.
        Ok(Err(e)) => out.error = Some(format!("write: {e}")),
        Ok(Ok(())) => {}
    }
    loop {
        let next = std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut codec), cx)
        });
        let f = match timeout_at(deadline, next).await {
            Err(_) => {
                out.timed_out = true;
                break;
            }
            Ok(None) => {
                out.closed = true;
                break;
            }
            Ok(Some(Err(e))) => {
                out.closed = true;
                out.error = Some(format!("read: {e:?}"));
                break;
            }
            Ok(Some(Ok(f))) => f,
        };
        let mut reply = Vec::new();
        match f {
            Frame::Settings(s) if !s.is_ack() => reply = frame(SETTINGS, ACK, 0, &[]),
            Frame::Ping(p) if !p.is_ack() => reply = frame(PING, ACK, 0, p.payload()),
            Frame::Headers(h) if u32::from(h.stream_id()) == ours => {
                let end = h.is_end_stream();
                let (pseudo, fields) = h.into_parts();
                match (out.status, pseudo.status) {
                    // An interim (1xx) head: the final one follows.
                    (None, Some(s)) if s.is_informational() => {}
                    (None, s) => {
                        out.status = s.map(|s| s.as_u16());
                        out.headers = fields
                            .iter()
                            .map(|(n, v)| {
                                (
                                    n.as_str().to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect();
                    }
                    // Trailers.
                    (Some(_), _) => {}
                }
                if end && out.status.is_some() {
                    out.complete = true;
                    break;
                }
            }
            Frame::Data(d) => {
                let n = d.payload().len() as u32;
                if u32::from(d.stream_id()) == ours {
                    out.body.extend_from_slice(d.payload());
                }
                if n > 0 {
                    reply.extend(frame(WINDOW_UPDATE, 0, 0, &n.to_be_bytes()));
                    if !d.is_end_stream() {
                        let s = u32::from(d.stream_id());
                        reply.extend(frame(WINDOW_UPDATE, 0, s, &n.to_be_bytes()));
                    }
                }
                if u32::from(d.stream_id()) == ours && d.is_end_stream() {
                    out.complete = out.status.is_some();
                    break;
                }
            }
            Frame::Reset(r) if u32::from(r.stream_id()) == ours => {
                out.reset = Some(format!("{:?}", r.reason()));
                break;
            }
            Frame::GoAway(g) => {
                let last = u32::from(g.last_stream_id());
                out.goaway = Some((last, format!("{:?}", g.reason())));
                // Streams above the last one were not and will not be processed.
                if last < ours {
                    break;
                }
            }
            _ => {}
        }
        if !reply.is_empty() {
            let _ = timeout_at(deadline, codec.get_mut().write_all(&reply)).await;
        }
    }
    let _ = timeout_at(deadline, codec.get_mut().shutdown()).await;
    out
}

/// The well-formed GET of `target` sent after a reset or a flood, with the tag.
pub fn follow_up(authority: &str, target: &str, tag: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", target),
        ("x-request-tag", tag),
    ]
    .into_iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_blocks_and_bodies_are_split_into_frames() {
        let big = vec![0u8; MAX_FRAME + 1];
        let f = headers_frames(1, &big, true);
        // HEADERS without END_HEADERS, then a CONTINUATION with it.
        assert_eq!(f[3..5], [HEADERS, END_STREAM]);
        assert_eq!(
            f[9 + MAX_FRAME + 3..9 + MAX_FRAME + 5],
            [CONTINUATION, END_HEADERS]
        );
        let d = data_frames(1, b"abc", false);
        assert_eq!(d[4], 0);
        assert!(data_frames(1, b"", true).is_empty());
    }
}
