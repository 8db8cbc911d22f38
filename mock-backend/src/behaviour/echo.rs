//! The `echo` body: JSON of what the backend saw, for tests that assert on what a proxy sent.

use serde_json::json;

use crate::journal::RequestEntry;

/// `{"connection","request","request_id","flags","keep_conn","params","stdin","stdin_len"}`;
/// params in wire order with duplicates kept, bytes decoded lossily.
pub fn echo_body(req: &RequestEntry) -> String {
    let params: Vec<_> = req
        .params_lossy()
        .into_iter()
        .map(|(n, v)| json!([n, v]))
        .collect();
    json!({
        "connection": req.connection,
        "request": req.seq,
        "request_id": req.request_id,
        "flags": req.flags,
        "keep_conn": req.keep_conn,
        "params": params,
        "stdin": req.stdin_lossy(),
        "stdin_len": req.stdin_len,
    })
    .to_string()
}
