//! The mock inside a turmoil simulation (feature `sim`): virtual time in the journal, and the
//! same seed giving the same journal.

#![cfg(feature = "sim")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Client;
use fastcgi::KEEP_CONN;
use fcgi_mock::{Journal, MockServer};

const SCRIPT: &str = r#"
[server]
idle_timeout_ms = 1000
[[rule]]
match = { script_name_prefix = "/slow" }
body = [{ data = "a" }, { data = "b", delay_ms = 300 }]
"#;

/// Runs one scenario and returns the journal's JSON lines.
fn run(seed: u64) -> Vec<String> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(30))
        .build();
    let slot: Arc<Mutex<Option<Journal>>> = Arc::default();
    let host_slot = slot.clone();
    sim.host("backend", move || {
        let slot = host_slot.clone();
        async move {
            let listener = turmoil::net::TcpListener::bind("0.0.0.0:9000").await?;
            // Created inside the host so that its clock is the host's virtual clock.
            let journal = Journal::new();
            *slot.lock().unwrap() = Some(journal.clone());
            let _mock = MockServer::spawn_with_journal(common::script(SCRIPT), listener, journal)?;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    sim.client("proxy", async {
        let stream = turmoil::net::TcpStream::connect("backend:9000").await?;
        let mut c = Client::new(stream);
        let t0 = tokio::time::Instant::now();
        c.request(1, KEEP_CONN, &[("SCRIPT_NAME", "/slow")], b"")
            .await;
        let r = c.response(1).await;
        assert!(r.stdout_text().ends_with("ab"), "{r:?}");
        assert!(t0.elapsed() >= Duration::from_millis(300));
        c.request(1, KEEP_CONN, &[("SCRIPT_NAME", "/echo")], b"x")
            .await;
        assert!(c.response(1).await.end.is_some());
        // The idle timeout closes the kept connection in virtual time.
        c.wait_closed().await?;
        Ok(())
    });
    sim.run().expect("simulation");
    let journal = slot.lock().unwrap().clone().expect("backend started");
    let s = journal.snapshot();
    assert_eq!(s.connection_count(), 1);
    assert_eq!(s.requests_on(1).len(), 2);
    let slow = s.request(1).unwrap();
    let took = slow.end_ms.unwrap() - slow.begin_ms;
    assert!((300..1000).contains(&took), "virtual time: {took} ms");
    assert_eq!(
        s.connection(1).unwrap().close_reason.as_deref(),
        Some("idle_timeout")
    );
    journal.lines()
}

#[test]
fn same_seed_same_journal() {
    let a = run(7);
    let b = run(7);
    assert_eq!(a, b);
    assert_eq!(a.len(), 4, "{a:#?}");
}
