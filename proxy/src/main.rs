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
use fcgi_proxy::spread;
use socket2::{Domain, Protocol, Socket, Type};

/// Per-request buffers (hyper's, the params, the response head) come and go on every request;
/// mimalloc's thread-local free lists serve them for about a tenth less CPU per request than
/// glibc malloc, which also trims and regrows its heap under this pattern. mimalloc 2 rather than
/// 3 (the `v2` feature): Rust asks every allocation with its alignment, and mimalloc 3 serves an
/// aligned request over 1 KiB (a boxed future, a buffer) by over-allocating on a slower path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AFTER_HELP: &str = "\
--apache reads the file as Apache does (Include/IncludeOptional, Define and ${VAR}, Debian's
envvars beside it, <IfModule> by the LoadModule lines read, <IfDefine>), then Listen, ProxyPass,
ProxyPassMatch, <Location>, SetEnvIf, ProxyFCGIBackendType, ProxyFCGISetEnvIf, CGIPassAuth,
SSLEngine, SSLCertificateFile, SSLCertificateKeyFile, SSLCertificateChainFile, SSLProtocol,
Protocols (h2, h2c, http/1.1), LogFormat, CustomLog (the first, to a file),
<Proxy balancer://...>, BalancerMember, ProxySet, <VirtualHost> (by ServerName/ServerAlias),
DocumentRoot, Alias, AliasMatch, DirectoryIndex, <Directory>, <Files>, <FilesMatch> and
SetHandler \"proxy:...\" (handler mode), Require all granted|denied and Require local; other
access control is refused; other directives are listed in one warning and ignored. --admin serves /metrics (Prometheus) and
/status (JSON).

On start it prints `listening on ADDR` on stdout for each listener (`admin on ADDR` for the
admin listener). SIGTERM or SIGINT stops accepting and lets in-flight requests finish (for
timeouts.shutdown_grace). SIGHUP, or `fcgi-proxy reload --pid-file FILE`, reloads the
configuration gracefully (a bad one is refused and logged); SIGUSR1 reopens the access and error log
files (logrotate). Under systemd it reports readiness
over NOTIFY_SOCKET and takes listening sockets passed by socket activation (LISTEN_FDS). Messages
go to stderr, or to [error_log] (Apache ErrorLog, LogLevel); RUST_LOG, when set, is the filter
(default `info`; one line per request on stderr under target `access`).

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
    /// Tell the running proxy (by its --pid-file) to reload its configuration (SIGHUP)
    Reload(ReloadArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct ReloadArgs {
    /// The pid file the running proxy was started with
    #[arg(long, value_name = "FILE")]
    pid_file: PathBuf,
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
    /// Where a site's filesystem lookups run: auto (on the serving threads while every mounted
    /// filesystem is local), pool (always off them) or serving-thread (always on them);
    /// `filesystem_lookups` in TOML
    #[arg(long, value_name = "auto|pool|serving-thread")]
    filesystem_lookups: Option<fcgi_proxy::mounts::LookupMode>,
    /// Write the process id here once listening (removed at exit); `fcgi-proxy reload` reads it
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
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
    reload: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    source: Source,
    read: ReadArgs,
    overrides: Overrides,
}

/// Settings given on the command line, over the configuration's (at start and each reload).
#[derive(Debug, Clone, Default)]
struct Overrides {
    admin: Option<String>,
    filesystem_lookups: Option<fcgi_proxy::mounts::LookupMode>,
}

impl Overrides {
    fn apply(&self, config: &mut Config) {
        if self.admin.is_some() {
            config.admin_listen = self.admin.clone();
        }
        if let Some(m) = self.filesystem_lookups {
            config.filesystem_lookups = m;
        }
    }
}

impl From<Cli> for Args {
    fn from(cli: Cli) -> Args {
        let mut reload = None;
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
                    filesystem_lookups: None,
                    pid_file: None,
                },
            ),
            Some(Mode::Reload(r)) => {
                reload = Some(r.pid_file);
                (false, cli.run)
            }
        };
        Args {
            check,
            reload,
            pid_file: run.pid_file,
            source: run.source.into(),
            read: ReadArgs {
                define: run.defines.define,
                listen: run.listen,
            },
            overrides: Overrides {
                admin: run.admin,
                filesystem_lookups: run.filesystem_lookups,
            },
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
    if let Some(pid_file) = &args.reload {
        return match signal_reload(pid_file) {
            Ok(pid) => {
                println!("fcgi-proxy (pid {pid}) told to reload");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fcgi-proxy: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
        // The certificates too: what a start or a reload would read.
        let checked = config
            .front_listeners()
            .map_err(|e| e.to_string())
            .and_then(|l| fronts_for(&config, &l))
            .and_then(|_| match &config.access_log {
                Some(a) => fcgi_proxy::access_log::check(a),
                None => Ok(()),
            })
            .and_then(|()| fcgi_proxy::error_log::check(config.error_log.as_ref()));
        if let Err(e) = checked {
            eprintln!("fcgi-proxy: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    // The error log as configured (colour only for a person at a terminal).
    if let Err(e) = fcgi_proxy::error_log::init(config.error_log.as_ref()) {
        eprintln!("fcgi-proxy: {e}");
        return ExitCode::FAILURE;
    }
    args.overrides.apply(&mut config);
    let reloader = Reloader {
        source: args.source.clone(),
        read: args.read.clone(),
        overrides: args.overrides.clone(),
    };
    match run(config, reloader, args.pid_file.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fcgi-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `fcgi-proxy reload`: SIGHUP to the process named by the pid file.
fn signal_reload(pid_file: &std::path::Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("{}: cannot read: {e}", pid_file.display()))?;
    let pid: i32 = text.trim().parse().map_err(|_| {
        format!(
            "{}: not a process id: {:?}",
            pid_file.display(),
            text.trim()
        )
    })?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| format!("cannot signal process {pid}: {e}"))?;
    Ok(pid)
}

/// How to read the configuration again at SIGHUP.
struct Reloader {
    source: Source,
    read: ReadArgs,
    overrides: Overrides,
}

/// The front settings of each listener: certificates are read here, so a bad file stops the
/// start, or refuses a reload.
fn fronts_for(
    config: &Config,
    listeners: &[fcgi_proxy::config::tls::FrontListener],
) -> Result<Vec<FrontSettings>, String> {
    let base = FrontSettings::from_config(config);
    listeners
        .iter()
        .map(|fl| {
            Ok(FrontSettings {
                tls: match &fl.tls {
                    Some(plan) => Some(
                        fcgi_proxy::tls::Acceptor::new(plan, fl.h2, fl.http1)
                            .map_err(|e| format!("listener {}: {e}", fl.spec))?,
                    ),
                    None => None,
                },
                h2: fl.h2,
                ..base.clone()
            })
        })
        .collect()
}

type Gen = server::Generation<TokioConnector>;

/// A serving thread's end of the channel of listeners a reload adds (configured address,
/// socket).
type Added = tokio::sync::mpsc::UnboundedReceiver<(SocketAddr, spread::Share)>;

/// The control side of the serving threads: the current generation and how to replace it.
struct Control {
    gens: tokio::sync::watch::Sender<Arc<Gen>>,
    /// Stops the current generation's connections.
    gen_stop: tokio::sync::watch::Sender<bool>,
    /// The configured listen addresses.
    addrs: Vec<SocketAddr>,
    /// Each serving thread's channel for listeners a reload adds.
    adders: Vec<tokio::sync::mpsc::UnboundedSender<(SocketAddr, spread::Share)>>,
    reloader: Reloader,
}

impl Control {
    /// Reads and checks the configuration again; on success new connections get it and the
    /// old generation's connections finish what they are doing and close. On failure the
    /// reason is logged and nothing changes.
    fn reload(&mut self) {
        fcgi_proxy::systemd::notify("RELOADING=1");
        match self.next_generation() {
            Ok((generation, stop, log, bound)) => {
                fcgi_proxy::access_log::activate(log);
                if let Err(e) =
                    fcgi_proxy::error_log::apply(generation.proxy.config().error_log.as_ref())
                {
                    tracing::error!("error log: {e}");
                }
                self.addrs = generation.fronts.iter().map(|(a, _)| *a).collect();
                let _ = self.gens.send(Arc::new(generation));
                // New listeners after the generation that has them.
                for (key, sockets) in bound {
                    for (adder, l) in self.adders.iter().zip(sockets) {
                        let _ = adder.send((key, l));
                    }
                }
                let old = std::mem::replace(&mut self.gen_stop, stop);
                let _ = old.send(true);
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                tracing::error!("reload refused, still serving the previous configuration: {e}")
            }
        }
        fcgi_proxy::systemd::notify("READY=1");
    }

    #[allow(clippy::type_complexity)]
    fn next_generation(
        &self,
    ) -> Result<
        (
            Gen,
            tokio::sync::watch::Sender<bool>,
            Option<fcgi_proxy::access_log::Active>,
            Vec<(SocketAddr, Vec<spread::Share>)>,
        ),
        String,
    > {
        let (mut config, warnings) =
            load(&self.reloader.source, &self.reloader.read).map_err(|e| e.to_string())?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        self.reloader.overrides.apply(&mut config);
        let listeners = config.front_listeners().map_err(|e| e.to_string())?;
        if listeners.is_empty() {
            return Err("no listen address configured".into());
        }
        let fronts = fronts_for(&config, &listeners)?;
        // Addresses not listened on yet: bound now (every serving thread its socket), so that a
        // reload that cannot listen changes nothing.
        let mut bound = Vec::new();
        for fl in &listeners {
            if self.addrs.contains(&fl.addr) {
                continue;
            }
            let (addr, sockets) = listen_everywhere(fl.addr, self.adders.len())?;
            tracing::info!("listening on {addr}");
            bound.push((fl.addr, spread::share(sockets)));
        }
        let fronts = listeners.iter().map(|l| l.addr).zip(fronts).collect();
        let log = access_log_for(&config)?;
        fcgi_proxy::error_log::check(config.error_log.as_ref())?;
        let mut proxy = Proxy::new(Arc::new(config), TokioConnector).map_err(|e| e.to_string())?;
        proxy.carry_from(&self.gens.borrow().proxy);
        let proxy = Arc::new(proxy);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        Ok((
            server::Generation {
                proxy,
                fronts,
                stop: stop_rx,
            },
            stop_tx,
            log,
            bound,
        ))
    }
}

/// The Apache-style access log the configuration asks for (its file opened), if any.
fn access_log_for(config: &Config) -> Result<Option<fcgi_proxy::access_log::Active>, String> {
    match &config.access_log {
        Some(a) if a.json || a.format.is_some() => Ok(Some(
            fcgi_proxy::access_log::Active::prepare(a, config.server_name.as_deref())?,
        )),
        _ => Ok(None),
    }
}

/// Everything is bound before any thread starts, so a bad address fails at once and port 0 is
/// chosen once (by the first thread's socket). Thread 0 is this one; it also serves the admin
/// listener and waits for the stop and reload signals.
fn run(config: Config, reloader: Reloader, pid_file: Option<PathBuf>) -> Result<(), String> {
    let threads = config.worker_threads();
    let listeners = config.front_listeners().map_err(|e| e.to_string())?;
    if listeners.is_empty() {
        return Err("no listen address configured".into());
    }
    let fronts = fronts_for(&config, &listeners)?;
    fcgi_proxy::access_log::activate(access_log_for(&config)?);
    let mut inherited = fcgi_proxy::systemd::inherited_listeners()?;
    let mut sockets: Vec<Vec<(SocketAddr, spread::Share)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (i, fl) in listeners.iter().enumerate() {
        let what = match (&fronts[i].tls, fronts[i].h2) {
            (Some(_), true) => " (TLS, h2 and http/1.1)",
            (Some(_), false) => " (TLS)",
            (None, true) => " (h2c and http/1.1)",
            (None, false) => "",
        };
        // A socket systemd passed for this address is used by every thread.
        let per_thread = if let Some(k) = inherited.iter().position(|(a, _)| *a == fl.addr) {
            let (addr, l) = inherited.remove(k);
            println!("listening on {addr}{what} (from systemd)");
            (0..threads)
                .map(|_| l.try_clone().map_err(|e| format!("{addr}: {e}")))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            let (addr, bound) = listen_everywhere(fl.addr, threads)?;
            println!("listening on {addr}{what}");
            bound
        };
        for (mine, share) in sockets.iter_mut().zip(spread::share(per_thread)) {
            mine.push((fl.addr, share));
        }
    }
    if let Some((addr, _)) = inherited.first() {
        return Err(format!(
            "systemd passed a socket for {addr}, which the configuration does not listen on"
        ));
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
    let addrs = listeners.iter().map(|l| l.addr).collect();
    let proxy = Arc::new(Proxy::new(Arc::new(config), TokioConnector).map_err(|e| e.to_string())?);
    let (gen_stop, gen_stop_rx) = tokio::sync::watch::channel(false);
    let (gens, gens_rx) = tokio::sync::watch::channel(Arc::new(server::Generation {
        proxy,
        fronts: listeners.iter().map(|l| l.addr).zip(fronts).collect(),
        stop: gen_stop_rx,
    }));
    let (adders, mut added): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let control = Control {
        gens,
        gen_stop,
        addrs,
        adders,
        reloader,
    };
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("{}: cannot write the pid file: {e}", p.display()))?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sockets = sockets.into_iter();
    let mine = sockets.next().unwrap_or_default();
    let mine_added = added.remove(0);
    let mut others = Vec::new();
    for ((i, listeners), added) in sockets.enumerate().zip(added) {
        let slot = i + 1;
        let (gens, stop) = (gens_rx.clone(), stop_rx.clone());
        let t = std::thread::Builder::new()
            .name(format!("fcgi-proxy-{slot}"))
            .spawn(move || serve_thread(slot, listeners, added, gens, stop, None))
            .map_err(|e| format!("cannot start a serving thread: {e}"))?;
        others.push(t);
    }
    fcgi_proxy::systemd::notify("READY=1");
    let r = serve_thread(
        0,
        mine,
        mine_added,
        gens_rx,
        stop_rx,
        Some((admin, stop_tx, control)),
    );
    for t in others {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("fcgi-proxy: {e}"),
            Err(_) => eprintln!("fcgi-proxy: a serving thread panicked"),
        }
    }
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    r
}

/// One listening socket per serving thread for `addr` (port 0: the port the first one got),
/// and the address they are bound to.
fn listen_everywhere(
    addr: SocketAddr,
    threads: usize,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), String> {
    let mut addr = addr;
    let mut sockets = Vec::with_capacity(threads);
    for t in 0..threads {
        let l = listen(addr, threads > 1).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        if t == 0 {
            addr = l.local_addr().map_err(|e| e.to_string())?;
        }
        sockets.push(l);
    }
    Ok((addr, sockets))
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
/// also serves the admin listener, reloads at SIGHUP and, on SIGTERM or SIGINT, tells every
/// thread to stop.
fn serve_thread(
    slot: usize,
    listeners: Vec<(SocketAddr, spread::Share)>,
    mut added: Added,
    gens: tokio::sync::watch::Receiver<Arc<Gen>>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    control: Option<(
        Option<std::net::TcpListener>,
        tokio::sync::watch::Sender<bool>,
        Control,
    )>,
) -> Result<(), String> {
    fcgi_proxy::pool::set_thread_slot(slot);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let served = rt.block_on(async move {
        tokio::spawn(fcgi_proxy::access_log::install());
        let mut servers = tokio::task::JoinSet::new();
        let serve =
            |servers: &mut tokio::task::JoinSet<_>, key, l: spread::Share| -> Result<(), String> {
                let l = l.into_listener().map_err(|e| e.to_string())?;
                servers.spawn(server::serve_generations(
                    l,
                    key,
                    gens.clone(),
                    stop_rx.clone(),
                ));
                Ok(())
            };
        for (key, l) in listeners {
            serve(&mut servers, key, l)?;
        }
        if let Some((admin, stop_tx, mut control)) = control {
            if let Some(l) = admin {
                let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
                servers.spawn(server::serve_admin_generations(
                    l,
                    gens.clone(),
                    stop_rx.clone(),
                ));
            }
            tokio::spawn(async move {
                serve_signals(&mut control).await;
                tracing::info!("shutting down: finishing in-flight requests");
                fcgi_proxy::systemd::notify("STOPPING=1");
                let _ = stop_tx.send(true);
                let _ = control.gen_stop.send(true);
            });
        }
        // Listeners a reload adds, until shutdown.
        let mut stopping = stop_rx.clone();
        loop {
            let l = tokio::select! {
                biased;
                _ = stopping.wait_for(|s| *s) => break,
                l = added.recv() => l,
            };
            match l {
                Some((key, l)) => {
                    if let Err(e) = serve(&mut servers, key, l) {
                        tracing::error!("cannot serve {key}: {e}");
                    }
                }
                None => {
                    let _ = stopping.wait_for(|s| *s).await;
                    break;
                }
            }
        }
        while servers.join_next().await.is_some() {}
        Ok::<(), String>(())
    });
    fcgi_proxy::access_log::flush();
    served
}

/// Reloads at each SIGHUP, reopens the access log at each SIGUSR1 (logrotate); returns at
/// SIGTERM or SIGINT.
async fn serve_signals(control: &mut Control) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        wait_for_signal().await;
        return;
    };
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => return,
            _ = hup.recv() => control.reload(),
            _ = usr1.recv() => {
                if let Err(e) = fcgi_proxy::access_log::reopen() {
                    tracing::error!("cannot reopen the access log: {e}");
                }
                if let Err(e) = fcgi_proxy::error_log::reopen() {
                    tracing::error!("cannot reopen the error log: {e}");
                }
            }
        }
    }
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
