//! Files of an Apache site that no handler claims, served as Apache's default handler does:
//! GET, HEAD (and POST, which Apache answers with the file too), a single byte Range (with
//! If-Range), Last-Modified with If-Modified-Since and If-Unmodified-Since, and Apache's
//! default ETag (`FileETag MTime Size`: `"<size>-<mtime in microseconds>"` in hex) with
//! If-None-Match. Which file, and whether it may be served at all (roots, symbolic links,
//! access), is decided before ([`crate::site::decide`]).
//!
//! The filesystem is touched in one trip off the serving thread ([`open`], called in the same
//! blocking task as the decision): open, fstat and, for a file of up to [`READ_WHOLE`] bytes,
//! the whole read. A thread-pool round trip costs more than serving a small file, and a file
//! server that makes one per step (open, stat, each read) spends most of its time in them.
//! The header grammar is the maintained crates' (`httpdate`, `http-range-header`, `mime_guess`).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use crate::answers;
use crate::body::{self, BodyError, ProxyBody};

/// Files up to this size are read whole in the trip that opens them.
pub const READ_WHOLE: u64 = 256 * 1024;
/// The read size for larger files, streamed at the client's pace. Larger reads cost less CPU
/// per file but hold more memory per download (hyper queues several chunks for writing): 256
/// KiB took 1.2 MiB per connection with 400 clients downloading 1 MiB files, 64 KiB 0.4 MiB.
const CHUNK: usize = 64 * 1024;
/// Chunks of a file in flight to the client at once.
const DEPTH: usize = 2;

/// What the filesystem said about a file to serve.
#[derive(Debug)]
pub enum Opened {
    /// Not a method the default handler answers (nothing was opened).
    MethodNotAllowed,
    /// Gone, not a regular file, or not readable.
    NotFound,
    File {
        size: u64,
        modified: Option<SystemTime>,
        content: Content,
        /// The media type, from the name's extension.
        mime: &'static str,
    },
}

#[derive(Debug)]
pub enum Content {
    /// HEAD: nothing read.
    None,
    /// The whole file.
    Whole(Bytes),
    /// A larger file, open, read when the response streams.
    Open(std::fs::File),
}

/// Opens the file at `path` for a `method` request and, when small, reads it. Blocking.
pub fn open(path: Vec<u8>, method: &Method) -> Opened {
    if !(method == Method::GET || method == Method::HEAD || method == Method::POST) {
        return Opened::MethodNotAllowed;
    }
    let path = PathBuf::from(std::ffi::OsString::from_vec(path));
    // Non-blocking: opening a FIFO would otherwise wait for a writer. A regular file's reads
    // ignore the flag; anything else is refused below, by the opened file's own metadata.
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&path)
    else {
        return Opened::NotFound;
    };
    let Ok(meta) = file.metadata() else {
        return Opened::NotFound;
    };
    if !meta.is_file() {
        return Opened::NotFound;
    }
    let mut size = meta.len();
    let content = if method == Method::HEAD {
        Content::None
    } else if size <= READ_WHOLE {
        // What was read is what is sent, should the file change meanwhile.
        let mut buf = Vec::with_capacity(size as usize);
        if (&file).take(size).read_to_end(&mut buf).is_err() {
            return Opened::NotFound;
        }
        size = buf.len() as u64;
        Content::Whole(Bytes::from(buf))
    } else {
        Content::Open(file)
    };
    let mime = mime_guess::from_path(&path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    Opened::File {
        size,
        modified: meta.modified().ok(),
        content,
        mime,
    }
}

/// The response to a request with `headers` for what [`open`] found.
pub fn respond(opened: Opened, headers: &HeaderMap) -> Response<ProxyBody> {
    let (size, modified, content, mime) = match opened {
        Opened::MethodNotAllowed => {
            let mut r = answers::error(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
            );
            return r;
        }
        Opened::NotFound => return answers::error(StatusCode::NOT_FOUND),
        Opened::File {
            size,
            modified,
            content,
            mime,
        } => (size, modified, content, mime),
    };
    let etag = modified.and_then(|m| etag(size, m));
    let last_modified = modified.map(httpdate::fmt_http_date);
    let not_modified = || {
        let mut r = bare(StatusCode::NOT_MODIFIED);
        if let Some(v) = etag.as_deref().and_then(header_value) {
            r.headers_mut().insert(header::ETAG, v);
        }
        r
    };
    if let (Some(tag), Some(inm)) = (&etag, headers.get(header::IF_NONE_MATCH))
        && none_match_hits(inm.as_bytes(), tag.as_bytes())
    {
        return not_modified();
    }
    let since = |name| headers.get(name).and_then(date);
    if let Some(limit) = since(header::IF_UNMODIFIED_SINCE)
        && modified.is_none_or(|m| seconds(m) > seconds(limit))
    {
        return bare(StatusCode::PRECONDITION_FAILED);
    }
    // If-None-Match, when sent, decides alone (RFC 9110 13.1.3).
    if let Some(limit) = since(header::IF_MODIFIED_SINCE)
        && !headers.contains_key(header::IF_NONE_MATCH)
        && modified.is_some_and(|m| seconds(m) <= seconds(limit))
    {
        return not_modified();
    }
    // A Range that does not parse is ignored, as Apache and nginx do; so are several ranges
    // (the whole file instead of a multipart/byteranges body, which RFC 9110 14.2 allows).
    let range = headers
        .get(header::RANGE)
        .filter(|_| if_range_holds(headers, etag.as_deref(), last_modified.as_deref()))
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| http_range_header::parse_range_header(v).ok())
        .and_then(|r| match r.validate(size) {
            Ok(ranges) if ranges.len() == 1 => Some(Some((*ranges[0].start(), *ranges[0].end()))),
            Ok(_) => None,
            Err(_) => Some(None),
        });
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(Some((first, last))) => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
        Some(None) => {
            let mut r = bare(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Some(v) = header_value(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = match content {
        Content::None => ProxyBody::empty(),
        Content::Whole(all) => {
            let (from, to) = (start as usize, (start + len) as usize);
            ProxyBody::full(all.slice(from.min(all.len())..to.min(all.len())))
        }
        Content::Open(file) => stream(file, start, len),
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Some(v) = last_modified.as_deref().and_then(header_value) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Some(v) = etag.as_deref().and_then(header_value) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT
        && let Some(v) = header_value(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}

/// A response with a status and no body.
fn bare(status: StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = status;
    r
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

fn date(v: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(v.as_bytes()).ok()?).ok()
}

/// HTTP dates have whole seconds.
fn seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a Range applies: no If-Range, or one naming the current ETag or Last-Modified
/// exactly (RFC 9110 13.1.5); otherwise the whole file is sent.
fn if_range_holds(headers: &HeaderMap, etag: Option<&str>, last_modified: Option<&str>) -> bool {
    let Some(v) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let v = v.as_bytes();
    if v.starts_with(b"\"") {
        etag.is_some_and(|t| t.as_bytes() == v)
    } else {
        last_modified.is_some_and(|m| m.as_bytes() == v)
    }
}

/// `len` bytes of `file` from `start`, read as the client takes them: each chunk in one trip
/// off the serving thread, straight into the buffer the client is sent.
fn stream(file: std::fs::File, start: u64, len: u64) -> ProxyBody {
    let (tx, stream) = body::channel(DEPTH);
    tokio::spawn(async move {
        let mut file = Some(file);
        let mut at = start;
        let end = start + len;
        while at < end {
            let Some(f) = file.take() else { return };
            let want = (end - at).min(CHUNK as u64);
            // The file's offset moves with each read: only the first one seeks.
            let seek = (at == start && start > 0).then_some(start);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = Vec::with_capacity(want as usize);
                let r = read_next(&f, seek, want, &mut buf);
                (f, buf, r)
            })
            .await;
            let chunk = match read {
                Ok((f, buf, Ok(()))) if buf.len() as u64 == want => {
                    file = Some(f);
                    Ok(Bytes::from(buf))
                }
                // Shorter than its metadata said: the client must not see a complete body.
                Ok((_, _, Ok(()))) => Err(BodyError("the file shrank while it was served".into())),
                Ok((_, _, Err(e))) => Err(BodyError(e.to_string())),
                Err(e) => Err(BodyError(e.to_string())),
            };
            let failed = chunk.is_err();
            if tx.tx.send(chunk).await.is_err() || failed {
                return;
            }
            at += want;
        }
        tx.complete();
    });
    ProxyBody::Stream(stream)
}

/// Appends up to `want` bytes of `file` (from offset `seek`, if given) to `buf`: fewer only at
/// its end.
fn read_next(
    file: &std::fs::File,
    seek: Option<u64>,
    want: u64,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut f = file;
    if let Some(at) = seek {
        f.seek(SeekFrom::Start(at))?;
    }
    f.take(want).read_to_end(buf)?;
    Ok(())
}

/// Apache's default ETag: size and modification time in microseconds, in hex.
fn etag(size: u64, mtime: SystemTime) -> Option<String> {
    let micros = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_micros();
    Some(format!("\"{size:x}-{micros:x}\""))
}

/// Whether an If-None-Match value names `tag` (or is `*`); weak tags compare by their value.
fn none_match_hits(value: &[u8], tag: &[u8]) -> bool {
    value
        .split(|&c| c == b',')
        .map(<[u8]>::trim_ascii)
        .any(|t| t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists() {
        let tag = b"\"3-661f914deafc6\"";
        assert!(none_match_hits(b"\"3-661f914deafc6\"", tag));
        assert!(none_match_hits(b"\"x\", W/\"3-661f914deafc6\"", tag));
        assert!(none_match_hits(b"*", tag));
        assert!(!none_match_hits(b"\"3-661f914deafc7\"", tag));
    }
}
