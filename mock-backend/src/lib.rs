//! Scriptable mock FastCGI backend: the measuring instrument of the conformance suite.
//!
//! A [`Script`] (TOML, see [`script::FORMAT`]) says how to answer each request; the server runs
//! over any [`Acceptor`] (tokio TCP and Unix sockets; turmoil TCP with the `sim` feature) and
//! writes everything it sees into a [`Journal`] that tests query.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fcgi_mock::{MockServer, Script};
//! let script = Script::from_toml_str(r#"
//!     [default]
//!     status = 200
//!     headers = [["Content-Type", "text/plain"]]
//!     body = [{ data = "hello" }]
//! "#).expect("valid script");
//! let mock = MockServer::bind_tcp("127.0.0.1:0", script).await?;
//! println!("backend at {}", mock.addr());
//! // ... drive a proxy at it ...
//! assert_eq!(mock.journal().connection_count(), 0);
//! mock.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Determinism: time comes only from `tokio::time`, every `select!` is `biased`, and nothing
//! iterates a hash map, so the mock behaves the same under a turmoil simulation.

pub mod behaviour;
mod conn;
pub mod journal;
pub mod net;
pub mod script;
pub mod server;

pub use journal::{
    ClosedBy, ConnectionEntry, Journal, ManagementEntry, ManagementKind, Note, NoteKind, Outcome,
    RequestEntry, Snapshot,
};
pub use net::{Acceptor, Connection};
pub use script::{Action, Chunk, Cut, CutThen, Match, Overflow, Rule, Script, ScriptError};
pub use server::{MockHandle, MockServer};
