//! CGI response headers (RFC 3875 section 6) to an HTTP response head.
//!
//! Rules (docs/reference/apache.md §4.2, with the deviations the project chose):
//! - the header block ends at the first empty line; lines end in LF with an optional CR;
//! - `Status: NNN reason` sets the status and keeps the reason phrase;
//! - `Location` without `Status` is a 302 (RFC 3875 6.2.3 client redirect; Apache sends 200);
//! - `Content-Length` and `Transfer-Encoding` from the backend are never trusted (the proxy
//!   frames the body itself, CVE-2024-24795), nor are hop-by-hop headers passed on;
//! - a line without `:`, a folded line, or a name or value HTTP cannot carry is a bad response.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// Reason phrase from `Status:`, when it differs from the canonical one.
    pub reason: Option<String>,
    pub headers: HeaderMap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    TooLarge { limit: usize },
    NoColon { line: String },
    Folded,
    BadName { name: String },
    BadValue { name: String },
    BadStatus { value: String },
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TooLarge { limit } => {
                write!(f, "response headers exceed {limit} bytes")
            }
            HeaderError::NoColon { line } => write!(f, "malformed header line {line:?}"),
            HeaderError::Folded => write!(f, "folded (obs-fold) header line"),
            HeaderError::BadName { name } => write!(f, "invalid header name {name:?}"),
            HeaderError::BadValue { name } => write!(f, "invalid value for header {name:?}"),
            HeaderError::BadStatus { value } => write!(f, "invalid Status {value:?}"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Where the header block ends: `Some((header_len, body_start))` where `buf[..header_len]` is
/// the header lines (without the blank line) and the body starts at `body_start`.
pub fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    find_header_end_from(buf, 0)
}

/// [`find_header_end`] for a buffer whose first `searched` bytes were searched before without
/// a result: only what the blank line could still end in is looked at again.
pub fn find_header_end_from(buf: &[u8], searched: usize) -> Option<(usize, usize)> {
    // An empty first line means no headers at all.
    if buf.starts_with(b"\n") {
        return Some((0, 1));
    }
    if buf.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    // A line end in the last two bytes searched may be followed by the rest of the blank line.
    let mut i = searched.saturating_sub(2).min(buf.len());
    while let Some(off) = memchr(b'\n', &buf[i..]) {
        let nl = i + off;
        let next = nl + 1;
        if buf.get(next) == Some(&b'\n') {
            return Some((nl + 1, next + 1));
        }
        if buf.get(next) == Some(&b'\r') && buf.get(next + 1) == Some(&b'\n') {
            return Some((nl + 1, next + 2));
        }
        i = next;
    }
    None
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// Headers that describe the backend hop or the body framing, not the response (any case:
/// checked before a name is made a `HeaderName`, which each of these would be).
fn is_dropped(name: &[u8]) -> bool {
    const DROPPED: [&[u8]; 8] = [
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"upgrade",
        b"trailer",
        b"te",
    ];
    DROPPED.iter().any(|d| d.eq_ignore_ascii_case(name))
}

/// Parses the header block (as delimited by [`find_header_end`]).
pub fn parse(block: &[u8]) -> Result<ResponseHead, HeaderError> {
    parse_shared(bytes::Bytes::copy_from_slice(block))
}

/// [`parse`] of a block already in shared bytes: header values are slices of it, not copies.
pub fn parse_shared(block: bytes::Bytes) -> Result<ResponseHead, HeaderError> {
    let mut status: Option<(StatusCode, Option<String>)> = None;
    let mut location = false;
    let mut headers = HeaderMap::new();
    for raw in memchr::memchr_iter(b'\n', &block)
        .chain(std::iter::once(block.len()))
        .scan(0, |start, end| {
            let line = &block[*start..end];
            *start = end + 1;
            Some(line)
        })
    {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(HeaderError::Folded);
        }
        let Some(colon) = memchr(b':', line) else {
            return Err(HeaderError::NoColon {
                line: String::from_utf8_lossy(line).into_owned(),
            });
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"status") {
            status = Some(parse_status(value)?);
            continue;
        }
        if is_dropped(name) {
            continue;
        }
        let hname = HeaderName::from_bytes(name).map_err(|_| HeaderError::BadName {
            name: String::from_utf8_lossy(name).into_owned(),
        })?;
        location |= hname == http::header::LOCATION;
        let hvalue = HeaderValue::from_maybe_shared(block.slice_ref(value)).map_err(|_| {
            HeaderError::BadValue {
                name: hname.as_str().to_string(),
            }
        })?;
        headers.append(hname, hvalue);
    }
    let (status, reason) = match status {
        Some(s) => s,
        None if location => (StatusCode::FOUND, None),
        None => (StatusCode::OK, None),
    };
    Ok(ResponseHead {
        status,
        reason,
        headers,
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &v[start..end]
}

fn parse_status(value: &[u8]) -> Result<(StatusCode, Option<String>), HeaderError> {
    let bad = || HeaderError::BadStatus {
        value: String::from_utf8_lossy(value).into_owned(),
    };
    if value.len() < 3 || !value[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if value.len() > 3 && value[3] != b' ' {
        return Err(bad());
    }
    let code = StatusCode::from_bytes(&value[..3]).map_err(|_| bad())?;
    // A final response only: 1xx from a CGI script cannot be relayed as the response.
    if code.is_informational() {
        return Err(bad());
    }
    let reason = trim(value.get(4..).unwrap_or(&[]));
    let reason = if reason.is_empty() || Some(reason) == code.canonical_reason().map(str::as_bytes)
    {
        None
    } else {
        // Reason phrases are visible text; anything else is a bad response.
        if !reason
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
        {
            return Err(bad());
        }
        Some(String::from_utf8_lossy(reason).into_owned())
    };
    Ok((code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<ResponseHead, HeaderError> {
        let (h, _) = find_header_end(s.as_bytes()).expect("terminated");
        parse(&s.as_bytes()[..h])
    }

    #[test]
    fn finds_end_with_lf_and_crlf() {
        assert_eq!(find_header_end(b"A: b\r\n\r\nbody"), Some((6, 8)));
        assert_eq!(find_header_end(b"A: b\n\nbody"), Some((5, 6)));
        assert_eq!(find_header_end(b"\r\nbody"), Some((0, 2)));
        assert_eq!(find_header_end(b"A: b\r\nC: d\r\n"), None);
    }

    proptest::proptest! {
        /// Searching again from where the last search of a shorter prefix stopped finds what a
        /// search from the start finds, wherever the bytes were cut.
        #[test]
        fn resumed_search_finds_what_a_full_search_finds(
            head in proptest::collection::vec(proptest::sample::select(b"ab:\r\n ".to_vec()), 0..40),
            cuts in proptest::collection::vec(0usize..40, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(head.len())).collect();
            cuts.sort_unstable();
            cuts.push(head.len());
            let mut searched = 0;
            let mut found = None;
            for c in cuts {
                found = find_header_end_from(&head[..c], searched);
                if found.is_some() {
                    proptest::prop_assert_eq!(found, find_header_end(&head[..c]));
                    break;
                }
                proptest::prop_assert_eq!(find_header_end(&head[..c]), None);
                searched = c;
            }
            if found.is_none() {
                proptest::prop_assert_eq!(find_header_end(&head), None);
            }
        }
    }

    #[test]
    fn resumed_search_looks_back_for_a_split_blank_line() {
        assert_eq!(find_header_end_from(b"A: b\r\n\r\n", 7), Some((6, 8)));
        assert_eq!(find_header_end_from(b"A: b\n\n", 5), Some((5, 6)));
        assert_eq!(find_header_end_from(b"\r\n", 1), Some((0, 2)));
    }

    #[test]
    fn status_with_custom_reason() {
        let h = head("Status: 404 Nothing Here\r\nContent-Type: text/plain\r\n\r\n").unwrap();
        assert_eq!(h.status, StatusCode::NOT_FOUND);
        assert_eq!(h.reason.as_deref(), Some("Nothing Here"));
        assert_eq!(h.headers["content-type"], "text/plain");
    }

    #[test]
    fn location_without_status_is_302() {
        let h = head("Location: /elsewhere\n\n").unwrap();
        assert_eq!(h.status, StatusCode::FOUND);
        let h = head("Status: 301\nLocation: /elsewhere\n\n").unwrap();
        assert_eq!(h.status, StatusCode::MOVED_PERMANENTLY);
    }

    #[test]
    fn framing_headers_are_dropped() {
        let h = head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n").unwrap();
        assert!(!h.headers.contains_key("content-length"));
        assert!(!h.headers.contains_key("transfer-encoding"));
        assert_eq!(h.headers["x-a"], "1");
    }

    #[test]
    fn repeated_headers_are_kept() {
        let h = head("Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n").unwrap();
        let v: Vec<_> = h.headers.get_all("set-cookie").iter().collect();
        assert_eq!(v, ["a=1", "b=2"]);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(matches!(
            head("NoColonHere\r\n\r\n"),
            Err(HeaderError::NoColon { .. })
        ));
        assert_eq!(head("A: b\r\n c\r\n\r\n"), Err(HeaderError::Folded));
        assert!(matches!(
            head("Bad Name: x\r\n\r\n"),
            Err(HeaderError::BadName { .. })
        ));
        assert!(matches!(
            head("Status: abc\r\n\r\n"),
            Err(HeaderError::BadStatus { .. })
        ));
        assert!(matches!(
            head("Status: 100 Continue\r\n\r\n"),
            Err(HeaderError::BadStatus { .. })
        ));
        // A bare CR inside a value must not reach the client as a header.
        assert!(matches!(
            head("X-A: a\rInjected: 1\r\n\r\n"),
            Err(HeaderError::BadValue { .. })
        ));
    }
}
