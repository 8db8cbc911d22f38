//! Errors on the request path. Each says where it came from, whether the request may be retried
//! on another connection, and which status the client gets (apache.md 4.4, with our deviations:
//! a bad or truncated backend response before headers is a 502).

use http::StatusCode;

/// Which side of the proxy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The backend: connect, write, read, protocol.
    Upstream,
    /// The client: its request or its connection.
    Downstream,
    /// The proxy itself: configuration, pool limits.
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The backend refused or failed the connection attempt.
    ConnectFailed,
    /// No connection within `connectiontimeout`.
    ConnectTimeout,
    /// The pool's `max` was reached and no connection freed up within `acquire`.
    AcquireTimeout,
    /// No balancer member is usable.
    NoMemberAvailable,
    /// Writing the request to the backend failed.
    WriteFailed,
    /// The backend closed or reset the connection before the response was complete.
    BackendClosed,
    /// Nothing arrived from the backend within `timeout`.
    ResponseTimeout,
    /// A record that breaks the protocol (bad version, foreign request id, bad body).
    BadRecord,
    /// The CGI response headers were malformed or too large.
    BadResponseHeader,
    /// The backend ended the request with a non-complete protocol status (OVERLOADED, ...).
    Refused,
    /// Reading the client's request body failed.
    ClientBody,
}

#[derive(Debug, Clone)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub side: Side,
    pub detail: String,
    /// The failure happened on a connection that came from the pool (a stale keep-alive race).
    pub reused: bool,
    /// Some of the backend's response had been received.
    pub response_started: bool,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        let side = match kind {
            ErrorKind::AcquireTimeout | ErrorKind::NoMemberAvailable => Side::Internal,
            ErrorKind::ClientBody => Side::Downstream,
            _ => Side::Upstream,
        };
        ProxyError {
            kind,
            side,
            detail: detail.into(),
            reused: false,
            response_started: false,
        }
    }

    pub fn on_reused(mut self, reused: bool) -> Self {
        self.reused = reused;
        self
    }

    /// Safe to send the same request again on a fresh connection: it failed on a reused
    /// connection before any response byte came back (pingora's `ReusedOnly`). Whether the
    /// request body can be replayed is the caller's half of the decision.
    pub fn retry_on_fresh_connection(&self) -> bool {
        self.reused
            && !self.response_started
            && matches!(self.kind, ErrorKind::WriteFailed | ErrorKind::BackendClosed)
    }

    /// The member failed in a way that says it is down (for balancer error state and failover).
    pub fn member_is_down(&self) -> bool {
        !self.response_started
            && matches!(
                self.kind,
                ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout | ErrorKind::AcquireTimeout
            )
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::ConnectFailed
            | ErrorKind::ConnectTimeout
            | ErrorKind::AcquireTimeout
            | ErrorKind::NoMemberAvailable
            | ErrorKind::Refused
            | ErrorKind::WriteFailed => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::BackendClosed | ErrorKind::BadRecord | ErrorKind::BadResponseHeader => {
                StatusCode::BAD_GATEWAY
            }
            ErrorKind::ClientBody => StatusCode::BAD_REQUEST,
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({:?}): {}", self.kind, self.side, self.detail)?;
        if self.reused {
            f.write_str(" [reused connection]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProxyError {}
