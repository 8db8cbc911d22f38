//! What every backend received, per request, in a form fit for YAML snapshots: the CGI params
//! in wire order (a map; a repeated name gets a ` #2` suffix), the FCGI_KEEP_CONN flag and the
//! connection. The proxy's `PATH` (and Apache's `LD_LIBRARY_PATH`) come from its process
//! environment, so they are redacted.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::Run;
use super::client::TAG_PARAM;

/// Params a proxy copies from its own process environment (Apache: `PATH` and the shared
/// library path), whose values depend on the machine and on how the tests were started.
const PROCESS_ENV: &[&str] = &["PATH", "LD_LIBRARY_PATH"];

/// Params in wire order.
#[derive(Debug, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Serialize for Params {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        let mut seen: Vec<&str> = Vec::new();
        for (n, v) in &self.0 {
            let k = seen.iter().filter(|x| **x == n.as_str()).count();
            seen.push(n);
            if k == 0 {
                m.serialize_entry(n, v)?;
            } else {
                m.serialize_entry(&format!("{n} #{}", k + 1), v)?;
            }
        }
        m.end()
    }
}

/// One request as a backend received it.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// The client request's label (`-` when untagged).
    pub request: String,
    pub backend: String,
    /// 1-based restart count of the backend (1: never restarted).
    pub incarnation: usize,
    pub connection: u64,
    pub keep_conn: bool,
    pub params: Params,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stdin: String,
}

/// Every request every backend received, backends in scenario order, requests in arrival
/// order.
pub fn received(run: &Run) -> Vec<Received> {
    let mut out = Vec::new();
    for b in &run.backends {
        for (i, inc) in b.incarnations.iter().enumerate() {
            for r in &inc.journal.requests {
                let params = r
                    .params_lossy()
                    .into_iter()
                    .map(|(n, v)| {
                        if PROCESS_ENV.contains(&n.as_str()) {
                            let v = format!("[process {n}]");
                            (n, v)
                        } else {
                            (n, v)
                        }
                    })
                    .collect();
                out.push(Received {
                    request: r.param(TAG_PARAM).unwrap_or_else(|| "-".into()),
                    backend: b.name.clone(),
                    incarnation: i + 1,
                    connection: r.connection,
                    keep_conn: r.keep_conn,
                    params: Params(params),
                    stdin: r.stdin_lossy(),
                });
            }
        }
    }
    out
}
