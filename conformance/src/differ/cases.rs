//! What the differential run sends: proptest strategies for route configurations and request
//! shapes, and the raw bytes of a request.
//!
//! Requests are text (valid UTF-8) so that each one can be written into a scenario file's `raw`
//! string as it was sent; bytes that are not UTF-8 go on the wire percent-encoded only.

use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde::Serialize;

/// Which part of a request a run varies; the others stay plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    Paths,
    Headers,
    Bodies,
    Routes,
    All,
}

impl Area {
    fn paths(self) -> bool {
        matches!(self, Area::Paths | Area::All | Area::Routes)
    }
    fn headers(self) -> bool {
        matches!(self, Area::Headers | Area::All)
    }
    fn bodies(self) -> bool {
        matches!(self, Area::Bodies | Area::All)
    }
    /// Whether route configurations vary beyond the plain prefix route.
    fn routes(self) -> bool {
        matches!(self, Area::Routes | Area::All)
    }
}

/// How a route is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Matching {
    /// `ProxyPass /app/ fcgi://app/var/www/html/app/`.
    Prefix,
    /// `ProxyPassMatch ^/app/(.*\.php)$` with `$1` in the backend path (Apache and ours only).
    RegexCapture,
    /// `ProxyPassMatch ^/app/.*\.php` without substitution.
    Regex,
}

/// One route configuration: every request of a group goes through it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RouteConfig {
    pub matching: Matching,
    pub generic: bool,
    /// `proxy-fcgi-pathinfo`: absent, `first-dot`, `last-dot`, `unescape`, `full`.
    pub pathinfo: Option<&'static str>,
    pub reuse: bool,
    /// The route goes to a balancer of two members instead of one backend.
    pub balancer: bool,
}

impl RouteConfig {
    pub const PLAIN: RouteConfig = RouteConfig {
        matching: Matching::Prefix,
        generic: false,
        pathinfo: None,
        reuse: true,
        balancer: false,
    };

    /// A short name for reports: `prefix-fpm-reuse`, `regex$1-generic-first-dot-balancer`.
    pub fn name(&self) -> String {
        let mut n = match self.matching {
            Matching::Prefix => "prefix",
            Matching::RegexCapture => "regex-capture",
            Matching::Regex => "regex",
        }
        .to_string();
        n.push_str(if self.generic { "-generic" } else { "-fpm" });
        if let Some(p) = self.pathinfo {
            let _ = write!(n, "-pathinfo-{p}");
        }
        n.push_str(if self.reuse {
            "-reuse"
        } else {
            "-disablereuse"
        });
        if self.balancer {
            n.push_str("-balancer");
        }
        n
    }

    /// Whether the route takes `target`: its prefix or regex against the path with dot
    /// segments resolved and %-escapes decoded (as Apache matches ProxyPass and ProxyPassMatch).
    pub fn matches(&self, target: &str) -> bool {
        let path = super::compare::routed_path(target);
        // AllowEncodedSlashes Off (Apache's default): a path with %2F is refused (404)
        // before any route is looked at.
        if path.to_ascii_lowercase().contains("%2f") {
            return false;
        }
        let bytes = percent_decode(&path);
        let decoded = String::from_utf8_lossy(&bytes);
        match self.matching {
            Matching::Prefix => path.starts_with("/app/"),
            Matching::RegexCapture => {
                regex::Regex::new(r"^/app/(.*\.php)(/.*)?$").is_ok_and(|r| r.is_match(&decoded))
            }
            Matching::Regex => {
                regex::Regex::new(r"^/app/.*\.php").is_ok_and(|r| r.is_match(&decoded))
            }
        }
    }

    /// The scenario `[topology]` and `[[backend]]` tables of this configuration.
    pub fn topology_toml(&self) -> String {
        let mut t = String::from("[topology]\n[[topology.route]]\n");
        match self.matching {
            Matching::Prefix => {
                t.push_str("path = \"/app/\"\nbackend_path = \"/var/www/html/app/\"\n");
            }
            Matching::RegexCapture => {
                t.push_str(
                    "match = '^/app/(.*\\.php)(/.*)?$'\nbackend_path = \"/var/www/html/app/$1\"\n",
                );
            }
            Matching::Regex => t.push_str("match = '^/app/.*\\.php'\n"),
        }
        if self.balancer {
            t.push_str("balancer = \"pool\"\n");
        } else {
            let _ = writeln!(t, "backend = \"app\"\nreuse = {}", self.reuse);
        }
        if self.generic {
            t.push_str("backend_type = \"generic\"\n");
        }
        if let Some(p) = self.pathinfo {
            let _ = writeln!(t, "pathinfo = \"{p}\"");
        }
        if self.balancer {
            let _ = write!(
                t,
                "\n[[topology.balancer]]\nname = \"pool\"\nreuse = {}\n\
                 [[topology.balancer.member]]\nbackend = \"app\"\n\
                 [[topology.balancer.member]]\nbackend = \"app2\"\n",
                self.reuse
            );
        }
        t.push_str(
            "\n[[backend]]\nname = \"app\"\n[backend.script.default]\nstatus = 200\n\
             headers = [[\"Content-Type\", \"text/plain\"]]\nbody = [{ data = \"ok\" }]\n",
        );
        if self.balancer {
            t.push_str(
                "\n[[backend]]\nname = \"app2\"\nport = 9001\n[backend.script.default]\n\
                 status = 200\nheaders = [[\"Content-Type\", \"text/plain\"]]\n\
                 body = [{ data = \"ok\" }]\n",
            );
        }
        t
    }
}

/// A request body and how it is framed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Body {
    None,
    /// `Content-Length: size`; only `sent` bytes are sent, then the client stops sending
    /// (`sent < size`: an early close).
    Length {
        size: usize,
        sent: usize,
    },
    /// `Transfer-Encoding: chunked` in chunks of `chunk` bytes, optionally with a chunk
    /// extension and a trailer; `early_close`: the terminating chunk is never sent.
    Chunked {
        size: usize,
        chunk: usize,
        ext: bool,
        trailer: bool,
        early_close: bool,
    },
}

impl Body {
    /// The client shuts down its sending side after the request.
    pub fn early_close(&self) -> bool {
        match self {
            Body::None => false,
            Body::Length { size, sent } => sent < size,
            Body::Chunked { early_close, .. } => *early_close,
        }
    }
}

/// One generated request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Case {
    pub method: String,
    /// The request target as sent (raw).
    pub target: String,
    /// Header lines after `Host`, in order; a value may hold an obs-fold (`\r\n `).
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// The byte of a body at position `i` (a repeating pattern, so that a shifted or cut body
/// shows in its content as well as its length).
fn body_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

impl Case {
    /// The bytes to send (the runner inserts the tag header after the first line).
    pub fn raw(&self) -> String {
        let mut r = format!(
            "{} {} HTTP/1.1\r\nHost: example.com\r\n",
            self.method, self.target
        );
        for (n, v) in &self.headers {
            if v.is_empty() {
                let _ = write!(r, "{n}:\r\n");
            } else {
                let _ = write!(r, "{n}: {v}\r\n");
            }
        }
        r.push_str("Connection: close\r\n");
        match &self.body {
            Body::None => r.push_str("\r\n"),
            Body::Length { size, sent } => {
                let _ = write!(r, "Content-Length: {size}\r\n\r\n");
                r.push_str(&String::from_utf8_lossy(&body_bytes(*sent)));
            }
            Body::Chunked {
                size,
                chunk,
                ext,
                trailer,
                early_close,
            } => {
                r.push_str("Transfer-Encoding: chunked\r\n\r\n");
                let data = body_bytes(*size);
                for c in data.chunks((*chunk).max(1)) {
                    let _ = write!(r, "{:x}", c.len());
                    if *ext {
                        r.push_str(";name=value");
                    }
                    r.push_str("\r\n");
                    r.push_str(&String::from_utf8_lossy(c));
                    r.push_str("\r\n");
                }
                if !early_close {
                    r.push_str("0\r\n");
                    if *trailer {
                        r.push_str("X-Trailer: t\r\n");
                    }
                    r.push_str("\r\n");
                }
            }
        }
        r
    }

    /// The request on one line, escaped, long runs shortened (`${a*5000}`), a body of more
    /// than 64 bytes given by its size: for reports.
    pub fn one_line(&self) -> String {
        let raw = self.raw();
        let (head, body) = match raw.find("\r\n\r\n") {
            Some(i) => raw.split_at(i + 4),
            None => (raw.as_str(), ""),
        };
        let mut line = compress_runs(head).escape_debug().to_string();
        if body.len() > 64 {
            let _ = write!(line, "[{} body bytes]", body.len());
        } else {
            line.push_str(&body.escape_debug().to_string());
        }
        line
    }

    /// The body bytes the backend should see if all of it arrives.
    pub fn body_len(&self) -> usize {
        match &self.body {
            Body::None => 0,
            Body::Length { size, .. } | Body::Chunked { size, .. } => *size,
        }
    }
}

/// `%XX` escapes decoded (others kept as they are).
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = std::str::from_utf8(&b[i + 1..(i + 3).min(b.len())])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|_| i + 2 < b.len())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Runs of 16 or more of one character as `${c*N}` (the scenario format's repeat syntax).
pub fn compress_runs(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut j = i;
        while j < chars.len() && chars[j] == c {
            j += 1;
        }
        let n = j - i;
        if n >= 16 && !matches!(c, '$' | '{' | '}' | '*') && !c.is_control() {
            let _ = write!(out, "${{{c}*{n}}}");
        } else {
            out.extend(&chars[i..j]);
        }
        i = j;
    }
    out
}

// ---- strategies ----

/// Percent-encoded bytes that matter in this layer, and any byte.
fn pct() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "%00", "%0a", "%0d", "%2f", "%2F", "%3f", "%23", "%25", "%2e", "%20", "%5c", "%7f",
            "%80", "%ff", "%c3%a9", "%e2%80%ae", "%3b", "%2b", "%26", "%3d", "%09", "%25%32%66",
        ])
        .prop_map(str::to_string),
        1 => any::<u8>().prop_map(|b| format!("%{b:02x}")),
        1 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
    ]
}

/// Characters sent raw: punctuation allowed in a path, a few that are not, and multi-byte
/// UTF-8 (including characters whose case forms have different byte lengths: U+0130 İ, U+212A
/// Kelvin, U+017F long s, U+023A Ⱥ, U+1E9E ẞ; fullwidth forms of `.php`).
fn raw_char() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "!", "$", "&", "'", "(", ")", "*", "+", ",", ";", "=", ":", "@", "-", ".", "_", "~",
        ])
        .prop_map(str::to_string),
        1 => prop::sample::select(vec!["%", "\\", "\"", "<", ">", "^", "`", "|", "\t", "\x7f"])
            .prop_map(str::to_string),
        3 => prop::sample::select(vec![
            "é", "ß", "İ", "ı", "K", "ſ", "Ⱥ", "ẞ", "ﬀ", "日本", "．ｐｈｐ", "\u{202e}", "Ω",
        ])
        .prop_map(str::to_string),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z]{1,8}",
        3 => prop::collection::vec(prop_oneof!["[a-z]{1,3}", pct(), raw_char()], 1..5)
            .prop_map(|v| v.concat()),
        2 => prop::sample::select(vec![
            ".", "..", "%2e", "%2e%2e", ".%2e", "%2E.", "", "",
        ])
        .prop_map(str::to_string),
        3 => prop::sample::select(vec![
            "x.php", "index.php", "a.php.png", "x.PHP", "x.php.", "x.php%20", "x.php ", "x.php...",
            "x.php%00.png", "x.php%0a", "x.php%3f.png", "x.php%23", "x.ph%70", "x%2ephp",
            "x.pHp", "x.php::$DATA",
        ])
        .prop_map(str::to_string),
        1 => (100usize..9000).prop_map(|n| "a".repeat(n)),
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(String::new())),
        3 => prop::collection::vec(
            prop_oneof![
                3 => "[a-z]{1,4}=[a-z0-9]{0,4}",
                2 => pct(),
                2 => raw_char(),
                1 => Just("&".to_string()),
                1 => Just("?".to_string()),
                1 => (100usize..6000).prop_map(|n| format!("q={}", "b".repeat(n))),
            ],
            1..5,
        )
        .prop_map(|v| Some(v.concat())),
    ]
}

fn path(area: Area) -> BoxedStrategy<String> {
    if !area.paths() {
        return prop::sample::select(vec!["/app/x.php", "/app/index.php", "/app/a/b.php"])
            .prop_map(str::to_string)
            .boxed();
    }
    let start = prop_oneof![
        8 => Just("/app/".to_string()),
        1 => Just("/".to_string()),
        1 => Just("/App/".to_string()),
        1 => Just("/app%2f".to_string()),
        1 => Just("//app/".to_string()),
        1 => Just("/%61pp/".to_string()),
    ];
    let tail = prop_oneof![
        3 => Just(""),
        3 => Just("/x.php"),
        1 => Just("/"),
        1 => Just("/x.php/extra/info"),
    ];
    (start, prop::collection::vec(segment(), 0..5), tail, query())
        .prop_map(|(start, segs, tail, q)| {
            let mut p = start;
            p.push_str(&segs.join("/"));
            p.push_str(tail);
            if let Some(q) = q {
                p.push('?');
                p.push_str(&q);
            }
            p
        })
        .boxed()
}

fn header() -> impl Strategy<Value = Vec<(String, String)>> {
    let one = |n: &str, v: &str| vec![(n.to_string(), v.to_string())];
    prop_oneof![
        2 => Just(vec![("X-Multi".into(), "a".into()), ("X-Multi".into(), "b".into())]),
        1 => Just(vec![("Cookie".into(), "a=1".into()), ("Cookie".into(), "b=2".into())]),
        2 => prop::sample::select(vec!["x-mIxEd", "X-MIXED", "x-mixed", "ACCEPT", "content-TYPE"])
            .prop_map(move |n| one(n, "v")),
        2 => prop::sample::select(vec![
            "X_Under", "Content_Length", "X-Forwarded_For", "Remote_User", "HTTPS_", "Proxy_",
        ])
        .prop_map(move |n| one(n, "u")),
        2 => prop::sample::select(vec!["X.Dot", "X@At", "X(Paren", "X{Brace", "X/Slash", "X=Eq"])
            .prop_map(move |n| one(n, "n")),
        1 => Just(one("X Space", "s")),
        1 => Just(one("X-Empty", "")),
        2 => Just(one("X-Fold", "a\r\n b")),
        2 => prop::sample::select(vec!["http://127.0.0.1:1/", "x"]).prop_map(move |v| one("Proxy", v)),
        2 => prop::sample::select(vec!["Basic dXNlcjpwYXNz", "Bearer t", ""])
            .prop_map(move |v| one("Authorization", v)),
        1 => (1000usize..20000).prop_map(|n| vec![("X-Long".to_string(), "v".repeat(n))]),
        1 => (90usize..104).prop_map(|n| (0..n).map(|i| (format!("X-H{i}"), "h".to_string())).collect()),
        1 => prop::sample::select(vec!["é", "a\tb", "a;b,c", " lead", "trail "])
            .prop_map(move |v| one("X-Value", v)),
        1 => Just(one("Content-Type", "application/x-www-form-urlencoded")),
        1 => prop::sample::select(vec!["Https", "Server-Name", "Script-Name", "Path-Info"])
            .prop_map(move |n| one(n, "spoof")),
    ]
}

fn headers(area: Area) -> BoxedStrategy<Vec<(String, String)>> {
    if !area.headers() {
        return Just(Vec::new()).boxed();
    }
    prop::collection::vec(header(), 0..4)
        .prop_map(|v| v.into_iter().flatten().collect())
        .boxed()
}

/// Sizes around the buffer sizes proxies use.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => prop::sample::select(vec![
            0, 1, 8191, 8192, 8193, 16383, 16384, 16385, 65535, 65536, 65537,
        ]),
        1 => Just(1 << 20),
        2 => 0usize..300,
    ]
}

fn body(area: Area) -> BoxedStrategy<Body> {
    if !area.bodies() {
        return Just(Body::None).boxed();
    }
    prop_oneof![
        2 => Just(Body::None),
        4 => size().prop_map(|size| Body::Length { size, sent: size }),
        3 => (size(), prop::sample::select(vec![1usize, 7, 100, 4096, 8192, 16384, 65536]),
              any::<bool>(), any::<bool>())
            .prop_map(|(size, chunk, ext, trailer)| Body::Chunked {
                size, chunk: chunk.max(size / 64).max(1), ext, trailer, early_close: false,
            }),
        1 => (1usize..70000).prop_map(|size| Body::Length { size, sent: size / 2 }),
        1 => (1usize..20000).prop_map(|size| Body::Chunked {
            size, chunk: 1000, ext: false, trailer: false, early_close: true,
        }),
    ]
    .boxed()
}

fn case(area: Area) -> impl Strategy<Value = Case> {
    let method = prop_oneof![
        4 => Just("GET"),
        1 => Just("OPTIONS"),
        1 => Just("DELETE"),
        1 => Just("PROPFIND"),
    ];
    (method, path(area), headers(area), body(area)).prop_map(|(m, target, headers, body)| {
        let method = match (&body, m) {
            (Body::None, m) => m.to_string(),
            (_, "GET") => "POST".to_string(),
            (_, m) => m.to_string(),
        };
        Case {
            method,
            target,
            headers,
            body,
        }
    })
}

fn route(area: Area) -> BoxedStrategy<RouteConfig> {
    if !area.routes() {
        return Just(RouteConfig::PLAIN).boxed();
    }
    (
        prop_oneof![
            3 => Just(Matching::Prefix),
            1 => Just(Matching::RegexCapture),
            1 => Just(Matching::Regex),
        ],
        any::<bool>(),
        prop::sample::select(vec![
            None,
            None,
            Some("first-dot"),
            Some("last-dot"),
            Some("unescape"),
            Some("full"),
        ]),
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(matching, generic, pathinfo, reuse, balancer)| RouteConfig {
                matching,
                generic,
                pathinfo,
                reuse,
                balancer,
            },
        )
        .boxed()
}

/// A seeded runner: the same seed gives the same configurations and cases.
fn runner(seed: u64, stream: u8) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8] = stream;
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// `n` cases over `configs` route configurations (distinct ones, in a fixed order), each case
/// with the index of its configuration.
pub fn generate(seed: u64, n: usize, area: Area) -> (Vec<RouteConfig>, Vec<(usize, Case)>) {
    let mut r = runner(seed, 1);
    let want = if area.routes() {
        (n / 200).clamp(1, 12)
    } else {
        1
    };
    let strategy = route(area);
    let mut configs: Vec<RouteConfig> = Vec::new();
    // Distinct configurations; the plain one always among them.
    if area.routes() {
        configs.push(RouteConfig::PLAIN);
    }
    let mut tries = 0;
    while configs.len() < want && tries < 1000 {
        tries += 1;
        if let Ok(t) = strategy.new_tree(&mut r) {
            let c = t.current();
            if !configs.contains(&c) {
                configs.push(c);
            }
        }
    }
    if configs.is_empty() {
        configs.push(RouteConfig::PLAIN);
    }
    let mut r = runner(seed, 2);
    let cases = case(area);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if let Ok(t) = cases.new_tree(&mut r) {
            out.push((i % configs.len(), t.current()));
        }
    }
    (configs, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_cases_and_another_seed_others() {
        let (c1, a) = generate(7, 300, Area::All);
        let (c2, b) = generate(7, 300, Area::All);
        assert_eq!(c1, c2);
        assert_eq!(a, b);
        let (_, c) = generate(8, 300, Area::All);
        assert_ne!(a, c);
        assert_eq!(a.len(), 300);
    }

    #[test]
    fn areas_vary_only_their_part() {
        let (configs, cases) = generate(1, 200, Area::Headers);
        assert_eq!(configs, vec![RouteConfig::PLAIN]);
        assert!(cases.iter().all(|(_, c)| c.body == Body::None));
        assert!(cases.iter().any(|(_, c)| !c.headers.is_empty()));
        let (_, cases) = generate(1, 200, Area::Bodies);
        assert!(cases.iter().all(|(_, c)| c.headers.is_empty()));
        assert!(cases.iter().any(|(_, c)| c.body.early_close()));
        let (configs, _) = generate(1, 2000, Area::All);
        assert!(configs.len() > 5, "{configs:?}");
    }

    #[test]
    fn raw_requests_are_framed_as_declared() {
        let c = Case {
            method: "POST".into(),
            target: "/app/x.php".into(),
            headers: vec![
                ("X-Fold".into(), "a\r\n b".into()),
                ("X-Empty".into(), "".into()),
            ],
            body: Body::Chunked {
                size: 5,
                chunk: 2,
                ext: true,
                trailer: true,
                early_close: false,
            },
        };
        assert_eq!(
            c.raw(),
            "POST /app/x.php HTTP/1.1\r\nHost: example.com\r\nX-Fold: a\r\n b\r\nX-Empty:\r\n\
             Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n2;name=value\r\nab\r\n\
             2;name=value\r\ncd\r\n1;name=value\r\ne\r\n0\r\nX-Trailer: t\r\n\r\n"
        );
        let cut = Case {
            body: Body::Length { size: 10, sent: 3 },
            ..c
        };
        assert!(cut.raw().ends_with("Content-Length: 10\r\n\r\nabc"));
        assert!(cut.body.early_close());
    }

    #[test]
    fn routes_match_as_apache_matches_them() {
        let p = RouteConfig::PLAIN;
        assert!(p.matches("/app/x"));
        assert!(p.matches("/x/../app/y?z"));
        assert!(!p.matches("/App/x"));
        assert!(!p.matches("/"));
        assert!(!p.matches("/app%2fx"));
        assert!(!p.matches("/app/a%2Fb"));
        let r = RouteConfig {
            matching: Matching::Regex,
            ..RouteConfig::PLAIN
        };
        assert!(r.matches("/app/a.ph%70"));
        assert!(!r.matches("/app/"));
        let c = RouteConfig {
            matching: Matching::RegexCapture,
            ..RouteConfig::PLAIN
        };
        assert!(c.matches("/app/a.php/x"));
        assert!(!c.matches("/app/a.phpx"));
        assert_eq!(percent_decode("a%2fb%zz%4"), b"a/b%zz%4");
    }

    #[test]
    fn long_runs_are_written_with_the_repeat_syntax_and_expand_back() {
        let text = format!("GET /{} HTTP/1.1", "a".repeat(5000));
        let short = compress_runs(&text);
        assert_eq!(short, "GET /${a*5000} HTTP/1.1");
        assert_eq!(crate::scenario::repeat_runs(&short), text);
        assert_eq!(compress_runs("abc"), "abc");
    }
}
