//! Shared helpers for the cgi_* / config_* / route_* integration tests: run a request through
//! parse_target → Router → request_env → build_params exactly as the runtime does.
#![allow(dead_code)]

use std::net::SocketAddr;

use fcgi_proxy::cgi::{self, CgiInput, Request};
use fcgi_proxy::config::Config;
use fcgi_proxy::config::site::PathKind;
use fcgi_proxy::route::{Backend, Router};
use fcgi_proxy::site::Fs;
use fcgi_proxy::uri;

/// A fake filesystem: listed files are regular files, their parents and listed dirs are
/// directories, everything else is missing.
#[derive(Debug, Default, Clone)]
pub struct FakeFs {
    pub files: Vec<String>,
    pub dirs: Vec<String>,
}

impl FakeFs {
    pub fn with_files(files: &[&str]) -> FakeFs {
        FakeFs {
            files: files.iter().map(|s| s.to_string()).collect(),
            dirs: Vec::new(),
        }
    }
}

impl Fs for FakeFs {
    fn kind(&self, path: &[u8]) -> PathKind {
        let p = String::from_utf8_lossy(path);
        if self.files.iter().any(|f| *f == p) {
            return PathKind::File;
        }
        let prefix = format!("{}/", p.trim_end_matches('/'));
        if p == "/"
            || self.dirs.iter().any(|d| *d == p)
            || self
                .files
                .iter()
                .chain(self.dirs.iter())
                .any(|f| f.starts_with(&prefix))
        {
            return PathKind::Directory;
        }
        PathKind::Missing
    }
}

/// A request description.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub protocol: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub content_length: Option<u64>,
    pub process_path: Option<String>,
    /// Which balancer member to use (index).
    pub member: usize,
    /// What the balancer decided besides the member: route changed (and noted late, on a
    /// failover), the session the request named.
    pub route_changed: (bool, bool),
    pub session: Option<fcgi_proxy::balancer::Session>,
}

impl Req {
    /// `GET target` from 192.0.2.10:54321 to 198.51.100.1:80 with `Host: example.com`
    /// (the assumptions of the worked examples in docs/reference/apache.md §3.7).
    pub fn get(target: &str) -> Req {
        Req {
            method: "GET".into(),
            protocol: "HTTP/1.1".into(),
            target: target.into(),
            headers: vec![("Host".into(), b"example.com".to_vec())],
            remote: "192.0.2.10:54321".parse().unwrap(),
            local: "198.51.100.1:80".parse().unwrap(),
            content_length: None,
            process_path: Some("/usr/local/bin:/usr/bin:/bin".into()),
            member: 0,
            route_changed: (false, false),
            session: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.as_bytes().to_vec()));
        self
    }

    pub fn headers(mut self, h: &[(&str, &str)]) -> Req {
        self.headers = h
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        self
    }
}

/// Outcome: the params (values lossy UTF-8) or the status the proxy answers.
pub type Outcome = Result<Vec<(String, String)>, u16>;

pub fn toml_config(text: &str) -> Config {
    match Config::from_toml_str(text, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("config: {e}"),
    }
}

/// Run a request through the whole pure pipeline.
pub fn run_with_fs(cfg: &Config, req: &Req, fs: &dyn Fs) -> Outcome {
    let u = uri::parse_target(&req.target, &cfg.uri_options()).map_err(|e| e.status)?;
    let router = Router::new(cfg).expect("router");
    let m = router.route(&u).ok_or(404u16)?;
    let headers: Vec<(&str, &[u8])> = req
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let request = Request {
        method: &req.method,
        protocol: &req.protocol,
        uri: &u,
        headers: &headers,
        remote: req.remote,
        local: req.local,
        tls: None,
        content_length: req.content_length,
    };
    let env = cgi::request_env(cfg, &m, &request);
    let member = match &m.backend {
        Backend::Balancer { index, .. } => Some(&cfg.balancers[*index].members[req.member]),
        Backend::Worker => None,
    };
    let process_path = req.process_path.as_deref().map(str::as_bytes);
    // The server's variables encoded once for this process PATH (the runtime's case), and for
    // another one, which a request must then not take.
    let fixed = cgi::FixedParams::new(cfg, process_path);
    let other = cgi::FixedParams::new(cfg, Some(b"/elsewhere"));
    let input = CgiInput {
        config: cfg,
        route_match: &m,
        member,
        balancer: cgi::BalancerVars {
            route_changed: req.route_changed.0,
            route_changed_late: req.route_changed.1,
            session: req.session.as_ref(),
        },
        request: &request,
        env: &env,
        process_path,
        fs,
        fixed: Some(&fixed),
    };
    let built = cgi::build_params(&input);
    // What goes on the wire: the records the runtime sends must carry exactly these params,
    // whichever way they were made (straight into records when no rule is in play).
    for fixed in [Some(&fixed), Some(&other), None] {
        let encoded = cgi::encode_params(&CgiInput { fixed, ..input }, true);
        match (&built, &encoded) {
            (Ok(params), Ok(records)) => {
                let want: Vec<(Vec<u8>, Vec<u8>)> = params
                    .iter()
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.clone()))
                    .collect();
                assert_eq!(
                    decode_params(records.request()),
                    want,
                    "encoded PARAMS differ"
                );
            }
            (Err(a), Err(b)) => assert_eq!(a.status, b.status),
            _ => panic!("build_params and encode_params disagree: {built:?} / {encoded:?}"),
        }
    }
    let params = built.map_err(|e| e.status)?;
    Ok(params
        .into_iter()
        .map(|(n, v)| (n.into_owned(), String::from_utf8_lossy(&v).into_owned()))
        .collect())
}

pub fn run(cfg: &Config, req: &Req) -> Outcome {
    run_with_fs(cfg, req, &FakeFs::default())
}

/// Look a param up (None when absent). Panics when it appears twice.
pub fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let hits: Vec<&(String, String)> = params.iter().filter(|(n, _)| n == name).collect();
    assert!(hits.len() <= 1, "{name} appears {} times", hits.len());
    hits.first().map(|(_, v)| v.as_str())
}

pub fn names(params: &[(String, String)]) -> Vec<&str> {
    params.iter().map(|(n, _)| n.as_str()).collect()
}

/// Render params one per line (for snapshots); REMOTE_PORT kept (deterministic here).
/// SERVER_SOFTWARE's version is replaced by `[version]`.
pub fn render(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(n, v)| {
            let v = if n == "SERVER_SOFTWARE" && v == cgi::SERVER_SOFTWARE {
                "fcgi-proxy/[version]".to_string()
            } else {
                v.clone()
            };
            format!("{n}={}", v.escape_debug())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The pairs of the PARAMS stream in BEGIN_REQUEST + PARAMS records.
fn decode_params(records: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut d = fastcgi::Decoder::default();
    d.feed(records);
    let mut stream = Vec::new();
    let mut ended = false;
    while let Ok(Some(r)) = d.decode() {
        if let fastcgi::Record::Stream {
            record_type: fastcgi::RecordType::Params,
            content,
            ..
        } = r
        {
            ended |= content.is_empty();
            stream.extend_from_slice(&content);
        }
    }
    assert!(ended, "PARAMS stream not closed");
    fastcgi::nv::decode_all(&stream, usize::MAX)
        .expect("PARAMS decode")
        .into_iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}
