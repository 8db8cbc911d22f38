//! `fcgi-proxy`: an HTTP/1.1 to FastCGI reverse proxy with the semantics of Apache httpd 2.4's
//! `mod_proxy_fcgi`. See `docs/architecture.md` for the map of the request path.

pub mod access_log;
pub mod admission;
pub mod answers;
pub mod balancer;
pub mod body;
pub mod cgi;
pub mod config;
pub mod error;
pub mod error_log;
pub mod exchange;
pub mod handler;
pub mod metrics;
pub mod mounts;
pub mod net;
pub mod pool;
pub mod response;
pub mod route;
pub mod server;
pub mod site;
pub mod spread;
pub mod static_files;
pub mod systemd;
pub mod tls;
pub mod uri;

/// A future moved into a new box, written there directly: `Box::pin(f)` builds the whole
/// future on the stack first and copies all of it, a few KiB per request for the request's
/// futures, mostly bytes no state has used yet. A macro, not a function: a function's argument
/// is itself a copy on the stack.
macro_rules! box_in_place {
    ($f:expr) => {{
        let boxed = Box::into_pin(Box::write(Box::new_uninit(), $f));
        boxed
    }};
}
pub(crate) use box_in_place;
