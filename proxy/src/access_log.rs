//! The access log: one line per request, on stderr.
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

/// Whether access lines are wanted (`RUST_LOG`).
pub fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
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
    let _ = std::io::stderr().lock().write_all(buf);
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
}
