//! The simulated runner: a scenario in a deterministic turmoil network.
//!
//! Hosts, registered in this order (so their addresses are stable): `proxy` (fcgi-proxy, hyper
//! front end on port 80, backend connections through an observed [`net::ObservedConnector`]),
//! then `proxy2`, `proxy3`, ... when `topology.proxies` asks for more instances (each its own
//! [`Proxy`] with its own pools, same configuration; clients dial the one their `proxy` names),
//! one host per `[[backend]]` (an `fcgi-mock` server whose journal also feeds the trace; a
//! restart starts a fresh mock with a fresh journal, an *incarnation*), then one client host per
//! `[[client]]` (hyper client, see [`client`]).
//!
//! The run is seeded (`rng_seed`: message latencies and the order hosts are polled in each
//! step, `enable_random_order`) and its epoch is fixed, so the same scenario and seed give the
//! same trace byte for byte. Faults are applied between steps at their virtual times. When every
//! client is done, the simulation keeps stepping until the proxy's connections, its pools and
//! the backends' journals agree (or the scenario's `settle` time runs out: a leak), then the
//! observations are collected for [`crate::check`].
//!
//! With several instances, whatever observes "the proxy" covers all of them: the connection
//! counts per backend address ([`Run::net`]) and the leak check are sums over the instances,
//! [`Run::workers`] lists every instance's pools (labelled with [`WorkerRun::instance`]), the
//! pool watch checks each instance's pools against their own caps. A link fault naming `proxy`
//! acts on instance 0 only (`proxy2` names instance 1, and so on). The connection lines in the
//! trace name their instance's host; the proxies' own log lines are all from `proxy`.

pub mod client;
pub mod h2;
pub mod net;
pub mod params;
pub mod raw;
pub mod suite;
pub mod trace;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fcgi_mock::{Journal, MockServer, Snapshot};
use fcgi_proxy::config::Config;
use fcgi_proxy::handler::Proxy;
use fcgi_proxy::pool::PoolStats;
use fcgi_proxy::server::{FrontSettings, serve};
use tokio::sync::watch;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, filter::Targets};

use crate::ours;
use crate::scenario::{Fault, FaultAction, Scenario, proxy_host};
use client::{RequestResult, Results};
use net::{AddrStats, NetStats, ObservedConnector};
use trace::Trace;

/// The fixed epoch of every simulation: 2026-01-01T00:00:00Z.
pub const EPOCH_SECS: u64 = 1_767_225_600;
/// The seed used when none is given.
pub const DEFAULT_SEED: u64 = 1;
/// Longest boot before the run is declared failed.
pub const BOOT_LIMIT: Duration = Duration::from_secs(1);
/// Virtual time per simulation step.
pub const TICK: Duration = Duration::from_millis(1);

/// One run of a mock backend's software: from start to crash or restart.
#[derive(Debug, Clone)]
pub struct Incarnation {
    /// Virtual time the mock started.
    pub started_at: Duration,
    /// Virtual time it was crashed or restarted.
    pub ended_at: Option<Duration>,
    pub journal: Snapshot,
}

impl Incarnation {
    /// Absolute virtual time of a journal timestamp.
    pub fn at(&self, ms: u64) -> Duration {
        self.started_at + Duration::from_millis(ms)
    }
}

/// Everything one backend saw.
#[derive(Debug, Clone)]
pub struct BackendRun {
    pub name: String,
    pub authority: String,
    pub incarnations: Vec<Incarnation>,
    /// A partition cut a link to this backend during the run. Turmoil drops segments on a cut
    /// link for good (it has no retransmission), so a close sent on an established connection
    /// may never arrive: either side may keep a connection the other has closed.
    pub partitioned: bool,
}

/// One proxy worker (pool) at the end of the run.
#[derive(Debug, Clone)]
pub struct WorkerRun {
    /// The proxy instance it belongs to (0-based; see [`crate::scenario::proxy_host`]).
    pub instance: usize,
    pub name: String,
    pub addr: String,
    pub stats: PoolStats,
}

/// The observations of one run.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub seed: u64,
    /// The proxy configuration the topology was translated into.
    pub config: Config,
    /// Per planned request (in [`Scenario::planned_requests`] order); `None`: never resolved.
    pub requests: Vec<Option<RequestResult>>,
    pub labels: Vec<String>,
    pub backends: Vec<BackendRun>,
    pub workers: Vec<WorkerRun>,
    /// The proxy's backend connections, per `host:port`.
    pub net: BTreeMap<String, AddrStats>,
    /// Pools that opened connections beyond the cap they had in force (checked every step).
    pub pool_cap_violations: Vec<String>,
    pub trace: Vec<String>,
    /// The simulation failed (a host errored, the time budget ran out).
    pub error: Option<String>,
    /// Connections, pools and journals agreed at the end.
    pub settled: bool,
    /// The proxy's own backend connections and pools were observed (the simulator sees them;
    /// a real run of another process only has the backends' journals), so the leak check
    /// applies.
    pub connections_observed: bool,
    /// Extra time allowed above an expectation's `elapsed.max` (zero in the simulator).
    pub timing_slack: Duration,
    /// Scenario time (from the end of the boot) when the last client finished.
    pub clients_done_at: Duration,
    /// Virtual time at the end (settling included).
    pub virtual_time: Duration,
    pub wall_time: Duration,
}

type ProxySlot = Arc<Mutex<Option<Arc<Proxy<ObservedConnector>>>>>;
type Incarnations = Arc<Mutex<Vec<(Duration, Option<Duration>, Journal)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a scenario with a seed.
pub fn run(s: &Scenario, seed: u64) -> Run {
    let wall = std::time::Instant::now();
    let trace = Trace::default();
    let layer = trace::TraceLayer {
        trace: trace.clone(),
    }
    .with_filter(
        Targets::new()
            .with_target("fcgi_proxy", tracing::Level::INFO)
            .with_target("access", tracing::Level::INFO),
    );
    let subscriber = tracing_subscriber::registry().with(layer);
    let mut run = tracing::subscriber::with_default(subscriber, || run_inner(s, seed, &trace));
    run.trace = trace.lines();
    run.wall_time = wall.elapsed();
    run
}

fn run_inner(s: &Scenario, seed: u64, trace: &Trace) -> Run {
    let planned = s.planned_requests();
    let config = match ours::config(s) {
        Ok(c) => c,
        Err(e) => {
            return Run {
                id: s.id.clone(),
                seed,
                config: Config::default(),
                requests: vec![None; planned.len()],
                labels: planned.iter().map(|p| p.label.clone()).collect(),
                backends: Vec::new(),
                workers: Vec::new(),
                net: BTreeMap::new(),
                pool_cap_violations: Vec::new(),
                trace: Vec::new(),
                error: Some(format!("topology: {e}")),
                settled: false,
                connections_observed: true,
                timing_slack: Duration::ZERO,
                clients_done_at: Duration::ZERO,
                virtual_time: Duration::ZERO,
                wall_time: Duration::ZERO,
            };
        }
    };
    let settle = s.sim.settle.0;
    let partitioned = partitioned_addrs(s);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(s.sim.duration.0)
        .tick_duration(TICK)
        .min_message_latency(s.sim.latency.0.0)
        .max_message_latency(s.sim.latency.1.0)
        .enable_random_order()
        .build();

    // The proxy instances, sharing the connection counters (their sums per backend address).
    let net_stats: NetStats = Arc::default();
    let proxy_hosts: Vec<String> = (0..s.topology.proxies.max(1) as usize)
        .map(proxy_host)
        .collect();
    let proxy_slots: Vec<ProxySlot> = proxy_hosts.iter().map(|_| ProxySlot::default()).collect();
    let h2 = s.speaks_h2c();
    for (host, slot) in proxy_hosts.iter().zip(&proxy_slots) {
        let cfg = Arc::new(config.clone());
        let connector = ObservedConnector::for_host(net_stats.clone(), trace.clone(), host);
        let slot = slot.clone();
        sim.host(host.as_str(), move || {
            let cfg = cfg.clone();
            let connector = connector.clone();
            let slot = slot.clone();
            async move {
                let listener = turmoil::net::TcpListener::bind(ours::LISTEN).await?;
                let proxy =
                    Arc::new(Proxy::new(cfg.clone(), connector).map_err(|e| e.to_string())?);
                *lock(&slot) = Some(proxy.clone());
                let (stop, stopped) = watch::channel(false);
                let settings = FrontSettings {
                    date_header: false,
                    // The plain listener takes HTTP/2 with prior knowledge too (`h2c = true`
                    // on a `[[listener]]`) when a client speaks it.
                    h2,
                    ..FrontSettings::from_config(&cfg)
                };
                let r = serve(listener, proxy, settings, stopped).await;
                drop(stop);
                r?;
                Ok(())
            }
        });
    }

    // The backends.
    let mut backends: Vec<(String, String, Incarnations)> = Vec::new();
    for b in &s.backends {
        let script = match b.mock_script() {
            Ok(x) => x,
            Err(e) => unreachable_script(&e),
        };
        let incarnations: Incarnations = Arc::default();
        backends.push((b.name.clone(), b.authority(), incarnations.clone()));
        let name = b.name.clone();
        let port = b.port;
        let trace = trace.clone();
        sim.host(b.name.as_str(), move || {
            let script = script.clone();
            let incarnations = incarnations.clone();
            let trace = trace.clone();
            let name = name.clone();
            async move {
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
                // Created inside the host, so that the journal's clock is the virtual one.
                let journal = Journal::with_sink(trace.sink(&name));
                let started = turmoil::sim_elapsed().unwrap_or_default();
                lock(&incarnations).push((started, None, journal.clone()));
                trace.log(&name, &format!("mock listening on port {port}"));
                let _mock = MockServer::spawn_with_journal(script, listener, journal)?;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }

    // Faults at time zero happen before anything starts (a backend that is down from the
    // beginning never boots).
    let mut faults: Vec<Fault> = s.faults.clone();
    faults.sort_by_key(|f| f.at);
    let mut faults: VecDeque<Fault> = faults.into();
    let mut links = Links {
        // Clients join when they are registered, after the boot.
        hosts: proxy_hosts
            .iter()
            .cloned()
            .chain(s.backends.iter().map(|b| b.name.clone()))
            .collect(),
        ..Links::default()
    };
    let mut error = None;
    while faults.front().is_some_and(|f| f.at.0.is_zero()) {
        if let Some(f) = faults.pop_front()
            && let Err(e) = apply(&mut sim, &f, &backends, &mut links, trace)
        {
            error = Some(e);
        }
    }
    // Boot: step until the proxy and every running backend listen. Scenario time starts then.
    while error.is_none() {
        let proxy_up = proxy_slots.iter().all(|p| lock(p).is_some());
        let backends_up = backends
            .iter()
            .all(|(name, _, incs)| !sim.is_host_running(name.as_str()) || !lock(incs).is_empty());
        if proxy_up && backends_up {
            break;
        }
        if sim.elapsed() > BOOT_LIMIT {
            error = Some("the proxy or a backend did not start listening".to_string());
            break;
        }
        if let Err(e) = sim.step() {
            error = Some(e.to_string());
            break;
        }
    }
    let mut watch = PoolWatch::default();
    watch.sample(&proxy_slots, sim.elapsed());
    let t0 = sim.elapsed();
    trace.log_at(Some(t0), "sim", "booted: scenario time 0");

    // The clients.
    let results: Results = Arc::new(Mutex::new(vec![None; planned.len()]));
    let addresses: Vec<(String, String)> = s
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.authority()))
        .collect();
    let dials: Vec<client::Dial> = (0..proxy_hosts.len())
        .map(|instance| client::Dial::Sim { t0, instance })
        .collect();
    for c in client::runs(s, &planned, &dials, &addresses, &results, trace) {
        sim.client(c.name.clone(), client::run(c));
    }

    links.hosts.extend(s.clients.iter().map(|c| c.name.clone()));

    // Run, applying faults at their times.
    while error.is_none() {
        while error.is_none() && faults.front().is_some_and(|f| t0 + f.at.0 <= sim.elapsed()) {
            if let Some(f) = faults.pop_front()
                && let Err(e) = apply(&mut sim, &f, &backends, &mut links, trace)
            {
                error = Some(e);
            }
        }
        let stepped = sim.step();
        watch.sample(&proxy_slots, sim.elapsed());
        match stepped {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let clients_done_at = sim.elapsed().saturating_sub(t0);

    // Settle: the remaining faults still happen; then wait until connections, pools and
    // journals agree.
    let last_fault = faults.back().map_or(Duration::ZERO, |f| t0 + f.at.0);
    let settle_end = sim.elapsed().max(last_fault) + settle;
    let mut settled = false;
    while error.is_none() && sim.elapsed() < settle_end {
        while error.is_none() && faults.front().is_some_and(|f| t0 + f.at.0 <= sim.elapsed()) {
            if let Some(f) = faults.pop_front()
                && let Err(e) = apply(&mut sim, &f, &backends, &mut links, trace)
            {
                error = Some(e);
            }
        }
        settled = faults.is_empty() && agree(&net_stats, &proxy_slots, &backends, &partitioned);
        if settled {
            break;
        }
        if let Err(e) = sim.step() {
            error = Some(e.to_string());
        }
        watch.sample(&proxy_slots, sim.elapsed());
    }
    trace.log_at(
        Some(sim.elapsed()),
        "sim",
        &format!(
            "end: clients done at {:.3}ms, {}",
            clients_done_at.as_secs_f64() * 1000.0,
            if settled { "settled" } else { "not settled" }
        ),
    );

    let workers = proxy_slots
        .iter()
        .enumerate()
        .flat_map(|(instance, slot)| {
            lock(slot)
                .as_ref()
                .map(|p| {
                    p.workers()
                        .iter()
                        .map(|w| WorkerRun {
                            instance,
                            name: w.name.clone(),
                            addr: w.pool.addr().to_string(),
                            stats: w.pool.stats(),
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect();
    let backends = backends
        .iter()
        .map(|(name, authority, incs)| BackendRun {
            partitioned: partitioned.contains(authority),
            name: name.clone(),
            authority: authority.clone(),
            incarnations: lock(incs)
                .iter()
                .map(|(start, end, j)| Incarnation {
                    started_at: *start,
                    ended_at: *end,
                    journal: j.snapshot(),
                })
                .collect(),
        })
        .collect();
    let requests = lock(&results).clone();
    let net = lock(&net_stats).clone();
    let virtual_time = sim.elapsed();
    trace.close();
    drop(sim);
    Run {
        id: s.id.clone(),
        seed,
        config,
        requests,
        labels: planned.iter().map(|p| p.label.clone()).collect(),
        backends,
        workers,
        net,
        pool_cap_violations: watch.violations,
        trace: Vec::new(),
        error,
        settled,
        connections_observed: true,
        timing_slack: Duration::ZERO,
        clients_done_at,
        virtual_time,
        wall_time: Duration::ZERO,
    }
}

fn unreachable_script(e: &str) -> fcgi_mock::Script {
    // Scenario::validate parsed every script already.
    panic!("mock script: {e}")
}

/// What the scenario's faults did to each link (host names in sorted pairs), so that a crash
/// leaves held and cut links as they are.
#[derive(Debug, Default)]
struct Links {
    /// The hosts registered so far (a link exists between any two of them).
    hosts: Vec<String>,
    held: std::collections::BTreeSet<(String, String)>,
    cut: std::collections::BTreeSet<(String, String)>,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn apply(
    sim: &mut turmoil::Sim<'_>,
    f: &Fault,
    backends: &[(String, String, Incarnations)],
    links: &mut Links,
    trace: &Trace,
) -> Result<(), String> {
    let now = sim.elapsed();
    let (a, b) = f.between.clone().unwrap_or_default();
    let what = match f.action {
        FaultAction::Hold => {
            sim.hold(a.as_str(), b.as_str());
            links.held.insert(pair(&a, &b));
            format!("hold {a} <-> {b}")
        }
        FaultAction::Release => {
            sim.release(a.as_str(), b.as_str());
            links.held.remove(&pair(&a, &b));
            format!("release {a} <-> {b}")
        }
        FaultAction::Partition => {
            sim.partition(a.as_str(), b.as_str());
            links.cut.insert(pair(&a, &b));
            format!("partition {a} <-> {b}")
        }
        FaultAction::Repair => {
            sim.repair(a.as_str(), b.as_str());
            links.cut.remove(&pair(&a, &b));
            format!("repair {a} <-> {b}")
        }
        FaultAction::Latency => {
            let d = f.latency.map(|d| d.0).unwrap_or_default();
            sim.set_link_latency(a.as_str(), b.as_str(), d);
            format!("latency {a} <-> {b} = {}ms", d.as_millis())
        }
        FaultAction::Crash | FaultAction::Restart => {
            let host = f.host.clone().unwrap_or_default();
            if let Some((_, _, incs)) = backends.iter().find(|(n, _, _)| *n == host)
                && let Some(last) = lock(incs).last_mut()
                && last.1.is_none()
            {
                last.1 = Some(now);
            }
            trace.log_at(
                Some(now),
                "sim",
                &format!(
                    "fault: {} {host}",
                    if f.action == FaultAction::Crash {
                        "crash"
                    } else {
                        "restart"
                    }
                ),
            );
            if sim.is_host_running(host.as_str()) {
                crash_in_order(sim, &host, links)?;
            }
            if f.action == FaultAction::Restart {
                sim.bounce(host.as_str());
            }
            return Ok(());
        }
    };
    trace.log_at(Some(now), "sim", &format!("fault: {what}"));
    Ok(())
}

/// Crashes `host` like a process that dies: its sockets close (FIN, or RST with unread data),
/// as the kernel would send them. Turmoil sends those as the host's runtime drops its tasks,
/// and that order follows tokio's task ids, which are process-wide and differ from run to run.
/// So the host's links are held during the crash and the closes are then delivered one per
/// step, ordered by (source, destination) address, keeping the sending order within a
/// connection. Links the scenario holds or cuts are left as they are.
fn crash_in_order(sim: &mut turmoil::Sim<'_>, host: &str, links: &Links) -> Result<(), String> {
    let others: Vec<String> = links
        .hosts
        .iter()
        .filter(|h| h.as_str() != host)
        .filter(|h| {
            let p = pair(host, h);
            !links.held.contains(&p) && !links.cut.contains(&p)
        })
        .cloned()
        .collect();
    for o in &others {
        sim.hold(host, o.as_str());
    }
    sim.crash(host);
    let ip = sim.lookup(host);
    let others_ip: Vec<std::net::IpAddr> = others.iter().map(|o| sim.lookup(o.as_str())).collect();
    loop {
        // The smallest (source, destination) among the crashed host's held messages.
        let mut next: Option<(std::net::SocketAddr, std::net::SocketAddr)> = None;
        sim.links(|it| {
            for link in it {
                let (x, y) = link.pair();
                let peer = if x == ip { y } else { x };
                if (x != ip && y != ip) || !others_ip.contains(&peer) {
                    continue;
                }
                for sent in link {
                    let p = sent.pair();
                    if p.0.ip() == ip && next.is_none_or(|n| p < n) {
                        next = Some(p);
                    }
                }
            }
        });
        let Some(target) = next else {
            break;
        };
        // Deliver the first message with that pair (the earliest sent of its connection).
        sim.links(|it| {
            for link in it {
                for sent in link {
                    if sent.pair() == target {
                        sent.deliver();
                        return;
                    }
                }
            }
        });
        sim.step().map_err(|e| e.to_string())?;
    }
    for o in &others {
        sim.release(host, o.as_str());
    }
    Ok(())
}

/// The live connections per backend address as (proxy connector, proxy pools, backend
/// journal), for the leak check.
pub fn connection_views(
    net: &BTreeMap<String, AddrStats>,
    workers: &[(String, usize)],
    backends: &[(String, usize)],
) -> Vec<(String, usize, usize, usize)> {
    let mut keys: Vec<String> = net.keys().cloned().collect();
    for (a, _) in workers.iter().chain(backends) {
        if !keys.contains(a) {
            keys.push(a.clone());
        }
    }
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let live = net.get(&k).map_or(0, |s| s.live);
            let pooled = workers
                .iter()
                .filter(|(a, _)| *a == k)
                .map(|(_, n)| n)
                .sum();
            let journal = backends
                .iter()
                .filter(|(a, _)| *a == k)
                .map(|(_, n)| n)
                .sum();
            (k, live, pooled, journal)
        })
        .collect()
}

/// Watches the proxies' pools between steps: a pool whose open connections (connecting ones
/// included) grew beyond the cap it had in force before the step broke its cap. A cap lowered
/// later (a learned FCGI_MAX_CONNS) does not make earlier connections a violation. Each
/// instance's pools are held to their own caps.
#[derive(Debug, Default)]
struct PoolWatch {
    /// Per instance, per worker: (open, cap) after the previous step.
    last: Vec<Vec<(usize, usize)>>,
    violations: Vec<String>,
}

impl PoolWatch {
    fn sample(&mut self, proxies: &[ProxySlot], now: Duration) {
        if self.last.len() < proxies.len() {
            self.last.resize(proxies.len(), Vec::new());
        }
        for (instance, (slot, last)) in proxies.iter().zip(&mut self.last).enumerate() {
            let Some(p) = lock(slot).clone() else {
                continue;
            };
            for (i, w) in p.workers().iter().enumerate() {
                let st = w.pool.stats();
                if let Some(&(open, cap)) = last.get(i)
                    && st.open > open
                    && st.open > cap
                {
                    // Instance 0 is named as it always was: one proxy reads as before.
                    let whose = if instance == 0 {
                        w.name.clone()
                    } else {
                        format!("{} in {}", w.name, proxy_host(instance))
                    };
                    self.violations.push(format!(
                        "at {:.3}ms the pool of {whose} went from {open} to {} connections; its \
                         cap was {cap}",
                        now.as_secs_f64() * 1000.0,
                        st.open
                    ));
                }
                if i < last.len() {
                    last[i] = (st.open, st.cap);
                } else {
                    last.push((st.open, st.cap));
                }
            }
        }
    }
}

fn agree(
    net: &NetStats,
    proxies: &[ProxySlot],
    backends: &[(String, String, Incarnations)],
    partitioned: &[String],
) -> bool {
    let net = lock(net).clone();
    // Every instance's pools: the journal's open connections are their sum.
    let workers: Vec<(String, usize)> = proxies
        .iter()
        .flat_map(|slot| {
            lock(slot)
                .as_ref()
                .map(|p| {
                    p.workers()
                        .iter()
                        .map(|w| (w.pool.addr().to_string(), w.pool.stats().open))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect();
    let journals: Vec<(String, usize)> = backends
        .iter()
        .map(|(_, authority, incs)| {
            let open = lock(incs)
                .last()
                .filter(|(_, end, _)| end.is_none())
                .map_or(0, |(_, _, j)| j.with(served_open));
            (authority.clone(), open)
        })
        .collect();
    connection_views(&net, &workers, &journals)
        .iter()
        .all(|(addr, live, pooled, journal)| {
            views_agree(addr, *live, *pooled, *journal, partitioned)
        })
}

/// The proxy's sockets and its pools agree exactly; the backend's journal agrees with them,
/// except on a link a partition cut: turmoil drops the segments for good (no retransmission),
/// so a close (either way) may never arrive, and each side may keep a connection the other
/// closed.
pub fn views_agree(
    addr: &str,
    live: usize,
    pooled: usize,
    journal: usize,
    partitioned: &[String],
) -> bool {
    live == pooled && (journal == pooled || partitioned.iter().any(|a| a == addr))
}

/// The backend addresses whose links a partition fault cuts at some point.
pub fn partitioned_addrs(s: &Scenario) -> Vec<String> {
    s.backends
        .iter()
        .filter(|b| {
            s.faults.iter().any(|f| {
                f.action == FaultAction::Partition
                    && f.between
                        .as_ref()
                        .is_some_and(|(x, y)| *x == b.name || *y == b.name)
            })
        })
        .map(|b| b.authority())
        .collect()
}

/// Connections a backend is serving: open, and taken up by a worker. A connection the backend
/// accepted but holds unread at capacity (`overflow = "hold"`, a kernel backlog) is not counted:
/// the backend notices its close only when a worker gets to it.
pub fn served_open(j: &Snapshot) -> usize {
    j.connections
        .iter()
        .filter(|c| c.is_open() && c.served_ms.is_some())
        .count()
}

impl Run {
    /// The journal's view of open connections per backend at the end (live incarnation only,
    /// see [`served_open`]).
    pub fn journal_open(&self) -> Vec<(String, usize)> {
        self.backends
            .iter()
            .map(|b| {
                let open = b
                    .incarnations
                    .last()
                    .filter(|i| i.ended_at.is_none())
                    .map_or(0, |i| served_open(&i.journal));
                (b.authority.clone(), open)
            })
            .collect()
    }

    /// The pools' open connections per worker address at the end.
    pub fn pool_open(&self) -> Vec<(String, usize)> {
        self.workers
            .iter()
            .map(|w| (w.addr.clone(), w.stats.open))
            .collect()
    }

    /// The trace as one string.
    pub fn trace_text(&self) -> String {
        let mut t = self.trace.join("\n");
        t.push('\n');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A php-fpm-like backend in the simulator: one worker that forks on demand (100 ms) and
    /// exits after 2 requests.
    const MODEL: &str = r#"
id = "sim/php-fpm-model"
description = "model keys reach the simulated backend"
level = "MUST"

[requirement]
quote = "When FCGI_KEEP_CONN is zero the application closes the connection after responding."
source = "FastCGI 1.0"
section = "5.1"

[topology]
[[topology.route]]
path = "/app/"
backend = "app"
reuse = true
max = 1
timeout = "5s"

[[backend]]
name = "app"
capacity = 1
overflow = "hold"
model = "php-fpm"
max_requests = 2
spawn_delay = "100ms"

[[client]]
name = "c"
[[client.request]]
target = "/app/index.php"
repeat = 3
after = "50ms"

[[expect.statuses]]
requests = "*"
counts = { "200" = 3 }
"#;

    #[test]
    fn backend_models_run_in_the_simulator() {
        let s = Scenario::parse(MODEL, "model.toml").unwrap_or_else(|e| panic!("{e}"));
        let run = run(&s, DEFAULT_SEED);
        assert!(run.error.is_none(), "{:?}", run.error);
        let statuses: Vec<Option<u16>> = run
            .requests
            .iter()
            .map(|r| r.as_ref().and_then(|r| r.status))
            .collect();
        assert_eq!(statuses, [Some(200); 3]);
        let j = &run.backends[0].incarnations[0].journal;
        let c1 = &j.connections[0];
        assert_eq!(c1.close_reason.as_deref(), Some("max_requests"), "{j:?}");
        assert_eq!(c1.requests.len(), 2, "{j:?}");
        // A cold worker at the start, and again after the first one exited.
        for c in j.connections.iter().take(2) {
            let waited = c.served_ms.expect("served") - c.opened_ms;
            assert!(waited >= 100, "{c:?}");
        }
        let model_notes = j
            .notes
            .iter()
            .filter(|n| n.kind == fcgi_mock::NoteKind::Model)
            .count();
        assert_eq!(model_notes, 3, "{:?}", j.notes);
        assert_eq!(run.trace, super::run(&s, DEFAULT_SEED).trace);
    }
}
