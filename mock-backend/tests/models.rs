//! The backend models (`model`, `max_requests`, `spawn_delay_ms`) over real loopback TCP.

mod common;

use std::time::Duration;

use common::{Client, mock, within};
use fastcgi::{KEEP_CONN, Record, RecordType, encode};
use fcgi_mock::{ClosedBy, ManagementKind, NoteKind};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

const PARAMS: &[(&str, &str)] = &[("SCRIPT_NAME", "/index.php"), ("REQUEST_URI", "/")];
const ASKED: [&str; 3] = ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"];

fn get_values() -> Vec<u8> {
    let mut out = Vec::new();
    encode::get_values(&mut out, &ASKED);
    out
}

/// A whole request (BEGIN_REQUEST, PARAMS, empty STDIN) as bytes.
fn request_bytes(id: u16, flags: u8) -> Vec<u8> {
    let mut out = Client::<tokio::net::TcpStream>::begin_bytes(id, flags, PARAMS);
    encode::stream_end(&mut out, RecordType::Stdin, id);
    out
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The pairs of a FCGI_GET_VALUES_RESULT record.
fn values_of(rec: &Record) -> Vec<(String, String)> {
    match rec {
        Record::GetValuesResult { values } => values
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect(),
        other => panic!("expected FCGI_GET_VALUES_RESULT, got {other:?}"),
    }
}

async fn next_record(c: &mut Client) -> Record {
    within("record", c.next_record())
        .await
        .expect("read")
        .expect("a record, not EOF")
}

/// Nothing arrives on `c` for `ms` milliseconds.
async fn silent_for(c: &mut Client, ms: u64) {
    let mut buf = [0u8; 64];
    if let Ok(r) = tokio::time::timeout(Duration::from_millis(ms), c.stream.read(&mut buf)).await {
        panic!("expected silence, read {r:?}");
    }
}

async fn answered_values(toml: &str) -> Vec<(String, String)> {
    let m = mock(toml).await;
    let mut c = Client::connect(m.addr()).await;
    c.send(&get_values()).await;
    let rec = next_record(&mut c).await;
    values_of(&rec)
}

#[tokio::test]
async fn get_values_answer_per_model() {
    assert_eq!(answered_values("").await, pairs(&[]));
    assert_eq!(
        answered_values("[server]\nmodel = \"php-fpm\"\nmax_conns = 2").await,
        pairs(&[("FCGI_MPXS_CONNS", "0")])
    );
    assert_eq!(
        answered_values("[server]\nmodel = \"threaded\"\nmax_conns = 16").await,
        pairs(&[
            ("FCGI_MAX_CONNS", "16"),
            ("FCGI_MAX_REQS", "16"),
            ("FCGI_MPXS_CONNS", "0")
        ])
    );
    assert_eq!(
        answered_values(
            "[server]\nmodel = \"php-fpm\"\n[server.values]\nFCGI_MAX_CONNS = \"5\"\nFCGI_MPXS_CONNS = \"0\""
        )
        .await,
        pairs(&[("FCGI_MAX_CONNS", "5"), ("FCGI_MPXS_CONNS", "0")])
    );
}

#[tokio::test]
async fn php_fpm_answers_at_once_and_keeps_the_connection() {
    let m = mock("[server]\nmodel = \"php-fpm\"\nmax_conns = 1").await;
    let mut c = Client::connect(m.addr()).await;
    c.send(&get_values()).await;
    assert_eq!(
        values_of(&next_record(&mut c).await),
        pairs(&[("FCGI_MPXS_CONNS", "0")])
    );
    c.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());
    let s = m.journal().snapshot();
    assert!(s.connections[0].is_open());
    assert!(s.notes.is_empty(), "{:?}", s.notes);
}

#[tokio::test]
async fn libfcgi_answers_pipelined_get_values_before_the_response() {
    let m = mock("[server]\nmodel = \"libfcgi\"\nmax_conns = 2").await;
    let mut c = Client::connect(m.addr()).await;
    let mut out = get_values();
    out.extend(request_bytes(1, 0));
    c.send(&out).await;
    assert_eq!(
        values_of(&next_record(&mut c).await),
        pairs(&[
            ("FCGI_MAX_CONNS", "1"),
            ("FCGI_MAX_REQS", "1"),
            ("FCGI_MPXS_CONNS", "0")
        ])
    );
    let r = c.response(1).await;
    assert!(r.end.is_some(), "{r:?}");
    // Answered in the same read: no held note.
    let notes = m.journal().notes();
    assert!(notes.is_empty(), "{notes:?}");
    let mgmt = m.journal().management();
    assert_eq!(mgmt.len(), 1);
    assert!(matches!(&mgmt[0].kind, ManagementKind::GetValues { names, .. } if names.len() == 3));
}

#[tokio::test]
async fn libfcgi_holds_a_lone_get_values_until_the_next_header() {
    let m = mock("[server]\nmodel = \"libfcgi\"\nmax_conns = 1").await;
    let mut c = Client::connect(m.addr()).await;
    c.send(&get_values()).await;
    silent_for(&mut c, 300).await;
    within(
        "held note",
        m.journal()
            .wait_for(|s| s.notes.iter().any(|n| n.kind == NoteKind::Model)),
    )
    .await;
    // Half a header is not enough.
    let req = request_bytes(1, KEEP_CONN);
    c.send(&req[..4]).await;
    silent_for(&mut c, 200).await;
    c.send(&req[4..]).await;
    assert_eq!(values_of(&next_record(&mut c).await).len(), 3);
    assert!(c.response(1).await.end.is_some());
    let notes = m.journal().notes();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].message.contains("held"), "{notes:?}");
    assert!(notes[1].message.contains("sent"), "{notes:?}");
    // The connection stays (KEEP_CONN): a second lone GET_VALUES is held again.
    c.send(&get_values()).await;
    silent_for(&mut c, 200).await;
}

#[tokio::test]
async fn max_requests_closes_after_the_nth_end_request_even_with_keep_conn() {
    let m = mock("[server]\nmodel = \"php-fpm\"\nmax_conns = 1\nmax_requests = 3").await;
    let mut c = Client::connect(m.addr()).await;
    for id in 1..=3 {
        c.request(id, KEEP_CONN, PARAMS, b"").await;
        let r = c.response(id).await;
        assert!(r.end.is_some(), "request {id}: {r:?}");
    }
    within("backend close", c.wait_closed())
        .await
        .expect("clean close");
    within(
        "journaled close",
        m.journal().wait_for(|s| !s.connections[0].is_open()),
    )
    .await;
    let s = m.journal().snapshot();
    assert_eq!(s.connections[0].closed_by, Some(ClosedBy::Backend));
    assert_eq!(
        s.connections[0].close_reason.as_deref(),
        Some("max_requests")
    );
    assert_eq!(s.connections[0].requests, vec![1, 2, 3]);
    within(
        "exit note",
        m.journal()
            .wait_for(|s| s.notes.iter().any(|n| n.message.contains("exits"))),
    )
    .await;

    // The slot is free again with a new worker, which counts from zero.
    let mut c = Client::connect(m.addr()).await;
    for id in 1..=2 {
        c.request(id, KEEP_CONN, PARAMS, b"").await;
        assert!(c.response(id).await.end.is_some());
    }
    silent_for(&mut c, 100).await;
    assert!(m.journal().connections()[1].is_open());
}

#[tokio::test]
async fn max_requests_counts_per_worker_across_connections() {
    let m = mock("[server]\nmax_conns = 1\nmax_requests = 2").await;
    let mut c = Client::connect(m.addr()).await;
    c.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());
    drop(c);
    // The same worker takes the next connection: its second request is its last.
    let mut c = Client::connect(m.addr()).await;
    c.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());
    within("backend close", c.wait_closed())
        .await
        .expect("clean close");
    within(
        "journaled close",
        m.journal()
            .wait_for(|s| s.connections.len() == 2 && !s.connections[1].is_open()),
    )
    .await;
    let s = m.journal().snapshot();
    assert_eq!(s.connections[0].closed_by, Some(ClosedBy::Peer));
    assert_eq!(
        s.connections[1].close_reason.as_deref(),
        Some("max_requests")
    );
}

#[tokio::test]
async fn max_requests_frees_the_slot_for_a_connection_in_the_backlog() {
    let m = mock("[server]\nmax_conns = 1\noverflow = \"backlog\"\nmax_requests = 1").await;
    let mut a = Client::connect(m.addr()).await;
    let mut b = Client::connect(m.addr()).await;
    b.request(1, KEEP_CONN, PARAMS, b"").await;
    a.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(a.response(1).await.end.is_some());
    within("a closed", a.wait_closed()).await.expect("close");
    assert!(b.response(1).await.end.is_some());
    within("b closed", b.wait_closed()).await.expect("close");
}

#[tokio::test]
async fn spawn_delay_applies_to_a_worker_that_never_served_or_exited() {
    const DELAY: u64 = 300;
    let m = mock(&format!(
        "[server]\nmax_conns = 1\nmax_requests = 2\nspawn_delay_ms = {DELAY}"
    ))
    .await;
    let timed = |keep: u8| {
        let addr = m.addr().to_string();
        async move {
            let start = Instant::now();
            let mut c = Client::connect(&addr).await;
            c.request(1, keep, PARAMS, b"").await;
            assert!(c.response(1).await.end.is_some());
            (start.elapsed(), c)
        }
    };
    // A cold worker: the first connection waits.
    let (t, c) = timed(KEEP_CONN).await;
    assert!(t >= Duration::from_millis(DELAY), "{t:?}");
    drop(c);
    // The worker is running now: served at once (its second and last request).
    let (t, mut c) = timed(KEEP_CONN).await;
    assert!(t < Duration::from_millis(DELAY), "{t:?}");
    within("recycled", c.wait_closed()).await.expect("close");
    // It exited: the next connection waits for a new one.
    let (t, _c) = timed(0).await;
    assert!(t >= Duration::from_millis(DELAY), "{t:?}");

    let s = m.journal().snapshot();
    let waited = |i: usize| {
        let c = &s.connections[i];
        c.served_ms.expect("served") - c.opened_ms
    };
    assert!(waited(0) >= DELAY - 5, "{:?}", s.connections);
    assert!(waited(1) < DELAY, "{:?}", s.connections);
    let starts = s
        .notes
        .iter()
        .filter(|n| n.kind == NoteKind::Model && n.message.contains("starts"))
        .count();
    assert_eq!(starts, 2, "{:?}", s.notes);
}

#[tokio::test]
async fn unlimited_pool_reuses_running_workers() {
    let m = mock("[server]\nspawn_delay_ms = 200").await;
    let mut a = Client::connect(m.addr()).await;
    let mut b = Client::connect(m.addr()).await;
    a.request(1, KEEP_CONN, PARAMS, b"").await;
    b.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(a.response(1).await.end.is_some());
    assert!(b.response(1).await.end.is_some());
    drop(a);
    within(
        "a closed",
        m.journal().wait_for(|s| !s.connections[0].is_open()),
    )
    .await;
    // A running idle worker takes the third connection at once.
    let start = Instant::now();
    let mut c = Client::connect(m.addr()).await;
    c.request(1, 0, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());
    assert!(start.elapsed() < Duration::from_millis(200));
    let starts = m
        .journal()
        .notes()
        .iter()
        .filter(|n| n.message.contains("starts"))
        .count();
    assert_eq!(starts, 2);
}
