//! The client and server state machines driven against each other: whatever one side sends,
//! split into reads at any byte boundary, the other side's events say exactly that.

use bytes::Bytes;
use fastcgi::conn::client::{self, PARAMS_RECORD_MAX};
use fastcgi::conn::{Client, ClientEvent, Server, ServerEvent};
use fastcgi::{KEEP_CONN, MAX_CONNS, MAX_CONTENT_LEN, ProtocolStatus, Role};
use proptest::prelude::*;

/// One answer piece the application writes.
#[derive(Debug, Clone)]
enum Out {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Exchange {
    request_id: u16,
    keep_conn: bool,
    ask_values: bool,
    /// STDIN through a `StdinEncoder` as if read while it arrives, instead of gathered.
    streamed: bool,
    params: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<Vec<u8>>,
    answer: Vec<Out>,
    app_status: u32,
    protocol_status: ProtocolStatus,
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => proptest::collection::vec(any::<u8>(), 0..max),
    ]
}

fn exchange() -> impl Strategy<Value = Exchange> {
    (
        (1u16.., any::<bool>(), any::<bool>(), any::<bool>()),
        proptest::collection::vec((bytes(300), bytes(PARAMS_RECORD_MAX + 2000)), 0..8),
        proptest::collection::vec(bytes(MAX_CONTENT_LEN + 100), 0..5),
        proptest::collection::vec(
            prop_oneof![
                bytes(MAX_CONTENT_LEN + 100).prop_map(Out::Stdout),
                bytes(300).prop_map(Out::Stderr),
            ],
            0..6,
        ),
        any::<u32>(),
        (0u8..6).prop_map(ProtocolStatus::from_u8),
    )
        .prop_map(
            |((request_id, keep_conn, ask_values, streamed), params, body, answer, a, p)| {
                Exchange {
                    request_id,
                    keep_conn,
                    ask_values,
                    streamed,
                    params,
                    body,
                    answer,
                    app_status: a,
                    protocol_status: p,
                }
            },
        )
}

/// `data` cut at `cuts` (positions modulo its length), in order.
fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    at.push(0);
    at.push(data.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

/// What the client sends, as the proxy sends it.
fn request(c: &mut Client, x: &Exchange) -> Vec<u8> {
    let mut out = Vec::new();
    if x.ask_values {
        c.get_values(&mut out, &[MAX_CONNS]);
    }
    c.begin(&mut out, Role::Responder, x.keep_conn, |w| {
        for (n, v) in &x.params {
            w.pair(n, v);
        }
        Ok::<(), ()>(())
    })
    .unwrap();
    if x.streamed {
        let e = c.stdin_encoder();
        for piece in &x.body {
            for (h, data) in e.records(piece) {
                out.extend_from_slice(&h);
                out.extend_from_slice(data);
            }
        }
        out.extend_from_slice(&e.end());
        c.stdin_sent();
    } else {
        let pieces = x.body.iter().map(Vec::as_slice);
        let headers = c.stdin_headers(pieces.clone());
        for s in client::gathered(&[], pieces, &headers) {
            out.extend_from_slice(&s);
        }
    }
    out
}

/// The server's view of the request, fed in `reads`.
fn serve(s: &mut Server, reads: &[&[u8]]) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    for r in reads {
        s.feed(r);
        while let Some(e) = s.next_event().expect("server: protocol error") {
            events.push(e);
        }
    }
    assert_eq!(s.eof(), Ok(()));
    events
}

/// What the server answers, with the events the client should see for it.
fn answer(s: &mut Server, x: &Exchange) -> (Vec<u8>, Vec<ClientEvent>) {
    let mut out = Vec::new();
    let mut want = Vec::new();
    if x.ask_values {
        s.get_values_result(&mut out, &[(MAX_CONNS, "7")]);
        want.push(ClientEvent::GetValuesResult(vec![(
            Bytes::from_static(MAX_CONNS.as_bytes()),
            Bytes::from_static(b"7"),
        )]));
    }
    for o in &x.answer {
        let (data, event): (_, fn(Bytes) -> ClientEvent) = match o {
            Out::Stdout(d) => {
                s.stdout(&mut out, x.request_id, d);
                (d, ClientEvent::Stdout)
            }
            Out::Stderr(d) => {
                s.stderr(&mut out, x.request_id, d);
                (d, ClientEvent::Stderr)
            }
        };
        want.extend(
            data.chunks(MAX_CONTENT_LEN)
                .map(|c| event(Bytes::copy_from_slice(c))),
        );
    }
    s.stderr_end(&mut out, x.request_id);
    s.stdout_end(&mut out, x.request_id);
    s.end_request(&mut out, x.request_id, x.app_status, x.protocol_status);
    want.extend([
        ClientEvent::StderrEnd,
        ClientEvent::StdoutEnd,
        ClientEvent::End {
            app_status: x.app_status,
            protocol_status: x.protocol_status,
        },
    ]);
    (out, want)
}

/// The client's view of the answer, fed in `reads`.
fn receive(c: &mut Client, reads: &[&[u8]]) -> Vec<ClientEvent> {
    let mut events = Vec::new();
    for r in reads {
        c.feed(r);
        while let Some(e) = c.next_event().expect("client: protocol error") {
            events.push(e);
        }
    }
    events
}

/// Runs `x` with the request cut at `req_cuts` and the answer at `ans_cuts`; checks both sides.
fn run(x: &Exchange, req_cuts: &[usize], ans_cuts: &[usize]) -> Result<(), TestCaseError> {
    let mut c = Client::new(x.request_id);
    let sent = request(&mut c, x);
    let mut s = Server::new(usize::MAX);
    let events = serve(&mut s, &split(&sent, req_cuts));

    // The server saw exactly the request.
    let mut i = 0;
    if x.ask_values {
        prop_assert_eq!(
            &events[0],
            &ServerEvent::GetValues {
                names: vec![(Bytes::from_static(MAX_CONNS.as_bytes()), Bytes::new())]
            }
        );
        i = 1;
    }
    let flags = if x.keep_conn { KEEP_CONN } else { 0 };
    prop_assert_eq!(
        &events[i],
        &ServerEvent::BeginRequest {
            request_id: x.request_id,
            role: Role::Responder,
            flags
        }
    );
    let (mut pairs, mut stdin) = (Vec::new(), Vec::new());
    let mut ends = Vec::new();
    for e in &events[i + 1..] {
        match e {
            ServerEvent::Params {
                request_id,
                len,
                pairs: p,
            } => {
                prop_assert_eq!(*request_id, x.request_id);
                prop_assert!(*len <= PARAMS_RECORD_MAX);
                prop_assert!(ends.is_empty());
                pairs.extend(p.iter().map(|(n, v)| (n.to_vec(), v.to_vec())));
            }
            ServerEvent::Stdin { request_id, data } => {
                prop_assert_eq!(*request_id, x.request_id);
                prop_assert_eq!(ends.as_slice(), ["params"]);
                stdin.extend_from_slice(data);
            }
            ServerEvent::ParamsEnd { .. } => ends.push("params"),
            ServerEvent::StdinEnd { .. } => ends.push("stdin"),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
    prop_assert_eq!(ends, ["params", "stdin"]);
    prop_assert_eq!(&pairs, &x.params);
    prop_assert_eq!(stdin, x.body.concat());
    prop_assert!(s.is_active(x.request_id));

    // The client sees exactly the answer.
    let (answer, want) = answer(&mut s, x);
    prop_assert!(!s.has_requests());
    let got = receive(&mut c, &split(&answer, ans_cuts));
    prop_assert_eq!(got, want);
    prop_assert!(c.is_ended());
    prop_assert_eq!(c.reusable(), x.keep_conn);
    prop_assert_eq!(c.eof(), Ok(()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn client_and_server_agree_over_any_split(
        x in exchange(),
        req_cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ans_cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        run(&x, &req_cuts, &ans_cuts)?;
    }
}

/// Every byte boundary at once: both streams delivered one byte per read.
#[test]
fn client_and_server_agree_byte_by_byte() {
    let x = Exchange {
        request_id: 1,
        keep_conn: true,
        ask_values: true,
        streamed: false,
        params: vec![
            (b"SCRIPT_FILENAME".to_vec(), b"/srv/app/index.php".to_vec()),
            (vec![b'N'; 130], vec![b'v'; 200]),
            (b"EMPTY".to_vec(), Vec::new()),
        ],
        body: vec![b"a=1&".to_vec(), vec![7; 300]],
        answer: vec![
            Out::Stdout(b"Status: 200\r\nContent-Type: text/plain\r\n\r\nhello".to_vec()),
            Out::Stderr(b"warning".to_vec()),
            Out::Stdout(b" world".to_vec()),
        ],
        app_status: 3,
        protocol_status: ProtocolStatus::RequestComplete,
    };
    let every: Vec<usize> = (0..4096).collect();
    run(&x, &every, &every).unwrap();
    // And each single cut on its own.
    for cut in 0..600 {
        run(&x, &[cut], &[cut]).unwrap();
    }
}
