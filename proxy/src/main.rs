//! `fcgi-proxy`: command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
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

const AFTER_HELP: &str = "\
--apache reads the file as Apache does (Include/IncludeOptional, Define and ${VAR}, Debian's
envvars beside it, <IfModule> by the LoadModule lines read, <IfDefine>), then Listen, ProxyPass,
ProxyPassMatch, <Location>, SetEnvIf, ProxyFCGIBackendType, ProxyFCGISetEnvIf, CGIPassAuth,
<Proxy balancer://...>, BalancerMember, ProxySet, <VirtualHost> (by ServerName/ServerAlias),
DocumentRoot, Alias, AliasMatch, DirectoryIndex, <Directory>, <Files>, <FilesMatch> and
SetHandler \"proxy:...\" (handler mode), Require all granted|denied and Require local; other
access control is refused; other directives are listed in one warning and ignored. --admin serves /metrics (Prometheus) and
/status (JSON).

On start it prints `listening on ADDR` on stdout for each listener (`admin on ADDR` for the
admin listener). SIGTERM or SIGINT stops accepting and lets in-flight requests finish. Logs go
to stderr; RUST_LOG sets the filter (default `info`; one line per request under target
`access`).

check-config prints the effective routes, reuse settings, connection caps and timeouts, and
exits non-zero with `file:line: message` on an error.";

/// HTTP/1.1 to FastCGI reverse proxy with the semantics of Apache httpd's mod_proxy_fcgi
#[derive(Debug, Parser)]
#[command(
    name = "fcgi-proxy",
    version,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Mode>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Serve (the default when no command is given)
    Run(RunArgs),
    /// Print the effective configuration and exit
    CheckConfig(CheckArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    defines: DefineArgs,
}

/// Where the configuration comes from: exactly one of these.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
struct SourceArgs {
    /// Configuration in TOML (see README.md for a complete example)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// An Apache httpd.conf (apache2.conf) with what it includes (directives below)
    #[arg(long, value_name = "FILE")]
    apache: Option<PathBuf>,
}

/// Definitions for reading an Apache configuration.
#[derive(Debug, Clone, Default, clap::Args)]
struct DefineArgs {
    /// Define NAME for <IfDefine> and ${NAME} (as apache2 -D); --apache only
    #[arg(short = 'D', long = "define", value_name = "NAME[=VALUE]")]
    define: Vec<String>,
}

/// What changes how the configuration reads.
#[derive(Debug, Clone, Default)]
struct ReadArgs {
    define: Vec<String>,
    listen: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    defines: DefineArgs,
    /// Listen here, not on the configured addresses (repeatable; port 0: any); applied before
    /// the configuration is checked. <VirtualHost> addresses then match any port
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// Serve /metrics and /status here (off by default; `admin_listen` in TOML)
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
}

enum Source {
    Toml(PathBuf),
    Apache(PathBuf),
}

impl From<SourceArgs> for Source {
    fn from(a: SourceArgs) -> Source {
        match (a.config, a.apache) {
            (Some(p), _) => Source::Toml(p),
            (None, Some(p)) => Source::Apache(p),
            // The group requires one of them.
            (None, None) => Source::Toml(PathBuf::new()),
        }
    }
}

struct Args {
    check: bool,
    source: Source,
    read: ReadArgs,
    admin: Option<String>,
}

impl From<Cli> for Args {
    fn from(cli: Cli) -> Args {
        let (check, run) = match cli.command {
            None => (false, cli.run),
            Some(Mode::Run(run)) => (false, run),
            Some(Mode::CheckConfig(c)) => (
                true,
                RunArgs {
                    source: c.source,
                    defines: c.defines,
                    listen: Vec::new(),
                    admin: None,
                },
            ),
        };
        Args {
            check,
            source: run.source.into(),
            read: ReadArgs {
                define: run.defines.define,
                listen: run.listen,
            },
            admin: run.admin,
        }
    }
}

/// Reads and validates the configuration, with `--define` applied while reading and
/// `--listen` before validation (a site file without Listen can then be served).
fn load(source: &Source, read: &ReadArgs) -> Result<(Config, Vec<Warning>), ConfigError> {
    let (path, toml) = match source {
        Source::Toml(p) => (p, true),
        Source::Apache(p) => (p, false),
    };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("{name}: cannot read: {e}")))?;
    let (mut config, mut warnings) = if toml {
        if !read.define.is_empty() {
            return Err(ConfigError::new(
                "--define applies to --apache configurations only",
            ));
        }
        (config::toml::parse_unvalidated(&text, &name)?, Vec::new())
    } else {
        let defines: Vec<(String, String)> = read
            .define
            .iter()
            .map(|d| match d.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (d.clone(), String::new()),
            })
            .collect();
        config::apache::parse_with(&text, &name, &defines)?
    };
    if !read.listen.is_empty() {
        config.override_listen(read.listen.clone());
    }
    warnings.extend(config.validate()?);
    Ok((config, warnings))
}

fn main() -> ExitCode {
    let args = Args::from(Cli::parse());
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
    let (mut config, warnings) = match load(&args.source, &args.read) {
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
    let listeners = config.front_listeners().map_err(|e| e.to_string())?;
    if listeners.is_empty() {
        return Err("no listen address configured".into());
    }
    let base = FrontSettings::from_config(&config);
    let mut sockets: Vec<Vec<(std::net::TcpListener, FrontSettings)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for fl in listeners {
        // Certificates are read before anything listens: a bad file stops the start.
        let front = FrontSettings {
            tls: match &fl.tls {
                Some(plan) => Some(
                    fcgi_proxy::tls::Acceptor::new(plan, fl.h2, fl.http1)
                        .map_err(|e| format!("listener {}: {e}", fl.spec))?,
                ),
                None => None,
            },
            h2: fl.h2,
            ..base.clone()
        };
        let mut addr = fl.addr;
        for (t, mine) in sockets.iter_mut().enumerate() {
            let l =
                listen(addr, threads > 1).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            if t == 0 {
                addr = l.local_addr().map_err(|e| e.to_string())?;
                let what = match (&front.tls, front.h2) {
                    (Some(_), true) => " (TLS, h2 and http/1.1)",
                    (Some(_), false) => " (TLS)",
                    (None, true) => " (h2c and http/1.1)",
                    (None, false) => "",
                };
                println!("listening on {addr}{what}");
            }
            mine.push((l, front.clone()));
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
    // One descriptor per client connection: take what the hard limit allows.
    fcgi_proxy::admission::raise_open_file_limit();
    let proxy = Arc::new(Proxy::new(Arc::new(config), TokioConnector).map_err(|e| e.to_string())?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sockets = sockets.into_iter();
    let mine = sockets.next().unwrap_or_default();
    let mut others = Vec::new();
    for (i, listeners) in sockets.enumerate() {
        let slot = i + 1;
        let (proxy, stop) = (proxy.clone(), stop_rx.clone());
        let t = std::thread::Builder::new()
            .name(format!("fcgi-proxy-{slot}"))
            .spawn(move || serve_thread(slot, listeners, proxy, stop, None))
            .map_err(|e| format!("cannot start a serving thread: {e}"))?;
        others.push(t);
    }
    let r = serve_thread(0, mine, proxy, stop_rx, Some((admin, stop_tx)));
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
    listeners: Vec<(std::net::TcpListener, FrontSettings)>,
    proxy: Arc<Proxy<TokioConnector>>,
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
        for (l, front) in listeners {
            let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
            servers.push(tokio::spawn(server::serve(
                l,
                proxy.clone(),
                front,
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
