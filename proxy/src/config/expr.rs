//! Request environment rules: `SetEnvIf` (mod_setenvif), `SetEnv` (mod_env) and
//! `ProxyFCGISetEnvIf` (mod_proxy_fcgi, a subset of `ap_expr`), plus the ordered,
//! case-insensitive environment table they act on (Apache's `r->subprocess_env`).

use core::fmt;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::model::Pattern;

// ---------------------------------------------------------------------------------------------
// Env: r->subprocess_env
// ---------------------------------------------------------------------------------------------

/// An ordered environment table with APR table semantics: names compare case-insensitively,
/// `set` replaces the value of the first entry in place (keeping its spelling) and removes later
/// duplicates, or appends; `unset` removes every entry.
///
/// Built once per request with about thirty entries, so it avoids the work a table lookup
/// would repeat: fixed names are not copied, and a summary of the names present (`seen`)
/// answers most "is it there?" questions without comparing any name.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: Vec<(Cow<'static, str>, Vec<u8>)>,
    /// Bit `name_class(n)` is set for every name `n` present (and maybe for removed ones).
    seen: u64,
}

impl PartialEq for Env {
    fn eq(&self, other: &Env) -> bool {
        self.vars == other.vars
    }
}

impl Eq for Env {}

/// A case-insensitive class of a name, one of 64.
fn name_class(name: &str) -> u64 {
    let b = name.as_bytes();
    let last = b.last().map_or(0, u8::to_ascii_uppercase) as usize;
    let mid = b.get(b.len() / 2).map_or(0, u8::to_ascii_uppercase) as usize;
    1 << ((b.len() * 7 + last * 3 + mid) % 64)
}

impl Env {
    /// Empty table.
    pub fn new() -> Env {
        Env::default()
    }

    /// Room for `n` more entries.
    pub fn reserve(&mut self, n: usize) {
        self.vars.reserve(n);
    }

    /// `apr_table_set`.
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.set_name(Cow::Owned(name.to_owned()), value.into());
    }

    /// `apr_table_set` with a name known at compile time (not copied).
    pub fn set_static(&mut self, name: &'static str, value: impl Into<Vec<u8>>) {
        self.set_name(Cow::Borrowed(name), value.into());
    }

    /// `apr_table_set` with a name already owned.
    pub fn set_owned(&mut self, name: String, value: impl Into<Vec<u8>>) {
        self.set_name(Cow::Owned(name), value.into());
    }

    fn set_name(&mut self, name: Cow<'static, str>, value: Vec<u8>) {
        let class = name_class(&name);
        let found = if self.seen & class == 0 {
            None
        } else {
            self.vars
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(&name))
        };
        match found {
            Some(i) => {
                self.vars[i].1 = value;
                let mut j = i + 1;
                while j < self.vars.len() {
                    if self.vars[j].0.eq_ignore_ascii_case(&name) {
                        self.vars.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => {
                self.seen |= class;
                self.vars.push((name, value));
            }
        }
    }

    /// `apr_table_unset`.
    pub fn unset(&mut self, name: &str) {
        if self.seen & name_class(name) != 0 {
            self.vars.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
    }

    /// `apr_table_get`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        if self.seen & name_class(name) == 0 {
            return None;
        }
        self.vars
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.vars.iter().map(|(n, v)| (&**n, v.as_slice()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// No entries?
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The entries.
    pub fn into_vec(self) -> Vec<(Cow<'static, str>, Vec<u8>)> {
        self.vars
    }
}

// ---------------------------------------------------------------------------------------------
// SetEnv
// ---------------------------------------------------------------------------------------------

/// `SetEnv name value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEnv {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

// ---------------------------------------------------------------------------------------------
// SetEnvIf
// ---------------------------------------------------------------------------------------------

/// What a `SetEnvIf` rule tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    /// `Remote_Host` (no DNS lookups: the client IP).
    RemoteHost,
    /// `Remote_Addr`.
    RemoteAddr,
    /// `Server_Addr`.
    ServerAddr,
    /// `Request_Method`.
    RequestMethod,
    /// `Request_Protocol`.
    RequestProtocol,
    /// `Request_URI`: the decoded, normalised path (`r->uri`, no query).
    RequestUri,
    /// A request header, else an environment variable set by an earlier rule.
    Header(String),
    /// A regex over header names (when the attribute has characters outside `[-A-Za-z0-9_]`).
    HeaderRegex(Pattern),
}

impl Attribute {
    /// Parse the first `SetEnvIf` argument (special names are case-insensitive).
    pub fn parse(s: &str) -> Result<Attribute, String> {
        let special = [
            ("remote_host", Attribute::RemoteHost),
            ("remote_addr", Attribute::RemoteAddr),
            ("server_addr", Attribute::ServerAddr),
            ("request_method", Attribute::RequestMethod),
            ("request_protocol", Attribute::RequestProtocol),
            ("request_uri", Attribute::RequestUri),
        ];
        for (name, attr) in special {
            if s.eq_ignore_ascii_case(name) {
                return Ok(attr);
            }
        }
        if s.is_empty() {
            return Err("empty SetEnvIf attribute".into());
        }
        if s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Ok(Attribute::Header(s.to_owned()))
        } else {
            Ok(Attribute::HeaderRegex(Pattern::new(s, true)?))
        }
    }

    /// The text form.
    pub fn as_string(&self) -> String {
        match self {
            Attribute::RemoteHost => "Remote_Host".into(),
            Attribute::RemoteAddr => "Remote_Addr".into(),
            Attribute::ServerAddr => "Server_Addr".into(),
            Attribute::RequestMethod => "Request_Method".into(),
            Attribute::RequestProtocol => "Request_Protocol".into(),
            Attribute::RequestUri => "Request_URI".into(),
            Attribute::Header(h) => h.clone(),
            Attribute::HeaderRegex(p) => p.as_str().to_owned(),
        }
    }
}

/// `name=value`, `name` (= `1`) or `!name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvAction {
    /// Set (the value may use `$0`..`$9` when the rule's pattern is a regex).
    Set { name: String, value: String },
    /// Unset.
    Unset { name: String },
}

impl EnvAction {
    /// Parse one `SetEnvIf` assignment.
    pub fn parse(s: &str) -> Result<EnvAction, String> {
        if let Some(name) = s.strip_prefix('!') {
            if name.is_empty() || name.contains('=') {
                return Err(format!("invalid unset '{s}' (expected !NAME)"));
            }
            return Ok(EnvAction::Unset { name: name.into() });
        }
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n, v),
            None => (s, "1"),
        };
        if name.is_empty() {
            return Err(format!("invalid assignment '{s}' (expected NAME[=VALUE])"));
        }
        Ok(EnvAction::Set {
            name: name.into(),
            value: value.into(),
        })
    }
}

impl fmt::Display for EnvAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvAction::Set { name, value } => write!(f, "{name}={value}"),
            EnvAction::Unset { name } => write!(f, "!{name}"),
        }
    }
}

/// A `SetEnvIf` / `SetEnvIfNoCase` / `BrowserMatch` rule.
///
/// TOML: `{ attribute = "Request_URI", regex = "\\.php$", nocase = false,
/// set = ["proxy-fcgi-pathinfo=first-dot", "!X"] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SetEnvIfToml", into = "SetEnvIfToml")]
pub struct SetEnvIf {
    pub attribute: Attribute,
    /// Compiled pattern (case-insensitive for SetEnvIfNoCase).
    pub pattern: Pattern,
    /// mod_setenvif treats a pattern without regex metacharacters as a plain substring and then
    /// does not substitute `$N` in values.
    pub literal: bool,
    pub actions: Vec<EnvAction>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetEnvIfToml {
    attribute: String,
    regex: String,
    #[serde(default)]
    nocase: bool,
    set: Vec<String>,
}

impl TryFrom<SetEnvIfToml> for SetEnvIf {
    type Error = String;
    fn try_from(t: SetEnvIfToml) -> Result<SetEnvIf, String> {
        let actions = t
            .set
            .iter()
            .map(|a| EnvAction::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        SetEnvIf::new(&t.attribute, &t.regex, t.nocase, actions)
    }
}

impl From<SetEnvIf> for SetEnvIfToml {
    fn from(s: SetEnvIf) -> SetEnvIfToml {
        SetEnvIfToml {
            attribute: s.attribute.as_string(),
            regex: s.pattern.as_str().to_owned(),
            nocase: s.pattern.nocase(),
            set: s.actions.iter().map(ToString::to_string).collect(),
        }
    }
}

/// mod_setenvif `non_regex_pattern`: the unescaped literal if `s` has no regex syntax.
fn non_regex_pattern(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut in_escape = false;
    for c in s.chars() {
        match c {
            '^' | '.' | '$' | '|' | '(' | ')' | '[' | ']' | '*' | '+' | '?' | '{' | '}' => {
                if !in_escape {
                    return None;
                }
                in_escape = false;
                out.push(c);
            }
            '\\' => {
                if in_escape {
                    out.push('\\');
                }
                in_escape = !in_escape;
            }
            _ => {
                if in_escape {
                    return None;
                }
                out.push(c);
            }
        }
    }
    Some(out)
}

impl SetEnvIf {
    /// Build a rule.
    pub fn new(
        attribute: &str,
        regex: &str,
        nocase: bool,
        actions: Vec<EnvAction>,
    ) -> Result<SetEnvIf, String> {
        if actions.is_empty() {
            return Err("SetEnvIf needs at least one variable to set".into());
        }
        let attribute = Attribute::parse(attribute)?;
        let (pattern, literal) = match non_regex_pattern(regex) {
            Some(lit) => {
                let mut p = Pattern::new(&regex::escape(&lit), nocase)?;
                // Keep the source as written for display and round trips.
                p = Pattern::with_source(p, regex);
                (p, true)
            }
            None => (Pattern::new(regex, nocase)?, false),
        };
        Ok(SetEnvIf {
            attribute,
            pattern,
            literal,
            actions,
        })
    }
}

impl Pattern {
    fn with_source(p: Pattern, source: &str) -> Pattern {
        let mut p = p;
        p.set_source(source);
        p
    }
}

/// What `SetEnvIf` can look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub protocol: &'a str,
    /// `r->uri`: decoded, normalised path.
    pub path: &'a [u8],
    pub remote_ip: &'a str,
    pub local_ip: &'a str,
    /// Request headers, duplicates already merged (`a, b`), in order.
    pub headers: &'a [(&'a str, std::borrow::Cow<'a, [u8]>)],
}

impl RequestFacts<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }
}

/// `ap_pregsub`: `$0`..`$9` from the captures; `\c` → `c`.
pub fn pregsub(template: &str, caps: Option<&regex::bytes::Captures<'_>>) -> Vec<u8> {
    let b = template.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'$' && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
            let n = usize::from(b[i + 1] - b'0');
            if let Some(m) = caps.and_then(|c| c.get(n)) {
                out.extend_from_slice(m.as_bytes());
            }
            i += 2;
            continue;
        }
        if c == b'\\' && i + 1 < b.len() {
            out.push(b[i + 1]);
            i += 2;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Run `SetEnvIf` rules in order against the request, updating `env` (mod_setenvif
/// `match_headers`). A missing header or variable is tested as the empty string.
pub fn apply_setenvif(rules: &[SetEnvIf], facts: &RequestFacts<'_>, env: &mut Env) {
    for rule in rules {
        let value: Vec<u8> = match &rule.attribute {
            Attribute::RemoteHost | Attribute::RemoteAddr => facts.remote_ip.as_bytes().to_vec(),
            Attribute::ServerAddr => facts.local_ip.as_bytes().to_vec(),
            Attribute::RequestMethod => facts.method.as_bytes().to_vec(),
            Attribute::RequestProtocol => facts.protocol.as_bytes().to_vec(),
            Attribute::RequestUri => facts.path.to_vec(),
            Attribute::Header(name) => facts
                .header(name)
                .or_else(|| env.get(name))
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            Attribute::HeaderRegex(re) => facts
                .headers
                .iter()
                .rev()
                .find(|(n, _)| re.regex().is_match(n.as_bytes()))
                .map(|(_, v)| v.to_vec())
                .unwrap_or_default(),
        };
        let Some(caps) = rule.pattern.regex().captures(&value) else {
            continue;
        };
        for action in &rule.actions {
            match action {
                EnvAction::Unset { name } => env.unset(name),
                EnvAction::Set { name, value } => {
                    let v = if rule.literal {
                        value.as_bytes().to_vec()
                    } else {
                        pregsub(value, Some(&caps))
                    };
                    env.set(name, v);
                }
            }
        }
    }
}

/// Apply `SetEnv` entries in order.
pub fn apply_setenv(entries: &[SetEnv], env: &mut Env) {
    for e in entries {
        env.set(&e.name, e.value.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// ProxyFCGISetEnvIf: a subset of ap_expr
// ---------------------------------------------------------------------------------------------

/// Server/request variables usable as `%{NAME}` in expressions (ap_expr's request variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerVar {
    DocumentRoot,
    ContextPrefix,
    ContextDocumentRoot,
    ServerName,
    ServerPort,
    ServerAdmin,
    ServerProtocol,
    ServerSoftware,
    ServerAddr,
    RequestMethod,
    RequestScheme,
    /// `r->uri`: the decoded path (not the raw REQUEST_URI param!).
    RequestUri,
    DocumentUri,
    /// `r->filename` at that point: the SCRIPT_FILENAME value.
    RequestFilename,
    ScriptFilename,
    PathInfo,
    /// `r->args`: the raw query.
    QueryString,
    TheRequest,
    RemoteAddr,
    RemotePort,
    RemoteHost,
    Https,
    Ipv6,
    IsSubreq,
    Handler,
    /// One of the `HTTP_*` names ap_expr knows: a request header.
    Header(&'static str),
}

const SERVER_VARS: &[(&str, ServerVar)] = &[
    ("DOCUMENT_ROOT", ServerVar::DocumentRoot),
    ("CONTEXT_PREFIX", ServerVar::ContextPrefix),
    ("CONTEXT_DOCUMENT_ROOT", ServerVar::ContextDocumentRoot),
    ("SERVER_NAME", ServerVar::ServerName),
    ("SERVER_PORT", ServerVar::ServerPort),
    ("SERVER_ADMIN", ServerVar::ServerAdmin),
    ("SERVER_PROTOCOL", ServerVar::ServerProtocol),
    ("SERVER_SOFTWARE", ServerVar::ServerSoftware),
    ("SERVER_ADDR", ServerVar::ServerAddr),
    ("REQUEST_METHOD", ServerVar::RequestMethod),
    ("REQUEST_SCHEME", ServerVar::RequestScheme),
    ("REQUEST_URI", ServerVar::RequestUri),
    ("DOCUMENT_URI", ServerVar::DocumentUri),
    ("REQUEST_FILENAME", ServerVar::RequestFilename),
    ("SCRIPT_FILENAME", ServerVar::ScriptFilename),
    ("PATH_INFO", ServerVar::PathInfo),
    ("QUERY_STRING", ServerVar::QueryString),
    ("THE_REQUEST", ServerVar::TheRequest),
    ("REMOTE_ADDR", ServerVar::RemoteAddr),
    ("REMOTE_PORT", ServerVar::RemotePort),
    ("REMOTE_HOST", ServerVar::RemoteHost),
    ("HTTPS", ServerVar::Https),
    ("IPV6", ServerVar::Ipv6),
    ("IS_SUBREQ", ServerVar::IsSubreq),
    ("HANDLER", ServerVar::Handler),
    ("HTTP_ACCEPT", ServerVar::Header("Accept")),
    ("HTTP_COOKIE", ServerVar::Header("Cookie")),
    ("HTTP_FORWARDED", ServerVar::Header("Forwarded")),
    ("HTTP_HOST", ServerVar::Header("Host")),
    (
        "HTTP_PROXY_CONNECTION",
        ServerVar::Header("Proxy-Connection"),
    ),
    ("HTTP_REFERER", ServerVar::Header("Referer")),
    ("HTTP_USER_AGENT", ServerVar::Header("User-Agent")),
];

/// A variable reference inside an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarRef {
    /// `reqenv('X')`, `%{reqenv:X}`, `env('X')`, `%{env:X}`: the request environment, which at
    /// ProxyFCGISetEnvIf time holds every CGI variable.
    ReqEnv(String),
    /// `req('H')`, `http('H')`, `%{req:H}`, `%{http:H}`, `%{HTTP:H}`: a request header.
    Header(String),
    /// `%{NAME}`.
    Server(ServerVar),
}

/// Part of a string expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Vec<u8>),
    Var(VarRef),
    Backref(usize),
}

/// An ap_expr string: literal text with `%{...}` variables and `$0`..`$9` back-references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueExpr {
    source: String,
    parts: Vec<Part>,
}

/// A condition: `true`, `false`, `<word> =~ /re/`, `<word> !~ /re/`, `<word> == <word>`,
/// `<word> != <word>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    source: String,
    kind: CondKind,
}

#[derive(Debug, Clone, PartialEq)]
enum CondKind {
    Const(bool),
    Match {
        lhs: ValueExpr,
        regex: Pattern,
        negate: bool,
    },
    Equal {
        lhs: ValueExpr,
        rhs: ValueExpr,
        negate: bool,
    },
}

/// What expressions read besides the environment.
pub trait ExprVars {
    /// A request header (merged value), if present.
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    /// A server variable.
    fn server_var(&self, var: ServerVar) -> Vec<u8>;
}

const COND_HELP: &str = "supported forms: true, false, <string> =~ /regex/ (or m#regex#), \
<string> !~ /regex/, <string> == <string>, <string> != <string>; <string> is reqenv('NAME'), \
%{reqenv:NAME}, %{VAR}, req('Header') or a quoted string";

fn lookup_server_var(name: &str) -> Option<ServerVar> {
    SERVER_VARS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn parse_var_braced(inner: &str) -> Result<VarRef, String> {
    if let Some((func, arg)) = inner.split_once(':') {
        if arg.is_empty() {
            return Err(format!("empty argument in %{{{inner}}}"));
        }
        return match func.to_ascii_lowercase().as_str() {
            "reqenv" | "env" => Ok(VarRef::ReqEnv(arg.into())),
            "req" | "http" | "req_novary" => Ok(VarRef::Header(arg.into())),
            _ => Err(format!(
                "unsupported function '{func}' in %{{{inner}}} (use reqenv, env, req or http)"
            )),
        };
    }
    lookup_server_var(inner)
        .map(VarRef::Server)
        .ok_or_else(|| format!("unknown variable %{{{inner}}}"))
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn skip_ws(&mut self) {
        while self.rest().starts_with([' ', '\t']) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, t: &str) -> bool {
        if self.rest().starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
}

/// Parse a string-mode expression (`value` of ProxyFCGISetEnvIf).
fn parse_string(src: &str) -> Result<Vec<Part>, String> {
    let b = src.as_bytes();
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() && matches!(b[i + 1], b'\\' | b'$' | b'%') => {
                lit.push(b[i + 1]);
                i += 2;
            }
            b'$' if i + 1 < b.len() && b[i + 1].is_ascii_digit() => {
                if !lit.is_empty() {
                    parts.push(Part::Lit(core::mem::take(&mut lit)));
                }
                parts.push(Part::Backref(usize::from(b[i + 1] - b'0')));
                i += 2;
            }
            b'%' if i + 1 < b.len() && b[i + 1] == b'{' => {
                let close = src[i..]
                    .find('}')
                    .ok_or_else(|| format!("unterminated %{{ in '{src}'"))?;
                let inner = &src[i + 2..i + close];
                if !lit.is_empty() {
                    parts.push(Part::Lit(core::mem::take(&mut lit)));
                }
                parts.push(Part::Var(parse_var_braced(inner)?));
                i += close + 1;
            }
            c => {
                lit.push(c);
                i += 1;
            }
        }
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(parts)
}

impl ValueExpr {
    /// Parse a value expression.
    pub fn parse(src: &str) -> Result<ValueExpr, String> {
        Ok(ValueExpr {
            source: src.to_owned(),
            parts: parse_string(src)?,
        })
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Evaluate.
    pub fn eval(
        &self,
        env: &Env,
        vars: &dyn ExprVars,
        caps: Option<&regex::bytes::Captures<'_>>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.extend_from_slice(l),
                Part::Backref(n) => {
                    if let Some(m) = caps.and_then(|c| c.get(*n)) {
                        out.extend_from_slice(m.as_bytes());
                    }
                }
                Part::Var(v) => out.extend(eval_var(v, env, vars)),
            }
        }
        out
    }
}

fn eval_var(v: &VarRef, env: &Env, vars: &dyn ExprVars) -> Vec<u8> {
    match v {
        VarRef::ReqEnv(n) => env.get(n).map(<[u8]>::to_vec).unwrap_or_default(),
        VarRef::Header(h) => vars.header(h).unwrap_or_default(),
        VarRef::Server(ServerVar::Header(h)) => vars.header(h).unwrap_or_default(),
        VarRef::Server(s) => vars.server_var(*s),
    }
}

/// Parse one operand of a condition.
fn parse_word(lx: &mut Lexer<'_>) -> Result<ValueExpr, String> {
    lx.skip_ws();
    let rest = lx.rest();
    if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
        let end = rest[1..]
            .find(q)
            .ok_or_else(|| format!("unterminated string in '{}'", lx.s))?;
        let inner = &rest[1..1 + end];
        lx.pos += end + 2;
        return ValueExpr::parse(inner);
    }
    if rest.starts_with("%{") {
        let close = rest
            .find('}')
            .ok_or_else(|| format!("unterminated %{{ in '{}'", lx.s))?;
        let src = &rest[..=close];
        lx.pos += close + 1;
        return ValueExpr::parse(src);
    }
    let name_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let func = &rest[..name_len];
    let after = rest[name_len..].trim_start();
    if !func.is_empty() && after.starts_with('(') {
        let consumed_ws = rest[name_len..].len() - after.len();
        let arg_src = &after[1..];
        let arg_src_trim = arg_src.trim_start();
        let q = arg_src_trim
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| format!("{func}() needs a quoted argument in '{}'", lx.s))?;
        let end = arg_src_trim[1..]
            .find(q)
            .ok_or_else(|| format!("unterminated string in '{}'", lx.s))?;
        let arg = &arg_src_trim[1..1 + end];
        let after_arg = arg_src_trim[end + 2..].trim_start();
        if !after_arg.starts_with(')') {
            return Err(format!("missing ')' after {func}('{arg}') in '{}'", lx.s));
        }
        let total = name_len
            + consumed_ws
            + 1
            + (arg_src.len() - arg_src_trim.len())
            + end
            + 2
            + (arg_src_trim[end + 2..].len() - after_arg.len())
            + 1;
        lx.pos += total;
        let var = match func.to_ascii_lowercase().as_str() {
            "reqenv" | "env" => VarRef::ReqEnv(arg.into()),
            "req" | "http" | "req_novary" => VarRef::Header(arg.into()),
            _ => {
                return Err(format!(
                    "unsupported function {func}() in '{}' (use reqenv, env, req or http)",
                    lx.s
                ));
            }
        };
        return Ok(ValueExpr {
            source: rest[..total].to_owned(),
            parts: vec![Part::Var(var)],
        });
    }
    Err(format!(
        "unsupported ProxyFCGISetEnvIf condition '{}' ({COND_HELP})",
        lx.s
    ))
}

fn parse_regex_literal(lx: &mut Lexer<'_>) -> Result<Pattern, String> {
    lx.skip_ws();
    let rest = lx.rest();
    let (delim, start) = if rest.starts_with('/') {
        ('/', 1)
    } else if let Some(d) = rest
        .strip_prefix('m')
        .and_then(|r| r.chars().next())
        .filter(|c| !c.is_ascii_alphanumeric() && !c.is_whitespace())
    {
        (d, 1 + d.len_utf8())
    } else {
        return Err(format!(
            "expected a regex literal (/re/ or m#re#) in '{}'",
            lx.s
        ));
    };
    let body = &rest[start..];
    let end = body
        .find(delim)
        .ok_or_else(|| format!("unterminated regex in '{}'", lx.s))?;
    let re = &body[..end];
    let mut consumed = start + end + delim.len_utf8();
    let mut nocase = false;
    if rest[consumed..].starts_with('i') {
        nocase = true;
        consumed += 1;
    }
    lx.pos += consumed;
    Pattern::new(re, nocase)
}

impl Condition {
    /// Parse a condition.
    pub fn parse(src: &str) -> Result<Condition, String> {
        let t = src.trim();
        let kind = match t {
            "true" => CondKind::Const(true),
            "false" => CondKind::Const(false),
            _ => {
                let mut lx = Lexer { s: t, pos: 0 };
                let lhs = parse_word(&mut lx)?;
                lx.skip_ws();
                let kind = if lx.eat("=~") {
                    CondKind::Match {
                        lhs,
                        regex: parse_regex_literal(&mut lx)?,
                        negate: false,
                    }
                } else if lx.eat("!~") {
                    CondKind::Match {
                        lhs,
                        regex: parse_regex_literal(&mut lx)?,
                        negate: true,
                    }
                } else if lx.eat("==") {
                    CondKind::Equal {
                        lhs,
                        rhs: parse_word(&mut lx)?,
                        negate: false,
                    }
                } else if lx.eat("!=") {
                    CondKind::Equal {
                        lhs,
                        rhs: parse_word(&mut lx)?,
                        negate: true,
                    }
                } else {
                    return Err(format!(
                        "unsupported ProxyFCGISetEnvIf condition '{t}' ({COND_HELP})"
                    ));
                };
                lx.skip_ws();
                if !lx.rest().is_empty() {
                    return Err(format!(
                        "unexpected '{}' in ProxyFCGISetEnvIf condition '{t}' ({COND_HELP})",
                        lx.rest()
                    ));
                }
                kind
            }
        };
        Ok(Condition {
            source: src.to_owned(),
            kind,
        })
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Evaluate: `Some(captures-source)` when true. The returned bytes are the string the
    /// regex matched (for `$N`), with the match done again by the caller.
    fn eval(&self, env: &Env, vars: &dyn ExprVars) -> (bool, Option<(Vec<u8>, &Pattern)>) {
        match &self.kind {
            CondKind::Const(b) => (*b, None),
            CondKind::Match { lhs, regex, negate } => {
                let s = lhs.eval(env, vars, None);
                let m = regex.regex().is_match(&s);
                if *negate {
                    (!m, None)
                } else if m {
                    (true, Some((s, regex)))
                } else {
                    (false, None)
                }
            }
            CondKind::Equal { lhs, rhs, negate } => {
                let eq = lhs.eval(env, vars, None) == rhs.eval(env, vars, None);
                (eq != *negate, None)
            }
        }
    }
}

/// What a ProxyFCGISetEnvIf entry does when its condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FcgiAction {
    /// Set the variable (a missing value expression sets `""`).
    Set { name: String, value: ValueExpr },
    /// `!NAME`: unset.
    Unset { name: String },
}

/// `ProxyFCGISetEnvIf conditional-expression [!]env-name [value-expression]`.
///
/// TOML: `{ condition = "reqenv('X') =~ m#^(.*)$#", set = "NAME", value = "v$1" }` or
/// `{ condition = "true", unset = "REMOTE_ADDR" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FcgiSetEnvIfToml", into = "FcgiSetEnvIfToml")]
pub struct FcgiSetEnvIf {
    pub condition: Condition,
    pub action: FcgiAction,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FcgiSetEnvIfToml {
    condition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unset: Option<String>,
}

impl TryFrom<FcgiSetEnvIfToml> for FcgiSetEnvIf {
    type Error = String;
    fn try_from(t: FcgiSetEnvIfToml) -> Result<FcgiSetEnvIf, String> {
        match (t.set, t.unset) {
            (Some(name), None) => FcgiSetEnvIf::new(&t.condition, &name, t.value.as_deref()),
            (None, Some(name)) => {
                if t.value.is_some() {
                    return Err("an unset entry takes no value".into());
                }
                FcgiSetEnvIf::new(&t.condition, &format!("!{name}"), None)
            }
            _ => Err("give exactly one of 'set' and 'unset'".into()),
        }
    }
}

impl From<FcgiSetEnvIf> for FcgiSetEnvIfToml {
    fn from(f: FcgiSetEnvIf) -> FcgiSetEnvIfToml {
        let condition = f.condition.source;
        match f.action {
            FcgiAction::Set { name, value } => FcgiSetEnvIfToml {
                condition,
                set: Some(name),
                value: Some(value.source),
                unset: None,
            },
            FcgiAction::Unset { name } => FcgiSetEnvIfToml {
                condition,
                set: None,
                value: None,
                unset: Some(name),
            },
        }
    }
}

impl FcgiSetEnvIf {
    /// Build from the directive's arguments (`name` may be `!NAME`).
    pub fn new(condition: &str, name: &str, value: Option<&str>) -> Result<FcgiSetEnvIf, String> {
        let condition = Condition::parse(condition)?;
        let action = if let Some(n) = name.strip_prefix('!') {
            if value.is_some() {
                return Err(format!(
                    "ProxyFCGISetEnvIf: '{name}' unsets a variable and takes no value"
                ));
            }
            if n.is_empty() {
                return Err("ProxyFCGISetEnvIf: empty variable name".into());
            }
            FcgiAction::Unset { name: n.into() }
        } else {
            if name.is_empty() {
                return Err("ProxyFCGISetEnvIf: empty variable name".into());
            }
            FcgiAction::Set {
                name: name.into(),
                value: ValueExpr::parse(value.unwrap_or(""))?,
            }
        };
        Ok(FcgiSetEnvIf { condition, action })
    }
}

/// Apply ProxyFCGISetEnvIf entries in order to the CGI environment (mod_proxy_fcgi
/// `fix_cgivars`): a false condition skips the entry; each entry sees earlier entries' effects.
pub fn apply_fcgi_setenvif(entries: &[FcgiSetEnvIf], env: &mut Env, vars: &dyn ExprVars) {
    for e in entries {
        let (holds, matched) = e.condition.eval(env, vars);
        if !holds {
            continue;
        }
        match &e.action {
            FcgiAction::Unset { name } => env.unset(name),
            FcgiAction::Set { name, value } => {
                let v = match &matched {
                    Some((subject, re)) => {
                        let caps = re.regex().captures(subject);
                        value.eval(env, vars, caps.as_ref())
                    }
                    None => value.eval(env, vars, None),
                };
                env.set(name, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoVars;
    impl ExprVars for NoVars {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            (name.eq_ignore_ascii_case("user-agent")).then(|| b"probe".to_vec())
        }
        fn server_var(&self, var: ServerVar) -> Vec<u8> {
            match var {
                ServerVar::DocumentRoot => b"/var/www/html".to_vec(),
                ServerVar::RequestUri => b"/a b".to_vec(),
                _ => Vec::new(),
            }
        }
    }

    proptest::proptest! {
        /// The name summary never changes what the table does: same as a plain list with APR
        /// table semantics, for any mix of set, unset and get over names differing in case.
        #[test]
        fn env_matches_a_plain_table(ops in proptest::collection::vec(
            (0u8..3, "[aAbBcC_]{0,3}", "[0-9]{0,2}"), 0..60)) {
            let mut env = Env::new();
            let mut model: Vec<(String, Vec<u8>)> = Vec::new();
            for (op, name, value) in ops {
                match op {
                    0 => {
                        env.set(&name, value.as_bytes());
                        match model.iter().position(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                            Some(i) => {
                                model[i].1 = value.clone().into_bytes();
                                let keep = model[i].0.clone();
                                let mut j = 0;
                                model.retain(|(n, _)| {
                                    j += 1;
                                    j - 1 <= i || !n.eq_ignore_ascii_case(&keep)
                                });
                            }
                            None => model.push((name.clone(), value.into_bytes())),
                        }
                    }
                    1 => {
                        env.unset(&name);
                        model.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                    }
                    _ => {
                        let want = model
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                            .map(|(_, v)| v.as_slice());
                        proptest::prop_assert_eq!(env.get(&name), want);
                    }
                }
                let got: Vec<(String, Vec<u8>)> =
                    env.iter().map(|(n, v)| (n.to_owned(), v.to_vec())).collect();
                proptest::prop_assert_eq!(&got, &model);
            }
        }
    }

    #[test]
    fn env_set_in_place_case_insensitive() {
        let mut e = Env::new();
        e.set("A", "1");
        e.set("B", "2");
        e.set("a", "3");
        assert_eq!(
            e.clone().into_vec(),
            vec![("A".into(), b"3".to_vec()), ("B".into(), b"2".to_vec())]
        );
        e.unset("b");
        assert_eq!(e.len(), 1);
        assert_eq!(e.get("a"), Some(&b"3"[..]));
    }

    #[test]
    fn setenvif_semantics() {
        let headers = vec![("X-Present", Cow::Borrowed(&b"hello"[..]))];
        let facts = RequestFacts {
            method: "GET",
            protocol: "HTTP/1.1",
            path: b"/app/x.PHP",
            remote_ip: "192.0.2.10",
            local_ip: "198.51.100.1",
            headers: &headers,
        };
        let rule = |a: &str, r: &str, nocase: bool, acts: &[&str]| {
            SetEnvIf::new(
                a,
                r,
                nocase,
                acts.iter().map(|s| EnvAction::parse(s).unwrap()).collect(),
            )
            .unwrap()
        };
        let rules = vec![
            rule("X-Missing", "^$", false, &["MISSING_EMPTY"]),
            rule(
                "X-Present",
                "^(.*)$",
                false,
                &["PRES=got-$1", "!NOPE", "ZZ"],
            ),
            rule("Request_URI", "\\.php$", true, &["ISPHP"]),
            rule("Request_URI", "\\.php$", false, &["ISPHP_CS"]),
            rule("Request_Method", "GET", false, &["METH=$0"]),
            rule("PRES", "^got", false, &["ENVATTR=yes"]),
            rule("remote_addr", "^192\\.0\\.2\\.", false, &["LOCALNET"]),
            rule("^X-P", "hel", false, &["BYNAME"]),
        ];
        let mut env = Env::new();
        apply_setenvif(&rules, &facts, &mut env);
        let got: Vec<(String, String)> = env
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let want: Vec<(String, String)> = [
            ("MISSING_EMPTY", "1"),
            ("PRES", "got-hello"),
            ("ZZ", "1"),
            ("ISPHP", "1"),
            ("METH", "$0"),
            ("ENVATTR", "yes"),
            ("LOCALNET", "1"),
            ("BYNAME", "1"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn fcgi_setenvif_httpd_tests_row1() {
        let entries = vec![
            FcgiSetEnvIf::new("true", "QUERY_STRING", Some("test_value")).unwrap(),
            FcgiSetEnvIf::new("true", "TEST_EMPTY", None).unwrap(),
            FcgiSetEnvIf::new("false", "TEST_NOT_SET", None).unwrap(),
            FcgiSetEnvIf::new("true", "TEST_DOCROOT", Some("%{DOCUMENT_ROOT}")).unwrap(),
            FcgiSetEnvIf::new(
                "reqenv('GATEWAY_INTERFACE') =~ m#CGI/(.\\..)#",
                "TEST_CGI_VERSION",
                Some("v$1"),
            )
            .unwrap(),
            FcgiSetEnvIf::new("true", "!REMOTE_ADDR", None).unwrap(),
        ];
        let mut env = Env::new();
        env.set("REMOTE_ADDR", "127.0.0.1");
        env.set("GATEWAY_INTERFACE", "CGI/1.1");
        env.set("QUERY_STRING", "query");
        apply_fcgi_setenvif(&entries, &mut env, &NoVars);
        assert_eq!(env.get("QUERY_STRING"), Some(&b"test_value"[..]));
        assert_eq!(env.get("TEST_EMPTY"), Some(&b""[..]));
        assert_eq!(env.get("TEST_NOT_SET"), None);
        assert_eq!(env.get("TEST_DOCROOT"), Some(&b"/var/www/html"[..]));
        assert_eq!(env.get("TEST_CGI_VERSION"), Some(&b"v1.1"[..]));
        assert_eq!(env.get("REMOTE_ADDR"), None);
    }

    #[test]
    fn condition_forms() {
        let mut env = Env::new();
        env.set("PATH_TRANSLATED", "/var/www/prefix12/rest");
        env.set("X", "abc");
        let e = FcgiSetEnvIf::new(
            "reqenv('PATH_TRANSLATED') =~ m|(/.*prefix)(\\d+)(.*)|",
            "PATH_TRANSLATED",
            Some("$1$3"),
        )
        .unwrap();
        apply_fcgi_setenvif(&[e], &mut env, &NoVars);
        assert_eq!(
            env.get("PATH_TRANSLATED"),
            Some(&b"/var/www/prefix/rest"[..])
        );
        for (cond, want) in [
            ("%{reqenv:X} =~ /^A/i", true),
            ("%{reqenv:X} =~ /^A/", false),
            ("reqenv(\"X\") !~ /z/", true),
            ("reqenv('X') == 'abc'", true),
            ("reqenv('X') != \"abc\"", false),
            ("%{REQUEST_URI} == '/a b'", true),
            ("req('User-Agent') =~ /probe/", true),
            ("%{HTTP_USER_AGENT} == 'probe'", true),
            ("'%{reqenv:X}-x' == 'abc-x'", true),
        ] {
            let c = Condition::parse(cond).unwrap();
            assert_eq!(c.eval(&env, &NoVars).0, want, "{cond}");
        }
    }

    #[test]
    fn value_forms() {
        let mut env = Env::new();
        env.set("SCRIPT_NAME", "/x");
        let v = ValueExpr::parse("%{reqenv:SCRIPT_NAME}-\\$1-%{DOCUMENT_ROOT}$").unwrap();
        assert_eq!(v.eval(&env, &NoVars, None), b"/x-$1-/var/www/html$");
    }

    #[test]
    fn rejects_unsupported() {
        for bad in [
            "-n reqenv('X')",
            "reqenv('X')",
            "reqenv('X') =~ 'abc'",
            "foo('X') == 'a'",
            "%{NOPE} == 'a'",
            "%{foo:bar} == 'a'",
            "reqenv('X') =~ /(/",
            "reqenv('X') =~ /a/ && true",
            "TRUE",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
        assert!(FcgiSetEnvIf::new("true", "!X", Some("v")).is_err());
        assert!(ValueExpr::parse("%{reqenv:X").is_err());
    }

    #[test]
    fn literal_detection() {
        assert_eq!(non_regex_pattern("GET").as_deref(), Some("GET"));
        assert_eq!(non_regex_pattern("a\\.b").as_deref(), Some("a.b"));
        assert_eq!(non_regex_pattern("a.b"), None);
        assert_eq!(non_regex_pattern("\\d"), None);
    }
}
