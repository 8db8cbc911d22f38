//! HTTP/1.x responses parsed from raw bytes with [`httparse`].
//!
//! - [`parse_head`]: a status line and header lines up to the empty line.
//! - [`Head::framing`]: how the body is delimited (RFC 9112 section 6.3): no body for a response
//!   to HEAD, for 1xx, 204 and 304; chunked when Transfer-Encoding ends in `chunked`;
//!   Content-Length; otherwise the body runs until the connection closes.
//! - [`read_body`]: the body in the bytes after the head, as far as it is there; [`body_end`]:
//!   where it ends, for a client that reads until a response is complete.
//! - [`next_response`], [`parse_responses`], [`parse_response`]: whole responses, interim ones
//!   (1xx but 101) skipped.
//!
//! The parser is lenient where a sender may be sloppy without ambiguity (spaces before a
//! header's colon, obsolete line folding, several spaces in the status line, a header line that
//! is not a valid header is left out) and strict where the framing is decided: a head that is
//! not an HTTP/1.x status line, or a Content-Length that is not one number, is an error.

use httparse::{ParserConfig, Status};

/// Header names and values in the order received (values trimmed, bytes that are not UTF-8
/// replaced).
pub type Headers = Vec<(String, String)>;

/// The first value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    /// Bytes of the head, its empty line (and empty lines before the status line) included.
    pub len: usize,
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a response to HEAD, 1xx, 204, 304).
    Empty,
    /// Content-Length.
    Length(usize),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// Everything until the connection closes.
    UntilClose,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// An interim response (1xx other than 101): the final response follows it.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// How the body is delimited; `head_request`: the request was HEAD. An error for a
    /// Content-Length that is not one number (repeated equal values count as one).
    pub fn framing(&self, head_request: bool) -> Result<Framing, String> {
        if head_request || (100..200).contains(&self.status) || matches!(self.status, 204 | 304) {
            return Ok(Framing::Empty);
        }
        let chunked = self
            .headers
            .iter()
            .rfind(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .and_then(|(_, v)| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        if chunked {
            return Ok(Framing::Chunked);
        }
        let mut length = None;
        for (_, v) in self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            for part in v.split(',') {
                let part = part.trim();
                let n = part
                    .parse::<usize>()
                    .ok()
                    .filter(|_| part.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| format!("bad Content-Length {v:?}"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(format!("conflicting Content-Length values ({v:?})"));
                }
                length = Some(n);
            }
        }
        Ok(length.map_or(Framing::UntilClose, Framing::Length))
    }
}

fn config() -> ParserConfig {
    let mut c = ParserConfig::default();
    c.allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .ignore_invalid_headers_in_responses(true);
    c
}

/// The head at the start of `buf`: `Ok(None)` while it is not all there, an error when the
/// bytes are not an HTTP/1.x response head.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let config = config();
    let mut room = 64;
    loop {
        let mut headers = vec![httparse::EMPTY_HEADER; room];
        let mut r = httparse::Response::new(&mut headers);
        match config.parse_response(&mut r, buf) {
            Ok(Status::Partial) => return Ok(None),
            Ok(Status::Complete(len)) => {
                return Ok(Some(Head {
                    status: r.code.unwrap_or_default(),
                    reason: r.reason.unwrap_or_default().to_owned(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value);
                            (h.name.to_owned(), value.trim().to_owned())
                        })
                        .collect(),
                    len,
                }));
            }
            Err(httparse::Error::TooManyHeaders) if room < 1 << 16 => room *= 4,
            Err(e) => {
                let shown = String::from_utf8_lossy(&buf[..buf.len().min(200)]);
                return Err(format!("not an HTTP/1.x response head ({e}): {shown:?}"));
            }
        }
    }
}

/// A body as far as the bytes go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Body {
    /// The body's data (chunked coding removed).
    pub data: Vec<u8>,
    /// Bytes of the input it took (all of them when it is incomplete).
    pub used: usize,
    /// It ended as its framing says (for [`Framing::UntilClose`]: the connection closed).
    pub complete: bool,
    /// Why the rest cannot be read as this body (a malformed chunk): `data` holds what came
    /// before, and it is not complete.
    pub error: Option<String>,
}

/// The body framed by `framing` at the start of `buf` (the bytes after the head); `eof`: the
/// connection has closed, so nothing more will come.
pub fn read_body(framing: Framing, buf: &[u8], eof: bool) -> Body {
    match framing {
        Framing::Empty => Body {
            complete: true,
            ..Body::default()
        },
        Framing::Length(n) => {
            let have = n.min(buf.len());
            Body {
                data: buf[..have].to_vec(),
                used: have,
                complete: have == n,
                error: None,
            }
        }
        Framing::UntilClose => Body {
            data: buf.to_vec(),
            used: buf.len(),
            complete: eof,
            error: None,
        },
        Framing::Chunked => dechunk(buf),
    }
}

/// Where the body framed by `framing` at the start of `buf` ends, without copying it:
/// `Ok(None)` while it is not all there (for [`Framing::UntilClose`]: until `eof`), an error for a
/// malformed chunk. For a client that reads until a response is complete.
pub fn body_end(framing: Framing, buf: &[u8], eof: bool) -> Result<Option<usize>, String> {
    Ok(match framing {
        Framing::Empty => Some(0),
        Framing::Length(n) => (buf.len() >= n).then_some(n),
        Framing::Chunked => chunked_end(buf)?,
        Framing::UntilClose => eof.then_some(buf.len()),
    })
}

/// Where a complete chunked body at the start of `buf` ends (trailers and the final empty line
/// included), without copying its data; `Ok(None)` while it is not all there.
pub fn chunked_end(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0;
    loop {
        let (line, size) = match chunk_size(&buf[at..])? {
            Some(x) => x,
            None => return Ok(None),
        };
        at += line;
        if size == 0 {
            return Ok(trailers_end(&buf[at..]).map(|n| at + n));
        }
        let Some(end) = at.checked_add(size).and_then(|e| e.checked_add(2)) else {
            return Err(format!("chunk size {size} out of range"));
        };
        if buf.len() < end {
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at = end;
    }
}

/// A chunk size line at the start of `buf`: (its length, the size).
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
        return Err(format!("bad chunk size line {:?}", line_of(buf)));
    }
    match httparse::parse_chunk_size(buf) {
        Ok(Status::Partial) => Ok(None),
        Ok(Status::Complete((len, size))) => usize::try_from(size)
            .map(|size| Some((len, size)))
            .map_err(|_| format!("chunk size {size} out of range")),
        Err(_) => Err(format!("bad chunk size line {:?}", line_of(buf))),
    }
}

fn line_of(buf: &[u8]) -> String {
    let end = find(buf, b"\r\n").unwrap_or(buf.len()).min(80);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Trailer lines up to the empty line: their length with it, if it is there.
fn trailers_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let eol = find(&buf[at..], b"\r\n")?;
        at += eol + 2;
        if eol == 0 {
            return Some(at);
        }
    }
}

fn dechunk(buf: &[u8]) -> Body {
    let mut body = Body::default();
    let mut at = 0;
    let broken = |mut body: Body, error: String| {
        body.used = buf.len();
        body.error = Some(error);
        body
    };
    loop {
        let (line, size) = match chunk_size(&buf[at..]) {
            Ok(Some(x)) => x,
            Ok(None) => {
                body.used = buf.len();
                return body;
            }
            Err(e) => return broken(body, e),
        };
        at += line;
        if size == 0 {
            match trailers_end(&buf[at..]) {
                Some(n) => {
                    body.used = at + n;
                    body.complete = true;
                }
                None => body.used = buf.len(),
            }
            return body;
        }
        let end = at.saturating_add(size);
        if buf.len() < end.saturating_add(2) {
            body.data.extend_from_slice(&buf[at..buf.len().min(end)]);
            if buf.len() > end && buf[end] != b'\r' {
                return broken(body, "chunk data not followed by CRLF".into());
            }
            body.used = buf.len();
            return body;
        }
        body.data.extend_from_slice(&buf[at..end]);
        if &buf[end..end + 2] != b"\r\n" {
            return broken(body, "chunk data not followed by CRLF".into());
        }
        at = end + 2;
    }
}

/// A response: its head and its body as far as the bytes went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// The body ended as its framing says (for read-until-close: the connection closed).
    pub complete: bool,
    /// Why the body could not be read to its end (a malformed chunk).
    pub error: Option<String>,
}

impl Response {
    /// The response of `head` with `body` (read with `framing`).
    pub fn new(head: Head, framing: Framing, body: Body) -> Response {
        Response {
            status: head.status,
            reason: head.reason,
            headers: head.headers,
            body: body.data,
            framing,
            complete: body.complete,
            error: body.error,
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (bytes that are not UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A `Connection: close` (the token in any Connection header).
    pub fn closes(&self) -> bool {
        self.header_all("connection")
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    /// Why the response is not complete, for a connection that closed: what is missing.
    pub fn missing(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        match self.framing {
            Framing::Length(n) => format!(
                "connection closed after {} of {n} body bytes",
                self.body.len()
            ),
            Framing::Chunked => "connection closed inside a chunked body".into(),
            Framing::Empty | Framing::UntilClose => "connection still open".into(),
        }
    }
}

/// The first final response in `buf`, interim ones before it skipped: `Ok(None)` while its head
/// is not all there, else the response (complete or not) and the bytes it took (interim heads,
/// the head, the body as far as it is there). `eof`: the connection has closed; `head_request`:
/// the request was HEAD.
pub fn next_response(
    buf: &[u8],
    eof: bool,
    head_request: bool,
) -> Result<Option<(Response, usize)>, String> {
    let mut at = 0;
    loop {
        let Some(head) = parse_head(&buf[at..])? else {
            return Ok(None);
        };
        at += head.len;
        if head.is_interim() {
            continue;
        }
        let framing = head.framing(head_request)?;
        let body = read_body(framing, &buf[at..], eof);
        at += body.used;
        return Ok(Some((Response::new(head, framing, body), at)));
    }
}

/// The responses in `buf` (pipelined, none of them to HEAD), the last one possibly incomplete,
/// and how many bytes at the end belong to no response: an incomplete head, or bytes that are
/// not one. `eof`: the connection has closed, so a read-until-close body is complete.
pub fn parse_responses(buf: &[u8], eof: bool) -> (Vec<Response>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some((r, used))) = next_response(&buf[at..], eof, false) {
        at += used;
        let complete = r.complete;
        out.push(r);
        if !complete {
            break;
        }
    }
    (out, buf.len() - at)
}

/// The one final response in `buf`, everything a connection delivered before it closed: an
/// error when it is not all there, is not one, or is followed by more bytes.
pub fn parse_response(buf: &[u8]) -> Result<Response, String> {
    match next_response(buf, true, false)? {
        Some((r, used)) if r.complete && used < buf.len() => Err(format!(
            "{} bytes after the response: {:?}",
            buf.len() - used,
            String::from_utf8_lossy(&buf[used..buf.len().min(used + 200)])
        )),
        Some((r, _)) if r.complete => Ok(r),
        Some((r, _)) => Err(r.missing()),
        None => Err(format!(
            "no complete response head in {} bytes: {:?}",
            buf.len(),
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        )),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(r[1].reason, "Not Found");
        assert!(r[2].closes());
        // Before the close, the last body may still grow.
        let (r, _) = parse_responses(bytes, false);
        assert!(!r[2].complete);
    }

    #[test]
    fn partial_input_is_incomplete() {
        let (r, rest) = parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", false);
        assert_eq!(r.len(), 1);
        assert!(!r[0].complete);
        assert_eq!(r[0].missing(), "connection closed after 2 of 5 body bytes");
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
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab").is_err());
    }

    #[test]
    fn garbage_is_not_a_response() {
        let (r, rest) = parse_responses(b"hello\r\n\r\n", true);
        assert!(r.is_empty());
        assert_eq!(rest, 9);
        let (r, rest) = parse_responses(b"HTTP/1.1 204 No Content\r\n\r\nSSH-2.0\r\n\r\n", true);
        assert_eq!(r.len(), 1);
        assert_eq!(rest, 11);
        assert!(parse_response(b"HTTP/2 200\r\n\r\n").is_err());
    }

    #[test]
    fn framing_follows_the_head() {
        let head = |text: &str| parse_head(text.as_bytes()).unwrap().unwrap();
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.framing(false), Ok(Framing::Length(3)));
        assert_eq!(h.framing(true), Ok(Framing::Empty));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n");
        assert!(h.framing(false).is_err());
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n");
        assert!(h.framing(false).is_err());
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\nContent-Length: 9\r\n\r\n",
        );
        assert_eq!(h.framing(false), Ok(Framing::Chunked));
        let h = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(h.framing(false), Ok(Framing::Empty));
        let h = head("HTTP/1.0 200\r\nServer: x\r\n\r\n");
        assert_eq!((h.status, h.reason.as_str()), (200, ""));
        assert_eq!(h.framing(false), Ok(Framing::UntilClose));
    }

    #[test]
    fn lenient_where_unambiguous() {
        let r = parse_response(
            b"HTTP/1.1  200  OK\r\nX-A : 1\r\nX-Folded: a\r\n b\r\nBad\x01Name: z\r\nContent-Length: 2\r\n\r\nhi",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-a"), Some("1"));
        assert!(
            r.header("x-folded")
                .is_some_and(|v| v.starts_with('a') && v.ends_with('b'))
        );
        assert_eq!(r.body, b"hi");
        let many: String = (0..300).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let r = parse_response(
            format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(r.headers.len(), 301);
    }

    #[test]
    fn chunked_bodies() {
        let body = b"4;ext=1\r\nRust\r\n0\r\nX-Trailer: t\r\n\r\nnext";
        assert_eq!(chunked_end(body), Ok(Some(body.len() - 4)));
        assert_eq!(chunked_end(&body[..10]), Ok(None));
        let b = read_body(Framing::Chunked, body, false);
        assert_eq!(
            (b.data.as_slice(), b.used, b.complete),
            (&b"Rust"[..], body.len() - 4, true)
        );
        assert!(chunked_end(b"zz\r\n").is_err());
        assert!(chunked_end(b"\r\n").is_err());
        assert!(chunked_end(b"2\r\nabX\r\n").is_err());
        let b = read_body(Framing::Chunked, b"2\r\nab\r\nzz\r\n", true);
        assert_eq!(b.data, b"ab");
        assert!(!b.complete);
        assert!(b.error.is_some());
    }
}
