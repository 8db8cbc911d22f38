//! Files of an Apache site that no handler claims, served as Apache's default handler does:
//! GET, HEAD (and POST, which Apache answers with the file too), a single byte Range (with
//! If-Range), Last-Modified with If-Modified-Since and If-Unmodified-Since, and Apache's
//! default ETag (`FileETag MTime Size`: `"<size>-<mtime in microseconds>"` in hex) with
//! If-None-Match. Which file, and whether it may be served at all (roots, symbolic links,
//! access), is decided before ([`crate::site::decide`]).
//!
//! The filesystem is touched in one step, where the decision was made ([`open`]): open, fstat
//! and, for a file of up to [`READ_WHOLE`] bytes, the whole read. On the serving thread
//! (local filesystems, [`crate::mounts`]) the read takes only what the page cache holds; in the
//! blocking pool it may wait for the disk. A thread-pool round trip costs more than serving a
//! small file, and a file server that makes one per step (open, stat, each read) spends most
//! of its time in them.
//! A larger file streams in chunks, read on the serving thread when the page cache holds them
//! ([`stream`]).
//! The header grammar is the maintained crates' (`httpdate`, `http-range-header`, `mime_guess`).

use std::io::Read;
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

/// How [`open`] may read a small file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Off the serving thread: read it, waiting for the disk if need be.
    MayWait,
    /// On the serving thread: read it whole if the page cache holds it all, else leave it
    /// open, to be streamed (what is not cached is read off the serving thread then).
    CachedOnly,
}

/// Opens the file at `path` for a `method` request and, when small, reads it.
pub fn open(path: Vec<u8>, method: &Method, reading: Reading) -> Opened {
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
    } else if size > READ_WHOLE {
        Content::Open(file)
    } else if reading == Reading::CachedOnly {
        // One more byte than the size, so a file that grew is seen as not read whole.
        let mut buf = vec![0u8; size as usize + 1];
        match read_cached(&file, 0, &mut buf) {
            Cached::Read(n) if n as u64 == size => {
                buf.truncate(n);
                Content::Whole(Bytes::from(buf))
            }
            _ => Content::Open(file),
        }
    } else {
        // What was read is what is sent, should the file change meanwhile.
        let mut buf = Vec::with_capacity(size as usize);
        if (&file).take(size).read_to_end(&mut buf).is_err() {
            return Opened::NotFound;
        }
        size = buf.len() as u64;
        Content::Whole(Bytes::from(buf))
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

/// `len` bytes of `file` from `start`, read as the client takes them, each chunk straight into
/// the buffer the client is sent. A chunk the page cache holds is read on the serving thread
/// (`preadv2` with `RWF_NOWAIT`, which reads only what needs no disk); the rest in one trip off
/// the serving thread each. A trip per chunk cost a 1 MiB file most of its CPU: two thread
/// wake-ups and switches per 64 KiB, where the read itself is a copy.
fn stream(file: std::fs::File, start: u64, len: u64) -> ProxyBody {
    stream_reading(file, start, len, true)
}

/// [`stream`], trying the page cache first only if `from_cache`.
fn stream_reading(file: std::fs::File, start: u64, len: u64, from_cache: bool) -> ProxyBody {
    let (tx, stream) = body::channel(DEPTH);
    tokio::spawn(async move {
        let mut file = Some(file);
        let mut at = start;
        let end = start + len;
        // Cleared when the kernel or the filesystem cannot read without waiting.
        let mut from_cache = from_cache;
        while at < end {
            let Some(f) = file.take() else { return };
            let want = (end - at).min(CHUNK as u64) as usize;
            // One buffer per chunk, whichever read fills it: it is the chunk the client gets.
            let mut buf = vec![0u8; want];
            let cached = if from_cache {
                match read_cached(&f, at, &mut buf) {
                    Cached::Read(n) => Some(Ok(n)),
                    Cached::OnDisk => None,
                    Cached::Unsupported => {
                        from_cache = false;
                        None
                    }
                    Cached::Failed(e) => Some(Err(e)),
                }
            } else {
                None
            };
            let read = match cached {
                Some(r) => {
                    file = Some(f);
                    r.map(|n| (buf, n))
                }
                None => match tokio::task::spawn_blocking(move || {
                    let r = read_at(&f, at, &mut buf);
                    (f, buf, r)
                })
                .await
                {
                    Ok((f, buf, r)) => {
                        file = Some(f);
                        r.map(|n| (buf, n))
                    }
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                },
            };
            let chunk = match read {
                // Shorter than its metadata said: the client must not see a complete body.
                Ok((_, 0)) => Err(BodyError("the file shrank while it was served".into())),
                Ok((mut buf, n)) => {
                    buf.truncate(n);
                    at += n as u64;
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(BodyError(e.to_string())),
            };
            let failed = chunk.is_err();
            if tx.tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
        tx.complete();
    });
    ProxyBody::Stream(stream)
}

/// What a read from the page cache found.
enum Cached {
    /// This many bytes (fewer than asked when only part is cached; none at the file's end).
    Read(usize),
    /// Nothing of it is in the page cache: read it where waiting is allowed.
    OnDisk,
    /// Reads that do not wait are not supported here (kernel before 4.14, some filesystems).
    Unsupported,
    Failed(std::io::Error),
}

/// Fills `buf` from offset `at` of `file`, only as far as the page cache holds it.
fn read_cached(file: &std::fs::File, at: u64, buf: &mut [u8]) -> Cached {
    use rustix::io::{Errno, IoSliceMut, ReadWriteFlags};
    match rustix::io::preadv2(
        file,
        &mut [IoSliceMut::new(buf)],
        at,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) => Cached::Read(n),
        Err(Errno::AGAIN) => Cached::OnDisk,
        Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => Cached::Unsupported,
        Err(e) => Cached::Failed(e.into()),
    }
}

/// Fills `buf` from offset `at` of `file` (less only at its end); how many bytes. Blocking.
fn read_at(file: &std::fs::File, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
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
    use http_body_util::BodyExt;

    /// A streamed file arrives whole and in order, read from the page cache on the serving
    /// thread or off it; a file shorter than promised ends in an error, not a short body.
    #[test]
    fn streamed_files_arrive_whole_by_either_read() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f.bin");
        std::fs::write(&path, &data).expect("write");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let collect = |start: u64, len: u64, from_cache: bool| {
            let file = std::fs::File::open(&path).expect("open");
            rt.block_on(async {
                stream_reading(file, start, len, from_cache)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
            })
        };
        for from_cache in [true, false] {
            let whole = collect(0, data.len() as u64, from_cache).expect("whole file");
            assert!(
                whole == data[..],
                "from_cache {from_cache}: {} bytes",
                whole.len()
            );
            let part = collect(1000, 250_000, from_cache).expect("range");
            assert!(part == data[1000..251_000], "from_cache {from_cache}");
            assert!(
                collect(0, data.len() as u64 + 1, from_cache).is_err(),
                "from_cache {from_cache}: a file shorter than its length must not end cleanly"
            );
        }
    }

    /// A small file is read whole by either reading when the page cache holds it (a file just
    /// written); on the serving thread, an empty file too.
    #[test]
    fn small_files_are_read_whole_by_either_reading() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, data) in [("small.txt", &b"0123456789"[..]), ("empty.txt", b"")] {
            let path = dir.path().join(name);
            std::fs::write(&path, data).expect("write");
            for reading in [Reading::MayWait, Reading::CachedOnly] {
                let bytes = path.as_os_str().as_encoded_bytes().to_vec();
                match open(bytes, &Method::GET, reading) {
                    Opened::File {
                        size,
                        content: Content::Whole(b),
                        mime,
                        ..
                    } => {
                        assert_eq!(
                            (size, &b[..], mime),
                            (data.len() as u64, data, "text/plain")
                        );
                    }
                    other => panic!("{name} {reading:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn if_none_match_lists() {
        let tag = b"\"3-661f914deafc6\"";
        assert!(none_match_hits(b"\"3-661f914deafc6\"", tag));
        assert!(none_match_hits(b"\"x\", W/\"3-661f914deafc6\"", tag));
        assert!(none_match_hits(b"*", tag));
        assert!(!none_match_hits(b"\"3-661f914deafc7\"", tag));
    }
}
