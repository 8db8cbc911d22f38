//! Support shared by the tests and the conformance suite. It depends on no crate of this
//! workspace, so every test crate and the suite can use it.
//!
//! [`http1`]: HTTP/1.x responses parsed from the raw bytes a connection delivered (status,
//! headers, and a body framed by Content-Length, chunked coding or the end of the connection),
//! for the clients that send what no HTTP library would and must read back exactly what came.

pub mod http1;
