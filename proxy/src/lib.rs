//! `fcgi-proxy`: an HTTP/1.1 to FastCGI reverse proxy with the semantics of Apache httpd 2.4's
//! `mod_proxy_fcgi`. See `docs/architecture.md` for the map of the request path.

pub mod cgi;
pub mod config;
pub mod route;
pub mod uri;
pub mod body;
pub mod error;
pub mod exchange;
pub mod net;
pub mod pool;
pub mod response;
pub mod answers;
pub mod handler;
pub mod server;
pub mod balancer;
pub mod metrics;
