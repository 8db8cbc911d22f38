//! Raw exchanges: exact bytes written on a connection of their own, and every HTTP/1.x response
//! that comes back parsed from the bytes, for requests no HTTP library would send (smuggling
//! shapes, malformed heads, pipelines). The parser is deliberately small and strict enough to
//! tell a second response from a body: status line, header lines, then Content-Length, chunked
//! or read-until-close framing.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

/// One response parsed from the connection's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended as its framing says (for read-until-close: the connection closed).
    pub complete: bool,
}

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
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let (r, used) = next_response(&buf[at..], eof);
        at += used;
        let Some(r) = r else {
            break;
        };
        let complete = r.complete;
        out.push(r);
        if !complete {
            break;
        }
    }
    (out, buf.len() - at)
}

/// The first final response in `buf`, interim (1xx) ones before it skipped: the response, if
/// its whole head is there, and the bytes used (interim heads, the head, the body as far as it
/// is there).
fn next_response(buf: &[u8], eof: bool) -> (Option<RawResponse>, usize) {
    let mut at = 0;
    loop {
        let Some((status, headers, head_len)) = parse_head(&buf[at..]) else {
            return (None, at);
        };
        at += head_len;
        if (100..200).contains(&status) {
            continue; // an interim response: the final one follows
        }
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.trim().to_string())
        };
        let chunked = header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"));
        let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
        let (body, used, complete) = if status == 204 || status == 304 {
            (Vec::new(), 0, true)
        } else if chunked {
            dechunk(&buf[at..])
        } else if let Some(n) = length {
            let have = n.min(buf.len() - at);
            (buf[at..at + have].to_vec(), have, have == n)
        } else {
            (buf[at..].to_vec(), buf.len() - at, eof)
        };
        let r = RawResponse {
            status,
            headers,
            body,
            complete,
        };
        return (Some(r), at + used);
    }
}

/// A status line and header lines ending in an empty line: (status, headers, bytes used).
fn parse_head(buf: &[u8]) -> Option<(u16, Headers, usize)> {
    let end = find(buf, b"\r\n\r\n").map(|i| i + 4)?;
    let text = String::from_utf8_lossy(&buf[..end - 4]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let headers = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.to_string(), v.trim().to_string()))
        })
        .collect();
    Some((status, headers, end))
}

/// A chunked body: (data, bytes used, whether the last chunk and trailers were all there).
fn dechunk(buf: &[u8]) -> (Vec<u8>, usize, bool) {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            return (data, buf.len(), false);
        };
        let line = String::from_utf8_lossy(&buf[at..at + eol]);
        let size_text = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (data, buf.len(), false);
        };
        at += eol + 2;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let Some(eol) = find(&buf[at..], b"\r\n") else {
                    return (data, buf.len(), false);
                };
                at += eol + 2;
                if eol == 0 {
                    return (data, at, true);
                }
            }
        }
        if buf.len() < at + size + 2 {
            data.extend_from_slice(&buf[at..buf.len().min(at + size)]);
            return (data, buf.len(), false);
        }
        data.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

type Headers = Vec<(String, String)>;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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

    #[test]
    fn pipelined_responses_are_told_apart() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\nbye";
        let (r, rest) = parse_responses(bytes, true);
        assert_eq!(rest, 0);
        let got: Vec<(u16, &[u8], bool)> = r
            .iter()
            .map(|r| (r.status, r.body.as_slice(), r.complete))
            .collect();
        assert_eq!(
            got,
            [
                (200, &b"ok"[..], true),
                (404, &b"abc"[..], true),
                (400, &b"bye"[..], true)
            ]
        );
        // Before the close, the last body may still grow.
        let (r, _) = parse_responses(bytes, false);
        assert!(!r[2].complete);
    }

    #[test]
    fn partial_input_is_incomplete() {
        let (r, rest) = parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", false);
        assert_eq!(r.len(), 1);
        assert!(!r[0].complete);
        assert_eq!(rest, 0);
        let (r, rest) = parse_responses(b"HTTP/1.1 200 OK\r\nContent-Le", false);
        assert!(r.is_empty());
        assert_eq!(rest, 27);
        let (r, _) = parse_responses(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            true,
        );
        assert!(!r[0].complete);
        assert_eq!(r[0].body, b"ab");
    }
}
