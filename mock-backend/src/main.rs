//! `fcgi-mock`: serve a script on TCP or a Unix socket, journal to a file or stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fcgi_mock::{Journal, MockServer, Script};

/// Everything after the options: what the binary prints, the journal, then the script format
/// (whose example ends the help, so the help's tail parses as a script).
fn after_help() -> String {
    format!("{JOURNAL}\n{}", fcgi_mock::script::FORMAT)
}

const JOURNAL: &str = "\
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

/// A scriptable mock FastCGI backend
#[derive(Debug, Parser)]
#[command(
    name = "fcgi-mock",
    version,
    override_usage = "fcgi-mock --script FILE [--listen ADDR | --unix PATH] [--journal FILE]\n       \
                      fcgi-mock --check FILE",
    after_help = after_help(),
    args_override_self = true
)]
struct Cli {
    /// The script (TOML, format below)
    #[arg(long, value_name = "FILE", required_unless_present = "check")]
    script: Option<PathBuf>,
    /// TCP address to listen on (port 0: a free port)
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:0",
        conflicts_with = "unix"
    )]
    listen: String,
    /// Listen on a Unix socket instead
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Write the journal (JSON lines) there instead of stdout
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,
    /// Validate a script and exit (status 1 and file:line:col: message if invalid)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["script", "listen", "unix", "journal"])]
    check: Option<PathBuf>,
}

enum Listen {
    Tcp(String),
    Unix(PathBuf),
}

struct Args {
    script: PathBuf,
    listen: Listen,
    journal: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = cli.check {
        return match Script::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args {
        // Required unless --check.
        script: cli.script.unwrap_or_default(),
        listen: match cli.unix {
            Some(path) => Listen::Unix(path),
            None => Listen::Tcp(cli.listen),
        },
        journal: cli.journal,
    };
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
