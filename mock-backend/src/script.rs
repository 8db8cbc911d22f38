//! The script: what the mock does for each request, read from TOML.
//!
//! A script has server-level `[server]` settings, an ordered list of `[[rule]]`s and an optional
//! `[default]` rule. For each request the first rule whose `match` holds decides the answer; the
//! default rule answers the rest (without a `[default]` table, the default is `action = "echo"`).
//! The full format, with an example, is [`FORMAT`] (also printed by `fcgi-mock --help`).
//!
//! Unknown keys are errors, so that a typo does not silently change a scenario. Parse errors name
//! `file:line:col`.

use std::collections::BTreeMap;
use std::fmt;
use std::num::{NonZeroU16, NonZeroU64, NonZeroUsize};
use std::path::Path;

use fastcgi::Padding;
use serde::{Deserialize, Deserializer};

/// The script format, as documented in `fcgi-mock --help`.
pub const FORMAT: &str = include_str!("script_format.txt");

/// A parsed script.
#[derive(Debug, Clone)]
pub struct Script {
    pub server: ServerSettings,
    /// Tried in order; the first whose `match` holds wins.
    pub rules: Vec<Rule>,
    /// Answers requests no rule matched.
    pub default: Rule,
}

impl Default for Script {
    /// No rules; every request is echoed.
    fn default() -> Self {
        Script {
            server: ServerSettings::default(),
            rules: Vec::new(),
            default: Rule::echo(),
        }
    }
}

/// Server-level settings (`[server]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// At most this many connections served at once (a pool of php-fpm workers). Unlimited when
    /// absent.
    #[serde(default)]
    pub max_conns: Option<NonZeroUsize>,
    /// What happens to connections beyond `max_conns`.
    #[serde(default)]
    pub overflow: Overflow,
    /// Serve concurrent request ids on one connection. When off, a BEGIN_REQUEST for a second id
    /// while one is active is answered with END_REQUEST{CANT_MPX_CONN}.
    #[serde(default)]
    pub multiplex: bool,
    /// Close after every END_REQUEST even when FCGI_KEEP_CONN is set.
    #[serde(default)]
    pub always_close: bool,
    /// Close a kept-open connection after this long without a request or a byte from the peer.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Answers to FCGI_GET_VALUES, by variable name (e.g. `FCGI_MAX_CONNS = "4"`). Only names that
    /// were asked and are listed here are answered (spec 4.1).
    #[serde(default, deserialize_with = "de_values")]
    pub values: BTreeMap<String, String>,
    /// Largest PARAMS stream accepted for one request; more is a protocol error.
    #[serde(default = "default_max_params_bytes")]
    pub max_params_bytes: usize,
    /// STDIN bytes kept per request in the journal (the length is always counted).
    #[serde(default = "default_max_stdin_bytes")]
    pub max_stdin_bytes: usize,
    /// Which real backend to behave like (FCGI_GET_VALUES answers and when they are sent).
    #[serde(default)]
    pub model: Option<Model>,
    /// A worker serves at most this many requests, then exits: the connection is closed after
    /// that request's END_REQUEST, even with FCGI_KEEP_CONN (php-fpm `pm.max_requests`).
    #[serde(default)]
    pub max_requests: Option<NonZeroU64>,
    /// A connection given a worker that has not served yet, or whose previous worker exited,
    /// waits this long before it is read (a fork, php-fpm `pm = ondemand`).
    #[serde(default)]
    pub spawn_delay_ms: u64,
    /// These connections (1-based, in accept order) are closed as soon as a worker takes them,
    /// before anything is read: a worker exiting as it accepts, a listener shutting down. What
    /// was written on them is never run.
    #[serde(default)]
    pub drop_unread: Vec<u64>,
    /// FCGI_GET_VALUES is journaled but never answered, as by FastCGI libraries that ignore
    /// management records.
    #[serde(default)]
    pub ignore_get_values: bool,
    /// A connection that has carried this many requests is reset, unread, when the next bytes
    /// arrive: a worker idle on a kept connection that exits as a request comes (php-fpm's
    /// children at a graceful reload). What was written is never run.
    #[serde(default)]
    pub drop_unread_after: Option<u64>,
}

fn default_max_params_bytes() -> usize {
    1 << 20
}

fn default_max_stdin_bytes() -> usize {
    16 << 20
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_conns: None,
            overflow: Overflow::default(),
            multiplex: false,
            always_close: false,
            idle_timeout_ms: None,
            values: BTreeMap::new(),
            max_params_bytes: default_max_params_bytes(),
            max_stdin_bytes: default_max_stdin_bytes(),
            model: None,
            max_requests: None,
            spawn_delay_ms: 0,
            drop_unread: Vec::new(),
            ignore_get_values: false,
            drop_unread_after: None,
        }
    }
}

impl ServerSettings {
    /// The FCGI_GET_VALUES answers: `values` when given, else the model's.
    pub fn get_values_table(&self) -> BTreeMap<String, String> {
        if !self.values.is_empty() {
            return self.values.clone();
        }
        let pairs: Vec<(&str, String)> = match self.model {
            None => Vec::new(),
            Some(Model::PhpFpm) => vec![("FCGI_MPXS_CONNS", "0".into())],
            Some(Model::Libfcgi) => vec![
                ("FCGI_MAX_CONNS", "1".into()),
                ("FCGI_MAX_REQS", "1".into()),
                ("FCGI_MPXS_CONNS", "0".into()),
            ],
            Some(Model::Threaded) => {
                let n = self.max_conns.map_or(0, NonZeroUsize::get).to_string();
                vec![
                    ("FCGI_MAX_CONNS", n.clone()),
                    ("FCGI_MAX_REQS", n),
                    ("FCGI_MPXS_CONNS", "0".into()),
                ]
            }
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Whether a FCGI_GET_VALUES answer waits until the next record header has arrived.
    pub fn get_values_waits_for_next_header(&self) -> bool {
        self.model == Some(Model::Libfcgi)
    }

    fn check(&self) -> Result<(), String> {
        if self.model == Some(Model::Threaded) && self.max_conns.is_none() {
            return Err("model = \"threaded\" announces its capacity: it needs `max_conns`".into());
        }
        Ok(())
    }
}

/// A real FastCGI backend the mock behaves like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Model {
    /// php-fpm: FCGI_GET_VALUES gets FCGI_MPXS_CONNS=0 only, at once.
    #[serde(rename = "php-fpm")]
    PhpFpm,
    /// A libfcgi responder (one process per connection): FCGI_MAX_CONNS=1, FCGI_MAX_REQS=1,
    /// FCGI_MPXS_CONNS=0, sent only once the header of the next record has been read.
    #[serde(rename = "libfcgi")]
    Libfcgi,
    /// A threaded server serving `max_conns` connections at once, announcing
    /// FCGI_MAX_CONNS = FCGI_MAX_REQS = max_conns, FCGI_MPXS_CONNS=0.
    #[serde(rename = "threaded")]
    Threaded,
}

impl Model {
    pub fn as_str(self) -> &'static str {
        match self {
            Model::PhpFpm => "php-fpm",
            Model::Libfcgi => "libfcgi",
            Model::Threaded => "threaded",
        }
    }
}

/// Connections beyond `max_conns`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Stop calling accept while at capacity: extra connections wait in the kernel backlog.
    #[default]
    Backlog,
    /// Accept them, but read nothing until a slot frees.
    Hold,
}

/// Conditions of a rule; all that are given must hold. An empty match holds for every request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The first SCRIPT_NAME param starts with this.
    #[serde(default)]
    pub script_name_prefix: Option<String>,
    /// The first REQUEST_URI param starts with this.
    #[serde(default)]
    pub request_uri_prefix: Option<String>,
    /// The request number: 1-based, counted over all connections in the order BEGIN_REQUESTs
    /// arrive (rejected ones included).
    #[serde(default)]
    pub request: Option<u64>,
}

impl Match {
    pub fn is_empty(&self) -> bool {
        *self == Match::default()
    }

    /// Whether request number `seq` with `params` (wire order) satisfies every condition.
    pub fn matches<N: AsRef<[u8]>, V: AsRef<[u8]>>(&self, seq: u64, params: &[(N, V)]) -> bool {
        let first = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.as_ref() == name.as_bytes())
                .map(|(_, v)| v.as_ref())
        };
        let prefix = |want: &Option<String>, name: &str| match want {
            None => true,
            Some(p) => first(name).is_some_and(|v| v.starts_with(p.as_bytes())),
        };
        self.request.is_none_or(|n| n == seq)
            && prefix(&self.script_name_prefix, "SCRIPT_NAME")
            && prefix(&self.request_uri_prefix, "REQUEST_URI")
    }
}

/// What a rule does with the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The scripted status, headers and body.
    #[default]
    Reply,
    /// A JSON body describing what the backend saw.
    Echo,
    /// Read the request, then stay silent until the peer closes.
    NeverAnswer,
    /// Close the connection without a byte of answer.
    Close,
    /// Reset the connection (TCP RST where the transport can) without a byte of answer.
    Reset,
}

/// When the answer starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyAfter {
    /// Once the STDIN stream (and DATA, for the filter role) has ended.
    #[default]
    Stdin,
    /// As soon as PARAMS ended, before reading the body (an early answer).
    Params,
}

/// Line ending of the CGI header block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Newline {
    #[default]
    Crlf,
    Lf,
}

impl Newline {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Newline::Crlf => b"\r\n",
            Newline::Lf => b"\n",
        }
    }
}

/// Which stream a body chunk goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStream {
    Stdout,
    Stderr,
}

/// One piece of the answer body, sent after an optional delay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawChunk")]
pub struct Chunk {
    pub delay_ms: u64,
    pub stream: ChunkStream,
    /// Empty for a pure delay.
    pub bytes: Vec<u8>,
}

impl Chunk {
    pub fn stdout(data: impl Into<Vec<u8>>) -> Self {
        Chunk {
            delay_ms: 0,
            stream: ChunkStream::Stdout,
            bytes: data.into(),
        }
    }

    pub fn stderr(data: impl Into<Vec<u8>>) -> Self {
        Chunk {
            stream: ChunkStream::Stderr,
            ..Chunk::stdout(data)
        }
    }

    pub fn after_ms(mut self, delay_ms: u64) -> Self {
        self.delay_ms = delay_ms;
        self
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChunk {
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    data_hex: Option<String>,
    #[serde(default)]
    stderr: Option<String>,
    #[serde(default)]
    repeat: Option<usize>,
}

impl TryFrom<RawChunk> for Chunk {
    type Error = String;

    fn try_from(r: RawChunk) -> Result<Self, String> {
        let given = [r.data.is_some(), r.data_hex.is_some(), r.stderr.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err("a body chunk takes at most one of `data`, `data_hex`, `stderr`".into());
        }
        let (stream, unit) = match (r.data, r.data_hex, r.stderr) {
            (Some(d), _, _) => (ChunkStream::Stdout, d.into_bytes()),
            (_, Some(h), _) => (ChunkStream::Stdout, parse_hex(&h)?),
            (_, _, Some(e)) => (ChunkStream::Stderr, e.into_bytes()),
            _ => (ChunkStream::Stdout, Vec::new()),
        };
        let repeat = r.repeat.unwrap_or(1);
        // A bound keeps a typo from asking for terabytes.
        if unit.len().saturating_mul(repeat) > 1 << 30 {
            return Err("a body chunk may not exceed 1 GiB".into());
        }
        Ok(Chunk {
            delay_ms: r.delay_ms,
            stream,
            bytes: unit.repeat(repeat),
        })
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let pairs = digits.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return Err("`data_hex` needs an even number of hex digits".into());
    }
    pairs
        .map(|p| {
            let txt = std::str::from_utf8(p).map_err(|_| "`data_hex` is not hex".to_string())?;
            u8::from_str_radix(txt, 16).map_err(|_| format!("`data_hex`: bad hex digits {txt:?}"))
        })
        .collect()
}

/// Stop the answer part-way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cut {
    /// Body (STDOUT data) bytes sent before the cut; the CGI headers always go out first.
    #[serde(default)]
    pub after_body_bytes: usize,
    /// What happens at the cut. Never an END_REQUEST.
    #[serde(default)]
    pub then: CutThen,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutThen {
    /// Close the connection (FIN).
    #[default]
    Close,
    /// Reset the connection (RST).
    Reset,
    /// Send nothing more and keep the connection open until the peer closes.
    Hang,
}

/// One rule: an optional `match` and the answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in the journal; `rule[i]` (0-based) when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub when: Match,
    #[serde(default)]
    pub action: Action,
    /// Emits a `Status: CODE REASON` CGI header first; none when absent (CGI means 200).
    #[serde(default)]
    pub status: Option<u16>,
    /// Reason phrase for the Status header (a standard one when absent).
    #[serde(default)]
    pub reason: Option<String>,
    /// CGI headers in order; names may repeat.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Body chunks (ignored by `echo`).
    #[serde(default)]
    pub body: Vec<Chunk>,
    /// appStatus of END_REQUEST.
    #[serde(default)]
    pub app_status: u32,
    /// protocolStatus of END_REQUEST (a name or a number).
    #[serde(default, deserialize_with = "de_protocol_status")]
    pub protocol_status: u8,
    #[serde(default)]
    pub reply_after: ReplyAfter,
    #[serde(default)]
    pub newline: Newline,
    /// Leave out the blank line that ends the CGI header block.
    #[serde(default)]
    pub omit_header_terminator: bool,
    /// Largest content of one STDOUT/STDERR record (default 65535).
    #[serde(default)]
    pub record_size: Option<NonZeroU16>,
    /// Padding after every record of the answer: "none", "align8" or a fixed count.
    #[serde(default, deserialize_with = "de_padding")]
    pub padding: Padding,
    /// Request id written on every record of the answer instead of the real one.
    #[serde(default)]
    pub reply_request_id: Option<u16>,
    /// A record of this type (with 4 bytes of content) sent before the first STDOUT record.
    #[serde(default)]
    pub unknown_record_type: Option<u8>,
    /// The version byte of the first record of the answer (a malformed header).
    #[serde(default)]
    pub bad_version: Option<u8>,
    /// Byte offsets into the answer where a write ends and the next begins.
    #[serde(default)]
    pub split_at: Vec<usize>,
    /// Write the answer in pieces of this many bytes.
    #[serde(default)]
    pub split_every: Option<NonZeroUsize>,
    /// Pause between split writes.
    #[serde(default)]
    pub split_pause_ms: u64,
    /// Stop the answer part-way.
    #[serde(default)]
    pub cut: Option<Cut>,
}

impl Rule {
    /// The built-in default rule: echo.
    pub fn echo() -> Self {
        Rule {
            action: Action::Echo,
            ..Rule::default()
        }
    }

    /// A plain reply.
    pub fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        Rule {
            status: Some(status),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: vec![Chunk::stdout(body)],
            ..Rule::default()
        }
    }
}

/// Which rule answered: an index into [`Script::rules`], or the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRef {
    Rule(usize),
    Default,
}

impl Script {
    /// Parses a script; errors are located as `<script>:line:col`.
    pub fn from_toml_str(src: &str) -> Result<Script, ScriptError> {
        Script::parse(src, "<script>")
    }

    /// Parses a script; `origin` (a file name) prefixes error positions.
    pub fn parse(src: &str, origin: &str) -> Result<Script, ScriptError> {
        let raw: RawScript = toml::from_str(src).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(src, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ScriptError {
                origin: origin.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let default = match raw.default {
            None => Rule::echo(),
            Some(spanned) => {
                let start = spanned.span().start;
                let rule = spanned.into_inner();
                if !rule.when.is_empty() {
                    let (l, c) = line_col(src, start);
                    return Err(ScriptError {
                        origin: origin.to_string(),
                        line: Some(l),
                        column: Some(c),
                        message: "the [default] rule takes no `match`".into(),
                    });
                }
                rule
            }
        };
        Ok(Script {
            server: raw.server,
            rules: raw.rule,
            default,
        })
    }

    /// Reads and parses a script file.
    pub fn load(path: &Path) -> Result<Script, ScriptError> {
        let origin = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ScriptError {
            origin: origin.clone(),
            line: None,
            column: None,
            message: e.to_string(),
        })?;
        Script::parse(&src, &origin)
    }

    /// The rule answering request number `seq` with these params.
    pub fn select<N: AsRef<[u8]>, V: AsRef<[u8]>>(&self, seq: u64, params: &[(N, V)]) -> RuleRef {
        self.rules
            .iter()
            .position(|r| r.when.matches(seq, params))
            .map_or(RuleRef::Default, RuleRef::Rule)
    }

    pub fn rule(&self, r: RuleRef) -> &Rule {
        match r {
            RuleRef::Rule(i) => self.rules.get(i).unwrap_or(&self.default),
            RuleRef::Default => &self.default,
        }
    }

    /// The name the journal shows for a rule.
    pub fn label(&self, r: RuleRef) -> String {
        match (r, &self.rule(r).name) {
            (_, Some(n)) => n.clone(),
            (RuleRef::Rule(i), None) => format!("rule[{i}]"),
            (RuleRef::Default, None) => "default".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    #[serde(default, deserialize_with = "de_server")]
    server: ServerSettings,
    #[serde(default)]
    rule: Vec<Rule>,
    #[serde(default)]
    default: Option<toml::Spanned<Rule>>,
}

/// `[server]`, checked as a whole (so that an error points at the table).
fn de_server<'de, D: Deserializer<'de>>(d: D) -> Result<ServerSettings, D::Error> {
    use serde::de::Error;
    let s = ServerSettings::deserialize(d)?;
    s.check().map_err(D::Error::custom)?;
    Ok(s)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// A script that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// File name, or `<script>`.
    pub origin: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.origin, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.origin, self.message),
            _ => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ScriptError {}

#[derive(Deserialize)]
#[serde(untagged)]
enum NameOrNumber {
    Number(i64),
    Name(String),
}

fn de_protocol_status<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    use serde::de::Error;
    match NameOrNumber::deserialize(d)? {
        NameOrNumber::Number(n) => u8::try_from(n)
            .map_err(|_| D::Error::custom(format!("protocol_status {n} is not in 0..=255"))),
        NameOrNumber::Name(s) => match s.as_str() {
            "request_complete" => Ok(0),
            "cant_mpx_conn" => Ok(1),
            "overloaded" => Ok(2),
            "unknown_role" => Ok(3),
            _ => Err(D::Error::custom(format!(
                "unknown protocol_status {s:?}: expected request_complete, cant_mpx_conn, \
                 overloaded, unknown_role or a number"
            ))),
        },
    }
}

fn de_padding<'de, D: Deserializer<'de>>(d: D) -> Result<Padding, D::Error> {
    use serde::de::Error;
    match NameOrNumber::deserialize(d)? {
        NameOrNumber::Number(n) => u8::try_from(n)
            .map(Padding::Fixed)
            .map_err(|_| D::Error::custom(format!("padding {n} is not in 0..=255"))),
        NameOrNumber::Name(s) => match s.as_str() {
            "none" => Ok(Padding::None),
            "align8" => Ok(Padding::Align8),
            _ => Err(D::Error::custom(format!(
                "unknown padding {s:?}: expected \"none\", \"align8\" or a number"
            ))),
        },
    }
}

fn de_values<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, NameOrNumber>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                NameOrNumber::Number(n) => n.to_string(),
                NameOrNumber::Name(s) => s,
            };
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_example_parses() {
        let start = FORMAT.find("# --- example ---").expect("example marker");
        let example = &FORMAT[start..];
        let s = Script::from_toml_str(example).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.server.max_conns.map(|n| n.get()), Some(2));
        assert!(s.rules.len() >= 4);
    }

    #[test]
    fn empty_script_echoes() {
        let s = Script::from_toml_str("").unwrap();
        assert!(s.rules.is_empty());
        assert_eq!(s.default.action, Action::Echo);
    }

    #[test]
    fn first_matching_rule_wins() {
        let s = Script::from_toml_str(
            r#"
            [[rule]]
            name = "third"
            match = { request = 3 }
            [[rule]]
            match = { script_name_prefix = "/a" }
            [[rule]]
            match = { script_name_prefix = "/a", request_uri_prefix = "/x" }
            [[rule]]
            match = { request_uri_prefix = "/x" }
            "#,
        )
        .unwrap();
        let p = |sn: &str, uri: &str| {
            vec![
                ("SCRIPT_NAME", sn.to_string()),
                ("REQUEST_URI", uri.to_string()),
            ]
        };
        assert_eq!(s.select(3, &p("/a", "/x")), RuleRef::Rule(0));
        assert_eq!(s.select(1, &p("/ab", "/x")), RuleRef::Rule(1));
        assert_eq!(s.select(1, &p("/b", "/xy")), RuleRef::Rule(3));
        assert_eq!(s.select(1, &p("/b", "/y")), RuleRef::Default);
        assert_eq!(s.label(RuleRef::Rule(0)), "third");
        assert_eq!(s.label(RuleRef::Rule(1)), "rule[1]");
        assert_eq!(s.label(RuleRef::Default), "default");
        // A condition on a param that is absent does not hold.
        let none: Vec<(&str, &str)> = vec![];
        assert_eq!(s.select(1, &none), RuleRef::Default);
    }

    #[test]
    fn body_chunks_and_wire_options() {
        let s = Script::from_toml_str(
            r#"
            [default]
            status = 404
            headers = [["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]]
            body = [{ data = "ab", repeat = 3 }, { stderr = "warn", delay_ms = 5 }, { data_hex = "00ff" }, { delay_ms = 7 }]
            padding = 3
            protocol_status = "overloaded"
            cut = { after_body_bytes = 4, then = "reset" }
            "#,
        )
        .unwrap();
        let d = &s.default;
        assert_eq!(d.action, Action::Reply);
        assert_eq!(d.body[0], Chunk::stdout("ababab"));
        assert_eq!(d.body[1], Chunk::stderr("warn").after_ms(5));
        assert_eq!(d.body[2].bytes, vec![0, 255]);
        assert_eq!(d.body[3], Chunk::stdout("").after_ms(7));
        assert_eq!(d.padding, Padding::Fixed(3));
        assert_eq!(d.protocol_status, 2);
        assert_eq!(
            d.cut,
            Some(Cut {
                after_body_bytes: 4,
                then: CutThen::Reset
            })
        );
        assert_eq!(d.headers.len(), 2);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = Script::parse(
            "[server]\nmultiplex = true\n\n[[rule]]\nstatuss = 200\n",
            "s.toml",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (Some(5), Some(1)), "{e}");
        assert!(e.to_string().starts_with("s.toml:5:1: "), "{e}");
        assert!(e.message.contains("statuss"), "{e}");

        let e = Script::parse("[default]\npadding = \"align9\"\n", "s.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("align9"), "{e}");

        let e = Script::parse(
            "[[rule]]\nbody = [{ data = \"a\", stderr = \"b\" }]\n",
            "s.toml",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");

        let e = Script::parse("[server]\nmax_conns = 0\n", "s.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");

        let e = Script::parse("\n[default]\nmatch = { request = 1 }\n", "s.toml").unwrap_err();
        assert!(e.line.is_some_and(|l| l >= 2), "{e}");
        assert!(e.message.contains("match"), "{e}");

        let e = Script::parse("[server\n", "s.toml").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn models_and_their_get_values_answers() {
        let table = |src: &str| {
            let s = Script::from_toml_str(src).unwrap_or_else(|e| panic!("{e}"));
            s.server.get_values_table().into_iter().collect::<Vec<_>>()
        };
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(table(""), pairs(&[]));
        assert_eq!(
            table("[server]\nmodel = \"php-fpm\"\n"),
            pairs(&[("FCGI_MPXS_CONNS", "0")])
        );
        assert_eq!(
            table("[server]\nmodel = \"libfcgi\"\n"),
            pairs(&[
                ("FCGI_MAX_CONNS", "1"),
                ("FCGI_MAX_REQS", "1"),
                ("FCGI_MPXS_CONNS", "0")
            ])
        );
        assert_eq!(
            table("[server]\nmodel = \"threaded\"\nmax_conns = 7\n"),
            pairs(&[
                ("FCGI_MAX_CONNS", "7"),
                ("FCGI_MAX_REQS", "7"),
                ("FCGI_MPXS_CONNS", "0")
            ])
        );
        // Explicit values replace the model's.
        assert_eq!(
            table("[server]\nmodel = \"php-fpm\"\n[server.values]\nFCGI_MAX_CONNS = 3\n"),
            pairs(&[("FCGI_MAX_CONNS", "3")])
        );
        let s = Script::from_toml_str(
            "[server]\nmodel = \"libfcgi\"\nmax_requests = 3\nspawn_delay_ms = 40\n",
        )
        .unwrap();
        assert!(s.server.get_values_waits_for_next_header());
        assert_eq!(s.server.max_requests.map(|n| n.get()), Some(3));
        assert_eq!(s.server.spawn_delay_ms, 40);
        assert_eq!(s.server.model.map(Model::as_str), Some("libfcgi"));
    }

    #[test]
    fn model_errors() {
        let e = Script::parse("[server]\nmodel = \"nginx\"\n", "s.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("nginx"), "{e}");

        let e = Script::parse("\n[server]\nmodel = \"threaded\"\n", "s.toml").unwrap_err();
        assert!(e.line.is_some(), "{e}");
        assert!(e.message.contains("max_conns"), "{e}");

        let e = Script::parse("[server]\nmax_requests = 0\n", "s.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }
}
