//! `cargo xtask <command>`: thin entry points; the logic lives in the `conformance` crate.

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <command>

COMMANDS:
    peers [list | install]                 which peer proxies are installed, with versions; install them
    conformance [--target ours|apache|nginx|caddy|haproxy|lighttpd|h2o|all|external] [PATH...]
                                           the scenarios for real against proxies (default: ours;
                                           external: --url URL --backend ADDR; --require-targets:
                                           a target not installed is an error; see --help)
    sim [PATH...] [--seed N | --seeds N]   run scenario files in the deterministic simulator
    bench [--quick] [--help]               fcgi-proxy side by side with nginx, HAProxy and Apache
    load [--connections N] [--help]        N (10000) concurrent connections through fcgi-proxy
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        "bench" => conformance::bench::main(&args[1..]),
        "peers" => conformance::real::peers_cli::cli(&args[1..]),
        "conformance" => {
            let root = workspace_root();
            // The suite runs our proxy as a process: build it first.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let built = std::process::Command::new(cargo)
                .current_dir(root)
                .args(["build", "-q", "-p", "fcgi-proxy", "--bin", "fcgi-proxy"])
                .status();
            if !built.is_ok_and(|s| s.success()) {
                eprintln!("xtask conformance: building fcgi-proxy failed");
                return ExitCode::FAILURE;
            }
            conformance::real::cli::cli(root, &args[1..])
        }
        "load" => conformance::load::main(&args[1..]),
        "sim" => conformance::sim::suite::cli(workspace_root(), &args[1..]),
        other => {
            eprintln!("xtask: unknown command {other:?}\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}

/// The workspace root: scenario paths and reports are relative to it.
fn workspace_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(std::path::Path::new("."))
}
