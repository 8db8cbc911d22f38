//! The access log: one line per request, on stderr; or, when configured (`[access_log]`,
//! Apache's `CustomLog`), Apache-style lines (`LogFormat` syntax) or JSON lines, to a file that
//! SIGUSR1 reopens.
//!
//! A serving thread collects its lines in a buffer and writes them in one `write(2)` at most
//! [`FLUSH_AFTER`] after the first of them (or at once past [`FLUSH_BYTES`]), instead of one
//! formatted `tracing` event and one write per request, which cost about a tenth of the
//! proxy's CPU for small requests. Where no serving thread installed its buffer (tests, the
//! simulator), a line is a `tracing` event under target `access`, as before.
//!
//! The line: `2026-12-06T13:09:38.152202Z  INFO access: 127.0.0.1:37660 "GET /x" 200 2ms
//! fcgi://127.0.0.1:9000/` (time in UTC, client, method and target, status, time to the
//! response head, the backend that answered or `-`). `RUST_LOG` decides whether it is written,
//! as for every log line (`RUST_LOG=warn` turns it off).

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// Longest a line waits in the buffer.
pub const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Buffered bytes that are written at once.
pub const FLUSH_BYTES: usize = 64 * 1024;

struct Sink {
    buf: Vec<u8>,
    wake: Arc<Notify>,
    /// `2026-12-06T13:09:38.` for the second in `second`.
    stamp: [u8; 20],
    second: u64,
}

thread_local! {
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
}

/// Whether the built-in access lines are wanted (`RUST_LOG`; not when an Apache-style access
/// log is configured, whose lines the front end writes when a response is done).
pub fn enabled() -> bool {
    custom().is_none() && tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// Gives the calling thread a buffer; the returned future writes it out and must run on the
/// same thread (spawn it on the thread's current-thread runtime). It never finishes; call
/// [`flush`] when the thread stops serving.
pub fn install() -> impl Future<Output = ()> + Send + 'static {
    let wake = Arc::new(Notify::new());
    SINK.with(|s| {
        *s.borrow_mut() = Some(Sink {
            buf: Vec::with_capacity(FLUSH_BYTES),
            wake: wake.clone(),
            stamp: [0; 20],
            second: u64::MAX,
        })
    });
    async move {
        loop {
            wake.notified().await;
            tokio::time::sleep(FLUSH_AFTER).await;
            flush();
        }
    }
}

/// Writes what the calling thread has buffered.
pub fn flush() {
    SINK.with(|s| {
        if let Some(sink) = s.borrow_mut().as_mut() {
            write_out(&mut sink.buf);
        }
    });
}

fn write_out(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    // A log that cannot be written must not stop the serving.
    let file = ACTIVE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|a| a.file.lock().unwrap_or_else(|p| p.into_inner()).clone());
    match file {
        // One write(2) per buffer, appended (O_APPEND) whole.
        Some(f) => {
            let _ = (&*f).write_all(buf);
        }
        None => {
            let _ = std::io::stderr().lock().write_all(buf);
        }
    }
    buf.clear();
}

/// One request's line.
pub fn line(
    peer: SocketAddr,
    method: &http::Method,
    target: &http::Uri,
    status: u16,
    elapsed: Duration,
    member: Option<&str>,
) {
    let member = member.unwrap_or("-");
    let ms = elapsed.as_millis();
    let written = SINK.with(|s| {
        let mut s = s.borrow_mut();
        let Some(sink) = s.as_mut() else {
            return false;
        };
        let was_empty = sink.buf.is_empty();
        sink.timestamp(SystemTime::now());
        sink.buf.extend_from_slice(b"  INFO access: ");
        push_addr(&mut sink.buf, peer);
        let buf = &mut sink.buf;
        buf.extend_from_slice(b" \"");
        buf.extend_from_slice(method.as_str().as_bytes());
        buf.push(b' ');
        match origin_form(target) {
            Some(t) => buf.extend_from_slice(t.as_bytes()),
            None => {
                let _ = write!(buf, "{target}");
            }
        }
        buf.extend_from_slice(b"\" ");
        let mut digits = itoa::Buffer::new();
        buf.extend_from_slice(digits.format(status).as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(digits.format(ms).as_bytes());
        buf.extend_from_slice(b"ms ");
        buf.extend_from_slice(member.as_bytes());
        buf.push(b'\n');
        if sink.buf.len() >= FLUSH_BYTES {
            write_out(&mut sink.buf);
        } else if was_empty {
            sink.wake.notify_one();
        }
        true
    });
    if !written {
        tracing::info!(
            target: "access",
            "{peer} \"{method} {target}\" {status} {ms}ms {member}"
        );
    }
}

/// The request target as received when it is in origin form (`/path?query`), without
/// formatting; `None` for the other forms.
pub fn origin_form(uri: &http::Uri) -> Option<&str> {
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, None, Some(pq)) => Some(pq.as_str()),
        _ => None,
    }
}

/// `ip:port` (`Display` for addresses is slow: it pads).
fn push_addr(buf: &mut Vec<u8>, addr: SocketAddr) {
    let mut digits = itoa::Buffer::new();
    match addr {
        SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                buf.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        SocketAddr::V6(a) => {
            let _ = write!(buf, "[{}]", a.ip());
        }
    }
    buf.push(b':');
    buf.extend_from_slice(digits.format(addr.port()).as_bytes());
}

impl Sink {
    /// Appends `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (UTC).
    fn timestamp(&mut self, now: SystemTime) {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        if secs != self.second {
            self.second = secs;
            let (y, mo, day) = civil_from_days((secs / 86_400) as i64);
            let t = secs % 86_400;
            let s = format!(
                "{y:04}-{mo:02}-{day:02}T{:02}:{:02}:{:02}.",
                t / 3600,
                t / 60 % 60,
                t % 60
            );
            let n = s.len().min(self.stamp.len());
            self.stamp[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
        self.buf.extend_from_slice(&self.stamp);
        // Six digits, zero-padded.
        let micros = d.subsec_micros() + 1_000_000;
        let mut digits = itoa::Buffer::new();
        self.buf
            .extend_from_slice(&digits.format(micros).as_bytes()[1..]);
        self.buf.push(b'Z');
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_793), (2026, 12, 6));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn addresses() {
        let mut b = Vec::new();
        push_addr(&mut b, "10.0.0.1:8080".parse().unwrap());
        push_addr(&mut b, "[::1]:80".parse().unwrap());
        assert_eq!(b, b"10.0.0.1:8080[::1]:80");
    }

    #[test]
    fn timestamp_matches_rfc3339_utc() {
        let mut sink = Sink {
            buf: Vec::new(),
            wake: Arc::new(Notify::new()),
            stamp: [0; 20],
            second: u64::MAX,
        };
        let t = UNIX_EPOCH + Duration::from_micros(1_796_562_578_152_202);
        sink.timestamp(t);
        assert_eq!(sink.buf, b"2026-12-06T13:09:38.152202Z");
        sink.buf.clear();
        sink.timestamp(t + Duration::from_micros(5));
        assert_eq!(sink.buf, b"2026-12-06T13:09:38.152207Z");
    }

    #[test]
    fn log_format_parsing() {
        let f = LogFormat::parse(r#"%h %{X-A}i %>s \"%r\" %{ms}T%%"#).unwrap();
        assert_eq!(
            f.request_headers,
            vec![http::HeaderName::from_static("x-a")]
        );
        assert!(LogFormat::parse("%400,501{User-agent}i").is_err());
        assert!(LogFormat::parse("%Z").is_err());
        assert!(LogFormat::parse("%{x").is_err());
        assert!(LogFormat::parse("trailing %").is_err());
        for nick in ["common", "combined", "vhost_combined", "referer", "agent"] {
            let fmt = crate::config::log::nickname(nick).unwrap();
            LogFormat::parse(fmt).unwrap();
        }
    }

    #[test]
    fn escaping_as_apache() {
        let mut out = Vec::new();
        push_escaped(&mut out, b"a\"b\\c\nd\te\x01f\xe9");
        assert_eq!(out, br#"a\"b\\c\nd\te\x01f\xe9"#);
    }

    #[test]
    fn clf_time() {
        let at = |secs: u64, zone: &jiff::tz::TimeZone| {
            let mut out = Vec::new();
            push_clf_time_in(&mut out, UNIX_EPOCH + Duration::from_secs(secs), zone);
            String::from_utf8(out).unwrap()
        };
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(at(1_796_562_578, &utc), "[06/Dec/2026:13:09:38 +0000]");
        // Central Europe: +0100 in winter, +0200 in summer, the date following the offset.
        let cet = jiff::tz::TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        assert_eq!(at(1_796_562_578, &cet), "[06/Dec/2026:14:09:38 +0100]");
        assert_eq!(at(1_781_740_800, &cet), "[18/Jun/2026:02:00:00 +0200]");
        // West of UTC, and a half-hour offset.
        let ny = jiff::tz::TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(at(1_796_562_578, &ny), "[06/Dec/2026:08:09:38 -0500]");
        let india =
            jiff::tz::TimeZone::fixed(jiff::tz::Offset::from_seconds(5 * 3600 + 1800).unwrap());
        assert_eq!(at(1_796_562_578, &india), "[06/Dec/2026:18:39:38 +0530]");
        // Just after midnight UTC, still the day before in New York.
        assert_eq!(at(1_796_515_200, &ny), "[05/Dec/2026:19:00:00 -0500]");
    }
}

// ---------------------------------------------------------------------------------------------
// Apache-style access logs: `LogFormat` strings, a file reopened at SIGUSR1, JSON lines.
// ---------------------------------------------------------------------------------------------

/// One piece of a `LogFormat`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Text(Vec<u8>),
    /// `%h`, `%a`: the client's address (no DNS lookups).
    RemoteIp,
    /// `%{remote}p`.
    RemotePort,
    /// `%A`.
    LocalIp,
    /// `%p`, `%{canonical}p`: the server's port as the request names it (the Host's port, else
    /// ServerName's, else 80 or 443), as `SERVER_PORT`.
    CanonicalPort,
    /// `%{local}p`: the port the request came in on.
    LocalPort,
    /// `%l`, `%u`: no identd, no authenticated user here.
    Dash,
    /// `%t`: `[06/Dec/2026:16:40:21 +0000]`, when the request came.
    Time,
    /// `%r`.
    RequestLine,
    /// `%m`.
    Method,
    /// `%U`.
    Path,
    /// `%q`: `?query` or nothing.
    Query,
    /// `%H`.
    Protocol,
    /// `%s`, `%>s`.
    Status,
    /// `%b` (`-` for none) and `%B`.
    BodyBytes {
        clf: bool,
    },
    /// `%O`: bytes sent, response head included.
    BytesSent,
    /// `%D`, `%{us}T`: microseconds; `%{ms}T`: milliseconds; `%T`, `%{s}T`: seconds.
    Taken {
        divisor: u64,
    },
    /// `%{Name}i`.
    RequestHeader(http::HeaderName),
    /// `%{Name}o`.
    ResponseHeader(http::HeaderName),
    /// `%v`: the configured ServerName (else the local address).
    ServerName,
    /// `%V`: the host the request named (else `%v`).
    RequestHost,
    /// `%P`.
    Pid,
    /// `%k`: requests on this connection that kept it open, less one.
    KeepAlives,
    /// `%X`: `+` if the connection may serve another request, `-` if it closes.
    ConnStatus,
    /// `%%`.
    Percent,
}

/// A parsed `LogFormat` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    items: Vec<Item>,
    /// Request header fields the format names (captured per request).
    pub request_headers: Vec<http::HeaderName>,
    /// Response header fields the format names.
    pub response_headers: Vec<http::HeaderName>,
}

impl LogFormat {
    /// Parses Apache's `LogFormat` syntax: `%x`, `%{arg}x`, `%>s`, `%<s`, conditions such as
    /// `%400,501{User-agent}i` are refused, `\n`, `\t` and `\"` in the text.
    pub fn parse(fmt: &str) -> Result<LogFormat, String> {
        let mut items = Vec::new();
        let mut text = Vec::new();
        let b = fmt.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' if i + 1 < b.len() => {
                    text.push(match b[i + 1] {
                        b'n' => b'\n',
                        b't' => b'\t',
                        other => other,
                    });
                    i += 2;
                }
                b'%' => {
                    i += 1;
                    let mut arg: Option<String> = None;
                    while i < b.len() && matches!(b[i], b'<' | b'>') {
                        i += 1;
                    }
                    if i < b.len() && (b[i].is_ascii_digit() || b[i] == b'!') {
                        return Err(format!(
                            "log format '{fmt}': status conditions (%400,501x) are not supported"
                        ));
                    }
                    if i < b.len() && b[i] == b'{' {
                        let end = fmt[i..]
                            .find('}')
                            .ok_or_else(|| format!("log format '{fmt}': '{{' without '}}'"))?;
                        arg = Some(fmt[i + 1..i + end].to_owned());
                        i += end + 1;
                    }
                    while i < b.len() && matches!(b[i], b'<' | b'>') {
                        i += 1;
                    }
                    let Some(&c) = b.get(i) else {
                        return Err(format!("log format '{fmt}' ends with '%'"));
                    };
                    i += 1;
                    let header = |a: &Option<String>| -> Result<http::HeaderName, String> {
                        let a = a.as_deref().unwrap_or("");
                        http::HeaderName::from_bytes(a.as_bytes())
                            .map_err(|_| format!("log format '{fmt}': bad header name '{a}'"))
                    };
                    let item = match (c, arg.as_deref()) {
                        (b'h' | b'a', None | Some("c")) => Item::RemoteIp,
                        (b'A', None) => Item::LocalIp,
                        (b'p', None | Some("canonical")) => Item::CanonicalPort,
                        (b'p', Some("local")) => Item::LocalPort,
                        (b'p', Some("remote")) => Item::RemotePort,
                        (b'l' | b'u', None) => Item::Dash,
                        (b't', None) => Item::Time,
                        (b'r', None) => Item::RequestLine,
                        (b'm', None) => Item::Method,
                        (b'U', None) => Item::Path,
                        (b'q', None) => Item::Query,
                        (b'H', None) => Item::Protocol,
                        (b's', None) => Item::Status,
                        (b'b', None) => Item::BodyBytes { clf: true },
                        (b'B', None) => Item::BodyBytes { clf: false },
                        (b'O', None) => Item::BytesSent,
                        (b'D', None) | (b'T', Some("us")) => Item::Taken { divisor: 1 },
                        (b'T', Some("ms")) => Item::Taken { divisor: 1000 },
                        (b'T', None | Some("s")) => Item::Taken { divisor: 1_000_000 },
                        (b'i', Some(_)) => Item::RequestHeader(header(&arg)?),
                        (b'o', Some(_)) => Item::ResponseHeader(header(&arg)?),
                        (b'v', None) => Item::ServerName,
                        (b'V', None) => Item::RequestHost,
                        (b'P', None) => Item::Pid,
                        (b'k', None) => Item::KeepAlives,
                        (b'X', None) => Item::ConnStatus,
                        (b'%', None) => Item::Percent,
                        _ => {
                            let a = arg.map(|a| format!("{{{a}}}")).unwrap_or_default();
                            return Err(format!(
                                "log format '{fmt}': %{a}{} is not supported",
                                c as char
                            ));
                        }
                    };
                    if !text.is_empty() {
                        items.push(Item::Text(std::mem::take(&mut text)));
                    }
                    items.push(item);
                }
                other => {
                    text.push(other);
                    i += 1;
                }
            }
        }
        if !text.is_empty() {
            items.push(Item::Text(text));
        }
        let mut request_headers = Vec::new();
        let mut response_headers = Vec::new();
        for it in &items {
            match it {
                Item::RequestHeader(h) if !request_headers.contains(h) => {
                    request_headers.push(h.clone())
                }
                Item::ResponseHeader(h) if !response_headers.contains(h) => {
                    response_headers.push(h.clone())
                }
                _ => {}
            }
        }
        Ok(LogFormat {
            items,
            request_headers,
            response_headers,
        })
    }
}

/// What one request's Apache-style line is made of.
#[derive(Debug, Clone)]
pub struct Record {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// When the request came (wall clock, for `%t`).
    pub received: SystemTime,
    pub taken: Duration,
    pub method: http::Method,
    /// The target as received (origin form for HTTP/2).
    pub target: String,
    pub version: http::Version,
    pub status: u16,
    pub body_bytes: u64,
    pub head_bytes: u64,
    /// The fields of [`LogFormat::request_headers`], in that order.
    pub request_headers: Vec<Option<http::HeaderValue>>,
    /// The fields of [`LogFormat::response_headers`], in that order.
    pub response_headers: Vec<Option<http::HeaderValue>>,
    /// The Host the request named (without port), if any.
    pub host: Option<String>,
    /// The port of the Host, if it had one.
    pub host_port: Option<u16>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Requests on the connection before this one.
    pub keepalives: u64,
    /// Whether the connection stays open after it.
    pub keeps_open: bool,
}

/// The active access log settings.
#[derive(Debug)]
pub struct Active {
    /// `None`: JSON lines.
    pub format: Option<LogFormat>,
    path: Option<std::path::PathBuf>,
    file: std::sync::Mutex<Option<Arc<std::fs::File>>>,
    /// `%v`.
    server_name: Option<String>,
    /// The port of ServerName, if it has one.
    server_port: Option<u16>,
}

static ACTIVE: std::sync::RwLock<Option<Arc<Active>>> = std::sync::RwLock::new(None);

impl Active {
    /// Checks the settings and opens the file (a reload that cannot is refused).
    pub fn prepare(
        cfg: &crate::config::log::AccessLog,
        server_name: Option<&str>,
    ) -> Result<Active, String> {
        let format = if cfg.json {
            None
        } else {
            let spec = cfg.format.as_deref().unwrap_or("combined");
            let fmt = crate::config::log::nickname(spec).unwrap_or(spec);
            Some(LogFormat::parse(fmt)?)
        };
        let path = cfg.path.as_ref().map(std::path::PathBuf::from);
        let file = match &path {
            Some(p) => Some(Arc::new(open_log(p)?)),
            None => None,
        };
        let parsed = server_name.and_then(|s| crate::uri::parse_host(s.as_bytes()).ok());
        Ok(Active {
            format,
            path,
            file: std::sync::Mutex::new(file),
            server_port: parsed.and_then(|h| h.port),
            server_name: server_name.map(|s| {
                s.rsplit_once(':')
                    .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                    .map_or(s, |(h, _)| h)
                    .to_owned()
            }),
        })
    }
}

/// Checks the format of `cfg` without opening anything (`check-config`).
pub fn check(cfg: &crate::config::log::AccessLog) -> Result<(), String> {
    if !cfg.json {
        let spec = cfg.format.as_deref().unwrap_or("combined");
        LogFormat::parse(crate::config::log::nickname(spec).unwrap_or(spec))?;
    }
    Ok(())
}

fn open_log(p: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| format!("access log {}: {e}", p.display()))
}

/// Makes `a` the access log (`None`: the built-in line on stderr).
pub fn activate(a: Option<Active>) {
    flush();
    let mut w = ACTIVE.write().unwrap_or_else(|p| p.into_inner());
    *w = a.map(Arc::new);
}

/// The Apache-style access log, when one is configured.
pub fn custom() -> Option<Arc<Active>> {
    ACTIVE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .cloned()
}

/// SIGUSR1: opens the log file again (after logrotate moved it).
pub fn reopen() -> Result<(), String> {
    let Some(a) = custom() else {
        return Ok(());
    };
    flush();
    let Some(p) = &a.path else {
        return Ok(());
    };
    let f = open_log(p)?;
    *a.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    Ok(())
}

/// Writes one request's line (to the calling thread's buffer when it has one).
pub fn record(a: &Active, r: &Record) {
    let mut line = Vec::with_capacity(256);
    match &a.format {
        Some(f) => format_line(f, a, r, &mut line),
        None => json_line(r, &mut line),
    }
    line.push(b'\n');
    let buffered = SINK.with(|s| {
        let mut s = s.borrow_mut();
        let Some(sink) = s.as_mut() else {
            return false;
        };
        let was_empty = sink.buf.is_empty();
        sink.buf.extend_from_slice(&line);
        if sink.buf.len() >= FLUSH_BYTES {
            write_out(&mut sink.buf);
        } else if was_empty {
            sink.wake.notify_one();
        }
        true
    });
    if !buffered {
        write_out(&mut line);
    }
}

/// Apache's escaping of logged request data (`ap_escape_logitem`): `"` and `\\` escaped,
/// control and non-ASCII bytes as `\\xhh` (`\\n`, `\\r`, `\\t` by name).
fn push_escaped(out: &mut Vec<u8>, v: &[u8]) {
    for &c in v {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0b => out.extend_from_slice(b"\\v"),
            c if !(0x20..0x7f).contains(&c) => {
                let _ = write!(out, "\\x{c:02x}");
            }
            c => out.push(c),
        }
    }
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn push_ip(out: &mut Vec<u8>, a: SocketAddr) {
    let _ = write!(out, "{}", a.ip().to_canonical());
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The system's time zone (`TZ`, else `/etc/localtime`), read once: `%t` is local time, as
/// Apache writes it. One that cannot be read is UTC.
fn local_zone() -> &'static jiff::tz::TimeZone {
    static ZONE: std::sync::OnceLock<jiff::tz::TimeZone> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC))
}

/// `[06/Dec/2026:17:40:21 +0100]`: local time with its offset from UTC.
fn push_clf_time(out: &mut Vec<u8>, t: SystemTime) {
    push_clf_time_in(out, t, local_zone());
}

fn push_clf_time_in(out: &mut Vec<u8>, t: SystemTime, zone: &jiff::tz::TimeZone) {
    let utc = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let offset = jiff::Timestamp::from_second(i64::try_from(utc).unwrap_or(i64::MAX))
        .map_or(0, |ts| zone.to_offset(ts).seconds());
    let secs = utc.saturating_add_signed(i64::from(offset));
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    let (sign, off) = if offset < 0 {
        ('-', offset.unsigned_abs())
    } else {
        ('+', offset.unsigned_abs())
    };
    let _ = write!(
        out,
        "[{d:02}/{}/{y:04}:{:02}:{:02}:{:02} {sign}{:02}{:02}]",
        MONTHS[(mo - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60,
        off / 3600,
        off / 60 % 60,
    );
}

fn format_line(f: &LogFormat, a: &Active, r: &Record, out: &mut Vec<u8>) {
    let (path, query) = match r.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (r.target.as_str(), None),
    };
    let mut digits = itoa::Buffer::new();
    for it in &f.items {
        match it {
            Item::Text(t) => out.extend_from_slice(t),
            Item::RemoteIp => push_ip(out, r.peer),
            Item::RemotePort => out.extend_from_slice(digits.format(r.peer.port()).as_bytes()),
            Item::LocalIp => push_ip(out, r.local),
            Item::LocalPort => out.extend_from_slice(digits.format(r.local.port()).as_bytes()),
            Item::CanonicalPort => {
                let port = r
                    .host_port
                    .or(a.server_port)
                    .unwrap_or(if r.tls { 443 } else { 80 });
                out.extend_from_slice(digits.format(port).as_bytes());
            }
            Item::Dash => out.push(b'-'),
            Item::Time => push_clf_time(out, r.received),
            Item::RequestLine => {
                push_escaped(out, r.method.as_str().as_bytes());
                out.push(b' ');
                push_escaped(out, r.target.as_bytes());
                out.push(b' ');
                out.extend_from_slice(protocol(r.version).as_bytes());
            }
            Item::Method => push_escaped(out, r.method.as_str().as_bytes()),
            Item::Path => push_escaped(out, path.as_bytes()),
            Item::Query => {
                if let Some(q) = query {
                    out.push(b'?');
                    push_escaped(out, q.as_bytes());
                }
            }
            Item::Protocol => out.extend_from_slice(protocol(r.version).as_bytes()),
            Item::Status => out.extend_from_slice(digits.format(r.status).as_bytes()),
            Item::BodyBytes { clf } => {
                if *clf && r.body_bytes == 0 {
                    out.push(b'-');
                } else {
                    out.extend_from_slice(digits.format(r.body_bytes).as_bytes());
                }
            }
            Item::BytesSent => {
                out.extend_from_slice(digits.format(r.body_bytes + r.head_bytes).as_bytes())
            }
            Item::Taken { divisor } => {
                let us = u64::try_from(r.taken.as_micros()).unwrap_or(u64::MAX);
                out.extend_from_slice(digits.format(us / divisor).as_bytes());
            }
            Item::RequestHeader(h) => {
                let i = f.request_headers.iter().position(|x| x == h);
                match i
                    .and_then(|i| r.request_headers.get(i))
                    .and_then(Option::as_ref)
                {
                    Some(v) => push_escaped(out, v.as_bytes()),
                    None => out.push(b'-'),
                }
            }
            Item::ResponseHeader(h) => {
                let i = f.response_headers.iter().position(|x| x == h);
                match i
                    .and_then(|i| r.response_headers.get(i))
                    .and_then(Option::as_ref)
                {
                    Some(v) => push_escaped(out, v.as_bytes()),
                    None => out.push(b'-'),
                }
            }
            Item::ServerName => match &a.server_name {
                Some(n) => out.extend_from_slice(n.as_bytes()),
                None => push_ip(out, r.local),
            },
            Item::RequestHost => match (&r.host, &a.server_name) {
                (Some(h), _) => push_escaped(out, h.as_bytes()),
                (None, Some(n)) => out.extend_from_slice(n.as_bytes()),
                (None, None) => push_ip(out, r.local),
            },
            Item::Pid => out.extend_from_slice(digits.format(std::process::id()).as_bytes()),
            Item::KeepAlives => {
                // Apache counts the requests that kept the connection open, this one included,
                // and logs one less: a request that closes adds nothing.
                let n = if r.keeps_open {
                    r.keepalives
                } else {
                    r.keepalives.saturating_sub(1)
                };
                out.extend_from_slice(digits.format(n).as_bytes());
            }
            Item::ConnStatus => out.push(if r.keeps_open { b'+' } else { b'-' }),
            Item::Percent => out.push(b'%'),
        }
    }
}

/// One JSON object: time (RFC 3339, UTC), client, request, status, sizes, time taken, the
/// Referer, User-Agent and Host fields.
fn json_line(r: &Record, out: &mut Vec<u8>) {
    let mut time = Vec::new();
    let mut sink = Sink {
        buf: Vec::new(),
        wake: Arc::new(Notify::new()),
        stamp: [0; 20],
        second: u64::MAX,
    };
    sink.timestamp(r.received);
    time.extend_from_slice(&sink.buf);
    let header = |name: &http::HeaderName| -> Option<String> {
        r.request_headers
            .iter()
            .zip(json_headers())
            .find(|(_, n)| n == name)
            .and_then(|(v, _)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let v = serde_json::json!({
        "time": String::from_utf8_lossy(&time),
        "remote_addr": r.peer.ip().to_canonical().to_string(),
        "remote_port": r.peer.port(),
        "method": r.method.as_str(),
        "uri": r.target,
        "protocol": protocol(r.version),
        "status": r.status,
        "body_bytes": r.body_bytes,
        "bytes_sent": r.body_bytes + r.head_bytes,
        "duration_us": u64::try_from(r.taken.as_micros()).unwrap_or(u64::MAX),
        "host": r.host,
        "referer": header(&http::header::REFERER),
        "user_agent": header(&http::header::USER_AGENT),
    });
    let _ = serde_json::to_writer(&mut *out, &v);
}

/// The request header fields a JSON line carries, in [`Record::request_headers`] order.
pub fn json_headers() -> [http::HeaderName; 2] {
    [http::header::REFERER, http::header::USER_AGENT]
}

impl Active {
    /// The request header fields a line needs.
    pub fn request_headers(&self) -> Vec<http::HeaderName> {
        match &self.format {
            Some(f) => f.request_headers.clone(),
            None => json_headers().to_vec(),
        }
    }

    /// The response header fields a line needs.
    pub fn response_headers(&self) -> &[http::HeaderName] {
        match &self.format {
            Some(f) => &f.response_headers,
            None => &[],
        }
    }
}
