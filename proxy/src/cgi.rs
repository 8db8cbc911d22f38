//! CGI/FastCGI parameters exactly as Apache httpd 2.4 mod_proxy_fcgi computes them
//! (`proxy_fcgi_canon`, `send_environment`, `ap_add_common_vars`, `ap_add_cgi_vars`,
//! `fix_cgivars`), as pure functions.
//!
//! Integration, per request:
//! 1. [`crate::uri::parse_target`] → `RequestUri` (answer its error status);
//! 2. [`crate::route::Router::route`] on `uri.path` → `RouteMatch` (None → 404);
//! 3. [`request_env`] → the SetEnvIf/SetEnv environment (and the `proxy-fcgi-pathinfo` value
//!    the canonicalisation step sees);
//! 4. for a balancer, choose a member;
//! 5. [`build_params`] → ordered FCGI_PARAMS (answer `CgiError::status` on error).
//!
//! Order of the output (Apache's table order): the pre-existing request environment (SetEnvIf,
//! SetEnv, `BALANCER_*`), then the request headers, `PATH`, `SERVER_SIGNATURE`,
//! `SERVER_SOFTWARE`, `SERVER_NAME`, `SERVER_ADDR`, `SERVER_PORT`, `REMOTE_ADDR`,
//! `DOCUMENT_ROOT`, `REQUEST_SCHEME`, `CONTEXT_PREFIX`, `CONTEXT_DOCUMENT_ROOT`,
//! `SERVER_ADMIN`, `SCRIPT_FILENAME`, `REMOTE_PORT`, `GATEWAY_INTERFACE`, `SERVER_PROTOCOL`,
//! `REQUEST_METHOD`, `QUERY_STRING`, `REQUEST_URI`, `SCRIPT_NAME`, [`PATH_INFO`,
//! `PATH_TRANSLATED`]; a variable that already exists keeps its place and takes the new value
//! (APR table semantics); finally ProxyFCGISetEnvIf (server entries, then route entries).
//!
//! Deliberate differences from Apache httpd 2.4 (the reference run here was 2.4.71):
//! - `SERVER_SOFTWARE` is [`SERVER_SOFTWARE`], not Apache's banner.
//! - `PATH_TRANSLATED` is always `DOCUMENT_ROOT` + `PATH_INFO` (runs of `/` merged), or none when
//!   the two do not fit into one file name, as in Apache. Apache runs a sub-request, which
//!   yields a `proxy:fcgi://…` URL when PATH_INFO itself falls under a ProxyPass (observed:
//!   `PATH_INFO=/myapp/zz` → `PATH_TRANSLATED=proxy:fcgi://127.0.0.1:27001/zz`).
//! - `proxy-fcgi-pathinfo=full` maps to the filesystem as documented (walk `/`+path, then
//!   DOCUMENT_ROOT+path; a regular file becomes SCRIPT_FILENAME, the rest PATH_INFO; nothing
//!   found → as if unset). Apache ≤ 2.4.62 ignores `full`; 2.4.71 behaves like this.
//! - A decoded NUL, CR or LF in the path is refused with 400 before routing ([`crate::uri`]);
//!   Apache answers 404 for NUL and passes CR/LF into SCRIPT_NAME/PATH_INFO.
//! - The request body length is an input: the runtime buffers chunked bodies and gives an exact
//!   `CONTENT_LENGTH` (Apache streams them without CONTENT_LENGTH unless `proxy-sendcl`).
//! - `Max-Forwards: 0` on OPTIONS or TRACE is forwarded as 0 (Apache answers those itself).
//! - No `REMOTE_HOST`, `REMOTE_USER`, `AUTH_TYPE`, `REMOTE_IDENT`, `REDIRECT_*`, `UNIQUE_ID`
//!   (no DNS lookups, authentication, internal redirects here).
//! - Over TLS, `HTTPS=on` and `SSL_TLS_SNI` as mod_ssl without `StdEnvVars`; over HTTP/2,
//!   mod_http2's `HTTP2`, `H2PUSH`, `H2_PUSH`, `H2_PUSHED`, `H2_PUSHED_ON`, not its
//!   `H2_STREAM_ID` and `H2_STREAM_TAG` (docs/reference/apache.md §9).

use core::fmt;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::expr::{
    Env, ExprVars, RequestFacts, ServerVar, apply_fcgi_setenvif, apply_setenv, apply_setenvif,
};
use crate::config::site::PathKind;
use crate::config::{BackendType, Config, Member, Route, Target, WorkerUrl};
use crate::route::{Backend, RouteMatch};
use crate::site::Fs;
use crate::uri::{self, EncodedSlashes, RequestUri, TargetForm};

/// Our `SERVER_SOFTWARE` (Apache sends its banner, e.g. `Apache/2.4.71 (Debian)`).
pub const SERVER_SOFTWARE: &str = concat!("fcgi-proxy/", env!("CARGO_PKG_VERSION"));

/// Apache's compiled-in `DEFAULT_PATH`, sent as `PATH` when the process has none.
pub const DEFAULT_PATH: &str = "/bin:/usr/bin:/usr/ucb:/usr/bsd:/usr/local/bin";

/// One FastCGI parameter (the fixed names are not copied).
pub type Param = (Cow<'static, str>, Vec<u8>);

/// A request that cannot be passed on, with the status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiError {
    pub status: u16,
    pub message: String,
}

impl CgiError {
    fn new(status: u16, message: impl Into<String>) -> CgiError {
        CgiError {
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for CgiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for CgiError {}

/// The request as the CGI layer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub protocol: &'a str,
    /// The parsed request target.
    pub uri: &'a RequestUri,
    /// Header fields in received order (name, raw value), duplicates not merged.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Client address (REMOTE_ADDR, REMOTE_PORT).
    pub remote: SocketAddr,
    /// Local address of the connection (SERVER_ADDR).
    pub local: SocketAddr,
    /// The TLS connection the request came on (HTTPS, SSL_TLS_SNI, the scheme), if it did.
    pub tls: Option<&'a crate::tls::ConnTls>,
    /// The request body length as it will be sent on STDIN: `Some` when the request had a
    /// Content-Length or a (buffered) chunked body, `None` for a bodiless request.
    pub content_length: Option<u64>,
}

impl Request<'_> {
    /// `https` on a TLS connection, else `http`.
    pub fn scheme(&self) -> &'static str {
        crate::tls::scheme(self.tls)
    }
}

/// The request environment before the CGI variables are added (Apache's `r->subprocess_env`
/// after SetEnvIf and SetEnv).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEnv {
    /// Variables in order (they are sent to the backend).
    pub env: Env,
    /// The `proxy-fcgi-pathinfo` value the canonicalisation step sees. For a direct worker
    /// `SetEnv` runs too late (Apache's fixup order), for a balancer it is visible.
    pub canon_pathinfo: Option<Vec<u8>>,
}

/// An [`Fs`] that answers from what it was told ([`ProbeMemo::learn`]); the first path
/// it does not know is noted ([`ProbeMemo::take_wanted`]) and answered `Missing`, so that the
/// caller can look it up elsewhere (off the serving thread) and run the walk again.
#[derive(Debug, Default)]
pub struct ProbeMemo {
    known: Vec<(Vec<u8>, PathKind)>,
    wanted: std::cell::RefCell<Option<Vec<u8>>>,
}

impl ProbeMemo {
    pub fn learn(&mut self, path: Vec<u8>, kind: PathKind) {
        self.known.push((path, kind));
    }

    /// The first path asked about and not known since the last call.
    pub fn take_wanted(&mut self) -> Option<Vec<u8>> {
        self.wanted.get_mut().take()
    }
}

impl Fs for ProbeMemo {
    fn kind(&self, path: &[u8]) -> PathKind {
        if let Some((_, k)) = self.known.iter().find(|(p, _)| p == path) {
            return *k;
        }
        let mut wanted = self.wanted.borrow_mut();
        if wanted.is_none() {
            *wanted = Some(path.to_vec());
        }
        PathKind::Missing
    }
}

/// Everything [`build_params`] needs.
#[derive(Clone, Copy)]
pub struct CgiInput<'a> {
    pub config: &'a Config,
    pub route_match: &'a RouteMatch,
    /// The chosen member for a balancer route (ignored for a worker route).
    pub member: Option<&'a Member>,
    /// What else the balancer decided (sticky sessions).
    pub balancer: BalancerVars<'a>,
    pub request: &'a Request<'a>,
    /// From [`request_env`].
    pub env: &'a RequestEnv,
    /// The proxy process's `PATH` (`std::env::var_os("PATH")`); `None` → [`DEFAULT_PATH`].
    pub process_path: Option<&'a [u8]>,
    /// Filesystem for `proxy-fcgi-pathinfo=full`.
    pub fs: &'a dyn Fs,
    /// The server's variables encoded once ([`FixedParams::new`] of this config and
    /// `process_path`); `None`: every variable encoded for the request.
    pub fixed: Option<&'a FixedParams>,
}

/// CGI variables that are the same for most requests of a server, encoded once: written into
/// the PARAMS records in one copy instead of pair by pair. A run is used only when the
/// request's values are exactly its values (checked for every request), so the records are the
/// same either way.
#[derive(Debug, Clone)]
pub struct FixedParams {
    /// PATH (the process's), SERVER_SIGNATURE, SERVER_SOFTWARE.
    software: FixedRun,
    /// DOCUMENT_ROOT, REQUEST_SCHEME (`http`), CONTEXT_PREFIX (empty), CONTEXT_DOCUMENT_ROOT
    /// (the DocumentRoot), SERVER_ADMIN: a routed request over plain HTTP.
    site: FixedRun,
}

impl FixedParams {
    pub fn new(cfg: &Config, process_path: Option<&[u8]>) -> FixedParams {
        let root = cfg.document_root.as_bytes();
        FixedParams {
            software: FixedRun::new(&[
                ("PATH", process_path.unwrap_or(DEFAULT_PATH.as_bytes())),
                ("SERVER_SIGNATURE", b""),
                ("SERVER_SOFTWARE", SERVER_SOFTWARE.as_bytes()),
            ]),
            site: FixedRun::new(&[
                ("DOCUMENT_ROOT", root),
                ("REQUEST_SCHEME", b"http"),
                ("CONTEXT_PREFIX", b""),
                ("CONTEXT_DOCUMENT_ROOT", root),
                ("SERVER_ADMIN", server_admin(cfg).as_bytes()),
            ]),
        }
    }
}

/// Consecutive variables and their pairs encoded back to back.
#[derive(Debug, Clone)]
struct FixedRun {
    pairs: Vec<(&'static str, Vec<u8>)>,
    encoded: Vec<u8>,
}

impl FixedRun {
    fn new(pairs: &[(&'static str, &[u8])]) -> FixedRun {
        let mut encoded = Vec::new();
        for (n, v) in pairs {
            fastcgi::nv::encode_pair(&mut encoded, n.as_bytes(), v);
        }
        FixedRun {
            pairs: pairs.iter().map(|&(n, v)| (n, v.to_vec())).collect(),
            encoded,
        }
    }

    /// Whether the run's values are `values`, in order.
    fn holds(&self, values: &[&[u8]]) -> bool {
        self.pairs.len() == values.len() && self.pairs.iter().zip(values).all(|((_, v), w)| v == w)
    }
}

/// What a balancer decided besides the member, for `BALANCER_ROUTE_CHANGED`,
/// `BALANCER_SESSION_STICKY` and `BALANCER_SESSION_ROUTE`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BalancerVars<'a> {
    /// The balancer has sticky sessions and the request did not go to the member its session
    /// named (on this attempt or an earlier one of the same request).
    pub route_changed: bool,
    /// The route change was first noted on a failover attempt, after an earlier attempt had set
    /// the other variables: Apache's table then has it last.
    pub route_changed_late: bool,
    /// The session the request named.
    pub session: Option<&'a crate::balancer::Session>,
}

impl fmt::Debug for CgiInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CgiInput")
            .field("route_match", &self.route_match)
            .field("member", &self.member.map(|m| m.url.raw.as_str()))
            .field("request", &self.request)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

fn ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ipv4_string(v4),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => ipv4_string(v4),
    }
}

/// Dotted quad, without the formatting machinery `Display` goes through (two of these per
/// request were a tenth of the proxy's own instructions).
fn ipv4_string(ip: Ipv4Addr) -> String {
    let mut s = String::with_capacity(15);
    s.push_str(Ipv4Text::new(ip).as_str());
    s
}

/// A dotted quad on the stack: SERVER_ADDR and REMOTE_ADDR of every request, not allocated.
struct Ipv4Text {
    buf: [u8; 15],
    len: usize,
}

impl Ipv4Text {
    fn new(ip: Ipv4Addr) -> Ipv4Text {
        let mut t = Ipv4Text {
            buf: [0; 15],
            len: 0,
        };
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                t.push(b'.');
            }
            // Byte by byte: a copy of one to three bytes would be a memcpy call each.
            if octet >= 100 {
                t.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                t.push(b'0' + octet / 10 % 10);
            }
            t.push(b'0' + octet % 10);
        }
        t
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn as_str(&self) -> &str {
        // Digits and dots only.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// [`ip_string`], on the stack for IPv4 (and IPv4-mapped) addresses.
enum IpText {
    V4(Ipv4Text),
    Other(String),
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let v4 = match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        match v4 {
            Some(v4) => IpText::V4(Ipv4Text::new(v4)),
            None => IpText::Other(ip_string(ip)),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            IpText::V4(t) => t.as_str().as_bytes(),
            IpText::Other(s) => s.as_bytes(),
        }
    }
}

/// A number as the bytes of its decimal form.
fn decimal(n: impl itoa::Integer) -> Vec<u8> {
    itoa::Buffer::new().format(n).as_bytes().to_vec()
}

/// Merge duplicate header fields (case-insensitive names) into `"a, b"` at the position of the
/// first one, keeping its spelling (Apache `apr_table_compress(..., MERGE)`). With an
/// absolute-form target, an existing `Host` field is replaced by the target's authority
/// (lower-cased host), as Apache does.
pub fn effective_headers<'a>(req: &Request<'a>) -> Vec<Header<'a>> {
    let mut out: Vec<Header<'a>> = Vec::with_capacity(req.headers.len());
    for &(n, v) in req.headers {
        // Values are borrowed from the request; only a merged one is a new buffer.
        match out.iter_mut().find(|(m, _)| m.eq_ignore_ascii_case(n)) {
            Some((_, existing)) => {
                let merged = existing.to_mut();
                merged.extend_from_slice(b", ");
                merged.extend_from_slice(v);
            }
            None => out.push((n, Cow::Borrowed(v))),
        }
    }
    if let TargetForm::Absolute { authority, .. } = &req.uri.form
        && let Some((_, v)) = out.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case("host"))
        && let Ok(hp) = uri::parse_host(authority.as_bytes())
    {
        *v = Cow::Owned(hp.to_header_value().into_bytes());
    }
    out
}

/// A header field after merging: its name and value (a new buffer only when merged).
pub type Header<'a> = (&'a str, Cow<'a, [u8]>);

/// Apache `http2env`: `HTTP_` + upper-cased name with `-` → `_`; `None` when the name has a
/// character outside `[A-Za-z0-9-]` (the header is then not exported at all).
pub fn http2env(name: &str) -> Option<String> {
    let mut s = String::with_capacity(5 + name.len());
    s.push_str("HTTP_");
    for c in name.bytes() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_uppercase() as char);
        } else if c == b'-' {
            s.push('_');
        } else {
            return None;
        }
    }
    Some(s)
}

/// [`http2env`] written into `buf` when it fits (the usual header name), else allocated.
fn http2env_in<'b>(name: &str, buf: &'b mut [u8; 64]) -> Option<Cow<'b, [u8]>> {
    if 5 + name.len() > buf.len() {
        return http2env(name).map(|s| Cow::Owned(s.into_bytes()));
    }
    buf[..5].copy_from_slice(b"HTTP_");
    for (slot, c) in buf[5..].iter_mut().zip(name.bytes()) {
        *slot = if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else if c == b'-' {
            b'_'
        } else {
            return None;
        };
    }
    Some(Cow::Borrowed(&buf[..5 + name.len()]))
}

/// Apache `ap_find_path_info`: the length of the SCRIPT_NAME prefix of `uri` given `path_info`.
/// Walks back while the bytes agree (a `/` in path_info matches a run of `/` in uri), then
/// forward to the next `/`.
pub fn find_path_info(uri: &[u8], path_info: &[u8]) -> usize {
    let mut lu = uri.len() as isize;
    let mut lp = path_info.len() as isize;
    loop {
        if lu == 0 {
            lu = -1;
            break;
        }
        lu -= 1;
        if lp == 0 {
            break;
        }
        lp -= 1;
        if uri[lu as usize] != path_info[lp as usize] {
            break;
        }
        if path_info[lp as usize] == b'/' {
            while lu > 0 && uri[(lu - 1) as usize] == b'/' {
                lu -= 1;
            }
        }
    }
    let mut lu = lu.max(0) as usize;
    while lu < uri.len() && uri[lu] != b'/' {
        lu += 1;
    }
    lu
}

/// Compute the SetEnvIf/SetEnv environment of a routed request: server SetEnvIf, the route's
/// `pathinfo` shorthand, route SetEnvIf, then server and route SetEnv.
pub fn request_env(config: &Config, route_match: &RouteMatch, req: &Request<'_>) -> RequestEnv {
    let route = &config.routes[route_match.route];
    let mut env = Env::new();
    if config.setenvif.is_empty() && route.setenvif.is_empty() {
        // The facts SetEnvIf tests are only gathered when there is a rule to test them.
        if let Some(pi) = &route.pathinfo {
            env.set_static("proxy-fcgi-pathinfo", pi.as_bytes());
        }
    } else {
        with_request_facts(req, |facts| {
            apply_setenvif(&config.setenvif, facts, &mut env);
            if let Some(pi) = &route.pathinfo {
                env.set_static("proxy-fcgi-pathinfo", pi.as_bytes());
            }
            apply_setenvif(&route.setenvif, facts, &mut env);
        });
    }
    let at_canon = env.get("proxy-fcgi-pathinfo").map(<[u8]>::to_vec);
    apply_setenv(&config.setenv, &mut env);
    apply_setenv(&route.setenv, &mut env);
    let canon_pathinfo = match route_match.backend {
        // Balancer URLs are canonicalised again in the handler phase, after mod_env's fixup.
        Backend::Balancer { .. } => env.get("proxy-fcgi-pathinfo").map(<[u8]>::to_vec),
        Backend::Worker => at_canon,
    };
    RequestEnv {
        env,
        canon_pathinfo,
    }
}

/// The result of `proxy_fcgi_canon` (+ the `full` directory walk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canon {
    /// `r->filename`: `proxy:fcgi://host[:port]/<encoded path>`, or the real file found by
    /// `proxy-fcgi-pathinfo=full`.
    pub filename: String,
    /// `r->path_info`, when one was computed.
    pub path_info: Option<Vec<u8>>,
}

fn merge_slashes(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len());
    for &c in p {
        if c == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Walk an absolute path component by component: the first component that is not a directory
/// must be a regular file; it is the script and the rest is PATH_INFO.
fn walk(fs: &dyn Fs, path: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let path = merge_slashes(path);
    if path.first() != Some(&b'/') {
        return None;
    }
    match crate::site::walk(fs, &path) {
        (file, rest, PathKind::File) => Some((file, rest)),
        _ => None,
    }
}

/// How [`canonicalize`] treats the backend path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanonOptions<'a> {
    /// `proxy-fcgi-pathinfo` as seen at canonicalisation time.
    pub pathinfo: Option<&'a [u8]>,
    /// `AllowEncodedSlashes`.
    pub slashes: EncodedSlashes,
    /// `nocanon` in effect: the path is raw and passed as is.
    pub nocanon: bool,
    /// The route's backend type (a raw `?` is refused for FPM).
    pub backend_type: BackendType,
    /// DocumentRoot (for `full`).
    pub document_root: &'a str,
}

/// `proxy_fcgi_canon` for a worker URL and the backend path (worker path + remainder), with
/// the `proxy-fcgi-pathinfo` mode; `full` walks the filesystem through `fs`.
pub fn canonicalize(
    worker: &WorkerUrl,
    backend_path: &[u8],
    opts: &CanonOptions<'_>,
    fs: &dyn Fs,
) -> Result<Canon, CgiError> {
    let CanonOptions {
        pathinfo,
        slashes,
        nocanon,
        backend_type,
        document_root,
    } = *opts;
    let rel = match backend_path.first() {
        None => &b""[..],
        Some(b'/') => &backend_path[1..],
        Some(_) => {
            return Err(CgiError::new(
                500,
                format!(
                    "backend URL '{}' + '{}' is not a valid URL (target without a trailing '/')",
                    worker.raw,
                    String::from_utf8_lossy(backend_path)
                ),
            ));
        }
    };
    // A path of bytes canon_encode keeps has no `%`: it is its own encoding, and decoding it
    // for FPM gives it back; neither is made (most request paths are of this kind).
    let kept = if nocanon || !rel.iter().all(|&c| c == b'/' || uri::canon_keeps(c)) {
        None
    } else {
        core::str::from_utf8(rel).ok()
    };
    let path: Cow<'_, str> = if let Some(p) = kept {
        Cow::Borrowed(p)
    } else if nocanon {
        // AH10414: a raw control character or space (or '?' when the backend may be FPM)
        // means the encoding was missed.
        if rel
            .iter()
            .any(|&c| c <= b' ' || c == 0x7f || (c == b'?' && backend_type == BackendType::Fpm))
        {
            return Err(CgiError::new(
                403,
                "nocanon path contains control characters, spaces or '?'",
            ));
        }
        Cow::Owned(String::from_utf8_lossy(rel).into_owned())
    } else {
        Cow::Owned(
            uri::canon_encode(rel, slashes == EncodedSlashes::NoDecode)
                .ok_or_else(|| CgiError::new(400, "invalid %-escape in the backend path"))?,
        )
    };
    let mut filename = String::with_capacity(worker.host.len() + path.len() + 20);
    filename.push_str("proxy:");
    worker.push_canonical_authority(&mut filename);
    filename.push('/');
    if backend_type == BackendType::Fpm && !nocanon && kept.is_none() {
        // Deliberately unlike Apache, which sends the path %-encoded: php-fpm opens
        // SCRIPT_FILENAME as it is, so a script named with a space or a non-ASCII character
        // would be "File not found.". The file's name as on disk, unless it would carry a
        // control character, a `?` or a `#` (php-fpm would cut `admin.php?x.php` back to an
        // existing `admin.php` and run it: docs/reference/security.md S9), or is not UTF-8:
        // then as Apache sends it (%2F always stays encoded).
        let decoded = uri::unescape_keep2f(path.as_bytes());
        match String::from_utf8(decoded) {
            Ok(d)
                if !d
                    .bytes()
                    .any(|c| c < b' ' || c == 0x7f || c == b'?' || c == b'#') =>
            {
                filename.push_str(&d)
            }
            _ => filename.push_str(&path),
        }
    } else {
        filename.push_str(&path);
    }
    let mode = pathinfo.map(|m| String::from_utf8_lossy(m).to_ascii_lowercase());
    let mut canon = Canon {
        filename,
        path_info: None,
    };
    let Some(mode) = mode else {
        return Ok(canon);
    };
    match mode.as_str() {
        "full" => {
            // Apache 2.4.63+: walk "/"+path, then DocumentRoot+"/"+path; a regular file becomes
            // SCRIPT_FILENAME (no proxy: prefix) and the rest PATH_INFO.
            let unescaped = uri::unescape_keep2f(path.as_bytes());
            let mut first = b"/".to_vec();
            first.extend_from_slice(&unescaped);
            let mut second = document_root.trim_end_matches('/').as_bytes().to_vec();
            second.push(b'/');
            second.extend_from_slice(&unescaped);
            if let Some((file, rest)) = walk(fs, &first).or_else(|| walk(fs, &second)) {
                canon.filename = String::from_utf8_lossy(&file).into_owned();
                canon.path_info = (!rest.is_empty()).then_some(rest);
            }
        }
        "first-dot" | "last-dot" => {
            let p = path.as_bytes();
            let dot = if mode == "first-dot" {
                p.iter().position(|&c| c == b'.')
            } else {
                p.iter().rposition(|&c| c == b'.')
            };
            if let Some(d) = dot
                && let Some(s) = p[d..].iter().position(|&c| c == b'/')
            {
                // Apache truncates its local copy of the path too late: SCRIPT_FILENAME
                // keeps the tail.
                canon.path_info = Some(uri::unescape_keep2f(&p[d + s..]));
            }
        }
        _ => {
            let mut pi = b"/".to_vec();
            pi.extend_from_slice(path.as_bytes());
            if mode == "unescape" {
                pi = uri::unescape_keep2f(&pi);
            }
            canon.path_info = Some(pi);
        }
    }
    Ok(canon)
}

/// `send_environment`'s SCRIPT_FILENAME: GENERIC drops `proxy:fcgi://host:port` and a trailing
/// `?<args>`; FPM keeps the prefix.
pub fn script_filename(filename: &str, backend_type: BackendType, query: Option<&str>) -> String {
    if backend_type == BackendType::Generic
        && let Some(rest) = filename.strip_prefix("proxy:fcgi://")
    {
        let mut s = rest.find('/').map_or("", |i| &rest[i..]).to_owned();
        if let Some(args) = query.filter(|a| !a.is_empty())
            && let Some(q) = s.rfind('?')
            && &s[q + 1..] == args
        {
            s.truncate(q);
        }
        return s;
    }
    filename.to_owned()
}

struct ServerVars<'a> {
    input: &'a CgiInput<'a>,
    headers: &'a [Header<'a>],
    server_name: String,
    server_port: u16,
    script_filename: String,
    path_info: Option<Vec<u8>>,
}

impl ExprVars for ServerVars<'_> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_vec())
    }

    fn server_var(&self, var: ServerVar) -> Vec<u8> {
        let cfg = self.input.config;
        let req = self.input.request;
        let s = |x: &str| x.as_bytes().to_vec();
        match var {
            ServerVar::DocumentRoot | ServerVar::ContextDocumentRoot => s(&cfg.document_root),
            ServerVar::ContextPrefix => Vec::new(),
            ServerVar::ServerName => s(&self.server_name),
            ServerVar::ServerPort => s(&self.server_port.to_string()),
            ServerVar::ServerAdmin => s(server_admin(cfg)),
            ServerVar::ServerProtocol => s(req.protocol),
            ServerVar::ServerSoftware => s(SERVER_SOFTWARE),
            ServerVar::ServerAddr => s(&ip_string(req.local.ip())),
            ServerVar::RequestMethod => s(req.method),
            ServerVar::RequestScheme => s(req.scheme()),
            ServerVar::RequestUri | ServerVar::DocumentUri => req.uri.path.clone(),
            ServerVar::RequestFilename | ServerVar::ScriptFilename => s(&self.script_filename),
            ServerVar::PathInfo => self.path_info.clone().unwrap_or_default(),
            ServerVar::QueryString => s(req.uri.query().unwrap_or("")),
            ServerVar::TheRequest => s(&format!("{} {} {}", req.method, req.uri.raw, req.protocol)),
            ServerVar::RemoteAddr | ServerVar::RemoteHost => s(&ip_string(req.remote.ip())),
            ServerVar::RemotePort => s(&req.remote.port().to_string()),
            ServerVar::Https => s(if req.tls.is_some() { "on" } else { "off" }),
            ServerVar::Ipv6 => s(if ip_string(req.remote.ip()).contains(':') {
                "on"
            } else {
                "off"
            }),
            ServerVar::IsSubreq => s("false"),
            ServerVar::Handler => s("proxy-server"),
            ServerVar::Header(h) => self.header(h).unwrap_or_default(),
        }
    }
}

fn server_admin(cfg: &Config) -> &str {
    cfg.server_admin.as_deref().unwrap_or("[no address given]")
}

/// SERVER_NAME and SERVER_PORT (`UseCanonicalName Off`): from the Host header (or the
/// absolute-form authority), else `server_name`, else the local address; the port from there,
/// else the `server_name` port, else the scheme's default port.
fn server_name_port(
    cfg: &Config,
    req: &Request<'_>,
    headers: &[Header<'_>],
) -> Result<(String, u16), CgiError> {
    let configured = cfg
        .server_name
        .as_deref()
        .and_then(|n| uri::parse_host(n.as_bytes()).ok());
    let from_request = match &req.uri.form {
        TargetForm::Absolute { authority, .. } => Some(
            uri::parse_host(authority.as_bytes())
                .map_err(|_| CgiError::new(400, "invalid host in request target"))?,
        ),
        _ => match headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")) {
            Some((_, v)) => {
                Some(uri::parse_host(v).map_err(|_| CgiError::new(400, "invalid Host header"))?)
            }
            None => {
                if req.protocol.eq_ignore_ascii_case("HTTP/1.1") {
                    return Err(CgiError::new(400, "HTTP/1.1 request without Host"));
                }
                None
            }
        },
    };
    let default_port = if req.tls.is_some() { 443 } else { 80 };
    let configured_port = configured.as_ref().and_then(|c| c.port);
    let (name, port) = match from_request {
        Some(hp) => (hp.host, hp.port),
        None => match &configured {
            Some(c) => (c.host.clone(), None),
            None => {
                let ip = ip_string(req.local.ip());
                let host = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip
                };
                (host, None)
            }
        },
    };
    let port = port.or(configured_port).unwrap_or(default_port);
    // A host parse_host accepted has none of the characters escaped; checked, not assumed.
    let name = if name.contains(['&', '<', '>', '"']) {
        uri::escape_html(&name)
    } else {
        name
    };
    Ok((name, port))
}

fn max_forwards(method: &str, value: &[u8]) -> Result<Vec<u8>, CgiError> {
    let text = core::str::from_utf8(value).unwrap_or("").trim();
    let n: i64 = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse()
            .map_err(|_| CgiError::new(400, "invalid Max-Forwards"))?
    } else {
        return Err(CgiError::new(400, "invalid Max-Forwards"));
    };
    if n == 0 && !(method == "OPTIONS" || method == "TRACE") {
        return Err(CgiError::new(
            400,
            "Max-Forwards has reached zero - proxy loop?",
        ));
    }
    Ok(decimal((n - 1).max(0)))
}

/// Where [`fill`] puts the variables, in Apache's table order.
trait Vars {
    /// `apr_table_set` with a fixed name.
    fn set_static(&mut self, name: &'static str, value: &[u8]);
    /// `apr_table_set` with a computed name.
    fn set_owned(&mut self, name: String, value: &[u8]);
    /// A variable set before the CGI variables (by SetEnv); only `PATH` is asked for.
    fn get(&self, name: &str) -> Option<&[u8]>;
    /// A request header as its `HTTP_` variable ([`http2env`]; none for a name it refuses).
    fn set_header(&mut self, name: &str, value: &[u8]) {
        if let Some(n) = http2env(name) {
            self.set_owned(n, value);
        }
    }
    /// The variables of `run`, in order.
    fn set_run(&mut self, run: &FixedRun) {
        for (n, v) in &run.pairs {
            self.set_static(n, v);
        }
    }
}

impl Vars for Env {
    fn set_static(&mut self, name: &'static str, value: &[u8]) {
        Env::set_static(self, name, value);
    }
    fn set_owned(&mut self, name: String, value: &[u8]) {
        Env::set_owned(self, name, value);
    }
    fn get(&self, name: &str) -> Option<&[u8]> {
        Env::get(self, name)
    }
}

/// Variables written straight into PARAMS records. Only for a request with no variables set
/// before the CGI ones and no ProxyFCGISetEnvIf to apply: then every name is set once (headers
/// are merged first, and no header maps to a fixed name), so the table would only append.
struct Records<'w, 'a>(&'w mut fastcgi::encode::ParamsWriter<'a>);

impl Vars for Records<'_, '_> {
    fn set_static(&mut self, name: &'static str, value: &[u8]) {
        self.0.pair(name.as_bytes(), value);
    }
    fn set_owned(&mut self, name: String, value: &[u8]) {
        self.0.pair(name.as_bytes(), value);
    }
    fn get(&self, _: &str) -> Option<&[u8]> {
        None
    }
    fn set_header(&mut self, name: &str, value: &[u8]) {
        let mut buf = [0u8; 64];
        if let Some(n) = http2env_in(name, &mut buf) {
            self.0.pair(&n, value);
        }
    }
    fn set_run(&mut self, run: &FixedRun) {
        self.0.encoded_pairs(&run.encoded, |w| {
            for (n, v) in &run.pairs {
                w.pair(n.as_bytes(), v);
            }
        });
    }
}

/// What ProxyFCGISetEnvIf may read besides the table.
struct Filled<'a> {
    headers: Vec<Header<'a>>,
    server_name: String,
    server_port: u16,
    script_filename: String,
    path_info: Option<Vec<u8>>,
}

/// Build the ordered FCGI_PARAMS for a routed request.
pub fn build_params(input: &CgiInput<'_>) -> Result<Vec<Param>, CgiError> {
    // About 25 variables plus one per header.
    let mut env = input.env.env.clone();
    env.reserve(input.request.headers.len() + 28);
    let f = fill(input, &mut env)?;
    let route = &input.config.routes[input.route_match.route];
    // ProxyFCGISetEnvIf (fix_cgivars): server entries, then the route's.
    let vars = ServerVars {
        input,
        headers: &f.headers,
        server_name: f.server_name,
        server_port: f.server_port,
        script_filename: f.script_filename,
        path_info: f.path_info,
    };
    apply_fcgi_setenvif(&input.config.fcgi_setenvif, &mut env, &vars);
    apply_fcgi_setenvif(&route.fcgi_setenvif, &mut env, &vars);
    Ok(env.into_vec())
}

/// The request's BEGIN_REQUEST and PARAMS records (the stream closed), as
/// [`build_params`] would give them encoded. Without SetEnv, SetEnvIf or ProxyFCGISetEnvIf in
/// play the variables go straight into the records, with no table in between.
pub fn encode_params(
    input: &CgiInput<'_>,
    keep_conn: bool,
) -> Result<crate::exchange::Preamble, CgiError> {
    let route = input
        .config
        .routes
        .get(input.route_match.route)
        .ok_or_else(|| CgiError::new(500, "route index out of range"))?;
    let table = !input.env.env.is_empty()
        || !input.config.fcgi_setenvif.is_empty()
        || !route.fcgi_setenvif.is_empty();
    if table {
        return Ok(crate::exchange::encode_preamble(
            &build_params(input)?,
            keep_conn,
        ));
    }
    crate::exchange::write_preamble(keep_conn, params_size(input.request), |w| {
        let mut records = Records(w);
        fill(input, &mut records).map(drop)
    })
}

/// About what a request's PARAMS take: the headers, the URI about twice, and the fixed
/// variables.
fn params_size(req: &Request<'_>) -> usize {
    req.headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 16)
        .sum::<usize>()
        + 2 * req.uri.raw.len()
        + 1024
}

/// The CGI variables of a routed request, in order, into `env`.
fn fill<'a, V: Vars>(input: &CgiInput<'a>, env: &mut V) -> Result<Filled<'a>, CgiError> {
    let cfg = input.config;
    let rm = input.route_match;
    let req = input.request;
    let route: &Route = cfg
        .routes
        .get(rm.route)
        .ok_or_else(|| CgiError::new(500, "route index out of range"))?;
    // The worker URL and the path canonicalisation encodes.
    let (worker, backend_path): (&WorkerUrl, Cow<'_, [u8]>) = match (&rm.backend, &route.target) {
        (Backend::Worker, Target::Worker(w)) => (w, Cow::Borrowed(rm.path())),
        (Backend::Balancer { index, .. }, Target::Balancer(_)) => {
            let member = input
                .member
                .ok_or_else(|| CgiError::new(500, "balancer route without a chosen member"))?;
            let balancer = cfg
                .balancers
                .get(*index)
                .ok_or_else(|| CgiError::new(500, "balancer index out of range"))?;
            // mod_proxy_balancer's order: the route change is noted while choosing, the
            // session after the member's variables (a variable keeps the place it was first set
            // at, over the attempts of a request).
            let changed = input.balancer.route_changed;
            if changed && !input.balancer.route_changed_late {
                env.set_static("BALANCER_ROUTE_CHANGED", b"1");
            }
            env.set_static("BALANCER_NAME", balancer.url_name().as_bytes());
            env.set_static("BALANCER_WORKER_NAME", member.url.name().as_bytes());
            env.set_static(
                "BALANCER_WORKER_ROUTE",
                member.route.as_deref().unwrap_or("").as_bytes(),
            );
            if let Some(session) = input.balancer.session {
                env.set_static("BALANCER_SESSION_STICKY", session.sticky.as_bytes());
                env.set_static("BALANCER_SESSION_ROUTE", &session.route);
            }
            if changed && input.balancer.route_changed_late {
                env.set_static("BALANCER_ROUTE_CHANGED", b"1");
            }
            let mut p = member.url.path.as_bytes().to_vec();
            p.extend_from_slice(rm.path());
            (&member.url, Cow::Owned(p))
        }
        _ => return Err(CgiError::new(500, "route and match disagree")),
    };

    let backend_type = route.backend_type(cfg);
    let canon = canonicalize(
        worker,
        &backend_path,
        &CanonOptions {
            pathinfo: input.env.canon_pathinfo.as_deref(),
            slashes: cfg.allow_encoded_slashes,
            nocanon: rm.nocanon,
            backend_type,
            document_root: &cfg.document_root,
        },
        input.fs,
    )?;
    let mut script_filename = script_filename(&canon.filename, backend_type, req.uri.query());
    if route.noquery
        && let Some(q) = script_filename.find('?')
    {
        script_filename.truncate(q);
    }

    let pass_auth = route.pass_authorization(cfg);
    let (headers, server_name, server_port) = fill_common(
        cfg,
        req,
        env,
        &Common {
            pass_auth,
            process_path: input.process_path,
            script_filename: &script_filename,
            script_uri: &req.uri.path,
            path_info: canon.path_info.as_deref(),
            context_prefix: b"",
            context_document_root: cfg.document_root.as_bytes(),
            path_translated: None,
            fixed: input.fixed,
        },
    )?;
    Ok(Filled {
        headers,
        server_name,
        server_port,
        script_filename,
        path_info: canon.path_info,
    })
}

/// What differs between a routed request and a handler-mode one for [`fill_common`].
struct Common<'a> {
    pass_auth: bool,
    process_path: Option<&'a [u8]>,
    script_filename: &'a str,
    /// The decoded path SCRIPT_NAME is cut from (`r->uri`: the index file's for a directory).
    script_uri: &'a [u8],
    path_info: Option<&'a [u8]>,
    context_prefix: &'a [u8],
    context_document_root: &'a [u8],
    /// PATH_TRANSLATED when known (handler mode); else DocumentRoot + PATH_INFO.
    path_translated: Option<&'a [u8]>,
    fixed: Option<&'a FixedParams>,
}

/// The CGI variables after the request environment, in Apache's order (`ap_add_common_vars`,
/// `ap_add_cgi_vars`).
fn fill_common<'a, V: Vars>(
    cfg: &Config,
    req: &Request<'a>,
    env: &mut V,
    c: &Common<'_>,
) -> Result<(Vec<Header<'a>>, String, u16), CgiError> {
    // What mod_ssl's and mod_http2's fixups put in the environment before the handler runs
    // (mod_ssl with `SSLOptions -StdEnvVars`; docs/reference/apache.md, mod_ssl and mod_http2).
    let tls = req.tls;
    if let Some(t) = tls {
        env.set_static("HTTPS", b"on");
        if let Some(sni) = &t.sni {
            env.set_static("SSL_TLS_SNI", sni.as_bytes());
        }
    }
    if req.protocol == "HTTP/2.0" {
        env.set_static("HTTP2", b"on");
        env.set_static("H2PUSH", b"off");
        env.set_static("H2_PUSH", b"off");
        env.set_static("H2_PUSHED", b"");
        env.set_static("H2_PUSHED_ON", b"");
    }
    let scheme = req.scheme();
    // Headers (ap_add_common_vars).
    let headers = effective_headers(req);
    let pass_auth = c.pass_auth;
    let (server_name, server_port) = server_name_port(cfg, req, &headers)?;
    // Numbers are written from the stack, not allocated.
    let mut digits = itoa::Buffer::new();
    let mut saw_content_length = false;
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case("content-type") {
            env.set_static("CONTENT_TYPE", value);
        } else if name.eq_ignore_ascii_case("content-length") {
            saw_content_length = true;
            if let Some(cl) = req.content_length {
                env.set_static("CONTENT_LENGTH", digits.format(cl).as_bytes());
            }
        } else if name.eq_ignore_ascii_case("proxy") {
            // httpoxy (CVE-2016-5387): never HTTP_PROXY.
        } else if name.eq_ignore_ascii_case("authorization")
            || name.eq_ignore_ascii_case("proxy-authorization")
        {
            if pass_auth {
                env.set_header(name, value);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") && req.content_length.is_some() {
            // The body is passed with a Content-Length; the coding is gone.
        } else if name.eq_ignore_ascii_case("max-forwards") {
            let v = max_forwards(req.method, value)?;
            env.set_static("HTTP_MAX_FORWARDS", &v);
        } else {
            env.set_header(name, value);
        }
    }
    if let (Some(cl), false) = (req.content_length, saw_content_length) {
        env.set_static("CONTENT_LENGTH", digits.format(cl).as_bytes());
    }

    // Copied only when SetEnv gave one (the table cannot lend it to itself).
    let set_path = env.get("PATH").map(<[u8]>::to_vec);
    let path_var = set_path
        .as_deref()
        .or(c.process_path)
        .unwrap_or(DEFAULT_PATH.as_bytes());
    match c
        .fixed
        .map(|f| &f.software)
        .filter(|r| r.holds(&[path_var, b"", SERVER_SOFTWARE.as_bytes()]))
    {
        Some(run) => env.set_run(run),
        None => {
            env.set_static("PATH", path_var);
            env.set_static("SERVER_SIGNATURE", b"");
            env.set_static("SERVER_SOFTWARE", SERVER_SOFTWARE.as_bytes());
        }
    }
    env.set_static("SERVER_NAME", server_name.as_bytes());
    env.set_static("SERVER_ADDR", IpText::new(req.local.ip()).as_bytes());
    env.set_static("SERVER_PORT", digits.format(server_port).as_bytes());
    env.set_static("REMOTE_ADDR", IpText::new(req.remote.ip()).as_bytes());
    let site = [
        cfg.document_root.as_bytes(),
        scheme.as_bytes(),
        c.context_prefix,
        c.context_document_root,
        server_admin(cfg).as_bytes(),
    ];
    match c.fixed.map(|f| &f.site).filter(|r| r.holds(&site)) {
        Some(run) => env.set_run(run),
        None => {
            env.set_static("DOCUMENT_ROOT", site[0]);
            env.set_static("REQUEST_SCHEME", site[1]);
            env.set_static("CONTEXT_PREFIX", site[2]);
            env.set_static("CONTEXT_DOCUMENT_ROOT", site[3]);
            env.set_static("SERVER_ADMIN", site[4]);
        }
    }
    env.set_static("SCRIPT_FILENAME", c.script_filename.as_bytes());
    env.set_static("REMOTE_PORT", digits.format(req.remote.port()).as_bytes());

    // ap_add_cgi_vars.
    env.set_static("GATEWAY_INTERFACE", b"CGI/1.1");
    env.set_static("SERVER_PROTOCOL", req.protocol.as_bytes());
    env.set_static("REQUEST_METHOD", req.method.as_bytes());
    env.set_static("QUERY_STRING", req.uri.query().unwrap_or("").as_bytes());
    env.set_static("REQUEST_URI", req.uri.raw.as_bytes());
    let uri_path = c.script_uri;
    match c.path_info.filter(|p| !p.is_empty()) {
        None => env.set_static("SCRIPT_NAME", uri_path),
        Some(pi) => {
            let cut = find_path_info(uri_path, pi);
            env.set_static("SCRIPT_NAME", &uri_path[..cut]);
            env.set_static("PATH_INFO", pi);
            match c.path_translated {
                Some(pt) => env.set_static("PATH_TRANSLATED", pt),
                None => {
                    let pi = merge_slashes(pi);
                    if fits_under_root(&cfg.document_root, &pi) {
                        let mut pt = cfg.document_root.trim_end_matches('/').as_bytes().to_vec();
                        pt.extend_from_slice(&pi);
                        env.set_static("PATH_TRANSLATED", &pt);
                    }
                }
            }
        }
    }
    Ok((headers, server_name, server_port))
}

/// Whether the URL path `path` appended to the directory `root` makes a file name Apache's core
/// can map: `apr_filepath_merge` refuses one where the root's length, the path's (leading
/// slashes dropped) and 4 exceed `PATH_MAX` (4096). Apache then sends no PATH_TRANSLATED
/// (docs/reference/apache.md 3.6).
pub fn fits_under_root(root: &str, path: &[u8]) -> bool {
    const PATH_MAX: usize = 4096;
    let start = path.iter().take_while(|&&b| b == b'/').count();
    root.len() + (path.len() - start) + 4 <= PATH_MAX
}

/// A request served by `SetHandler "proxy:…"` (handler mode): the file Apache's core mapped
/// the URL to, and what followed it.
#[derive(Debug, Clone, Copy)]
pub struct HandlerFacts<'a> {
    /// The handler's worker URL (`proxy:` taken off).
    pub worker: &'a WorkerUrl,
    /// The filesystem path (`r->filename`): an existing file, a directory, or the first
    /// component that does not exist.
    pub filename: &'a [u8],
    /// What followed `filename` in the path (`r->path_info`).
    pub path_info: &'a [u8],
    /// The decoded URL path of the file (the index file's for a directory request).
    pub script_uri: &'a [u8],
    /// `Alias` prefix, or empty.
    pub context_prefix: &'a [u8],
    /// `Alias` target, or the DocumentRoot.
    pub context_document_root: &'a [u8],
    /// No worker is defined for the URL: Apache's default reverse worker, which puts
    /// `proxy-nokeepalive=1` into the environment.
    pub default_worker: bool,
    /// What a sub-request for the path info maps to (PATH_TRANSLATED).
    pub path_translated: Option<&'a [u8]>,
}

/// Runs `f` with what SetEnvIf rules test about `req` (gathered only when a rule exists).
fn with_request_facts<R>(req: &Request<'_>, f: impl FnOnce(&RequestFacts<'_>) -> R) -> R {
    let headers = effective_headers(req);
    let remote_ip = ip_string(req.remote.ip());
    let local_ip = ip_string(req.local.ip());
    f(&RequestFacts {
        method: req.method,
        protocol: req.protocol,
        path: &req.uri.path,
        remote_ip: &remote_ip,
        local_ip: &local_ip,
        headers: &headers,
    })
}

/// The request environment in handler mode: the server's SetEnvIf and SetEnv, then what the
/// proxy handler adds.
pub fn handler_env(config: &Config, req: &Request<'_>, facts: &HandlerFacts<'_>) -> Env {
    let mut env = Env::new();
    if !config.setenvif.is_empty() {
        with_request_facts(req, |rf| apply_setenvif(&config.setenvif, rf, &mut env));
    }
    apply_setenv(&config.setenv, &mut env);
    if facts.default_worker {
        env.set_static("proxy-nokeepalive", b"1");
    }
    env
}

/// The BEGIN_REQUEST and PARAMS records of a handler-mode request (Apache 2.4's, observed:
/// docs/reference/apache.md §8): SCRIPT_FILENAME is `proxy:fcgi://host[:port]` and the file's
/// path as it is on disk (not %-encoded) for FPM, the path alone for GENERIC; SCRIPT_NAME,
/// PATH_INFO and PATH_TRANSLATED as for a CGI script.
pub fn encode_handler_params(
    config: &Config,
    req: &Request<'_>,
    facts: &HandlerFacts<'_>,
    env: &Env,
    process_path: Option<&[u8]>,
    keep_conn: bool,
) -> Result<crate::exchange::Preamble, CgiError> {
    let mut filename = String::with_capacity(facts.filename.len() + 32);
    filename.push_str("proxy:");
    facts.worker.push_canonical_authority(&mut filename);
    filename.push_str(&String::from_utf8_lossy(facts.filename));
    let script_filename = script_filename(&filename, config.backend_type, None);
    let common = handler_common(config, facts, &script_filename, process_path);
    if env.iter().all(|(name, _)| !may_be_cgi_name(name)) {
        // No variable set before (SetEnv, SetEnvIf, the default worker's `proxy-nokeepalive`)
        // that a CGI variable could replace or that is read back (PATH): they go first, then
        // the CGI variables straight into the records, in the order the table would keep.
        let size = params_size(req)
            + env
                .iter()
                .map(|(n, v)| n.len() + v.len() + 8)
                .sum::<usize>();
        return crate::exchange::write_preamble(keep_conn, size, |w| {
            for (name, value) in env.iter() {
                w.pair(name.as_bytes(), value);
            }
            fill_common(config, req, &mut Records(w), &common).map(drop)
        });
    }
    handler_params_table(config, req, env, &common, keep_conn)
}

/// Whether a CGI variable could have this name (the table compares names ignoring case): every
/// one is letters, digits and `_` (`HTTP_` names too), so `proxy-nokeepalive` could not.
fn may_be_cgi_name(name: &str) -> bool {
    name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// What [`fill_common`] takes for a handler-mode request.
fn handler_common<'a>(
    config: &Config,
    facts: &HandlerFacts<'a>,
    script_filename: &'a str,
    process_path: Option<&'a [u8]>,
) -> Common<'a> {
    Common {
        pass_auth: config.pass_authorization,
        process_path,
        script_filename,
        script_uri: facts.script_uri,
        path_info: Some(facts.path_info),
        context_prefix: facts.context_prefix,
        context_document_root: facts.context_document_root,
        path_translated: facts.path_translated,
        fixed: None,
    }
}

/// [`encode_handler_params`] through a table that starts from `env`.
fn handler_params_table(
    config: &Config,
    req: &Request<'_>,
    env: &Env,
    common: &Common<'_>,
    keep_conn: bool,
) -> Result<crate::exchange::Preamble, CgiError> {
    let mut table = env.clone();
    table.reserve(req.headers.len() + 28);
    fill_common(config, req, &mut table, common)?;
    Ok(crate::exchange::encode_preamble(
        &table.into_vec(),
        keep_conn,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PARAMS records of a preamble, as (name, value) pairs in order.
    fn decoded(p: &crate::exchange::Preamble) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut d = fastcgi::Decoder::default();
        d.feed(p.request());
        let mut stream = Vec::new();
        while let Ok(Some(r)) = d.decode() {
            if let fastcgi::Record::Stream {
                record_type: fastcgi::RecordType::Params,
                content,
                ..
            } = r
            {
                stream.extend_from_slice(&content);
            }
        }
        fastcgi::nv::decode_all(&stream, usize::MAX)
            .expect("PARAMS decode")
            .into_iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn handler_params_written_straight_are_the_tables() {
        let worker = WorkerUrl::parse("fcgi://127.0.0.1:9000").unwrap();
        let heads: [&[(&str, &[u8])]; 4] = [
            &[("Host", b"example.test:8080")],
            &[
                ("Host", b"example.test"),
                ("X-Dup", b"a"),
                ("x-dup", b"b"),
                ("Content-Type", b"text/plain"),
                ("Content-Length", b"3"),
                ("Authorization", b"Basic eDp5"),
                ("Max-Forwards", b"4"),
                ("Proxy", b"http://evil.test"),
                ("Bad_Name", b"dropped"),
            ],
            &[],
            &[("Host", b"[::1]:81"), ("Transfer-Encoding", b"chunked")],
        ];
        let targets = ["/a.php", "/dir/a.php/extra/p?x=1&y", "/%7Euser/i.php"];
        for (h, headers) in heads.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                for (e, pass_authorization) in (0..4).flat_map(|e| [(e, false), (e, true)]) {
                    let config = Config {
                        pass_authorization,
                        ..Config::default()
                    };
                    let uri = crate::uri::parse_target(target, &Default::default()).unwrap();
                    let req = Request {
                        method: if h == 1 { "POST" } else { "GET" },
                        protocol: if t == 2 { "HTTP/2.0" } else { "HTTP/1.1" },
                        uri: &uri,
                        headers,
                        remote: "192.0.2.7:50123".parse().unwrap(),
                        local: "127.0.0.1:8080".parse().unwrap(),
                        tls: None,
                        content_length: (h == 1 || h == 3).then_some(3),
                    };
                    let translated = b"/srv/www/extra/p".as_slice();
                    let facts = HandlerFacts {
                        worker: &worker,
                        filename: b"/srv/www/dir/a.php",
                        path_info: if t == 1 { b"/extra/p" } else { b"" },
                        script_uri: b"/dir/a.php",
                        context_prefix: b"",
                        context_document_root: b"/srv/www",
                        default_worker: false,
                        path_translated: (h == 2).then_some(translated),
                    };
                    // Nothing; a name no CGI variable has; one that replaces a CGI
                    // variable in place; PATH, which is read back.
                    let mut env = Env::new();
                    match e {
                        1 => env.set_static("proxy-nokeepalive", b"1".to_vec()),
                        2 => {
                            env.set_static("early", b"x".to_vec());
                            env.set_static("http_host", b"set.test".to_vec());
                        }
                        3 => env.set_static("PATH", b"/opt/bin".to_vec()),
                        _ => {}
                    }
                    let straight =
                        encode_handler_params(&config, &req, &facts, &env, Some(b"/bin"), true);
                    let filename = "proxy:fcgi://127.0.0.1:9000/srv/www/dir/a.php";
                    let script_filename = script_filename(filename, config.backend_type, None);
                    let common = handler_common(&config, &facts, &script_filename, Some(b"/bin"));
                    let table = handler_params_table(&config, &req, &env, &common, true);
                    let (straight, table) = match (straight, table) {
                        (Ok(s), Ok(t)) => (s, t),
                        (Err(a), Err(b)) => {
                            // HTTP/1.1 without Host: the same answer either way.
                            assert_eq!((a.status, h, t == 2), (b.status, 2, false));
                            continue;
                        }
                        (a, b) => panic!("headers {h}, target {target}: {a:?} / {b:?}"),
                    };
                    let got = decoded(&straight);
                    assert_eq!(
                        got,
                        decoded(&table),
                        "headers {h}, target {target}, env {e}"
                    );
                    if e == 1 {
                        assert_eq!(got[0], (b"proxy-nokeepalive".to_vec(), b"1".to_vec()));
                    }
                    assert!(got.iter().any(|(n, v)| n == b"SCRIPT_FILENAME"
                        && v.as_slice() == script_filename.as_bytes()));
                }
            }
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_written_as_ipv4() {
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(ip_string(mapped), "10.0.0.1");
        assert_eq!(IpText::new(mapped).as_bytes(), b"10.0.0.1");
    }

    #[test]
    fn ip_text_is_the_address_as_written() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "192.168.10.1",
            "9.10.99.100",
            "101.110.200.209",
            "::1",
            "2001:db8::7",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let want = ip.to_canonical().to_string();
            assert_eq!(IpText::new(ip).as_bytes(), want.as_bytes());
            assert_eq!(ip_string(ip), want);
        }
    }

    #[test]
    fn find_path_info_cases() {
        fn f<'a>(u: &'a str, p: &str) -> &'a str {
            &u[..find_path_info(u.as_bytes(), p.as_bytes())]
        }
        assert_eq!(
            f("/myapp/foo.php/extra/path", "/foo.php/extra/path"),
            "/myapp"
        );
        assert_eq!(
            f("/myapp/foo.php/extra/path", "/app/foo.php/extra/path"),
            "/myapp"
        );
        assert_eq!(
            f("/myapp/foo.php/extra/path", "/extra/path"),
            "/myapp/foo.php"
        );
        assert_eq!(f("/myapp/a b", "/a%20b"), "/myapp/a b");
        assert_eq!(f("/myapp/a b", "/a b"), "/myapp");
        assert_eq!(f("/x", "/x"), "");
        assert_eq!(f("/docr/x.php/", "/"), "/docr/x.php");
        assert_eq!(f("/a//b", "/b"), "/a");
        assert_eq!(f("", "/x"), "");
        assert_eq!(f("/abc", ""), "/abc");
        assert_eq!(f("/bal/x.php/y", "/sub/x.php/y"), "/bal");
    }

    #[test]
    fn http2env_in_is_http2env() {
        let long = "X-".to_string() + &"a".repeat(57);
        let longer = long.clone() + "b";
        for name in [
            "Host",
            "user-agent",
            "X_Under",
            "Remote.User",
            "x-é",
            "",
            "a-",
            long.as_str(),
            longer.as_str(),
            &"Y".repeat(200),
            &("Y".repeat(200) + "."),
        ] {
            let mut buf = [0u8; 64];
            let want = http2env(name).map(String::into_bytes);
            assert_eq!(
                http2env_in(name, &mut buf).map(Cow::into_owned),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn http2env_rules() {
        assert_eq!(http2env("X-Multi").as_deref(), Some("HTTP_X_MULTI"));
        assert_eq!(http2env("user-agent").as_deref(), Some("HTTP_USER_AGENT"));
        assert_eq!(http2env("X_Under"), None);
        assert_eq!(http2env("Remote.User"), None);
        assert_eq!(http2env("X-A@b"), None);
    }

    #[test]
    fn generic_script_filename() {
        assert_eq!(
            script_filename(
                "proxy:fcgi://localhost:4000/a/b",
                BackendType::Generic,
                None
            ),
            "/a/b"
        );
        assert_eq!(
            script_filename("proxy:fcgi://h/a?x=1", BackendType::Generic, Some("x=1")),
            "/a"
        );
        assert_eq!(
            script_filename("proxy:fcgi://h/a?x=1", BackendType::Fpm, Some("x=1")),
            "proxy:fcgi://h/a?x=1"
        );
        assert_eq!(
            script_filename("/real/file.php", BackendType::Generic, None),
            "/real/file.php"
        );
    }

    #[test]
    fn max_forwards_rules() {
        assert_eq!(max_forwards("GET", b"5").unwrap(), b"4");
        assert_eq!(max_forwards("GET", b"0").unwrap_err().status, 400);
        assert_eq!(max_forwards("OPTIONS", b"0").unwrap(), b"0");
        assert_eq!(max_forwards("GET", b"-1").unwrap_err().status, 400);
        assert_eq!(max_forwards("GET", b"x").unwrap_err().status, 400);
    }
}
