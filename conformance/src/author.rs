//! Writing scenarios: `new <area>/<name>` writes a commented template that runs as it is (in
//! the simulator, and for real against any proxy, `--target external` included), and
//! `explain <id>` says what a scenario checks in plain words.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::home::Home;
use crate::report::level_meaning;
use crate::scenario::{
    BackendExpect, Bounds, ClientConnection, Expect, ParamExpect, RequestExpect, Route, Scenario,
    Transport,
};
use crate::sim::suite::{self, ScenarioFile};

/// `new`: the command line.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Write a commented template scenario to start from",
    after_help = "Writes DIR/<area>/<name>.toml (DIR: scenarios) with the id <area>/<name>: one \
backend, one route, one request and its expectations, each commented. It runs as it is: \
`sim DIR/<area>/<name>.toml`, or for real with `run --scenarios DIR <area>/<name>`. An \
existing file is left alone."
)]
pub struct NewArgs {
    /// The scenario id: <area>/<name>, lower-case words joined by '-'
    #[arg(value_name = "AREA/NAME")]
    pub id: String,
    /// The directory of scenario files to write into
    #[arg(long, value_name = "DIR", default_value = "scenarios")]
    pub dir: PathBuf,
}

/// `explain`: the command line.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "What a scenario checks, in plain words (no id: list them all)",
    after_help = "ID is a scenario id (cgi/proxy-header-dropped), or a scenario file."
)]
pub struct ExplainArgs {
    /// The scenario id or file
    #[arg(value_name = "ID")]
    pub id: Option<PathBuf>,
    /// Also look among the scenario files under DIR
    #[arg(long = "scenarios", value_name = "DIR")]
    pub scenarios: Vec<PathBuf>,
}

/// The template `new` writes for `id`: valid, and passing against a proxy that maps headers
/// the way RFC 3875 says.
pub fn template(id: &str) -> String {
    format!(
        r#"# A conformance scenario. Every key is explained in scenarios/README.md of the suite's
# repository; `fcgi-conformance explain {id}` says in words what this file checks.
# Run it in the simulator:      fcgi-conformance sim path/to/this.toml
# and for real against a proxy: fcgi-conformance run --scenarios DIR {id} --target ...

# Equal to the file's path below the scenario directory, without .toml.
id = "{id}"
# What happens, in a few sentences.
description = """
A GET with a query string and a custom header reaches the backend as REQUEST_METHOD,
QUERY_STRING and HTTP_X_EXAMPLE, and the backend's answer reaches the client.
"""
# MUST or SHOULD (a specification says so: a failure fails the run), COMPAT (what Apache
# httpd does, with no specification behind it: fails the run only with --strict), INFO.
level = "MUST"

# The requirement, quoted from its source. The source is free text (a specification, your
# proxy's documentation); `url` is optional.
[requirement]
quote = """
Meta-variables with names beginning with "HTTP_" contain values read from the client request
header fields, if the protocol used is HTTP.
"""
source = "RFC 3875"
section = "4.1.18"
url = "https://www.rfc-editor.org/rfc/rfc3875#section-4.1.18"

# What the proxy is configured with, in neutral terms. One route from every path to one
# backend is what a proxy you run yourself (--target external) provides.
[topology]
[[topology.route]]
path = "/"
backend = "app"
# Keep backend connections open and reuse them: required, since proxies differ on the default.
reuse = true

# A mock FastCGI backend. With no script it answers every request with 200 and echoes what it
# received; `[backend.script]` makes it answer, stall or misbehave (see the README).
[[backend]]
name = "app"

# A client and its requests. Every request carries `X-Request-Tag: <label>`, so the backend's
# journal says which request it saw.
[[client]]
name = "c1"
[[client.request]]
label = "get"
method = "GET"
target = "/index.php?a=1&b=2"
headers = [["X-Example", "hello"]]

# What must hold. Each list is a set of acceptable outcomes.
[[expect.request]]
requests = "get"
status = [200]
params = {{ equal = {{ REQUEST_METHOD = "GET", QUERY_STRING = "a=1&b=2", HTTP_X_EXAMPLE = "hello" }} }}

# A variant that must FAIL (proves the expectation can fail at all): here a proxy that
# overrides the header's param.
[[mutant]]
why = "a proxy that does not pass the header on"
set = {{ "topology.route.0.fcgi_set" = {{ HTTP_X_EXAMPLE = "changed" }} }}
"#
    )
}

/// `new <area>/<name>`.
pub fn new_cli(home: &Home, args: &NewArgs) -> ExitCode {
    let id = args.id.trim_end_matches(".toml");
    let text = template(id);
    // The id's form is checked by the same rules as any scenario's.
    if let Err(e) = Scenario::parse(&text, id) {
        eprintln!("{}", e.message);
        return ExitCode::from(2);
    }
    let dir = if args.dir.is_absolute() {
        args.dir.clone()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| home.base())
            .join(&args.dir)
    };
    let path = dir.join(format!("{id}.toml"));
    if path.exists() {
        eprintln!("{} exists: left alone", path.display());
        return ExitCode::from(2);
    }
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, text));
    match written {
        Ok(()) => {
            println!("wrote {}", path.display());
            println!("  {} sim {}", home.command(), path.display());
            let run = if home.command() == "cargo xtask" {
                "conformance"
            } else {
                "run"
            };
            println!(
                "  {} {run} --scenarios {} {id} --target ...",
                home.command(),
                args.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

/// `explain [ID]`.
pub fn explain_cli(home: &Home, args: &ExplainArgs) -> ExitCode {
    let selectors: Vec<PathBuf> = args.id.iter().cloned().collect();
    let files = match suite::select(home, &selectors, &args.scenarios, None) {
        Ok(f) => f,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    match (&args.id, files.as_slice()) {
        (Some(_), [one]) => print!("{}", explain(&one.scenario)),
        _ => print!("{}", list(&files)),
    }
    ExitCode::SUCCESS
}

/// One line per scenario: level, id, and the first sentence of its description.
fn list(files: &[ScenarioFile]) -> String {
    let mut out = String::new();
    for f in files {
        let s = &f.scenario;
        let line = flat(&s.description);
        let first = line.split(". ").next().unwrap_or_default();
        let _ = writeln!(out, "{:<6}  {}  {}", s.level.to_string(), s.id, first);
    }
    out
}

/// Text on one line, white space runs as one space.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What `s` checks, in plain words.
pub fn explain(s: &Scenario) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}\n", s.id);
    let _ = writeln!(o, "{}\n", flat(&s.description));
    let _ = writeln!(o, "Level: {} - {}.", s.level, level_meaning(s.level));
    let r = &s.requirement;
    let _ = writeln!(
        o,
        "Requirement ({}, section {}{}):\n  \"{}\"",
        r.source,
        r.section,
        r.url.as_ref().map(|u| format!(", {u}")).unwrap_or_default(),
        flat(&r.quote)
    );
    if let Some(why) = &s.sim.only {
        let _ = writeln!(o, "Runs in the simulator only: {why}");
    }

    let _ = writeln!(o, "\nTopology (what the proxy is configured with):");
    if s.topology.proxies > 1 {
        let _ = writeln!(
            o,
            "  - {} instances of the proxy, each with its own pools",
            s.topology.proxies
        );
    }
    for route in &s.topology.routes {
        let _ = writeln!(o, "  - {}", route_words(route));
    }
    for b in &s.topology.balancers {
        let members: Vec<String> = b
            .members
            .iter()
            .map(|m| {
                let mut w = m.backend.clone();
                if m.loadfactor != 1 {
                    let _ = write!(w, " (weight {})", m.loadfactor);
                }
                if !m.status.is_empty() {
                    let _ = write!(w, " (status {})", m.status);
                }
                w
            })
            .collect();
        let _ = writeln!(
            o,
            "  - balancer {} ({:?}) over {}",
            b.name,
            b.method,
            members.join(", ")
        );
    }
    let _ = writeln!(o, "\nBackends (mock FastCGI servers the suite runs):");
    for b in &s.backends {
        let mut w = format!("  - {}", b.name);
        if let Some(c) = b.capacity {
            let _ = write!(w, ", {c} worker(s)");
        }
        if let Some(m) = &b.model {
            let _ = write!(w, ", behaves like {m}");
        }
        w.push_str(if b.script.is_some() {
            ", answers as its script says"
        } else {
            ", answers 200 and echoes the request"
        });
        let _ = writeln!(o, "{w}");
    }
    let _ = writeln!(o, "\nTraffic:");
    for c in &s.clients {
        let conn = match c.connection {
            ClientConnection::KeepAlive => "one kept-alive connection",
            ClientConnection::PerRequest => "a connection per request",
        };
        let start = if c.start.is_zero() {
            String::new()
        } else {
            format!(", from {}", c.start)
        };
        let proto = match c.transport {
            Transport::Http1 => "",
            Transport::H2c => ", HTTP/2 with prior knowledge",
        };
        let _ = writeln!(o, "  - client {} ({conn}{proto}{start}):", c.name);
        for spec in &c.requests {
            let mut w = match (&spec.raw, &spec.fields) {
                (Some(raw), _) => format!("raw bytes {:?}", shorten(raw, 100)),
                (None, Some(fields)) => {
                    let block: Vec<String> =
                        fields.iter().map(|(n, v)| format!("{n}: {v:?}")).collect();
                    let mut w = format!(
                        "HTTP/2 header block [{}] on a connection of its own",
                        shorten(&block.join(", "), 200)
                    );
                    if spec.reset {
                        w.push_str(
                            ", the stream reset after its body, then a GET on the same connection",
                        );
                    }
                    if let Some(n) = spec.rapid_reset {
                        let _ = write!(
                            w,
                            ", first {n} streams opened and reset at once, then a GET on the same connection"
                        );
                    }
                    w
                }
                (None, None) => format!("{} {}", spec.method, spec.target),
            };
            for (n, v) in &spec.headers {
                let _ = write!(w, ", {n}: {v}");
            }
            if spec.body.is_some() || spec.body_size.is_some() {
                let _ = write!(w, ", a {}-byte body", spec.body_bytes().len());
            }
            if spec.chunked.is_some() {
                w.push_str(" sent chunked");
            }
            if spec.repeat > 1 {
                let _ = write!(w, ", {} times", spec.repeat);
            }
            if let Some(a) = spec.after {
                let _ = write!(w, ", {a} after the previous answer");
            }
            if let Some(a) = spec.at {
                let _ = write!(w, ", at {a}");
            }
            let label = spec.label.as_deref().unwrap_or("");
            let _ = writeln!(
                o,
                "      {}{w}",
                if label.is_empty() {
                    String::new()
                } else {
                    format!("[{label}] ")
                }
            );
        }
    }
    for f in &s.faults {
        let on = f
            .host
            .clone()
            .or_else(|| f.between.as_ref().map(|(a, b)| format!("link {a}-{b}")))
            .unwrap_or_default();
        let _ = writeln!(o, "  - at {}: {:?} {on}", f.at, f.action);
    }
    let _ = writeln!(o, "\nExpected (each must hold for PASS):");
    for line in expect_words(&s.expect) {
        let _ = writeln!(o, "  - {line}");
    }
    let _ = writeln!(
        o,
        "  - always: every request is answered once within its client's timeout, no response \
         goes to another client, no backend connection is leaked"
    );
    if !s.mutants.is_empty() {
        let _ = writeln!(
            o,
            "\nMust FAIL under each of these variants (proof it can fail):"
        );
        for m in &s.mutants {
            let _ = writeln!(o, "  - {}", m.why);
        }
    }
    o
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(max).collect::<String>())
    }
}

fn route_words(r: &Route) -> String {
    let from = match (&r.path, &r.regex) {
        (Some(p), _) => format!("paths starting with {p}"),
        (_, Some(m)) => format!("paths matching /{m}/"),
        _ => "paths".into(),
    };
    let to = match (&r.backend, &r.balancer) {
        (Some(b), _) => format!("backend {b}"),
        (_, Some(b)) => format!("balancer {b}"),
        _ => "?".into(),
    };
    let mut w = format!("{from} go to {to}");
    if let Some(p) = &r.backend_path {
        let _ = write!(w, " (backend path {p})");
    }
    match r.reuse {
        Some(true) => w.push_str(", connections reused"),
        Some(false) => w.push_str(", a new connection per request"),
        None => {}
    }
    let settings = [
        r.max.map(|m| format!("at most {m} connections")),
        r.acquire.map(|a| format!("waits {a} for a free one")),
        r.timeout.map(|t| format!("backend timeout {t}")),
        r.connect_timeout.map(|t| format!("connect timeout {t}")),
        r.ttl.map(|t| format!("idle connections kept {t}")),
        r.pathinfo.as_ref().map(|p| format!("PATH_INFO mode {p}")),
        r.backend_type.map(|t| format!("backend type {t:?}")),
        r.pass_authorization
            .filter(|p| *p)
            .map(|_| "Authorization passed on".to_string()),
        (!r.fcgi_set.is_empty()).then(|| format!("params set: {:?}", r.fcgi_set)),
        (!r.fcgi_unset.is_empty()).then(|| format!("params removed: {:?}", r.fcgi_unset)),
        r.flush
            .then(|| "response data passed on as it arrives".to_string()),
    ];
    for s in settings.into_iter().flatten() {
        let _ = write!(w, ", {s}");
    }
    w
}

fn bounds(b: &Bounds) -> String {
    match (b.min, b.max) {
        (Some(a), Some(z)) => format!("between {a} and {z}"),
        (Some(a), None) => format!("at least {a}"),
        (None, Some(z)) => format!("at most {z}"),
        (None, None) => "any time".into(),
    }
}

fn request_words(e: &RequestExpect) -> Vec<String> {
    let who = if e.requests.contains('*') {
        format!("requests {}", e.requests)
    } else {
        format!("request {}", e.requests)
    };
    let when = e
        .when_status
        .as_ref()
        .map(|s| format!(" (when answered {s:?})"))
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut say = |what: String| out.push(format!("{who}{when}: {what}"));
    if let Some(s) = &e.status {
        say(format!("the client gets status {}", one_of(s)));
    }
    if let Some(oc) = &e.outcome {
        say(format!("the response is {}", one_of(oc).to_lowercase()));
    }
    if let Some(b) = &e.served_by {
        if b.iter().any(|x| x == "none") && b.len() == 1 {
            say("no backend sees it".into());
        } else {
            say(format!("answered by {}", b.join(" or ")));
        }
    }
    if let Some(b) = &e.elapsed {
        say(format!("complete in {}", bounds(b)));
    }
    if let Some(b) = &e.first_body_byte {
        say(format!("the first body byte arrives in {}", bounds(b)));
    }
    if let Some(k) = e.keep_conn {
        say(format!(
            "the backend sees FCGI_KEEP_CONN {}",
            if k { "set" } else { "clear" }
        ));
    }
    if let Some(a) = &e.attempts {
        say(format!("reaches a backend {a} time(s)"));
    }
    if let Some(p) = &e.params {
        for w in param_words(p) {
            say(format!("the backend's params: {w}"));
        }
    }
    if let Some(body) = &e.stdin {
        say(format!(
            "the backend reads the body {:?}",
            shorten(body, 60)
        ));
    }
    if let Some(t) = &e.body_contains {
        say(format!("the response body contains {t:?}"));
    }
    if let Some(t) = &e.body_lacks {
        say(format!("the response body does not contain {t:?}"));
    }
    if let Some(n) = e.body_length {
        say(format!("the response body is {n} bytes"));
    }
    for (n, v) in &e.headers {
        say(format!("response header {n}: {v}"));
    }
    if !e.headers_absent.is_empty() {
        say(format!(
            "no response header {}",
            e.headers_absent.join(", ")
        ));
    }
    if let Some(n) = &e.responses {
        say(format!("{n} response(s) come back on the connection"));
    }
    if let Some(c) = e.closed {
        say(if c {
            "the proxy closes the connection".into()
        } else {
            "the proxy keeps the connection open".into()
        });
    }
    out
}

fn one_of<T: std::fmt::Debug>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    match items.as_slice() {
        [one] => one.clone(),
        _ => format!("one of {}", items.join(", ")),
    }
}

fn param_words(p: &ParamExpect) -> Vec<String> {
    let mut out = Vec::new();
    for n in &p.present {
        out.push(format!("{n} is sent"));
    }
    for n in &p.absent {
        out.push(format!("{n} is not sent (not even empty)"));
    }
    for (n, v) in &p.equal {
        out.push(format!("{n} = {v:?}"));
    }
    for (n, v) in &p.not_equal {
        out.push(format!("{n} is never {v:?}"));
    }
    for (n, v) in &p.lacks {
        out.push(format!("{n} never contains {v:?}"));
    }
    for (n, v) in &p.starts_with {
        out.push(format!("{n} starts with {v:?}"));
    }
    for (n, v) in &p.ends_with {
        out.push(format!("{n} ends with {v:?}"));
    }
    for (n, v) in &p.length {
        out.push(format!("{n} is {v} bytes long"));
    }
    if p.unique {
        out.push("no name is sent twice".into());
    }
    if p.no_control {
        out.push("no name or value holds a CR, LF or NUL".into());
    }
    out
}

fn backend_words(b: &BackendExpect) -> Vec<String> {
    let who = format!("backend {}", b.backend);
    let mut out = Vec::new();
    let mut say = |what: String| out.push(format!("{who}: {what}"));
    if let Some(c) = &b.connections {
        say(format!("{c} connection(s) from the proxy"));
    }
    if let Some(c) = &b.requests {
        say(format!("{c} request(s)"));
    }
    if let Some(v) = &b.requests_per_connection {
        say(format!("requests per connection, in order: {v:?}"));
    }
    if let Some(c) = &b.max_concurrent_connections {
        say(format!("at most {c} connection(s) open at once"));
    }
    if let Some(k) = b.keep_conn {
        say(format!(
            "FCGI_KEEP_CONN {} on every request",
            if k { "set" } else { "clear" }
        ));
    }
    if let Some(r) = &b.close_reasons {
        say(format!("connections close only for {}", r.join(" or ")));
    }
    if let Some(c) = &b.get_values {
        say(format!("{c} FCGI_GET_VALUES query(ies)"));
    }
    if b.well_formed {
        say("every FastCGI request arrives well formed".into());
    }
    if !b.paths_absent.is_empty() {
        say(format!(
            "no script path contains {}",
            b.paths_absent.join(" or ")
        ));
    }
    if b.stdin_matches_content_length {
        say("every body it reads is as long as CONTENT_LENGTH says".into());
    }
    out
}

fn expect_words(e: &Expect) -> Vec<String> {
    let mut out: Vec<String> = e.requests.iter().flat_map(request_words).collect();
    out.extend(e.backends.iter().flat_map(backend_words));
    for s in &e.sequences {
        out.push(format!(
            "requests {} are served by {}, in that order",
            s.requests,
            s.served_by.join(", ")
        ));
    }
    for s in &e.statuses {
        let counts: Vec<String> = s.counts.iter().map(|(k, n)| format!("{n} x {k}")).collect();
        out.push(format!("requests {} get {}", s.requests, counts.join(", ")));
    }
    for s in &e.served {
        out.push(format!(
            "backend {} answers {} of requests {}",
            s.backend, s.count, s.requests
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_a_valid_scenario_that_passes_and_its_mutant_fails() {
        let text = template("local/my-first-check");
        let s = Scenario::parse(&text, "template").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.id, "local/my-first-check");
        let run = crate::sim::run(&s, crate::sim::DEFAULT_SEED);
        let j = crate::check::judge(&s, &run);
        assert!(j.pass(), "{:?}", j.reasons());
        // External targets can run it: one route, one backend, nothing proxy-specific observed.
        assert_eq!(
            crate::real::Target::External.cannot_express(&s),
            None,
            "the template must run against a user's own proxy"
        );
        for m in &s.mutants {
            let bad = Scenario::mutated(&text, "template", m).unwrap();
            let run = crate::sim::run(&bad, crate::sim::DEFAULT_SEED);
            assert!(!crate::check::judge(&bad, &run).pass(), "{}", m.why);
        }
    }

    #[test]
    fn new_refuses_a_malformed_id() {
        for id in ["nope", "Upper/case", "a/b/c"] {
            assert!(Scenario::parse(&template(id), id).is_err(), "{id}");
        }
    }

    #[test]
    fn explain_says_level_requirement_traffic_and_expectations() {
        let path = crate::sim::suite::scenarios_dir().join("cgi/proxy-header-dropped.toml");
        let s = Scenario::load(&path).unwrap();
        let text = explain(&s);
        for want in [
            "Level: MUST - required by a specification",
            "docs/reference/apache.md, section 3.2, 7",
            "paths starting with /app/ go to backend app, connections reused",
            "GET /app/x.php, Proxy: http://attacker.example:8080",
            "request c1.1: the client gets status 200",
            "HTTP_PROXY is not sent",
            "a proxy that passes the Proxy header",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }
}
