//! Round trips through the mock with a hand-written FastCGI client over real loopback TCP.

mod common;

use std::io;
use std::time::Duration;

use common::{Client, mock, within};
use fastcgi::{KEEP_CONN, ProtocolStatus, Record, RecordType, encode};
use fcgi_mock::{ClosedBy, ManagementKind, NoteKind, Outcome};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

const PARAMS: &[(&str, &str)] = &[
    ("SCRIPT_NAME", "/app/index.php"),
    ("REQUEST_URI", "/app/index.php?x=1"),
    ("HTTP_X", "a"),
    ("HTTP_X", "b"),
];

#[tokio::test]
async fn reply_with_status_repeated_headers_and_app_status() {
    let m = mock(
        r#"
        [[rule]]
        name = "app"
        match = { script_name_prefix = "/app" }
        status = 201
        headers = [["Content-Type", "text/plain"], ["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]]
        body = [{ data = "hello" }]
        app_status = 7
        "#,
    )
    .await;
    let mut c = Client::connect(m.addr()).await;
    c.request(1, 0, PARAMS, b"").await;
    let r = c.response(1).await;
    assert_eq!(
        r.stdout_text(),
        "Status: 201 Created\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello"
    );
    assert_eq!(r.end, Some((7, ProtocolStatus::RequestComplete)));

    let req = m.journal().request(1).expect("request 1 journaled");
    assert_eq!(req.rule.as_deref(), Some("app"));
    assert_eq!(
        req.params_lossy(),
        PARAMS
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(req.params_named("HTTP_X"), vec!["a", "b"]);
    assert!(!req.keep_conn);
    within(
        "request end",
        m.journal().wait_for(|s| s.finished_requests() == 1),
    )
    .await;
    assert_eq!(m.journal().request(1).unwrap().outcome, Outcome::Complete);
}

#[tokio::test]
async fn echo_reports_params_stdin_and_record_boundaries() {
    let m = mock("").await;
    let mut c = Client::connect(m.addr()).await;
    let mut out = Client::<tokio::net::TcpStream>::begin_bytes(3, KEEP_CONN, PARAMS);
    encode::stream(
        &mut out,
        RecordType::Stdin,
        3,
        b"abc",
        65535,
        fastcgi::Padding::None,
    );
    encode::stream(
        &mut out,
        RecordType::Stdin,
        3,
        b"defg",
        65535,
        fastcgi::Padding::None,
    );
    encode::stream_end(&mut out, RecordType::Stdin, 3);
    c.send(&out).await;
    let r = c.response(3).await;
    let (head, body) = r
        .stdout_text()
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap();
    assert_eq!(head, "Content-Type: application/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["request_id"], 3);
    assert_eq!(v["keep_conn"], true);
    assert_eq!(v["flags"], 1);
    assert_eq!(v["connection"], 1);
    assert_eq!(v["stdin"], "abcdefg");
    assert_eq!(v["stdin_len"], 7);
    assert_eq!(
        v["params"],
        serde_json::json!([
            ["SCRIPT_NAME", "/app/index.php"],
            ["REQUEST_URI", "/app/index.php?x=1"],
            ["HTTP_X", "a"],
            ["HTTP_X", "b"]
        ])
    );
    let req = m.journal().request(1).unwrap();
    assert_eq!(req.stdin_records, vec![3, 4, 0]);
    assert_eq!(req.params_records.len(), 2);
    assert_eq!(req.params_records[1], 0);
    assert_eq!(req.rule.as_deref(), Some("default"));
}

#[tokio::test]
async fn chunked_body_with_stderr_and_delays() {
    let m = mock(
        r#"
        [default]
        headers = [["Content-Type", "text/plain"]]
        body = [{ data = "one " }, { stderr = "warning!" }, { data = "two", delay_ms = 150 }]
        "#,
    )
    .await;
    let mut c = Client::connect(m.addr()).await;
    let t0 = Instant::now();
    c.request(1, 0, PARAMS, b"").await;
    let r = c.response(1).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "delay not honoured"
    );
    assert_eq!(r.body(), "one two");
    assert_eq!(r.stderr, b"warning!");
    // Order on the wire: headers, "one ", stderr, "two", end of stdout, END_REQUEST.
    let kinds: Vec<(RecordType, usize)> = r
        .records
        .iter()
        .map(|rec| match rec {
            Record::Stream {
                record_type,
                content,
                ..
            } => (*record_type, content.len()),
            other => (other.record_type(), 8),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (RecordType::Stdout, 28),
            (RecordType::Stdout, 4),
            (RecordType::Stderr, 8),
            (RecordType::Stdout, 3),
            (RecordType::Stdout, 0),
            (RecordType::EndRequest, 8),
        ]
    );
}

#[tokio::test]
async fn keep_conn_clear_closes_and_set_reuses() {
    let m = mock("").await;
    // Flag clear: the mock closes after END_REQUEST.
    let mut c = Client::connect(m.addr()).await;
    c.request(1, 0, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());
    c.wait_closed()
        .await
        .expect("clean close after END_REQUEST");

    // Flag set: two requests on one connection.
    let mut c = Client::connect(m.addr()).await;
    c.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());
    c.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());

    let j = m.journal();
    within(
        "first close",
        j.wait_for(|s| s.connection(1).is_some_and(|c| !c.is_open())),
    )
    .await;
    let s = j.snapshot();
    assert_eq!(s.connection_count(), 2);
    let c1 = s.connection(1).unwrap();
    assert_eq!(c1.closed_by, Some(ClosedBy::Backend));
    assert_eq!(c1.close_reason.as_deref(), Some("keep_conn_clear"));
    assert_eq!(s.requests_on(2).len(), 2);
    assert!(s.requests_on(2).iter().all(|r| r.keep_conn));
    assert!(s.connection(2).unwrap().is_open());
    assert!(!s.request(1).unwrap().keep_conn);

    // The peer closing is journaled as such.
    drop(c);
    within("peer close", j.wait_for(|s| s.open_connections() == 0)).await;
    let c2 = j.snapshot().connection(2).cloned().unwrap();
    assert_eq!(c2.closed_by, Some(ClosedBy::Peer));
}

#[tokio::test]
async fn always_close_overrides_keep_conn() {
    let m = mock("[server]\nalways_close = true").await;
    let mut c = Client::connect(m.addr()).await;
    c.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());
    c.wait_closed().await.expect("closed");
    within("close", m.journal().wait_for(|s| s.open_connections() == 0)).await;
    let conn = m.journal().connections()[0].clone();
    assert_eq!(conn.close_reason.as_deref(), Some("always_close"));
}

/// Script for the capacity tests: request 1 hangs, the rest are echoed.
const CAPACITY: &str = r#"
[server]
max_conns = 1
overflow = "OVERFLOW"
[[rule]]
match = { request = 1 }
action = "never_answer"
"#;

#[tokio::test]
async fn max_conns_backlog_leaves_extra_connections_unaccepted() {
    let m = mock(&CAPACITY.replace("OVERFLOW", "backlog")).await;
    let j = m.journal().clone();
    let mut a = Client::connect(m.addr()).await;
    a.request(1, 0, PARAMS, b"").await;
    within("request 1", j.wait_for(|s| s.requests.len() == 1)).await;

    // The kernel completes B's handshake, but the mock does not accept it.
    let mut b = Client::connect(m.addr()).await;
    b.request(1, 0, PARAMS, b"").await;
    let early = tokio::time::timeout(Duration::from_millis(300), b.response_no_timeout(1)).await;
    assert!(early.is_err(), "B was served while A held the only slot");
    assert_eq!(j.connection_count(), 1, "B must stay in the backlog");

    drop(a);
    let r = b.response(1).await;
    assert!(r.end.is_some(), "B served once A left: {r:?}");
    let s = j.snapshot();
    assert_eq!(s.connection_count(), 2);
    let (c1, c2) = (s.connection(1).unwrap(), s.connection(2).unwrap());
    assert!(c2.opened_ms >= c1.closed_ms.unwrap());
    assert_eq!(s.request(1).unwrap().outcome, Outcome::Hung);
}

#[tokio::test]
async fn max_conns_hold_accepts_but_does_not_read() {
    let m = mock(&CAPACITY.replace("OVERFLOW", "hold")).await;
    let j = m.journal().clone();
    let mut a = Client::connect(m.addr()).await;
    a.request(1, 0, PARAMS, b"").await;
    within("request 1", j.wait_for(|s| s.requests.len() == 1)).await;

    let mut b = Client::connect(m.addr()).await;
    b.request(1, 0, PARAMS, b"").await;
    within("B accepted", j.wait_for(|s| s.connection_count() == 2)).await;
    let early = tokio::time::timeout(Duration::from_millis(300), b.response_no_timeout(1)).await;
    assert!(early.is_err(), "B was served while A held the only slot");
    let s = j.snapshot();
    assert_eq!(s.connection(2).unwrap().served_ms, None);
    assert_eq!(s.requests.len(), 1, "B's request must not have been read");

    drop(a);
    let r = b.response(1).await;
    assert!(r.end.is_some());
    let s = j.snapshot();
    let (c1, c2) = (s.connection(1).unwrap(), s.connection(2).unwrap());
    assert!(c2.served_ms.unwrap() >= c1.closed_ms.unwrap());
    assert!(c2.opened_ms < c1.closed_ms.unwrap());
}

#[tokio::test]
async fn get_values_answers_only_asked_and_configured_names() {
    let m = mock(
        r#"
        [server.values]
        FCGI_MAX_CONNS = "2"
        FCGI_MPXS_CONNS = 0
        "#,
    )
    .await;
    let mut c = Client::connect(m.addr()).await;
    let mut out = Vec::new();
    encode::get_values(
        &mut out,
        &["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"],
    );
    c.send(&out).await;
    let rec = within("GET_VALUES_RESULT", c.next_record()).await.unwrap();
    assert_eq!(
        rec,
        Some(Record::GetValuesResult {
            values: vec![
                ("FCGI_MAX_CONNS".into(), "2".into()),
                ("FCGI_MPXS_CONNS".into(), "0".into())
            ]
        })
    );
    // An unknown management type gets FCGI_UNKNOWN_TYPE.
    let mut out = Vec::new();
    encode::record(
        &mut out,
        RecordType::Other(42),
        0,
        b"xyz",
        fastcgi::Padding::None,
    );
    c.send(&out).await;
    let rec = within("UNKNOWN_TYPE", c.next_record()).await.unwrap();
    assert_eq!(rec, Some(Record::UnknownType { unknown_type: 42 }));

    let mgmt = m.journal().management();
    assert_eq!(mgmt.len(), 2);
    assert_eq!(
        mgmt[0].kind,
        ManagementKind::GetValues {
            names: vec![
                "FCGI_MAX_CONNS".into(),
                "FCGI_MAX_REQS".into(),
                "FCGI_MPXS_CONNS".into()
            ],
            reply: vec![
                ("FCGI_MAX_CONNS".into(), "2".into()),
                ("FCGI_MPXS_CONNS".into(), "0".into())
            ],
        }
    );
    assert_eq!(
        mgmt[1].kind,
        ManagementKind::UnknownType { record_type: 42 }
    );
}

#[tokio::test]
async fn second_request_id_without_multiplexing_gets_cant_mpx_conn() {
    let m = mock("").await;
    let mut c = Client::connect(m.addr()).await;
    // Request 1 stays open (no STDIN end yet), then request 2 begins.
    let mut out = Client::<tokio::net::TcpStream>::begin_bytes(1, KEEP_CONN, PARAMS);
    out.extend(Client::<tokio::net::TcpStream>::begin_bytes(
        2, KEEP_CONN, PARAMS,
    ));
    c.send(&out).await;
    let r2 = c.response(2).await;
    assert_eq!(r2.end, Some((0, ProtocolStatus::CantMpxConn)));
    assert!(r2.stdout.is_empty());
    // Request 1 is unaffected.
    let mut out = Vec::new();
    encode::stream_end(&mut out, RecordType::Stdin, 1);
    c.send(&out).await;
    let r1 = c.response(1).await;
    assert_eq!(r1.end, Some((0, ProtocolStatus::RequestComplete)));
    let s = m.journal().snapshot();
    assert_eq!(s.request(2).unwrap().outcome, Outcome::CantMpxConn);
    assert_eq!(s.request(2).unwrap().request_id, 2);
    assert_eq!(s.connection_count(), 1);
}

#[tokio::test]
async fn multiplexing_serves_interleaved_requests() {
    let m = mock(
        r#"
        [server]
        multiplex = true
        [[rule]]
        match = { script_name_prefix = "/slow" }
        body = [{ data = "slow", delay_ms = 200 }]
        [default]
        body = [{ data = "fast" }]
        "#,
    )
    .await;
    let mut c = Client::connect(m.addr()).await;
    let mut out =
        Client::<tokio::net::TcpStream>::begin_bytes(1, KEEP_CONN, &[("SCRIPT_NAME", "/slow")]);
    encode::stream_end(&mut out, RecordType::Stdin, 1);
    out.extend(Client::<tokio::net::TcpStream>::begin_bytes(
        2,
        KEEP_CONN,
        &[("SCRIPT_NAME", "/f")],
    ));
    encode::stream_end(&mut out, RecordType::Stdin, 2);
    c.send(&out).await;
    // Request 2 finishes first although it began second.
    let r2 = c.response(2).await;
    assert_eq!(r2.end, Some((0, ProtocolStatus::RequestComplete)));
    let r1 = c.response(1).await;
    assert_eq!(r1.end, Some((0, ProtocolStatus::RequestComplete)));
    assert!(r1.stdout_text().ends_with("slow"));
    assert!(r2.stdout_text().ends_with("fast"));
}

#[tokio::test]
async fn cut_closes_before_end_request() {
    let m = mock(
        r#"
        [default]
        headers = [["Content-Type", "text/plain"]]
        body = [{ data = "0123456789" }]
        cut = { after_body_bytes = 4 }
        "#,
    )
    .await;
    let mut c = Client::connect(m.addr()).await;
    c.request(1, KEEP_CONN, PARAMS, b"").await;
    let r = c.response(1).await;
    assert!(r.eof, "{r:?}");
    assert_eq!(r.end, None);
    assert_eq!(r.body(), "0123");
    within("close", m.journal().wait_for(|s| s.open_connections() == 0)).await;
    let s = m.journal().snapshot();
    assert_eq!(s.request(1).unwrap().outcome, Outcome::BackendClosed);
    assert_eq!(
        s.connection(1).unwrap().close_reason.as_deref(),
        Some("script_close")
    );
}

#[tokio::test]
async fn never_answer_holds_until_the_peer_closes() {
    let m = mock("[default]\naction = \"never_answer\"").await;
    let mut c = Client::connect(m.addr()).await;
    c.request(1, KEEP_CONN, PARAMS, b"body").await;
    let got = tokio::time::timeout(Duration::from_millis(300), c.response_no_timeout(1)).await;
    assert!(got.is_err(), "never_answer answered: {got:?}");
    let j = m.journal().clone();
    assert_eq!(j.request(1).unwrap().stdin_lossy(), "body");
    assert!(j.connections()[0].is_open());
    drop(c);
    within("peer close", j.wait_for(|s| s.open_connections() == 0)).await;
    let s = j.snapshot();
    assert_eq!(s.connection(1).unwrap().closed_by, Some(ClosedBy::Peer));
    assert_eq!(s.request(1).unwrap().outcome, Outcome::Hung);
}

#[tokio::test]
async fn wrong_request_id_on_the_answer() {
    let m = mock("[default]\nbody = [{ data = \"x\" }]\nreply_request_id = 9").await;
    let mut c = Client::connect(m.addr()).await;
    c.request(1, 0, PARAMS, b"").await;
    let r = c.response(1).await;
    // Nothing came for id 1; everything carried id 9.
    assert!(r.eof);
    assert!(!r.records.is_empty());
    assert!(r.records.iter().all(|rec| rec.request_id() == 9), "{r:?}");
    assert!(
        r.records
            .iter()
            .any(|rec| matches!(rec, Record::EndRequest { request_id: 9, .. }))
    );
}

#[tokio::test]
async fn reset_action_sends_rst() {
    let m = mock("[default]\naction = \"reset\"").await;
    let mut c = Client::connect(m.addr()).await;
    c.request(1, 0, PARAMS, b"").await;
    let r = c.response(1).await;
    assert_eq!(r.error, Some(io::ErrorKind::ConnectionReset), "{r:?}");
    within("close", m.journal().wait_for(|s| s.open_connections() == 0)).await;
    let s = m.journal().snapshot();
    assert_eq!(s.request(1).unwrap().outcome, Outcome::BackendReset);
    assert_eq!(
        s.connection(1).unwrap().close_reason.as_deref(),
        Some("script_reset")
    );
}

#[tokio::test]
async fn cut_with_reset_mid_body() {
    let m = mock(
        r#"
        [default]
        body = [{ data = "abcdef" }, { data = "ghi", delay_ms = 100 }]
        cut = { after_body_bytes = 7, then = "reset" }
        "#,
    )
    .await;
    let mut c = Client::connect(m.addr()).await;
    c.request(1, 0, PARAMS, b"").await;
    let r = c.response(1).await;
    assert_eq!(r.end, None);
    assert_eq!(r.error, Some(io::ErrorKind::ConnectionReset), "{r:?}");
    // Data before the 100 ms delay was delivered before the RST.
    assert!(r.stdout_text().contains("abcdef"), "{r:?}");
}

#[tokio::test]
async fn close_action_closes_without_a_byte() {
    let m = mock("[default]\naction = \"close\"").await;
    let mut c = Client::connect(m.addr()).await;
    c.request(1, 0, PARAMS, b"").await;
    let r = c.response(1).await;
    assert!(r.eof && r.records.is_empty(), "{r:?}");
}

#[tokio::test]
async fn idle_timeout_closes_kept_connections() {
    let m = mock("[server]\nidle_timeout_ms = 150").await;
    let mut c = Client::connect(m.addr()).await;
    c.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());
    let t0 = Instant::now();
    c.wait_closed().await.expect("idle close");
    assert!(t0.elapsed() >= Duration::from_millis(100));
    within(
        "journal",
        m.journal().wait_for(|s| s.open_connections() == 0),
    )
    .await;
    let conn = m.journal().connections()[0].clone();
    assert_eq!(conn.closed_by, Some(ClosedBy::Backend));
    assert_eq!(conn.close_reason.as_deref(), Some("idle_timeout"));
}

#[tokio::test]
async fn abort_request_is_answered_and_journaled() {
    let m = mock("").await;
    let mut c = Client::connect(m.addr()).await;
    let mut out = Client::<tokio::net::TcpStream>::begin_bytes(1, KEEP_CONN, PARAMS);
    encode::abort_request(&mut out, 1);
    c.send(&out).await;
    let r = c.response(1).await;
    assert_eq!(r.end, Some((0, ProtocolStatus::RequestComplete)));
    let req = m.journal().request(1).unwrap();
    assert!(req.aborted());
    assert_eq!(req.outcome, Outcome::Aborted);
}

#[tokio::test]
async fn malformed_input_is_journaled_and_closes() {
    let m = mock("").await;
    let mut c = Client::connect(m.addr()).await;
    c.send(&[2, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
        .await;
    c.wait_closed().await.ok();
    within(
        "journal",
        m.journal().wait_for(|s| s.open_connections() == 0),
    )
    .await;
    let s = m.journal().snapshot();
    assert_eq!(
        s.connection(1).unwrap().close_reason.as_deref(),
        Some("protocol_error")
    );
    let errors = s.protocol_errors();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("version 2"), "{errors:?}");

    // A truncated name-value pair in PARAMS.
    let mut c = Client::connect(m.addr()).await;
    let mut out = Vec::new();
    encode::begin_request(&mut out, 1, fastcgi::Role::Responder, 0);
    encode::record(
        &mut out,
        RecordType::Params,
        1,
        &[5, 5, b'A'],
        fastcgi::Padding::None,
    );
    encode::stream_end(&mut out, RecordType::Params, 1);
    c.send(&out).await;
    c.wait_closed().await.ok();
    within(
        "journal",
        m.journal().wait_for(|s| s.protocol_errors().len() == 2),
    )
    .await;
}

#[tokio::test]
async fn records_for_inactive_ids_are_ignored() {
    let m = mock("").await;
    let mut c = Client::connect(m.addr()).await;
    let mut out = Vec::new();
    encode::stream(
        &mut out,
        RecordType::Stdin,
        5,
        b"zz",
        65535,
        fastcgi::Padding::None,
    );
    c.send(&out).await;
    c.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());
    let notes = m.journal().notes();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].kind, NoteKind::Ignored);
}

#[tokio::test]
async fn wire_quirks_padding_version_and_unknown_record() {
    let m = mock(
        r#"
        [[rule]]
        match = { request = 1 }
        body = [{ data = "abc" }]
        padding = "align8"
        [[rule]]
        match = { request = 2 }
        body = [{ data = "abc" }]
        unknown_record_type = 42
        [[rule]]
        match = { request = 3 }
        body = [{ data = "abc" }]
        bad_version = 2
        "#,
    )
    .await;
    // Padding: every record is 8-aligned, and it decodes.
    let mut c = Client::connect(m.addr()).await;
    c.request(1, 0, PARAMS, b"").await;
    let mut raw = Vec::new();
    within("read", c.stream.read_to_end(&mut raw))
        .await
        .unwrap();
    assert_eq!(raw.len() % 8, 0);
    let mut d = fastcgi::Decoder::default();
    d.feed(&raw);
    let mut n = 0;
    while let Some(rec) = d.decode().unwrap() {
        n += 1;
        if let Record::Stream { content, .. } = rec {
            assert!(content.len() <= 3);
        }
    }
    // Header block, "abc", end of STDOUT, END_REQUEST.
    assert!(d.is_at_boundary() && n == 4, "{n} records");

    // Unknown record type before STDOUT.
    let mut c = Client::connect(m.addr()).await;
    c.request(1, 0, PARAMS, b"").await;
    let r = c.response(1).await;
    assert!(matches!(
        r.records[0],
        Record::Unknown {
            record_type: RecordType::Other(42),
            request_id: 1,
            ..
        }
    ));
    assert!(r.end.is_some());

    // Version 2 on the first record.
    let mut c = Client::connect(m.addr()).await;
    c.request(1, 0, PARAMS, b"").await;
    let r = c.response(1).await;
    assert_eq!(r.error, Some(io::ErrorKind::InvalidData), "{r:?}");
}

#[tokio::test]
async fn split_writes_pause_between_pieces() {
    let m = mock(
        r#"
        [default]
        body = [{ data = "abcdef" }]
        split_at = [3, 12]
        split_pause_ms = 120
        "#,
    )
    .await;
    let mut c = Client::connect(m.addr()).await;
    let t0 = Instant::now();
    c.request(1, 0, PARAMS, b"").await;
    let mut first = [0u8; 64];
    let n = within("first piece", c.stream.read(&mut first))
        .await
        .unwrap();
    assert!(n > 0 && n <= 3, "first write was {n} bytes");
    c.decoder.feed(&first[..n]);
    let r = c.response(1).await;
    assert!(r.end.is_some());
    assert!(t0.elapsed() >= Duration::from_millis(240));
}

#[tokio::test]
async fn reply_after_params_answers_before_stdin() {
    let m = mock("[default]\nreply_after = \"params\"\nbody = [{ data = \"early\" }]").await;
    let mut c = Client::connect(m.addr()).await;
    let out = Client::<tokio::net::TcpStream>::begin_bytes(1, KEEP_CONN, PARAMS);
    c.send(&out).await;
    let r = c.response(1).await;
    assert!(r.stdout_text().ends_with("early"));
}

#[tokio::test]
async fn unix_socket_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mock.sock");
    let m = fcgi_mock::MockServer::bind_unix(&path, common::script("")).unwrap();
    assert_eq!(m.addr(), path.display().to_string());
    let stream = within("connect", tokio::net::UnixStream::connect(&path))
        .await
        .unwrap();
    let mut c = Client::new(stream);
    c.request(1, 0, PARAMS, b"hi").await;
    let r = c.response(1).await;
    let v: serde_json::Value = serde_json::from_str(&r.body()).unwrap();
    assert_eq!(v["stdin"], "hi");
}

#[tokio::test]
async fn shutdown_closes_open_connections() {
    let m = mock("").await;
    let j = m.journal().clone();
    let mut c = Client::connect(m.addr()).await;
    c.request(1, KEEP_CONN, PARAMS, b"").await;
    assert!(c.response(1).await.end.is_some());
    within("shutdown", m.shutdown()).await;
    c.wait_closed().await.expect("closed by shutdown");
    let conn = j.connections()[0].clone();
    assert_eq!(conn.close_reason.as_deref(), Some("shutdown"));
    // The JSON lines hold the whole story.
    let lines = j.lines();
    let events: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        events,
        vec!["connection_open", "request", "connection_close"]
    );
}
