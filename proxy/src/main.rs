//! `fcgi-proxy`: command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use fcgi_proxy::config::{self, Config, ConfigError, Warning};
use fcgi_proxy::handler::Proxy;
use fcgi_proxy::net::TokioConnector;
use fcgi_proxy::server::{self, FrontSettings};
use socket2::{Domain, Protocol, Socket, Type};

/// Per-request buffers (hyper's, the params, the response head) come and go on every request;
/// mimalloc's thread-local free lists serve them for about a tenth less CPU per request than
/// glibc malloc, which also trims and regrows its heap under this pattern.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HELP: &str = "\
fcgi-proxy: HTTP/1.1 to FastCGI reverse proxy with the semantics of Apache httpd's mod_proxy_fcgi

USAGE:
    fcgi-proxy [run] (--config FILE.toml | --apache httpd.conf) [--listen ADDR]...
    fcgi-proxy check-config (--config FILE.toml | --apache httpd.conf)

OPTIONS:
    --config FILE    configuration in TOML (see README.md for a complete example)
    --apache FILE    read the mod_proxy subset of an Apache httpd.conf: Listen, ProxyPass,
                     ProxyPassMatch, <Location>, SetEnvIf, ProxyFCGIBackendType,
                     ProxyFCGISetEnvIf, CGIPassAuth, <Proxy balancer://...>, BalancerMember,
                     ProxySet. Other directives are listed in one warning and ignored.
    --listen ADDR    listen here instead of the configured addresses (repeatable; port 0 picks
                     a free port)
    --admin ADDR     serve /metrics (Prometheus) and /status (JSON) here (off by default;
                     `admin_listen` in TOML)
    -h, --help       this text
    -V, --version    version

On start it prints `listening on ADDR` on stdout for each listener (`admin on ADDR` for the
admin listener). SIGTERM or SIGINT stops
accepting and lets in-flight requests finish. Logs go to stderr; RUST_LOG sets the filter
(default `info`; one line per request under target `access`).

check-config prints the effective routes, reuse settings, connection caps and timeouts, and
exits non-zero with `file:line: message` on an error.
";

enum Source {
    Toml(PathBuf),
    Apache(PathBuf),
}

struct Args {
    check: bool,
    source: Source,
    listen: Vec<String>,
    admin: Option<String>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = std::env::args().skip(1).peekable();
    let mut check = false;
    let mut source = None;
    let mut listen = Vec::new();
    let mut admin = None;
    match args.peek().map(String::as_str) {
        Some("check-config") => {
            check = true;
            args.next();
        }
        Some("run") => {
            args.next();
        }
        _ => {}
    }
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("fcgi-proxy {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--config" => source = Some(Source::Toml(value("--config")?.into())),
            "--apache" => source = Some(Source::Apache(value("--apache")?.into())),
            "--listen" => listen.push(value("--listen")?),
            "--admin" => admin = Some(value("--admin")?),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let source = source.ok_or("one of --config or --apache is required (see --help)")?;
    Ok(Some(Args {
        check,
        source,
        listen,
        admin,
    }))
}

fn load(source: &Source) -> Result<(Config, Vec<Warning>), ConfigError> {
    let (path, toml) = match source {
        Source::Toml(p) => (p, true),
        Source::Apache(p) => (p, false),
    };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("{name}: cannot read: {e}")))?;
    let (config, mut warnings) = if toml {
        (Config::from_toml_str(&text, &name)?, Vec::new())
    } else {
        config::apache::parse(&text, &name)?
    };
    warnings.extend(config.validate()?);
    Ok((config, warnings))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fcgi-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    // Colour only for a person at a terminal: a file, a pipe or the journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (mut config, warnings) = match load(&args.source) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("fcgi-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &warnings {
        eprintln!("fcgi-proxy: {w}");
    }
    if args.check {
        print!("{}", config.describe());
        return ExitCode::SUCCESS;
    }
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    if args.admin.is_some() {
        config.admin_listen = args.admin.clone();
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fcgi-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything is bound before any thread starts, so a bad address fails at once and port 0 is
/// chosen once (by the first thread's socket). Thread 0 is this one; it also serves the admin
/// listener and waits for the stop signal.
fn run(config: Config) -> Result<(), String> {
    let threads = config.worker_threads();
    let addrs = config.listen_addrs().map_err(|e| e.to_string())?;
    if addrs.is_empty() {
        return Err("no listen address configured".into());
    }
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..threads).map(|_| Vec::new()).collect();
    for addr in addrs {
        let mut addr = addr;
        for (t, mine) in sockets.iter_mut().enumerate() {
            let l =
                listen(addr, threads > 1).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            if t == 0 {
                addr = l.local_addr().map_err(|e| e.to_string())?;
                println!("listening on {addr}");
            }
            mine.push(l);
        }
    }
    let admin = match &config.admin_listen {
        None => None,
        Some(a) => {
            let addr = config::parse_listen(a).map_err(|e| format!("admin address {a:?}: {e}"))?;
            let l = listen(addr, false).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            println!("admin on {}", l.local_addr().map_err(|e| e.to_string())?);
            Some(l)
        }
    };
    let front = FrontSettings::from_config(&config);
    let proxy = Arc::new(Proxy::new(Arc::new(config), TokioConnector).map_err(|e| e.to_string())?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sockets = sockets.into_iter();
    let mine = sockets.next().unwrap_or_default();
    let mut others = Vec::new();
    for (i, listeners) in sockets.enumerate() {
        let slot = i + 1;
        let (proxy, front, stop) = (proxy.clone(), front.clone(), stop_rx.clone());
        let t = std::thread::Builder::new()
            .name(format!("fcgi-proxy-{slot}"))
            .spawn(move || serve_thread(slot, listeners, proxy, front, stop, None))
            .map_err(|e| format!("cannot start a serving thread: {e}"))?;
        others.push(t);
    }
    let r = serve_thread(0, mine, proxy, front, stop_rx, Some((admin, stop_tx)));
    for t in others {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("fcgi-proxy: {e}"),
            Err(_) => eprintln!("fcgi-proxy: a serving thread panicked"),
        }
    }
    r
}

/// A listening socket; SO_REUSEPORT when several threads listen on the same address (the kernel
/// then spreads new connections over them).
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// One serving thread: a current-thread runtime serving its own sockets. A connection, its
/// requests and their backend exchanges all stay on this thread. The thread given `control`
/// also serves the admin listener and, on SIGTERM or SIGINT, tells every thread to stop.
fn serve_thread(
    slot: usize,
    listeners: Vec<std::net::TcpListener>,
    proxy: Arc<Proxy<TokioConnector>>,
    front: FrontSettings,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    control: Option<(
        Option<std::net::TcpListener>,
        tokio::sync::watch::Sender<bool>,
    )>,
) -> Result<(), String> {
    fcgi_proxy::pool::set_thread_slot(slot);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let served = rt.block_on(async move {
        tokio::spawn(fcgi_proxy::access_log::install());
        let mut servers = Vec::new();
        for l in listeners {
            let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
            servers.push(tokio::spawn(server::serve(
                l,
                proxy.clone(),
                front.clone(),
                stop_rx.clone(),
            )));
        }
        if let Some((admin, stop_tx)) = control {
            if let Some(l) = admin {
                let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
                servers.push(tokio::spawn(server::serve_admin(
                    l,
                    proxy.clone(),
                    stop_rx.clone(),
                )));
            }
            wait_for_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_tx.send(true);
        }
        for s in servers {
            let _ = s.await;
        }
        Ok(())
    });
    fcgi_proxy::access_log::flush();
    served
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    biased;
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
