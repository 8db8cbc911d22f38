//! `fcgi-mock`: serve a script on TCP or a Unix socket, journal to a file or stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use fcgi_mock::{Journal, MockServer, Script};

const USAGE: &str = "\
fcgi-mock: a scriptable mock FastCGI backend

USAGE:
  fcgi-mock --script FILE [--listen ADDR | --unix PATH] [--journal FILE]
  fcgi-mock --check FILE
  fcgi-mock --help

OPTIONS:
  --script FILE   the script (TOML, format below)
  --listen ADDR   TCP address to listen on (default 127.0.0.1:0: a free port)
  --unix PATH     listen on a Unix socket instead
  --journal FILE  write the journal (JSON lines) there instead of stdout
  --check FILE    validate a script and exit (status 1 and file:line:col: message if invalid)
  --help          this text

Once bound, prints `listening on ADDR` on stdout. Runs until SIGINT or SIGTERM, then
closes every connection (journaled) and exits 0.

JOURNAL (one JSON object per line):
  {\"event\":\"connection_open\",\"conn\":1,\"peer\":\"127.0.0.1:40000\",\"at_ms\":0}
  {\"event\":\"request\",\"request\":1,\"conn\":1,\"request_id\":1,\"role\":\"responder\",
   \"flags\":1,\"keep_conn\":true,\"params\":[[\"NAME\",\"value\"],...],\"params_records\":[312,0],
   \"stdin\":\"...\",\"stdin_len\":3,\"stdin_records\":[3,0],\"data_len\":0,\"data_records\":[],
   \"abort\":false,\"abort_ms\":null,\"begin_ms\":1,\"end_ms\":2,\"rule\":\"default\",
   \"outcome\":\"complete\"}
  {\"event\":\"connection_close\",\"conn\":1,\"peer\":\"...\",\"opened_ms\":0,\"served_ms\":0,
   \"closed_ms\":5,\"closed_by\":\"backend\"|\"peer\"|\"reset\",\"reason\":\"keep_conn_clear\",
   \"requests\":[1]}
  {\"event\":\"management\",\"conn\":1,\"at_ms\":3,\"type\":\"get_values\",\"names\":[...],
   \"reply\":[[\"FCGI_MAX_CONNS\",\"2\"]]}
  {\"event\":\"protocol_error\"|\"ignored\"|\"server_error\"|\"model\",\"conn\":1,\"at_ms\":4,\"message\":\"...\"}
  Times are milliseconds since the server started. A request line is written when the
  request ends; outcome is one of complete, cant_mpx_conn, unknown_role, aborted,
  backend_closed, backend_reset, hung, connection_ended.
";

enum Listen {
    Tcp(String),
    Unix(PathBuf),
}

struct Args {
    script: PathBuf,
    listen: Listen,
    journal: Option<PathBuf>,
}

enum Command {
    Help,
    Check(PathBuf),
    Serve(Args),
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut script = None;
    let mut listen = None;
    let mut journal = None;
    let mut check = None;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--script" => script = Some(PathBuf::from(value("--script")?)),
            "--check" => check = Some(PathBuf::from(value("--check")?)),
            "--journal" => journal = Some(PathBuf::from(value("--journal")?)),
            "--listen" | "--unix" if listen.is_some() => {
                return Err("give one of --listen and --unix".into());
            }
            "--listen" => listen = Some(Listen::Tcp(value("--listen")?)),
            "--unix" => listen = Some(Listen::Unix(PathBuf::from(value("--unix")?))),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(path) = check {
        return Ok(Command::Check(path));
    }
    let script = script.ok_or("--script FILE is required")?;
    Ok(Command::Serve(Args {
        script,
        listen: listen.unwrap_or_else(|| Listen::Tcp("127.0.0.1:0".into())),
        journal,
    }))
}

fn main() -> ExitCode {
    let cmd = match parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fcgi-mock: {e}\n(see fcgi-mock --help)");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            println!("{USAGE}\n{}", fcgi_mock::script::FORMAT);
            ExitCode::SUCCESS
        }
        Command::Check(path) => match Script::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            let script = match Script::load(&args.script) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("fcgi-mock: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(script, args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fcgi-mock: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(script: Script, args: Args) -> std::io::Result<()> {
    let sink: Box<dyn Write + Send> = match &args.journal {
        Some(path) => Box::new(std::fs::File::create(path)?),
        None => Box::new(std::io::stdout()),
    };
    let handle = match &args.listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let addr = listener.local_addr()?.to_string();
            announce(&addr)?;
            MockServer::spawn_with_journal(script, listener, Journal::with_sink(sink))?
        }
        Listen::Unix(path) => {
            let listener = tokio::net::UnixListener::bind(path)?;
            announce(&path.display().to_string())?;
            MockServer::spawn_with_journal(script, listener, Journal::with_sink(sink))?
        }
    };
    wait_for_signal().await?;
    handle.shutdown().await;
    Ok(())
}

/// The harness waits for this line to learn the port.
fn announce(addr: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        biased;
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
