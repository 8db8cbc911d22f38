//! Verdicts: a run's observations against the scenario's expectations, plus the invariants that
//! hold for every scenario and every seed:
//!
//! - every client request is resolved exactly once, within the client's timeout;
//! - no connection leaked: at the end, the proxy's open backend connections, its pools' counts
//!   and the backends' journals agree;
//! - no response went to the wrong client (echoed responses carry the request's own tag);
//! - no backend got more connections at once than the proxy's caps for it allow: the sum over
//!   the proxy's workers that target it of each worker's configured `max` (times the number of
//!   proxy instances, `topology.proxies`: each has its own pools); and no pool grew
//!   beyond the cap it had in force (which includes an `FCGI_MAX_CONNS` it learned), checked
//!   after every simulation step.

use std::fmt;
use std::time::Duration;

use fcgi_mock::{ManagementKind, RequestEntry};

use crate::ours;
use crate::report::Verdict;
use crate::scenario::{
    BackendExpect, ClientOutcome, Expect, Level, ParamExpect, Scenario, glob_match,
};
use crate::sim::Run;
use crate::sim::client::{RequestResult, TAG_PARAM};

/// The judgement of one run: what failed, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Expectations that did not hold.
    pub failures: Vec<String>,
    /// Invariants that did not hold.
    pub violations: Vec<String>,
}

impl Judgement {
    pub fn pass(&self) -> bool {
        self.failures.is_empty() && self.violations.is_empty()
    }

    /// PASS or FAIL (an INFO-level scenario is reported, not judged).
    pub fn verdict(&self, level: Level) -> Verdict {
        match (level, self.pass()) {
            (Level::Info, _) => Verdict::Info,
            (_, true) => Verdict::Pass,
            (_, false) => Verdict::Fail,
        }
    }

    /// Every reason, invariants first.
    pub fn reasons(&self) -> Vec<String> {
        self.violations
            .iter()
            .map(|v| format!("invariant: {v}"))
            .chain(self.failures.iter().cloned())
            .collect()
    }
}

impl fmt::Display for Judgement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.pass() { "PASS" } else { "FAIL" })
    }
}

/// A backend request that carried a client request's tag.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    pub backend: &'a str,
    pub incarnation: usize,
    pub entry: &'a RequestEntry,
    pub begin: Duration,
}

/// Every time the request labelled `label` reached a backend, in time order.
pub fn served<'a>(run: &'a Run, label: &str) -> Vec<Served<'a>> {
    let mut out = Vec::new();
    for b in &run.backends {
        for (i, inc) in b.incarnations.iter().enumerate() {
            for r in &inc.journal.requests {
                if r.param(TAG_PARAM).as_deref() == Some(label) {
                    out.push(Served {
                        backend: &b.name,
                        incarnation: i,
                        entry: r,
                        begin: inc.at(r.begin_ms),
                    });
                }
            }
        }
    }
    out.sort_by_key(|s| s.begin);
    out
}

/// The backend that answered a request: the last one it reached, or `none`.
fn served_by(run: &Run, label: &str) -> String {
    served(run, label)
        .last()
        .map_or_else(|| "none".to_string(), |s| s.backend.to_string())
}

fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

/// Checks everything.
pub fn judge(s: &Scenario, run: &Run) -> Judgement {
    let mut v = Judgement {
        failures: Vec::new(),
        violations: invariants(s, run),
    };
    if let Some(e) = &run.error {
        v.failures.push(format!("run: {e}"));
    }
    expectations(s, run, &mut v.failures);
    v
}

/// The expectations that read the FastCGI wire as a recording backend (the mock) journals it:
/// connections, the KEEP_CONN flag, params, STDIN, close reasons, management records. A real
/// backend program only leaves an execution log (which request ran, when, in which process),
/// so for it these are not judged. Each kind once, in the order of the `Expect` fields.
pub fn wire_expectations(e: &Expect) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    let mut add = |on: bool, name: &'static str| {
        if on && !out.contains(&name) {
            out.push(name);
        }
    };
    for r in &e.requests {
        add(r.keep_conn.is_some(), "keep_conn");
        add(r.params.is_some(), "params");
        add(r.stdin.is_some(), "stdin");
    }
    for b in &e.backends {
        add(b.connections.is_some(), "connections");
        add(
            b.requests_per_connection.is_some(),
            "requests_per_connection",
        );
        add(
            b.max_concurrent_connections.is_some(),
            "max_concurrent_connections",
        );
        add(b.keep_conn.is_some(), "keep_conn");
        add(b.close_reasons.is_some(), "close_reasons");
        add(b.get_values.is_some(), "get_values");
        add(b.well_formed, "well_formed");
        add(!b.paths_absent.is_empty(), "paths_absent");
        add(
            b.stdin_matches_content_length,
            "stdin_matches_content_length",
        );
    }
    out
}

/// `e` without its [`wire_expectations`]: what an execution log can judge (statuses, outcomes,
/// times, bodies and headers, which backend ran a request and how often, request counts).
/// Expectations left with nothing to check are dropped.
pub fn without_wire(e: &Expect) -> Expect {
    let mut e = e.clone();
    for r in &mut e.requests {
        r.keep_conn = None;
        r.params = None;
        r.stdin = None;
    }
    e.requests.retain(|r| {
        r.status.is_some()
            || r.outcome.is_some()
            || r.served_by.is_some()
            || r.elapsed.is_some()
            || r.first_body_byte.is_some()
            || r.attempts.is_some()
            || r.body_contains.is_some()
            || r.body_lacks.is_some()
            || r.body_length.is_some()
            || !r.headers.is_empty()
            || !r.headers_absent.is_empty()
            || r.responses.is_some()
            || r.closed.is_some()
    });
    for b in &mut e.backends {
        *b = BackendExpect {
            backend: b.backend.clone(),
            requests: b.requests.clone(),
            ..BackendExpect::default()
        };
    }
    e.backends.retain(|b| b.requests.is_some());
    e
}

/// Whether `e` expects anything at all (the invariants hold for every run anyway).
pub fn expects_anything(e: &Expect) -> bool {
    !(e.requests.is_empty()
        && e.backends.is_empty()
        && e.sequences.is_empty()
        && e.statuses.is_empty()
        && e.served.is_empty())
}

/// The invariants alone.
pub fn invariants(s: &Scenario, run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    let planned = s.planned_requests();
    // Resolved exactly once, within the timeout.
    for (p, r) in planned.iter().zip(&run.requests) {
        let timeout = s.clients[p.client].timeout.0;
        match r {
            None => out.push(format!("{}: never resolved", p.label)),
            Some(r) => {
                if r.resolutions != 1 {
                    out.push(format!("{}: resolved {} times", p.label, r.resolutions));
                }
                if r.outcome == ClientOutcome::Timeout || r.elapsed() > timeout {
                    out.push(format!(
                        "{}: not resolved within the client's timeout of {}",
                        p.label,
                        ms(timeout)
                    ));
                }
            }
        }
    }
    // No leak: connector, pools and journals agree.
    if run.error.is_none() && run.connections_observed {
        let views = crate::sim::connection_views(&run.net, &run.pool_open(), &run.journal_open());
        let partitioned: Vec<String> = run
            .backends
            .iter()
            .filter(|b| b.partitioned)
            .map(|b| b.authority.clone())
            .collect();
        for (addr, live, pooled, journal) in views {
            if !crate::sim::views_agree(&addr, live, pooled, journal, &partitioned) {
                out.push(format!(
                    "connections to {addr} disagree after settling: proxy has {live} open, \
                     its pools count {pooled}, the backend journal {journal}"
                ));
            }
        }
    }
    // Right client.
    for r in run.requests.iter().flatten() {
        if r.outcome != ClientOutcome::Complete {
            continue;
        }
        if let Some(tag) = echoed_tag(&r.body)
            && tag != r.label
        {
            out.push(format!(
                "{}: got the response to {tag} (echoed by the backend)",
                r.label
            ));
        }
    }
    // Caps: the configured ones over the whole run, and the caps in force (a learned
    // FCGI_MAX_CONNS included) whenever a connection was attempted.
    for b in &s.backends {
        let authority = b.authority();
        // Every instance has its own pools, each with the configured caps.
        let instances = s.topology.proxies.max(1) as usize;
        let cap = ours::connection_cap(&run.config, &authority, None) * instances;
        let max = run.net.get(&authority).map_or(0, |n| n.max_live);
        if max > cap {
            let from = if instances == 1 {
                "the proxy".to_string()
            } else {
                format!("the {instances} proxy instances")
            };
            out.push(format!(
                "{} had {max} connections from {from} at once; its configured cap is {cap}",
                b.name
            ));
        }
    }
    out.extend(run.pool_cap_violations.iter().cloned());
    out
}

/// The request tag inside an echo body (the mock's `action = "echo"` JSON).
pub fn echoed_tag(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("params")?
        .as_array()?
        .iter()
        .filter_map(|p| p.as_array())
        .find(|p| p.first().and_then(|n| n.as_str()) == Some(TAG_PARAM))
        .and_then(|p| p.get(1)?.as_str().map(str::to_string))
}

fn result<'a>(run: &'a Run, label: &str) -> Option<&'a RequestResult> {
    run.requests.iter().flatten().find(|r| r.label == label)
}

/// What `entry`'s params break of `p`.
fn param_failures(s: &Scenario, p: &ParamExpect, entry: &RequestEntry) -> Vec<String> {
    let mut out = Vec::new();
    // The param is present with a value `ok` accepts; `what` says what was expected.
    let value = |name: &str, what: String, ok: &dyn Fn(&str) -> bool| match entry.param(name) {
        Some(v) if ok(&v) => None,
        Some(v) => Some(format!("param {name}={v:?}, expected {what}")),
        None => Some(format!("param {name} absent, expected {what}")),
    };
    for name in &p.present {
        let name = &s.expand(name);
        if entry.param(name).is_none() {
            out.push(format!("param {name} absent, expected present"));
        }
    }
    for name in &p.absent {
        let name = &s.expand(name);
        if let Some(v) = entry.param(name) {
            out.push(format!("param {name}={v:?} present, expected absent"));
        }
    }
    for (name, want) in &p.equal {
        let want = s.expand(want);
        out.extend(value(name, format!("{want:?}"), &|v| v == want));
    }
    for (name, bad) in &p.not_equal {
        let bad = s.expand(bad);
        if entry.params_named(name).contains(&bad) {
            out.push(format!("param {name}={bad:?}, expected any other value"));
        }
    }
    for (name, bad) in &p.lacks {
        let bad = &s.expand(bad);
        if let Some(v) = entry
            .params_named(name)
            .into_iter()
            .find(|v| v.contains(bad))
        {
            out.push(format!("param {name}={v:?} contains {bad:?}"));
        }
    }
    for (name, want) in &p.starts_with {
        let want = s.expand(want);
        let what = format!("it to start with {want:?}");
        out.extend(value(name, what, &|v| v.starts_with(&want)));
    }
    for (name, want) in &p.ends_with {
        let want = s.expand(want);
        let what = format!("it to end with {want:?}");
        out.extend(value(name, what, &|v| v.ends_with(want.as_str())));
    }
    for (name, want) in &p.length {
        let got: Vec<usize> = entry
            .params
            .iter()
            .filter(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| v.len())
            .collect();
        if got != [*want] {
            out.push(format!(
                "param {name} value lengths {got:?}, expected [{want}]"
            ));
        }
    }
    if p.no_control {
        for (n, v) in &entry.params {
            if n.iter()
                .chain(v.iter())
                .any(|b| matches!(b, b'\r' | b'\n' | 0))
            {
                out.push(format!(
                    "param {}={:?} holds a CR, LF or NUL",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(v)
                ));
            }
        }
    }
    if p.unique {
        let mut names: Vec<&[u8]> = entry.params.iter().map(|(n, _)| n.as_ref()).collect();
        names.sort_unstable();
        for w in names.windows(2) {
            if w[0] == w[1] {
                out.push(format!(
                    "param {} sent more than once",
                    String::from_utf8_lossy(w[0])
                ));
            }
        }
    }
    out
}

fn expectations(s: &Scenario, run: &Run, out: &mut Vec<String>) {
    for e in &s.expect.requests {
        for label in run.labels.iter().filter(|l| glob_match(&e.requests, l)) {
            let Some(r) = result(run, label) else {
                out.push(format!("{label}: no result"));
                continue;
            };
            if let Some(when) = &e.when_status
                && !r.status.is_some_and(|st| when.contains(&st))
            {
                continue;
            }
            let mut fail = |m: String| out.push(format!("{label}: {m}"));
            if let Some(want) = &e.status
                && !r.status.is_some_and(|st| want.contains(&st))
            {
                fail(format!(
                    "status {}, expected one of {want:?}",
                    r.status.map_or("none".into(), |s| s.to_string())
                ));
            }
            let outcomes = e
                .outcome
                .clone()
                .or_else(|| e.status.as_ref().map(|_| vec![ClientOutcome::Complete]));
            if let Some(want) = outcomes
                && !want.contains(&r.outcome)
            {
                fail(format!(
                    "outcome {:?}{}, expected one of {want:?}",
                    r.outcome,
                    r.error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
            let seen = served(run, label);
            if let Some(want) = &e.served_by {
                let by = served_by(run, label);
                if !want.contains(&by) {
                    fail(format!("served by {by}, expected one of {want:?}"));
                }
            }
            if let Some(b) = &e.elapsed
                && !b.accepts_within(r.elapsed(), run.timing_slack)
            {
                fail(format!(
                    "took {}, expected {}..{}",
                    ms(r.elapsed()),
                    b.min.map_or("".into(), |d| d.to_string()),
                    b.max.map_or("".into(), |d| d.to_string()),
                ));
            }
            if let Some(b) = &e.first_body_byte {
                match r.first_body_at {
                    Some(at)
                        if b.accepts_within(at.saturating_sub(r.sent_at), run.timing_slack) => {}
                    Some(at) => fail(format!(
                        "first body byte after {}, expected {}..{}",
                        ms(at.saturating_sub(r.sent_at)),
                        b.min.map_or("".into(), |d| d.to_string()),
                        b.max.map_or("".into(), |d| d.to_string()),
                    )),
                    None => fail("no response body byte arrived".into()),
                }
            }
            if let Some(c) = &e.attempts
                && !c.accepts(seen.len())
            {
                fail(format!(
                    "reached a backend {} times, expected {c}",
                    seen.len()
                ));
            }
            let last = seen.last().map(|x| x.entry);
            if let Some(k) = e.keep_conn {
                match last {
                    Some(r) if r.keep_conn == k => {}
                    Some(r) => fail(format!("FCGI_KEEP_CONN was {}, expected {k}", r.keep_conn)),
                    None => fail("never reached a backend (KEEP_CONN expected)".into()),
                }
            }
            if let Some(p) = &e.params {
                match last {
                    None => fail("never reached a backend (params expected)".into()),
                    Some(entry) => param_failures(s, p, entry).into_iter().for_each(&mut fail),
                }
            }
            if let Some(want) = &e.stdin {
                match last {
                    Some(entry) if entry.stdin_lossy() == *want => {}
                    Some(entry) => fail(format!(
                        "backend read {:?} on STDIN, expected {want:?}",
                        entry.stdin_lossy()
                    )),
                    None => fail("never reached a backend (STDIN expected)".into()),
                }
            }
            let body = String::from_utf8_lossy(&r.body);
            if let Some(want) = &e.body_contains
                && !body.contains(want.as_str())
            {
                fail(format!("body lacks {want:?}"));
            }
            if let Some(bad) = &e.body_lacks
                && body.contains(bad.as_str())
            {
                fail(format!("body contains {bad:?}"));
            }
            for (name, want) in &e.headers {
                match r.header(name) {
                    Some(v) if v == want => {}
                    Some(v) => fail(format!("header {name}: {v:?}, expected {want:?}")),
                    None => fail(format!("header {name} absent, expected {want:?}")),
                }
            }
            if let Some(want) = e.body_length
                && r.body.len() != want
            {
                fail(format!("body of {} bytes, expected {want}", r.body.len()));
            }
            for name in &e.headers_absent {
                if let Some(v) = r.header(name) {
                    fail(format!("header {name}: {v:?} present, expected absent"));
                }
            }
            if let Some(c) = &e.responses
                && !c.accepts(r.responses.len())
            {
                fail(format!(
                    "{} responses on the connection {:?}, expected {c}",
                    r.responses.len(),
                    r.responses
                ));
            }
            if let Some(want) = e.closed
                && r.closed != want
            {
                fail(if want {
                    "the proxy kept the connection open, expected it closed".into()
                } else {
                    "the proxy closed the connection, expected it kept open".into()
                });
            }
        }
    }

    for e in &s.expect.sequences {
        let got: Vec<String> = run
            .labels
            .iter()
            .filter(|l| glob_match(&e.requests, l))
            .map(|l| served_by(run, l))
            .collect();
        if got != e.served_by {
            out.push(format!(
                "{}: served by {got:?}, expected {:?}",
                e.requests, e.served_by
            ));
        }
    }

    for e in &s.expect.statuses {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for l in run.labels.iter().filter(|l| glob_match(&e.requests, l)) {
            let st = result(run, l)
                .and_then(|r| r.status)
                .map_or("none".to_string(), |s| s.to_string());
            *counts.entry(st).or_default() += 1;
        }
        if counts != e.counts {
            out.push(format!(
                "{}: statuses {counts:?}, expected {:?}",
                e.requests, e.counts
            ));
        }
    }

    for e in &s.expect.served {
        let n = run
            .labels
            .iter()
            .filter(|l| glob_match(&e.requests, l))
            .filter(|l| served_by(run, l) == e.backend)
            .count();
        if !e.count.accepts(n) {
            out.push(format!(
                "{}: {} answered {n}, expected {}",
                e.requests, e.backend, e.count
            ));
        }
    }

    for e in &s.expect.backends {
        let Some(b) = run.backends.iter().find(|b| b.name == e.backend) else {
            out.push(format!("{}: never started", e.backend));
            continue;
        };
        let mut fail = |m: String| out.push(format!("backend {}: {m}", e.backend));
        let conns: Vec<_> = b
            .incarnations
            .iter()
            .flat_map(|i| i.journal.connections.iter().map(move |c| (i, c)))
            .collect();
        let reqs: Vec<&RequestEntry> = b
            .incarnations
            .iter()
            .flat_map(|i| i.journal.requests.iter())
            .collect();
        if let Some(c) = &e.connections
            && !c.accepts(conns.len())
        {
            fail(format!("{} connections, expected {c}", conns.len()));
        }
        if let Some(c) = &e.requests
            && !c.accepts(reqs.len())
        {
            fail(format!("{} requests, expected {c}", reqs.len()));
        }
        if let Some(want) = &e.requests_per_connection {
            let got: Vec<usize> = conns.iter().map(|(_, c)| c.requests.len()).collect();
            if got != *want {
                fail(format!(
                    "requests per connection {got:?}, expected {want:?}"
                ));
            }
        }
        if let Some(c) = &e.max_concurrent_connections {
            let got = run.net.get(&b.authority).map_or(0, |n| n.max_live);
            if !c.accepts(got) {
                fail(format!(
                    "{got} connections open at once at most, expected {c}"
                ));
            }
        }
        if let Some(k) = e.keep_conn {
            for r in &reqs {
                if r.keep_conn != k {
                    fail(format!(
                        "request {} ({}) had FCGI_KEEP_CONN {}, expected {k}",
                        r.seq,
                        r.param(TAG_PARAM).unwrap_or_default(),
                        r.keep_conn
                    ));
                }
            }
        }
        if let Some(want) = &e.close_reasons {
            for (inc, c) in &conns {
                if inc.ended_at.is_some() && c.close_reason.is_none() {
                    continue; // ended by a crash or restart
                }
                if let Some(reason) = &c.close_reason
                    && !want.contains(reason)
                {
                    fail(format!(
                        "connection {} closed ({reason}), expected one of {want:?}",
                        c.id
                    ));
                }
            }
        }
        if e.well_formed {
            for (_, c) in &conns {
                if c.close_reason.as_deref() == Some("protocol_error") {
                    fail(format!("connection {} closed for a protocol error", c.id));
                }
            }
            for r in &reqs {
                if r.request_id == 0 || !r.params_complete || !r.stdin_complete {
                    fail(format!(
                        "request {}: id {}, PARAMS ended {}, STDIN ended {}",
                        r.seq, r.request_id, r.params_complete, r.stdin_complete
                    ));
                }
            }
        }
        for bad in &e.paths_absent {
            for r in &reqs {
                for name in [
                    "SCRIPT_NAME",
                    "SCRIPT_FILENAME",
                    "PATH_INFO",
                    "PATH_TRANSLATED",
                ] {
                    if let Some(v) = r.params_named(name).into_iter().find(|v| v.contains(bad)) {
                        fail(format!(
                            "request {} had {name}={v:?}, containing {bad:?}",
                            r.seq
                        ));
                    }
                }
            }
        }
        if e.stdin_matches_content_length {
            for r in &reqs {
                let declared = r
                    .param("CONTENT_LENGTH")
                    .and_then(|v| v.parse::<u64>().ok());
                if r.stdin_complete && declared.is_some_and(|d| d != r.stdin_len) {
                    fail(format!(
                        "request {} ended its STDIN after {} bytes, CONTENT_LENGTH {:?}",
                        r.seq,
                        r.stdin_len,
                        r.param("CONTENT_LENGTH")
                    ));
                }
            }
        }
        if let Some(c) = &e.get_values {
            let n = b
                .incarnations
                .iter()
                .flat_map(|i| &i.journal.management)
                .filter(|m| matches!(m.kind, ManagementKind::GetValues { .. }))
                .count();
            if !c.accepts(n) {
                fail(format!("{n} FCGI_GET_VALUES, expected {c}"));
            }
        }
    }
}
