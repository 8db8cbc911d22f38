//! The request lifecycle on one connection, as two state machines: [`Client`] (the web server's
//! side: BEGIN_REQUEST, PARAMS and STDIN out; STDOUT, STDERR and END_REQUEST in) and [`Server`]
//! (the application's side: the same records the other way round, for any number of
//! multiplexed request ids).
//!
//! Both are sans-IO: the caller feeds the bytes it read and sends the bytes the machine encodes,
//! so the rules of spec sections 3 to 6 (which record may come when, for which request id, what
//! ends a stream and a request, when a connection may carry another request) live here once,
//! for the proxy, the mock backend and the simulator alike. Neither machine owns a socket, a
//! clock or a task; timeouts and the decision to close stay with the caller.

pub mod client;
pub mod server;

pub use client::{Client, ClientError, ClientEvent, StdinEncoder};
pub use server::{Ignored, Server, ServerError, ServerEvent};
