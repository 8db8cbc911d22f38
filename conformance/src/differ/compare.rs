//! Comparing a target's observation of a case with the oracle's, after the documented
//! normalisations, and the lists of known differences that keep runs quiet.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cases::{Body, Case, RouteConfig};
use super::harness::{Obs, Received};

/// Params whose values are the identity of a server or of a connection, not of the request:
/// the product banner, ports (each target listens on its own), the process environment.
/// `proxy/tests/apache_parity.rs` allows the same (its ports are equal by construction).
pub const IDENTITY_PARAMS: &[&str] = &[
    "SERVER_SOFTWARE",
    "SERVER_SIGNATURE",
    "REMOTE_PORT",
    "SERVER_PORT",
    "PATH",
    "LD_LIBRARY_PATH",
];

/// The variable that carries a route's path-info mode (it is also sent as a param).
const PATHINFO_VAR: &str = "proxy-fcgi-pathinfo";

/// One way two observations differ. `kind` is what groups and what the known lists match;
/// `oracle` and `target` say what each did.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diff {
    pub kind: String,
    pub oracle: String,
    pub target: String,
}

fn status_text(o: &Obs) -> String {
    match o.status {
        Some(s) => s.to_string(),
        None => "no response".into(),
    }
}

/// Params by name (values of repeated names in order), identities left out, the second
/// balancer member written as the first (which member served a case is not compared).
fn params(r: &Received) -> BTreeMap<&str, Vec<String>> {
    let mut m: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (n, v) in &r.params {
        if IDENTITY_PARAMS.contains(&n.as_str()) {
            continue;
        }
        m.entry(n.as_str())
            .or_default()
            .push(v.replace("app2:9001", "app:9000"));
    }
    m
}

fn shown(v: &[String]) -> String {
    let text = match v {
        [] => "absent".to_string(),
        [one] => format!("{one:?}"),
        many => format!("{many:?}"),
    };
    super::cases::compress_runs(&text)
}

/// How `target` differs from `oracle` on one case, in a fixed order.
pub fn diff(oracle: &Obs, target: &Obs) -> Vec<Diff> {
    let mut out = Vec::new();
    if oracle.status != target.status {
        out.push(Diff {
            kind: format!("status {} -> {}", status_text(oracle), status_text(target)),
            oracle: status_text(oracle),
            target: status_text(target),
        });
    }
    match (&oracle.backend, &target.backend) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) if oracle.status != target.status => {
            // Said by the status already: one refused what the other passed on.
        }
        (Some(_), None) => out.push(Diff {
            kind: "backend not reached".into(),
            oracle: "reached the backend".into(),
            target: "did not".into(),
        }),
        (None, Some(_)) => out.push(Diff {
            kind: "backend reached".into(),
            oracle: "did not reach the backend".into(),
            target: "reached it".into(),
        }),
        (Some(a), Some(b)) => {
            let (pa, pb) = (params(a), params(b));
            // The oracle's configuration did not give this request the route's path-info
            // mode (Apache's SetEnvIf matches the path before it is decoded): every
            // difference that follows from that is one.
            if !pa.contains_key(PATHINFO_VAR) && pb.contains_key(PATHINFO_VAR) {
                out.push(Diff {
                    kind: "pathinfo mode not set in the oracle".into(),
                    oracle: "no proxy-fcgi-pathinfo".into(),
                    target: shown(&pb[PATHINFO_VAR]),
                });
                return out;
            }
            let mut names: Vec<&str> = pa.keys().chain(pb.keys()).copied().collect();
            names.sort_unstable();
            names.dedup();
            let none: Vec<String> = Vec::new();
            for n in names {
                let (va, vb) = (pa.get(n).unwrap_or(&none), pb.get(n).unwrap_or(&none));
                if va == vb {
                    continue;
                }
                let kind = match (va.len(), vb.len()) {
                    (_, 0) => format!("param {n} absent"),
                    (0, _) => format!("param {n} extra"),
                    (x, y) if x != y => format!("param {n} repeated"),
                    _ => format!("param {n} value"),
                };
                out.push(Diff {
                    kind,
                    oracle: shown(va),
                    target: shown(vb),
                });
            }
            if a.stdin_len != b.stdin_len || a.stdin_complete != b.stdin_complete {
                out.push(Diff {
                    kind: "stdin length".into(),
                    oracle: stdin_text(a),
                    target: stdin_text(b),
                });
            } else if a.stdin_hash != b.stdin_hash {
                out.push(Diff {
                    kind: "stdin content".into(),
                    oracle: stdin_text(a),
                    target: stdin_text(b),
                });
            }
        }
    }
    out
}

fn stdin_text(r: &Received) -> String {
    format!(
        "{} bytes{}",
        r.stdin_len,
        if r.stdin_complete { "" } else { ", not ended" }
    )
}

/// `scenarios/expected/differ-<target>.toml`: differences known and accepted, each with its
/// reason.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Known {
    #[serde(default, rename = "accept")]
    pub accepted: Vec<Accept>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    /// The difference's kind; `*` matches any run of characters (`param CONTEXT_* absent`).
    pub kind: String,
    /// Only for requests whose raw text matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Only on route configurations whose name matches this glob (`*-pathinfo-full-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Only for requests whose body is sent this way: `none`, `length`, `chunked`, or
    /// `early-close` (the client stops sending before the body's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Only for requests the route configuration does not take and that reached no backend
    /// through either proxy: what each front end itself does with them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outside: bool,
    /// Only when the oracle's side of the difference (a status, a param's value) matches this
    /// regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle: Option<String>,
    pub reason: String,
}

/// A known list with its regular expressions compiled.
#[derive(Debug, Default)]
pub struct KnownList {
    pub file: Option<String>,
    /// Each entry with its `request` and `oracle` expressions compiled.
    entries: Vec<(Accept, Option<regex::Regex>, Option<regex::Regex>)>,
    /// The route configurations of the run, by name (for `outside`).
    pub routes: Vec<RouteConfig>,
}

impl KnownList {
    /// How many entries the list has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn route_of(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name() == name)
    }

    /// `dir/differ-<target>.toml`; none when it does not exist.
    pub fn load(dir: &Path, target: &str) -> Result<KnownList, String> {
        let path = dir.join(format!("differ-{target}.toml"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KnownList::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut list = KnownList::parse(&text, &path.display().to_string())?;
        list.file = Some(path.display().to_string());
        Ok(list)
    }

    pub fn parse(text: &str, origin: &str) -> Result<KnownList, String> {
        let known: Known = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        let mut entries = Vec::new();
        for a in known.accepted {
            let compile = |field: &str, r: &Option<String>| match r {
                Some(r) => regex::Regex::new(r)
                    .map(Some)
                    .map_err(|e| format!("{origin}: accept {:?}: {field}: {e}", a.kind)),
                None => Ok(None),
            };
            let re = compile("request", &a.request)?;
            let oracle = compile("oracle", &a.oracle)?;
            if let Some(b) = &a.body
                && !["none", "length", "chunked", "early-close"].contains(&b.as_str())
            {
                return Err(format!("{origin}: accept {:?}: body {b:?}", a.kind));
            }
            if a.reason.trim().is_empty() {
                return Err(format!("{origin}: accept {:?}: no reason", a.kind));
            }
            entries.push((a, re, oracle));
        }
        Ok(KnownList {
            file: None,
            entries,
            routes: vec![RouteConfig::PLAIN],
        })
    }

    /// The reason `d` is accepted for `case` on route configuration `route`, if it is;
    /// `reached`: the oracle or the target passed the request to a backend.
    pub fn accepts(&self, d: &Diff, case: &Case, route: &str, reached: bool) -> Option<&str> {
        let raw = case.raw();
        let body = match &case.body {
            _ if case.body.early_close() => "early-close",
            Body::None => "none",
            Body::Length { .. } => "length",
            Body::Chunked { .. } => "chunked",
        };
        let outside = !self
            .route_of(route)
            .is_some_and(|r| r.matches(&case.target))
            && !reached;
        self.entries
            .iter()
            .find(|(a, re, oracle)| {
                crate::report::glob_match(&a.kind, &d.kind)
                    && re.as_ref().is_none_or(|re| re.is_match(&raw))
                    && oracle.as_ref().is_none_or(|re| re.is_match(&d.oracle))
                    && a.body.as_deref().is_none_or(|b| b == body)
                    && (!a.outside || outside)
                    && a.route
                        .as_deref()
                        .is_none_or(|g| crate::report::glob_match(g, route))
            })
            .map(|(a, _, _)| a.reason.as_str())
    }
}

/// The path of `target` with `%2e` decoded, repeated slashes merged and dot segments resolved
/// (RFC 3986 5.2.4), as Apache normalises it before matching routes.
pub fn routed_path(target: &str) -> String {
    let path = target.split('?').next().unwrap_or("");
    let path = path.replace("%2e", ".").replace("%2E", ".");
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            "" if !last => {}
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(status: u16, params: &[(&str, &str)], stdin: u64) -> Obs {
        Obs {
            status: Some(status),
            responses: 1,
            backend: Some(Received {
                params: params
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                stdin_len: stdin,
                stdin_hash: stdin,
                stdin_complete: true,
                finished: true,
            }),
            note: None,
        }
    }

    #[test]
    fn identities_are_not_differences_and_the_rest_are() {
        let a = obs(
            200,
            &[("SERVER_PORT", "1"), ("SCRIPT_NAME", "/a"), ("X", "1")],
            0,
        );
        let b = obs(200, &[("SERVER_PORT", "2"), ("SCRIPT_NAME", "/a")], 0);
        assert_eq!(diff(&a, &a.clone()), vec![]);
        let kinds: Vec<String> = diff(&a, &b).into_iter().map(|d| d.kind).collect();
        assert_eq!(kinds, vec!["param X absent"]);
        let c = obs(200, &[("SCRIPT_NAME", "/b"), ("X", "1"), ("X", "2")], 3);
        let kinds: Vec<String> = diff(&a, &c).into_iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            vec![
                "param SCRIPT_NAME value",
                "param X repeated",
                "stdin length"
            ]
        );
        let refused = Obs {
            status: Some(400),
            responses: 1,
            backend: None,
            note: None,
        };
        let d = diff(&a, &refused);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, "status 200 -> 400");
    }

    #[test]
    fn dot_segments_are_resolved_before_the_route_is_matched() {
        assert_eq!(routed_path("/app/../x?q=/app/"), "/x");
        assert_eq!(routed_path("/app/./x.php"), "/app/x.php");
        assert_eq!(routed_path("/x/%2e%2e/app/y"), "/app/y");
        assert_eq!(routed_path("/app/.."), "/");
        assert_eq!(routed_path("/../../app/"), "/app/");
        assert_eq!(routed_path("/app/t/%2e%2e//%2e%2e/x.php"), "/x.php");
        assert_eq!(routed_path("//app//x"), "/app/x");
    }

    #[test]
    fn known_entries_match_by_kind_request_and_route() {
        let list = KnownList::parse(
            r#"
[[accept]]
kind = "status 200 -> 400"
request = '(?i)%0[ad0]'
reason = "CR, LF, NUL refused"
[[accept]]
kind = "param CONTEXT_* absent"
route = "*-balancer"
reason = "x"
[[accept]]
kind = "backend not reached"
body = "early-close"
outside = true
reason = "y"
"#,
            "t",
        )
        .unwrap();
        let d = |k: &str| Diff {
            kind: k.into(),
            oracle: String::new(),
            target: String::new(),
        };
        let c = |target: &str, body: Body| Case {
            method: "GET".into(),
            target: target.into(),
            headers: Vec::new(),
            body,
        };
        let get = |t: &str| c(t, Body::None);
        assert!(
            list.accepts(&d("status 200 -> 400"), &get("/a%0A"), "p", false)
                .is_some()
        );
        assert!(
            list.accepts(&d("status 200 -> 400"), &get("/a"), "p", false)
                .is_none()
        );
        let any = get("/");
        let mut list = list;
        list.routes.push(RouteConfig {
            balancer: true,
            ..RouteConfig::PLAIN
        });
        assert!(
            list.accepts(&d("param CONTEXT_PREFIX absent"), &any, "x-balancer", false)
                .is_some()
        );
        assert!(
            list.accepts(&d("param CONTEXT_PREFIX absent"), &any, "x", false)
                .is_none()
        );
        let cut = Body::Length { size: 2, sent: 1 };
        let whole = Body::Length { size: 2, sent: 2 };
        let nr = d("backend not reached");
        assert!(
            list.accepts(&nr, &c("/x", cut.clone()), "p", false)
                .is_some()
        );
        assert!(list.accepts(&nr, &c("/x", whole), "p", false).is_none());
        assert!(
            list.accepts(&nr, &c("/app/x", cut.clone()), "prefix-fpm-reuse", false)
                .is_none()
        );
        assert!(list.accepts(&nr, &c("/x", cut), "p", true).is_none());
        assert!(
            KnownList::parse(
                "[[accept]]\nkind = \"x\"\nbody = \"big\"\nreason = \"y\"",
                "t"
            )
            .is_err()
        );
        let by_value = KnownList::parse(
            "[[accept]]\nkind = \"param P value\"\noracle = '^proxy:'\nreason = \"z\"",
            "t",
        )
        .unwrap();
        let value = |oracle: &str| Diff {
            kind: "param P value".into(),
            oracle: oracle.into(),
            target: "/var/www/html/a".into(),
        };
        assert!(
            by_value
                .accepts(&value("proxy:fcgi://app:9000/a"), &any, "p", true)
                .is_some()
        );
        assert!(
            by_value
                .accepts(&value("/srv/a"), &any, "p", true)
                .is_none()
        );
        assert!(
            KnownList::parse(
                "[[accept]]\nkind = \"x\"\noracle = '('\nreason = \"y\"",
                "t"
            )
            .is_err()
        );
        assert!(KnownList::parse("[[accept]]\nkind = \"x\"\nreason = \"\"", "t").is_err());
        assert!(KnownList::parse("[[accept]]\nkind = \"x\"\nwhy = \"y\"", "t").is_err());
    }
}
