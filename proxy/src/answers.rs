//! Responses the proxy writes itself: small templated error pages that name the status and
//! nothing about the backend.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;

/// Makes hyper close the client connection once `r` is sent (`Connection: close`).
pub fn close_after(r: &mut Response<ProxyBody>) {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

#[cold]
pub fn error(status: StatusCode) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{reason}</h1></body></html>\n",
        code = status.as_u16()
    );
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_page_names_the_status() {
        let r = error(StatusCode::BAD_GATEWAY);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let ProxyBody::Full(Some(b)) = r.body() else {
            panic!("full body expected")
        };
        assert!(String::from_utf8_lossy(b).contains("502 Bad Gateway"));
    }
}
