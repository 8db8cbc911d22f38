//! Request counters, and the Prometheus text and JSON status the admin listener serves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::admission::AdmissionStats;
use crate::balancer::BalancerState;
use crate::pool::PoolStats;

/// Requests by (route, status, member), counted per serving thread (a shard each, so threads
/// share no lock and no cache line) and merged when shown. BTreeMaps, so output order is stable.
#[derive(Debug)]
pub struct Metrics {
    shards: Box<[Shard]>,
}

/// Shards, by serving thread (more threads share them in turn).
const SHARDS: usize = 16;

type Counts = BTreeMap<(Option<usize>, u16), BTreeMap<Box<str>, u64>>;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Counts>);

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

/// This thread's shard: its serving-thread slot, the same one that picks its idle connections.
fn shard_index() -> usize {
    crate::pool::thread_slot() % SHARDS
}

impl Metrics {
    pub fn request(&self, route: Option<usize>, status: u16, member: Option<&str>) {
        let member = member.unwrap_or("-");
        let mut counts = self.shards[shard_index()]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let by_member = counts.entry((route, status)).or_default();
        match by_member.get_mut(member) {
            Some(n) => *n += 1,
            None => {
                by_member.insert(member.into(), 1);
            }
        }
    }

    pub fn requests(&self) -> BTreeMap<(String, u16, String), u64> {
        let mut all = BTreeMap::new();
        for shard in &self.shards {
            let counts = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            for (&(route, status), by_member) in counts.iter() {
                let route = route.map_or_else(|| "-".to_string(), |r| (r + 1).to_string());
                for (member, n) in by_member {
                    *all.entry((route.clone(), status, member.to_string()))
                        .or_default() += n;
                }
            }
        }
        all
    }
}

/// What the admin endpoints show about one worker.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub name: String,
    pub reuse: bool,
    pub stats: PoolStats,
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition format 0.0.4.
pub fn prometheus(
    m: &Metrics,
    workers: &[WorkerView],
    balancers: &[&BalancerState],
    admission: &AdmissionStats,
) -> String {
    let mut o = String::new();
    let a = admission;
    let budget = if a.body_budget == 0 {
        u64::MAX
    } else {
        a.body_budget
    };
    for (name, kind, help, v) in [
        (
            "fcgi_proxy_client_connections",
            "gauge",
            "Client connections open.",
            a.connections_open as u64,
        ),
        (
            "fcgi_proxy_client_connections_peak",
            "gauge",
            "Most client connections open at once.",
            a.connections_peak as u64,
        ),
        (
            "fcgi_proxy_client_connections_max",
            "gauge",
            "Client connections allowed at once (limits.max_connections).",
            a.max_connections as u64,
        ),
        (
            "fcgi_proxy_accept_pauses_total",
            "counter",
            "Times accepting paused with every client connection slot taken.",
            a.accept_pauses,
        ),
        (
            "fcgi_proxy_body_buffer_bytes",
            "gauge",
            "Request body bytes buffered in memory now.",
            a.body_bytes,
        ),
        (
            "fcgi_proxy_body_buffer_bytes_peak",
            "gauge",
            "Most request body bytes buffered in memory at once.",
            a.body_bytes_peak,
        ),
        (
            "fcgi_proxy_body_buffer_budget_bytes",
            "gauge",
            "limits.body_buffer_budget (18446744073709551615: unlimited).",
            budget,
        ),
        (
            "fcgi_proxy_body_buffer_refused_total",
            "counter",
            "Requests answered 503 because their body did not fit the budget.",
            a.body_refused,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        let _ = writeln!(o, "{name} {v}");
    }
    let _ = writeln!(
        o,
        "# HELP fcgi_proxy_requests_total Client requests answered."
    );
    let _ = writeln!(o, "# TYPE fcgi_proxy_requests_total counter");
    for ((route, status, member), n) in m.requests() {
        let _ = writeln!(
            o,
            "fcgi_proxy_requests_total{{route=\"{}\",status=\"{status}\",member=\"{}\"}} {n}",
            esc(&route),
            esc(&member)
        );
    }
    type Get = fn(&PoolStats) -> u64;
    let series: [(&str, &str, &str, Get); 17] = [
        (
            "fcgi_proxy_backend_connections_opened_total",
            "counter",
            "Backend connections opened.",
            |s| s.opened,
        ),
        (
            "fcgi_proxy_backend_connections_reused_total",
            "counter",
            "Requests sent on a reused backend connection.",
            |s| s.reused,
        ),
        (
            "fcgi_proxy_backend_connections_open",
            "gauge",
            "Backend connections open (busy or idle).",
            |s| s.open as u64,
        ),
        (
            "fcgi_proxy_backend_connections_idle",
            "gauge",
            "Idle pooled backend connections.",
            |s| s.idle as u64,
        ),
        (
            "fcgi_proxy_backend_connections_closed_by_backend_total",
            "counter",
            "Idle pooled connections the backend closed.",
            |s| s.closed_idle_by_backend,
        ),
        (
            "fcgi_proxy_backend_connections_closed_ttl_total",
            "counter",
            "Idle pooled connections closed by the proxy after ttl.",
            |s| s.closed_idle_ttl,
        ),
        (
            "fcgi_proxy_pool_waits_total",
            "counter",
            "Checkouts that had to wait for a free connection.",
            |s| s.waits,
        ),
        (
            "fcgi_proxy_pool_wait_seconds_total",
            "counter",
            "Time spent waiting for a free connection (ms resolution).",
            |s| s.wait_ms,
        ),
        (
            "fcgi_proxy_pool_acquire_timeouts_total",
            "counter",
            "Checkouts that gave up after acquire (503).",
            |s| s.acquire_timeouts,
        ),
        (
            "fcgi_proxy_pool_waiting",
            "gauge",
            "Requests waiting for a free connection now.",
            |s| s.waiting as u64,
        ),
        (
            "fcgi_proxy_pool_queue_full_total",
            "counter",
            "Requests refused at once (503) because limits.max_waiting were already waiting.",
            |s| s.queue_full,
        ),
        (
            "fcgi_proxy_backend_connections_pending",
            "gauge",
            "Fresh backend connections with nothing back yet (possibly in the backend's backlog).",
            |s| s.pending as u64,
        ),
        (
            "fcgi_proxy_pool_limit",
            "gauge",
            "Learned limit: connections the backend serves at once as far as shown (0: none learned).",
            |s| s.limit.unwrap_or(0) as u64,
        ),
        (
            "fcgi_proxy_pool_demonstrated",
            "gauge",
            "Most backend connections accepted at once.",
            |s| s.demonstrated as u64,
        ),
        (
            "fcgi_proxy_pool_saturations_total",
            "counter",
            "Fresh connections the backend left unaccepted past the accept grace.",
            |s| s.saturations,
        ),
        (
            "fcgi_proxy_pool_yields_total",
            "counter",
            "Connections closed to free a backend worker for a waiting connection.",
            |s| s.yields,
        ),
        (
            "fcgi_proxy_pool_probes_total",
            "counter",
            "Connections opened beyond the learned limit to test for more capacity.",
            |s| s.probes,
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for w in workers {
            let v = get(&w.stats);
            if name == "fcgi_proxy_pool_wait_seconds_total" {
                let _ = writeln!(
                    o,
                    "{name}{{worker=\"{}\"}} {:.3}",
                    esc(&w.name),
                    v as f64 / 1000.0
                );
            } else {
                let _ = writeln!(o, "{name}{{worker=\"{}\"}} {v}", esc(&w.name));
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP fcgi_proxy_pool_cap Connection cap in force per worker."
    );
    let _ = writeln!(o, "# TYPE fcgi_proxy_pool_cap gauge");
    for w in workers {
        let _ = writeln!(
            o,
            "fcgi_proxy_pool_cap{{worker=\"{}\"}} {}",
            esc(&w.name),
            w.stats.cap
        );
    }
    let _ = writeln!(
        o,
        "# HELP fcgi_proxy_member_up Balancer member usable (1) or in error/disabled (0)."
    );
    let _ = writeln!(o, "# TYPE fcgi_proxy_member_up gauge");
    let _ = writeln!(
        o,
        "# HELP fcgi_proxy_member_busy Requests in flight per balancer member."
    );
    let _ = writeln!(o, "# TYPE fcgi_proxy_member_busy gauge");
    let _ = writeln!(
        o,
        "# HELP fcgi_proxy_member_elected_total Requests assigned per balancer member."
    );
    let _ = writeln!(o, "# TYPE fcgi_proxy_member_elected_total counter");
    for b in balancers {
        for v in b.view() {
            let labels = format!("balancer=\"{}\",member=\"{}\"", esc(&b.name), esc(&v.name));
            let up = u8::from(!v.in_error && !v.off);
            let _ = writeln!(o, "fcgi_proxy_member_up{{{labels}}} {up}");
            let _ = writeln!(o, "fcgi_proxy_member_busy{{{labels}}} {}", v.busy);
            let _ = writeln!(
                o,
                "fcgi_proxy_member_elected_total{{{labels}}} {}",
                v.elected
            );
        }
    }
    o
}

/// A read-only JSON status, in the spirit of Apache's balancer-manager.
pub fn status_json(
    workers: &[WorkerView],
    balancers: &[&BalancerState],
    admission: &AdmissionStats,
    filesystem_lookups: Option<serde_json::Value>,
) -> String {
    let workers: Vec<serde_json::Value> = workers
        .iter()
        .map(|w| {
            let s = &w.stats;
            serde_json::json!({
                "name": w.name,
                "reuse": w.reuse,
                "cap": s.cap,
                "limit": s.limit,
                "demonstrated": s.demonstrated,
                "announced_max_conns": s.announced_max_conns,
                "answers_get_values": s.answers_get_values,
                "open": s.open,
                "accepted": s.accepted,
                "pending": s.pending,
                "saturations": s.saturations,
                "yields": s.yields,
                "probes": s.probes,
                "probes_accepted": s.probes_accepted,
                "idle": s.idle,
                "opened": s.opened,
                "reused": s.reused,
                "closed_by_backend": s.closed_idle_by_backend,
                "closed_ttl": s.closed_idle_ttl,
                "waits": s.waits,
                "wait_ms": s.wait_ms,
                "acquire_timeouts": s.acquire_timeouts,
                "waiting": s.waiting,
                "queue_full": s.queue_full,
            })
        })
        .collect();
    let balancers: Vec<serde_json::Value> = balancers
        .iter()
        .map(|b| {
            let members: Vec<serde_json::Value> = b
                .view()
                .into_iter()
                .map(|v| {
                    let state = if v.off {
                        "disabled"
                    } else if v.in_error {
                        "error"
                    } else {
                        "ok"
                    };
                    serde_json::json!({
                        "name": v.name,
                        "lbset": v.lbset,
                        "lbfactor": v.lbfactor,
                        "standby": v.standby,
                        "spare": v.spare,
                        "route": v.route,
                        "state": state,
                        "busy": v.busy,
                        "elected": v.elected,
                    })
                })
                .collect();
            serde_json::json!({ "name": b.name, "members": members })
        })
        .collect();
    let a = admission;
    let admission = serde_json::json!({
        "client_connections": a.connections_open,
        "max_client_connections": a.max_connections,
        "client_connections_peak": a.connections_peak,
        "accept_pauses": a.accept_pauses,
        "body_buffer_bytes": a.body_bytes,
        "body_buffer_bytes_peak": a.body_bytes_peak,
        "body_buffer_budget": a.body_budget,
        "body_buffer_refused": a.body_refused,
    });
    let mut out = serde_json::json!({
        "admission": admission,
        "workers": workers,
        "balancers": balancers,
        "filesystem_lookups": filesystem_lookups,
    })
    .to_string();
    out.push('\n');
    out
}
