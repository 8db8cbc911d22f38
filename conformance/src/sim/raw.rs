//! Raw exchanges: exact bytes written on a connection of their own, and every HTTP/1.x response
//! that comes back parsed from the bytes, for requests no HTTP library would send (smuggling
//! shapes, malformed heads, pipelines). The parser ([`testkit::http1`]) is strict enough to tell
//! a second response from a body: status line, header lines, then Content-Length, chunked or
//! read-until-close framing.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

/// One response parsed from the connection's bytes; `complete`: the body ended as its framing
/// says (for read-until-close: the connection closed).
pub type RawResponse = testkit::http1::Response;

/// What a raw exchange saw.
#[derive(Debug, Clone, Default)]
pub struct RawOutcome {
    pub responses: Vec<RawResponse>,
    /// The proxy closed (or reset) the connection.
    pub closed: bool,
    /// The deadline passed with no complete response.
    pub timed_out: bool,
    /// Bytes after the last response that do not parse as one.
    pub garbage: usize,
    pub error: Option<String>,
}

/// `raw` with the tag header inserted after the first line (nothing is inserted when there is
/// no line end at all).
pub fn with_tag(raw: &[u8], header: &str, tag: &str) -> Vec<u8> {
    match raw.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let mut out = raw[..=i].to_vec();
            out.extend_from_slice(format!("{header}: {tag}\r\n").as_bytes());
            out.extend_from_slice(&raw[i + 1..]);
            out
        }
        None => raw.to_vec(),
    }
}

/// How the bytes of a raw exchange are sent.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    /// Shut down the sending side afterwards.
    pub half_close: bool,
    /// One byte at a time with this pause after each (a slowloris client), reading whatever
    /// the proxy answers meanwhile.
    pub trickle: Option<Duration>,
}

/// Writes `bytes`, optionally shuts down the sending side, then reads until the peer closes,
/// the deadline passes, or nothing more arrives for `quiet` after a complete response.
pub async fn talk<S>(
    mut stream: S,
    bytes: &[u8],
    sending: Sending,
    quiet: Duration,
    deadline: Instant,
) -> RawOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = RawOutcome::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    match sending.trickle {
        None => match timeout_at(deadline, stream.write_all(bytes)).await {
            Err(_) => {
                out.timed_out = true;
                return out;
            }
            // A proxy may refuse and close before reading everything: read what it answered.
            Ok(Err(e)) => out.error = Some(format!("write: {e}")),
            Ok(Ok(())) => {}
        },
        Some(pause) => {
            for b in bytes {
                if Instant::now() >= deadline {
                    out.timed_out = true;
                    return out;
                }
                if let Err(e) = stream.write_all(std::slice::from_ref(b)).await {
                    out.error = Some(format!("write: {e}"));
                    break;
                }
                // Whatever the proxy says meanwhile; a close ends the trickle.
                match timeout(pause, stream.read(&mut chunk)).await {
                    Err(_) => {}
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        out.closed = true;
                        break;
                    }
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }
    if sending.half_close && !out.closed {
        let _ = timeout_at(deadline, stream.shutdown()).await;
    }
    // Responses are parsed once complete; only the bytes after them are looked at again.
    let mut responses = Vec::new();
    // The bytes of `buf` those responses (and interim heads after them) took.
    let mut done = 0;
    while !out.closed {
        loop {
            let (r, used) = next_response(&buf[done..], false);
            if r.as_ref().is_some_and(|r| !r.complete) {
                break; // parsed again after the next read
            }
            done += used;
            let Some(r) = r else {
                break;
            };
            responses.push(r);
        }
        let settled = !responses.is_empty() && done == buf.len();
        let read = if settled {
            match timeout(quiet, stream.read(&mut chunk)).await {
                Err(_) => break,
                Ok(r) => r,
            }
        } else {
            match timeout_at(deadline, stream.read(&mut chunk)).await {
                Err(_) => {
                    out.timed_out = true;
                    break;
                }
                Ok(r) => r,
            }
        };
        match read {
            Ok(0) => {
                out.closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                out.closed = true;
                if out.error.is_none() {
                    out.error = Some(format!("read: {e}"));
                }
                break;
            }
        }
    }
    let (rest, garbage) = parse_responses(&buf[done..], out.closed);
    responses.extend(rest);
    out.responses = responses;
    out.garbage = garbage;
    if out.responses.iter().any(|r| r.complete) {
        out.timed_out = false;
    }
    out
}

/// Parses the responses in `buf`. Returns them and how many bytes at the end belong to no
/// complete head. `eof`: the connection has closed, so a read-until-close body is complete.
pub fn parse_responses(buf: &[u8], eof: bool) -> (Vec<RawResponse>, usize) {
    testkit::http1::parse_responses(buf, eof)
}

/// The first final response in `buf`, interim (1xx) ones before it skipped: the response, if
/// its whole head is there, and the bytes used (interim heads, the head, the body as far as it
/// is there). Bytes that are not a response head are none.
fn next_response(buf: &[u8], eof: bool) -> (Option<RawResponse>, usize) {
    match testkit::http1::next_response(buf, eof, false) {
        Ok(Some((r, used))) => (Some(r), used),
        Ok(None) | Err(_) => (None, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_goes_after_the_request_line() {
        assert_eq!(
            with_tag(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "X-T", "a"),
            b"GET / HTTP/1.1\r\nX-T: a\r\nHost: x\r\n\r\n"
        );
        assert_eq!(with_tag(b"junk", "X-T", "a"), b"junk");
    }
}
