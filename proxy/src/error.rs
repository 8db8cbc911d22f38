//! Errors on the request path. Each says where it came from, whether the request may be retried
//! on another connection, and which status the client gets (docs/reference/apache.md §4.3, with
//! our deviations: a bad or truncated backend response before headers is a 502).

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
    /// `limits.max_waiting` requests already wait for a connection to this backend.
    QueueFull,
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
    /// The backend provably never read the request: a fresh connection that got nothing back,
    /// not even the FCGI_GET_VALUES answer that a backend known to answer sends as soon as a
    /// worker reads the connection. Any request may be sent again then.
    pub undelivered: bool,
}

impl ProxyError {
    #[cold]
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        let side = match kind {
            ErrorKind::AcquireTimeout | ErrorKind::QueueFull | ErrorKind::NoMemberAvailable => {
                Side::Internal
            }
            ErrorKind::ClientBody => Side::Downstream,
            _ => Side::Upstream,
        };
        ProxyError {
            kind,
            side,
            detail: detail.into(),
            reused: false,
            response_started: false,
            undelivered: false,
        }
    }

    pub fn on_reused(mut self, reused: bool) -> Self {
        self.reused = reused;
        self
    }

    /// The connection broke (reset, closed, write failed) before any response byte came back.
    pub fn broke_before_response(&self) -> bool {
        !self.response_started
            && matches!(self.kind, ErrorKind::WriteFailed | ErrorKind::BackendClosed)
    }

    /// May this request be sent again on another connection? Only when the connection broke
    /// before any response byte, and one of:
    /// - no worker ever read the request (`undelivered`: a backend restarting, a connect into
    ///   a listener that is closing), whatever the method;
    /// - the method is idempotent and the connection was a reused one (the backend may have
    ///   closed it just as the request went out: pingora's `ReusedOnly`);
    /// - the method is idempotent, the connection was fresh and no fresh-connection failure of
    ///   this request was resent before (`resent_fresh`): a worker that quits as it reads (a
    ///   reload) looks like one that crashed, and either gets one more try.
    ///
    /// A non-idempotent request a worker may have read is never sent twice. Whether the body
    /// can be replayed is the caller's half of the decision.
    pub fn may_resend(&self, idempotent: bool, resent_fresh: bool) -> bool {
        self.broke_before_response()
            && (self.undelivered || (idempotent && (self.reused || !resent_fresh)))
    }

    /// This failure, if resent, uses up the one retry a fresh-connection failure gets.
    pub fn spends_fresh_retry(&self) -> bool {
        !self.undelivered && !self.reused
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
        if self.undelivered {
            // No worker took the request: the backend is unavailable, it sent nothing bad.
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        match self.kind {
            ErrorKind::ConnectFailed
            | ErrorKind::ConnectTimeout
            | ErrorKind::AcquireTimeout
            | ErrorKind::QueueFull
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
        if self.undelivered {
            f.write_str(" [not read by the backend]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn broke(kind: ErrorKind, reused: bool, started: bool, undelivered: bool) -> ProxyError {
        let mut e = ProxyError::new(kind, "x").on_reused(reused);
        e.response_started = started;
        e.undelivered = undelivered;
        e
    }

    #[test]
    fn a_request_no_worker_took_is_503_not_502() {
        assert_eq!(
            broke(ErrorKind::BackendClosed, false, false, true).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            broke(ErrorKind::BackendClosed, false, false, false).status(),
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn what_may_be_sent_again() {
        use ErrorKind::{BackendClosed as Closed, ResponseTimeout, WriteFailed};
        // (kind, reused, response started, undelivered, idempotent, resent fresh before)
        //   -> may resend
        let table = [
            // A stale pooled connection: idempotent requests only.
            (Closed, true, false, false, true, false, true),
            (Closed, true, false, false, true, true, true),
            (Closed, true, false, false, false, false, false),
            (WriteFailed, true, false, false, true, false, true),
            // A fresh connection a worker may have read: idempotent requests, once.
            (Closed, false, false, false, true, false, true),
            (Closed, false, false, false, true, true, false),
            (Closed, false, false, false, false, false, false),
            // No worker read it: any method, any number of times (bounded by the caller).
            (Closed, false, false, true, false, false, true),
            (WriteFailed, false, false, true, false, true, true),
            (Closed, true, false, true, false, false, true),
            // Part of the response came: never.
            (Closed, true, true, false, true, false, false),
            (Closed, false, true, true, false, false, false),
            // A timeout: the request may still run where it waits.
            (ResponseTimeout, true, false, false, true, false, false),
        ];
        for (kind, reused, started, undelivered, idempotent, resent_fresh, want) in table {
            let e = broke(kind, reused, started, undelivered);
            assert_eq!(
                e.may_resend(idempotent, resent_fresh),
                want,
                "{kind:?} reused={reused} started={started} undelivered={undelivered} \
                 idempotent={idempotent} resent_fresh={resent_fresh}"
            );
        }
    }
}
