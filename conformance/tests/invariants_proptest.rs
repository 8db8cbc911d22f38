//! Random topologies, traffic and faults: whatever the shape, the invariants hold on every run.
//! Every client request is resolved exactly once within its timeout, no connection leaks (the
//! proxy's sockets, its pools and the backends' journals agree after settling), no response
//! reaches the wrong client, and no backend gets more connections at once than its cap.

use std::collections::BTreeMap;
use std::time::Duration;

use conformance::check;
use conformance::scenario::{
    Backend, Balancer, Client, ClientConnection, Dur, Expect, Fault, FaultAction, LbMethod, Level,
    Member, RequestSpec, Requirement, Route, Scenario, SimSettings, Topology, Transport,
};
use conformance::sim;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Behaviour {
    Echo,
    Slow(u64),
    HangOnRequest(u64),
    CloseOnRequest(u64),
    CutOnRequest(u64),
}

#[derive(Debug, Clone)]
struct BackendGen {
    capacity: Option<u32>,
    hold: bool,
    idle_ms: Option<u64>,
    announce: bool,
    behaviour: Behaviour,
}

#[derive(Debug, Clone)]
struct WorkerGen {
    reuse: bool,
    max: Option<u32>,
    acquire_ms: Option<u64>,
    timeout_ms: u64,
    connect_ms: u64,
}

#[derive(Debug, Clone)]
struct ClientGen {
    start_ms: u64,
    per_request: bool,
    /// (to the balancer, pause before sending in ms)
    requests: Vec<(bool, u64)>,
}

#[derive(Debug, Clone)]
enum FaultGen {
    CrashRestart { backend: usize, at: u64, down: u64 },
    Hold { backend: usize, at: u64, held: u64 },
    Partition { backend: usize, at: u64, cut: u64 },
    Latency { backend: usize, at: u64, ms: u64 },
}

#[derive(Debug, Clone)]
struct Shape {
    backends: Vec<BackendGen>,
    route: WorkerGen,
    balancer: WorkerGen,
    bybusyness: bool,
    factors: Vec<u32>,
    retry_ms: u64,
    clients: Vec<ClientGen>,
    faults: Vec<FaultGen>,
    seed: u64,
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        3 => Just(Behaviour::Echo),
        2 => (10u64..300).prop_map(Behaviour::Slow),
        1 => (1u64..6).prop_map(Behaviour::HangOnRequest),
        1 => (1u64..6).prop_map(Behaviour::CloseOnRequest),
        1 => (1u64..6).prop_map(Behaviour::CutOnRequest),
    ]
}

fn backend() -> impl Strategy<Value = BackendGen> {
    (
        proptest::option::of(1u32..=3),
        any::<bool>(),
        proptest::option::of(50u64..400),
        proptest::bool::weighted(0.3),
        behaviour(),
    )
        .prop_map(
            |(capacity, hold, idle_ms, announce, behaviour)| BackendGen {
                capacity,
                hold,
                idle_ms,
                announce,
                behaviour,
            },
        )
}

fn worker() -> impl Strategy<Value = WorkerGen> {
    (
        any::<bool>(),
        proptest::option::of(1u32..=3),
        proptest::option::of(50u64..500),
        200u64..1000,
        50u64..500,
    )
        .prop_map(
            |(reuse, max, acquire_ms, timeout_ms, connect_ms)| WorkerGen {
                reuse,
                max,
                acquire_ms,
                timeout_ms,
                connect_ms,
            },
        )
}

fn client() -> impl Strategy<Value = ClientGen> {
    (
        0u64..300,
        any::<bool>(),
        proptest::collection::vec((any::<bool>(), 0u64..150), 1..=4),
    )
        .prop_map(|(start_ms, per_request, requests)| ClientGen {
            start_ms,
            per_request,
            requests,
        })
}

fn fault(backends: usize) -> impl Strategy<Value = FaultGen> {
    let b = 0..backends;
    prop_oneof![
        (b.clone(), 0u64..800, 50u64..600).prop_map(|(backend, at, down)| FaultGen::CrashRestart {
            backend,
            at,
            down
        }),
        (b.clone(), 0u64..800, 10u64..700).prop_map(|(backend, at, held)| FaultGen::Hold {
            backend,
            at,
            held
        }),
        (b.clone(), 0u64..800, 10u64..700).prop_map(|(backend, at, cut)| FaultGen::Partition {
            backend,
            at,
            cut
        }),
        (b, 0u64..800, 1u64..150).prop_map(|(backend, at, ms)| FaultGen::Latency {
            backend,
            at,
            ms
        }),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    proptest::collection::vec(backend(), 1..=3).prop_flat_map(|backends| {
        let n = backends.len();
        (
            Just(backends),
            worker(),
            worker(),
            any::<bool>(),
            proptest::collection::vec(1u32..=4, n),
            100u64..1000,
            proptest::collection::vec(client(), 1..=4),
            proptest::collection::vec(fault(n), 0..=3),
            any::<u64>(),
        )
            .prop_map(
                |(
                    backends,
                    route,
                    balancer,
                    bybusyness,
                    factors,
                    retry_ms,
                    clients,
                    faults,
                    seed,
                )| {
                    Shape {
                        backends,
                        route,
                        balancer,
                        bybusyness,
                        factors,
                        retry_ms,
                        clients,
                        faults,
                        seed,
                    }
                },
            )
    })
}

fn ms(n: u64) -> Dur {
    Dur(Duration::from_millis(n))
}

fn script(b: &BackendGen) -> toml::Table {
    let rule = match b.behaviour {
        Behaviour::Echo => String::new(),
        Behaviour::Slow(d) => {
            format!("[default]\nstatus = 200\nbody = [{{ data = \"slow\", delay_ms = {d} }}]\n")
        }
        Behaviour::HangOnRequest(n) => {
            format!("[[rule]]\nmatch = {{ request = {n} }}\naction = \"never_answer\"\n")
        }
        Behaviour::CloseOnRequest(n) => {
            format!("[[rule]]\nmatch = {{ request = {n} }}\naction = \"close\"\n")
        }
        Behaviour::CutOnRequest(n) => format!(
            "[[rule]]\nmatch = {{ request = {n} }}\nbody = [{{ data = \"0123456789\" }}]\n\
             cut = {{ after_body_bytes = 4, then = \"close\" }}\n"
        ),
    };
    toml::from_str(&rule).expect("generated script")
}

fn route(path: &str, w: &WorkerGen) -> Route {
    Route {
        path: Some(path.to_string()),
        reuse: Some(w.reuse),
        max: w.max,
        acquire: w.acquire_ms.map(ms),
        timeout: Some(ms(w.timeout_ms)),
        connect_timeout: Some(ms(w.connect_ms)),
        ..Route::default()
    }
}

fn scenario(sh: &Shape) -> Scenario {
    let names: Vec<String> = (0..sh.backends.len()).map(|i| format!("b{i}")).collect();
    let backends: Vec<Backend> = sh
        .backends
        .iter()
        .zip(&names)
        .map(|(b, name)| Backend {
            name: name.clone(),
            port: 9000,
            capacity: b.capacity,
            overflow: b
                .capacity
                .map(|_| if b.hold { "hold" } else { "backlog" }.to_string()),
            model: None,
            max_requests: None,
            spawn_delay: None,
            idle_timeout: b.idle_ms.map(ms),
            values: if b.announce {
                BTreeMap::from([(
                    "FCGI_MAX_CONNS".to_string(),
                    b.capacity.unwrap_or(3).to_string(),
                )])
            } else {
                BTreeMap::new()
            },
            script: Some(script(b)),
        })
        .collect();
    let mut routes = vec![Route {
        backend: Some(names[0].clone()),
        ..route("/app/", &sh.route)
    }];
    let mut balancers = Vec::new();
    if names.len() > 1 {
        routes.push(Route {
            balancer: Some("pool".into()),
            ..route("/pool/", &sh.balancer)
        });
        let w = &sh.balancer;
        balancers.push(Balancer {
            name: "pool".into(),
            method: if sh.bybusyness {
                LbMethod::Bybusyness
            } else {
                LbMethod::Byrequests
            },
            max_attempts: None,
            sticky_session: None,
            nofailover: None,
            force_recovery: None,
            wait: None,
            members: names
                .iter()
                .zip(&sh.factors)
                .map(|(n, f)| Member {
                    backend: n.clone(),
                    loadfactor: *f,
                    lbset: 0,
                    status: String::new(),
                    route: None,
                    redirect: None,
                    reuse: None,
                    max: None,
                    acquire: None,
                    timeout: None,
                    connect_timeout: None,
                    ttl: None,
                    retry: None,
                })
                .collect(),
            reuse: Some(w.reuse),
            max: w.max,
            acquire: w.acquire_ms.map(ms),
            timeout: Some(ms(w.timeout_ms)),
            connect_timeout: Some(ms(w.connect_ms)),
            ttl: None,
            retry: Some(ms(sh.retry_ms)),
        });
        routes[1].reuse = None;
    }
    let clients = sh
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| Client {
            name: format!("c{i}"),
            start: ms(c.start_ms),
            connection: if c.per_request {
                ClientConnection::PerRequest
            } else {
                ClientConnection::KeepAlive
            },
            timeout: Dur(Duration::from_secs(30)),
            proxy: 0,
            transport: Transport::Http1,
            requests: c
                .requests
                .iter()
                .map(|(pool, after)| RequestSpec {
                    label: None,
                    at: None,
                    after: Some(ms(*after)),
                    method: "GET".into(),
                    target: if *pool && names.len() > 1 {
                        "/pool/x.php".into()
                    } else {
                        "/app/x.php".into()
                    },
                    headers: Vec::new(),
                    body: None,
                    chunked: None,
                    body_size: None,
                    repeat: 1,
                    raw: None,
                    half_close: false,
                    trickle: None,
                    quiet: None,
                    fields: None,
                    reset: false,
                    rapid_reset: None,
                })
                .collect(),
        })
        .collect();
    let mut faults = Vec::new();
    let link = |b: usize, at: u64, action: FaultAction| Fault {
        at: ms(at),
        action,
        between: Some(("proxy".into(), names[b].clone())),
        host: None,
        latency: None,
    };
    for f in &sh.faults {
        match *f {
            FaultGen::CrashRestart { backend, at, down } => {
                for (t, action) in [(at, FaultAction::Crash), (at + down, FaultAction::Restart)] {
                    faults.push(Fault {
                        at: ms(t),
                        action,
                        between: None,
                        host: Some(names[backend].clone()),
                        latency: None,
                    });
                }
            }
            FaultGen::Hold { backend, at, held } => {
                faults.push(link(backend, at, FaultAction::Hold));
                faults.push(link(backend, at + held, FaultAction::Release));
            }
            FaultGen::Partition { backend, at, cut } => {
                faults.push(link(backend, at, FaultAction::Partition));
                faults.push(link(backend, at + cut, FaultAction::Repair));
            }
            FaultGen::Latency { backend, at, ms: l } => faults.push(Fault {
                latency: Some(ms(l)),
                ..link(backend, at, FaultAction::Latency)
            }),
        }
    }
    let s = Scenario {
        id: "generated/random".into(),
        description: "generated".into(),
        level: Level::Must,
        requirement: Requirement {
            quote: "every client request resolved exactly once within its timeout, no \
                    connection leaked, no response delivered to the wrong client, no member \
                    above its cap"
                .into(),
            source: "scenarios/README.md".into(),
            section: "A scenario, top to bottom".into(),
            url: None,
        },
        topology: Topology {
            document_root: None,
            header_timeout: None,
            proxies: 1,
            routes,
            balancers,
        },
        backends,
        clients,
        faults,
        expect: Expect::default(),
        sim: SimSettings {
            duration: Dur(Duration::from_secs(120)),
            ..SimSettings::default()
        },
        mutants: Vec::new(),
    };
    s.validate()
        .unwrap_or_else(|e| panic!("generated scenario: {e}\n{sh:#?}"));
    s
}

/// The generator's seed: fixed, so every run checks the same cases; `PROPTEST_SEED=N` for
/// another set.
fn seed() -> u64 {
    std::env::var("PROPTEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d)
}

/// 48 cases by default; `PROPTEST_CASES=N` for a longer hunt.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        // Reproducible: the same cases on every run and machine.
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed()),
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold(sh in shape()) {
        let s = scenario(&sh);
        let run = sim::run(&s, sh.seed);
        prop_assert!(run.error.is_none(), "simulation failed: {:?}", run.error);
        let violations = check::invariants(&s, &run);
        prop_assert!(
            violations.is_empty(),
            "invariants broken (seed {}):\n{}\n\ntrace:\n{}",
            sh.seed,
            violations.join("\n"),
            run.trace_text()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases() / 4,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed() + 1),
        ..ProptestConfig::default()
    })]

    /// Random shapes are deterministic too: the same seed gives the same trace.
    #[test]
    fn same_seed_same_trace(sh in shape()) {
        let s = scenario(&sh);
        let a = sim::run(&s, sh.seed);
        let b = sim::run(&s, sh.seed);
        let first = a.trace.iter().zip(&b.trace).position(|(x, y)| x != y);
        prop_assert!(
            a.trace == b.trace,
            "seed {}: traces differ at line {first:?}:\n{}\n---\n{}",
            sh.seed,
            first.map_or(String::new(), |i| a.trace[i.saturating_sub(5)..(i + 3).min(a.trace.len())].join("\n")),
            first.map_or(String::new(), |i| b.trace[i.saturating_sub(5)..(i + 3).min(b.trace.len())].join("\n")),
        );
    }
}
