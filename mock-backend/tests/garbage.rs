//! Malformed and random input from the web-server side never takes the mock down: every
//! connection ends journaled (a panicking connection task would never journal its close), and
//! the server still answers afterwards.

mod common;

use common::{Client, mock, within};
use fastcgi::{KEEP_CONN, Padding, RecordType, encode};
use tokio::io::AsyncWriteExt;

/// xorshift64*: a fixed, dependency-free stream of "random" input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A mix of well-formed records with random types, ids, flags and content, and raw noise.
fn input(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(12) {
        let id = rng.below(3) as u16;
        match rng.below(10) {
            0 => {
                let n = rng.below(24) as usize;
                out.extend(rng.bytes(n));
            }
            1 => encode::begin_request(&mut out, id, fastcgi::Role::Responder, rng.below(2) as u8),
            2 => encode::params(&mut out, id, &[("SCRIPT_NAME", "/x"), ("A", "b")], 5),
            3 => encode::stream_end(&mut out, RecordType::Params, id),
            4 => encode::stream_end(&mut out, RecordType::Stdin, id),
            5 => encode::abort_request(&mut out, id),
            6 => encode::get_values(&mut out, &["FCGI_MAX_CONNS", "X"]),
            _ => {
                let t = RecordType::from_u8(rng.below(14) as u8);
                let n = rng.below(40) as usize;
                let content = rng.bytes(n);
                let pad = Padding::Fixed(rng.below(4) as u8);
                encode::record(&mut out, t, id, &content, pad);
            }
        }
    }
    out
}

async fn hammer(script: &str, seed: u64) {
    let m = mock(script).await;
    let mut rng = Rng(seed);
    for case in 1..=150u64 {
        let bytes = input(&mut rng);
        let mut c = Client::connect(m.addr()).await;
        c.send(&bytes).await;
        let _ = c.stream.shutdown().await;
        // Whatever the mock made of it, the connection must end and be journaled.
        within(
            &format!("case {case}: connection journaled as closed"),
            m.journal()
                .wait_for(|s| s.connection(case).is_some_and(|c| !c.is_open())),
        )
        .await;
        let conn = m.journal().with(|s| s.connection(case).cloned()).unwrap();
        assert!(conn.closed_by.is_some() && conn.close_reason.is_some());
    }
    // Still serving.
    let mut c = Client::connect(m.addr()).await;
    c.request(1, KEEP_CONN, &[("SCRIPT_NAME", "/ok")], b"")
        .await;
    assert!(c.response(1).await.end.is_some());
}

#[tokio::test]
async fn random_input_without_multiplexing() {
    hammer("", 0x9E37_79B9_7F4A_7C15).await;
}

#[tokio::test]
async fn random_input_with_multiplexing_and_values() {
    hammer(
        "[server]\nmultiplex = true\n[server.values]\nFCGI_MAX_CONNS = 1\n[default]\nreply_after = \"params\"\nbody = [{ data = \"x\" }]",
        42,
    )
    .await;
}
