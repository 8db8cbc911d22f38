//! The FastCGI proxy conformance suite: scenario files, a deterministic simulated runner
//! (turmoil), a real runner against live processes, the peer proxies it can drive, reports, and
//! the side-by-side benchmark.

pub mod author;
pub mod bench;
pub mod check;
pub mod cli;
pub mod differ;
pub mod home;
pub mod load;
pub mod ours;
pub mod peers;
pub mod progress;
pub mod real;
pub mod report;
pub mod scenario;
pub mod sim;
