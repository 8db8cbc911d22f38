//! Request-target parsing, %-decoding and normalisation with the semantics of Apache httpd 2.4
//! (`ap_parse_uri`, `ap_normalize_path`, `ap_unescape_url_ex`), plus the URL helpers the CGI
//! layer needs (`ap_proxy_canonenc_ex`, `ap_unescape_url_keep2f`, Host header parsing).
//!
//! Apache order of operations, mirrored here:
//! 1. the raw request target is split into path and raw query (`#` → 400);
//! 2. the still-encoded path is normalised: `%XX` of *unreserved* characters decoded, dot segments
//!    removed (`..` above the root → 400), runs of `/` merged (`MergeSlashes On`); a bad `%`
//!    escape → 400;
//! 3. the result is %-decoded; with `AllowEncodedSlashes Off` (default) a `%2F` → 404.
//!
//! Deliberate safety deviation: a decoded NUL, CR or LF anywhere in the path → 400 (Apache answers
//! 404 for NUL and passes CR/LF through to SCRIPT_NAME/PATH_INFO).

use core::fmt;

/// What to do with an encoded slash (`%2F`) in the path: Apache's `AllowEncodedSlashes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodedSlashes {
    /// `AllowEncodedSlashes Off` (default): `%2F` answers 404.
    #[default]
    Off,
    /// `AllowEncodedSlashes On`: `%2F` is decoded to `/`. Unlike Apache, the decoded path is
    /// normalised again (a `..` produced by decoding cannot climb; above the root → 400).
    On,
    /// `AllowEncodedSlashes NoDecode`: `%2F` stays encoded in the decoded path.
    #[serde(rename = "nodecode")]
    NoDecode,
}

/// Options for [`parse_target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriOptions {
    /// Longest accepted request target in bytes (Apache `LimitRequestLine` bounds the whole
    /// request line; 414 when exceeded).
    pub max_len: usize,
    /// `AllowEncodedSlashes`.
    pub encoded_slashes: EncodedSlashes,
    /// `MergeSlashes` (default on).
    pub merge_slashes: bool,
}

impl Default for UriOptions {
    fn default() -> Self {
        UriOptions {
            max_len: 8190,
            encoded_slashes: EncodedSlashes::Off,
            merge_slashes: true,
        }
    }
}

/// The shape of the request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`
    Origin,
    /// `http://authority/path?query`. `authority` is as received (userinfo removed).
    Absolute { scheme: String, authority: String },
    /// `*` (OPTIONS).
    Asterisk,
}

/// A parsed request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestUri {
    /// The request target exactly as received: `REQUEST_URI`.
    pub raw: String,
    /// Origin-form, absolute-form or `*`.
    pub form: TargetForm,
    /// Apache's `r->uri`: normalised and %-decoded. Bytes, because a decoded path need not be
    /// UTF-8. `*` for the asterisk form.
    pub path: Vec<u8>,
    /// Where in `raw` the query string starts (after the first `?`), if there is one.
    query_at: Option<usize>,
}

impl RequestUri {
    /// The raw query string after the first `?` (never decoded): `QUERY_STRING`. `None` when
    /// the target has no `?`.
    pub fn query(&self) -> Option<&str> {
        self.query_at.map(|i| &self.raw[i..])
    }

    /// The decoded path as text (lossy for non-UTF-8 bytes), for logs and messages.
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// A request target that must be refused, with the HTTP status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriError {
    /// 400, 404 or 414.
    pub status: u16,
    /// Human readable reason (for the log, not for the client).
    pub reason: &'static str,
}

impl UriError {
    const fn new(status: u16, reason: &'static str) -> Self {
        UriError { status, reason }
    }
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.status)
    }
}

impl std::error::Error for UriError {}

/// Parse a request target (origin-form, absolute-form or `*`) the way Apache builds `r->uri`,
/// `r->args` and `r->unparsed_uri`.
pub fn parse_target(target: &str, opts: &UriOptions) -> Result<RequestUri, UriError> {
    if target.len() > opts.max_len {
        return Err(UriError::new(414, "request target too long"));
    }
    if target.is_empty() {
        return Err(UriError::new(400, "empty request target"));
    }
    if target.bytes().any(|b| b <= 0x20 || b == 0x7f || b == b'#') {
        // Whitespace and control characters are invalid in the request line; a fragment is
        // never sent by a conforming client (Apache answers 400 to both).
        return Err(UriError::new(
            400,
            "invalid character in request target (control, space or '#')",
        ));
    }
    if target == "*" {
        return Ok(RequestUri {
            raw: target.to_owned(),
            form: TargetForm::Asterisk,
            path: b"*".to_vec(),
            query_at: None,
        });
    }
    let (form, rest) = if target.starts_with('/') {
        (TargetForm::Origin, target)
    } else {
        split_absolute(target)?
    };
    // `rest` ends `target`: the query's place in it is found from the end.
    let (raw_path, query_at) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(target.len() - rest.len() + i + 1)),
        None => (rest, None),
    };
    let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
    let path = decode_and_normalize(raw_path, opts)?;
    Ok(RequestUri {
        raw: target.to_owned(),
        form,
        path,
        query_at,
    })
}

fn split_absolute(target: &str) -> Result<(TargetForm, &str), UriError> {
    let bad = || {
        UriError::new(
            400,
            "request target is neither origin-form nor absolute-form",
        )
    };
    let colon = target.find("://").ok_or_else(bad)?;
    let scheme = &target[..colon];
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(bad());
    }
    let after = &target[colon + 3..];
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let mut authority = &after[..end];
    if let Some(at) = authority.rfind('@') {
        authority = &authority[at + 1..];
    }
    if authority.is_empty() {
        return Err(UriError::new(
            400,
            "absolute-form request target has no host",
        ));
    }
    parse_host(authority.as_bytes())?;
    Ok((
        TargetForm::Absolute {
            scheme: scheme.to_owned(),
            authority: authority.to_owned(),
        },
        &after[end..],
    ))
}

/// Normalise then decode an encoded path (steps 2 and 3 of the module doc).
pub fn decode_and_normalize(raw_path: &str, opts: &UriOptions) -> Result<Vec<u8>, UriError> {
    let normalized = normalize_path(raw_path.as_bytes(), opts.merge_slashes)?;
    // Without a '%' there is nothing to decode (most paths): no second copy.
    let decoded = if normalized.contains(&b'%') {
        unescape_path(&normalized, opts.encoded_slashes)?
    } else {
        normalized
    };
    if decoded.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(UriError::new(400, "decoded path contains NUL, CR or LF"));
    }
    if opts.encoded_slashes == EncodedSlashes::On {
        // Decoding may have produced new separators or dot segments; normalise once more, on
        // the decoded bytes (no further decoding).
        return renormalize_decoded(&decoded, opts.merge_slashes);
    }
    Ok(decoded)
}

fn renormalize_decoded(decoded: &[u8], merge_slashes: bool) -> Result<Vec<u8>, UriError> {
    // Protect '%' so that normalize_path does not decode anything a second time.
    let mut protected = Vec::with_capacity(decoded.len());
    for &b in decoded {
        if b == b'%' {
            protected.extend_from_slice(b"%25");
        } else {
            protected.push(b);
        }
    }
    let normalized = normalize_path_inner(&protected, merge_slashes, false)?;
    let mut out = Vec::with_capacity(normalized.len());
    let mut i = 0;
    while i < normalized.len() {
        if normalized[i..].starts_with(b"%25") {
            out.push(b'%');
            i += 3;
        } else {
            out.push(normalized[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex2(a: u8, b: u8) -> Option<u8> {
    Some(hexval(a)? * 16 + hexval(b)?)
}

/// Port of `ap_normalize_path(path, AP_NORMALIZE_NOT_ABOVE_ROOT | AP_NORMALIZE_DECODE_UNRESERVED
/// [| AP_NORMALIZE_MERGE_SLASHES])`: works on the *encoded* path. Errors: not starting with `/`,
/// an invalid `%` escape, or `..` above the root (all 400).
pub fn normalize_path(path: &[u8], merge_slashes: bool) -> Result<Vec<u8>, UriError> {
    normalize_path_inner(path, merge_slashes, true)
}

fn normalize_path_inner(
    path: &[u8],
    merge_slashes: bool,
    decode_unreserved: bool,
) -> Result<Vec<u8>, UriError> {
    if path.first() != Some(&b'/') {
        return Err(UriError::new(400, "path does not start with '/'"));
    }
    let mut p = path.to_vec();
    let at = |p: &Vec<u8>, i: usize| -> u8 { p.get(i).copied().unwrap_or(0) };
    let slash_or_nul = |c: u8| c == b'/' || c == 0;
    let mut bad_escape = false;
    let mut above_root = false;
    let (mut l, mut w) = (1usize, 1usize);
    while l < p.len() {
        if decode_unreserved && p[l] == b'%' {
            match hex2(at(&p, l + 1), at(&p, l + 2)) {
                Some(c) => {
                    if is_unreserved(c) {
                        l += 2;
                        p[l] = c;
                    }
                }
                None => bad_escape = true,
            }
        }
        if w == 0 || p[w - 1] == b'/' {
            if merge_slashes && p[l] == b'/' {
                while l < p.len() && p[l] == b'/' {
                    l += 1;
                }
                continue;
            }
            if p[l] == b'.' {
                if slash_or_nul(at(&p, l + 1)) {
                    l += 1;
                    if l < p.len() {
                        l += 1;
                    }
                    continue;
                }
                let mut n = l + 1;
                let second_dot = if at(&p, n) == b'.' {
                    true
                } else if decode_unreserved && at(&p, n) == b'%' {
                    n += 1;
                    if at(&p, n) == b'2' {
                        n += 1;
                        at(&p, n) == b'e' || at(&p, n) == b'E'
                    } else {
                        false
                    }
                } else {
                    false
                };
                if second_dot && slash_or_nul(at(&p, n + 1)) {
                    if w > 1 {
                        loop {
                            w -= 1;
                            if w == 0 || p[w - 1] == b'/' {
                                break;
                            }
                        }
                    } else {
                        above_root = true;
                    }
                    l = n + 1;
                    if l < p.len() {
                        l += 1;
                    }
                    continue;
                }
            }
        }
        p[w] = p[l];
        w += 1;
        l += 1;
    }
    p.truncate(w);
    if bad_escape {
        return Err(UriError::new(400, "invalid %-escape in path"));
    }
    if above_root {
        return Err(UriError::new(400, "path climbs above the root"));
    }
    Ok(p)
}

/// Port of `ap_unescape_url_ex` as used on `r->uri`: decodes every `%XX`. With
/// [`EncodedSlashes::Off`] a `%2F` gives 404; with [`EncodedSlashes::NoDecode`] it is kept
/// encoded. A bad escape gives 400.
pub fn unescape_path(path: &[u8], slashes: EncodedSlashes) -> Result<Vec<u8>, UriError> {
    let mut out = Vec::with_capacity(path.len());
    let mut bad_escape = false;
    let mut encoded_slash = false;
    let mut i = 0;
    while i < path.len() {
        let c = path[i];
        if c != b'%' {
            out.push(c);
            i += 1;
            continue;
        }
        match (path.get(i + 1), path.get(i + 2)) {
            (Some(&a), Some(&b)) if hex2(a, b).is_some() => {
                let d = hex2(a, b).unwrap_or(0);
                if d == b'/' {
                    match slashes {
                        EncodedSlashes::Off => {
                            encoded_slash = true;
                            out.push(d);
                        }
                        EncodedSlashes::On => out.push(d),
                        EncodedSlashes::NoDecode => out.extend_from_slice(&path[i..i + 3]),
                    }
                } else {
                    out.push(d);
                }
                i += 3;
            }
            _ => {
                bad_escape = true;
                out.push(b'%');
                i += 1;
            }
        }
    }
    if bad_escape {
        return Err(UriError::new(400, "invalid %-escape in path"));
    }
    if encoded_slash {
        return Err(UriError::new(
            404,
            "encoded slash in path (AllowEncodedSlashes Off)",
        ));
    }
    Ok(out)
}

/// Port of `ap_unescape_url_keep2f(s, 0)`: decode every valid `%XX` except `%2F`; invalid
/// escapes are copied through (the Apache callers ignore the error).
pub fn unescape_keep2f(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(&a), Some(&b)) = (s.get(i + 1), s.get(i + 2))
            && let Some(d) = hex2(a, b)
        {
            if d == b'/' {
                out.extend_from_slice(&s[i..i + 3]);
            } else {
                out.push(d);
            }
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

const CANON_ALLOWED: &[u8] = b"~$-_.+!*'(),;:@&=";

/// Whether [`canon_encode`] keeps `c` as it is (besides `/`).
pub fn canon_keeps(c: u8) -> bool {
    c.is_ascii_alphanumeric() || CANON_ALLOWED.contains(&c)
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// Port of `ap_proxy_canonenc_ex(p, x, len, enc_path, flags, PROXYREQ_REVERSE)`: `/`,
/// alphanumerics and ``~$-_.+!*'(),;:@&=`` are kept, every other byte (including `%`) becomes
/// `%XX` with uppercase hex. With `keep_encoded_slashes` (`AllowEncodedSlashes NoDecode`), an
/// existing `%2F` is kept as is and any other `%` must start a valid escape (else `None`, which
/// Apache answers with 400).
pub fn canon_encode(x: &[u8], keep_encoded_slashes: bool) -> Option<String> {
    let mut out = String::with_capacity(x.len() + x.len() / 2);
    let mut i = 0;
    while i < x.len() {
        let c = x[i];
        if c == b'/' {
            out.push('/');
            i += 1;
            continue;
        }
        if keep_encoded_slashes && c == b'%' {
            let d = hex2(*x.get(i + 1)?, *x.get(i + 2)?)?;
            if d == b'/' {
                out.push('%');
                out.push(x[i + 1] as char);
                out.push(x[i + 2] as char);
                i += 3;
                continue;
            }
        }
        if canon_keeps(c) {
            out.push(c as char);
        } else {
            push_hex(&mut out, c);
        }
        i += 1;
    }
    Some(out)
}

/// %-encode a decoded path so that [`decode_and_normalize`] gives it back: `/` and unreserved
/// characters are kept, everything else is `%XX`. (A path whose segments are `.`/`..` or empty
/// is of course normalised on the way back.)
pub fn encode_path(x: &[u8]) -> String {
    let mut out = String::with_capacity(x.len());
    for &c in x {
        if c == b'/' || is_unreserved(c) {
            out.push(c as char);
        } else {
            push_hex(&mut out, c);
        }
    }
    out
}

/// Port of `ap_escape_uri` (`ap_os_escape_path(p, path, 1)`): used to build the PATH_TRANSLATED
/// sub-request URI. Kept for completeness.
pub fn escape_uri(x: &[u8]) -> String {
    let mut out = String::with_capacity(x.len());
    for &c in x {
        if c.is_ascii_alphanumeric() || b"$-_.+!*'(),:@&=/~".contains(&c) {
            out.push(c as char);
        } else {
            push_hex(&mut out, c);
        }
    }
    out
}

/// `ap_escape_html`: `&`, `<`, `>` and `"` become entities (SERVER_NAME is HTML-escaped).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// A parsed `Host` header (or absolute-form authority).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Lower-cased host without a trailing dot; IPv6 literals keep their brackets.
    pub host: String,
    /// The port, when one was given.
    pub port: Option<u16>,
}

impl HostPort {
    /// `host[:port]` as Apache rebuilds a Host header (`construct_host_header`).
    pub fn to_header_value(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host, p),
            None => self.host.clone(),
        }
    }
}

/// Parse a Host header value like Apache 2.4 (`fix_hostname`, `HttpProtocolOptions Strict`;
/// checked against 2.4.71): letters, digits, `-`, `.` and `_` only, no `..`, a trailing dot
/// removed, lower-cased; `[v6]` literals; an optional port of 1..65535 (an empty port or 0 is
/// refused). Anything else → 400.
pub fn parse_host(value: &[u8]) -> Result<HostPort, UriError> {
    let bad = || UriError::new(400, "invalid Host");
    let v = trim_spaces_and_tabs(value);
    if v.is_empty() {
        return Err(bad());
    }
    if v[0] == b'[' {
        let s = core::str::from_utf8(&v[1..]).map_err(|_| bad())?;
        let end = s.find(']').ok_or_else(bad)?;
        let lit = &s[..end];
        if lit.is_empty()
            || !lit
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad());
        }
        let after = &s[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p.as_bytes()).ok_or_else(bad)?),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        return Ok(HostPort {
            host: format!("[{}]", lit.to_ascii_lowercase()),
            port,
        });
    }
    // A name or an IPv4 address: letters, digits, '-', '_' and single dots, one pass (this
    // runs for every request).
    let (h, port) = match v.iter().rposition(|&b| b == b':') {
        Some(i) => (&v[..i], Some(parse_port(&v[i + 1..]).ok_or_else(bad)?)),
        None => (v, None),
    };
    if h.is_empty() {
        return Err(bad());
    }
    let mut last_dot = false;
    for &b in h {
        match b {
            b'.' if last_dot => return Err(bad()),
            b'.' => last_dot = true,
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => last_dot = false,
            _ => return Err(bad()),
        }
    }
    let h = if h.len() > 1 && last_dot {
        &h[..h.len() - 1]
    } else {
        h
    };
    // ASCII only, checked above.
    let host = String::from_utf8(h.to_ascii_lowercase()).map_err(|_| bad())?;
    Ok(HostPort { host, port })
}

/// `v` without the spaces and tabs around it (how a Host value is read; not CR or LF).
fn trim_spaces_and_tabs(v: &[u8]) -> &[u8] {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ws(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// A port: decimal digits (leading zeros allowed), 1 to 65535.
fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() {
        return None;
    }
    let mut n: u32 = 0;
    for &b in p {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
        if n > u32::from(u16::MAX) {
            return None;
        }
    }
    u16::try_from(n).ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Result<RequestUri, UriError> {
        parse_target(t, &UriOptions::default())
    }

    fn path(t: &str) -> Vec<u8> {
        p(t).unwrap().path
    }

    #[test]
    fn origin_form_splits_raw_query() {
        let u = p("/myapp/foo.php/extra/path?x=1&y=%20").unwrap();
        assert_eq!(u.raw, "/myapp/foo.php/extra/path?x=1&y=%20");
        assert_eq!(u.path, b"/myapp/foo.php/extra/path");
        assert_eq!(u.query(), Some("x=1&y=%20"));
        assert_eq!(u.form, TargetForm::Origin);
    }

    #[test]
    fn query_absent_vs_empty() {
        assert_eq!(p("/a").unwrap().query(), None);
        assert_eq!(p("/a?").unwrap().query(), Some(""));
    }

    #[test]
    fn decodes_space_and_keeps_percent_literal() {
        assert_eq!(path("/myapp/a%20b"), b"/myapp/a b");
        assert_eq!(path("/myapp/%25"), b"/myapp/%");
        assert_eq!(path("/foo%252fbar.php"), b"/foo%2fbar.php");
        assert_eq!(path("/myapp/%c3%a9"), b"/myapp/\xc3\xa9");
        assert_eq!(path("/myapp/%7e%41"), b"/myapp/~A");
    }

    #[test]
    fn dot_segments_and_slashes_like_apache() {
        // Observed on Apache 2.4.71.
        assert_eq!(path("/myapp/../myapp/./index.php/%2e%2e/x"), b"/myapp/x");
        assert_eq!(path("/myapp/%2e%2e/x"), b"/x");
        assert_eq!(path("//myapp//x"), b"/myapp/x");
        assert_eq!(path("/myapp/x/."), b"/myapp/x/");
        assert_eq!(path("/myapp/x/.."), b"/myapp/");
        assert_eq!(path("/a/b/../../c.php"), b"/c.php");
        assert_eq!(path("/a/.%2E/x"), b"/x");
        assert_eq!(path("/a/%2E./x"), b"/x");
        assert_eq!(path("/a/%2e%2E/x"), b"/x");
        assert_eq!(path("/a/.../x"), b"/a/.../x");
        assert_eq!(path("/a/%252e%252e/x"), b"/a/%2e%2e/x");
    }

    #[test]
    fn above_root_is_400() {
        assert_eq!(p("/../x").unwrap_err().status, 400);
        assert_eq!(p("/myapp/../../x").unwrap_err().status, 400);
        assert_eq!(p("/%2e%2e/%2e%2e/etc/passwd").unwrap_err().status, 400);
        assert_eq!(p("/.%2e/.%2e/etc/passwd.php").unwrap_err().status, 400);
    }

    #[test]
    fn encoded_slash_is_404_by_default() {
        assert_eq!(p("/myapp/%2F").unwrap_err().status, 404);
        assert_eq!(p("/myapp/a%2fb").unwrap_err().status, 404);
        assert_eq!(p("/..%2f..%2fetc/passwd").unwrap_err().status, 404);
    }

    #[test]
    fn encoded_slash_modes() {
        let on = UriOptions {
            encoded_slashes: EncodedSlashes::On,
            ..UriOptions::default()
        };
        assert_eq!(parse_target("/a%2Fb", &on).unwrap().path, b"/a/b");
        assert_eq!(
            parse_target("/a/..%2F..%2Fetc", &on).unwrap_err().status,
            400
        );
        assert_eq!(parse_target("/a/b%2F..%2Fc", &on).unwrap().path, b"/a/c");
        let nd = UriOptions {
            encoded_slashes: EncodedSlashes::NoDecode,
            ..UriOptions::default()
        };
        assert_eq!(parse_target("/a%2fb%20c", &nd).unwrap().path, b"/a%2fb c");
    }

    #[test]
    fn bad_escapes_are_400() {
        assert_eq!(p("/myapp/%zz").unwrap_err().status, 400);
        assert_eq!(p("/myapp/%").unwrap_err().status, 400);
        assert_eq!(p("/myapp/%4").unwrap_err().status, 400);
    }

    #[test]
    fn nul_cr_lf_are_400() {
        assert_eq!(p("/myapp/%00").unwrap_err().status, 400);
        assert_eq!(p("/index.php%00.txt/x").unwrap_err().status, 400);
        assert_eq!(p("/myapp/%0a").unwrap_err().status, 400);
        assert_eq!(p("/myapp/%0D").unwrap_err().status, 400);
        assert_eq!(p("/a.php/PHP%0Ais_the.php?").unwrap_err().status, 400);
    }

    #[test]
    fn raw_control_space_fragment_are_400() {
        assert_eq!(p("/a b").unwrap_err().status, 400);
        assert_eq!(p("/a\tb").unwrap_err().status, 400);
        assert_eq!(p("/myapp/a#frag").unwrap_err().status, 400);
        assert_eq!(p("myapp/rel").unwrap_err().status, 400);
        assert_eq!(p("").unwrap_err().status, 400);
    }

    #[test]
    fn too_long_is_414() {
        let opts = UriOptions {
            max_len: 10,
            ..UriOptions::default()
        };
        assert_eq!(parse_target("/0123456789", &opts).unwrap_err().status, 414);
        assert!(parse_target("/012345678", &opts).is_ok());
    }

    #[test]
    fn absolute_form() {
        let u = p("http://Other.Host:99/myapp/abs?q").unwrap();
        assert_eq!(u.raw, "http://Other.Host:99/myapp/abs?q");
        assert_eq!(u.path, b"/myapp/abs");
        assert_eq!(u.query(), Some("q"));
        assert_eq!(
            u.form,
            TargetForm::Absolute {
                scheme: "http".into(),
                authority: "Other.Host:99".into()
            }
        );
        assert_eq!(p("HTTP://h").unwrap().path, b"/");
        assert_eq!(p("http://h?x").unwrap().query(), Some("x"));
        assert_eq!(p("http:///x.php").unwrap_err().status, 400);
        assert_eq!(p("http://@/").unwrap_err().status, 400);
        assert_eq!(p("ftp://h/x").unwrap_err().status, 400);
        assert_eq!(p("//x").unwrap().path, b"/x");
    }

    #[test]
    fn asterisk() {
        let u = p("*").unwrap();
        assert_eq!(u.form, TargetForm::Asterisk);
        assert_eq!(u.path, b"*");
    }

    #[test]
    fn canon_encoding_matches_apache() {
        assert_eq!(
            canon_encode(b"foo.php/extra/path", false).unwrap(),
            "foo.php/extra/path"
        );
        assert_eq!(canon_encode(b"a b", false).unwrap(), "a%20b");
        assert_eq!(canon_encode(b"a\nb", false).unwrap(), "a%0Ab");
        assert_eq!(canon_encode(b"%", false).unwrap(), "%25");
        assert_eq!(canon_encode(b"x?q=1#f", false).unwrap(), "x%3Fq=1%23f");
        assert_eq!(canon_encode(b"\xc3\xa9", false).unwrap(), "%C3%A9");
        assert_eq!(
            canon_encode(b"~$-_.+!*'(),;:@&=", false).unwrap(),
            "~$-_.+!*'(),;:@&="
        );
        assert_eq!(canon_encode(b"a\\x\"<>", false).unwrap(), "a%5Cx%22%3C%3E");
        assert_eq!(canon_encode(b"a%2fb c", true).unwrap(), "a%2fb%20c");
        assert_eq!(canon_encode(b"a%41", true).unwrap(), "a%2541");
        assert_eq!(canon_encode(b"a%zz", true), None);
    }

    #[test]
    fn keep2f_unescape() {
        assert_eq!(unescape_keep2f(b"/a%20b%2Fc%zz%"), b"/a b%2Fc%zz%");
    }

    #[test]
    fn host_parsing() {
        let h = parse_host(b"EXAMPLE.com:8080").unwrap();
        assert_eq!((h.host.as_str(), h.port), ("example.com", Some(8080)));
        let h = parse_host(b"[::1]:9").unwrap();
        assert_eq!((h.host.as_str(), h.port), ("[::1]", Some(9)));
        assert_eq!(parse_host(b"x.org.").unwrap().host, "x.org");
        assert_eq!(parse_host(b"127.0.0.1").unwrap().port, None);
        assert_eq!(parse_host(b"a_b").unwrap().host, "a_b");
        assert_eq!(parse_host(b"a:08").unwrap().port, Some(8));
        for bad in [
            &b"a<b"[..],
            b"a&b",
            b"a~b",
            b"a%41b",
            b"h:",
            b"h:0",
            b"a:b:c",
            b"[::1",
            b"[::1]x",
            b"a/b",
            b"a..b",
            b"",
            b"h:x",
            b"h:99999",
            b"[zz]",
            b"a b",
        ] {
            assert_eq!(parse_host(bad).unwrap_err().status, 400, "{:?}", bad);
        }
    }

    #[test]
    fn html_escape() {
        assert_eq!(escape_html("a&b<c>\"d"), "a&amp;b&lt;c&gt;&quot;d");
    }

    #[test]
    fn kept_bytes_are_their_own_encoding_and_decoding() {
        // cgi::canonicalize relies on it to skip both for such a path.
        let kept: Vec<u8> = (0..=255u8)
            .filter(|&c| c == b'/' || canon_keeps(c))
            .collect();
        assert!(!kept.contains(&b'%') && !kept.contains(&b'?') && !kept.contains(&b'#'));
        for keep_2f in [false, true] {
            assert_eq!(canon_encode(&kept, keep_2f).unwrap().as_bytes(), &kept[..]);
        }
        assert_eq!(unescape_keep2f(&kept), kept);
        for c in 0..=255u8 {
            if c != b'/' && !canon_keeps(c) {
                assert_ne!(canon_encode(&[c], false).unwrap().as_bytes(), [c]);
            }
        }
    }
}
