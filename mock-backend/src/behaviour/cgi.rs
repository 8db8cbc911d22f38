//! The CGI header block at the head of STDOUT (`Status:`, headers, blank line).

use crate::script::Rule;

/// The header block of `rule`, with `first` headers placed before the scripted ones.
pub fn header_block(rule: &Rule, first: &[(&str, &str)]) -> Vec<u8> {
    let nl = rule.newline.as_bytes();
    let mut out = Vec::new();
    if let Some(code) = rule.status {
        let reason = rule
            .reason
            .as_deref()
            .unwrap_or_else(|| reason_phrase(code));
        out.extend_from_slice(format!("Status: {code}").as_bytes());
        if !reason.is_empty() {
            out.push(b' ');
            out.extend_from_slice(reason.as_bytes());
        }
        out.extend_from_slice(nl);
    }
    let scripted = rule.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    for (n, v) in first.iter().copied().chain(scripted) {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(nl);
    }
    if !rule.omit_header_terminator {
        out.extend_from_slice(nl);
    }
    out
}

/// The usual reason phrase of a status code ("" when unknown).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}
