//! The CGI response header parser (`response::find_header_end` + `response::parse`) on arbitrary
//! STDOUT bytes, fed the way the exchange feeds it: the buffer grows record by record and the
//! end of the header block is looked for after each piece.
//!
//! Input layout: byte 0 = number of split points (mod 8), then one byte per split point (an
//! offset, modulo the length), then the STDOUT bytes.
//!
//! Checked:
//! - the end found on a growing buffer is the end found on the whole buffer (stable once found);
//! - the end is a blank line (`\n` or `\r\n`) right after the block and before the body;
//! - a parsed head never carries a `Status` header, framing or hop-by-hop headers, or a value
//!   with CR, LF or NUL; its status is a final (non-1xx) code.
#![no_main]

use fcgi_proxy::response::{self, ResponseHead};
use libfuzzer_sys::fuzz_target;

const DROPPED: &[&str] = &[
    "status",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "trailer",
    "te",
];

fn check_head(h: &ResponseHead) {
    assert!(!h.status.is_informational(), "1xx relayed as final: {h:?}");
    for d in DROPPED {
        assert!(!h.headers.contains_key(*d), "{d} passed on: {h:?}");
    }
    for (n, v) in &h.headers {
        assert!(!n.as_str().is_empty());
        assert!(
            !v.as_bytes()
                .iter()
                .any(|&b| b == b'\r' || b == b'\n' || b == 0),
            "CR/LF/NUL in {n}: {v:?}"
        );
    }
    if let Some(r) = &h.reason {
        assert!(!r.contains(['\r', '\n', '\0']), "reason {r:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n % 8) as usize;
    let (raw_cuts, stdout) = rest.split_at(n.min(rest.len()));
    let whole = response::find_header_end(stdout);
    if let Some((hlen, body)) = whole {
        assert!(hlen <= body && body <= stdout.len());
        let sep = &stdout[hlen..body];
        assert!(sep == b"\n" || sep == b"\r\n", "separator {sep:?}");
        // No earlier blank line: the block up to `hlen` has none of its own.
        assert!(response::find_header_end(&stdout[..hlen]).is_none() || hlen == 0);
        match response::parse(&stdout[..hlen]) {
            Ok(h) => check_head(&h),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    // Incremental: the buffer grows piece by piece; once an end is found it is the same one.
    let mut cuts: Vec<usize> = raw_cuts
        .iter()
        .map(|&c| c as usize * stdout.len() / 255)
        .collect();
    cuts.sort_unstable();
    cuts.push(stdout.len());
    let mut found = None;
    for c in cuts {
        if let Some(end) = response::find_header_end(&stdout[..c]) {
            found = Some(end);
            break;
        }
    }
    assert_eq!(found, whole, "incremental and whole header ends differ");
    // The parser alone on any bytes.
    if let Ok(h) = response::parse(stdout) {
        check_head(&h);
    }
});
