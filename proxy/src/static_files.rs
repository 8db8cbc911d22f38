//! Files of an Apache site that no handler claims, served as Apache's default handler does:
//! GET, HEAD (and POST, which Apache answers with the file too), Range, Last-Modified and
//! If-Modified-Since (tower-http's `ServeFile`), and Apache's default ETag (`FileETag MTime
//! Size`: `"<size>-<mtime in microseconds>"` in hex) with If-None-Match. Which file, and
//! whether it may be served at all (roots, symbolic links, access), is decided before
//! ([`crate::site::decide`]).

use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::answers;
use crate::body::{self, BodyError, ProxyBody};

/// Chunks of a file in flight to the client at once.
const DEPTH: usize = 4;

/// Serves the file at `path` for `req`.
pub async fn serve(path: Vec<u8>, req: Request<Incoming>) -> Response<ProxyBody> {
    let method = req.method().clone();
    if !(method == Method::GET || method == Method::HEAD || method == Method::POST) {
        let mut r = answers::error(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
        );
        return r;
    }
    let path = PathBuf::from(std::ffi::OsString::from_vec(path));
    let Ok(meta) = tokio::fs::metadata(&path).await else {
        return answers::error(StatusCode::NOT_FOUND);
    };
    if !meta.is_file() {
        return answers::error(StatusCode::NOT_FOUND);
    }
    let etag = etag(&meta);
    let (mut parts, _) = req.into_parts();
    if let (Some(tag), Some(inm)) = (&etag, parts.headers.get(header::IF_NONE_MATCH))
        && none_match_hits(inm.as_bytes(), tag.as_bytes())
    {
        let mut r = Response::new(ProxyBody::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        if let Ok(v) = HeaderValue::from_str(tag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return r;
    }
    if method == Method::POST {
        parts.method = Method::GET;
    }
    let Ok(resp) = ServeFile::new(&path)
        .oneshot(Request::from_parts(parts, Empty::<bytes::Bytes>::new()))
        .await;
    let (mut head, file) = resp.into_parts();
    if let Some(tag) = &etag
        && matches!(
            head.status,
            StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
        && let Ok(v) = HeaderValue::from_str(tag)
    {
        head.headers.insert(header::ETAG, v);
    }
    if method == Method::HEAD {
        return Response::from_parts(head, ProxyBody::empty());
    }
    // The file is read in a task of its own; the client's pace holds it back.
    let (tx, stream) = body::channel(DEPTH);
    tokio::spawn(async move {
        let mut file = std::pin::pin!(file);
        loop {
            match file.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && tx.tx.send(Ok(data)).await.is_err()
                    {
                        return;
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.tx.send(Err(BodyError(e.to_string()))).await;
                    return;
                }
                None => {
                    tx.complete();
                    return;
                }
            }
        }
    });
    Response::from_parts(head, ProxyBody::Stream(stream))
}

/// Apache's default ETag: size and modification time in microseconds, in hex.
fn etag(meta: &std::fs::Metadata) -> Option<String> {
    let mtime = meta.modified().ok()?;
    let micros = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_micros();
    Some(format!("\"{:x}-{:x}\"", meta.len(), micros))
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
